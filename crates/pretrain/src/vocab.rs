//! Pruning a CLIP BPE tokenizer to the words of a caption set: the 512 byte tokens (so that any
//! text still tokenizes), the merges that build the captions' tokens, and the two special
//! tokens, numbered as CLIP numbers its vocabulary (bytes, bytes + `</w>`, merge results in merge
//! order, then `<|startoftext|>` and `<|endoftext|>`).
//!
//! The pruned tokenizer splits every caption word exactly as the full one does: BPE applies, at
//! each step, the lowest-ranked merge among the pairs present; the merges the full tokenizer
//! applies to a word are kept (each token has exactly one merge that builds it, and all tokens
//! on the way to a kept token are kept), so among the kept merges the same one is the lowest at
//! every step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use sd_model::tokenizer::ClipTokenizer;
use serde_json::Value;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// Writes the pruned tokenizer of `base` for `captions` into `out` (vocab.json, merges.txt,
/// tokenizer_config.json, special_tokens_map.json); returns its vocabulary size.
pub fn prune(base: &Path, captions: &[String], out: &Path) -> Result<usize> {
    let tokenizer = ClipTokenizer::from_dir(base)?;
    let vocab_path = base.join("vocab.json");
    let merges_path = base.join("merges.txt");
    let vocab: BTreeMap<String, u32> = serde_json::from_str(
        &std::fs::read_to_string(&vocab_path)
            .with_context(|| format!("cannot read {}", vocab_path.display()))?,
    )
    .with_context(|| format!("{} is not a JSON object of token ids", vocab_path.display()))?;
    let by_id: BTreeMap<u32, &str> = vocab.iter().map(|(t, &i)| (i, t.as_str())).collect();
    let merges_text = std::fs::read_to_string(&merges_path)
        .with_context(|| format!("cannot read {}", merges_path.display()))?;
    let mut merges: Vec<(String, String)> = Vec::new();
    for (i, line) in merges_text.lines().enumerate() {
        if i == 0 && line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let Some((a, b)) = line.split_once(' ') else {
            bail!(
                "{}:{}: a merge is two tokens separated by a space",
                merges_path.display(),
                i + 1
            );
        };
        merges.push((a.to_string(), b.to_string()));
    }
    let built_by: BTreeMap<String, usize> = merges
        .iter()
        .enumerate()
        .map(|(i, (a, b))| (format!("{a}{b}"), i))
        .collect();
    // The bytes: the first 512 ids of a CLIP vocabulary.
    let bytes: Vec<&str> = (0..512u32)
        .map(|i| {
            by_id
                .get(&i)
                .copied()
                .with_context(|| format!("{}: no token with id {i}", vocab_path.display()))
        })
        .collect::<Result<_>>()?;
    let byte_set: BTreeSet<&str> = bytes.iter().copied().collect();
    let mut keep: BTreeSet<usize> = BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    for caption in captions {
        for id in tokenizer.tokens(caption)? {
            let token = by_id
                .get(&id)
                .with_context(|| format!("token id {id} is not in {}", vocab_path.display()))?;
            stack.push(token.to_string());
        }
    }
    while let Some(token) = stack.pop() {
        if byte_set.contains(token.as_str()) {
            continue;
        }
        let Some(&rank) = built_by.get(&token) else {
            bail!(
                "token `{token}` is neither a byte nor built by a merge in {}",
                merges_path.display()
            );
        };
        if keep.insert(rank) {
            stack.push(merges[rank].0.clone());
            stack.push(merges[rank].1.clone());
        }
    }
    let mut out_vocab = serde_json::Map::new();
    for (i, b) in bytes.iter().enumerate() {
        out_vocab.insert(b.to_string(), Value::from(i));
    }
    let mut out_merges = String::from("#version: 0.2\n");
    for &rank in &keep {
        let (a, b) = &merges[rank];
        out_merges.push_str(&format!("{a} {b}\n"));
        let id = out_vocab.len();
        out_vocab.insert(format!("{a}{b}"), Value::from(id));
    }
    for special in [BOS, EOS] {
        let id = out_vocab.len();
        out_vocab.insert(special.to_string(), Value::from(id));
    }
    let size = out_vocab.len();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // serde_json's map is sorted by key; the ids are what matter.
    lora_group::io::write_atomic(
        &out.join("vocab.json"),
        Value::Object(out_vocab).to_string().as_bytes(),
    )?;
    lora_group::io::write_atomic(&out.join("merges.txt"), out_merges.as_bytes())?;
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let from = base.join(name);
        let bytes =
            std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
        lora_group::io::write_atomic(&out.join(name), &bytes)?;
    }
    Ok(size)
}

/// Copies a tokenizer folder's files (vocab.json, merges.txt, tokenizer.json when present, and the
/// two configs) into `out`.
pub fn copy(base: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for name in [
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let from = base.join(name);
        if from.is_file() {
            let bytes =
                std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
            lora_group::io::write_atomic(&out.join(name), &bytes)?;
        }
    }
    Ok(())
}

//! The CLIP BPE tokenizer, built from a diffusers `tokenizer/` folder (vocab.json + merges.txt,
//! or tokenizer.json when present) with the `tokenizers` crate, padded and truncated as
//! transformers' `CLIPTokenizer(padding="max_length", truncation=True)`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

/// CLIP's pre-tokenisation pattern (special tokens, contractions, letter runs, single digits,
/// punctuation runs), as in openai/CLIP and transformers' `CLIPTokenizer`.
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer with its special ids and sequence length.
pub struct ClipTokenizer {
    inner: Tokenizer,
    /// `<|startoftext|>`.
    pub bos_id: u32,
    /// `<|endoftext|>`.
    pub eos_id: u32,
    /// Padding id (SD 1.x: the EOS id 49407).
    pub pad_id: u32,
    /// Sequence length (77).
    pub max_length: usize,
}

impl ClipTokenizer {
    /// Reads a diffusers `tokenizer/` folder. Uses `tokenizer.json` when present, else builds
    /// the CLIP pipeline (NFC, whitespace collapsing, lower-casing, CLIP split, byte-level BPE
    /// with the `</w>` suffix) from `vocab.json` and `merges.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("tokenizer folder {} does not exist", dir.display());
        }
        let json = dir.join("tokenizer.json");
        let inner = if json.is_file() {
            Tokenizer::from_file(&json)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", json.display()))?
        } else {
            let vocab = dir.join("vocab.json");
            let merges = dir.join("merges.txt");
            for f in [&vocab, &merges] {
                if !f.is_file() {
                    bail!(
                        "tokenizer file {} is missing (need tokenizer.json, or vocab.json and merges.txt)",
                        f.display()
                    );
                }
            }
            build_clip(&vocab, &merges)?
        };
        let special = read_json(&dir.join("special_tokens_map.json"))?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let token = |name: &str, default: &str| -> String {
            [&special, &config]
                .iter()
                .find_map(|v| v.as_ref().and_then(|v| token_content(v.get(name)?)))
                .unwrap_or_else(|| default.to_string())
        };
        let id = |tok: String| -> Result<u32> {
            inner.token_to_id(&tok).with_context(|| {
                format!(
                    "tokenizer in {}: token `{tok}` is not in the vocabulary",
                    dir.display()
                )
            })
        };
        let bos_id = id(token("bos_token", "<|startoftext|>"))?;
        let eos_id = id(token("eos_token", "<|endoftext|>"))?;
        let pad_id = id(token("pad_token", "<|endoftext|>"))?;
        // transformers writes a huge sentinel (1e30) for "no limit": CLIP's 77 then applies.
        let max_length = config
            .as_ref()
            .and_then(|c| c.get("model_max_length")?.as_f64())
            .filter(|&m| m <= 4096.0)
            .unwrap_or(77.0);
        if max_length < 2.0 || max_length.fract() != 0.0 {
            bail!(
                "{}: model_max_length = {max_length} must be a whole number of at least 2 (BOS and EOS)",
                dir.join("tokenizer_config.json").display()
            );
        }
        let max_length = max_length as usize;
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            max_length,
        })
    }

    /// The tokenizer as Hugging Face `tokenizers`' `tokenizer.json` (which [`Self::from_dir`]
    /// reads in place of vocab.json and merges.txt).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| anyhow::anyhow!("cannot serialise the tokenizer: {e}"))
    }

    /// The number of ids, special tokens included (a text model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The same tokenizer padding with `pad_id` (open_clip pads with 0).
    pub fn with_pad_id(mut self, pad_id: u32) -> Self {
        self.pad_id = pad_id;
        self
    }

    /// The BPE ids of `text` without BOS/EOS, untruncated.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// BOS, the ids truncated to `max_length - 2`, EOS, then padding to `max_length`: exactly
    /// what `CLIPTokenizer(text, padding="max_length", max_length=77, truncation=True)` gives.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokens(text)?;
        ids.truncate(self.max_length - 2);
        Ok(self.wrap(ids))
    }

    /// As [`encode`](Self::encode), but a prompt that would be truncated is an error naming its
    /// token count (SD silently drops the rest, which changes the image without warning).
    pub fn encode_exact(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.tokens(text)?;
        if ids.len() > self.max_length - 2 {
            bail!(
                "prompt {text:?} has {} tokens; at most {} fit the text encoder",
                ids.len(),
                self.max_length - 2
            );
        }
        Ok(self.wrap(ids))
    }

    fn wrap(&self, ids: Vec<u32>) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.max_length);
        out.push(self.bos_id);
        out.extend(ids);
        out.push(self.eos_id);
        out.resize(self.max_length, self.pad_id);
        out
    }
}

fn build_clip(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .unk_token("<|endoftext|>".into())
        .end_of_word_suffix("</w>".into())
        .build()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the BPE vocabulary {} / {}: {e}",
                vocab.display(),
                merges.display()
            )
        })?;
    let mut tokenizer = Tokenizer::new(bpe);
    let whitespace = Replace::new(
        tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
        " ",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let split = Split::new(
        SplitPattern::Regex(CLIP_PATTERN.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    Ok(tokenizer)
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = serde_json::from_str(&text)
        .with_context(|| format!("invalid JSON in {}", path.display()))?;
    Ok(Some(value))
}

/// A special token as transformers writes it: a string or `{"content": ...}`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

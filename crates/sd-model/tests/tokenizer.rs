//! The CLIP tokenizer built from a diffusers `tokenizer/` folder gives transformers'
//! `CLIPTokenizer` ids on all 800 HPD photo prompts (fixture from tools/parity).

mod common;

use common::{data, reference};
use sd_model::ClipTokenizer;

fn prompts() -> Vec<String> {
    let mut out = Vec::new();
    for name in ["hpd_photo_train.txt", "hpd_photo_eval.txt"] {
        let path = data(&format!("prompts/{name}"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    out
}

#[test]
fn real_vocabulary_matches_transformers_on_all_hpd_prompts() {
    let tok = ClipTokenizer::from_dir(&data("clip-tokenizer")).unwrap();
    assert_eq!(
        (tok.bos_id, tok.eos_id, tok.pad_id, tok.max_length),
        (49406, 49407, 49407, 77)
    );
    let expected = reference("tokenizer_ids").read_i64("ids").unwrap();
    let prompts = prompts();
    assert_eq!(prompts.len(), 800);
    assert_eq!(expected.len(), 800 * 77);
    for (i, p) in prompts.iter().enumerate() {
        let got: Vec<i64> = tok.encode(p).unwrap().into_iter().map(i64::from).collect();
        assert_eq!(got, expected[i * 77..(i + 1) * 77], "prompt {i}: {p:?}");
    }
}

#[test]
fn known_ids_cleaning_and_padding() {
    let tok = ClipTokenizer::from_dir(&data("clip-tokenizer")).unwrap();
    let ids = tok.encode("a photo of a cat").unwrap();
    assert_eq!(ids[..7], [49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids[7..].iter().all(|&i| i == 49407));
    // Lower-casing and whitespace collapsing give the same ids.
    assert_eq!(tok.encode("  A   PHOTO\tof a\ncat ").unwrap(), ids);
    // The empty prompt (diffusers' default negative prompt) is BOS, EOS, padding.
    let empty = tok.encode("").unwrap();
    assert_eq!(empty[..2], [49406, 49407]);
}

#[test]
fn long_prompts_are_truncated_by_encode_and_refused_by_encode_exact() {
    let tok = ClipTokenizer::from_dir(&data("clip-tokenizer")).unwrap();
    let long = "cat ".repeat(100);
    let ids = tok.encode(&long).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(
        ids[76], 49407,
        "EOS is kept as the last token after truncation"
    );
    assert!(ids[1..76].iter().all(|&i| i == 2368));
    let err = tok.encode_exact(&long).unwrap_err().to_string();
    assert!(err.contains("100 tokens") && err.contains("75"), "{err}");
    assert!(tok.encode_exact(&"cat ".repeat(75)).is_ok());
}

#[test]
fn missing_tokenizer_files_name_the_file() {
    let dir = std::env::temp_dir().join(format!("ril-tok-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(data("clip-tokenizer/vocab.json"), dir.join("vocab.json")).unwrap();
    let err = ClipTokenizer::from_dir(&dir).err().unwrap().to_string();
    assert!(err.contains("merges.txt"), "{err}");
    let err = ClipTokenizer::from_dir(&dir.join("nope"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `to_json` writes a tokenizer.json that `from_dir` reads back (in place of vocab.json and
/// merges.txt) to the same ids, checked on the real vocabulary and all 800 HPD prompts.
#[test]
fn tokenizer_json_round_trips_to_the_same_ids() {
    let tok = ClipTokenizer::from_dir(&data("clip-tokenizer")).unwrap();
    let dir = common::scratch("tokenizer-json");
    std::fs::write(dir.join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
    for f in ["tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(data(&format!("clip-tokenizer/{f}")), dir.join(f)).unwrap();
    }
    let back = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        (back.bos_id, back.eos_id, back.pad_id, back.max_length),
        (tok.bos_id, tok.eos_id, tok.pad_id, tok.max_length)
    );
    for p in prompts() {
        assert_eq!(back.encode(&p).unwrap(), tok.encode(&p).unwrap(), "{p:?}");
    }
}

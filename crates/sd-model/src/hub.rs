//! Finding a model: a local diffusers folder, or a hub repo id resolved in the Hugging Face cache
//! (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub) and, unless HF_HUB_OFFLINE is set,
//! downloaded with hf-hub and verified.

pub mod asset;
pub mod download;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The files of a diffusers SD pipeline that loading reads (the weights in fp32 form).
pub const PIPELINE_FILES: &[&str] = &[
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
];

/// Whether `source` has the shape of a hub repo id (`owner/name`).
pub fn is_repo_id(source: &str) -> bool {
    let parts: Vec<&str> = source.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The hub cache folder from the environment (`var` reads a variable), as huggingface_hub.
pub fn cache_dir(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = var("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Whether HF_HUB_OFFLINE asks for no network (1, true, yes, on).
pub fn offline(var: impl Fn(&str) -> Option<String>) -> bool {
    var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// The snapshot folder of `repo_id` in the cache at `cache`, if `refs/main` (or the only
/// snapshot) is present.
pub fn cached_snapshot(cache: &Path, repo_id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    (dirs.len() == 1).then(|| dirs.remove(0))
}

/// The files of a transformers CLIPModel that the aesthetic reward and the CLIP score read.
pub const CLIP_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
];

/// The fp16 variant diffusers offers for a component's weights file (`unet/X.safetensors` →
/// `unet/X.fp16.safetensors`); `None` for other files.
pub fn fp16_variant(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".safetensors")?;
    (file.contains('/') && !stem.ends_with(".fp16")).then(|| format!("{stem}.fp16.safetensors"))
}

/// Whether `file` (or, with `fp16`, its fp16 variant) is in the folder `dir`.
fn present(dir: &Path, file: &str, fp16: bool) -> bool {
    dir.join(file).exists() || (fp16 && fp16_variant(file).is_some_and(|v| dir.join(v).exists()))
}

/// A local folder as it is; a repo id from the cache, downloading missing pipeline files (the fp16
/// variant of the weights where the repo has one) unless HF_HUB_OFFLINE is set.
pub fn resolve_model(source: &str) -> Result<PathBuf> {
    resolve(source, PIPELINE_FILES, true)
}

/// A local path as it is (file or folder); a repo id from the cache with `files` present,
/// downloading missing ones unless HF_HUB_OFFLINE is set. Returns the snapshot folder.
pub fn resolve_repo(source: &str, files: &[&str]) -> Result<PathBuf> {
    resolve(source, files, false)
}

fn resolve(source: &str, files: &[&str], fp16: bool) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if !is_repo_id(source) {
        bail!("{source} does not exist (and is not a hub repo id owner/name)");
    }
    let var = |k: &str| std::env::var(k).ok();
    if let Some(dir) = cached_repo(source, files, fp16) {
        return Ok(dir);
    }
    if offline(var) {
        let cache = cache_dir(var).context("cannot find the Hugging Face cache: set HF_HOME")?;
        bail!(
            "{source} is not in the hub cache {} and HF_HUB_OFFLINE is set (run `ril fetch` first)",
            cache.display()
        );
    }
    let client = download::Client::from_env()?;
    let plan = plan_repo(&client, source, files, fp16)?;
    for (file, remote) in &plan.files {
        client.fetch_hub(file, remote)?;
    }
    Ok(plan.snapshot)
}

/// The cached snapshot of `repo` if every one of `files` is in it.
pub fn cached_repo(repo: &str, files: &[&str], fp16: bool) -> Option<PathBuf> {
    let cache = cache_dir(|k| std::env::var(k).ok())?;
    let dir = cached_snapshot(&cache, repo)?;
    files.iter().all(|f| present(&dir, f, fp16)).then_some(dir)
}

/// What fetching a repo's files at its `main` means: the commit `main` is at, and each file (the
/// fp16 variant where asked for and offered) with what the hub says of it.
pub struct RepoPlan {
    pub snapshot: PathBuf,
    pub files: Vec<(asset::HubFile, download::Remote)>,
}

/// Asks the hub for each of `files` of `repo` (every file at the commit the first one resolved
/// `main` to, so that one snapshot holds them all).
pub fn plan_repo(
    client: &download::Client,
    repo: &str,
    files: &[&str],
    fp16: bool,
) -> Result<RepoPlan> {
    let mut revision = "main".to_string();
    let mut out = Vec::new();
    for file in files {
        let mut names: Vec<String> = Vec::new();
        if fp16 && let Some(v) = fp16_variant(file) {
            names.push(v);
        }
        names.push(file.to_string());
        let mut found = None;
        for name in &names {
            let f = asset::HubFile {
                revision: revision.clone(),
                ..asset::HubFile::new(repo, name)
            };
            if let Some(r) = client.hub_metadata(&f)? {
                found = Some((f, r));
                break;
            }
        }
        let (f, r) = found
            .with_context(|| format!("{repo} has no file {} on the hub", names.join(" or ")))?;
        // The first file is asked for at `main` (so fetching it records refs/main); the others
        // at the commit it resolved to.
        revision = r.commit.clone();
        out.push((f, r));
    }
    let commit = out
        .first()
        .map(|(_, r)| r.commit.clone())
        .unwrap_or(revision);
    let snapshot = asset::HubFile::new(repo, "")
        .repo_dir(client.cache())
        .join("snapshots")
        .join(commit);
    Ok(RepoPlan {
        snapshot,
        files: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn repo_ids_and_paths_are_told_apart() {
        assert!(is_repo_id("runwayml/stable-diffusion-v1-5"));
        assert!(is_repo_id("CompVis/stable-diffusion-v1-4"));
        assert!(!is_repo_id("./models/sd"));
        assert!(!is_repo_id("/abs/sd"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("sd15"));
        assert!(!is_repo_id("../sd"));
    }

    #[test]
    fn cache_folder_follows_huggingface_hub_precedence() {
        let c = |p: &[(&str, &str)]| cache_dir(env(p));
        assert_eq!(
            c(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")]),
            Some("/c".into())
        );
        assert_eq!(
            c(&[("HF_HOME", "/h"), ("HOME", "/u")]),
            Some("/h/hub".into())
        );
        assert_eq!(
            c(&[("HOME", "/u")]),
            Some("/u/.cache/huggingface/hub".into())
        );
        assert_eq!(c(&[]), None);
    }

    #[test]
    fn offline_flag_values() {
        for v in ["1", "true", "YES", "On"] {
            assert!(offline(env(&[("HF_HUB_OFFLINE", v)])), "{v}");
        }
        for v in ["0", "false", ""] {
            assert!(!offline(env(&[("HF_HUB_OFFLINE", v)])), "{v}");
        }
        assert!(!offline(env(&[])));
    }

    #[test]
    fn snapshot_is_found_through_refs_main_in_a_fake_cache() {
        let cache = std::env::temp_dir().join(format!("ril-hub-cache-{}", std::process::id()));
        let repo = cache.join("models--owner--tiny-sd");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        for rev in ["aaa111", "bbb222"] {
            std::fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
        }
        // Two snapshots: refs/main decides.
        assert_eq!(cached_snapshot(&cache, "owner/tiny-sd"), None);
        std::fs::write(repo.join("refs/main"), "bbb222\n").unwrap();
        assert_eq!(
            cached_snapshot(&cache, "owner/tiny-sd"),
            Some(repo.join("snapshots/bbb222"))
        );
        assert_eq!(cached_snapshot(&cache, "owner/other"), None);
        std::fs::remove_dir_all(&cache).unwrap();
    }
}

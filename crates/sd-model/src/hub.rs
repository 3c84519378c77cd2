//! Finding a model: a local diffusers folder, or a hub repo id resolved in the Hugging Face cache
//! (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub) and, unless HF_HUB_OFFLINE is set,
//! downloaded with hf-hub.

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

/// A local folder as it is; a repo id from the cache, downloading missing pipeline files unless
/// HF_HUB_OFFLINE is set.
pub fn resolve_model(source: &str) -> Result<PathBuf> {
    resolve_repo(source, PIPELINE_FILES)
}

/// A local path as it is (file or folder); a repo id from the cache with `files` present,
/// downloading missing ones unless HF_HUB_OFFLINE is set. Returns the snapshot folder.
pub fn resolve_repo(source: &str, files: &[&str]) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if !is_repo_id(source) {
        bail!("{source} does not exist (and is not a hub repo id owner/name)");
    }
    let var = |k: &str| std::env::var(k).ok();
    let cache = cache_dir(var).context("cannot find the Hugging Face cache: set HF_HOME")?;
    if let Some(dir) = cached_snapshot(&cache, source)
        && (files.iter().all(|f| dir.join(f).exists()) || offline(var))
    {
        return Ok(dir);
    }
    if offline(var) {
        bail!(
            "{source} is not in the hub cache {} and HF_HUB_OFFLINE is set",
            cache.display()
        );
    }
    download(source, &cache, files)
}

fn download(repo_id: &str, cache: &Path, files: &[&str]) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(true)
        .build()
        .context("cannot start the hub client")?;
    let repo = api.model(repo_id.to_string());
    let mut snapshot = None;
    for file in files {
        let local = repo
            .get(file)
            .with_context(|| format!("cannot download {file} from {repo_id}"))?;
        // The snapshot folder is the file's path minus the file's own relative path.
        let depth = Path::new(file).components().count();
        snapshot = local.ancestors().nth(depth).map(Path::to_path_buf);
    }
    snapshot.context("download gave no snapshot folder")
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

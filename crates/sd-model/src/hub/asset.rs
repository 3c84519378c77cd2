//! Where a file a run needs comes from: a local path, a file of a Hugging Face repo
//! (`hf://owner/name[@revision]/path/in/repo`, the form huggingface_hub's HfFileSystem uses) or an
//! http(s) URL cached the way torch.hub caches checkpoints; found in its cache, or fetched and
//! verified (see [`super::download`]) when missing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use super::{cache_dir, is_repo_id, offline};

/// A file a config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asset {
    /// A file or folder on this machine (a relative path is taken against the config's folder).
    Local(PathBuf),
    /// A file of a model repository on the hub.
    Hub(HubFile),
    /// A file behind an http(s) URL, cached as `TORCH_HOME/hub/checkpoints/NAME`.
    Url(String),
}

/// A file of a hub model repository at a revision (a branch, tag or commit; `main` unless
/// given).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HubFile {
    pub repo: String,
    pub revision: String,
    pub path: String,
}

impl HubFile {
    pub fn new(repo: &str, path: &str) -> Self {
        Self {
            repo: repo.to_string(),
            revision: "main".into(),
            path: path.to_string(),
        }
    }

    /// The repo's folder in the hub cache (`models--owner--name`).
    pub fn repo_dir(&self, cache: &Path) -> PathBuf {
        cache.join(format!("models--{}", self.repo.replace('/', "--")))
    }

    /// The commit the revision names in the cache: the revision itself when it is a commit hash,
    /// else what `refs/REVISION` records.
    pub fn cached_commit(&self, cache: &Path) -> Option<String> {
        if is_commit(&self.revision) {
            return Some(self.revision.clone());
        }
        let r = std::fs::read_to_string(self.repo_dir(cache).join("refs").join(&self.revision));
        r.ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// The file in the cache's snapshot of the revision, if it is there.
    pub fn cached(&self, cache: &Path) -> Option<PathBuf> {
        let commit = self.cached_commit(cache)?;
        let p = self
            .repo_dir(cache)
            .join("snapshots")
            .join(commit)
            .join(&self.path);
        p.exists().then_some(p)
    }
}

/// Whether `rev` is a full git commit hash.
pub fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

impl fmt::Display for HubFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (owner, name) = self.repo.split_once('/').unwrap_or((&self.repo, ""));
        write!(f, "hf://{owner}/{name}")?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        write!(f, "/{}", self.path)
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asset::Local(p) => write!(f, "{}", p.display()),
            Asset::Hub(h) => h.fmt(f),
            Asset::Url(u) => f.write_str(u),
        }
    }
}

impl FromStr for Asset {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("hf://") {
            let form = "a hub file is hf://owner/name[@revision]/path/in/repo";
            let mut parts = rest.splitn(3, '/');
            let (owner, name_rev, path) = match (parts.next(), parts.next(), parts.next()) {
                (Some(o), Some(n), Some(p)) if !p.is_empty() => (o, n, p),
                _ => bail!("{s:?}: {form}"),
            };
            let (name, revision) = match name_rev.split_once('@') {
                Some((n, r)) if !r.is_empty() => (n, r),
                Some(_) => bail!("{s:?}: empty revision after @ ({form})"),
                None => (name_rev, "main"),
            };
            let repo = format!("{owner}/{name}");
            if !is_repo_id(&repo) {
                bail!("{s:?}: {repo:?} is not a repo id owner/name ({form})");
            }
            if path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                bail!("{s:?}: the path in the repo must not have empty, . or .. parts");
            }
            return Ok(Asset::Hub(HubFile {
                repo,
                revision: revision.into(),
                path: path.into(),
            }));
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            url_file_name(s).with_context(|| format!("{s:?}: the URL names no file"))?;
            return Ok(Asset::Url(s.to_string()));
        }
        if s.is_empty() {
            bail!("an empty path");
        }
        Ok(Asset::Local(PathBuf::from(s)))
    }
}

impl serde::Serialize for Asset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Asset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// The last path segment of a URL (without query or fragment), if it is not empty.
pub fn url_file_name(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let after_scheme = path.split_once("://")?.1;
    let (_, path) = after_scheme.split_once('/')?;
    path.rsplit('/').next().filter(|n| !n.is_empty())
}

/// torch.hub's cache folder from the environment: TORCH_HOME, else XDG_CACHE_HOME/torch, else
/// ~/.cache/torch; checkpoints go in its `hub/checkpoints`.
pub fn torch_home(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(t) = var("TORCH_HOME") {
        return Some(PathBuf::from(t));
    }
    if let Some(x) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(x).join("torch"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache/torch"))
}

/// Where torch.hub keeps the file of `url`.
pub fn url_cache_path(url: &str, var: impl Fn(&str) -> Option<String>) -> Result<PathBuf> {
    let name = url_file_name(url).with_context(|| format!("{url}: the URL names no file"))?;
    let home = torch_home(var).context("cannot find torch's cache folder: set TORCH_HOME")?;
    Ok(home.join("hub/checkpoints").join(name))
}

/// The SHA-256 prefix torch.hub reads from a checkpoint's name (`STEM-HASH.EXT`, at least 8 hex
/// digits), as its `check_hash`.
pub fn torch_hash_prefix(name: &str) -> Option<&str> {
    let stem = name.split('.').next()?;
    let h = stem.rsplit('-').next()?;
    (stem.contains('-') && h.len() >= 8 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

impl Asset {
    /// A relative local path is taken against `base` (the config's folder).
    pub fn relative_to(&mut self, base: &Path) {
        if let Asset::Local(p) = self
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    }

    /// Where the file is on this machine if it is there: a local path as it is (if it exists),
    /// a hub file in the hub cache, a URL's file in torch's cache.
    pub fn cached(&self) -> Option<PathBuf> {
        match self {
            Asset::Local(p) => p.exists().then(|| p.clone()),
            Asset::Hub(h) => h.cached(&cache_dir(env)?),
            Asset::Url(u) => url_cache_path(u, env).ok().filter(|p| p.is_file()),
        }
    }

    /// The file on this machine: found (see [`Asset::cached`]) or, unless HF_HUB_OFFLINE is set,
    /// downloaded and verified.
    pub fn resolve(&self) -> Result<PathBuf> {
        if let Some(p) = self.cached() {
            return Ok(p);
        }
        match self {
            Asset::Local(p) => bail!("{} does not exist", p.display()),
            _ if offline(env) => bail!(
                "{self} is not in the cache and HF_HUB_OFFLINE is set (run `ril fetch` first)"
            ),
            Asset::Hub(h) => {
                let client = super::download::Client::from_env()?;
                let remote = client
                    .hub_metadata(h)?
                    .with_context(|| format!("{h}: no such file on the hub"))?;
                client.fetch_hub(h, &remote)
            }
            Asset::Url(u) => super::download::Client::from_env()?.fetch_url(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(s: &str) -> HubFile {
        match s.parse::<Asset>().unwrap() {
            Asset::Hub(h) => h,
            a => panic!("{s} parsed as {a:?}"),
        }
    }

    #[test]
    fn hub_references_parse_and_print_back() {
        let h = hub("hf://xswu/HPSv2/HPS_v2_compressed.pt");
        assert_eq!(
            (h.repo.as_str(), h.revision.as_str(), h.path.as_str()),
            ("xswu/HPSv2", "main", "HPS_v2_compressed.pt")
        );
        assert_eq!(h.to_string(), "hf://xswu/HPSv2/HPS_v2_compressed.pt");
        let h = hub("hf://o/n@v1.0/sub/dir/f.bin");
        assert_eq!(
            (h.repo.as_str(), h.revision.as_str(), h.path.as_str()),
            ("o/n", "v1.0", "sub/dir/f.bin")
        );
        assert_eq!(h.to_string(), "hf://o/n@v1.0/sub/dir/f.bin");
    }

    #[test]
    fn malformed_references_are_refused_with_the_form() {
        for bad in [
            "hf://xswu/HPSv2",
            "hf://xswu/HPSv2/",
            "hf://xswu",
            "hf://o/n@/f",
            "hf://o/n/../f",
            "hf://o/n//f",
            "https://example.org/",
            "",
        ] {
            assert!(bad.parse::<Asset>().is_err(), "{bad:?} was accepted");
        }
        let e = "hf://xswu/HPSv2".parse::<Asset>().unwrap_err().to_string();
        assert!(e.contains("hf://owner/name[@revision]/path"), "{e}");
    }

    #[test]
    fn urls_and_paths_are_told_apart() {
        let u = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
        assert_eq!(u.parse::<Asset>().unwrap(), Asset::Url(u.into()));
        assert_eq!(
            url_file_name(u),
            Some("pt_inception-2015-12-05-6726825d.pth")
        );
        assert_eq!(url_file_name("http://h/a/b.bin?x=1#y"), Some("b.bin"));
        assert_eq!(
            "weights/x.pt".parse::<Asset>().unwrap(),
            Asset::Local("weights/x.pt".into())
        );
        let mut a: Asset = "w/x.pt".parse().unwrap();
        a.relative_to(Path::new("/cfg"));
        assert_eq!(a, Asset::Local("/cfg/w/x.pt".into()));
    }

    #[test]
    fn torch_hub_names_give_their_hash_prefix_and_cache_folder() {
        assert_eq!(
            torch_hash_prefix("pt_inception-2015-12-05-6726825d.pth"),
            Some("6726825d")
        );
        assert_eq!(torch_hash_prefix("resnet-1234567.pth"), None);
        assert_eq!(torch_hash_prefix("model.pth"), None);
        let var = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
        };
        assert_eq!(
            torch_home(var(&[("TORCH_HOME", "/t"), ("XDG_CACHE_HOME", "/x")])),
            Some("/t".into())
        );
        assert_eq!(
            torch_home(var(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/u")])),
            Some("/x/torch".into())
        );
        assert_eq!(
            url_cache_path("https://h/d/f-0123abcd.pth", var(&[("HOME", "/u")])).unwrap(),
            PathBuf::from("/u/.cache/torch/hub/checkpoints/f-0123abcd.pth")
        );
    }

    #[test]
    fn a_hub_file_is_found_through_its_ref_or_its_commit() {
        let cache = std::env::temp_dir().join(format!("ril-asset-cache-{}", std::process::id()));
        let commit = "a".repeat(40);
        let h = HubFile::new("o/n", "d/f.bin");
        let snap = h.repo_dir(&cache).join("snapshots").join(&commit);
        std::fs::create_dir_all(snap.join("d")).unwrap();
        std::fs::write(snap.join("d/f.bin"), b"x").unwrap();
        assert_eq!(h.cached(&cache), None, "no refs/main yet");
        std::fs::create_dir_all(h.repo_dir(&cache).join("refs")).unwrap();
        std::fs::write(h.repo_dir(&cache).join("refs/main"), &commit).unwrap();
        assert_eq!(h.cached(&cache), Some(snap.join("d/f.bin")));
        let pinned = HubFile {
            revision: commit.clone(),
            ..HubFile::new("o/n", "d/f.bin")
        };
        std::fs::remove_file(h.repo_dir(&cache).join("refs/main")).unwrap();
        assert_eq!(pinned.cached(&cache), Some(snap.join("d/f.bin")));
        std::fs::remove_dir_all(&cache).unwrap();
    }
}

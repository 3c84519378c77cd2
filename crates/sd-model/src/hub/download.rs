//! Verified downloads into the hub cache (huggingface_hub's layout: blobs named by their etag,
//! snapshot links, refs) and torch's checkpoint cache. A file is written to `NAME.part` (resumed
//! with a Range request when one is there), checked against the size and checksum the server
//! states (a hub LFS file's SHA-256, a small hub file's git blob SHA-1, a torch.hub name's SHA-256
//! prefix) and only then renamed into place: a body cut short keeps its `.part` for the next try,
//! a wrong one is deleted, and nothing unverified is ever found in the cache.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sha1::Digest;

use super::asset::{HubFile, is_commit, torch_hash_prefix, url_cache_path, url_file_name};
use super::cache_dir;

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// What the hub says of a file: where its bytes are, how many, their etag (the SHA-256 of an LFS
/// file, the git blob SHA-1 of another) and the commit the revision resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    pub size: u64,
    pub etag: String,
    pub commit: String,
}

/// A download client for the hub (HF_ENDPOINT, HF_TOKEN or the saved token, the cache from
/// HF_HUB_CACHE / HF_HOME) and plain URLs.
pub struct Client {
    api: hf_hub::api::sync::Api,
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    cache: PathBuf,
}

/// The token `huggingface-cli login` saved: HF_HOME/token, else ~/.cache/huggingface/token.
fn saved_token() -> Option<String> {
    let home = env("HF_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")))?;
    let t = std::fs::read_to_string(home.join("token")).ok()?;
    Some(t.trim().to_string()).filter(|t| !t.is_empty())
}

impl Client {
    /// The client the environment describes.
    pub fn from_env() -> Result<Self> {
        let cache = cache_dir(env).context("cannot find the Hugging Face cache: set HF_HOME")?;
        let endpoint = env("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        let token = env("HF_TOKEN").or_else(saved_token);
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_endpoint(endpoint.clone())
            .with_cache_dir(cache.clone())
            .with_token(token.clone())
            .with_progress(false)
            .build()
            .context("cannot start the hub client")?;
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Self {
            api,
            agent,
            endpoint,
            token,
            cache,
        })
    }

    /// The hub cache folder.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// The resolve URL of a hub file.
    pub fn hub_url(&self, f: &HubFile) -> String {
        let rev = f.revision.replace('/', "%2F");
        format!("{}/{}/resolve/{rev}/{}", self.endpoint, f.repo, f.path)
    }

    /// What the hub says of `f`; `None` when it has no such file (404).
    pub fn hub_metadata(&self, f: &HubFile) -> Result<Option<Remote>> {
        let url = self.hub_url(f);
        match self.api.metadata(&url) {
            Ok(m) => Ok(Some(Remote {
                url,
                size: m.size() as u64,
                // A weak validator's W/ prefix is not part of the hash (huggingface_hub drops it).
                etag: m.etag().trim_start_matches("W/").to_string(),
                commit: m.commit_hash().to_string(),
            })),
            Err(hf_hub::api::sync::ApiError::RequestError(e)) => match *e {
                ureq::Error::StatusCode(404) => Ok(None),
                // The hub answers 401 for a repo that does not exist as for a private one.
                ureq::Error::StatusCode(c @ (401 | 403)) => bail!(
                    "{f}: the hub answered {c}: the repo does not exist (check its name; \
                     runwayml/stable-diffusion-v1-5, say, was removed), or it is gated or \
                     private (accept its terms on the hub and set HF_TOKEN, or run \
                     `huggingface-cli login`)"
                ),
                e => bail!("{f}: cannot ask the hub for it ({url}): {e}"),
            },
            Err(e) => bail!("{f}: the hub's answer for {url} is not usable: {e}"),
        }
    }

    /// Downloads `f` (as `remote` describes it) into the cache unless its blob is already there
    /// with the right size; links it into the snapshot and records the revision's commit.
    pub fn fetch_hub(&self, f: &HubFile, remote: &Remote) -> Result<PathBuf> {
        let repo = f.repo_dir(&self.cache);
        let blobs = repo.join("blobs");
        let blob = blobs.join(&remote.etag);
        if !blob.metadata().is_ok_and(|m| m.len() == remote.size) {
            std::fs::create_dir_all(&blobs)
                .with_context(|| format!("cannot create {}", blobs.display()))?;
            let part = blobs.join(format!("{}.part", remote.etag));
            let label = f.to_string();
            self.download(&remote.url, &part, Some(remote.size), &label, true)?;
            verify(
                &part,
                Some(remote.size),
                &Check::from_etag(&remote.etag),
                &label,
            )?;
            std::fs::rename(&part, &blob)
                .with_context(|| format!("cannot move {} into place", part.display()))?;
        }
        let pointer = repo.join("snapshots").join(&remote.commit).join(&f.path);
        link(&blob, &pointer, f.path.split('/').count())?;
        if !is_commit(&f.revision) || f.revision != remote.commit {
            let refs = repo.join("refs").join(&f.revision);
            write_atomic(&refs, remote.commit.as_bytes())?;
        }
        Ok(pointer)
    }

    /// The size of the file behind `url`, if the server says it.
    pub fn url_size(&self, url: &str) -> Result<Option<u64>> {
        let resp = self
            .agent
            .get(url)
            .header("Range", "bytes=0-0")
            .call()
            .map_err(|e| anyhow!("{url}: {e}"))?;
        let h = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok());
        Ok(match resp.status().as_u16() {
            206 => h("content-range")
                .and_then(|r| r.rsplit('/').next())
                .and_then(|n| n.parse().ok()),
            _ => h("content-length").and_then(|n| n.parse().ok()),
        })
    }

    /// Downloads the file of `url` into torch's checkpoint cache (checked against the SHA-256
    /// prefix its name carries, as torch.hub's `check_hash`), unless it is there.
    pub fn fetch_url(&self, url: &str) -> Result<PathBuf> {
        let dest = url_cache_path(url, env)?;
        if dest.is_file() {
            return Ok(dest);
        }
        let dir = dest.parent().expect("a cache file has a folder");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = url_file_name(url).expect("url_cache_path checked the name");
        let part = dir.join(format!("{name}.part"));
        let size = self.url_size(url)?;
        self.download(url, &part, size, url, false)?;
        let check = torch_hash_prefix(name).map_or(Check::None, |p| Check::Sha256Prefix(p.into()));
        verify(&part, size, &check, url)?;
        std::fs::rename(&part, &dest)
            .with_context(|| format!("cannot move {} into place", part.display()))?;
        Ok(dest)
    }

    /// Streams `url` into `part`, resuming from what `part` holds (a Range request; a server that
    /// ignores it starts the file again). A body that breaks off keeps what arrived.
    fn download(
        &self,
        url: &str,
        part: &Path,
        size: Option<u64>,
        label: &str,
        hub: bool,
    ) -> Result<()> {
        let mut start = part.metadata().map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|n| start > n) {
            std::fs::remove_file(part).ok();
            start = 0;
        }
        if start > 0 && size == Some(start) {
            return Ok(());
        }
        let mut req = self.agent.get(url);
        if start > 0 {
            req = req.header("Range", format!("bytes={start}-"));
        }
        if hub && let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(416)) if start > 0 => return Ok(()),
            Err(e) => bail!("{label}: cannot download {url}: {e}"),
        };
        let resume = start > 0 && resp.status().as_u16() == 206;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resume)
            .truncate(!resume)
            .open(part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        let have = if resume { start } else { 0 };
        let bar = indicatif::ProgressBar::new(size.unwrap_or(0)).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:25}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .expect("template"),
        );
        bar.set_message(label.to_string());
        bar.set_position(have);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = have;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    file.flush().ok();
                    bar.abandon();
                    bail!(
                        "{label}: the download broke off after {got} bytes{} ({e}); run the \
                         command again to resume from {}",
                        size.map(|s| format!(" of {s}")).unwrap_or_default(),
                        part.display()
                    );
                }
            };
            file.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", part.display()))?;
            got += n as u64;
            bar.set_position(got);
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", part.display()))?;
        bar.finish_and_clear();
        Ok(())
    }
}

/// The checksum a downloaded file must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The SHA-256 (a hub LFS file's etag).
    Sha256(String),
    /// Git's blob SHA-1 (a hub file kept in git itself).
    GitSha1(String),
    /// The first hex digits of the SHA-256 (torch.hub's file names).
    Sha256Prefix(String),
    None,
}

impl Check {
    /// The check a hub etag implies: 64 hex digits are a SHA-256, 40 a git blob SHA-1.
    pub fn from_etag(etag: &str) -> Self {
        let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
        match etag.len() {
            64 if hex => Check::Sha256(etag.to_ascii_lowercase()),
            40 if hex => Check::GitSha1(etag.to_ascii_lowercase()),
            _ => Check::None,
        }
    }
}

fn hash_file<H: Digest>(path: &Path, mut h: H) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// Checks the size and checksum of the downloaded `part`. Short: kept, so the next try resumes.
/// Too long or a wrong checksum: deleted.
pub fn verify(part: &Path, size: Option<u64>, check: &Check, label: &str) -> Result<()> {
    let len = part
        .metadata()
        .with_context(|| format!("cannot read {}", part.display()))?
        .len();
    if let Some(n) = size {
        if len < n {
            bail!(
                "{label}: the download is {len} bytes of {n} (the server closed it early); run \
                 the command again to resume from {}",
                part.display()
            );
        }
        if len > n {
            std::fs::remove_file(part).ok();
            bail!("{label}: the download is {len} bytes, the server said {n}; it was removed");
        }
    }
    let (kind, want, got) = match check {
        Check::Sha256(w) => ("SHA-256", w.clone(), hash_file(part, sha2::Sha256::new())?),
        Check::GitSha1(w) => {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            ("git blob SHA-1", w.clone(), hash_file(part, h)?)
        }
        Check::Sha256Prefix(p) => {
            let full = hash_file(part, sha2::Sha256::new())?;
            (
                "SHA-256 prefix",
                p.clone(),
                full[..p.len().min(64)].to_string(),
            )
        }
        Check::None => return Ok(()),
    };
    if want.to_ascii_lowercase() != got {
        std::fs::remove_file(part).ok();
        bail!(
            "{label}: checksum mismatch: the server gave {kind} {want}, the downloaded file has \
             {got}; it was removed (run the command again to download it anew)"
        );
    }
    Ok(())
}

/// Points the snapshot entry `pointer` (`depth` path parts below the snapshot) at `blob`: a
/// relative symlink as huggingface_hub makes, a copy where symlinks are not available.
fn link(blob: &Path, pointer: &Path, depth: usize) -> Result<()> {
    let dir = pointer.parent().expect("a snapshot entry has a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if pointer.symlink_metadata().is_ok() {
        std::fs::remove_file(pointer)
            .with_context(|| format!("cannot replace {}", pointer.display()))?;
    }
    let name = blob.file_name().expect("a blob has a name");
    let target = PathBuf::from("../".repeat(depth + 1))
        .join("blobs")
        .join(name);
    #[cfg(unix)]
    let done = std::os::unix::fs::symlink(&target, pointer);
    #[cfg(not(unix))]
    let done = std::fs::copy(blob, pointer).map(|_| ());
    done.with_context(|| format!("cannot link {}", pointer.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a file has a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ril-verify-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn etags_select_the_checksum() {
        assert_eq!(
            Check::from_etag(&"A".repeat(64)),
            Check::Sha256("a".repeat(64))
        );
        assert_eq!(
            Check::from_etag(&"b".repeat(40)),
            Check::GitSha1("b".repeat(40))
        );
        assert_eq!(Check::from_etag("W/abc"), Check::None);
    }

    #[test]
    fn checksums_are_those_of_git_and_sha256sum() {
        // `printf 'hello\n' | git hash-object --stdin` and `printf 'hello\n' | sha256sum`.
        let p = tmp("hello", b"hello\n");
        let git = Check::GitSha1("ce013625030ba8dba906f756967f9e9ca394464a".into());
        verify(&p, Some(6), &git, "hello").unwrap();
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        verify(&p, Some(6), &Check::Sha256(sha.into()), "hello").unwrap();
        verify(&p, None, &Check::Sha256Prefix("5891b5b5".into()), "hello").unwrap();
    }

    #[test]
    fn a_short_file_is_kept_and_a_wrong_one_removed() {
        let p = tmp("short", b"hel");
        let e = verify(&p, Some(6), &Check::None, "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 bytes of 6") && e.contains("resume"), "{e}");
        assert!(p.exists(), "a short download is kept for resuming");
        let p = tmp("wrong", b"hellO\n");
        let e = verify(&p, Some(6), &Check::Sha256("0".repeat(64)), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("checksum mismatch") && e.contains("SHA-256"),
            "{e}"
        );
        assert!(!p.exists(), "a wrong download is removed");
        let p = tmp("long", b"hello, world\n");
        assert!(verify(&p, Some(6), &Check::None, "f").is_err());
        assert!(!p.exists(), "a too long download is removed");
    }
}

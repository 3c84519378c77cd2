//! `ril fetch` against a fake Hugging Face hub on the loopback interface (the resolve endpoint's
//! headers as the hub sends them: x-repo-commit, etag / x-linked-etag, Content-Range): a config's
//! pipeline, reward weights and FID weights land in a fresh HF_HOME and TORCH_HOME, verified, and
//! the run then needs no network; a download cut short resumes with a Range request; a file whose
//! bytes do not match the hub's checksum never reaches the cache.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use ril_testkit::scratch;
use sha2::Digest;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha256(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The bytes standing in for pytorch-fid's Inception weights, and the torch.hub name carrying
/// their hash prefix.
fn inception() -> (Vec<u8>, String) {
    let bytes = b"stand-in for pt_inception weights".repeat(100);
    let name = format!("pt_inception-2015-12-05-{}.pth", &sha256(&bytes)[..8]);
    (bytes, name)
}

/// What the fake hub does wrong, and what it was asked.
#[derive(Default)]
struct State {
    /// Serve only the first half of this file (no Content-Length, then a clean close), once.
    truncate_once: Option<String>,
    /// Announce a wrong SHA-256 for this file.
    wrong_etag: Option<String>,
    /// Every request.
    log: Vec<Request>,
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

struct FakeHub {
    port: u16,
    state: Arc<Mutex<State>>,
    /// URL path → bytes.
    files: Arc<BTreeMap<String, Vec<u8>>>,
}

impl FakeHub {
    /// Serves the tiny pipeline as `owner/tiny-sd` (its fp32 files only, so the fp16 variants
    /// are 404), the tiny HPS weights as `owner/hps/HPS_tiny.pt` and the stand-in Inception file
    /// under `/releases/`.
    fn start() -> Self {
        let mut files = BTreeMap::new();
        let sd = root().join("crates/sd-model/tests/fixtures/tiny-sd");
        for f in sd_model::hub::PIPELINE_FILES {
            let bytes = std::fs::read(sd.join(f)).unwrap();
            files.insert(format!("/owner/tiny-sd/resolve/main/{f}"), bytes);
        }
        let hps = std::fs::read(root().join("crates/rewards/tests/fixtures/HPS_tiny.pt")).unwrap();
        files.insert("/owner/hps/resolve/main/HPS_tiny.pt".into(), hps);
        let (bytes, name) = inception();
        files.insert(format!("/releases/{name}"), bytes);
        // Pinned requests name the commit instead of main.
        let pinned: Vec<(String, Vec<u8>)> = files
            .iter()
            .filter(|(k, _)| k.contains("/resolve/main/"))
            .map(|(k, v)| {
                (
                    k.replace("/resolve/main/", &format!("/resolve/{COMMIT}/")),
                    v.clone(),
                )
            })
            .collect();
        files.extend(pinned);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let files = Arc::new(files);
        let (s, f) = (state.clone(), files.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, f) = (s.clone(), f.clone());
                std::thread::spawn(move || serve(conn, port, &s, &f));
            }
        });
        Self { port, state, files }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }
}

/// One request: the resolve endpoint answers a git file itself and redirects an LFS file (with
/// its X-Linked-Etag / X-Linked-Size) to an absolute `/cdn/` URL, as the hub sends LFS files to its
/// CDN; the CDN and the release URL serve bytes with Range support.
fn serve(conn: TcpStream, port: u16, state: &Mutex<State>, files: &BTreeMap<String, Vec<u8>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut out = conn;
    let mut st = state.lock().unwrap();
    st.log.push(Request {
        path: path.clone(),
        range: range.clone(),
        auth,
    });
    let source = path.strip_prefix("/cdn").unwrap_or(&path);
    let Some(body) = files.get(source) else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let name = path.rsplit('/').next().unwrap().to_string();
    let lfs = name.ends_with(".safetensors") || name.ends_with(".pt");
    if !path.starts_with("/cdn/") && path.contains("/resolve/") {
        let etag = if !lfs {
            sha1_of_blob(body)
        } else if st.wrong_etag.as_deref() == Some(name.as_str()) {
            sha256(b"something else")
        } else {
            sha256(body)
        };
        if lfs {
            let head = format!(
                "HTTP/1.1 302 Found\r\nX-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{etag}\"\r\n\
                 X-Linked-Size: {}\r\nLocation: http://127.0.0.1:{port}/cdn{path}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            return;
        }
        drop(st);
        let extra = format!("X-Repo-Commit: {COMMIT}\r\nETag: \"{etag}\"\r\n");
        bytes(out, body, range.as_deref(), &extra, false);
        return;
    }
    let truncate =
        range.as_deref() != Some("bytes=0-0") && st.truncate_once.as_deref() == Some(name.as_str());
    if truncate {
        st.truncate_once = None;
    }
    drop(st);
    bytes(out, body, range.as_deref(), "", truncate);
}

/// Answers with `body` from the Range's start (206 with Content-Range), or all of it (200); a
/// `truncate`d answer sends half with no length to hold it to and closes cleanly.
fn bytes(mut out: TcpStream, body: &[u8], range: Option<&str>, extra: &str, truncate: bool) {
    let start: usize = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let end = if range == Some("bytes=0-0") {
        1
    } else {
        body.len()
    };
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let mut head = format!("HTTP/1.1 {status}\r\n{extra}Connection: close\r\n");
    if range.is_some() {
        head += &format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            end - 1,
            body.len()
        );
    }
    let chunk = &body[start.min(end)..end];
    if truncate {
        let _ = out.write_all(format!("{head}\r\n").as_bytes());
        let _ = out.write_all(&chunk[..chunk.len() / 2]);
    } else {
        head += &format!("Content-Length: {}\r\n\r\n", chunk.len());
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(chunk);
    }
    let _ = out.flush();
}

/// Git's blob id: SHA-1 of "blob LEN\0" + bytes (what the hub's etag is for a non-LFS file).
fn sha1_of_blob(b: &[u8]) -> String {
    let out = Command::new("git")
        .args(["hash-object", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .expect("git hash-object");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A config whose model, HPS weights and FID weights come from the fake hub.
fn config(dir: &Path, hub: &FakeHub, extra: &str) -> PathBuf {
    let r = root();
    let (_, name) = inception();
    let text = format!(
        r#"seed = 0
output = "run"

[model]
source = "owner/tiny-sd"

[prompts]
train = "{r}/configs/tiny/prompts-train.txt"
eval = "{r}/configs/tiny/prompts-eval.txt"

[method]
kind = "baseline"

[sampling]
steps = 2
guidance = 7.5
height = 64
width = 64

[rewards]
hps_weights = "hf://owner/hps/HPS_tiny.pt"
hps_model_config = "{r}/configs/tiny/openclip-tiny.json"
hps_tokenizer = "{r}/crates/sd-model/tests/fixtures/tiny-sd/tokenizer"

[eval]
fid_weights = "{url}/releases/{name}"
{extra}
[[tasks]]
name = "hps"
reward = "hps"
epochs = 1
steps_per_epoch = 1
batch_size = 1
lr = 1e-4
"#,
        r = r.display(),
        url = hub.url(),
    );
    let p = dir.join("run.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs ril with the fake hub's endpoint and HF_HOME / TORCH_HOME in `dir` (and nothing from
/// the caller's own Hugging Face settings).
fn ril(dir: &Path, hub: &FakeHub, args: &[&str], offline: bool) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ril"));
    c.args(args)
        .env("HF_HOME", dir.join("hf"))
        .env("TORCH_HOME", dir.join("torch"))
        .env("HF_ENDPOINT", hub.url())
        .env_remove("HF_HUB_CACHE")
        .env("HF_TOKEN", "hf_test_token")
        .env_remove("HF_HUB_OFFLINE");
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    }
    let o = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn snapshot(dir: &Path, repo: &str) -> PathBuf {
    dir.join("hf/hub")
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(COMMIT)
}

#[test]
fn fetch_downloads_and_verifies_everything_a_config_names_and_then_needs_no_network() {
    let hub = FakeHub::start();
    let dir = scratch("fetch-all");
    let cfg = config(&dir, &hub, "");
    let cfg = cfg.to_str().unwrap();

    let (ok, out) = ril(&dir, &hub, &["fetch", "--config", cfg, "--dry-run"], false);
    assert!(ok, "{out}");
    // The total is every served file once (the pipeline's, HPS, Inception).
    let total: usize = hub
        .files
        .iter()
        .filter(|(k, _)| !k.contains(COMMIT))
        .map(|(_, v)| v.len())
        .sum();
    let human = indicatif::HumanBytes(total as u64).to_string();
    assert!(out.contains(&format!("total to fetch: {human}")), "{out}");
    assert!(
        !dir.join("hf/hub/models--owner--tiny-sd/blobs").exists(),
        "a dry run fetched"
    );

    let (ok, out) = ril(&dir, &hub, &["fetch", "--config", cfg], false);
    assert!(ok, "{out}");
    let sd = root().join("crates/sd-model/tests/fixtures/tiny-sd");
    for f in sd_model::hub::PIPELINE_FILES {
        let got = std::fs::read(snapshot(&dir, "owner/tiny-sd").join(f)).unwrap();
        assert_eq!(got, std::fs::read(sd.join(f)).unwrap(), "{f}");
    }
    let refs = dir.join("hf/hub/models--owner--tiny-sd/refs/main");
    assert_eq!(std::fs::read_to_string(refs).unwrap(), COMMIT);
    assert!(snapshot(&dir, "owner/hps").join("HPS_tiny.pt").is_file());
    let (bytes, name) = inception();
    let torch = dir.join("torch/hub/checkpoints").join(&name);
    assert_eq!(std::fs::read(torch).unwrap(), bytes);
    // The fp16 variants were asked for first, and the fp32 files taken when there were none.
    let log = hub.state.lock().unwrap().log.clone();
    assert!(log.iter().any(|r| {
        r.path
            .ends_with("unet/diffusion_pytorch_model.fp16.safetensors")
    }));
    // HF_TOKEN goes to the hub, not to the release URL, nor with the CDN downloads the hub
    // redirects to (hf-hub's metadata request does send it with its 1-byte CDN probe).
    for r in &log {
        let sent = r.auth.as_deref() == Some("Bearer hf_test_token");
        let probe = r.range.as_deref() == Some("bytes=0-0");
        if !r.path.starts_with("/cdn/") && r.path.contains("/resolve/") {
            assert!(sent, "{r:?}");
        } else if !(r.path.starts_with("/cdn") && probe) {
            assert!(!sent, "{r:?}");
        }
    }
    assert!(
        log.iter().any(|r| r.path.starts_with("/cdn/")),
        "no LFS redirect was followed"
    );

    // Everything is here: offline, nothing is asked of the hub, and the model samples.
    let before = hub.requests();
    let (ok, out) = ril(&dir, &hub, &["fetch", "--config", cfg], true);
    assert!(ok && out.contains("total to fetch: 0 B"), "{out}");
    let img = dir.join("img");
    let (ok, out) = ril(
        &dir,
        &hub,
        &[
            "sample",
            "--model",
            "owner/tiny-sd",
            "--prompt",
            "a cat",
            "--steps",
            "2",
            "--height",
            "64",
            "--width",
            "64",
            "--seed",
            "0",
            "--out",
            img.to_str().unwrap(),
        ],
        true,
    );
    assert!(ok, "{out}");
    assert_eq!(hub.requests(), before, "an offline run asked the hub");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_download_cut_short_resumes_and_a_wrong_checksum_never_reaches_the_cache() {
    let hub = FakeHub::start();
    let dir = scratch("fetch-faults");
    let cfg = config(&dir, &hub, "");
    let cfg = cfg.to_str().unwrap();
    let unet = "diffusion_pytorch_model.safetensors";
    hub.state.lock().unwrap().truncate_once = Some(unet.into());
    let (ok, out) = ril(&dir, &hub, &["fetch", "--config", cfg], false);
    assert!(!ok, "a short download was accepted:\n{out}");
    assert!(out.contains("bytes of") && out.contains("resume"), "{out}");
    let blobs = dir.join("hf/hub/models--owner--tiny-sd/blobs");
    let parts: Vec<PathBuf> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .collect();
    assert_eq!(parts.len(), 1, "the short download is kept as one .part");
    let have = std::fs::metadata(&parts[0]).unwrap().len();
    assert!(have > 0);

    let (ok, out) = ril(&dir, &hub, &["fetch", "--config", cfg], false);
    assert!(ok, "{out}");
    let log = hub.state.lock().unwrap().log.clone();
    let want = format!("bytes={have}-");
    assert!(
        log.iter()
            .any(|r| r.path.ends_with(unet) && r.range.as_deref() == Some(&want)),
        "no Range request resumed from {have}: {log:?}"
    );
    let sd = root().join("crates/sd-model/tests/fixtures/tiny-sd");
    for part in ["unet", "vae"] {
        let got = std::fs::read(snapshot(&dir, "owner/tiny-sd").join(part).join(unet)).unwrap();
        assert_eq!(got, std::fs::read(sd.join(part).join(unet)).unwrap());
    }
    std::fs::remove_dir_all(&dir).ok();

    let dir = scratch("fetch-checksum");
    let cfg = config(&dir, &hub, "");
    hub.state.lock().unwrap().wrong_etag = Some("HPS_tiny.pt".into());
    let (ok, out) = ril(
        &dir,
        &hub,
        &["fetch", "--config", cfg.to_str().unwrap()],
        false,
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("checksum mismatch") && out.contains("HPS_tiny.pt"),
        "{out}"
    );
    let hps = dir.join("hf/hub/models--owner--hps");
    let blobs: Vec<_> = std::fs::read_dir(hps.join("blobs")).unwrap().collect();
    assert!(
        blobs.is_empty(),
        "a wrong file is left in the cache: {blobs:?}"
    );
    assert!(!snapshot(&dir, "owner/hps").join("HPS_tiny.pt").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_local_file_is_named_with_its_field() {
    let hub = FakeHub::start();
    let dir = scratch("fetch-missing");
    let cfg = config(&dir, &hub, "fid_reference = \"coco.npz\"\n");
    let (ok, out) = ril(
        &dir,
        &hub,
        &["fetch", "--config", cfg.to_str().unwrap(), "--dry-run"],
        false,
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("coco.npz") && out.contains("eval.fid_reference"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_takes_fid_weights_from_the_config_and_resolves_them_before_any_work() {
    let hub = FakeHub::start();
    let dir = scratch("fetch-eval");
    let cfg = config(&dir, &hub, "fid_reference = \"coco.npz\"\n");
    let out = dir.join("eval");
    let args = [
        "eval",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, text) = ril(&dir, &hub, &args, true);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FID's Inception weights") && text.contains("ril fetch"),
        "{text}"
    );
    assert!(!out.exists(), "eval started before its inputs were there");
    assert_eq!(hub.requests(), 0, "an offline eval asked the network");
    std::fs::remove_dir_all(&dir).ok();
}

/// Puts `files` of `repo` into a huggingface_hub-layout cache at `hub` (content: the name).
fn fake_cached(hub: &Path, repo: &str, files: &[String]) {
    let d = hub.join(format!("models--{}", repo.replace('/', "--")));
    for f in files {
        let p = d.join("snapshots").join(COMMIT).join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, f).unwrap();
    }
    std::fs::create_dir_all(d.join("refs")).unwrap();
    std::fs::write(d.join("refs/main"), COMMIT).unwrap();
}

#[test]
fn the_paper_preset_needs_nothing_beyond_what_fetch_puts_in_the_caches() {
    let hub = FakeHub::start();
    let dir = scratch("fetch-paper");
    let cache = dir.join("hf/hub");
    let pipeline: Vec<String> = sd_model::hub::PIPELINE_FILES
        .iter()
        .map(|f| sd_model::hub::fp16_variant(f).unwrap_or(f.to_string()))
        .collect();
    let sd = "stable-diffusion-v1-5/stable-diffusion-v1-5";
    fake_cached(&cache, sd, &pipeline);
    let clip: Vec<String> = sd_model::hub::CLIP_FILES
        .iter()
        .map(|f| f.to_string())
        .collect();
    fake_cached(&cache, "openai/clip-vit-large-patch14", &clip);
    let ckpt = dir.join("torch/hub/checkpoints");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("pt_inception-2015-12-05-6726825d.pth"), b"x").unwrap();
    let args = ["fetch", "--preset", "paper"];
    // Without HPSv2 the list names it and the command fails, asking nobody (offline).
    let (ok, out) = ril(&dir, &hub, &args, true);
    assert!(
        !ok && out.contains("hf://xswu/HPSv2/HPS_v2_compressed.pt"),
        "{out}"
    );
    assert!(out.contains("rewards.hps_weights"), "{out}");
    fake_cached(&cache, "xswu/HPSv2", &["HPS_v2_compressed.pt".to_string()]);
    let (ok, out) = ril(&dir, &hub, &args, true);
    assert!(ok, "{out}");
    assert!(out.contains("total to fetch: 0 B"), "{out}");
    for item in [
        sd,
        "openai/clip-vit-large-patch14",
        "pt_inception",
        "HPS_v2_compressed",
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(item))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains(": here"), "{line}");
    }
    assert_eq!(hub.requests(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

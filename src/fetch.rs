//! `ril fetch`: every file the runs of some configs (or of a grid preset) need, found in the
//! caches or downloaded and verified, with the list and the total size shown before anything is
//! fetched; afterwards the runs need no network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ArgGroup;
use indicatif::HumanBytes;
use rid_trainer::TrainConfig;
use rid_trainer::config::RewardKind;
use sd_model::hub::asset::Asset;
use sd_model::hub::download::{Client, Remote};
use sd_model::hub::{self, CLIP_FILES, PIPELINE_FILES, asset::HubFile};

/// Downloads what runs need into the Hugging Face and torch caches.
///
/// Reads each config and collects its model (a hub pipeline, with diffusers' fp16 weights where
/// the repo has them), the reward models its tasks use and the evaluation's models ([eval]). Hub
/// files go to the Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub;
/// HF_ENDPOINT and HF_TOKEN honoured), URLs to torch's (TORCH_HOME/hub/checkpoints). Every file is
/// checked against the size and checksum the server gives before it is moved into the cache; a
/// broken download resumes on the next run. Local files the configs name are checked too: a
/// missing one is listed and makes the command fail after the downloads.
#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["configs", "preset"])))]
pub struct FetchArgs {
    /// A run config (TOML; repeatable).
    #[arg(long = "config", value_name = "RUN.toml")]
    pub configs: Vec<PathBuf>,
    /// Every config of a grid preset (configs/PRESET/*.toml in the repository).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Only say what would be fetched, and how much.
    #[arg(long)]
    pub dry_run: bool,
}

/// The grid presets whose configs `--preset` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    Paper,
    Tiny,
}

impl Preset {
    fn folder(self) -> &'static str {
        match self {
            Preset::Paper => "configs/paper",
            Preset::Tiny => "configs/tiny",
        }
    }
}

/// The configs of a preset: its folder under the current directory, else under the repository
/// ril was built from.
fn preset_configs(p: Preset) -> Result<Vec<PathBuf>> {
    let here = Path::new(p.folder());
    let dir = if here.is_dir() {
        here.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p.folder())
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "cannot read the preset's configs {} (run from the repository, or pass --config)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// One thing the runs need.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    /// Files of a hub repo (`fp16`: diffusers' fp16 weights variant where offered).
    Repo {
        repo: String,
        files: Vec<&'static str>,
        fp16: bool,
    },
    /// One file (hub, URL or local).
    File(String),
    /// A local file or folder the user provides.
    Local(PathBuf),
}

/// A config field that names a need.
struct Why<'a> {
    config: &'a Path,
    field: &'static str,
}

impl std::fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.config.display(), self.field)
    }
}

fn joined(why: &[Why]) -> String {
    why.iter()
        .map(Why::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the configs need, each with the fields that named it.
fn needs<'a>(configs: &'a [(PathBuf, TrainConfig)]) -> BTreeMap<Need, Vec<Why<'a>>> {
    let mut out: BTreeMap<Need, Vec<Why<'a>>> = BTreeMap::new();
    let mut add = |n: Need, why: Why<'a>| out.entry(n).or_default().push(why);
    let repo_or_local = |source: &str, files: &[&'static str], fp16: bool| {
        if Path::new(source).exists() || !hub::is_repo_id(source) {
            Need::Local(source.into())
        } else {
            Need::Repo {
                repo: source.into(),
                files: files.to_vec(),
                fp16,
            }
        }
    };
    let asset = |a: &Asset| match a {
        Asset::Local(p) => Need::Local(p.clone()),
        a => Need::File(a.to_string()),
    };
    for (path, c) in configs {
        let at = |field: &'static str| Why {
            config: path,
            field,
        };
        add(
            repo_or_local(&c.model.source, PIPELINE_FILES, true),
            at("model.source"),
        );
        add(Need::Local(c.prompts.train.clone()), at("prompts.train"));
        add(Need::Local(c.prompts.eval.clone()), at("prompts.eval"));
        let used = |k: RewardKind| {
            c.tasks
                .iter()
                .any(|t| t.reward == k || t.reward == RewardKind::Joint)
        };
        let r = &c.rewards;
        // A reward model is needed by the tasks that train on it and by `ril eval`, which scores
        // every reward whose weights the config names.
        if used(RewardKind::Aesthetic) || r.aesthetic_mlp.is_some() {
            let clip = r
                .aesthetic_clip
                .clone()
                .unwrap_or_else(|| "openai/clip-vit-large-patch14".into());
            add(
                repo_or_local(&clip, CLIP_FILES, false),
                at("rewards.aesthetic_clip"),
            );
            if let Some(a) = &r.aesthetic_mlp {
                add(asset(a), at("rewards.aesthetic_mlp"));
            }
        }
        if used(RewardKind::Hps) || r.hps_weights.is_some() {
            if let Some(a) = &r.hps_weights {
                add(asset(a), at("rewards.hps_weights"));
            }
            for (p, f) in [
                (&r.hps_tokenizer, "rewards.hps_tokenizer"),
                (&r.hps_model_config, "rewards.hps_model_config"),
            ] {
                if let Some(p) = p {
                    add(Need::Local(p.clone()), at(f));
                }
            }
        }
        let e = &c.eval;
        if let Some(m) = &e.clip_model {
            add(repo_or_local(m, CLIP_FILES, false), at("eval.clip_model"));
        }
        if let Some(a) = &e.fid_weights {
            add(asset(a), at("eval.fid_weights"));
        }
        if let Some(p) = &e.fid_reference {
            add(Need::Local(p.clone()), at("eval.fid_reference"));
        }
    }
    out
}

/// How a need stands.
enum Plan {
    /// On this machine already.
    Here(PathBuf),
    /// To download: hub files with what the hub says of them.
    Hub(Vec<(HubFile, Remote)>),
    /// To download from a URL (its size if the server says it).
    Url(String, Option<u64>),
    /// A local file that is not there.
    Missing(PathBuf),
}

impl Plan {
    fn bytes(&self) -> Option<u64> {
        match self {
            Plan::Here(_) | Plan::Missing(_) => Some(0),
            Plan::Hub(files) => Some(files.iter().map(|(_, r)| r.size).sum()),
            Plan::Url(_, s) => *s,
        }
    }
}

/// The download client, made when the first missing file needs it.
fn client(c: &mut Option<Client>) -> Result<&Client> {
    if c.is_none() {
        if hub::offline(|k| std::env::var(k).ok()) {
            bail!("it is missing from the caches and HF_HUB_OFFLINE is set");
        }
        *c = Some(Client::from_env()?);
    }
    Ok(c.as_ref().expect("just set"))
}

fn plan(need: &Need, c: &mut Option<Client>) -> Result<Plan> {
    Ok(match need {
        Need::Local(p) if p.exists() => Plan::Here(p.clone()),
        Need::Local(p) => Plan::Missing(p.clone()),
        Need::Repo { repo, files, fp16 } => match hub::cached_repo(repo, files, *fp16) {
            Some(dir) => Plan::Here(dir),
            None => Plan::Hub(hub::plan_repo(client(c)?, repo, files, *fp16)?.files),
        },
        Need::File(s) => {
            let a: Asset = s.parse()?;
            if let Some(p) = a.cached() {
                return Ok(Plan::Here(p));
            }
            match a {
                Asset::Hub(h) => {
                    let r = client(c)?
                        .hub_metadata(&h)?
                        .with_context(|| format!("{h}: no such file on the hub"))?;
                    Plan::Hub(vec![(h, r)])
                }
                Asset::Url(u) => {
                    let size = client(c)?.url_size(&u)?;
                    Plan::Url(u, size)
                }
                Asset::Local(p) => Plan::Missing(p),
            }
        }
    })
}

fn label(n: &Need) -> String {
    match n {
        Need::Repo { repo, files, fp16 } => format!(
            "{repo} ({} files{})",
            files.len(),
            if *fp16 {
                ", fp16 weights where offered"
            } else {
                ""
            }
        ),
        Need::File(s) => s.clone(),
        Need::Local(p) => p.display().to_string(),
    }
}

pub fn run(a: &FetchArgs) -> Result<()> {
    let mut paths = a.configs.clone();
    if let Some(p) = a.preset {
        paths.extend(preset_configs(p)?);
    }
    let configs = paths
        .iter()
        .map(|p| Ok((p.clone(), TrainConfig::from_file(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let needs = needs(&configs);
    let mut client = None;
    // Every need is planned (and listed) even when one cannot be: the list says all that is
    // wrong at once.
    let plans: Vec<_> = needs
        .iter()
        .map(|(n, why)| (n, why, plan(n, &mut client).map_err(|e| format!("{e:#}"))))
        .collect();
    println!("{} config(s) need {} item(s):", configs.len(), plans.len());
    let mut total = 0u64;
    let mut unknown = false;
    for (n, why, p) in &plans {
        let state = match p {
            Ok(Plan::Here(_)) if matches!(n, Need::Local(_)) => "here".to_string(),
            Ok(Plan::Here(at)) => format!("here ({})", at.display()),
            Ok(Plan::Missing(_)) => "MISSING".into(),
            Ok(p) => match p.bytes() {
                Some(b) => format!("to fetch, {}", HumanBytes(b)),
                None => "to fetch, size not given".into(),
            },
            Err(_) => "CANNOT ASK (below)".into(),
        };
        if let Ok(p) = p {
            total += p.bytes().unwrap_or(0);
            unknown |= p.bytes().is_none();
        }
        let mut fields: Vec<&str> = why.iter().map(|w| w.field).collect();
        fields.sort_unstable();
        fields.dedup();
        println!("  {} [{}]: {state}", label(n), fields.join(", "));
    }
    let unstated = if unknown {
        " and files of unstated size"
    } else {
        ""
    };
    println!("total to fetch: {}{unstated}", HumanBytes(total));
    let mut failed: Vec<String> = Vec::new();
    for (n, why, p) in &plans {
        let named = || format!("{} (named by {})", label(n), joined(why));
        let done = match p {
            Ok(Plan::Missing(path)) => Err(format!(
                "{} is not there (README says how to make it)",
                path.display()
            )),
            Err(e) => Err(e.clone()),
            Ok(_) if a.dry_run => Ok(()),
            Ok(Plan::Hub(files)) => {
                let c = client.as_ref().expect("a hub plan made the client");
                files
                    .iter()
                    .try_for_each(|(f, r)| c.fetch_hub(f, r).map(|_| ()))
                    .map_err(|e| format!("{e:#}"))
            }
            Ok(Plan::Url(u, _)) => client
                .as_ref()
                .expect("a URL plan made the client")
                .fetch_url(u)
                .map(|_| ())
                .map_err(|e| format!("{e:#}")),
            Ok(Plan::Here(_)) => Ok(()),
        };
        if let Err(e) = done {
            failed.push(format!("  {}: {e}", named()));
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} item(s) are not ready:\n{}",
            failed.len(),
            plans.len(),
            failed.join("\n")
        );
    }
    if !a.dry_run {
        println!(
            "everything is in the caches: the runs need no network (HF_HUB_OFFLINE=1 makes sure)"
        );
    }
    Ok(())
}

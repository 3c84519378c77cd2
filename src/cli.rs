//! The `ril` command line (clap, derive): the subcommands, their cross-flag checks, the value
//! parsers for closed choices, and dispatch.

use std::ffi::OsString;

use anyhow::Result;
use clap::builder::{
    OsStringValueParser, PossibleValuesParser, RangedU64ValueParser, TypedValueParser,
};
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Reward incremental learning for Stable Diffusion 1.x: sample, score, train, soup, evaluate.
///
/// `ril COMMAND --help` documents each command's flags. A repeated single-valued flag is an
/// error; flags documented as repeatable (`--prompt`, `--lora`, ...) may be given several times.
#[derive(Debug, Parser)]
#[command(name = "ril", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, in the order `ril --help` lists them.
#[derive(Debug, Subcommand)]
pub enum Command {
    Sample(crate::sample::SampleArgs),
    Score(crate::score::ScoreArgs),
    Train(crate::train::TrainArgs),
    Soup(crate::soup::SoupArgs),
    Export(crate::export::ExportArgs),
    Eval(crate::eval::EvalArgs),
    Fid(crate::fid::FidArgs),
    FidStats(crate::fid::FidStatsArgs),
    Bench(crate::bench::Args),
    Data(crate::data::DataArgs),
    Judge(crate::judge::JudgeArgs),
    Pretrain(crate::pretrain::PretrainArgs),
    Fetch(crate::fetch::FetchArgs),
    ToyReward(crate::toy_reward::ToyRewardArgs),
}

impl Command {
    /// The checks across flags that clap's attributes do not express (e.g. `--dtype bf16` needs
    /// `--backend cuda`): an error message naming the flags.
    fn validate(&self) -> Result<(), String> {
        match self {
            Command::Sample(_)
            | Command::Train(_)
            | Command::Eval(_)
            | Command::Data(_)
            | Command::Judge(_)
            | Command::Pretrain(_)
            | Command::Fetch(_)
            | Command::ToyReward(_) => Ok(()),
            Command::Score(a) => a.validate(),
            Command::Soup(a) => a.validate(),
            Command::Export(a) => a.validate(),
            Command::Fid(a) => a.validate(),
            Command::FidStats(a) => a.validate(),
            Command::Bench(a) => a.validate(),
        }
    }

    /// Runs the command.
    pub fn run(self) -> Result<()> {
        match self {
            Command::Sample(a) => crate::sample::run(&a),
            Command::Score(a) => {
                ril::on_backend!(a.backend, inner, |B, device| crate::score::run::<B>(
                    &a, &device
                ))
            }
            Command::Train(a) => crate::train::run(&a),
            Command::Soup(a) => crate::soup::run(&a),
            Command::Export(a) => crate::export::run(&a),
            Command::Eval(a) => crate::eval::run(&a),
            Command::Fid(a) => crate::fid::run(&a),
            Command::FidStats(a) => crate::fid::run_stats(&a),
            Command::Bench(a) => crate::bench::run(&a),
            Command::Data(a) => crate::data::run(&a),
            Command::Judge(a) => crate::judge::run(&a),
            Command::Pretrain(a) => crate::pretrain::run(&a),
            Command::Fetch(a) => crate::fetch::run(&a),
            Command::ToyReward(a) => crate::toy_reward::run(&a),
        }
    }
}

/// Parses a command line (program name first) and checks it; a usage error is a clap error
/// (`error.exit()` prints it and exits with status 2; `--help` and `--version` exit 0).
/// Arguments need not be UTF-8: a path may be any OsString, a text value that is not UTF-8 is
/// an error naming its flag.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    if let Err(msg) = cli.command.validate() {
        // Reported with the subcommand's usage line.
        let sub = matches
            .subcommand_name()
            .and_then(|name| cmd.find_subcommand_mut(name));
        return Err(match sub {
            Some(sub) => sub.error(ErrorKind::ArgumentConflict, msg),
            None => cmd.error(ErrorKind::ArgumentConflict, msg),
        });
    }
    Ok(cli)
}

/// The value parser of a closed choice: the values are `name` of each of `all` (listed in
/// `--help` and in the error for any other value), parsed into `T` at parse time. The names
/// come from the type itself (e.g. `BackendKind::name`), so there is one definition of them.
pub fn one_of<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(all.iter().map(|&v| name(v))).map(move |s| {
        *all.iter()
            .find(|&&v| name(v) == s)
            .expect("PossibleValuesParser admits only these names")
    })
}

/// The value parser of a text value: an argument that is not valid UTF-8 is an error naming
/// its flag (clap's own String parser does not name it).
pub fn text() -> impl TypedValueParser<Value = String> {
    OsStringValueParser::new().try_map(|s| s.into_string().map_err(|_| "not valid UTF-8"))
}

/// The value parser of a file reference: a path, `hf://owner/name[@revision]/file` or a URL.
pub fn asset() -> impl TypedValueParser<Value = sd_model::hub::asset::Asset> {
    text().try_map(|s| {
        s.parse::<sd_model::hub::asset::Asset>()
            .map_err(|e| format!("{e:#}"))
    })
}

/// Refuses an `--out` folder that exists and is not empty (before any training starts).
pub fn refuse_occupied(out: &std::path::Path) -> anyhow::Result<()> {
    if out.exists() && std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()) {
        anyhow::bail!("--out {}: exists and is not an empty folder", out.display());
    }
    Ok(())
}

/// Prints a training's loss (named `metric`) on stderr about 20 times over `steps` steps.
pub fn step_printer(steps: usize, metric: &'static str) -> impl FnMut(usize, f32) {
    let start = std::time::Instant::now();
    let every = (steps / 20).max(1);
    move |step, loss| {
        if step % every == 0 || step + 1 == steps {
            eprintln!(
                "step {:>5}/{steps}  {metric} {loss:.4}  {:.0} s",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
}

/// The value parser of a count that must be at least 1.
pub fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Preset, What};
    use ril_metrics::Metric;
    use sd_model::backend::{BackendKind, Dtype};

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        parse_from(std::iter::once("ril").chain(args.iter().copied())).map(|c| c.command)
    }

    fn err(args: &[&str]) -> String {
        parse(args).expect_err("an argument error").to_string()
    }

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn closed_choices_are_enums_at_parse_time() {
        let Ok(Command::Bench(a)) = parse(&[
            "bench",
            "--preset=sd15",
            "--backend",
            "cuda",
            "--dtype",
            "bf16",
            "--what",
            "train-step",
        ]) else {
            panic!("bench parses")
        };
        assert_eq!(
            (a.preset, a.backend, a.dtype, a.what),
            (
                Preset::Sd15,
                BackendKind::Cuda,
                Dtype::Bf16,
                What::TrainStep
            )
        );
        let Ok(Command::Bench(a)) = parse(&["bench"]) else {
            panic!("bench parses")
        };
        assert_eq!(
            (a.preset, a.backend, a.dtype, a.what, a.reps),
            (Preset::Tiny, BackendKind::Cpu, Dtype::F32, What::All, 5)
        );
        for (args, flag) in [
            (&["bench", "--backend", "tpu"][..], "--backend"),
            (&["bench", "--dtype", "f16"], "--dtype"),
            (&["bench", "--preset", "sdxl"], "--preset"),
            (&["bench", "--what", "everything"], "--what"),
            (&["bench", "--reps", "0"], "--reps"),
        ] {
            let e = err(args);
            assert!(e.contains(flag) && e.contains(args[2]), "{args:?}: {e}");
        }
        let e = err(&["bench", "--dtype", "bf16"]);
        assert!(e.contains("--dtype bf16 needs --backend cuda"), "{e}");
    }

    #[test]
    fn eval_metrics_are_a_list_of_metrics() {
        let base = ["eval", "--config", "c.toml", "--out", "o"];
        let Ok(Command::Eval(a)) = parse(&base) else {
            panic!("eval parses")
        };
        assert_eq!(a.metrics, Metric::ALL.to_vec());
        let Ok(Command::Eval(a)) = parse(&[&base[..], &["--metrics", "hps,fid"]].concat()) else {
            panic!("eval parses")
        };
        assert_eq!(a.metrics, vec![Metric::Hps, Metric::Fid]);
        let e = err(&[&base[..], &["--metrics", "hps,beauty"]].concat());
        assert!(e.contains("--metrics") && e.contains("beauty"), "{e}");
        // A reference alone parses: its weights may come from the config's [eval] (ril eval
        // refuses it before any work when neither gives them; tests/cli.rs).
        assert!(parse(&[&base[..], &["--fid-reference", "real"]].concat()).is_ok());
        let e = err(&[&base[..], &["--fid-weights", "w.pth", "--fid-hash-weights"]].concat());
        assert!(e.contains("--fid-hash-weights"), "{e}");
    }

    #[test]
    fn repeatable_flags_repeat_and_others_do_not() {
        let Ok(Command::Soup(a)) = parse(&[
            "soup",
            "--lora",
            "a",
            "--lora=b",
            "--coefficients",
            "0.25, 0.75",
            "--out",
            "o",
        ]) else {
            panic!("soup parses")
        };
        assert_eq!(a.loras.len(), 2);
        assert_eq!(a.coefficients, Some(vec![0.25, 0.75]));
        let e = err(&["soup", "--lora", "a", "--out", "o"]);
        assert!(e.contains("at least two --lora"), "{e}");
        let e = err(&[
            "soup", "--lora", "a", "--lora", "b", "--out", "o", "--out", "p",
        ]);
        assert!(
            e.contains("--out") && e.contains("cannot be used multiple times"),
            "{e}"
        );
        let e = err(&["train", "--config", "a", "--resume", "--resume"]);
        assert!(e.contains("--resume"), "{e}");
    }
}

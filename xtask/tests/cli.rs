//! The command line of `cargo xtask`: every subcommand and flag is documented, `--flag=value`
//! works, a repeated flag and a value outside a closed choice are parse errors, and `--help` of
//! the built binary exits 0 for every subcommand.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use rid_trainer::config::Method;
use sd_model::backend::BackendKind;
use xtask::cli::{BenchPreset, Cli, Command, Emit, ExperimentCommand, Preset, What};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("cargo xtask").chain(args.iter().copied()))
}

fn err_kind(args: &[&str]) -> ErrorKind {
    match parse(args) {
        Ok(cli) => panic!("{args:?} parsed as {cli:?}, expected an error"),
        Err(e) => e.kind(),
    }
}

#[test]
fn the_command_line_is_consistent() {
    // clap's own checks (duplicate names, defaults outside the possible values, ...).
    Cli::command().debug_assert();
}

/// Every argument of `cmd` and of its subcommands, as "path: --name".
fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    let path = format!("{path} {}", cmd.get_name());
    if cmd.get_about().is_none() {
        out.push(format!("{path} (the subcommand)"));
    }
    for a in cmd.get_arguments() {
        if a.get_help().is_none() && !matches!(a.get_id().as_str(), "help" | "version") {
            out.push(format!("{path}: {}", a.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            undocumented(sub, &path, out);
        }
    }
}

#[test]
fn every_subcommand_and_flag_has_help() {
    let mut missing = Vec::new();
    undocumented(&Cli::command(), "", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:?}");
}

#[test]
fn the_top_level_help_lists_every_subcommand() {
    let help = Cli::command().render_help().to_string();
    for sub in ["ci", "bench", "experiment"] {
        assert!(
            help.contains(sub),
            "`cargo xtask --help` lacks {sub}:\n{help}"
        );
    }
}

#[test]
fn help_of_every_subcommand_exits_0_and_names_its_flags() {
    // The built binary, as `cargo xtask SUB --help` runs it.
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["ci", "bench", "experiment"]),
        (&["ci"], &[]),
        (
            &["bench"],
            &[
                "--preset",
                "--backend",
                "--threads",
                "--reps",
                "--steps",
                "--batch",
                "--compare",
                "--python",
                "train-step",
                "sd15",
            ],
        ),
        (&["experiment"], &["all-orders", "order", "report"]),
        (
            &["experiment", "all-orders"],
            &[
                "--preset",
                "--out",
                "--dry-run",
                "--emit",
                "slurm",
                "--sbatch",
                "paper",
            ],
        ),
        (
            &["experiment", "order"],
            &["ORDER", "--method", "--preset", "--out", "baseline"],
        ),
        (&["experiment", "report"], &["DIR"]),
    ];
    for (args, words) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(*args)
            .arg("--help")
            .output()
            .expect("run xtask");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?} --help: {:?}\n{text}",
            out.status
        );
        for w in *words {
            assert!(text.contains(w), "{args:?} --help lacks {w}:\n{text}");
        }
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    // README: `cargo xtask experiment all-orders` runs the toy preset into runs/grid-toy.
    let Command::Experiment(e) = parse(&["experiment", "all-orders"]).unwrap().command else {
        panic!("not experiment")
    };
    let ExperimentCommand::AllOrders(g) = e.command else {
        panic!("not all-orders")
    };
    assert_eq!(g.preset, Preset::Toy);
    assert!(g.out.is_none() && !g.dry_run && g.emit.is_none());
    // `cargo xtask bench` with no flags: everything on the tiny preset, CPU, 2 threads, 5 reps.
    let Command::Bench(b) = parse(&["bench"]).unwrap().command else {
        panic!("not bench")
    };
    assert_eq!(
        (b.what, b.preset, b.backend, b.threads, b.reps),
        (What::All, BenchPreset::Tiny, BackendKind::Cpu, 2, 5)
    );
    assert!(b.steps.is_none() && b.batch.is_none() && !b.compare && b.python.is_none());
}

#[test]
fn flag_equals_value_and_flag_space_value_parse_alike() {
    for args in [
        &[
            "bench",
            "sample",
            "--preset=sd15",
            "--backend=cuda",
            "--steps=2",
        ][..],
        &[
            "bench",
            "--preset",
            "sd15",
            "sample",
            "--backend",
            "cuda",
            "--steps",
            "2",
        ],
    ] {
        let Command::Bench(b) = parse(args).unwrap().command else {
            panic!("not bench")
        };
        assert_eq!(
            (b.what, b.preset, b.backend, b.steps),
            (What::Sample, BenchPreset::Sd15, BackendKind::Cuda, Some(2)),
            "{args:?}"
        );
    }
}

#[test]
fn order_takes_any_case_and_method_and_the_grid_flags() {
    let cli = parse(&[
        "experiment",
        "order",
        "cha",
        "--method=baseline",
        "--preset",
        "paper",
        "--emit=slurm",
        "--out",
        "/tmp/g",
    ])
    .unwrap();
    let Command::Experiment(e) = cli.command else {
        panic!("not experiment")
    };
    let ExperimentCommand::Order(o) = e.command else {
        panic!("not order")
    };
    // The canonical (upper-case) order: cell folders are named METHOD-ORDER in upper case.
    assert_eq!((o.order, o.method), ("CHA", Method::Baseline));
    assert_eq!(o.grid.preset, Preset::Paper);
    assert_eq!(o.grid.emit, Some(Emit::Slurm));
    assert_eq!(o.grid.out.as_deref(), Some(std::path::Path::new("/tmp/g")));
    // Without --method a cell is RID's (the README's `order AHC --method rid` is the default).
    let Command::Experiment(e) = parse(&["experiment", "order", "AHC"]).unwrap().command else {
        panic!("not experiment")
    };
    let ExperimentCommand::Order(o) = e.command else {
        panic!("not order")
    };
    assert_eq!(o.method, Method::Rid);
}

#[test]
fn a_repeated_flag_is_an_error() {
    // Two values of a single-valued flag are a mistake on the command line, not "the last wins".
    for args in [
        &[
            "experiment",
            "all-orders",
            "--preset",
            "tiny",
            "--preset",
            "paper",
        ][..],
        &["experiment", "all-orders", "--dry-run", "--dry-run"],
        &[
            "experiment",
            "order",
            "AHC",
            "--method=rid",
            "--method=baseline",
        ],
        &["bench", "--reps", "3", "--reps=4"],
        &["bench", "--compare", "--compare"],
        &["bench", "sample", "all"],
    ] {
        let kind = err_kind(args);
        assert!(
            matches!(
                kind,
                ErrorKind::ArgumentConflict | ErrorKind::UnknownArgument
            ),
            "{args:?}: {kind:?}"
        );
    }
}

#[test]
fn values_outside_a_closed_choice_are_parse_errors() {
    for args in [
        &["experiment", "all-orders", "--preset", "huge"][..],
        &["experiment", "all-orders", "--emit", "pbs"],
        &["experiment", "order", "AHH"],
        &["experiment", "order", "AH"],
        &["experiment", "order", "AHC", "--method", "ridd"],
        &["bench", "--backend", "rocm"],
        &["bench", "--preset", "sd21"],
        &["bench", "train"],
    ] {
        assert_eq!(err_kind(args), ErrorKind::InvalidValue, "{args:?}");
    }
    // Counts are numbers ≥ 1 (`ril bench` refuses --reps 0 only after the release build).
    assert_eq!(
        err_kind(&["bench", "--reps", "0"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        err_kind(&["bench", "--threads", "two"]),
        ErrorKind::ValueValidation
    );
}

#[test]
fn flags_of_one_subcommand_are_refused_by_another() {
    // all-orders runs both methods: a --method there would be silently ignored.
    assert_eq!(
        err_kind(&["experiment", "all-orders", "--method", "rid"]),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        err_kind(&["experiment", "report", "runs/x", "--preset", "tiny"]),
        ErrorKind::UnknownArgument
    );
}

#[test]
fn sbatch_options_go_with_emit_slurm_and_are_single_line_flags() {
    let cli = parse(&[
        "experiment",
        "all-orders",
        "--emit",
        "slurm",
        "--sbatch",
        "--partition=gpu",
        "--sbatch=--time=04:00:00",
    ])
    .unwrap();
    let Command::Experiment(e) = cli.command else {
        panic!("not experiment")
    };
    let ExperimentCommand::AllOrders(g) = e.command else {
        panic!("not all-orders")
    };
    assert_eq!(g.sbatch, ["--partition=gpu", "--time=04:00:00"]);
    // Not a flag, a second line smuggled in, or without --emit: refused, naming the flag.
    for bad in [
        &["--emit", "slurm", "--sbatch", "partition=gpu"][..],
        &["--emit", "slurm", "--sbatch", "--time=1\nrm -rf /"][..],
        &["--sbatch", "--partition=gpu"][..],
    ] {
        let args: Vec<&str> = ["experiment", "all-orders"]
            .iter()
            .chain(bad)
            .copied()
            .collect();
        let e = parse(&args).unwrap_err().to_string();
        assert!(
            e.contains("--sbatch") || e.contains("--emit"),
            "{bad:?}: {e}"
        );
    }
}

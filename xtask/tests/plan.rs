//! Grid planning on the repository's presets: which cells `all-orders` plans, the tasks of a
//! cell in its order, the single-reward and joint configs, the paper preset's dry-run plan (580
//! optimiser steps per cell, as README says) and the Slurm job script.

use std::collections::BTreeSet;
use std::path::Path;

use rid_trainer::config::{Method, RewardKind};
use sd_model::backend::BackendKind;
use xtask::cli::Preset;
use xtask::experiment::plan::{
    Cell, ORDERS, all_cells, cell_config, dry_run_line, letter, optimiser_steps, single_config,
    slurm_script,
};

#[test]
fn all_orders_plans_every_order_for_baseline_then_rid() {
    let cells = all_cells();
    let ids: Vec<String> = cells.iter().map(Cell::id).collect();
    // 3! orders × 2 methods, baseline first (the order the grid trains and tabulates them).
    assert_eq!(
        ids,
        [
            "baseline-AHC",
            "baseline-ACH",
            "baseline-HAC",
            "baseline-HCA",
            "baseline-CAH",
            "baseline-CHA",
            "rid-AHC",
            "rid-ACH",
            "rid-HAC",
            "rid-HCA",
            "rid-CAH",
            "rid-CHA",
        ]
    );
    // The six orders are exactly the permutations of A, H and C.
    let mut perms = BTreeSet::new();
    for a in ['A', 'H', 'C'] {
        for b in ['A', 'H', 'C'] {
            for c in ['A', 'H', 'C'] {
                if a != b && b != c && a != c {
                    perms.insert(format!("{a}{b}{c}"));
                }
            }
        }
    }
    let orders: BTreeSet<String> = ORDERS.iter().map(|o| o.to_string()).collect();
    assert_eq!(orders, perms);
}

#[test]
fn a_cell_trains_the_presets_tasks_in_its_order() {
    let root = xtask::root();
    for preset in [Preset::Tiny, Preset::Toy, Preset::Paper] {
        for cell in all_cells() {
            let dir = Path::new("/grid").join(cell.id());
            let c = cell_config(&root, preset, cell, &dir).unwrap();
            let letters: String = c.tasks.iter().map(|t| letter(t.reward)).collect();
            assert_eq!(letters, cell.order, "{preset:?} {}", cell.id());
            assert_eq!(c.method.kind, cell.method);
            // The run lives in the cell's folder: resume and the report look for it there.
            assert_eq!(c.output, dir.join("run"));
        }
    }
}

#[test]
fn the_paper_preset_plans_580_optimiser_steps_per_cell() {
    // configs/paper: epochs A 10, H 120, C 15 (the paper) × 4 steps per epoch = 580, in every
    // order and for both methods; README quotes the number.
    let root = xtask::root();
    for cell in all_cells() {
        let c = cell_config(&root, Preset::Paper, cell, Path::new("/grid")).unwrap();
        assert_eq!(optimiser_steps(&c), 580, "{}", cell.id());
    }
    let cell = Cell {
        method: Method::Rid,
        order: "HCA",
    };
    let c = cell_config(&root, Preset::Paper, cell, Path::new("/grid")).unwrap();
    // 580 steps × batch 8 = 4640 images, at 512x512 with 50 DDIM steps.
    assert_eq!(
        dry_run_line(cell, &c),
        "  rid-HCA: 3 tasks [hps -> compress -> aesthetic], 580 optimiser steps, 4640 training \
         images, 50 DDIM steps each, 512x512"
    );
}

#[test]
fn single_reward_and_joint_runs_are_one_baseline_task() {
    let root = xtask::root();
    for (l, reward) in [
        ('A', RewardKind::Aesthetic),
        ('H', RewardKind::Hps),
        ('C', RewardKind::Compress),
    ] {
        let c = single_config(&root, Preset::Paper, l, Path::new("/g/single")).unwrap();
        assert_eq!(c.method.kind, Method::Baseline);
        assert_eq!(c.tasks.len(), 1);
        assert_eq!(c.tasks[0].reward, reward);
    }
    // Joint tuning: the paper trains 0.01 A + 2 H + C for 20 epochs; the tiny preset keeps the
    // length of its first task.
    let paper = single_config(&root, Preset::Paper, 'J', Path::new("/g")).unwrap();
    assert_eq!(
        (
            paper.tasks[0].reward,
            paper.tasks[0].name.as_str(),
            paper.tasks[0].epochs
        ),
        (RewardKind::Joint, "joint", 20)
    );
    let tiny = single_config(&root, Preset::Tiny, 'J', Path::new("/g")).unwrap();
    let tiny_first = cell_config(
        &root,
        Preset::Tiny,
        Cell {
            method: Method::Baseline,
            order: "AHC",
        },
        Path::new("/g"),
    )
    .unwrap();
    assert_eq!(tiny.tasks[0].epochs, tiny_first.tasks[0].epochs);
}

#[test]
fn the_slurm_script_runs_one_cell_per_array_task() {
    let cells = all_cells();
    let s = slurm_script(
        &cells,
        Preset::Paper,
        BackendKind::TchCuda,
        &[],
        Path::new("/shared/grid"),
        Path::new("/src/ril"),
    );
    // 12 cells: array indices 0..=11, one METHOD:ORDER entry each.
    assert!(s.contains("#SBATCH --array=0-11\n"), "{s}");
    assert!(s.contains("CELLS=(baseline:AHC baseline:ACH "), "{s}");
    assert!(s.contains(" rid:CHA)\n"), "{s}");
    assert!(
        s.contains(
            "cd /src/ril\ncargo xtask experiment order \"$ORDER\" --method \"$METHOD\" --preset \
             paper --out /shared/grid\n"
        ),
        "{s}"
    );
    assert!(s.contains("#SBATCH --gres=gpu:1\n"), "{s}");
}

#[test]
fn the_slurm_script_asks_for_a_gpu_only_for_a_gpu_backend_and_adds_the_users_options() {
    let cells = all_cells();
    let sbatch = ["--partition=cpu".to_string(), "--time=02:00:00".to_string()];
    for backend in BackendKind::ALL {
        let s = slurm_script(
            &cells,
            Preset::Tiny,
            backend,
            &sbatch,
            Path::new("/g"),
            Path::new("/r"),
        );
        let gpu = matches!(backend, BackendKind::Cuda | BackendKind::TchCuda);
        assert_eq!(s.contains("--gres"), gpu, "{backend}: {s}");
        // Every directive sits before the first command (sbatch stops reading them there), the
        // user's after ril's, in the order given.
        let directives: Vec<&str> = s
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("#SBATCH "))
            .collect();
        assert_eq!(
            directives[directives.len() - 2..],
            ["--partition=cpu", "--time=02:00:00"],
            "{s}"
        );
        assert_eq!(directives[0], "--job-name=ril-grid", "{s}");
    }
}

#[test]
fn the_toy_grids_dry_run_lists_every_cell_and_the_single_soup_and_joint_runs() {
    let dir = std::env::temp_dir().join(format!("ril-toy-dry-run-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "experiment",
            "all-orders",
            "--preset",
            "toy",
            "--dry-run",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run xtask");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{text}", out.status);
    let mut ids: Vec<String> = all_cells().iter().map(Cell::id).collect();
    ids.extend(
        [
            "single-A",
            "single-H",
            "single-C",
            "soup",
            "single-J (joint)",
        ]
        .map(String::from),
    );
    for id in &ids {
        let line = format!("  {id}: ");
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "no plan line for {id}:\n{text}"
        );
    }
    // Every training run of the toy preset is on the toy base model with 64x64 images, and the
    // planning wrote nothing but the empty output folder.
    let runs = text
        .lines()
        .filter(|l| l.contains("optimiser steps"))
        .count();
    assert_eq!(runs, 12 + 4, "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("optimiser steps"))
            .all(|l| l.ends_with("64x64"))
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

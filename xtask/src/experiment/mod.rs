//! `cargo xtask experiment`: the paper's grid — every order of (aesthetic, HPS, compressibility)
//! × {baseline, RID} — trained with `ril train`, evaluated after every task with `ril eval` (the
//! same noise for every model), and reported as tables; resumable (a finished cell is skipped,
//! an interrupted one resumes from its checkpoint).

pub mod html;
pub mod plan;
pub mod report;
pub mod resume;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use ril_metrics::eval::EvalResult;

use crate::cli::{Emit, ExperimentCommand, GridArgs, Preset, name_of};
use plan::{Cell, base_config, cell_config, single_config};
use report::{Stages, read_result, write_grid_report, write_stage_tables};
use resume::{cell_commands, cell_status, eval_command, stage_dir, train_command};

/// Runs `cargo xtask experiment ...`.
pub fn run(cmd: ExperimentCommand) -> Result<()> {
    match cmd {
        ExperimentCommand::Report { dir } => report::rerender(&dir),
        ExperimentCommand::AllOrders(grid) => run_grid(&plan::all_cells(), true, &grid),
        ExperimentCommand::Order(o) => run_grid(
            &[Cell {
                method: o.method,
                order: o.order,
            }],
            false,
            &o.grid,
        ),
    }
}

/// Runs (or plans, or emits) `cells`; with `whole_grid` also the single-reward models, their
/// soup and joint tuning; then writes the tables.
fn run_grid(cells: &[Cell], whole_grid: bool, args: &GridArgs) -> Result<()> {
    let root = crate::root();
    let preset = args.preset;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => root.join(format!("runs/grid-{}", name_of(&preset))),
    };
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    status(&out, cells);
    let backend = base_config(&root, preset, rid_trainer::config::Method::Rid)?
        .model
        .backend;
    if let Some(Emit::Slurm) = args.emit {
        let path = out.join("slurm.sh");
        let script = plan::slurm_script(cells, preset, backend, &args.sbatch, &out, &root);
        sd_model::write_atomic(&path, script.as_bytes())?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    if args.dry_run {
        for &cell in cells {
            let c = cell_config(&root, preset, cell, &out.join(cell.id()))?;
            println!("{}", plan::dry_run_line(cell, &c));
        }
        if whole_grid {
            for l in ['A', 'H', 'C'] {
                let id = format!("single-{l}");
                let c = single_config(&root, preset, l, &out.join(&id))?;
                println!("{}", plan::run_line(&id, &c));
            }
            println!("  soup: the LoRA files of single-A, single-H and single-C, 1/3 each");
            let c = single_config(&root, preset, 'J', &out.join("single-J"))?;
            println!("{}", plan::run_line("single-J (joint)", &c));
        }
        return Ok(());
    }
    // An optimised build, but for the tiny preset's few seconds of work: a toy training step
    // took 1.3-1.5 s (beside another run) against the debug build's 3.1 s alone here
    // (configs/README.md, "The toy preset").
    let release = preset != Preset::Tiny;
    let ril = crate::cargo::build_ril(release, backend)?;
    let mut results = Vec::new();
    for &cell in cells {
        let t0 = Instant::now();
        let stages = run_cell(&root, &ril, preset, cell, &out)?;
        println!("{}: done in {:.1} s", cell.id(), t0.elapsed().as_secs_f64());
        results.push((cell.id(), stages));
    }
    let mut extra = Vec::new();
    if whole_grid {
        let mut loras = Vec::new();
        for l in ['A', 'H', 'C'] {
            let (lora, r) = run_single(&root, &ril, preset, l, &out)?;
            extra.push((format!("single {l}"), r));
            loras.push(lora);
        }
        let cfg = out.join("single-A/config.toml");
        extra.push(("soup".into(), run_soup(&ril, &loras, &cfg, &out)?));
        let (_, joint) = run_single(&root, &ril, preset, 'J', &out)?;
        extra.push(("joint".into(), joint));
    }
    write_grid_report(&out, &results, &extra)?;
    status(&out, cells);
    Ok(())
}

/// Writes `config` to DIR/config.toml (where `ril` reads it) and returns that path.
fn write_config(dir: &Path, config: &rid_trainer::TrainConfig) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("config.toml");
    sd_model::write_atomic(&path, toml::to_string(config)?.as_bytes())?;
    Ok(path)
}

/// Trains and evaluates one cell (what is not done yet); returns its stages.
fn run_cell(root: &Path, ril: &Path, preset: Preset, cell: Cell, out: &Path) -> Result<Stages> {
    let id = cell.id();
    let dir = out.join(&id);
    let config = cell_config(root, preset, cell, &dir)?;
    let cfg_path = write_config(&dir, &config)?;
    let base = out.join("eval-base");
    for mut cmd in cell_commands(ril, &config, &cfg_path, &dir, &base) {
        crate::cargo::run_command(&mut cmd)?;
    }
    let mut stages = vec![("SD".to_string(), read_result(&base)?)];
    for (k, t) in config.tasks.iter().enumerate() {
        stages.push((
            format!("+{}", plan::letter(t.reward)),
            read_result(&stage_dir(&dir, k + 1))?,
        ));
    }
    write_stage_tables(&dir, &id, &stages)?;
    let mut columns = vec![(stages[0].0.clone(), base.join("grid.png"))];
    columns.extend(
        (1..=config.tasks.len())
            .map(|k| (stages[k].0.clone(), stage_dir(&dir, k).join("grid.png"))),
    );
    stage_grid(&columns, &base, &dir.join("stages.png"))?;
    html::write_cell_report(&dir, &id)?;
    Ok(stages)
}

/// Trains (if needed) and evaluates a one-task baseline run (see [`plan::single_config`]).
/// Returns the task's LoRA file and the model's result.
fn run_single(
    root: &Path,
    ril: &Path,
    preset: Preset,
    letter_: char,
    out: &Path,
) -> Result<(PathBuf, EvalResult)> {
    let dir = out.join(format!("single-{letter_}"));
    let config = single_config(root, preset, letter_, &dir)?;
    let cfg_path = write_config(&dir, &config)?;
    let lora = resume::task_loras(&config).remove(0);
    let e = dir.join("eval");
    let cmds = train_command(ril, &config, &cfg_path)
        .into_iter()
        .chain(eval_command(
            ril,
            &cfg_path,
            &e,
            std::slice::from_ref(&lora),
        ));
    for mut cmd in cmds {
        crate::cargo::run_command(&mut cmd)?;
    }
    Ok((lora, read_result(&e)?))
}

/// The model soup of the three single-reward baseline models (1/3 each), evaluated.
fn run_soup(ril: &Path, loras: &[PathBuf], cfg: &Path, out: &Path) -> Result<EvalResult> {
    let dir = out.join("soup");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("soup.safetensors");
    if !file.is_file() {
        let mut cmd = Command::new(ril);
        cmd.arg("soup");
        for l in loras {
            cmd.arg("--lora").arg(l);
        }
        crate::cargo::run_command(cmd.arg("--out").arg(&file))?;
    }
    let e = dir.join("eval");
    if let Some(mut cmd) = eval_command(ril, cfg, &e, std::slice::from_ref(&file)) {
        crate::cargo::run_command(&mut cmd)?;
    }
    read_result(&e)
}

/// The paper's Fig. 5/6 layout: each stage's sample grid (rows = prompts) side by side.
fn stage_grid(columns: &[(String, PathBuf)], base: &Path, out: &Path) -> Result<()> {
    let imgs: Vec<image::RgbImage> = columns
        .iter()
        .map(|(_, p)| {
            image::open(p)
                .map(|i| i.to_rgb8())
                .with_context(|| format!("cannot read {}", p.display()))
        })
        .collect::<Result<_>>()?;
    let spec = report::read_spec(base)?;
    let rows = spec.grid_prompts.min(spec.prompts.len()).max(1);
    let headers: Vec<String> = columns.iter().map(|(name, _)| name.clone()).collect();
    let canvas = labelled_stages(
        &imgs,
        &spec.prompts[..rows.min(spec.prompts.len())],
        &headers,
    );
    sd_model::pipeline::save_png(&canvas, out)
}

/// The paper's Fig. 5/6 layout: one row per grid prompt (its caption at the left), one column per
/// stage (its name on top); each stage's grid.png holds its prompts' rows one under the other.
fn labelled_stages(
    stages: &[image::RgbImage],
    prompts: &[String],
    headers: &[String],
) -> image::RgbImage {
    let rows = prompts.len().max(1) as u32;
    let mut table: Vec<Vec<image::RgbImage>> = vec![Vec::new(); rows as usize];
    for img in stages {
        let h = img.height() / rows;
        for (r, row) in table.iter_mut().enumerate() {
            row.push(image::imageops::crop_imm(img, 0, r as u32 * h, img.width(), h).to_image());
        }
    }
    ril_metrics::figure::labelled_grid(prompts, headers, &table, 24, 1)
}

fn status(out: &Path, cells: &[Cell]) {
    println!("grid status in {}:", out.display());
    for cell in cells {
        let id = cell.id();
        println!("  {id:14} {}", cell_status(&out.join(&id)));
    }
}

#[cfg(test)]
mod stage_figure_tests {
    use image::{Rgb, RgbImage};

    #[test]
    fn stages_figure_has_a_row_per_prompt_and_a_column_per_stage() {
        // Two stages, each a grid of two prompt rows (8x8 images): row 0 red, row 1 blue in the
        // first stage; green / white in the second.
        let grid = |top: [u8; 3], bottom: [u8; 3]| {
            RgbImage::from_fn(8, 16, |_, y| Rgb(if y < 8 { top } else { bottom }))
        };
        let stages = [
            grid([255, 0, 0], [0, 0, 255]),
            grid([0, 255, 0], [250, 250, 250]),
        ];
        let prompts = vec!["a cat".to_string(), "a dog".to_string()];
        let fig = super::labelled_stages(&stages, &prompts, &["SD".into(), "+A".into()]);
        let count = |c: [u8; 3]| fig.pixels().filter(|p| **p == Rgb(c)).count();
        // Each 8x8 cell appears once, whole; the labels are written in ink.
        for c in [[255, 0, 0], [0, 0, 255], [0, 255, 0], [250, 250, 250]] {
            assert_eq!(count(c), 64, "{c:?}");
        }
        assert!(count([20, 20, 20]) > 0, "no text drawn");
        // The red cell (stage SD, prompt 0) is left of the green one (stage +A, prompt 0), and
        // above the blue one (stage SD, prompt 1).
        let first = |c: [u8; 3]| {
            fig.enumerate_pixels()
                .find(|(_, _, p)| **p == Rgb(c))
                .map(|(x, y, _)| (x, y))
                .unwrap()
        };
        let (red, green, blue) = (first([255, 0, 0]), first([0, 255, 0]), first([0, 0, 255]));
        assert!(red.0 < green.0 && red.1 == green.1, "{red:?} {green:?}");
        assert!(red.0 == blue.0 && red.1 < blue.1, "{red:?} {blue:?}");
    }
}

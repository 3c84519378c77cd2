//! One task of the toy preset, shortened: `ril train` of the aesthetic task on the committed toy
//! base model raises the toy aesthetic reward of `ril eval` on fixed noise and held-out captions.

use std::path::{Path, PathBuf};
use std::process::Command;

use ril_testkit::scratch;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ril(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_ril"))
        .args(args)
        .output()
        .expect("run ril");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "ril {args:?}:\n{text}");
    text
}

/// The value of `metric` that `ril eval` printed.
fn printed(out: &str, metric: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{metric}\t")))
        .unwrap_or_else(|| panic!("no {metric} in:\n{out}"))
        .parse()
        .unwrap()
}

/// configs/toy/baseline.toml with its aesthetic task only, shortened, writing into `dir`: the
/// relative paths made absolute (the file is read from `dir`).
fn short_config(dir: &Path) -> PathBuf {
    let toy = root().join("configs/toy");
    let text = std::fs::read_to_string(toy.join("baseline.toml")).unwrap();
    let (head, _) = text.split_once("[[tasks]]").unwrap();
    let head = head
        .replace("\"../../", &format!("\"{}/", root().display()))
        .replace("\"prompts-", &format!("\"{}/prompts-", toy.display()))
        .replace(
            &format!("\"{}/runs/toy/baseline-ahc\"", root().display()),
            &format!("\"{}\"", dir.join("run").display()),
        );
    assert!(
        head.contains(&dir.join("run").display().to_string()),
        "{head}"
    );
    // 6 steps of 2 at the lr at which the pilots' aesthetic task moved the reward most
    // (configs/README.md, "The toy preset"), so that a few steps show the direction.
    let task = "[[tasks]]\nname = \"aesthetic\"\nreward = \"aesthetic\"\nepochs = 1\n\
                steps_per_epoch = 6\nbatch_size = 2\nlr = 1e-2\nweight_decay = 1e-4\n\
                grad_clip = 1.0\n";
    let path = dir.join("short.toml");
    std::fs::write(&path, format!("{head}{task}")).unwrap();
    path
}

#[test]
fn a_short_aesthetic_task_on_the_toy_base_raises_the_toy_aesthetic_reward() {
    let dir = scratch("toy-task");
    let config = short_config(&dir);
    let cfg = config.to_str().unwrap();
    // Eight held-out captions, one image each from the evaluation's fixed noise.
    let all = std::fs::read_to_string(root().join("configs/toy/prompts-eval.txt")).unwrap();
    let prompts = dir.join("prompts.txt");
    let eight: Vec<&str> = all.lines().take(8).collect();
    std::fs::write(&prompts, eight.join("\n") + "\n").unwrap();
    let p = prompts.to_str().unwrap();
    let eval = |out: &str, lora: Option<&Path>| {
        let out = dir.join(out);
        let mut args = vec![
            "eval",
            "--config",
            cfg,
            "--prompts",
            p,
            "--metrics",
            "aesthetic",
            "--out",
            out.to_str().unwrap(),
        ];
        let l;
        if let Some(lora) = lora {
            l = lora.display().to_string();
            args.extend(["--lora", &l]);
        }
        printed(&ril(&args), "aesthetic")
    };
    let before = eval("eval-base", None);
    ril(&["train", "--config", cfg]);
    let lora = dir.join("run/task-0-aesthetic/lora.safetensors");
    let after = eval("eval-after", Some(&lora));
    eprintln!("toy aesthetic on 8 eval captions: {before} before, {after} after");
    // The reward is in [1, 10] with a spread of about 2 over images; the pilot's 8 steps of 8 at
    // this lr raised the 64-caption mean by 1.2. A rise of 0.1 on the same noise is a change of
    // the model's images, not of rounding (the same model and noise repeat bit for bit).
    assert!(
        after > before + 0.1,
        "aesthetic {before} before, {after} after 6 steps"
    );
    std::fs::remove_dir_all(&dir).ok();
}

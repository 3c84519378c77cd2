//! Tidy checks as ordinary tests: every Rust module starts with a `//!` line saying what it is,
//! no source file grows past ~900 lines, and crate dependencies follow the declared direction
//! (the table in `crate_dependencies_follow_the_declared_direction`).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "target" && name != "fixtures" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let mut files = Vec::new();
    for dir in ["src", "crates", "xtask", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 10);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        assert!(
            first.starts_with("//!"),
            "{} does not start with a //! line",
            f.display()
        );
        let lines = text.lines().count();
        assert!(
            lines <= 900,
            "{} has {lines} lines: split it by idea",
            f.display()
        );
    }
}

#[test]
fn crate_dependencies_follow_the_declared_direction() {
    // crate -> workspace crates it may depend on.
    let allowed: &[(&str, &[&str])] = &[
        // sd-model wires LoRA layers into its attention (lora-group stays a leaf).
        ("sd-model", &["lora-group"]),
        ("lora-group", &[]),
        ("rewards", &["sd-model"]),
        ("ril-metrics", &["rewards", "sd-model"]),
        ("rid-trainer", &["sd-model", "lora-group", "rewards"]),
        // The toy world stands alone: the root crate wires it to sd-model's backends.
        ("toy-shapes", &[]),
        // Pretraining builds sd-model's models and reads the toy world's data
        // (and trains its reward and metric models in the rewards' and metrics' architectures).
        (
            "pretrain",
            &[
                "sd-model",
                "lora-group",
                "toy-shapes",
                "rewards",
                "ril-metrics",
            ],
        ),
    ];
    let all: Vec<&str> = allowed
        .iter()
        .map(|(c, _)| *c)
        .chain(["rid-trainer"])
        .collect();
    for (krate, deps) in allowed {
        let manifest = root().join("crates").join(krate).join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue; // not built yet
        };
        for other in &all {
            if other == krate || deps.contains(other) {
                continue;
            }
            let uses = text.lines().any(|l| {
                l.trim_start().starts_with(&format!("{other} "))
                    || l.trim_start().starts_with(&format!("{other}."))
            });
            assert!(!uses, "{krate} must not depend on {other}");
        }
    }
}

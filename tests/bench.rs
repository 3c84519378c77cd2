//! `ril bench` on the tiny preset with each reward: every training-step figure it writes is a
//! finite number (an HPS tower with zero projections once made every score NaN).

use std::process::Command;

use ril_testkit::scratch;

#[test]
fn the_tiny_bench_times_a_finite_training_step_with_each_reward() {
    let dir = scratch("bench-rewards");
    for reward in ["compress", "aesthetic", "hps"] {
        let json = dir.join(format!("{reward}.json"));
        let o = Command::new(env!("CARGO_BIN_EXE_ril"))
            .args([
                "bench",
                "--preset",
                "tiny",
                "--what",
                "train-step",
                "--reps",
                "1",
            ])
            .args(["--steps", "2", "--reward", reward, "--json"])
            .arg(&json)
            .output()
            .expect("run ril");
        assert!(
            o.status.success(),
            "{reward}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(rec["reward"], reward);
        let res = &rec["results"];
        for method in ["baseline", "rid"] {
            let t = res[format!("train_step_{method}")]["median_s"].as_f64();
            assert!(
                t.is_some_and(|t| t.is_finite() && t > 0.0),
                "{reward} {method}: {t:?}"
            );
            let phases = res[format!("phases_{method}")].as_object().unwrap();
            assert!(phases.contains_key("reward") && phases.contains_key("backward"));
        }
        // Linux's /proc gives the process's age when its first step finished: positive and far
        // under an hour (clock ticks read as seconds, or the boot time as the start, would
        // be off by a factor of 100 or by the machine's uptime).
        let first = res["first_train_step_since_start_s"].as_f64().unwrap();
        assert!(
            first > 0.0 && first < 3600.0,
            "{reward}: first step at {first} s"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

//! End-to-end tests of `gradcast study`: a tiny grid on the built-in digits runs, writes its
//! table, JSON and plots, and the modeled times behave as the network model says; bad
//! arguments are usage errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradcast"))
        .args(args)
        .output()
        .expect("the gradcast binary runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_tiny_study_writes_its_report_and_times_fall_with_bandwidth() {
    let out = tmp("study-tiny");
    let o = gradcast(&[
        "study",
        "--data",
        "digits",
        "--models",
        "mlp",
        "--hidden",
        "16",
        "--workers",
        "2,3",
        "--methods",
        "dense-fp32,dense-fp16,gradcast-budget:2048",
        "--epochs",
        "2",
        "--batch",
        "32",
        "--lr",
        "0.1",
        "--target-drop",
        "100",
        "--gbit",
        "0.1,1,10",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(v, file, "stdout and study.json hold the same report");
    let configs = v["configs"].as_array().unwrap();
    // P = 2 once; the headline configuration (the largest P) with the default 3 seeds.
    let seen: Vec<(u64, u64)> = configs
        .iter()
        .map(|c| (c["workers"].as_u64().unwrap(), c["seed"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [(2, 42), (3, 42), (3, 43), (3, 44)]);
    for c in configs {
        let params = c["params"].as_u64().unwrap();
        assert_eq!(params, 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10);
        let methods = c["methods"].as_array().unwrap();
        assert_eq!(methods.len(), 3);
        for m in methods {
            assert!(m["replicas_identical"].as_bool().unwrap());
            // With a target 100 points below dense fp32's accuracy every method reaches it
            // at its first evaluation, and a faster link never makes it later.
            let t: Vec<f64> = m["time_to_target_s"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_f64().expect("reached"))
                .collect();
            assert_eq!(t.len(), 3);
            assert!(t[0] >= t[1] && t[1] >= t[2] && t[2] > 0.0, "{t:?}");
        }
        let bytes = |i: usize| methods[i]["mean_message_bytes"].as_f64().unwrap();
        assert_eq!(bytes(0), 4.0 * params as f64, "dense fp32 sends 4 N bytes");
        assert_eq!(bytes(1), 2.0 * params as f64, "dense fp16 sends 2 N bytes");
        assert!(bytes(2) <= 2048.0, "the budget holds: {}", bytes(2));
    }
    let md = std::fs::read_to_string(out.join("study.md")).unwrap();
    assert!(md.contains("| gradcast-budget:2048 |"), "{md}");
    for p in [2, 3] {
        let png = std::fs::read(out.join(format!("study-mlp-p{p}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    for (args, says) in [
        (&["--workers", "0"][..], "--workers 0"),
        (&["--methods", "dense-fp64"][..], "dense-fp64"),
        (&["--lr=-1"][..], "--lr"),
        (&["--gbit", "0"][..], "--gbit 0"),
        (&["--data", "nowhere"][..], "nowhere"),
    ] {
        let data = if args[0] == "--data" {
            [][..].as_ref()
        } else {
            &["--data", "digits"][..]
        };
        let mut all = vec!["study"];
        all.extend_from_slice(data);
        all.push("--out");
        let out = tmp("study-bad");
        all.push(out.to_str().unwrap());
        all.extend_from_slice(args);
        let o = gradcast(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

//! End-to-end tests of the `gradcast` binary: a shortened `train`, the
//! `encode`/`decode`/`inspect` round trip, and clear errors with non-zero exit codes for bad
//! arguments and bad files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradcast"))
        .args(args)
        .output()
        .expect("the gradcast binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh directory under the target's temporary folder.
fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_f32(path: &Path, v: &[f32]) {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, b).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn short_train_prints_the_summary_json_and_writes_plot_and_summary() {
    let out = tmp("train");
    let o = gradcast(&[
        "train",
        "--json",
        "--epochs",
        "3",
        "--hidden",
        "32",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let s: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    for run in ["dense", "gradcast"] {
        let r = &s[run];
        let acc = r["test_accuracy"].as_f64().unwrap();
        // Three epochs on the digits: far above chance (10%), never above 1.
        assert!((0.5..=1.0).contains(&acc), "{run} accuracy {acc}");
        assert!(r["bytes"].as_u64().unwrap() > 0, "{run} bytes");
        assert!(r["seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(r["replicas_identical"], true);
        assert_eq!(r["epochs"].as_array().unwrap().len(), 3);
    }
    for k in ["encode_seconds", "exchange_seconds", "decode_seconds"] {
        assert!(s["gradcast"][k].as_f64().unwrap() >= 0.0, "{k}");
    }
    let dense = s["dense"]["bytes"].as_u64().unwrap();
    let gc = s["gradcast"]["bytes"].as_u64().unwrap();
    // Dense: 4 N P bytes per round; N = (64+1)*32 + (32+1)*10 = 2410, P = 4.
    let rounds = s["rounds"].as_u64().unwrap();
    assert_eq!(s["params"], 2410);
    assert_eq!(dense, 4 * 2410 * 4 * rounds);
    assert!(gc < dense);
    let ratio = s["compression_ratio"].as_f64().unwrap();
    assert!((ratio - dense as f64 / gc as f64).abs() < 1e-9 * ratio);
    // The files in --out.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(file, s);
    let png = std::fs::read(out.join("train.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn every_threshold_policy_trains() {
    let out = tmp("policies");
    for policy in ["fixed:0.02", "adaptive", "target:0.002", "budget:200"] {
        let o = gradcast(&[
            "train",
            "--json",
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--threshold",
            policy,
            "--out",
            p(&out),
        ]);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["config"]["threshold"], policy);
        assert_eq!(s["gradcast"]["replicas_identical"], true);
        let msgs = s["rounds"].as_u64().unwrap() * 4;
        let mix = &s["gradcast"]["epochs"][0]["encodings"];
        let total: u64 = ["sparse", "bitmap", "dense"]
            .iter()
            .map(|k| mix[k].as_u64().unwrap())
            .sum();
        assert_eq!(total, msgs, "{policy}: one message per worker and round");
        if policy == "budget:200" {
            // The byte budget holds for every message: at most 200 bytes per worker and round.
            assert!(s["gradcast"]["bytes"].as_u64().unwrap() <= 200 * msgs);
        }
    }
    // The core rejects a target sparsity of 1/16 or more: a usage error naming the option.
    let o = gradcast(&["train", "--threshold", "target:0.5", "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--threshold target:0.5"),
        "{}",
        stderr(&o)
    );
}

/// The options that choose the optimizer, baseline, payload, segments and timing mode reach
/// the driver and the summary (the model: the IDX tests).
#[test]
fn training_options_reach_the_summary() {
    let out = tmp("options");
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &[
                "--optimizer",
                "adamw",
                "--lr",
                "0.003",
                "--threshold",
                "fixed:0.02",
            ],
            "optimizer",
            "adamw",
        ),
        (&["--baseline", "dense-fp16"], "baseline", "dense-fp16"),
        (
            &["--payload", "updates", "--threshold", "fixed:0.01"],
            "payload",
            "updates",
        ),
        (&["--segments", "variable"], "segments", "variable"),
        (&["--compute", "sequential"], "compute", "sequential"),
    ];
    for (extra, key, want) in cases {
        let mut args = vec![
            "train",
            "--json",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--out",
            p(&out),
        ];
        args.extend_from_slice(extra);
        let o = gradcast(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["config"][key], *want, "{extra:?}");
        for run in ["dense", "gradcast"] {
            assert_eq!(s[run]["replicas_identical"], true, "{extra:?} {run}");
            assert!(
                s[run]["test_accuracy"].as_f64().unwrap() > 0.3,
                "{extra:?} {run}"
            );
        }
        if *want == "dense-fp16" {
            // 2 bytes per parameter and worker.
            let rounds = s["rounds"].as_u64().unwrap();
            assert_eq!(s["dense"]["bytes"], 2 * 1210 * 4 * rounds);
            assert_eq!(s["dense"]["exchange"], "dense-fp16");
        }
    }
}

#[test]
fn short_train_human_output_has_epochs_and_summary() {
    let out = tmp("train-human");
    let o = gradcast(&["train", "--epochs", "2", "--hidden", "16", "--out", p(&out)]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let s = stdout(&o);
    for want in [
        "dense",
        "gradcast",
        "final test accuracy",
        "bytes on the wire",
        "compression",
        "encode / exchange / decode",
        "train.png",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
}

#[test]
fn encode_decode_inspect_round_trip_native_and_dl4j() {
    let d = tmp("codec");
    let v: Vec<f32> = (0..1000)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let input = d.join("residual.f32");
    write_f32(&input, &v);
    let tau = 1.5f32;
    for format in ["native", "dl4j"] {
        for encoding in ["auto", "sparse", "bitmap"] {
            let msg = d.join(format!("m-{format}-{encoding}"));
            let rest = d.join(format!("r-{format}-{encoding}"));
            let back = d.join(format!("b-{format}-{encoding}"));
            let o = gradcast(&[
                "encode",
                p(&input),
                p(&msg),
                "--tau",
                "1.5",
                "--format",
                format,
                "--encoding",
                encoding,
                "--residual",
                p(&rest),
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
            let o = gradcast(&["decode", p(&msg), p(&back), "--format", format]);
            assert!(o.status.success(), "{}", stderr(&o));
            let decoded = read_f32(&back);
            let residual = read_f32(&rest);
            assert_eq!(decoded.len(), v.len());
            for i in 0..v.len() {
                // Mass conservation: decoded + residual == input, exactly.
                let expect = if v[i].abs() >= tau {
                    v[i].signum() * tau
                } else {
                    0.0
                };
                assert_eq!(decoded[i], expect, "element {i}");
                assert_eq!(decoded[i] + residual[i], v[i], "element {i}");
            }
            let o = gradcast(&["inspect", p(&msg), "--format", format, "--json"]);
            assert!(o.status.success(), "{}", stderr(&o));
            let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let m = &j["messages"][0];
            assert_eq!(j["valid"], true);
            assert_eq!(m["n"], 1000);
            let k = v.iter().filter(|x| x.abs() >= tau).count() as u64;
            assert_eq!(m["count"].as_u64().unwrap(), k);
            assert_eq!(
                m["positive"].as_u64().unwrap() + m["negative"].as_u64().unwrap(),
                k
            );
            if encoding != "auto" {
                assert_eq!(m["encoding"], encoding);
            }
            let o = gradcast(&["inspect", p(&msg), "--format", format]);
            assert!(o.status.success());
            assert!(stdout(&o).contains("valid"));
        }
    }
}

#[test]
fn bad_arguments_fail_with_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--threshold", "fixed:-1"],
            "TAU must be finite and greater than 0",
        ),
        (&["train", "--threshold", "bogus"], "unknown policy"),
        (&["train", "--workers", "0"], "--workers 0"),
        (
            &["train", "--batch", "2", "--workers", "4"],
            "smaller than --workers",
        ),
        (&["train", "--lr=-0.1"], "--lr -0.1"),
        (&["train", "--backend", "tpu"], "unknown backend"),
        (
            &["train", "--data", "nowhere"],
            "expected `digits`, `fashion-mnist` or `idx:DIR`",
        ),
        (&["train", "--epochs", "0"], "--epochs"),
        (&["train", "--hidden", "40000000"], "--hidden 40000000"),
        (&["train", "--hidden", "18446744073709551615"], "--hidden"),
        (&["train", "--hidden", "64,0"], "--hidden 64,0"),
        (&["encode", "a", "b", "--tau", "0"], "--tau"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, want) in cases {
        let o = gradcast(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{args:?}: expected {want:?} in {}",
            stderr(&o)
        );
    }
    if !cfg!(feature = "cuda") {
        let o = gradcast(&["train", "--backend", "cuda"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("not compiled into this build"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn bad_files_fail_with_messages_that_say_what_is_wrong() {
    let d = tmp("bad");
    let good_in = d.join("v.f32");
    write_f32(&good_in, &[0.0, 2.0, -3.0, 0.5]);
    let msg = d.join("m");
    assert!(
        gradcast(&["encode", p(&good_in), p(&msg), "--tau", "1"])
            .status
            .success()
    );
    let bytes = std::fs::read(&msg).unwrap();

    let odd = d.join("odd.f32");
    std::fs::write(&odd, [0u8; 7]).unwrap();
    let nan = d.join("nan.f32");
    write_f32(&nan, &[1.0, f32::NAN]);
    let truncated = d.join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
    let corrupt = d.join("corrupt");
    let mut c = bytes.clone();
    let last = c.len() - 1;
    c[last] ^= 0x40;
    std::fs::write(&corrupt, &c).unwrap();
    let garbage = d.join("garbage");
    std::fs::write(
        &garbage,
        b"this is not a gradcast message at all, not even close",
    )
    .unwrap();
    let empty = d.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let missing = d.join("missing");
    let o = d.join("o");
    let idx_arg = format!("idx:{}", d.display());

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["encode", p(&odd), p(&o), "--tau", "1"],
            "not a multiple of 4",
        ),
        (vec!["encode", p(&nan), p(&o), "--tau", "1"], "NaN"),
        (
            vec!["encode", p(&missing), p(&o), "--tau", "1"],
            "cannot read",
        ),
        (vec!["inspect", p(&truncated)], "truncated"),
        (vec!["inspect", p(&corrupt)], "checksum"),
        (vec!["inspect", p(&garbage)], "magic"),
        (vec!["inspect", p(&empty)], "empty file"),
        (vec!["decode", p(&corrupt), p(&o)], "checksum"),
        (vec!["inspect", p(&msg), "--format", "dl4j"], "DL4J"),
        (
            vec!["train", "--data", &idx_arg, "--epochs", "1"],
            "train-images-idx3-ubyte",
        ),
    ];
    for (args, want) in &cases {
        let o = gradcast(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let e = stderr(&o).to_lowercase();
        assert!(e.starts_with("error: "), "{args:?}: {e}");
        assert!(
            e.contains(&want.to_lowercase()),
            "{args:?}: expected {want:?} in {e}"
        );
    }
}

/// IDX files: a tiny well-formed MNIST-layout set trains; a broken one is rejected.
#[test]
fn idx_directory_trains_and_bad_idx_is_rejected() {
    let d = tmp("idx");
    let idx = |dims: &[u32], data: &[u8]| {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for x in dims {
            out.extend_from_slice(&x.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    };
    // 40 training and 20 test "images" of 4x4 pixels; the label is the brightest quadrant.
    let make = |n: usize, seed: usize| {
        let mut px = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = (i + seed) % 4;
            for r in 0..4 {
                for c in 0..4 {
                    let q = (r / 2) * 2 + c / 2;
                    px.push(if q == label {
                        200 + (i % 50) as u8
                    } else {
                        (i * 7 % 40) as u8
                    });
                }
            }
            labels.push(label as u8);
        }
        (px, labels)
    };
    let (tp, tl) = make(40, 0);
    let (sp, sl) = make(20, 1);
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[40, 4, 4], &tp)).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[40], &tl)).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(&[20, 4, 4], &sp)).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[20], &sl)).unwrap();
    let data = format!("idx:{}", d.display());
    let out = d.join("out");
    let o = gradcast(&[
        "train",
        "--json",
        "--data",
        &data,
        "--epochs",
        "20",
        "--batch",
        "8",
        "--hidden",
        "8",
        "--lr",
        "0.5",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["data"]["train"], 40);
    assert_eq!(s["data"]["test"], 20);
    assert_eq!(s["data"]["features"], 16);
    assert!(s["dense"]["test_accuracy"].as_f64().unwrap() > 0.5);

    // The convnet on the same files (4x4 images).
    let o = gradcast(&[
        "train",
        "--json",
        "--data",
        &data,
        "--model",
        "cnn",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["model"], "CNN 4x4 (16-32 conv, 64 dense) -> 10");

    // Labels that do not match the images' count.
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[19], &sl[..19])).unwrap();
    let o = gradcast(&["train", "--data", &data, "--epochs", "1", "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("holds 20 images but"), "{}", stderr(&o));
    // A truncated image file.
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[20], &sl)).unwrap();
    std::fs::write(
        d.join("train-images-idx3-ubyte"),
        &idx(&[40, 4, 4], &tp)[..100],
    )
    .unwrap();
    let o = gradcast(&["train", "--data", &data, "--epochs", "1", "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a valid IDX file"),
        "{}",
        stderr(&o)
    );
}

/// `--model cnn --data idx:DIR` on MNIST-format files of 28x28 images; images that are not
/// square are a usage error naming the option.
#[test]
fn cnn_trains_on_28x28_idx_files() {
    let d = tmp("idx28");
    let idx = |dims: &[u32], data: &[u8]| {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for x in dims {
            out.extend_from_slice(&x.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    };
    // The label is the quadrant holding a bright 8x8 square.
    let make = |n: usize, rows: usize, cols: usize| {
        let (mut px, mut labels) = (Vec::new(), Vec::new());
        for i in 0..n {
            let label = i % 4;
            let (r0, c0) = ((label / 2) * rows / 2 + 2, (label % 2) * cols / 2 + 2);
            for r in 0..rows {
                for c in 0..cols {
                    let on = (r0..r0 + 8).contains(&r) && (c0..c0 + 8).contains(&c);
                    px.push(if on {
                        180 + (i % 70) as u8
                    } else {
                        (i * 13 + r * c) as u8 % 30
                    });
                }
            }
            labels.push(label as u8);
        }
        (px, labels)
    };
    let write = |rows: usize, cols: usize| {
        let (tp, tl) = make(64, rows, cols);
        let (sp, sl) = make(32, rows, cols);
        let (r, c) = (rows as u32, cols as u32);
        std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[64, r, c], &tp)).unwrap();
        std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[64], &tl)).unwrap();
        std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(&[32, r, c], &sp)).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[32], &sl)).unwrap();
    };
    write(28, 28);
    let data = format!("idx:{}", d.display());
    let out = d.join("out");
    let o = gradcast(&[
        "train",
        "--json",
        "--model",
        "cnn",
        "--data",
        &data,
        "--epochs",
        "3",
        "--batch",
        "16",
        "--lr",
        "0.1",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["model"], "CNN 28x28 (16-32 conv, 64 dense) -> 10");
    assert_eq!(s["params"], 105_866);
    assert_eq!(s["data"]["features"], 784);
    for run in ["dense", "gradcast"] {
        assert_eq!(s[run]["replicas_identical"], true);
        assert_eq!(s[run]["epochs"].as_array().unwrap().len(), 3);
    }
    write(28, 20);
    let o = gradcast(&["train", "--model", "cnn", "--data", &data, "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--model cnn"), "{}", stderr(&o));
    assert!(stderr(&o).contains("square images"), "{}", stderr(&o));
}

//! Smoke test of `gradcast bench --round`: it runs, prints one row per configuration, and
//! every party's replica ends bit-identical. Correctness only: no timing is asserted.

use std::process::Command;

#[test]
fn bench_round_runs_and_replicas_agree() {
    let o = Command::new(env!("CARGO_BIN_EXE_gradcast"))
        .args([
            "bench",
            "--round",
            "--json",
            "--log2-n",
            "12",
            "--parties",
            "1,3",
            "--density",
            "1e-2",
            "--reps",
            "2",
        ])
        .output()
        .expect("the gradcast binary runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    for (row, p) in rows.iter().zip([1, 3]) {
        assert_eq!(row["parties"], p);
        assert_eq!(row["n"], 4096);
        assert_eq!(row["replicas_identical"], true);
        // About 1e-2 of 4096 elements per party per round, sent as sparse entries.
        let entries = row["entries"].as_f64().unwrap();
        assert!((10.0..=120.0).contains(&entries), "{entries}");
        for k in ["round_ms", "dense_ms", "read_ms"] {
            assert!(row[k].as_f64().unwrap() > 0.0, "{k}");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_gradcast"))
        .args(["bench", "--round", "--parties", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--parties"));
}

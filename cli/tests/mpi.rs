//! `gradcast train --transport mpi`: a usage error without the `mpi` feature; with it, a short
//! training on 2 ranks x 2 workers under mpirun where every rank reports the same checksum,
//! equal to the same job on 1 rank x 4 workers (a singleton MPI run, no mpirun).
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::process::Command;

fn gradcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gradcast"))
}

#[cfg(not(feature = "mpi"))]
#[test]
fn transport_mpi_needs_the_feature() {
    let out = gradcast()
        .args(["train", "--transport", "mpi", "--epochs", "1"])
        .output()
        .expect("run gradcast");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features mpi"), "{err}");
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::gradcast;
    use std::path::Path;
    use std::process::Command;

    /// The gradcast checksums the ranks printed, in output order.
    fn checksums(stdout: &str) -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.split_once(": checksum gradcast ").map(|(_, r)| r))
            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    fn args(out: &Path, workers: &str) -> Vec<String> {
        [
            "train",
            "--transport",
            "mpi",
            "--workers",
            workers,
            "--epochs",
            "2",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    }

    #[test]
    fn ranks_agree_and_match_one_rank() {
        let dir = std::env::temp_dir().join(format!("gradcast-mpi-test-{}", std::process::id()));
        // One rank with 4 workers: a singleton MPI job.
        let single = gradcast()
            .args(args(&dir.join("single"), "4"))
            .output()
            .expect("run gradcast");
        assert!(
            single.status.success(),
            "{}",
            String::from_utf8_lossy(&single.stderr)
        );
        let one = checksums(&String::from_utf8_lossy(&single.stdout));
        assert_eq!(one.len(), 1);
        let summary = std::fs::read_to_string(dir.join("single/summary.json")).expect("summary");
        let json: serde_json::Value = serde_json::from_str(&summary).expect("json");
        assert_eq!(json["mpi"]["ranks"], 1);
        assert_eq!(json["config"]["workers"], 4);
        assert_eq!(json["gradcast"]["replicas_identical"], true);
        assert!(json["dense"]["test_accuracy"].as_f64().is_some());

        // Two ranks with 2 workers each: the same 4 workers, the same data, the same job.
        let multi = Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
            .arg(env!("CARGO_BIN_EXE_gradcast"))
            .args(args(&dir.join("multi"), "2"))
            .output();
        let multi = match multi {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("SKIP: mpirun is not on the PATH");
                return;
            }
            r => r.expect("run mpirun"),
        };
        assert!(
            multi.status.success(),
            "{}",
            String::from_utf8_lossy(&multi.stderr)
        );
        let two = checksums(&String::from_utf8_lossy(&multi.stdout));
        assert_eq!(two.len(), 2, "{two:?}");
        assert_eq!(two[0], two[1], "the ranks differ");
        assert_eq!(two[0], one[0], "2 ranks x 2 workers differ from 1 rank x 4");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

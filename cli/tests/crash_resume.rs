//! Crash-resume of `gradcast train` (issue 18, test 4(d)): the whole job is killed with
//! SIGKILL at a random round, resumed with `--resume` from its last checkpoint, and ends with
//! both runs' parameters bit-identical (checksums) and the same byte counts as an
//! uninterrupted run; in one process, and under `mpirun -np 2` with the `mpi` feature
//! (SKIP without mpirun).
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EPOCHS: &str = "3";
const EVERY: u64 = 4;

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-resume-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temporary directory");
    d
}

/// A number from the clock, or GRADCAST_TEST_SEED (printed, to replay a failure).
fn seed() -> u64 {
    let s = std::env::var("GRADCAST_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos() as u64)
        });
    println!("GRADCAST_TEST_SEED={s}");
    s
}

/// `gradcast train` with the job's options (or `mpirun -np 2 gradcast train --transport mpi`).
fn train(mpi: bool, out: &Path, extra: &[String]) -> Command {
    let mut c = if mpi {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
            .arg(env!("CARGO_BIN_EXE_gradcast"))
            .args(["train", "--transport", "mpi", "--workers", "2"]);
        c
    } else {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gradcast"));
        c.args(["train", "--workers", "4"]);
        c
    };
    c.args([
        "--epochs",
        EPOCHS,
        "--hidden",
        "32",
        "--threshold",
        "adaptive",
        "--optimizer",
        "adamw",
        "--lr",
        "0.002",
        "--out",
    ])
    .arg(out)
    .args(extra);
    c
}

/// Both runs' checksums and bytes: from every rank's checksum line and summary.json.
fn result(out: &Output, dir: &Path) -> (Vec<String>, String) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sums: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(": checksum ").map(|(_, r)| r.to_string()))
        .collect();
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
            .expect("json");
    for run in ["dense", "gradcast"] {
        assert_eq!(s[run]["replicas_identical"], true, "{run}");
        sums.push(format!("{run} {}", s[run]["checksum"]));
    }
    sums.sort();
    let counts = format!(
        "bytes {} {} epochs {} {}",
        s["dense"]["bytes"], s["gradcast"]["bytes"], s["dense"]["epochs"], s["gradcast"]["epochs"]
    );
    (sums, counts)
}

/// Rounds of the newest checkpoint of rank 0 in `dir`, if any.
fn newest(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_prefix("rank0-round")?
                .strip_suffix(".gcjob")?
                .parse()
                .ok()
        })
        .max()
}

/// The processes whose command line names `marker` (this test's checkpoint directory): the
/// job's processes and no others.
fn job_pids(marker: &Path) -> Vec<String> {
    let marker = marker.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(&marker)
        {
            out.push(pid);
        }
    }
    out
}

/// SIGKILL to the whole job at once: its process group, and every process of the job (MPI
/// ranks may run in groups of their own).
fn kill_job(child: &Child, marker: &Path) {
    let mut args = vec!["-KILL".to_string(), "--".into(), format!("-{}", child.id())];
    args.extend(job_pids(marker));
    // `kill` fails if one of them was already gone; the check below is what counts.
    let _ = Command::new("kill").args(&args).status().expect("run kill");
}

fn crash_and_resume(mpi: bool) {
    let base = tmp(if mpi { "mpi" } else { "local" });
    let reference = train(mpi, &base.join("ref"), &[])
        .output()
        .expect("run gradcast");
    let (want, want_counts) = result(&reference, &base.join("ref"));

    // 23 rounds per epoch (1438 training digits, batch 64): kill after a random round past
    // the first checkpoint, as soon as its checkpoint file appears (often during the next
    // write), and never after the job finished.
    let rounds = 23 * EPOCHS.parse::<u64>().unwrap();
    let s = seed();
    let at = EVERY * (1 + s % ((rounds - EVERY) / EVERY));
    let ck = base.join("ck");
    let out = base.join("run");
    let flags: Vec<String> = vec![
        "--checkpoint-every".into(),
        EVERY.to_string(),
        "--checkpoint-dir".into(),
        ck.display().to_string(),
    ];
    let mut child = train(mpi, &out, &flags)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gradcast");
    let t = Instant::now();
    loop {
        if newest(&ck).is_some_and(|r| r >= at) {
            // A few more milliseconds, at random: the kill lands anywhere in the next rounds.
            std::thread::sleep(Duration::from_micros(s % 20_000));
            break;
        }
        if let Some(st) = child.try_wait().expect("wait") {
            panic!("the job ended ({st}) before round {at}: nothing to kill");
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "no checkpoint of round {at}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    kill_job(&child, &ck);
    let st = child.wait().expect("wait");
    assert!(!st.success(), "the job finished before the kill");
    let killed_at = newest(&ck).unwrap_or(0);
    println!("killed after the checkpoint of round {at} (newest file: round {killed_at})");
    assert!(killed_at < rounds, "the job was not killed before its end");
    // No process of the job survives.
    let t = Instant::now();
    while !job_pids(&ck).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "processes left: {:?}",
            job_pids(&ck)
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut resume = flags.clone();
    resume.extend(["--resume".into(), ck.display().to_string()]);
    let resumed = train(mpi, &out, &resume).output().expect("run gradcast");
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(text.contains("resumed from"), "{text}");
    for l in text.lines() {
        if l.starts_with("resumed from") || l.starts_with("checkpoints:") {
            println!("{l}");
        }
    }
    let (got, got_counts) = result(&resumed, &out);
    assert_eq!(got, want, "the resumed job's parameters differ");
    assert_eq!(got_counts, want_counts, "the resumed job's counters differ");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn killed_at_a_random_round_and_resumed_in_process_is_bit_identical() {
    crash_and_resume(false);
}

#[test]
fn killed_at_a_random_round_and_resumed_under_mpi_is_bit_identical() {
    if !cfg!(feature = "mpi") {
        println!("SKIP: built without the mpi feature (cargo test --features mpi)");
        return;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("SKIP: mpirun is not on the PATH");
        return;
    }
    crash_and_resume(true);
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let base = tmp("none");
    let o = train(
        false,
        &base.join("out"),
        &["--resume".into(), base.join("ck").display().to_string()],
    )
    .output()
    .expect("run gradcast");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nothing to resume"), "{err}");
    let o = train(
        false,
        &base.join("out"),
        &["--checkpoint-every".into(), "3".into()],
    )
    .output()
    .expect("run gradcast");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--checkpoint-dir"));
    let _ = std::fs::remove_dir_all(&base);
}

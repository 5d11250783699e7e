//! Job checkpoints (issue 18, test 4(d) in process): a job stopped at a random round and
//! resumed from its last checkpoint ends bit-identical to one never stopped, with SGD and
//! AdamW; damaged, truncated and other-configuration checkpoints are refused with typed
//! errors; what a kill during a write leaves behind still resumes from the previous one.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use common::{task, values};
use gradcast_candle::data::Dataset;
use gradcast_candle::driver::checkpoint::{file_name, write_atomic};
use gradcast_candle::driver::{Compute, Job, Quiet, Replicas, TrainConfig, rounds_per_epoch};
use gradcast_candle::models::ModelSpec;
use gradcast_candle::optim::{AdamWParams, OptimizerSpec};
use gradcast_candle::rng::SplitMix64;
use gradcast_candle::{Config, Cpu, Error, Exchange, GradcastConfig, InProcess, Threshold};
use std::path::{Path, PathBuf};

fn split() -> (Dataset, Dataset) {
    let all = task();
    let train: Vec<usize> = (0..200).collect();
    let test: Vec<usize> = (200..264).collect();
    (all.select(&train), all.select(&test))
}

fn config(optimizer: OptimizerSpec) -> TrainConfig {
    TrainConfig {
        model: ModelSpec::Mlp { hidden: vec![16] },
        workers: 3,
        batch: 30,
        epochs: 2,
        seed: 5,
        optimizer,
        compute: Compute::Sequential,
        replicas: Replicas::PerWorker,
        eval_every: 0,
    }
}

fn adamw() -> OptimizerSpec {
    OptimizerSpec::AdamW(AdamWParams {
        lr: 0.01,
        ..AdamWParams::default()
    })
}

/// A dense baseline and gradcast (adaptive threshold: policy state that must survive).
fn job<'d>(c: TrainConfig, train: &'d Dataset, test: &'d Dataset) -> Job<'d, Cpu, InProcess> {
    let mut j = Job::new(c, train, test).expect("job");
    j.add_run(
        "dense",
        Config::with_exchange(Exchange::DenseF32),
        Cpu::default(),
        InProcess,
    )
    .expect("dense run");
    j.add_run(
        "gradcast",
        Config::with_exchange(Exchange::Gradcast(GradcastConfig::with_threshold(
            Threshold::Adaptive,
        ))),
        Cpu::default(),
        InProcess,
    )
    .expect("gradcast run");
    j
}

/// Per run: every replica's variables by name, rounds, bytes.
type Fingerprint = Vec<(Vec<Vec<(String, Vec<f32>)>>, u64, u64)>;

/// Every replica's parameters of every run, and the counters that must match.
fn fingerprint(j: &Job<'_, Cpu, InProcess>) -> Fingerprint {
    j.runs()
        .iter()
        .map(|r| {
            (
                r.varmaps().iter().map(values).collect(),
                r.state.rounds,
                r.state.bytes + r.state.epoch.bytes,
            )
        })
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradcast-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temporary directory");
    d
}

/// The test's random seed: GRADCAST_TEST_SEED, else from the clock (printed, to replay).
fn seed() -> u64 {
    let s = std::env::var("GRADCAST_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("GRADCAST_TEST_SEED={s}");
    s
}

fn stopped_and_resumed(optimizer: OptimizerSpec, every: u64, name: &str) {
    let (train, test) = split();
    let c = config(optimizer);
    let total = rounds_per_epoch(train.len(), c.batch) * c.epochs as u64;
    let mut reference = job(c.clone(), &train, &test);
    reference.run(&mut Quiet).expect("uninterrupted run");
    let want = fingerprint(&reference);
    let want_records: Vec<_> = reference
        .runs()
        .iter()
        .map(|r| r.records().to_vec())
        .collect();

    let mut rng = SplitMix64::new(seed());
    // Stop after a random round past the first checkpoint, before the end.
    let stop = every + rng.below((total - every) as usize) as u64;
    let dir = tmp(name);
    {
        let mut first = job(c.clone(), &train, &test);
        while first.rounds_done() < stop {
            assert!(first.round(&mut Quiet).expect("round"));
            if first.rounds_done().is_multiple_of(every) {
                first.save_checkpoint(&dir).expect("checkpoint");
            }
        }
        // The job dies here: nothing of it survives but the directory.
    }
    let mut resumed = job(c, &train, &test);
    let r = resumed.resume(&dir).expect("resume");
    assert_eq!(r.round, stop - stop % every, "stopped after round {stop}");
    assert_eq!(resumed.rounds_done(), r.round);
    resumed.run(&mut Quiet).expect("the rest");
    assert!(
        fingerprint(&resumed) == want,
        "stopped after {stop}: not bit-identical"
    );
    let records: Vec<_> = resumed
        .runs()
        .iter()
        .map(|r| r.records().to_vec())
        .collect();
    assert_eq!(records, want_records);
    // One file per rank remains: the older ones were deleted.
    let files = std::fs::read_dir(&dir).expect("dir").count();
    assert_eq!(files, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sgd_job_stopped_at_a_random_round_resumes_bit_identically() {
    stopped_and_resumed(OptimizerSpec::Sgd { lr: 0.1 }, 3, "sgd");
}

#[test]
fn adamw_job_stopped_at_a_random_round_resumes_bit_identically() {
    stopped_and_resumed(adamw(), 2, "adamw");
}

/// Our AdamW takes candle-nn's steps, bit for bit.
#[test]
fn adamw_matches_candle_nn() {
    use candle_nn::Optimizer;
    // Two identical replicas fed the same gradients: ours and candle-nn's AdamW.
    let (vm_a, model_a) = common::replica(9);
    let (vm_b, model_b) = common::replica(9);
    let p = candle_nn::ParamsAdamW {
        lr: 0.01,
        ..Default::default()
    };
    let mut ours = gradcast_candle::optim::AnyOptimizer::new(vm_a.all_vars(), adamw()).unwrap();
    let mut theirs = candle_nn::AdamW::new(vm_b.all_vars(), p).unwrap();
    let all = task();
    for round in 0..4 {
        let g_a = common::grads(&model_a, &all, round, 16, 1, 0);
        let g_b = common::grads(&model_b, &all, round, 16, 1, 0);
        ours.step(&g_a).unwrap();
        theirs.step(&g_b).unwrap();
        assert!(values(&vm_a) == values(&vm_b), "step {round} differs");
    }
}

fn saved(dir: &Path, optimizer: OptimizerSpec) -> Vec<u8> {
    let (train, test) = split();
    let mut j = job(config(optimizer), &train, &test);
    for _ in 0..4 {
        j.round(&mut Quiet).expect("round");
    }
    let s = j.save_checkpoint(dir).expect("checkpoint");
    assert_eq!(s.round, 4);
    std::fs::read(&s.path).expect("read")
}

#[test]
fn damaged_truncated_and_foreign_checkpoints_are_refused() {
    let dir = tmp("refused");
    let bytes = saved(&dir, adamw());
    let (train, test) = split();
    let mut j = job(config(adamw()), &train, &test);
    j.restore_checkpoint_bytes(&bytes)
        .expect("the intact bytes load");
    let mut j = job(config(adamw()), &train, &test);
    let before = fingerprint(&j);
    let mut rng = SplitMix64::new(seed());
    for _ in 0..20 {
        // Truncated anywhere.
        let cut = rng.below(bytes.len());
        let e = j.restore_checkpoint_bytes(&bytes[..cut]).unwrap_err();
        assert!(matches!(e, Error::Checkpoint(_)), "cut at {cut}: {e}");
        // One bit flipped anywhere.
        let mut flipped = bytes.clone();
        let at = rng.below(bytes.len());
        flipped[at] ^= 1 << rng.below(8);
        let e = j.restore_checkpoint_bytes(&flipped).unwrap_err();
        assert!(
            matches!(e, Error::Checkpoint(_)),
            "bit flipped at {at}: {e}"
        );
    }
    assert!(
        fingerprint(&j) == before,
        "a refused checkpoint changed the job"
    );
    // Another configuration: the field is named.
    for (c, field) in [
        (
            TrainConfig {
                seed: 6,
                ..config(adamw())
            },
            "seed",
        ),
        (
            TrainConfig {
                batch: 40,
                ..config(adamw())
            },
            "batch",
        ),
        (config(OptimizerSpec::Sgd { lr: 0.01 }), "optimizer"),
    ] {
        let mut other = job(c, &train, &test);
        match other.restore_checkpoint_bytes(&bytes) {
            Err(Error::CheckpointMismatch { field: f, .. }) => assert_eq!(f, field),
            r => panic!("{field}: expected a mismatch, got {r:?}"),
        }
    }
    // Another threshold policy in the gradcast run: the run's sharing is named.
    let mut other = Job::new(config(adamw()), &train, &test).unwrap();
    other
        .add_run(
            "dense",
            Config::with_exchange(Exchange::DenseF32),
            Cpu::default(),
            InProcess,
        )
        .unwrap();
    other
        .add_run(
            "gradcast",
            Config::with_exchange(Exchange::Gradcast(GradcastConfig::with_threshold(
                Threshold::Fixed(0.01),
            ))),
            Cpu::default(),
            InProcess,
        )
        .unwrap();
    match other.restore_checkpoint_bytes(&bytes) {
        Err(Error::CheckpointMismatch { field, .. }) => assert_eq!(field, "run 1 sharing"),
        r => panic!("expected a mismatch, got {r:?}"),
    }
    // From a file, a damaged checkpoint and no checkpoint are typed errors too.
    let path = dir.join(file_name(0, 4));
    let mut damaged = bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x80;
    std::fs::write(&path, &damaged).unwrap();
    let e = j.resume(&dir).unwrap_err();
    assert!(
        matches!(&e, Error::Checkpoint(m) if m.contains("checksum")),
        "{e}"
    );
    let empty = tmp("empty");
    assert!(matches!(j.resume(&empty), Err(Error::NoCheckpoint { .. })));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

/// A kill during a write leaves, besides the previous checkpoint, a temporary file with part
/// of the next (before the rename), or, on a file system that lost the rename's order, a
/// newer file that is incomplete: resume loads the previous checkpoint in every case.
#[test]
fn a_kill_during_the_write_leaves_the_previous_checkpoint_loadable() {
    let dir = tmp("killed-write");
    let (train, test) = split();
    let c = config(OptimizerSpec::Sgd { lr: 0.1 });
    let mut j = job(c.clone(), &train, &test);
    for _ in 0..2 {
        j.round(&mut Quiet).unwrap();
    }
    j.save_checkpoint(&dir).unwrap();
    let at_two = fingerprint(&j);
    for _ in 0..2 {
        j.round(&mut Quiet).unwrap();
    }
    let next = j.checkpoint_bytes().unwrap();
    let mut rng = SplitMix64::new(seed());
    // Killed before the rename: a part of the next checkpoint in the temporary file.
    let tmp_path = dir.join(format!("{}.tmp", file_name(0, 4)));
    std::fs::write(&tmp_path, &next[..rng.below(next.len())]).unwrap();
    let mut fresh = job(c.clone(), &train, &test);
    assert_eq!(fresh.resume(&dir).unwrap().round, 2);
    assert!(fingerprint(&fresh) == at_two);
    // A newer file that is incomplete: refused, the previous one loads.
    std::fs::write(dir.join(file_name(0, 4)), &next[..rng.below(next.len())]).unwrap();
    let mut fresh = job(c.clone(), &train, &test);
    assert_eq!(fresh.resume(&dir).unwrap().round, 2);
    assert!(fingerprint(&fresh) == at_two);
    // The atomic write itself replaces a file whole.
    let p = dir.join("x");
    write_atomic(&p, b"old").unwrap();
    write_atomic(&p, b"new contents").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new contents");
    let _ = std::fs::remove_dir_all(&dir);
}

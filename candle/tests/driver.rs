//! The training driver: runs side by side, records for an observer, sequential timing,
//! determinism across compute modes and replica modes, explicit state.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use common::task;
use gradcast_candle::data::Dataset;
use gradcast_candle::driver::{
    Compute, EpochRecord, EvalRecord, Job, Observer, Replicas, RoundRecord, TrainConfig,
    rounds_per_epoch,
};
use gradcast_candle::models::ModelSpec;
use gradcast_candle::optim::{AdamWParams, OptimizerSpec};
use gradcast_candle::{Config, Cpu, Error, Exchange, GradcastConfig, InProcess, Threshold};

fn split() -> (Dataset, Dataset) {
    let all = task();
    let train: Vec<usize> = (0..384).collect();
    let test: Vec<usize> = (384..512).collect();
    (all.select(&train), all.select(&test))
}

fn config(compute: Compute, replicas: Replicas) -> TrainConfig {
    TrainConfig {
        model: ModelSpec::Mlp { hidden: vec![32] },
        workers: 3,
        batch: 48,
        epochs: 2,
        seed: 11,
        optimizer: OptimizerSpec::Sgd { lr: 0.2 },
        compute,
        replicas,
        eval_every: 5,
    }
}

fn gradcast() -> Config {
    Config::with_exchange(Exchange::Gradcast(GradcastConfig::with_threshold(
        Threshold::Fixed(0.05),
    )))
}

/// Per worker of a round: forward and backward time, bytes, encode time, worker index.
type WorkerRow = (u64, u64, u64, u64, usize);

#[derive(Default)]
struct Recorder {
    rounds: Vec<(usize, u64, Vec<WorkerRow>, u64)>,
    evals: Vec<EvalRecord>,
    epochs: Vec<Vec<EpochRecord>>,
}

impl Observer for Recorder {
    fn round(&mut self, r: &RoundRecord<'_>) {
        let w = r
            .workers
            .iter()
            .map(|w| {
                (
                    w.forward_ns,
                    w.backward_ns,
                    w.sharing.bytes,
                    w.sharing.encode_ns,
                    w.sharing.worker,
                )
            })
            .collect();
        self.rounds.push((r.run, r.round, w, r.step.decode_ns));
        assert_eq!(r.compute, Compute::Sequential);
        assert!(r.wall_ns > 0);
    }
    fn eval(&mut self, e: &EvalRecord) {
        self.evals.push(e.clone());
    }
    fn epoch(&mut self, records: &[EpochRecord]) {
        self.epochs.push(records.to_vec());
    }
}

fn run(cfg: TrainConfig, obs: &mut dyn Observer) -> Vec<gradcast_candle::driver::RunSummary> {
    let (train, test) = split();
    let mut job = Job::new(cfg, &train, &test).unwrap();
    job.add_run(
        "dense",
        Config::with_exchange(Exchange::DenseF32),
        Cpu::default(),
        InProcess,
    )
    .unwrap();
    job.add_run("gradcast", gradcast(), Cpu::default(), InProcess)
        .unwrap();
    job.run(obs).unwrap();
    assert!(job.is_done());
    job.summaries().unwrap()
}

/// Two runs, sequential compute: every round of every run is recorded with each worker's
/// times and bytes; evaluations every 5 rounds and at each epoch's end; summaries agree.
#[test]
fn records_reach_the_observer() {
    let mut rec = Recorder::default();
    let s = run(config(Compute::Sequential, Replicas::PerWorker), &mut rec);
    let per_epoch = rounds_per_epoch(384, 48);
    assert_eq!(rec.rounds.len() as u64, 2 * 2 * per_epoch);
    for (run, round, workers, decode_ns) in &rec.rounds {
        assert!(*round < 2 * per_epoch);
        assert_eq!(workers.len(), 3);
        for (j, &(fwd, bwd, bytes, enc, id)) in workers.iter().enumerate() {
            assert_eq!(id, j);
            assert!(fwd > 0 && bwd > 0, "run {run} round {round}: times");
            assert!(bytes > 0);
            if *run == 1 {
                assert!(enc > 0, "gradcast encodes");
            } else {
                assert_eq!(bytes, 4 * 676, "dense fp32: 4 N bytes");
            }
        }
        assert!(*decode_ns > 0);
    }
    // Every 5 rounds and at the end of each epoch (16 rounds per run).
    let evals_of = |r: usize| rec.evals.iter().filter(|e| e.run == r).count();
    assert_eq!(evals_of(0), 3 + 2);
    assert_eq!(evals_of(1), 3 + 2);
    assert_eq!(rec.epochs.len(), 2);
    assert!(rec.epochs[1][1].tau.is_some() && rec.epochs[1][0].tau.is_none());
    for r in &s {
        assert!(r.replicas_identical, "{}", r.name);
        assert_eq!(r.epochs.len(), 2);
        // Learning: the loss falls, the accuracy is above chance (25%).
        assert!(r.epochs[1].loss < r.epochs[0].loss, "{}", r.name);
        assert!(r.test_accuracy > 0.3, "{}: {}", r.name, r.test_accuracy);
        assert!(r.forward_seconds > 0.0 && r.backward_seconds > 0.0);
    }
    let bytes: u64 = rec.epochs.iter().map(|e| e[1].bytes).sum();
    assert_eq!(s[1].bytes, bytes);
    assert!(
        s[1].bytes < s[0].bytes / 5,
        "{} vs {}",
        s[1].bytes,
        s[0].bytes
    );
    assert_eq!(s[0].bytes, 4 * 676 * 3 * 2 * per_epoch);
}

/// Parallel and sequential compute, one replica per worker or one per process: the same bits.
#[test]
fn compute_and_replica_modes_train_the_same_bits() {
    let mut sums = Vec::new();
    for (c, r) in [
        (Compute::Sequential, Replicas::PerWorker),
        (Compute::Parallel, Replicas::PerWorker),
        (Compute::Parallel, Replicas::Shared),
    ] {
        let s = run(config(c, r), &mut gradcast_candle::driver::Quiet);
        sums.push((s[0].checksum.clone(), s[1].checksum.clone()));
    }
    assert_eq!(sums[0], sums[1]);
    assert_eq!(sums[0], sums[2]);
}

/// AdamW, a CNN on 8x8 images, and the job's state between rounds.
#[test]
fn adamw_cnn_and_explicit_state() {
    let all = task(); // 16 features: a 4x4 image
    let (train, test) = (
        all.select(&(0..256).collect::<Vec<_>>()),
        all.select(&(256..320).collect::<Vec<_>>()),
    );
    let cfg = TrainConfig {
        model: ModelSpec::Cnn,
        optimizer: OptimizerSpec::AdamW(AdamWParams {
            lr: 1e-2,
            ..AdamWParams::default()
        }),
        epochs: 1,
        batch: 64,
        workers: 2,
        eval_every: 0,
        ..config(Compute::Parallel, Replicas::PerWorker)
    };
    let mut job = Job::new(cfg, &train, &test).unwrap();
    job.add_run("gradcast", gradcast(), Cpu::default(), InProcess)
        .unwrap();
    let order = job.state.order.clone();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..256).collect::<Vec<_>>());
    assert!(job.round(&mut gradcast_candle::driver::Quiet).unwrap());
    assert_eq!((job.state.epoch, job.state.batch), (0, 1));
    assert_eq!(job.runs()[0].state.rounds, 1);
    while job.round(&mut gradcast_candle::driver::Quiet).unwrap() {}
    assert_eq!((job.state.epoch, job.state.batch), (1, 0));
    assert_ne!(job.state.order, order, "reshuffled for the next epoch");
    let s = job.summaries().unwrap();
    assert!(s[0].replicas_identical);
    assert_eq!(job.runs()[0].records().len(), 1);
}

#[test]
fn bad_configurations_are_errors() {
    let (train, test) = split();
    let mut c = config(Compute::Parallel, Replicas::PerWorker);
    c.batch = 2;
    let mut job = Job::new(c, &train, &test).unwrap();
    let e = job
        .add_run("x", gradcast(), Cpu::default(), InProcess)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("batch 2 is smaller than the 3 workers")),
        "{e}"
    );
    let mut c = config(Compute::Parallel, Replicas::PerWorker);
    c.model = ModelSpec::Cnn;
    let mut odd = train.clone();
    odd.dim = 12;
    odd.features.truncate(odd.len() * 12);
    let mut odd_test = test.clone();
    odd_test.dim = 12;
    odd_test.features.truncate(odd_test.len() * 12);
    let e = Job::<Cpu, InProcess>::new(c, &odd, &odd_test).unwrap_err();
    assert!(e.to_string().contains("square images"), "{e}");
    let mut c = config(Compute::Parallel, Replicas::PerWorker);
    c.optimizer = OptimizerSpec::Sgd { lr: f64::NAN };
    assert!(matches!(
        Job::<Cpu, InProcess>::new(c, &train, &test),
        Err(Error::Config(_))
    ));
    let mut job = Job::<Cpu, InProcess>::new(
        config(Compute::Parallel, Replicas::PerWorker),
        &train,
        &test,
    )
    .unwrap();
    assert!(matches!(
        job.round(&mut gradcast_candle::driver::Quiet),
        Err(Error::Config(_))
    ));
}

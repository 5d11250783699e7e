//! The one training driver: an epoch loop over a classification data set that trains one or
//! more runs side by side (say a dense baseline and gradcast) on the same data order,
//! each through a [`Sharing`], in process or across MPI ranks by the same code.
//!
//! The driver owns the data order, the sharding of each global batch over the workers, the
//! loss, the evaluation, the timing and the records; an [`Observer`] receives the records
//! (per round, per evaluation, per epoch), never printed text. `gradcast train` is a thin
//! user of it.
//!
//! # One round of one run
//!
//! ```text
//! global batch b (the job's data order) ─► shard w of W for each local worker (global id w)
//! each local worker: forward (logits, cross-entropy) ─► backward ─► GradStore   [timed apart]
//! Sharing::step: flatten by name ─► exchange ─► aggregated gradient ─► every replica's optimizer
//! ```
//!
//! With [`Compute::Sequential`] the local workers' gradients are computed one at a time on
//! the calling thread, each with the whole machine (candle's own kernels still use every
//! core), so P workers on 2 cores do not inflate each other's forward and backward times:
//! each time is what that worker would take alone on this machine. [`Compute::Parallel`]
//! runs them on rayon's pool (faster wall time; the per-worker times then include the
//! contention).
//!
//! # State
//!
//! Everything the driver needs to continue lies in plain fields: [`JobState`] (epoch,
//! position in the data order, the order itself, the generator's state) and per run
//! [`RunState`] (counters and partial sums), besides each run's [`Sharing`] (which saves
//! itself), its replicas' parameters and its optimizers (AdamW's moments included, see
//! [`crate::optim::AdamW`]). [`Job::save_checkpoint`] and [`Job::resume`] write and load all
//! of it, atomically and checked ([`checkpoint`]).

pub mod checkpoint;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::{Classifier, ModelSpec, build_seeded};
use crate::network::Network;
use crate::optim::{AnyOptimizer, OptimizerSpec};
use crate::rng::SplitMix64;
use crate::sharing::{Config, Init, Sharing, StepStats, WorkerStats};
use candle_core::backprop::GradStore;
use candle_core::{D, Device};
use candle_nn::{Optimizer, VarMap};
use gradcast_core::Backend;
use rayon::prelude::*;
use std::time::Instant;

/// How the local workers' gradients are computed. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Compute {
    /// On rayon's pool, several at once (the default): the fastest wall time.
    #[default]
    Parallel,
    /// One at a time on the calling thread: each worker's forward and backward times are
    /// its own, without the other workers competing for the cores.
    Sequential,
}

/// How many model replicas a process keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Replicas {
    /// One per local worker, each with its own optimizer (the default): what P machines
    /// hold; the driver checks at the end that they are bit-identical.
    #[default]
    PerWorker,
    /// One per process, shared by its local workers: with gradients as the payload every
    /// replica would be identical anyway, so this computes the same training with one
    /// optimizer step per process instead of P.
    Shared,
}

/// The driver's configuration: the same on every rank.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The classifier.
    pub model: ModelSpec,
    /// Local workers per process (the job has `ranks x workers`).
    pub workers: usize,
    /// The global batch, split into one shard per worker of the job.
    pub batch: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the initial parameters and the data order.
    pub seed: u64,
    /// Every replica's optimizer.
    pub optimizer: OptimizerSpec,
    /// Parallel or sequential gradient computation.
    pub compute: Compute,
    /// One replica per worker, or one per process.
    pub replicas: Replicas,
    /// Evaluate the test accuracy every this many rounds (0: only at the end of each epoch,
    /// which always happens).
    pub eval_every: u64,
}

impl TrainConfig {
    /// Checks what does not depend on the data.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.workers == 0 {
            return bad("workers: at least one worker per process is needed".into());
        }
        if self.epochs == 0 {
            return bad("epochs: at least one epoch is needed".into());
        }
        if self.batch == 0 {
            return bad("batch: the batch needs at least one sample".into());
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("lr {lr}: must be finite and greater than 0"));
        }
        Ok(())
    }
}

/// What the driver keeps about the data order; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    /// The current epoch, from 0 (equals the configured epochs when done).
    pub epoch: usize,
    /// The next batch of the current epoch, from 0.
    pub batch: usize,
    /// The current epoch's order of the training samples.
    pub order: Vec<usize>,
    /// The data-order generator's state (it shuffles `order` at each epoch's end).
    pub rng: u64,
}

/// Per-epoch partial sums of one run (this process's workers).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochSums {
    /// Sum of the workers' losses over the epoch's rounds (shards with samples).
    pub loss: f64,
    /// Number of losses summed.
    pub losses: u64,
    /// Bytes of this process's messages.
    pub bytes: u64,
    /// Sum of the last round's smallest thresholds, over local workers (gradcast).
    pub tau: f64,
    /// Sum of the messages' densities.
    pub density: f64,
    /// Messages.
    pub messages: u64,
    /// Messages by encoding: sparse, bitmap, dense.
    pub encodings: [u64; 3],
}

/// What one run counts; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunState {
    /// Rounds done.
    pub rounds: u64,
    /// Bytes of every worker's messages over completed epochs (all ranks).
    pub bytes: u64,
    /// This process's wall time in rounds, nanoseconds (evaluations excluded).
    pub train_ns: u64,
    /// This process's workers' encode time, nanoseconds.
    pub encode_ns: u64,
    /// This process's exchange time, nanoseconds.
    pub exchange_ns: u64,
    /// This process's decode time, nanoseconds.
    pub decode_ns: u64,
    /// This process's forward time (all local workers), nanoseconds.
    pub forward_ns: u64,
    /// This process's backward time (all local workers), nanoseconds.
    pub backward_ns: u64,
    /// The current epoch's partial sums.
    pub epoch: EpochSums,
}

/// One local worker's part of a round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WorkerRound {
    /// Samples in its shard.
    pub samples: usize,
    /// Its mean loss on its shard (`None` for an empty shard).
    pub loss: Option<f32>,
    /// Nanoseconds of its forward pass and loss.
    pub forward_ns: u64,
    /// Nanoseconds of its backward pass.
    pub backward_ns: u64,
    /// Its message: global id, bytes, encode time, entries, thresholds.
    pub sharing: WorkerStats,
}

/// One round of one run, as this process saw it.
#[derive(Clone, Copy, Debug)]
pub struct RoundRecord<'a> {
    /// The run's index (order of [`Job::add_run`]).
    pub run: usize,
    /// The run's name.
    pub name: &'a str,
    /// The epoch, from 1.
    pub epoch: usize,
    /// The run's round index, from 0.
    pub round: u64,
    /// Samples in the global batch.
    pub samples: usize,
    /// How the gradients were computed.
    pub compute: Compute,
    /// This process's workers.
    pub workers: &'a [WorkerRound],
    /// The sharing's step statistics (exchange, decode, apply times; bytes).
    pub step: &'a StepStats,
    /// Nanoseconds of the whole round on this process.
    pub wall_ns: u64,
}

/// A test evaluation of one run.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EvalRecord {
    /// The run's index.
    pub run: usize,
    /// The epoch, from 1.
    pub epoch: usize,
    /// Rounds done when evaluated.
    pub rounds: u64,
    /// Fraction of the test set classified correctly.
    pub test_accuracy: f64,
    /// Mean cross-entropy over the test set.
    pub test_loss: f64,
    /// This process's training wall time so far, seconds.
    pub train_seconds: f64,
    /// Bytes of every worker's messages so far (this process's, plus all ranks' for
    /// completed epochs).
    pub bytes: u64,
}

/// How many messages used each encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EncodingMix {
    /// Sparse messages.
    pub sparse: u64,
    /// Bitmap messages.
    pub bitmap: u64,
    /// Dense (fp32) messages.
    pub dense: u64,
}

/// One epoch of one run, over every rank.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's rounds and workers.
    pub loss: f64,
    /// Test accuracy after the epoch, in [0, 1].
    pub test_accuracy: f64,
    /// Bytes sent during this epoch, every worker.
    pub bytes: u64,
    /// Bytes sent since the start.
    pub cumulative_bytes: u64,
    /// gradcast: the mean over workers of the last round's threshold.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub tau: Option<f64>,
    /// gradcast: the mean fraction of elements sent per message.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub density: Option<f64>,
    /// gradcast: messages by encoding.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub encodings: Option<EncodingMix>,
}

/// The outcome of one run, over every rank.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RunSummary {
    /// The run's name.
    pub name: String,
    /// The exchange (`gradcast`, `dense-fp32`, `dense-fp16`).
    pub exchange: String,
    /// Final test accuracy, in [0, 1].
    pub test_accuracy: f64,
    /// Total bytes on the wire over the run, every worker.
    pub bytes: u64,
    /// Wall time of the run's training rounds (test evaluation excluded), mean over ranks.
    pub seconds: f64,
    /// Final epoch's mean training loss.
    pub final_loss: f64,
    /// Whether every replica of every rank ended bit-identical.
    pub replicas_identical: bool,
    /// The parameter checksum of global worker 0's replica (hex).
    pub checksum: String,
    /// Time in encoding, every worker (seconds, summed).
    pub encode_seconds: f64,
    /// Time in the exchange (transport and validation), summed over rounds, mean over ranks.
    pub exchange_seconds: f64,
    /// Time decoding (dense: summing) into the aggregated gradient, summed over rounds,
    /// mean over ranks.
    pub decode_seconds: f64,
    /// Forward passes, every worker (seconds, summed).
    pub forward_seconds: f64,
    /// Backward passes, every worker (seconds, summed).
    pub backward_seconds: f64,
    /// Per-epoch records.
    pub epochs: Vec<EpochRecord>,
}

/// Receives the driver's records. Every method has an empty default.
pub trait Observer {
    /// A round of a run finished on this process.
    fn round(&mut self, _record: &RoundRecord<'_>) {}
    /// A run was evaluated on the test set.
    fn eval(&mut self, _record: &EvalRecord) {}
    /// Every run finished an epoch: one record per run, in run order.
    fn epoch(&mut self, _records: &[EpochRecord]) {}
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// Shard `i` of `batch` split into `parts` contiguous shards whose sizes differ by at most
/// one (the first `len % parts` shards have one more sample). Shards are empty when the batch
/// has fewer samples than `parts`.
pub fn shard(batch: &[usize], parts: usize, i: usize) -> &[usize] {
    let base = batch.len() / parts;
    let extra = batch.len() % parts;
    let start = i * base + i.min(extra);
    &batch[start..start + base + usize::from(i < extra)]
}

/// Rounds per epoch for `train_len` samples and a global batch of `batch`.
pub fn rounds_per_epoch(train_len: usize, batch: usize) -> u64 {
    train_len.div_ceil(batch.max(1)) as u64
}

/// One run: its replicas, their optimizers, its sharing, its counters and records.
pub struct Run<B: Backend, N: Network> {
    name: String,
    models: Vec<Box<dyn Classifier>>,
    optimizers: Vec<AnyOptimizer>,
    sharing: Sharing<B, N>,
    /// The counters; see the [module docs](self).
    pub state: RunState,
    records: Vec<EpochRecord>,
}

impl<B: Backend, N: Network> std::fmt::Debug for Run<B, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("name", &self.name)
            .field("replicas", &self.models.len())
            .field("sharing", &self.sharing)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<B: Backend, N: Network> Run<B, N> {
    /// The run's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The run's sharing (save / restore it, read its statistics).
    pub fn sharing(&mut self) -> &mut Sharing<B, N> {
        &mut self.sharing
    }

    /// The run's replicas' `VarMap`s (save their parameters).
    pub fn varmaps(&self) -> Vec<VarMap> {
        self.sharing.varmaps().cloned().collect()
    }

    /// The records of the completed epochs.
    pub fn records(&self) -> &[EpochRecord] {
        &self.records
    }

    /// The records of the completed epochs, to restore them with the run's state.
    pub fn records_mut(&mut self) -> &mut Vec<EpochRecord> {
        &mut self.records
    }

    /// Test accuracy and mean cross-entropy of replica 0 on `test`, in chunks of 1000.
    ///
    /// # Errors
    /// candle errors.
    pub fn evaluate(&self, test: &Dataset) -> Result<(f64, f64)> {
        if test.is_empty() {
            return Ok((0.0, 0.0));
        }
        let (mut correct, mut loss) = (0usize, 0f64);
        let all: Vec<usize> = (0..test.len()).collect();
        for chunk in all.chunks(1000) {
            let (x, y) = test.batch(chunk, &Device::Cpu)?;
            let logits = self.models[0].logits(&x)?;
            let l = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
            loss += l as f64 * chunk.len() as f64;
            let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            correct += pred
                .iter()
                .zip(chunk)
                .filter(|&(&p, &i)| p == test.labels[i] as u32)
                .count();
        }
        Ok((correct as f64 / test.len() as f64, loss / test.len() as f64))
    }
}

/// The epoch loop over one or more runs; see the [module docs](self).
pub struct Job<'d, B: Backend, N: Network> {
    config: TrainConfig,
    train: &'d Dataset,
    test: &'d Dataset,
    runs: Vec<Run<B, N>>,
    /// The data order's state; see the [module docs](self).
    pub state: JobState,
}

impl<B: Backend, N: Network> std::fmt::Debug for Job<'_, B, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("config", &self.config)
            .field("runs", &self.runs)
            .field("epoch", &self.state.epoch)
            .field("batch", &self.state.batch)
            .finish_non_exhaustive()
    }
}

struct Computed {
    loss: Option<f32>,
    samples: usize,
    forward_ns: u64,
    backward_ns: u64,
    grads: GradStore,
}

fn compute(model: &dyn Classifier, data: &Dataset, idx: &[usize], round: u64) -> Result<Computed> {
    if idx.is_empty() {
        return Ok(Computed {
            loss: None,
            samples: 0,
            forward_ns: 0,
            backward_ns: 0,
            grads: GradStore::default(),
        });
    }
    let (x, y) = data.batch(idx, &Device::Cpu)?;
    let t0 = Instant::now();
    let logits = model.logits(&x)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
    let value = loss.to_scalar::<f32>()?;
    let t1 = Instant::now();
    if !value.is_finite() {
        return Err(Error::Train(format!(
            "the loss diverged (non-finite) in round {round}; lower the learning rate"
        )));
    }
    let grads = loss.backward()?;
    let t2 = Instant::now();
    Ok(Computed {
        loss: Some(value),
        samples: idx.len(),
        forward_ns: (t1 - t0).as_nanos() as u64,
        backward_ns: (t2 - t1).as_nanos() as u64,
        grads,
    })
}

impl<'d, B: Backend, N: Network> Job<'d, B, N> {
    /// A job over `train` (shuffled every epoch) evaluated on `test`, with no run yet.
    ///
    /// # Errors
    /// [`TrainConfig::validate`]'s; [`Error::Train`] for empty or inconsistent data sets
    /// and a model that does not fit them ([`Error::Config`]).
    pub fn new(config: TrainConfig, train: &'d Dataset, test: &'d Dataset) -> Result<Self> {
        config.validate()?;
        if train.is_empty() || test.is_empty() {
            return Err(Error::Train("the training or test set is empty".into()));
        }
        train.validate()?;
        test.validate()?;
        if train.dim != test.dim || train.classes != test.classes {
            return Err(Error::Train(format!(
                "the training set has {} features and {} classes, the test set {} and {}",
                train.dim, train.classes, test.dim, test.classes
            )));
        }
        config.model.check(train.dim, train.classes)?;
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut rng = SplitMix64::new(config.seed.wrapping_add(0xDA7A));
        rng.shuffle(&mut order);
        Ok(Job {
            config,
            train,
            test,
            runs: Vec::new(),
            state: JobState {
                epoch: 0,
                batch: 0,
                order,
                rng: rng.state(),
            },
        })
    }

    /// Adds a run named `name` whose gradients travel by `sharing` over `network`:
    /// builds its replicas from the configuration's seed (the same parameters on every rank
    /// and in every run) and their optimizers. Collective across the network's ranks.
    ///
    /// # Errors
    /// As [`Sharing::with_replicas`]; [`Error::Config`] when the batch is smaller than the
    /// job's workers.
    pub fn add_run(&mut self, name: &str, sharing: Config, backend: B, network: N) -> Result<()> {
        let c = &self.config;
        let total = c.workers * network.ranks();
        if c.batch < total {
            return Err(Error::Config(format!(
                "batch {} is smaller than the {total} workers ({} ranks x {}): every worker \
                 needs a sample",
                c.batch,
                network.ranks(),
                c.workers
            )));
        }
        let replicas = match c.replicas {
            Replicas::PerWorker => c.workers,
            Replicas::Shared => 1,
        };
        let mut models = Vec::with_capacity(replicas);
        let mut varmaps = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let (vm, model) = build_seeded(&c.model, self.train.dim, self.train.classes, c.seed)?;
            models.push(model);
            varmaps.push(vm);
        }
        let optimizers = varmaps
            .iter()
            .map(|vm| AnyOptimizer::new(vm.all_vars(), c.optimizer))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let sharing = Config {
            workers: c.workers,
            init: Init::Verify,
            ..sharing
        };
        let sharing = match c.replicas {
            Replicas::PerWorker => Sharing::with_replicas(&varmaps, sharing, backend, network)?,
            Replicas::Shared => Sharing::new(&varmaps[0], sharing, backend, network)?,
        };
        self.runs.push(Run {
            name: name.to_string(),
            models,
            optimizers,
            sharing,
            state: RunState::default(),
            records: Vec::new(),
        });
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The runs, in the order added.
    pub fn runs(&self) -> &[Run<B, N>] {
        &self.runs
    }

    /// The runs, mutably (save or restore their sharing).
    pub fn runs_mut(&mut self) -> &mut [Run<B, N>] {
        &mut self.runs
    }

    /// Whether every epoch is done.
    pub fn is_done(&self) -> bool {
        self.state.epoch >= self.config.epochs
    }

    /// Runs every remaining round of every run.
    ///
    /// # Errors
    /// As [`Job::round`].
    pub fn run(&mut self, obs: &mut dyn Observer) -> Result<()> {
        while self.round(obs)? {}
        Ok(())
    }

    /// One batch: a round of every run on the same global batch, in run order; at the end of
    /// an epoch, every run's evaluation and epoch record. Returns `false` once every epoch is
    /// done (and then does nothing).
    ///
    /// # Errors
    /// [`Error::Config`] without a run; the runs' errors (a diverged loss, the exchange);
    /// collective network errors.
    pub fn round(&mut self, obs: &mut dyn Observer) -> Result<bool> {
        if self.is_done() {
            return Ok(false);
        }
        if self.runs.is_empty() {
            return Err(Error::Config("the job has no run (Job::add_run)".into()));
        }
        let b = self.config.batch;
        let start = self.state.batch * b;
        let end = (start + b).min(self.state.order.len());
        let batch: Vec<usize> = self.state.order[start..end].to_vec();
        for r in 0..self.runs.len() {
            self.run_round(r, &batch, obs)?;
        }
        self.state.batch += 1;
        if end == self.state.order.len() {
            self.end_epoch(obs)?;
        }
        Ok(!self.is_done())
    }

    fn run_round(&mut self, r: usize, batch: &[usize], obs: &mut dyn Observer) -> Result<()> {
        let epoch = self.state.epoch + 1;
        let c = &self.config;
        let (train, test) = (self.train, self.test);
        let run = &mut self.runs[r];
        let round = run.state.rounds;
        let total = run.sharing.total_workers();
        let first = run.sharing.first_worker();
        let shared = run.models.len() == 1;
        let t = Instant::now();
        let work = |j: usize| {
            let model = &run.models[if shared { 0 } else { j }];
            compute(model.as_ref(), train, shard(batch, total, first + j), round)
        };
        let mut computed: Vec<Computed> = match c.compute {
            Compute::Sequential => (0..c.workers).map(work).collect::<Result<_>>()?,
            Compute::Parallel => (0..c.workers)
                .into_par_iter()
                .map(work)
                .collect::<Result<_>>()?,
        };
        let grads: Vec<GradStore> = computed
            .iter_mut()
            .map(|c| std::mem::take(&mut c.grads))
            .collect();
        let step = run.sharing.step(&mut run.optimizers, &grads)?.clone();
        drop(grads);
        let wall_ns = t.elapsed().as_nanos() as u64;
        let workers: Vec<WorkerRound> = computed
            .iter()
            .zip(&step.workers)
            .map(|(c, s)| WorkerRound {
                samples: c.samples,
                loss: c.loss,
                forward_ns: c.forward_ns,
                backward_ns: c.backward_ns,
                sharing: *s,
            })
            .collect();
        let st = &mut run.state;
        st.rounds += 1;
        st.train_ns += wall_ns;
        st.exchange_ns += step.exchange_ns;
        st.decode_ns += step.decode_ns;
        for w in &workers {
            st.encode_ns += w.sharing.encode_ns;
            st.forward_ns += w.forward_ns;
            st.backward_ns += w.backward_ns;
            let e = &mut st.epoch;
            if let Some(l) = w.loss {
                e.loss += l as f64;
                e.losses += 1;
            }
            e.bytes += w.sharing.bytes;
            e.messages += 1;
            e.density += w.sharing.density;
            for (a, b) in e.encodings.iter_mut().zip(w.sharing.encodings) {
                *a += b as u64;
            }
        }
        obs.round(&RoundRecord {
            run: r,
            name: &run.name,
            epoch,
            round,
            samples: batch.len(),
            compute: c.compute,
            workers: &workers,
            step: &step,
            wall_ns,
        });
        if c.eval_every > 0 && st.rounds.is_multiple_of(c.eval_every) {
            let (acc, loss) = run.evaluate(test)?;
            obs.eval(&EvalRecord {
                run: r,
                epoch,
                rounds: run.state.rounds,
                test_accuracy: acc,
                test_loss: loss,
                train_seconds: run.state.train_ns as f64 / 1e9,
                bytes: run.state.bytes + run.state.epoch.bytes,
            });
        }
        Ok(())
    }

    fn end_epoch(&mut self, obs: &mut dyn Observer) -> Result<()> {
        let epoch = self.state.epoch + 1;
        let mut records = Vec::with_capacity(self.runs.len());
        for (r, run) in self.runs.iter_mut().enumerate() {
            // The last round's thresholds, one per local worker.
            let (mut tau, mut taus) = (0f64, 0f64);
            for w in &run.sharing.stats().workers {
                if w.tau_min.is_finite() {
                    tau += w.tau_min as f64;
                    taus += 1.0;
                }
            }
            let e = run.state.epoch;
            let mut sums = [
                e.loss,
                e.losses as f64,
                e.bytes as f64,
                tau,
                taus,
                e.density,
                e.messages as f64,
                e.encodings[0] as f64,
                e.encodings[1] as f64,
                e.encodings[2] as f64,
            ];
            run.sharing.network().sum_f64(&mut sums)?;
            let (acc, loss) = run.evaluate(self.test)?;
            let bytes = sums[2] as u64;
            run.state.bytes += bytes;
            run.state.epoch = EpochSums::default();
            let gradcast = sums[4] > 0.0;
            let record = EpochRecord {
                epoch,
                loss: sums[0] / sums[1].max(1.0),
                test_accuracy: acc,
                bytes,
                cumulative_bytes: run.state.bytes,
                tau: gradcast.then(|| sums[3] / sums[4]),
                density: gradcast.then(|| sums[5] / sums[6].max(1.0)),
                encodings: gradcast.then_some(EncodingMix {
                    sparse: sums[7] as u64,
                    bitmap: sums[8] as u64,
                    dense: sums[9] as u64,
                }),
            };
            obs.eval(&EvalRecord {
                run: r,
                epoch,
                rounds: run.state.rounds,
                test_accuracy: acc,
                test_loss: loss,
                train_seconds: run.state.train_ns as f64 / 1e9,
                bytes: run.state.bytes,
            });
            run.records.push(record.clone());
            records.push(record);
        }
        obs.epoch(&records);
        let mut rng = SplitMix64::new(self.state.rng);
        rng.shuffle(&mut self.state.order);
        self.state.rng = rng.state();
        self.state.epoch += 1;
        self.state.batch = 0;
        Ok(())
    }

    /// Every run's summary over every rank (collective: checksums and times are gathered).
    ///
    /// # Errors
    /// Network and candle errors.
    pub fn summaries(&mut self) -> Result<Vec<RunSummary>> {
        let mut out = Vec::with_capacity(self.runs.len());
        for run in &mut self.runs {
            let sums = run.sharing.all_checksums()?;
            let s = &run.state;
            let mut t = [
                s.train_ns as f64 / 1e9,
                s.encode_ns as f64 / 1e9,
                s.exchange_ns as f64 / 1e9,
                s.decode_ns as f64 / 1e9,
                s.forward_ns as f64 / 1e9,
                s.backward_ns as f64 / 1e9,
            ];
            let ranks = run.sharing.network().ranks() as f64;
            run.sharing.network().sum_f64(&mut t)?;
            let last = run.records.last();
            out.push(RunSummary {
                name: run.name.clone(),
                exchange: run.sharing.config().exchange.name().to_string(),
                test_accuracy: last.map_or(0.0, |r| r.test_accuracy),
                bytes: run.state.bytes,
                seconds: t[0] / ranks,
                final_loss: last.map_or(0.0, |r| r.loss),
                replicas_identical: sums.iter().all(|&c| c == sums[0]),
                checksum: format!("{:016x}", sums.first().copied().unwrap_or(0)),
                encode_seconds: t[1],
                exchange_seconds: t[2] / ranks,
                decode_seconds: t[3] / ranks,
                forward_seconds: t[4],
                backward_seconds: t[5],
                epochs: run.records.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch() {
        let b: Vec<usize> = (0..10).collect();
        let s: Vec<&[usize]> = (0..4).map(|i| shard(&b, 4, i)).collect();
        assert_eq!(
            s.iter().map(|x| x.len()).collect::<Vec<_>>(),
            vec![3, 3, 2, 2]
        );
        assert_eq!(s.concat(), b);
        let small = [7usize, 8];
        let s: Vec<&[usize]> = (0..4).map(|i| shard(&small, 4, i)).collect();
        assert_eq!(s, vec![&[7][..], &[8][..], &[][..], &[][..]]);
    }

    #[test]
    fn rounds_per_epoch_rounds_up() {
        assert_eq!(rounds_per_epoch(1438, 64), 23);
        assert_eq!(rounds_per_epoch(64, 64), 1);
        assert_eq!(rounds_per_epoch(0, 64), 0);
    }
}

//! The main job: data-parallel training of an MLP with P workers, once with dense fp32
//! updates and once with gradcast, same seed and same data order, side by side.
//!
//! Per round, each worker takes its shard of the batch, computes the gradient of its mean loss
//! with candle's autodiff on its own replica, in its own thread, and turns it into an update
//! with plain SGD: `update = lr * grad`. The dense run shares the fp32 updates
//! ([`crate::sharing::DenseSharing`]); gradcast runs the core's round protocol
//! (`gradcast_core::round::workers::run` over an [`Accumulator`] with one policy-driven
//! [`Encoder`] per worker). Every replica steps `params -= scale * sum(contributions)`.

use crate::data::Split;
use crate::error::CliError;
use crate::model::Mlp;
use crate::rng::SplitMix64;
use crate::sharing::{
    Aggregate, DenseSharing, PhaseTimes, Sharing, encoder_for, replicas_identical,
};
use crate::threshold::ThresholdSpec;
use core::ops::ControlFlow;
use gradcast_core::Backend;
use gradcast_core::barrier::Park;
use gradcast_core::encoder::Encoder;
use gradcast_core::round::workers::{self, Contribution, Work};
use gradcast_core::round::{Accumulator, Local, RoundConfig, Step};
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Everything that defines a training run (both runs share it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainConfig {
    /// Workers P.
    pub workers: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Global batch size, split into P shards.
    pub batch: usize,
    /// Learning rate of the workers' SGD step.
    pub lr: f32,
    /// Seed of the initial weights, the split and the data order.
    pub seed: u64,
    /// Hidden units of the MLP.
    pub hidden: usize,
    /// gradcast's threshold policy.
    #[serde(serialize_with = "display")]
    pub threshold: ThresholdSpec,
    /// How contributions are combined.
    #[serde(serialize_with = "aggregate_name")]
    pub aggregate: Aggregate,
}

fn display<T: core::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn aggregate_name<S: serde::Serializer>(v: &Aggregate, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

impl TrainConfig {
    /// Checks the values a user can get wrong.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the option.
    pub fn validate(&self) -> Result<(), CliError> {
        let bad = |m: String| Err(CliError::Usage(m));
        if self.workers == 0 || self.workers > 1024 {
            return bad(format!("--workers {}: must be 1 to 1024", self.workers));
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch < self.workers {
            return bad(format!(
                "--batch {} is smaller than --workers {}: every worker needs a sample",
                self.batch, self.workers
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "--lr {}: must be finite and greater than 0",
                self.lr
            ));
        }
        if self.hidden == 0 {
            return bad("--hidden must be at least 1".into());
        }
        // Whatever the data, N >= 2 * hidden + 1 (one input, one class).
        if self.hidden > MAX_PARAMS / 2 {
            return bad(format!(
                "--hidden {}: the model would have more than {MAX_PARAMS} parameters",
                self.hidden
            ));
        }
        Ok(())
    }

    /// The MLP `input -> hidden -> classes` for data of `input` features and `classes`
    /// classes, its parameter count N checked: computed without overflow, at most
    /// [`MAX_PARAMS`] (the wire format's limit), and `N x workers` at most
    /// [`MAX_PARAMS_TIMES_WORKERS`] (memory).
    ///
    /// # Errors
    /// [`CliError::Usage`] naming `--hidden`.
    pub fn model(&self, input: usize, classes: usize) -> Result<Mlp, CliError> {
        let model = Mlp {
            input,
            hidden: self.hidden,
            classes,
        };
        let shape = format!("MLP {input}-{}-{classes}", self.hidden);
        let n = model.checked_num_params().ok_or_else(|| {
            CliError::Usage(format!(
                "--hidden {}: the parameter count of the {shape} overflows",
                self.hidden
            ))
        })?;
        if n > MAX_PARAMS {
            return Err(CliError::Usage(format!(
                "--hidden {}: the {shape} has {n} parameters, more than the {MAX_PARAMS} a \
                 gradcast message can describe; lower --hidden",
                self.hidden
            )));
        }
        if (n as u64).saturating_mul(self.workers as u64) > MAX_PARAMS_TIMES_WORKERS {
            return Err(CliError::Usage(format!(
                "--hidden {}: the {shape} has {n} parameters; with {} workers that is more \
                 than {MAX_PARAMS_TIMES_WORKERS} parameters x workers (every worker holds \
                 several f32 copies: about {} GiB in all); lower --hidden or --workers",
                self.hidden,
                self.workers,
                (n as u64)
                    .saturating_mul(self.workers as u64)
                    .saturating_mul(4 * COPIES)
                    >> 30
            )));
        }
        Ok(model)
    }
}

/// The most parameters N a model may have: the wire format's element limit.
pub const MAX_PARAMS: usize = gradcast_core::wire::MAX_ELEMENTS as usize;

/// The most `N x workers`: the job holds about ten f32 copies of the parameters per
/// worker (replicas of both runs, residual, update, gradient, autodiff tensors), so `2^30`
/// keeps it near 40 GiB.
pub const MAX_PARAMS_TIMES_WORKERS: u64 = 1 << 30;

/// About how many f32 vectors of N the job holds per worker (for the error message).
const COPIES: u64 = 10;

/// One epoch of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's rounds and workers.
    pub loss: f64,
    /// Test accuracy after the epoch, in [0, 1].
    pub test_accuracy: f64,
    /// Bytes sent during this epoch.
    pub bytes: u64,
    /// Bytes sent since the start.
    pub cumulative_bytes: u64,
    /// gradcast: the threshold at the end of the epoch (mean over workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    /// gradcast: mean fraction of elements sent per message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    /// gradcast: messages by encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encodings: Option<EncodingMix>,
}

/// How many messages used each encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EncodingMix {
    /// Sparse messages.
    pub sparse: u64,
    /// Bitmap messages.
    pub bitmap: u64,
    /// Dense (fp32) messages.
    pub dense: u64,
}

/// The outcome of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// Final test accuracy, in [0, 1].
    pub test_accuracy: f64,
    /// Total bytes on the wire over the run.
    pub bytes: u64,
    /// Wall time of the run's training rounds (test evaluation excluded).
    pub seconds: f64,
    /// Final epoch's mean training loss.
    pub final_loss: f64,
    /// Whether all replicas ended bit-identical.
    pub replicas_identical: bool,
    /// gradcast: time in `residual += update` and encode, summed over workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_seconds: Option<f64>,
    /// gradcast: time publishing and validating messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_seconds: Option<f64>,
    /// gradcast: time decoding into every replica and stepping, summed over replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_seconds: Option<f64>,
    /// Per-epoch records.
    pub epochs: Vec<EpochRecord>,
}

/// Data set facts for the summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataInfo {
    /// Source name.
    pub name: String,
    /// Training samples.
    pub train: usize,
    /// Held-out test samples.
    pub test: usize,
    /// Features per sample.
    pub features: usize,
    /// Classes.
    pub classes: usize,
}

/// The whole comparison: what `--json` prints and `summary.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The configuration.
    pub config: TrainConfig,
    /// The backend gradcast ran on.
    pub backend: String,
    /// The data set.
    pub data: DataInfo,
    /// Model parameters N (the length of the shared vector).
    pub params: usize,
    /// Rounds per run.
    pub rounds: u64,
    /// The dense fp32 baseline.
    pub dense: RunSummary,
    /// gradcast.
    pub gradcast: RunSummary,
    /// `dense.bytes / gradcast.bytes`.
    pub compression_ratio: f64,
    /// `gradcast.test_accuracy - dense.test_accuracy`, in percentage points.
    pub accuracy_gap_pp: f64,
}

/// Receives progress while training (the human output and the progress bar).
pub trait Observer {
    /// A round of either run finished.
    fn round_done(&mut self) {}
    /// Both runs finished epoch `epoch`.
    fn epoch_done(&mut self, _dense: &EpochRecord, _gradcast: &EpochRecord) {}
}

/// An observer that does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// Shard `i` of `batch` split into `parts` contiguous shards whose sizes differ by at most
/// one (the first `len % parts` shards have one more sample). Shards are empty when the batch
/// has fewer samples than `parts`.
pub(crate) fn shard(batch: &[usize], parts: usize, i: usize) -> &[usize] {
    let base = batch.len() / parts;
    let extra = batch.len() % parts;
    let start = i * base + i.min(extra);
    &batch[start..start + base + usize::from(i < extra)]
}

/// One worker's `(loss, lr * gradient)` on its shard `idx` of the training set, at `params`.
///
/// # Errors
/// Model errors; [`CliError::Train`] when the loss is not finite (naming `round`).
fn worker_update(
    model: &Mlp,
    cfg: &TrainConfig,
    data: &Split,
    idx: &[usize],
    params: &[f32],
    round: u64,
) -> Result<(f32, Vec<f32>), CliError> {
    let shard = data.train.select(idx);
    let (loss, mut g) = model.loss_and_grad(params, &shard.features, &shard.labels)?;
    if !loss.is_finite() {
        return Err(CliError::Train(format!(
            "the loss diverged (non-finite) in round {round}; lower --lr"
        )));
    }
    for v in &mut g {
        *v *= cfg.lr;
    }
    Ok((loss, g))
}

/// The workers' `(loss, lr * gradient)` for one round, worker `j` on `shards[j]` at
/// `params[j]`, one thread each (the dense baseline here and both runs of `--transport mpi`).
///
/// # Errors
/// The first worker's error in worker order; [`CliError::Train`] when a thread panicked.
pub(crate) fn gradients(
    model: &Mlp,
    cfg: &TrainConfig,
    data: &Split,
    shards: &[&[usize]],
    params: &[Vec<f32>],
    round: u64,
) -> Result<Vec<(f32, Vec<f32>)>, CliError> {
    let results: Vec<Result<(f32, Vec<f32>), CliError>> = std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .iter()
            .zip(params)
            .map(|(idx, params)| {
                s.spawn(move || worker_update(model, cfg, data, idx, params, round))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CliError::Train("a worker thread panicked".into())))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// The dense baseline's state across epochs.
struct Run<S: Sharing> {
    sharing: S,
    round: u64,
    bytes: u64,
    elapsed: Duration,
    records: Vec<EpochRecord>,
}

/// The per-round statistics accumulated over an epoch.
#[derive(Default)]
struct EpochAcc {
    loss: f64,
    loss_n: usize,
    bytes: u64,
}

impl<S: Sharing> Run<S> {
    fn new(sharing: S) -> Self {
        Run {
            sharing,
            round: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            records: Vec::new(),
        }
    }

    /// Trains one epoch over `order` and evaluates.
    fn epoch(
        &mut self,
        model: &Mlp,
        cfg: &TrainConfig,
        data: &Split,
        order: &[usize],
        obs: &mut dyn Observer,
    ) -> Result<EpochRecord, CliError> {
        let mut acc = EpochAcc::default();
        let start = Instant::now();
        for batch in order.chunks(cfg.batch) {
            let parts: Vec<&[usize]> = (0..cfg.workers)
                .map(|w| shard(batch, cfg.workers, w))
                .collect();
            let replicas = (0..cfg.workers)
                .map(|w| self.sharing.params(w))
                .collect::<Result<Vec<_>, _>>()?;
            // Every worker computes its gradient on its own replica, in its own thread.
            let results = gradients(model, cfg, data, &parts, &replicas, self.round)?;
            let mut updates = Vec::with_capacity(cfg.workers);
            for ((loss, u), idx) in results.into_iter().zip(&parts) {
                // An empty shard (a last batch smaller than P) has no loss to average.
                if !idx.is_empty() {
                    acc.loss += loss as f64;
                    acc.loss_n += 1;
                }
                updates.push(u);
            }
            let stats = self.sharing.share(self.round, &updates)?;
            acc.bytes += stats.bytes;
            self.round += 1;
            obs.round_done();
        }
        self.elapsed += start.elapsed();
        self.bytes += acc.bytes;
        let params = self.sharing.params(0)?;
        let test_accuracy = model.accuracy(&params, &data.test)?;
        let rec = EpochRecord {
            epoch: self.records.len() + 1,
            loss: acc.loss / acc.loss_n.max(1) as f64,
            test_accuracy,
            bytes: acc.bytes,
            cumulative_bytes: self.bytes,
            tau: None,
            density: None,
            encodings: None,
        };
        self.records.push(rec.clone());
        Ok(rec)
    }

    fn summary(&self) -> Result<RunSummary, CliError> {
        let last = self.records.last();
        Ok(RunSummary {
            test_accuracy: last.map_or(0.0, |r| r.test_accuracy),
            bytes: self.bytes,
            seconds: self.elapsed.as_secs_f64(),
            final_loss: last.map_or(0.0, |r| r.loss),
            replicas_identical: self.sharing.replicas_identical()?,
            encode_seconds: None,
            exchange_seconds: None,
            decode_seconds: None,
            epochs: self.records.clone(),
        })
    }
}

/// The gradcast run: the core's round protocol over P worker threads.
struct ProtocolRun<B: Backend> {
    acc: Accumulator<B, Encoder, Local, Park>,
    replicas: Vec<B::Buffer>,
    n: usize,
    round: u64,
    bytes: u64,
    elapsed: Duration,
    times: PhaseTimes,
    records: Vec<EpochRecord>,
    /// Encoder totals (entries, messages, sparse, bitmap, dense) at the last epoch's end.
    seen: [u64; 5],
}

fn be<E: core::fmt::Display>(what: &'static str) -> impl Fn(E) -> CliError {
    move |e| CliError::Train(format!("{what}: {e}"))
}

impl<B> ProtocolRun<B>
where
    B: Backend + Sync,
    B::Buffer: Send,
    B::Error: Send,
{
    fn new(
        backend: B,
        init: &[f32],
        workers: usize,
        aggregate: Aggregate,
        spec: ThresholdSpec,
    ) -> Result<Self, CliError> {
        let n = init.len();
        let encoders = (0..workers)
            .map(|_| encoder_for(spec, n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = RoundConfig::new(workers, n);
        config.step = match aggregate {
            Aggregate::Mean => Step::Mean,
            Aggregate::Sum => Step::Sum,
        };
        let acc = Accumulator::new(backend, config, encoders, Local)
            .map_err(be("cannot set up the round protocol"))?;
        let mut replicas = Vec::with_capacity(workers);
        for _ in 0..workers {
            let b = acc.backend();
            let mut r = b.alloc(n).map_err(be("allocate a replica"))?;
            b.upload(init, &mut r).map_err(be("upload parameters"))?;
            replicas.push(r);
        }
        Ok(ProtocolRun {
            acc,
            replicas,
            n,
            round: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            times: PhaseTimes::default(),
            records: Vec::new(),
            seen: [0; 5],
        })
    }

    fn params(&self, worker: usize) -> Result<Vec<f32>, CliError> {
        let mut out = vec![0.0; self.n];
        self.acc
            .backend()
            .download(&self.replicas[worker], &mut out)
            .map_err(be("download parameters"))?;
        Ok(out)
    }

    fn replicas_identical(&self) -> Result<bool, CliError> {
        replicas_identical(self.replicas.len(), |w| self.params(w))
    }

    fn epoch(
        &mut self,
        model: &Mlp,
        cfg: &TrainConfig,
        data: &Split,
        order: &[usize],
        obs: &mut dyn Observer,
    ) -> Result<EpochRecord, CliError> {
        let n = self.n;
        let batches: Vec<&[usize]> = order.chunks(cfg.batch).collect();
        // Per round and worker: the shard's loss, `None` for an empty shard (a last batch
        // smaller than P), which has no loss to average.
        let losses = Mutex::new(vec![None::<f32>; batches.len() * cfg.workers]);
        let mut bytes = 0u64;
        let start = Instant::now();
        let work = |w: &mut Work<'_, B>| -> Result<Contribution, CliError> {
            let batch = batches
                .get(w.step as usize)
                .ok_or_else(|| CliError::Train("more rounds than batches".into()))?;
            let idx = shard(batch, cfg.workers, w.party);
            let mut params = vec![0.0f32; n];
            w.backend
                .download(w.params, &mut params)
                .map_err(be("download parameters"))?;
            let (loss, g) = worker_update(model, cfg, data, idx, &params, w.round)?;
            w.backend
                .upload(&g, w.update)
                .map_err(be("upload update"))?;
            if let Ok(mut l) = losses.lock() {
                l[w.step as usize * cfg.workers + w.party] = (!idx.is_empty()).then_some(loss);
            }
            Ok(Contribution::Update)
        };
        let summary = workers::run(
            &mut self.acc,
            &mut self.replicas,
            batches.len() as u64,
            work,
            |report| {
                bytes += report.bytes_published;
                obs.round_done();
                ControlFlow::Continue(())
            },
        )
        .map_err(|e| CliError::Train(e.to_string()))?;
        self.elapsed += start.elapsed();
        self.round += summary.rounds;
        self.bytes += bytes;
        self.times.encode += Duration::from_nanos(summary.encode_ns);
        self.times.exchange += Duration::from_nanos(summary.exchange_ns);
        self.times.decode += Duration::from_nanos(summary.decode_ns);

        // The encoders' statistics: what this epoch's messages were.
        let mut now = [0u64; 5];
        let mut tau = 0.0f64;
        let p = self.replicas.len();
        for i in 0..p {
            let e = self.acc.encoder(i);
            let c = e.cumulative();
            now[0] += c.entries;
            now[1] += c.sparse_messages + c.bitmap_messages + c.dense_messages;
            now[2] += c.sparse_messages;
            now[3] += c.bitmap_messages;
            now[4] += c.dense_messages;
            tau += e.last_round().map_or(0.0, |r| r.tau as f64);
        }
        let d: Vec<u64> = now.iter().zip(&self.seen).map(|(a, b)| a - b).collect();
        self.seen = now;
        let losses = losses
            .into_inner()
            .map_err(|_| CliError::Train("a worker panicked".into()))?;
        let (loss_sum, loss_n) = losses
            .iter()
            .flatten()
            .fold((0.0f64, 0usize), |(s, k), &l| (s + l as f64, k + 1));
        let params = self.params(0)?;
        let test_accuracy = model.accuracy(&params, &data.test)?;
        let rec = EpochRecord {
            epoch: self.records.len() + 1,
            loss: loss_sum / loss_n.max(1) as f64,
            test_accuracy,
            bytes,
            cumulative_bytes: self.bytes,
            tau: Some(tau / p as f64),
            density: Some(d[0] as f64 / (d[1].max(1) as f64 * n as f64)),
            encodings: Some(EncodingMix {
                sparse: d[2],
                bitmap: d[3],
                dense: d[4],
            }),
        };
        self.records.push(rec.clone());
        Ok(rec)
    }

    fn summary(&self) -> Result<RunSummary, CliError> {
        let last = self.records.last();
        Ok(RunSummary {
            test_accuracy: last.map_or(0.0, |r| r.test_accuracy),
            bytes: self.bytes,
            seconds: self.elapsed.as_secs_f64(),
            final_loss: last.map_or(0.0, |r| r.loss),
            replicas_identical: self.replicas_identical()?,
            encode_seconds: Some(self.times.encode.as_secs_f64()),
            exchange_seconds: Some(self.times.exchange.as_secs_f64()),
            decode_seconds: Some(self.times.decode.as_secs_f64()),
            epochs: self.records.clone(),
        })
    }
}

/// Rounds per epoch for `train_len` samples.
pub fn rounds_per_epoch(train_len: usize, batch: usize) -> u64 {
    train_len.div_ceil(batch.max(1)) as u64
}

/// Trains the dense baseline and gradcast (on `backend`) side by side, epoch by epoch.
///
/// # Errors
/// [`CliError::Usage`] for a bad configuration; training, backend and codec errors.
pub fn train<B>(
    backend: B,
    cfg: &TrainConfig,
    data: &Split,
    obs: &mut dyn Observer,
) -> Result<Summary, CliError>
where
    B: Backend + Sync,
    B::Buffer: Send,
    B::Error: Send,
{
    cfg.validate()?;
    if data.train.is_empty() || data.test.is_empty() {
        return Err(CliError::Train("the training or test set is empty".into()));
    }
    let model = cfg.model(data.train.dim, data.train.classes)?;
    let init = model.init(cfg.seed);
    let mut dense = Run::new(DenseSharing::new(&init, cfg.workers, cfg.aggregate));
    let backend_name = backend.name().to_string();
    let mut gc = ProtocolRun::new(backend, &init, cfg.workers, cfg.aggregate, cfg.threshold)?;
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    let mut rng = SplitMix64::new(cfg.seed.wrapping_add(0xDA7A));
    for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let d = dense.epoch(&model, cfg, data, &order, obs)?;
        let g = gc.epoch(&model, cfg, data, &order, obs)?;
        obs.epoch_done(&d, &g);
    }
    let dense_summary = dense.summary()?;
    let gc_summary = gc.summary()?;
    for (name, s) in [("dense", &dense_summary), ("gradcast", &gc_summary)] {
        if !s.replicas_identical {
            return Err(CliError::Train(format!(
                "the {name} replicas diverged: they must stay bit-identical"
            )));
        }
    }
    Ok(Summary {
        config: cfg.clone(),
        backend: backend_name,
        data: DataInfo {
            name: data.name.clone(),
            train: data.train.len(),
            test: data.test.len(),
            features: data.train.dim,
            classes: data.train.classes,
        },
        params: model.num_params(),
        rounds: dense.round,
        compression_ratio: dense_summary.bytes as f64 / gc_summary.bytes.max(1) as f64,
        accuracy_gap_pp: 100.0 * (gc_summary.test_accuracy - dense_summary.test_accuracy),
        dense: dense_summary,
        gradcast: gc_summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(hidden: usize, workers: usize) -> TrainConfig {
        TrainConfig {
            workers,
            epochs: 1,
            batch: 64,
            lr: 0.05,
            seed: 1,
            hidden,
            threshold: ThresholdSpec::Fixed(0.01),
            aggregate: Aggregate::Mean,
        }
    }

    #[test]
    fn the_parameter_count_is_checked() {
        assert_eq!(cfg(128, 4).model(64, 10).unwrap().num_params(), 9610);
        let usage = |r: Result<_, CliError>, want: &str| match r {
            Err(CliError::Usage(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("expected a usage error with {want:?}, got {other:?}"),
        };
        // Overflows usize.
        usage(cfg(usize::MAX / 2, 4).model(64, 10), "overflows");
        usage(cfg(usize::MAX, 1).model(usize::MAX, 1), "overflows");
        // Fits usize, not a message: (64 + 1) * 40M > 2^31 - 1.
        usage(cfg(40_000_000, 1).model(64, 10), "--hidden 40000000");
        usage(cfg(40_000_000, 1).model(64, 10), "a gradcast message");
        // Fits a message, not memory with 64 workers.
        usage(cfg(1_000_000, 64).model(64, 10), "--workers");
        assert!(cfg(1_000_000, 1).model(64, 10).is_ok());
        // validate() rejects what no data could make fit.
        let e = cfg(usize::MAX, 4).validate().unwrap_err();
        assert!(
            matches!(&e, CliError::Usage(m) if m.contains("--hidden")),
            "{e}"
        );
        assert!(cfg(128, 4).validate().is_ok());
    }

    /// A last batch smaller than P leaves shards empty: they do not count in the mean loss.
    #[test]
    fn empty_shards_do_not_dilute_the_loss() {
        let all = crate::data::digits().unwrap();
        let data = Split {
            name: "five".into(),
            train: all.select(&[0, 1, 2, 3, 4]),
            test: all.select(&[5, 6, 7]),
        };
        // Batch 4 over 4 workers: one sample per shard; the last batch has 1 sample and 3
        // empty shards. A negligible lr keeps the parameters at their initial values.
        let c = TrainConfig {
            batch: 4,
            lr: 1e-9,
            hidden: 8,
            ..cfg(8, 4)
        };
        let s = train(crate::backends::cpu().unwrap(), &c, &data, &mut Quiet).unwrap();
        let model = c.model(64, 10).unwrap();
        let init = model.init(c.seed);
        let (want, _) = model
            .loss_and_grad(&init, &data.train.features, &data.train.labels)
            .unwrap();
        for (run, r) in [("dense", &s.dense), ("gradcast", &s.gradcast)] {
            let got = r.epochs[0].loss;
            assert!(
                (got - want as f64).abs() < 1e-5,
                "{run}: epoch loss {got}, mean loss of the 5 samples {want}"
            );
        }
    }

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
}

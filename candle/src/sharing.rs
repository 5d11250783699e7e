//! [`Sharing`]: what a candle training loop adds so that several workers train one model.
//!
//! Each step, every worker's gradients (a candle `GradStore`) are flattened by variable name
//! into one vector ([`Layout`]), exchanged ([`Exchange`]: gradcast's threshold encoding with
//! error feedback, or dense fp32 / fp16), and the aggregated gradient is written back per
//! variable for the inner optimizer, which then steps every replica identically.

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::network::Network;
use crate::tensors;
use crate::threshold::{Segments, Threshold};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use gradcast_core::Backend;
use gradcast_core::barrier::Park;
use gradcast_core::encoder::{Encoder, EncoderConfig, Policy, Segment};
use gradcast_core::round::{Accumulator, Published, RoundConfig, Step};
use std::time::Instant;

/// The most variables an encoder holds with [`Segments::PerVariable`] (one segment each).
pub const MAX_SEGMENTS: usize = 256;

/// A worker's encoder: up to [`MAX_SEGMENTS`] segments, each with any built-in policy.
pub type SegmentEncoder = Encoder<Policy, MAX_SEGMENTS>;

/// What travels between workers each step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Payload {
    /// The gradients (the default): every replica runs the same optimizer step on the same
    /// aggregated gradient, so optimizer state stays identical everywhere (DGC and
    /// PyTorch's communication hooks do this).
    #[default]
    Gradients,
    /// Post-optimizer updates (DL4J's way): each worker steps its own optimizer on its own
    /// gradient, the differences `params_before - params_after` travel, and every replica
    /// steps `params -= aggregate(updates)`. Each worker keeps its own optimizer state.
    /// Needs one replica per worker.
    Updates,
}

/// How the workers' contributions are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aggregate {
    /// The mean over workers (the default): the gradient of the mean loss over the global
    /// batch, when the shards are equal; the step size does not change with the worker count.
    #[default]
    Mean,
    /// The sum.
    Sum,
}

impl Aggregate {
    /// `"mean"` or `"sum"`.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Mean => "mean",
            Aggregate::Sum => "sum",
        }
    }
}

/// How the replicas start from the same parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Init {
    /// Copy global worker 0's values into every replica (the default).
    #[default]
    Broadcast,
    /// Compare every replica with global worker 0's, variable by variable, and fail with an
    /// error naming the first variable that differs.
    Verify,
}

/// gradcast's exchange: threshold encoding with error feedback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradcastConfig {
    /// The threshold policy (of every segment).
    pub threshold: Threshold,
    /// How the vector is cut into segments.
    pub segments: Segments,
    /// Warm-up, clipping, residual statistics.
    pub encoder: EncoderConfig,
}

impl Default for GradcastConfig {
    /// Adaptive thresholds, one segment per variable, no warm-up or clipping, no residual
    /// statistics (they cost a pass over the residual every step).
    fn default() -> Self {
        GradcastConfig {
            threshold: Threshold::Adaptive,
            segments: Segments::PerVariable,
            encoder: EncoderConfig {
                residual_stats: false,
                ..EncoderConfig::default()
            },
        }
    }
}

impl GradcastConfig {
    /// The default configuration with `threshold`.
    pub fn with_threshold(threshold: Threshold) -> Self {
        GradcastConfig {
            threshold,
            ..GradcastConfig::default()
        }
    }
}

/// How gradients travel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exchange {
    /// Threshold-encoded messages with error feedback (the round protocol of
    /// `gradcast_core::round`).
    Gradcast(GradcastConfig),
    /// Every worker's gradient as fp32: an all-reduce (the baseline).
    DenseF32,
    /// Every worker's gradient rounded to fp16, summed in f32: the honest baseline for any
    /// compressor. Gathered from every rank and summed in global worker order.
    DenseF16,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::Gradcast(GradcastConfig::default())
    }
}

impl Exchange {
    /// `"gradcast"`, `"dense-fp32"` or `"dense-fp16"`.
    pub fn name(&self) -> &'static str {
        match self {
            Exchange::Gradcast(_) => "gradcast",
            Exchange::DenseF32 => "dense-fp32",
            Exchange::DenseF16 => "dense-fp16",
        }
    }

    /// The exchange's code in checkpoints.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Exchange::Gradcast(_) => 0,
            Exchange::DenseF32 => 1,
            Exchange::DenseF16 => 2,
        }
    }
}

/// Everything a [`Sharing`] is configured with. The same on every rank.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// How gradients travel.
    pub exchange: Exchange,
    /// Gradients (default) or post-optimizer updates.
    pub payload: Payload,
    /// Mean (default) or sum.
    pub aggregate: Aggregate,
    /// Broadcast (default) or verify the initial parameters.
    pub init: Init,
    /// Local workers of [`Sharing::new`] (all on its one replica); default 1, one worker per
    /// process. [`Sharing::with_replicas`] takes one worker per replica instead.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            exchange: Exchange::default(),
            payload: Payload::Gradients,
            aggregate: Aggregate::Mean,
            init: Init::Broadcast,
            workers: 1,
        }
    }
}

impl Config {
    /// The default configuration with `exchange`.
    pub fn with_exchange(exchange: Exchange) -> Self {
        Config {
            exchange,
            ..Config::default()
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:?} {:?} {:?} {:?} workers {}",
            self.exchange, self.payload, self.aggregate, self.init, self.workers
        )
    }
}

/// One worker's part of a step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WorkerStats {
    /// The global worker id.
    pub worker: usize,
    /// Bytes of its message (gradcast: the packet, headers included; dense: `4 N` or `2 N`).
    pub bytes: u64,
    /// Nanoseconds to encode its message (gradcast: residual += gradient, encode, commit;
    /// dense fp16: the conversion; dense fp32: 0).
    pub encode_ns: u64,
    /// Elements sent (dense: N).
    pub entries: u64,
    /// `entries / N`.
    pub density: f64,
    /// The smallest threshold of its segments (NaN for dense).
    pub tau_min: f32,
    /// The largest threshold of its segments (NaN for dense).
    pub tau_max: f32,
    /// Messages by encoding: sparse, bitmap, dense.
    pub encodings: [u32; 3],
    /// Variables without a gradient in its `GradStore` (they contributed zeros).
    pub missing_gradients: usize,
}

/// What the last step did. See [`Sharing::stats`].
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StepStats {
    /// The step these statistics describe, from 0.
    pub step: u64,
    /// This process's workers, in order.
    pub workers: Vec<WorkerStats>,
    /// Bytes of this process's workers' messages.
    pub bytes: u64,
    /// The scale applied to the summed contributions (1/W for the mean of W workers).
    pub scale: f32,
    /// Nanoseconds flattening gradients (or updates) into the shared vector, all local
    /// workers.
    pub flatten_ns: u64,
    /// Nanoseconds in the exchange once this process's messages were ready: the transport
    /// (waiting for the other ranks included) and validating what arrived.
    pub exchange_ns: u64,
    /// Nanoseconds decoding every message (dense: summing every contribution) into the
    /// aggregated vector, once per process.
    pub decode_ns: u64,
    /// Nanoseconds writing the aggregated vector back into tensors and stepping every local
    /// replica's optimizer.
    pub apply_ns: u64,
    /// Nanoseconds of the whole step.
    pub total_ns: u64,
}

/// One replica: its `VarMap` and its variables in layout order.
#[derive(Clone)]
pub(crate) struct Replica {
    pub(crate) varmap: VarMap,
    pub(crate) vars: Vec<Var>,
}

pub(crate) struct GradcastEngine<B: Backend, T: gradcast_core::round::Transport> {
    pub(crate) acc: Accumulator<B, SegmentEncoder, T, Park>,
    sum: B::Buffer,
    published: Vec<Published>,
}

pub(crate) enum Engine<B: Backend, T: gradcast_core::round::Transport> {
    Gradcast(Box<GradcastEngine<B, T>>),
    Dense { half: bool, gathered: Vec<u8> },
}

/// Data-parallel training for candle. See the [crate docs](crate) and the
/// [module docs](self).
///
/// A `Sharing` belongs to one process and holds its local workers: one per process in the
/// usual MPI setting ([`Sharing::new`], then [`Sharing::wrap`] the optimizer), or several
/// in one process, either on one replica ([`Config::workers`]) or one replica each
/// ([`Sharing::with_replicas`], then [`Sharing::step`]).
pub struct Sharing<B: Backend, N: Network> {
    pub(crate) config: Config,
    pub(crate) layout: Layout,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) workers: usize,
    pub(crate) first_worker: usize,
    pub(crate) total_workers: usize,
    pub(crate) network: N,
    pub(crate) engine: Engine<B, N::Transport>,
    host: Vec<Vec<f32>>,
    agg: Vec<f32>,
    snapshot: Vec<f32>,
    pub(crate) step: u64,
    stats: StepStats,
}

impl<B: Backend, N: Network> std::fmt::Debug for Sharing<B, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("config", &self.config)
            .field("variables", &self.layout.len())
            .field("n", &self.layout.n())
            .field("workers", &self.workers)
            .field("first_worker", &self.first_worker)
            .field("total_workers", &self.total_workers)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

impl<B: Backend, N: Network> Sharing<B, N> {
    /// Sets up sharing for one replica (`varmap`) with [`Config::workers`] local workers on
    /// it (1 by default: one worker per process). Collective across the network's ranks.
    ///
    /// Checks that every rank built the same model (names, shapes, dtypes) and the same
    /// configuration, then makes the parameters agree ([`Config::init`]).
    ///
    /// # Errors
    /// [`Error::NoVariables`], [`Error::TooManyParameters`], [`Error::TooManyVariables`];
    /// [`Error::ModelsDiffer`] naming the first variable that differs and where;
    /// [`Error::ParametersDiffer`] with [`Init::Verify`]; [`Error::Config`] for a bad
    /// configuration (no workers, `Payload::Updates` on a shared replica, a budget too
    /// small for the segments, another configuration on another rank); network and
    /// backend errors.
    pub fn new(varmap: &VarMap, config: Config, backend: B, network: N) -> Result<Self> {
        Self::build(
            std::slice::from_ref(varmap),
            config.workers,
            config,
            backend,
            network,
        )
    }

    /// Sets up sharing for several local workers, one replica each (one `VarMap` per worker,
    /// each built the same way). [`Config::workers`] is ignored. Collective, as
    /// [`Sharing::new`].
    ///
    /// # Errors
    /// As [`Sharing::new`].
    pub fn with_replicas(
        varmaps: &[VarMap],
        config: Config,
        backend: B,
        network: N,
    ) -> Result<Self> {
        Self::build(varmaps, varmaps.len(), config, backend, network)
    }

    fn build(
        varmaps: &[VarMap],
        workers: usize,
        config: Config,
        backend: B,
        mut network: N,
    ) -> Result<Self> {
        if workers == 0 || varmaps.is_empty() {
            return Err(Error::Config(
                "at least one worker and one replica are needed".into(),
            ));
        }
        if config.payload == Payload::Updates && varmaps.len() != workers {
            return Err(Error::Config(
                "Payload::Updates needs one replica per worker (each worker steps its own \
                 optimizer): use Sharing::with_replicas"
                    .into(),
            ));
        }
        let (rank, ranks) = (network.rank(), network.ranks());
        let first_worker = rank * workers;
        let total_workers = ranks * workers;

        // Every rank: the same worker count, configuration and model.
        let mine = format!("{workers} workers; {}", config.describe());
        let all = network.all_gather_varlen(mine.as_bytes())?;
        if let Some(r) = all.iter().position(|c| c != &all[0]) {
            return Err(Error::Config(format!(
                "rank {r} runs another configuration than rank 0: {:?} vs {:?}",
                String::from_utf8_lossy(&all[r]),
                String::from_utf8_lossy(&all[0])
            )));
        }
        let layout = Layout::of(&varmaps[0])?;
        for (r, vm) in varmaps.iter().enumerate().skip(1) {
            let other = Layout::of(vm)?;
            if let Some(d) = layout.difference(
                &other,
                &format!("worker {first_worker}"),
                &format!("worker {}", first_worker + r),
            ) {
                return Err(Error::ModelsDiffer { detail: d });
            }
        }
        let descs = network.all_gather_varlen(&layout.describe())?;
        let rank0 = Layout::from_description(&descs[0])?;
        for (r, d) in descs.iter().enumerate().skip(1) {
            let other = Layout::from_description(d)?;
            if let Some(d) = rank0.difference(&other, "rank 0", &format!("rank {r}")) {
                return Err(Error::ModelsDiffer { detail: d });
            }
        }

        let replicas = varmaps
            .iter()
            .enumerate()
            .map(|(r, vm)| {
                Ok(Replica {
                    varmap: vm.clone(),
                    vars: layout.vars_of(vm, first_worker + r)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        init_params(&layout, &replicas, config.init, workers, &mut network)?;

        let n = layout.n();
        let engine = match config.exchange {
            Exchange::Gradcast(g) => {
                let lengths = g.segments.lengths(&layout);
                if lengths.len() > MAX_SEGMENTS {
                    return Err(Error::TooManyVariables {
                        count: lengths.len(),
                        max: MAX_SEGMENTS,
                    });
                }
                let policies = g.threshold.policies(&lengths)?;
                let core = |e: gradcast_core::Error| Error::Config(format!("encoder: {e}"));
                let encoders = (0..workers)
                    .map(|_| match g.segments {
                        Segments::Whole => {
                            SegmentEncoder::new(n, policies[0], g.encoder).map_err(core)
                        }
                        Segments::PerVariable => SegmentEncoder::segmented(
                            g.encoder,
                            lengths.iter().zip(&policies).enumerate().map(
                                |(id, (&len, &policy))| Segment {
                                    id: id as u16,
                                    len,
                                    policy,
                                },
                            ),
                        )
                        .map_err(core),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let max_packet = encoders[0].max_packet_bytes();
                let (transport, first_sender) = network.round_transport(workers, max_packet)?;
                let mut rc = RoundConfig::new(workers, n);
                rc.first_sender = first_sender;
                rc.step = match config.aggregate {
                    Aggregate::Mean => Step::Mean,
                    Aggregate::Sum => Step::Sum,
                };
                let acc = Accumulator::new(backend, rc, encoders, transport)
                    .map_err(|e| Error::round(0, e))?;
                let sum = acc.backend().alloc(n).map_err(|e| Error::round(0, e))?;
                Engine::Gradcast(Box::new(GradcastEngine {
                    acc,
                    sum,
                    published: vec![Published::default(); workers],
                }))
            }
            Exchange::DenseF32 => Engine::Dense {
                half: false,
                gathered: Vec::new(),
            },
            Exchange::DenseF16 => Engine::Dense {
                half: true,
                gathered: vec![0u8; 2 * n * total_workers],
            },
        };
        Ok(Sharing {
            config,
            host: vec![vec![0f32; n]; workers],
            agg: vec![0f32; n],
            snapshot: if config.payload == Payload::Updates {
                vec![0f32; n]
            } else {
                Vec::new()
            },
            layout,
            replicas,
            workers,
            first_worker,
            total_workers,
            network,
            engine,
            step: 0,
            stats: StepStats::default(),
        })
    }

    /// Wraps an optimizer of this sharing's one replica: its `backward_step` and `step`
    /// then exchange gradients before stepping. See [`SharedOptimizer`].
    pub fn wrap<O: Optimizer>(self, inner: O) -> SharedOptimizer<O, B, N> {
        SharedOptimizer {
            sharing: self,
            inner,
        }
    }

    /// One step for every local worker: `grads[w]` is worker `w`'s gradients (from
    /// `loss.backward()` on its replica), `optimizers[r]` replica `r`'s optimizer.
    ///
    /// Nothing is touched before every worker's gradients are checked: a variable added,
    /// removed or reshaped, a gradient of the wrong shape, NaN or an infinity is an error
    /// that leaves residuals, parameters and optimizers as they were. A variable without a
    /// gradient contributes zeros (counted in [`WorkerStats::missing_gradients`]); every
    /// replica then steps every variable with the aggregated gradient.
    ///
    /// # Errors
    /// [`Error::Count`] when the slices do not have one entry per worker and replica; the
    /// checks above; [`Error::Round`] / [`Error::Network`] when the exchange fails (the
    /// round's messages are credited back to the residuals, nothing is lost); candle errors
    /// of the optimizers.
    pub fn step<O: Optimizer>(
        &mut self,
        optimizers: &mut [O],
        grads: &[GradStore],
    ) -> Result<&StepStats> {
        let start = Instant::now();
        if optimizers.len() != self.replicas.len() {
            return Err(Error::Count {
                what: "optimizers (one per replica)",
                expected: self.replicas.len(),
                got: optimizers.len(),
            });
        }
        if grads.len() != self.workers {
            return Err(Error::Count {
                what: "gradient stores (one per local worker)",
                expected: self.workers,
                got: grads.len(),
            });
        }
        for (r, rep) in self.replicas.iter().enumerate() {
            self.layout
                .check(&rep.varmap, &rep.vars, self.first_worker + r)?;
        }
        let mut stats = StepStats {
            step: self.step,
            workers: vec![WorkerStats::default(); self.workers],
            ..StepStats::default()
        };
        match self.config.payload {
            Payload::Gradients => self.step_gradients(optimizers, grads, &mut stats)?,
            Payload::Updates => self.step_updates(optimizers, grads, &mut stats)?,
        }
        stats.total_ns = elapsed_ns(start);
        self.step += 1;
        self.stats = stats;
        Ok(&self.stats)
    }

    fn replica_of(&self, worker: usize) -> usize {
        if self.replicas.len() == 1 { 0 } else { worker }
    }

    fn step_gradients<O: Optimizer>(
        &mut self,
        optimizers: &mut [O],
        grads: &[GradStore],
        stats: &mut StepStats,
    ) -> Result<()> {
        let t = Instant::now();
        for (w, g) in grads.iter().enumerate() {
            let rep = &self.replicas[self.replica_of(w)];
            stats.workers[w].missing_gradients = tensors::flatten_grads(
                &self.layout,
                &rep.vars,
                g,
                &mut self.host[w],
                self.first_worker + w,
            )?;
        }
        stats.flatten_ns = elapsed_ns(t);
        self.exchange(stats)?;
        let t = Instant::now();
        let rep0 = &self.replicas[0];
        let tensors: Vec<Tensor> = self
            .layout
            .variables()
            .iter()
            .zip(&rep0.vars)
            .map(|(v, var)| tensors::tensor_like(var, &self.agg[v.range()]))
            .collect::<Result<_>>()?;
        for (rep, opt) in self.replicas.iter().zip(optimizers.iter_mut()) {
            let mut store = GradStore::default();
            for (var, t) in rep.vars.iter().zip(&tensors) {
                let t = if var.device().same_device(t.device()) {
                    t.clone()
                } else {
                    t.to_device(var.device())?
                };
                store.insert(var.as_tensor(), t);
            }
            opt.step(&store)?;
        }
        stats.apply_ns = elapsed_ns(t);
        Ok(())
    }

    fn step_updates<O: Optimizer>(
        &mut self,
        optimizers: &mut [O],
        grads: &[GradStore],
        stats: &mut StepStats,
    ) -> Result<()> {
        // Every replica holds the same parameters: replica 0's are everyone's "before".
        let t = Instant::now();
        tensors::flatten_vars(&self.layout, &self.replicas[0].vars, &mut self.snapshot)?;
        let local = (|| -> Result<()> {
            for (w, (opt, g)) in optimizers.iter_mut().zip(grads).enumerate() {
                opt.step(g)?;
                let rep = &self.replicas[w];
                let u = &mut self.host[w];
                tensors::flatten_vars(&self.layout, &rep.vars, u)?;
                for (x, before) in u.iter_mut().zip(&self.snapshot) {
                    *x = before - *x;
                }
                for v in self.layout.variables() {
                    if let Some((index, value)) = tensors::first_non_finite(&u[v.range()]) {
                        return Err(Error::NonFinite {
                            what: "update",
                            name: v.name.clone(),
                            worker: self.first_worker + w,
                            index,
                            value,
                        });
                    }
                }
            }
            Ok(())
        })();
        stats.flatten_ns = elapsed_ns(t);
        let result = local.and_then(|()| self.exchange(stats));
        let t = Instant::now();
        // On success, params = before - aggregate; on failure, back to before.
        if result.is_ok() {
            for (a, before) in self.agg.iter_mut().zip(&self.snapshot) {
                *a = before - *a;
            }
        } else {
            self.agg.copy_from_slice(&self.snapshot);
        }
        for (v, k) in self.layout.variables().iter().zip(0..) {
            let t = tensors::tensor_like(&self.replicas[0].vars[k], &self.agg[v.range()])?;
            for rep in &self.replicas {
                rep.vars[k].set(&t)?;
            }
        }
        stats.apply_ns = elapsed_ns(t);
        result
    }

    /// Exchanges `host` (one vector per local worker) into `agg`, scaled.
    fn exchange(&mut self, stats: &mut StepStats) -> Result<()> {
        let n = self.layout.n();
        let scale;
        match &mut self.engine {
            Engine::Gradcast(g) => {
                for (w, h) in self.host.iter().enumerate() {
                    let (b, buf) = g.acc.update_mut(w);
                    b.upload(h, buf).map_err(|e| Error::round(self.step, e))?;
                }
                let summary = g
                    .acc
                    .round_local(&mut g.sum, &mut g.published)
                    .map_err(|e| Error::round(self.step, e))?;
                g.acc
                    .backend()
                    .download(&g.sum, &mut self.agg)
                    .map_err(|e| Error::round(self.step, e))?;
                scale = summary.scale;
                stats.exchange_ns = summary.exchange_ns;
                stats.decode_ns = summary.decode_ns;
                for (w, ws) in stats.workers.iter_mut().enumerate() {
                    let p = g.published[w];
                    ws.worker = self.first_worker + w;
                    ws.bytes = p.bytes as u64;
                    ws.encode_ns = p.encode_ns;
                    if let Some(r) = g.acc.encoder(w).last_round() {
                        ws.entries = r.entries;
                        ws.density = r.density;
                        ws.tau_min = r.tau;
                        ws.tau_max = r.tau_max;
                        ws.encodings = [
                            r.sparse_messages as u32,
                            r.bitmap_messages as u32,
                            r.dense_messages as u32,
                        ];
                    }
                }
            }
            Engine::Dense { half, gathered } => {
                for (w, ws) in stats.workers.iter_mut().enumerate() {
                    ws.worker = self.first_worker + w;
                    ws.bytes = if *half { 2 * n as u64 } else { 4 * n as u64 };
                    ws.entries = n as u64;
                    ws.density = 1.0;
                    ws.tau_min = f32::NAN;
                    ws.tau_max = f32::NAN;
                }
                if *half {
                    // Round every local gradient to fp16, gather every worker's, sum in
                    // global worker order: the same bits on every rank and for any split
                    // of the workers into ranks.
                    let mut mine = vec![0u8; 2 * n * self.workers];
                    for (w, h) in self.host.iter().enumerate() {
                        let t = Instant::now();
                        for (b, &x) in mine[2 * n * w..2 * n * (w + 1)]
                            .chunks_exact_mut(2)
                            .zip(h.iter())
                        {
                            b.copy_from_slice(&half::f16::from_f32(x).to_le_bytes());
                        }
                        stats.workers[w].encode_ns = elapsed_ns(t);
                    }
                    let t = Instant::now();
                    self.network.all_gather(&mine, gathered)?;
                    stats.exchange_ns = elapsed_ns(t);
                    let t = Instant::now();
                    self.agg.iter_mut().for_each(|a| *a = 0.0);
                    for worker in gathered.chunks_exact(2 * n) {
                        for (a, b) in self.agg.iter_mut().zip(worker.chunks_exact(2)) {
                            *a += half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                        }
                    }
                    stats.decode_ns = elapsed_ns(t);
                } else {
                    // Sum the local gradients in worker order, then all-reduce over ranks.
                    let t = Instant::now();
                    self.agg.copy_from_slice(&self.host[0]);
                    for h in &self.host[1..] {
                        for (a, x) in self.agg.iter_mut().zip(h) {
                            *a += *x;
                        }
                    }
                    stats.decode_ns = elapsed_ns(t);
                    let t = Instant::now();
                    self.network.all_reduce_sum(&mut self.agg)?;
                    stats.exchange_ns = elapsed_ns(t);
                }
                scale = match self.config.aggregate {
                    Aggregate::Mean => 1.0 / self.total_workers as f32,
                    Aggregate::Sum => 1.0,
                };
            }
        }
        if scale != 1.0 {
            for a in &mut self.agg {
                *a *= scale;
            }
        }
        stats.scale = scale;
        stats.bytes = stats.workers.iter().map(|w| w.bytes).sum();
        Ok(())
    }

    /// The last step's statistics.
    pub fn stats(&self) -> &StepStats {
        &self.stats
    }

    /// Steps done (the next step's number).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The layout: variables by name, offsets, N.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This process's local workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The global id of this process's first worker (`rank * workers`).
    pub fn first_worker(&self) -> usize {
        self.first_worker
    }

    /// Every worker of the job (`ranks * workers`).
    pub fn total_workers(&self) -> usize {
        self.total_workers
    }

    /// The replicas' `VarMap`s.
    pub fn varmaps(&self) -> impl ExactSizeIterator<Item = &VarMap> {
        self.replicas.iter().map(|r| &r.varmap)
    }

    /// The network.
    pub fn network(&mut self) -> &mut N {
        &mut self.network
    }

    /// The round protocol's accumulator (gradcast exchanges only): residuals, encoders,
    /// the transport.
    pub fn accumulator(
        &mut self,
    ) -> Option<&mut Accumulator<B, SegmentEncoder, N::Transport, Park>> {
        match &mut self.engine {
            Engine::Gradcast(g) => Some(&mut g.acc),
            Engine::Dense { .. } => None,
        }
    }

    /// A checksum of replica `r`'s parameters (FNV-1a over the f32 bits, layout order):
    /// equal on every replica of every rank while they are bit-identical.
    ///
    /// # Errors
    /// [`Error::Count`] for a replica that does not exist; candle errors.
    pub fn checksum(&self, replica: usize) -> Result<u64> {
        let rep = self.replicas.get(replica).ok_or(Error::Count {
            what: "replica index",
            expected: self.replicas.len(),
            got: replica,
        })?;
        tensors::params_checksum(&self.layout, &rep.vars)
    }

    /// Every replica's checksum on every rank, rank by rank (collective).
    ///
    /// # Errors
    /// Network and candle errors.
    pub fn all_checksums(&mut self) -> Result<Vec<u64>> {
        let mine = (0..self.replicas.len())
            .map(|r| self.checksum(r))
            .collect::<Result<Vec<u64>>>()?;
        let bytes: Vec<u8> = mine.iter().flat_map(|c| c.to_le_bytes()).collect();
        let mut all = vec![0u8; bytes.len() * self.network.ranks()];
        self.network.all_gather(&bytes, &mut all)?;
        Ok(all
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
}

/// Makes every replica start from global worker 0's parameters (broadcast) or checks that
/// they do (verify).
fn init_params<N: Network>(
    layout: &Layout,
    replicas: &[Replica],
    init: Init,
    workers: usize,
    network: &mut N,
) -> Result<()> {
    match init {
        Init::Broadcast => {
            let mut values = tensors::vars_as_f64(&replicas[0].vars)?;
            let mut bytes: Vec<u8> = values
                .iter()
                .flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes()))
                .collect();
            network.broadcast(&mut bytes)?;
            let mut at = bytes.chunks_exact(8);
            for v in &mut values {
                for x in v.iter_mut() {
                    *x = at
                        .next()
                        .map_or(0.0, |b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                }
            }
            for rep in replicas {
                tensors::set_vars_f64(&rep.vars, &values)?;
            }
        }
        Init::Verify => {
            let mut sums = Vec::with_capacity(replicas.len() * layout.len());
            for rep in replicas {
                for v in tensors::vars_as_f64(&rep.vars)? {
                    sums.push(tensors::checksum_f64(&v));
                }
            }
            let bytes: Vec<u8> = sums.iter().flat_map(|c| c.to_le_bytes()).collect();
            let mut all = vec![0u8; bytes.len() * network.ranks()];
            network.all_gather(&bytes, &mut all)?;
            let all: Vec<u64> = all
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            let v = layout.len();
            let per_rank = replicas.len() * v;
            for (i, &c) in all.iter().enumerate() {
                if c != all[i % v] {
                    let (rank, rest) = (i / per_rank, i % per_rank);
                    let replica = rest / v;
                    // A replica is a worker's, or the process's only one.
                    let worker = rank * workers + replica;
                    return Err(Error::ParametersDiffer {
                        name: layout.variables()[i % v].name.clone(),
                        worker,
                    });
                }
            }
        }
    }
    Ok(())
}

/// An optimizer whose steps go through a [`Sharing`]: call it as the inner optimizer
/// (`backward_step`, `step`), and it exchanges the gradients first.
///
/// The sharing must have one local worker and one replica ([`Sharing::new`] with the
/// default [`Config::workers`]); otherwise [`SharedOptimizer::step`] returns
/// [`Error::Count`] (use [`Sharing::step`]).
pub struct SharedOptimizer<O, B: Backend, N: Network> {
    sharing: Sharing<B, N>,
    inner: O,
}

impl<O: std::fmt::Debug, B: Backend, N: Network> std::fmt::Debug for SharedOptimizer<O, B, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedOptimizer")
            .field("sharing", &self.sharing)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<O: Optimizer, B: Backend, N: Network> SharedOptimizer<O, B, N> {
    /// `loss.backward()`, then [`SharedOptimizer::step`].
    ///
    /// # Errors
    /// As [`Sharing::step`].
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Exchanges `grads` with the other workers and steps the inner optimizer with the
    /// aggregated gradient.
    ///
    /// # Errors
    /// As [`Sharing::step`].
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.sharing.step(
            std::slice::from_mut(&mut self.inner),
            std::slice::from_ref(grads),
        )?;
        Ok(())
    }

    /// The last step's statistics: bytes, density, tau, encode / exchange / decode times.
    pub fn stats(&self) -> &StepStats {
        self.sharing.stats()
    }

    /// The inner optimizer's learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }

    /// Sets the inner optimizer's learning rate.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.inner.set_learning_rate(lr)
    }

    /// The inner optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The inner optimizer, mutably.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// The sharing.
    pub fn sharing(&self) -> &Sharing<B, N> {
        &self.sharing
    }

    /// The sharing, mutably.
    pub fn sharing_mut(&mut self) -> &mut Sharing<B, N> {
        &mut self.sharing
    }

    /// Saves everything gradcast holds ([`Sharing::save`]).
    ///
    /// # Errors
    /// As [`Sharing::save`].
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.sharing.save(path)
    }

    /// Restores what [`SharedOptimizer::save`] wrote ([`Sharing::restore`]).
    ///
    /// # Errors
    /// As [`Sharing::restore`].
    pub fn restore(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.sharing.restore(path)
    }

    /// The sharing and the inner optimizer.
    pub fn into_parts(self) -> (Sharing<B, N>, O) {
        (self.sharing, self.inner)
    }
}

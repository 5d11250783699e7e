//! `gradcast study`: does gradcast pay in *time*? Time to accuracy under the network cost
//! model of `docs/RESULTS.md` ([`crate::netmodel`]).
//!
//! For every configuration of the grid (model, workers P, seed, learning rate) one
//! [`Job`] of gradcast-candle's driver trains every method side by side (dense fp32, dense
//! fp16, gradcast with each threshold policy): the same initial parameters, the same data
//! order, the same shards. Gradients are computed with [`Compute::Sequential`], one worker at
//! a time, so each worker's forward and backward times are its own (P workers on a 2-core
//! machine do not inflate each other's times). An observer keeps, for every round of every
//! method, each worker's measured forward, backward and encode times and message bytes and
//! the process's decode time, and every test evaluation. The model turns them into modeled
//! wall-clock time at any bandwidth, so one training run serves every bandwidth.
//!
//! Reported per configuration and method: the final accuracy, the time to a target accuracy
//! at each bandwidth (the target is dense fp32's final accuracy in the same configuration
//! minus `--target-drop` points), the speed-ups over dense fp32 and fp16, and the
//! bandwidth above which gradcast stops paying (its time to target is no longer below the
//! faster dense baseline's). Outputs under `--out`: `study.json` (every record),
//! `study.md` (the tables) and one PNG per (model, P): test accuracy against modeled time,
//! one panel per bandwidth.
//!
//! What is charged, beyond [`netmodel::dense_step_s`] and [`netmodel::gradcast_step_s`]:
//! every method pays its per-worker share of flattening gradients and of the optimizer step
//! (measured); gradcast's decode time is the process's exchange (moving and validating every
//! message) plus its decode, an upper bound of what one machine would spend; dense fp16's
//! conversion is not charged (a good baseline converts inside the overlap).

use crate::cli::load_data;
use crate::error::CliError;
use crate::netmodel::{self, Link, Precision};
use crate::train::candle_err;
use gradcast_candle::data::Dataset;
use gradcast_candle::driver::{
    Compute, EvalRecord, Job, Observer, Replicas, RoundRecord, TrainConfig, rounds_per_epoch,
};
use gradcast_candle::models::ModelSpec;
use gradcast_candle::network::InProcess;
use gradcast_candle::optim::OptimizerSpec;
use gradcast_candle::{Config, Exchange, GradcastConfig, Segments, Threshold};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// One method of the study: a dense baseline or gradcast with a threshold policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Dense fp32 gradients, ring all-reduce.
    DenseFp32,
    /// Dense fp16 gradients, ring all-reduce.
    DenseFp16,
    /// gradcast with this threshold policy, all-gather of the messages.
    Gradcast(Threshold),
}

impl Method {
    fn exchange(self) -> Exchange {
        match self {
            Method::DenseFp32 => Exchange::DenseF32,
            Method::DenseFp16 => Exchange::DenseF16,
            Method::Gradcast(threshold) => Exchange::Gradcast(GradcastConfig {
                threshold,
                segments: Segments::PerVariable,
                ..GradcastConfig::default()
            }),
        }
    }

    fn precision(self) -> Option<Precision> {
        match self {
            Method::DenseFp32 => Some(Precision::Fp32),
            Method::DenseFp16 => Some(Precision::Fp16),
            Method::Gradcast(_) => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::DenseFp32 => f.write_str("dense-fp32"),
            Method::DenseFp16 => f.write_str("dense-fp16"),
            Method::Gradcast(t) => write!(f, "gradcast-{t}"),
        }
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense-fp32" => Ok(Method::DenseFp32),
            "dense-fp16" => Ok(Method::DenseFp16),
            _ => match s.strip_prefix("gradcast-") {
                Some(t) => t.parse().map(Method::Gradcast).map_err(|e| e.to_string()),
                None => Err(format!(
                    "{s:?}: expected dense-fp32, dense-fp16 or gradcast-POLICY (gradcast-fixed:TAU, \
                     gradcast-adaptive, gradcast-target:S, gradcast-budget:BYTES)"
                )),
            },
        }
    }
}

/// A model of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StudyModel {
    /// The MLP with two hidden layers of `--hidden` units (1024: 784-1024-1024-10, 1.9 M
    /// parameters on 28x28 images).
    Mlp,
    /// The small CNN.
    Cnn,
}

impl StudyModel {
    fn name(self) -> &'static str {
        match self {
            StudyModel::Mlp => "mlp",
            StudyModel::Cnn => "cnn",
        }
    }
}

/// `gradcast study`: the time-to-accuracy grid under the network cost model.
#[derive(Clone, Debug, clap::Args)]
pub struct StudyArgs {
    /// Training data: `fashion-mnist` (Debian's dataset-fashion-mnist package), `digits`
    /// (built in) or `idx:DIR`.
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Use at most this many training samples (the first ones; default: all).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// The CNN trains on at most this many of them: its forward and backward pass costs 2.4 to
    /// 5 times the MLP's per sample on a 2-core CPU (P = 8 to 2), and the default grid is
    /// sized to finish in about an hour there. `0`: the same samples as the MLP.
    #[arg(long, default_value_t = 30_000)]
    pub cnn_train_limit: usize,
    /// Use at most this many test samples (the first ones; default: all).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Models to train.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mlp,cnn")]
    pub models: Vec<StudyModel>,
    /// Width of each of the MLP's two hidden layers.
    #[arg(long, default_value_t = 1024)]
    pub hidden: usize,
    /// Worker counts P.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    pub workers: Vec<usize>,
    /// Methods: dense-fp32, dense-fp16, gradcast-POLICY (fixed:TAU, adaptive, target:S,
    /// budget:BYTES). Dense fp32 sets the target accuracy; without it the best final
    /// accuracy does.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dense-fp32,dense-fp16,gradcast-fixed:0.01,gradcast-adaptive,gradcast-budget:65536"
    )]
    pub methods: Vec<Method>,
    /// Learning rates of the sweep (SGD); each method then trains with the one that gave it
    /// the best final accuracy in the sweep: the headline configuration (the first model at
    /// the largest P, first seed) for one epoch on the first `--sweep-train-limit` training
    /// samples. One value: no sweep.
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.05,0.1")]
    pub lr: Vec<f64>,
    /// Training samples of the learning-rate sweep (the first ones).
    #[arg(long, default_value_t = 15_360)]
    pub sweep_train_limit: usize,
    /// Seeds of the headline configuration (the first model at the largest P); every other
    /// configuration uses the first seed only.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Passes over the training set.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Global batch, split over the P workers.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Test evaluations per epoch (the accuracy curve's resolution).
    #[arg(long, default_value_t = 10)]
    pub evals_per_epoch: u64,
    /// The target accuracy is dense fp32's final accuracy minus this many points.
    #[arg(long, default_value_t = 1.0)]
    pub target_drop: f64,
    /// Latency per message, microseconds.
    #[arg(long, default_value_t = 50.0)]
    pub alpha_us: f64,
    /// Bandwidths of the table and plots, Gbit/s.
    #[arg(long, value_delimiter = ',', default_value = "0.1,1,10,100")]
    pub gbit: Vec<f64>,
    /// A small grid for CI, to check the pipeline, not to conclude: the first 512 training
    /// and 500 test samples (the sweep: 256), MLP 784-64-64-10 and the CNN, P in {2, 4}, one
    /// seed, one epoch of batch 64.
    #[arg(long)]
    pub quick: bool,
    /// Output directory.
    #[arg(long, default_value = "gradcast-study")]
    pub out: PathBuf,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl StudyArgs {
    /// Applies `--quick`.
    fn effective(&self) -> StudyArgs {
        let mut a = self.clone();
        if a.quick {
            a.train_limit = Some(a.train_limit.unwrap_or(512).min(512));
            a.sweep_train_limit = a.sweep_train_limit.min(256);
            a.test_limit = Some(a.test_limit.unwrap_or(500).min(500));
            a.hidden = 64;
            a.workers = vec![2, 4];
            a.seeds = 1;
            a.epochs = 1;
            a.batch = 64;
            a.evals_per_epoch = 4;
        }
        a
    }

    fn validate(&self) -> Result<(), CliError> {
        let bad = |m: String| Err(CliError::Usage(m));
        if self.models.is_empty() || self.workers.is_empty() || self.methods.is_empty() {
            return bad("--models, --workers and --methods each need at least one value".into());
        }
        if let Some(&p) = self.workers.iter().find(|&&p| p == 0 || p > 64) {
            return bad(format!("--workers {p}: must be 1 to 64"));
        }
        if let Some(&p) = self.workers.iter().find(|&&p| p > self.batch) {
            return bad(format!(
                "--batch {} is smaller than --workers {p}: every worker needs a sample",
                self.batch
            ));
        }
        if self.lr.is_empty() || self.lr.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
            return bad("--lr: every learning rate must be finite and greater than 0".into());
        }
        if self.seeds == 0 || self.epochs == 0 || self.evals_per_epoch == 0 {
            return bad("--seeds, --epochs and --evals-per-epoch must be at least 1".into());
        }
        if self.sweep_train_limit == 0 && self.lr.len() > 1 {
            return bad("--sweep-train-limit must be at least 1: the sweep trains on it".into());
        }
        if self.hidden == 0 {
            return bad("--hidden must be at least 1".into());
        }
        if !(self.target_drop.is_finite() && self.target_drop >= 0.0) {
            return bad(format!("--target-drop {}: must be >= 0", self.target_drop));
        }
        if self.gbit.is_empty() {
            return bad("--gbit needs at least one bandwidth".into());
        }
        for &g in &self.gbit {
            Link::gbit(self.alpha_us * 1e-6, g)
                .map_err(|e| CliError::Usage(format!("--gbit {g}: {e}")))?;
        }
        Link::gbit(self.alpha_us * 1e-6, 1.0)
            .map_err(|e| CliError::Usage(format!("--alpha-us {}: {e}", self.alpha_us)))?;
        Ok(())
    }

    fn spec(&self, m: StudyModel) -> ModelSpec {
        match m {
            StudyModel::Mlp => ModelSpec::Mlp {
                hidden: vec![self.hidden, self.hidden],
            },
            StudyModel::Cnn => ModelSpec::Cnn,
        }
    }
}

/// One round of one method, what the model needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoundCost {
    /// Per worker: forward and backward seconds.
    #[serde(skip)]
    pub compute: Vec<netmodel::Compute>,
    /// Per worker: encode seconds, decode seconds, bytes.
    #[serde(skip)]
    pub messages: Vec<netmodel::Message>,
    /// Per worker share of flattening and the optimizer step, seconds.
    pub other_s: f64,
}

/// One method's training in one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct MethodRun {
    /// The method.
    pub method: String,
    #[serde(skip)]
    kind: Option<Method>,
    /// Its learning rate.
    pub lr: f64,
    /// Final test accuracy, in [0, 1].
    pub final_accuracy: f64,
    /// Total bytes on the wire, every worker.
    pub bytes: u64,
    /// Whether every replica ended bit-identical.
    pub replicas_identical: bool,
    /// Test evaluations: (rounds done, accuracy).
    pub evals: Vec<(u64, f64)>,
    /// Measured mean per-round seconds: forward, backward, encode, decode (slowest worker).
    pub mean_round_s: [f64; 4],
    /// Mean bytes per worker and round.
    pub mean_message_bytes: f64,
    /// Time to target in modeled seconds, one per bandwidth of the report (`None`: target
    /// not reached).
    pub time_to_target_s: Vec<Option<f64>>,
    #[serde(skip)]
    rounds: Vec<RoundCost>,
}

impl MethodRun {
    /// Modeled seconds of each round on `link`.
    fn step_times(&self, link: &Link, params: u64) -> Result<Vec<f64>, CliError> {
        let merr = |e: netmodel::ModelError| CliError::Train(format!("network model: {e}"));
        self.rounds
            .iter()
            .map(|r| {
                let s = match self.kind.and_then(Method::precision) {
                    Some(p) => {
                        netmodel::dense_step_s(link, &r.compute, p.gradient_bytes(params as usize))
                    }
                    None => netmodel::gradcast_step_s(link, &r.compute, &r.messages),
                };
                s.map(|s| s + r.other_s).map_err(merr)
            })
            .collect()
    }

    /// Modeled (time, accuracy) at each evaluation on `link`.
    fn curve(&self, link: &Link, params: u64) -> Result<Vec<(f64, f64)>, CliError> {
        let cum = netmodel::cumulative(self.step_times(link, params)?);
        Ok(self
            .evals
            .iter()
            .map(|&(rounds, acc)| {
                let t = if rounds == 0 {
                    0.0
                } else {
                    cum.get(rounds as usize - 1).copied().unwrap_or(f64::NAN)
                };
                (t, acc)
            })
            .collect())
    }

    /// Modeled seconds until the first evaluation at or above `target`.
    fn time_to(&self, link: &Link, params: u64, target: f64) -> Result<Option<f64>, CliError> {
        Ok(self
            .curve(link, params)?
            .into_iter()
            .find(|&(_, acc)| acc >= target)
            .map(|(t, _)| t))
    }
}

/// One configuration: a model, P, a seed; every method.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigResult {
    /// `mlp` or `cnn`.
    pub model: String,
    /// The model in words.
    pub shape: String,
    /// Parameters N.
    pub params: u64,
    /// Workers P.
    pub workers: usize,
    /// Seed.
    pub seed: u64,
    /// Training samples (the CNN may train on fewer than the MLP: `--cnn-train-limit`).
    pub train_samples: usize,
    /// Rounds per method.
    pub rounds: u64,
    /// The target accuracy, in [0, 1].
    pub target: f64,
    /// Every method.
    pub methods: Vec<MethodRun>,
    /// Per gradcast method: the bandwidth (Gbit/s) above which its time to target is no
    /// longer below the faster dense baseline's (`None`: it pays up to 10,000 Gbit/s, or it
    /// never reached the target, or there is no dense baseline that did).
    pub break_even_gbit: Vec<(String, Option<f64>)>,
    /// Per gradcast method: the bandwidth (Gbit/s) above which its mean modeled round is no
    /// longer shorter than the faster dense baseline's: where it stops paying per round,
    /// whatever the rounds to target (`None`: not within 0.01 to 10,000 Gbit/s, or no dense
    /// baseline in the grid).
    pub step_break_even_gbit: Vec<(String, Option<f64>)>,
}

/// The whole study.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Data set name, training and test samples.
    pub data: (String, usize, usize),
    /// Latency per message, seconds.
    pub alpha_s: f64,
    /// Bandwidths of the table, Gbit/s.
    pub gbit: Vec<f64>,
    /// Global batch.
    pub batch: usize,
    /// Epochs.
    pub epochs: usize,
    /// Per method, the learning rate chosen by the sweep.
    pub lr: Vec<(String, f64)>,
    /// The sweep: (method, learning rate, final test accuracy) of every run (empty without
    /// a sweep).
    pub sweep: Vec<(String, f64, f64)>,
    /// Training samples of the sweep.
    pub sweep_train_samples: usize,
    /// Every configuration.
    pub configs: Vec<ConfigResult>,
}

/// One run's rounds and its evaluations (rounds done, accuracy).
type RunLog = (Vec<RoundCost>, Vec<(u64, f64)>);

/// Collects rounds and evaluations of one job's runs.
struct Collect {
    runs: Vec<RunLog>,
}

impl Observer for Collect {
    fn round(&mut self, r: &RoundRecord<'_>) {
        let Some((rounds, _)) = self.runs.get_mut(r.run) else {
            return;
        };
        let w = r.workers.len().max(1) as f64;
        let s = |ns: u64| ns as f64 * 1e-9;
        let decode = s(r.step.exchange_ns) + s(r.step.decode_ns);
        rounds.push(RoundCost {
            compute: r
                .workers
                .iter()
                .map(|x| netmodel::Compute {
                    forward_s: s(x.forward_ns),
                    backward_s: s(x.backward_ns),
                })
                .collect(),
            messages: r
                .workers
                .iter()
                .map(|x| netmodel::Message {
                    encode_s: s(x.sharing.encode_ns),
                    decode_s: decode,
                    bytes: x.sharing.bytes,
                })
                .collect(),
            other_s: (s(r.step.flatten_ns) + s(r.step.apply_ns)) / w,
        });
    }

    fn eval(&mut self, e: &EvalRecord) {
        if let Some((_, evals)) = self.runs.get_mut(e.run) {
            evals.push((e.rounds, e.test_accuracy));
        }
    }
}

fn links(a: &StudyArgs) -> Result<Vec<Link>, CliError> {
    a.gbit
        .iter()
        .map(|&g| {
            Link::gbit(a.alpha_us * 1e-6, g)
                .map_err(|e| CliError::Usage(format!("--gbit {g}: {e}")))
        })
        .collect()
}

/// Trains `methods` (all with learning rate `lr`) side by side in one job.
#[allow(clippy::too_many_arguments)]
fn train_methods(
    a: &StudyArgs,
    (train, test): (&Dataset, &Dataset),
    epochs: usize,
    model: StudyModel,
    workers: usize,
    seed: u64,
    lr: f64,
    methods: &[Method],
) -> Result<Vec<MethodRun>, CliError> {
    let per_epoch = rounds_per_epoch(train.len(), a.batch);
    let config = TrainConfig {
        model: a.spec(model),
        workers,
        batch: a.batch,
        epochs,
        seed,
        optimizer: OptimizerSpec::Sgd { lr },
        compute: Compute::Sequential,
        replicas: Replicas::PerWorker,
        eval_every: (per_epoch / a.evals_per_epoch).max(1),
    };
    let mut job = Job::new(config, train, test).map_err(candle_err)?;
    for m in methods {
        let cfg = Config::with_exchange(m.exchange());
        job.add_run(&m.to_string(), cfg, crate::backends::cpu()?, InProcess)
            .map_err(candle_err)?;
    }
    let mut obs = Collect {
        runs: vec![(Vec::new(), Vec::new()); methods.len()],
    };
    job.run(&mut obs).map_err(candle_err)?;
    let summaries = job.summaries().map_err(candle_err)?;
    let mut out = Vec::new();
    for ((m, s), (rounds, evals)) in methods.iter().zip(summaries).zip(obs.runs) {
        let n = rounds.len().max(1) as f64;
        let slowest = |f: &dyn Fn(&RoundCost) -> f64| rounds.iter().map(f).sum::<f64>() / n;
        let mean_round_s = [
            slowest(&|r| r.compute.iter().map(|c| c.forward_s).fold(0.0, f64::max)),
            slowest(&|r| r.compute.iter().map(|c| c.backward_s).fold(0.0, f64::max)),
            slowest(&|r| r.messages.iter().map(|c| c.encode_s).fold(0.0, f64::max)),
            slowest(&|r| r.messages.iter().map(|c| c.decode_s).fold(0.0, f64::max)),
        ];
        let msgs: usize = rounds.iter().map(|r| r.messages.len()).sum();
        let mean_message_bytes = rounds
            .iter()
            .flat_map(|r| r.messages.iter().map(|m| m.bytes as f64))
            .sum::<f64>()
            / msgs.max(1) as f64;
        out.push(MethodRun {
            method: m.to_string(),
            kind: Some(*m),
            lr,
            final_accuracy: s.test_accuracy,
            bytes: s.bytes,
            replicas_identical: s.replicas_identical,
            evals,
            mean_round_s,
            mean_message_bytes,
            time_to_target_s: Vec::new(),
            rounds,
        });
    }
    if let Some(bad) = out.iter().find(|r| !r.replicas_identical) {
        return Err(CliError::Train(format!(
            "the {} replicas diverged: they must stay bit-identical",
            bad.method
        )));
    }
    Ok(out)
}

/// The smallest bandwidth on a fine log grid (0.01 to 10,000 Gbit/s, 20 points per decade)
/// at which `gc` no longer reaches `target` sooner than the faster of `dense`.
fn break_even(
    a: &StudyArgs,
    params: u64,
    target: f64,
    gc: &MethodRun,
    dense: &[&MethodRun],
) -> Result<Option<f64>, CliError> {
    for g in break_even_grid() {
        let link = Link::gbit(a.alpha_us * 1e-6, g).map_err(|e| CliError::Usage(e.to_string()))?;
        let Some(t_gc) = gc.time_to(&link, params, target)? else {
            return Ok(None);
        };
        let mut best: Option<f64> = None;
        for d in dense {
            if let Some(t) = d.time_to(&link, params, target)? {
                best = Some(best.map_or(t, |b: f64| b.min(t)));
            }
        }
        let Some(best) = best else {
            return Ok(None);
        };
        if t_gc >= best {
            return Ok(Some(g));
        }
    }
    Ok(None)
}

/// The bandwidth grid of the break-even searches: 0.01 to 10,000 Gbit/s, 20 points per
/// decade.
fn break_even_grid() -> impl Iterator<Item = f64> {
    (0..=120).map(|i| 10f64.powf(-2.0 + i as f64 / 20.0))
}

/// The smallest bandwidth of [`break_even_grid`] at which `gc`'s mean modeled round is no
/// longer shorter than the faster of `dense`.
fn step_break_even(
    a: &StudyArgs,
    params: u64,
    gc: &MethodRun,
    dense: &[&MethodRun],
) -> Result<Option<f64>, CliError> {
    let mean = |m: &MethodRun, link: &Link| -> Result<f64, CliError> {
        let t = m.step_times(link, params)?;
        Ok(t.iter().sum::<f64>() / t.len().max(1) as f64)
    };
    if dense.is_empty() || gc.rounds.is_empty() {
        return Ok(None);
    }
    for g in break_even_grid() {
        let link = Link::gbit(a.alpha_us * 1e-6, g).map_err(|e| CliError::Usage(e.to_string()))?;
        let t_gc = mean(gc, &link)?;
        let mut best = f64::INFINITY;
        for d in dense {
            best = best.min(mean(d, &link)?);
        }
        if t_gc >= best {
            return Ok(Some(g));
        }
    }
    Ok(None)
}

fn finish_config(a: &StudyArgs, links: &[Link], c: &mut ConfigResult) -> Result<(), CliError> {
    let reference = c
        .methods
        .iter()
        .find(|m| m.kind == Some(Method::DenseFp32))
        .map(|m| m.final_accuracy)
        .unwrap_or_else(|| {
            c.methods
                .iter()
                .map(|m| m.final_accuracy)
                .fold(0.0, f64::max)
        });
    c.target = reference - a.target_drop / 100.0;
    for i in 0..c.methods.len() {
        let mut times = Vec::new();
        for l in links {
            times.push(c.methods[i].time_to(l, c.params, c.target)?);
        }
        c.methods[i].time_to_target_s = times;
    }
    let dense: Vec<&MethodRun> = c
        .methods
        .iter()
        .filter(|m| m.kind.and_then(Method::precision).is_some())
        .collect();
    let mut even = Vec::new();
    for m in c
        .methods
        .iter()
        .filter(|m| matches!(m.kind, Some(Method::Gradcast(_))))
    {
        even.push((
            m.method.clone(),
            break_even(a, c.params, c.target, m, &dense)?,
        ));
    }
    c.break_even_gbit = even;
    let mut step = Vec::new();
    for m in c
        .methods
        .iter()
        .filter(|m| matches!(m.kind, Some(Method::Gradcast(_))))
    {
        step.push((m.method.clone(), step_break_even(a, c.params, m, &dense)?));
    }
    c.step_break_even_gbit = step;
    Ok(())
}

/// `gradcast study`.
///
/// # Errors
/// Usage, data, training and output errors.
pub fn run(args: &StudyArgs) -> Result<(), CliError> {
    let a = args.effective();
    a.validate()?;
    let links = links(&a)?;
    let mut split = load_data(&a.data, a.seed)?;
    truncate(&mut split.train, a.train_limit);
    truncate(&mut split.test, a.test_limit);
    let (input, classes) = (split.train.dim, split.train.classes);
    for &m in &a.models {
        a.spec(m)
            .check(input, classes)
            .map_err(|e| CliError::Usage(format!("--models {}: {e}", m.name())))?;
    }
    std::fs::create_dir_all(&a.out).map_err(|source| CliError::Io {
        action: "create directory",
        path: a.out.clone(),
        source,
    })?;
    let say = |s: String| {
        if !a.json {
            eprintln!("{s}");
        }
    };
    let head_model = a.models[0];
    let head_p = *a.workers.iter().max().unwrap_or(&1);

    // The learning rate of each method: the best final accuracy on the headline configuration.
    let mut best: Vec<(f64, f64)> = vec![(a.lr[0], f64::NEG_INFINITY); a.methods.len()];
    let mut sweep = Vec::new();
    let mut sweep_train_samples = 0;
    if a.lr.len() > 1 {
        let sweep_train = subset(&split.train, a.sweep_train_limit);
        sweep_train_samples = sweep_train.len();
        for &lr in &a.lr {
            say(format!(
                "sweep: {} P = {head_p} lr {lr}, one epoch of {} samples",
                head_model.name(),
                sweep_train.len()
            ));
            let data = (&sweep_train, &split.test);
            let runs = train_methods(&a, data, 1, head_model, head_p, a.seed, lr, &a.methods)?;
            for (b, r) in best.iter_mut().zip(&runs) {
                say(format!("  {} {:.2}%", r.method, 100.0 * r.final_accuracy));
                sweep.push((r.method.clone(), lr, r.final_accuracy));
                if r.final_accuracy > b.1 {
                    *b = (lr, r.final_accuracy);
                }
            }
        }
    }
    let lrs: Vec<f64> = best.iter().map(|b| b.0).collect();

    let mut configs = Vec::new();
    let cnn_train = match a.cnn_train_limit {
        0 => None,
        n if n < split.train.len() => Some(subset(&split.train, n)),
        _ => None,
    };
    for &model in &a.models {
        let spec = a.spec(model);
        let train = match (model, &cnn_train) {
            (StudyModel::Cnn, Some(t)) => t,
            _ => &split.train,
        };
        let params = spec.param_count(input, classes).ok_or_else(|| {
            CliError::Usage(format!(
                "--models {}: the parameter count overflows",
                model.name()
            ))
        })?;
        for &p in &a.workers {
            let seeds = if model == head_model && p == head_p {
                a.seeds
            } else {
                1
            };
            for seed in a.seed..a.seed + seeds {
                say(format!("{} P = {p} seed {seed}", model.name()));
                let mut methods = Vec::new();
                // One job per distinct learning rate, methods in their given order.
                let mut distinct: Vec<f64> = Vec::new();
                for &l in &lrs {
                    if !distinct.contains(&l) {
                        distinct.push(l);
                    }
                }
                let mut runs: Vec<Option<MethodRun>> = vec![None; a.methods.len()];
                for &l in &distinct {
                    let idx: Vec<usize> = (0..a.methods.len()).filter(|&i| lrs[i] == l).collect();
                    let ms: Vec<Method> = idx.iter().map(|&i| a.methods[i]).collect();
                    for (i, r) in idx.into_iter().zip(train_methods(
                        &a,
                        (train, &split.test),
                        a.epochs,
                        model,
                        p,
                        seed,
                        l,
                        &ms,
                    )?) {
                        runs[i] = Some(r);
                    }
                }
                methods.extend(runs.into_iter().flatten());
                let mut c = ConfigResult {
                    model: model.name().into(),
                    shape: spec.describe(input, classes),
                    params,
                    workers: p,
                    seed,
                    train_samples: train.len(),
                    rounds: rounds_per_epoch(train.len(), a.batch) * a.epochs as u64,
                    target: 0.0,
                    methods,
                    break_even_gbit: Vec::new(),
                    step_break_even_gbit: Vec::new(),
                };
                finish_config(&a, &links, &mut c)?;
                configs.push(c);
            }
        }
    }
    let report = Report {
        data: (split.name.clone(), split.train.len(), split.test.len()),
        alpha_s: a.alpha_us * 1e-6,
        gbit: a.gbit.clone(),
        batch: a.batch,
        epochs: a.epochs,
        lr: a
            .methods
            .iter()
            .zip(&lrs)
            .map(|(m, &l)| (m.to_string(), l))
            .collect(),
        sweep,
        sweep_train_samples,
        configs,
    };
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| CliError::Train(format!("cannot serialise the study: {e}")))?;
    crate::error::write_file(&a.out.join("study.json"), json.as_bytes())?;
    let md = markdown(&report);
    crate::error::write_file(&a.out.join("study.md"), md.as_bytes())?;
    let mut drawn = Vec::new();
    for c in report.configs.iter().filter(|c| c.seed == a.seed) {
        let path = a.out.join(format!("study-{}-p{}.png", c.model, c.workers));
        draw(&path, &report, c, &links)?;
        drawn.push(path);
    }
    if a.json {
        println!("{json}");
    } else {
        println!("{md}");
        println!("wrote {} files under {}", drawn.len() + 2, a.out.display());
    }
    Ok(())
}

/// The first `n` samples of `d` (all of them if it has fewer), copying only those.
fn subset(d: &Dataset, n: usize) -> Dataset {
    let first: Vec<usize> = (0..n.min(d.len())).collect();
    d.select(&first)
}

fn truncate(d: &mut Dataset, limit: Option<usize>) {
    if let Some(n) = limit
        && n < d.len()
    {
        d.features.truncate(n * d.dim);
        d.labels.truncate(n);
    }
}

fn fmt_time(t: Option<f64>) -> String {
    match t {
        Some(t) if t < 1.0 => format!("{:.0} ms", t * 1e3),
        Some(t) => format!("{t:.2} s"),
        None => "not reached".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        (None, Some(_)) => "dense never".into(),
        _ => "-".into(),
    }
}

/// The report's tables in Markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let bw: Vec<String> = r.gbit.iter().map(|g| format!("{g} Gbit/s")).collect();
    s.push_str(&format!(
        "Data {} ({} train / {} test), batch {}, {} epochs, alpha {:.1} us; learning rates: {}\n\n",
        r.data.0,
        r.data.1,
        r.data.2,
        r.batch,
        r.epochs,
        r.alpha_s * 1e6,
        r.lr.iter()
            .map(|(m, l)| format!("{m} {l}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !r.sweep.is_empty() {
        let mut lrs: Vec<f64> = Vec::new();
        for (_, l, _) in &r.sweep {
            if !lrs.contains(l) {
                lrs.push(*l);
            }
        }
        s.push_str(&format!(
            "### Learning-rate sweep: final test accuracy, one epoch of {} samples\n\n| method |",
            r.sweep_train_samples
        ));
        for l in &lrs {
            s.push_str(&format!(" lr {l} |"));
        }
        s.push('\n');
        s.push_str(&"|---".repeat(1 + lrs.len()));
        s.push_str("|\n");
        for (m, _) in &r.lr {
            s.push_str(&format!("| {m} |"));
            for l in &lrs {
                let acc = r.sweep.iter().find(|(x, y, _)| x == m && y == l);
                match acc {
                    Some((_, _, a)) => s.push_str(&format!(" {:.2}% |", 100.0 * a)),
                    None => s.push_str(" - |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    for c in &r.configs {
        s.push_str(&format!(
            "### {} ({} parameters), P = {}, seed {}, {} training samples, {} rounds; target {:.2}%\n\n",
            c.shape,
            c.params,
            c.workers,
            c.seed,
            c.train_samples,
            c.rounds,
            100.0 * c.target
        ));
        s.push_str("| method | final acc. | bytes/worker/round | fwd+bwd ms | enc+dec ms |");
        for b in &bw {
            s.push_str(&format!(" to target, {b} | vs fp32 | vs fp16 |"));
        }
        s.push('\n');
        s.push_str(&"|---".repeat(5 + 3 * bw.len()));
        s.push_str("|\n");
        let find = |k: Method| c.methods.iter().find(|m| m.kind == Some(k));
        let fp32 = find(Method::DenseFp32);
        let fp16 = find(Method::DenseFp16);
        for m in &c.methods {
            // A dense method's reduction is part of the modeled all-reduce, not charged apart.
            let codec = match m.kind.and_then(Method::precision) {
                Some(_) => "-".to_string(),
                None => format!("{:.2}", 1e3 * (m.mean_round_s[2] + m.mean_round_s[3])),
            };
            s.push_str(&format!(
                "| {} | {:.2}% | {:.0} | {:.1} | {} |",
                m.method,
                100.0 * m.final_accuracy,
                m.mean_message_bytes,
                1e3 * (m.mean_round_s[0] + m.mean_round_s[1]),
                codec,
            ));
            for (i, t) in m.time_to_target_s.iter().enumerate() {
                let d32 = fp32.and_then(|d| d.time_to_target_s.get(i).copied().flatten());
                let d16 = fp16.and_then(|d| d.time_to_target_s.get(i).copied().flatten());
                s.push_str(&format!(
                    " {} | {} | {} |",
                    fmt_time(*t),
                    ratio(d32, *t),
                    ratio(d16, *t)
                ));
            }
            s.push('\n');
        }
        for ((m, g), (_, gs)) in c.break_even_gbit.iter().zip(&c.step_break_even_gbit) {
            s.push_str(&format!(
                "\n{m} stops paying above: {}; per round (its mean round no longer shorter than the faster dense one's): {}",
                match g {
                    Some(g) => format!("{g:.3} Gbit/s"),
                    None => "not within 0.01-10,000 Gbit/s (it pays throughout, or a run missed the target)".into(),
                },
                match gs {
                    Some(g) => format!("{g:.3} Gbit/s"),
                    None => "not within 0.01-10,000 Gbit/s".into(),
                }
            ));
        }
        s.push_str("\n\n");
    }
    s.push_str(&seed_summary(r));
    s
}

/// For every (model, P) trained with several seeds: each method's final accuracy and its
/// speed-up in time to target over dense fp32 and dense fp16 at each bandwidth, as the mean
/// and the range over the seeds (a seed where either method missed the target is left out
/// of that cell, and the cell says over how many seeds it is).
fn seed_summary(r: &Report) -> String {
    let mut s = String::new();
    let mut groups: Vec<(&str, usize)> = Vec::new();
    for c in &r.configs {
        if !groups.contains(&(c.model.as_str(), c.workers)) {
            groups.push((c.model.as_str(), c.workers));
        }
    }
    let stat = |v: &[f64], digits: usize, unit: &str| -> String {
        if v.is_empty() {
            return "-".into();
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{mean:.digits$}{unit} ({lo:.digits$}-{hi:.digits$})")
    };
    for (model, p) in groups {
        let cs: Vec<&ConfigResult> = r
            .configs
            .iter()
            .filter(|c| c.model == model && c.workers == p)
            .collect();
        if cs.len() < 2 {
            continue;
        }
        s.push_str(&format!(
            "### {model}, P = {p}: mean (range) over {} seeds\n\n| method | final acc. % |",
            cs.len()
        ));
        for g in &r.gbit {
            s.push_str(&format!(" vs fp32, {g} Gbit/s | vs fp16, {g} Gbit/s |"));
        }
        s.push('\n');
        s.push_str(&"|---".repeat(2 + 2 * r.gbit.len()));
        s.push_str("|\n");
        for m in &cs[0].methods {
            let runs: Vec<(&ConfigResult, &MethodRun)> = cs
                .iter()
                .filter_map(|c| {
                    c.methods
                        .iter()
                        .find(|x| x.method == m.method)
                        .map(|x| (*c, x))
                })
                .collect();
            let acc: Vec<f64> = runs.iter().map(|(_, x)| 100.0 * x.final_accuracy).collect();
            s.push_str(&format!("| {} | {} |", m.method, stat(&acc, 2, "")));
            for i in 0..r.gbit.len() {
                for base in [Method::DenseFp32, Method::DenseFp16] {
                    let v: Vec<f64> = runs
                        .iter()
                        .filter_map(|(c, x)| {
                            let b = c.methods.iter().find(|d| d.kind == Some(base))?;
                            let tb = b.time_to_target_s.get(i).copied().flatten()?;
                            let tx = x.time_to_target_s.get(i).copied().flatten()?;
                            (tx > 0.0).then(|| tb / tx)
                        })
                        .collect();
                    let cell = stat(&v, 2, "x");
                    if v.is_empty() || v.len() == runs.len() {
                        s.push_str(&format!(" {cell} |"));
                    } else {
                        s.push_str(&format!(" {cell}, {} of {} seeds |", v.len(), runs.len()));
                    }
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn perr<E: fmt::Display>(e: E) -> CliError {
    CliError::Plot(e.to_string())
}

/// One PNG: test accuracy against modeled time (log scale), one panel per bandwidth.
fn draw(
    path: &std::path::Path,
    r: &Report,
    c: &ConfigResult,
    links: &[Link],
) -> Result<(), CliError> {
    crate::plot::register_font()?;
    let family = crate::plot::FAMILY;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let title = format!(
        "{} on {}, P = {}: test accuracy against modeled time (target {:.1}%)",
        c.shape,
        r.data.0,
        c.workers,
        100.0 * c.target
    );
    let root = root
        .titled(&title, (family, 22).into_font())
        .map_err(perr)?;
    let cols = links.len().clamp(1, 2);
    let rows = links.len().div_ceil(cols);
    let panels = root.split_evenly((rows, cols));
    for (panel, (link, g)) in panels.iter().zip(links.iter().zip(&r.gbit)) {
        let curves: Vec<Vec<(f64, f64)>> = c
            .methods
            .iter()
            .map(|m| {
                m.curve(link, c.params).map(|v| {
                    v.into_iter()
                        .filter(|p| p.0 > 0.0 && p.0.is_finite())
                        .map(|(t, a)| (t, 100.0 * a))
                        .collect()
                })
            })
            .collect::<Result<_, _>>()?;
        let all = curves.iter().flatten();
        let tmin = all.clone().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let tmax = all.clone().map(|p| p.0).fold(0.0, f64::max);
        let lo = all.map(|p| p.1).fold(100.0f64, f64::min);
        if !(tmin.is_finite() && tmax > 0.0) {
            continue;
        }
        let lo = (lo - 2.0).clamp(0.0, 98.0).floor();
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{g} Gbit/s"), (family, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((tmin * 0.8..tmax * 1.25).log_scale(), lo..100.0)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("modeled wall-clock time (s)")
            .x_labels(8)
            .x_label_formatter(&|v| {
                if *v >= 10.0 {
                    format!("{v:.0}")
                } else if *v >= 1.0 {
                    format!("{v:.1}")
                } else {
                    format!("{v:.2}")
                }
            })
            .light_line_style(BLACK.mix(0.05))
            .y_desc("test accuracy (%)")
            .label_style((family, 13))
            .axis_desc_style((family, 14))
            .draw()
            .map_err(perr)?;
        for (i, (m, pts)) in c.methods.iter().zip(curves).enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(perr)?
                .label(m.method.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .draw_series(LineSeries::new(
                vec![
                    (tmin * 0.8, 100.0 * c.target),
                    (tmax * 1.25, 100.0 * c.target),
                ],
                BLACK.mix(0.4),
            ))
            .map_err(perr)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((family, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: Method, rounds: usize, fwd: f64, bytes: u64, evals: Vec<(u64, f64)>) -> MethodRun {
        MethodRun {
            method: kind.to_string(),
            kind: Some(kind),
            lr: 0.1,
            final_accuracy: evals.last().map_or(0.0, |e| e.1),
            bytes: 0,
            replicas_identical: true,
            evals,
            mean_round_s: [0.0; 4],
            mean_message_bytes: 0.0,
            time_to_target_s: Vec::new(),
            rounds: vec![
                RoundCost {
                    compute: vec![
                        netmodel::Compute {
                            forward_s: fwd,
                            backward_s: fwd
                        };
                        4
                    ],
                    messages: vec![
                        netmodel::Message {
                            encode_s: 0.0,
                            decode_s: 0.0,
                            bytes
                        };
                        4
                    ],
                    other_s: 0.0,
                };
                rounds
            ],
        }
    }

    #[test]
    fn methods_parse_and_print_back() {
        for s in [
            "dense-fp32",
            "dense-fp16",
            "gradcast-adaptive",
            "gradcast-fixed:0.001",
            "gradcast-budget:4096",
        ] {
            let m: Method = s.parse().unwrap();
            assert_eq!(m.to_string(), s);
        }
        assert!("gradcast-fixed:-1".parse::<Method>().is_err());
        assert!("sparse".parse::<Method>().is_err());
    }

    #[test]
    fn time_to_target_is_the_modeled_time_at_the_first_evaluation_reaching_it() {
        let link = Link::gbit(50e-6, 1.0).unwrap();
        let params = 1_000_000;
        let gc = run(
            Method::Gradcast(Threshold::Adaptive),
            10,
            0.01,
            1000,
            vec![(5, 0.5), (10, 0.8)],
        );
        let steps = gc.step_times(&link, params).unwrap();
        let expect =
            netmodel::gradcast_step_s(&link, &gc.rounds[0].compute, &gc.rounds[0].messages)
                .unwrap();
        assert!((steps[0] - expect).abs() < 1e-15);
        let t = gc.time_to(&link, params, 0.7).unwrap().unwrap();
        assert!((t - 10.0 * expect).abs() < 1e-12);
        assert_eq!(gc.time_to(&link, params, 0.9).unwrap(), None);
        // The dense model charges the all-reduce of 4 N bytes beyond the backward pass.
        let d = run(Method::DenseFp32, 10, 0.01, 0, vec![(10, 0.8)]);
        let ds = d.step_times(&link, params).unwrap()[0];
        let want = netmodel::dense_step_s(&link, &d.rounds[0].compute, 4 * params).unwrap();
        assert!((ds - want).abs() < 1e-15);
    }

    #[test]
    fn break_even_lies_where_the_dense_all_reduce_hides_under_compute() {
        let a = StudyArgs {
            data: "digits".into(),
            train_limit: None,
            cnn_train_limit: 0,
            test_limit: None,
            models: vec![StudyModel::Mlp],
            hidden: 8,
            workers: vec![4],
            methods: vec![Method::DenseFp32],
            lr: vec![0.1],
            sweep_train_limit: 8,
            seeds: 1,
            seed: 1,
            epochs: 1,
            batch: 8,
            evals_per_epoch: 1,
            target_drop: 1.0,
            alpha_us: 50.0,
            gbit: vec![1.0],
            quick: false,
            out: PathBuf::new(),
            json: false,
        };
        let params = 1_000_000;
        // Same rounds to target; gradcast pays 10 ms more per round (encode) but sends 1 kB.
        let mut gc = run(
            Method::Gradcast(Threshold::Adaptive),
            10,
            0.01,
            1000,
            vec![(10, 0.8)],
        );
        for r in &mut gc.rounds {
            for m in &mut r.messages {
                m.encode_s = 0.01;
            }
        }
        let d = run(Method::DenseFp32, 10, 0.01, 0, vec![(10, 0.8)]);
        let g = break_even(&a, params, 0.8, &gc, &[&d])
            .unwrap()
            .expect("a crossing");
        // The crossing: 2 (P-1)/P * 4e6 B / B beyond the 10 ms backward equals ~10.4 ms more.
        let link = Link::gbit(50e-6, g).unwrap();
        let t_gc = gc.time_to(&link, params, 0.8).unwrap().unwrap();
        let t_d = d.time_to(&link, params, 0.8).unwrap().unwrap();
        assert!(t_gc >= t_d);
        let below = Link::gbit(50e-6, g / 10f64.powf(0.05)).unwrap();
        assert!(
            gc.time_to(&below, params, 0.8).unwrap().unwrap()
                < d.time_to(&below, params, 0.8).unwrap().unwrap()
        );
        assert!(g > 1.0 && g < 10.0, "{g}");
        // Every round costs the same and both reach the target in the same round, so the
        // bandwidth where a gradcast step stops being shorter is the same grid point.
        assert_eq!(step_break_even(&a, params, &gc, &[&d]).unwrap(), Some(g));
        // Without a dense baseline there is nothing to break even with.
        assert_eq!(step_break_even(&a, params, &gc, &[]).unwrap(), None);
    }
}

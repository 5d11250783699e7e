//! Command-line parsing (clap) and the dispatch of the commands. `gradcast train` lives in
//! [`crate::train`] (on gradcast-candle's driver), its printed report in [`crate::report`].

use crate::backends::BackendChoice;
use crate::data;
use crate::error::CliError;
use clap::{Args, Parser, Subcommand, ValueEnum};
use gradcast_candle::Threshold;
use gradcast_candle::optim::{AdamWParams, OptimizerSpec};
use std::path::PathBuf;

/// The default threshold policy of `gradcast train` (see the crate README for the tuning).
pub const DEFAULT_THRESHOLD: &str = "fixed:0.2";

/// gradcast: communication-efficient data-parallel training by threshold encoding with error
/// feedback.
#[derive(Debug, Parser)]
#[command(name = "gradcast", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a classifier with P workers, a dense baseline vs gradcast, side by side (the
    /// main job).
    Train(TrainArgs),
    /// Encode a raw little-endian f32 file (a residual) into a message; optionally write what
    /// stays in the residual.
    Encode(crate::tools::EncodeArgs),
    /// Decode a message (or a packet of messages) into a raw little-endian f32 file.
    Decode(crate::tools::DecodeArgs),
    /// Validate a message (or a packet) and print its header and statistics.
    Inspect(crate::tools::InspectArgs),
    /// Measure encode and decode throughput of every backend compiled in, against the read
    /// bandwidth of the same buffer measured in the same run.
    Bench(crate::bench::BenchArgs),
    /// Time to accuracy of dense fp32, dense fp16 and gradcast under a network cost model
    /// (`docs/RESULTS.md`): a grid of models, worker counts and methods, one training run
    /// serving every bandwidth.
    Study(crate::study::StudyArgs),
}

/// How contributions are combined (`--aggregate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AggregateArg {
    /// The mean of the workers' gradients.
    Mean,
    /// Their sum.
    Sum,
}

impl AggregateArg {
    /// `"mean"` or `"sum"`.
    pub fn name(self) -> &'static str {
        gradcast_candle::Aggregate::from(self).name()
    }
}

impl From<AggregateArg> for gradcast_candle::Aggregate {
    fn from(a: AggregateArg) -> Self {
        match a {
            AggregateArg::Mean => gradcast_candle::Aggregate::Mean,
            AggregateArg::Sum => gradcast_candle::Aggregate::Sum,
        }
    }
}

/// The classifier (`--model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// An MLP with `--hidden` layers.
    Mlp,
    /// A small convnet for square images (28x28 for MNIST).
    Cnn,
}

impl ModelArg {
    /// `"mlp"` or `"cnn"`.
    pub fn name(self) -> &'static str {
        match self {
            ModelArg::Mlp => "mlp",
            ModelArg::Cnn => "cnn",
        }
    }
}

/// The optimizer of every replica (`--optimizer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Plain SGD.
    Sgd,
    /// AdamW with candle-nn's defaults besides `--lr`.
    Adamw,
}

impl OptimizerArg {
    /// The optimizer with learning rate `lr`.
    pub fn spec(self, lr: f64) -> OptimizerSpec {
        match self {
            OptimizerArg::Sgd => OptimizerSpec::Sgd { lr },
            OptimizerArg::Adamw => OptimizerSpec::AdamW(AdamWParams {
                lr,
                ..AdamWParams::default()
            }),
        }
    }
}

/// The dense baseline (`--baseline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BaselineArg {
    /// fp32 gradients, all-reduced.
    DenseFp32,
    /// Gradients rounded to fp16.
    DenseFp16,
}

impl From<BaselineArg> for gradcast_candle::Exchange {
    fn from(b: BaselineArg) -> Self {
        match b {
            BaselineArg::DenseFp32 => gradcast_candle::Exchange::DenseF32,
            BaselineArg::DenseFp16 => gradcast_candle::Exchange::DenseF16,
        }
    }
}

/// How gradcast cuts the vector into segments (`--segments`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SegmentsArg {
    /// One segment (own threshold state, own header) per variable.
    Variable,
    /// One segment for the whole vector.
    Whole,
}

impl SegmentsArg {
    /// `"variable"` or `"whole"`.
    pub fn name(self) -> &'static str {
        gradcast_candle::Segments::from(self).name()
    }
}

impl From<SegmentsArg> for gradcast_candle::Segments {
    fn from(s: SegmentsArg) -> Self {
        match s {
            SegmentsArg::Variable => gradcast_candle::Segments::PerVariable,
            SegmentsArg::Whole => gradcast_candle::Segments::Whole,
        }
    }
}

/// What travels (`--payload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PayloadArg {
    /// Gradients; every replica steps the same optimizer.
    Gradients,
    /// Each worker's post-optimizer update (DL4J's way).
    Updates,
}

impl PayloadArg {
    /// `"gradients"` or `"updates"`.
    pub fn name(self) -> &'static str {
        match self {
            PayloadArg::Gradients => "gradients",
            PayloadArg::Updates => "updates",
        }
    }
}

impl From<PayloadArg> for gradcast_candle::Payload {
    fn from(p: PayloadArg) -> Self {
        match p {
            PayloadArg::Gradients => gradcast_candle::Payload::Gradients,
            PayloadArg::Updates => gradcast_candle::Payload::Updates,
        }
    }
}

/// How each process computes its workers' gradients (`--compute`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ComputeArg {
    /// Several at once on a thread pool.
    Parallel,
    /// One at a time, each timed alone.
    Sequential,
}

impl From<ComputeArg> for gradcast_candle::driver::Compute {
    fn from(c: ComputeArg) -> Self {
        match c {
            ComputeArg::Parallel => gradcast_candle::driver::Compute::Parallel,
            ComputeArg::Sequential => gradcast_candle::driver::Compute::Sequential,
        }
    }
}

/// Options of `gradcast train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Number of data-parallel workers P (per rank with `--transport mpi`).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Backend gradcast encodes and decodes on: cpu, opencl or cuda (those compiled in).
    #[arg(long, default_value = "cpu", value_parser = parse_backend)]
    pub backend: BackendChoice,
    /// Threshold policy on the gradients: fixed:TAU, adaptive, target:S (fraction sent) or
    /// budget:BYTES (per worker and round).
    #[arg(long, default_value = DEFAULT_THRESHOLD, value_parser = parse_threshold)]
    pub threshold: Threshold,
    /// How gradcast cuts the parameters into segments (one threshold state and one
    /// 48-byte message header each).
    #[arg(long, value_enum, default_value_t = SegmentsArg::Whole)]
    pub segments: SegmentsArg,
    /// Passes over the training set.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Global batch size (split into one shard per worker).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Learning rate of every replica's optimizer.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// The optimizer of every replica.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    pub optimizer: OptimizerArg,
    /// Seed of the initial weights, the train/test split and the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The classifier.
    #[arg(long, value_enum, default_value_t = ModelArg::Mlp)]
    pub model: ModelArg,
    /// Hidden layer widths of the MLP, comma-separated (`1024,1024`).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub hidden: Vec<usize>,
    /// How every replica combines the round's contributions.
    #[arg(long, value_enum, default_value_t = AggregateArg::Mean)]
    pub aggregate: AggregateArg,
    /// What travels: gradients (every replica steps the same optimizer) or each worker's
    /// post-optimizer update.
    #[arg(long, value_enum, default_value_t = PayloadArg::Gradients)]
    pub payload: PayloadArg,
    /// The dense baseline gradcast is compared with.
    #[arg(long, value_enum, default_value_t = BaselineArg::DenseFp32)]
    pub baseline: BaselineArg,
    /// How each process computes its workers' gradients: in parallel, or one at a time
    /// (each worker's forward and backward times then are its own).
    #[arg(long, value_enum, default_value_t = ComputeArg::Parallel)]
    pub compute: ComputeArg,
    /// Data set: `digits` (UCI digits shipped in smartcore), `fashion-mnist` (Debian's
    /// `dataset-fashion-mnist` package) or `idx:DIR` (MNIST-format files, plain or gzipped).
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// Directory for the plot (train.png) and the summary (summary.json).
    #[arg(long, default_value = "gradcast-out")]
    pub out: PathBuf,
    /// Print the summary as one JSON object on stdout (no other output there).
    #[arg(long)]
    pub json: bool,
    /// How the workers' gradients travel: `local` (workers of this process) or `mpi` (ranks
    /// under mpirun, `--workers` per rank; needs a build with `--features mpi`).
    #[arg(long, value_enum, default_value_t = crate::mpi::TransportArg::Local)]
    pub transport: crate::mpi::TransportArg,
    /// Write a checkpoint of the whole job (both runs: parameters, optimizer state, residuals,
    /// threshold state, data order, counters) every K rounds into --checkpoint-dir; 0: never.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub checkpoint_every: u64,
    /// Directory of the checkpoints (one file per rank; the previous one is deleted once
    /// every rank has written the next). Defaults to the --resume directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue the job from the newest checkpoint in DIR, which must have been written by
    /// the same command (same options, data and ranks): the result is bit-identical to an
    /// uninterrupted run.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
}

fn usage_message(e: CliError) -> String {
    match e {
        CliError::Usage(m) | CliError::Backend(m) => m,
        other => other.to_string(),
    }
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse().map_err(usage_message)
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    s.parse().map_err(|e| match e {
        gradcast_candle::Error::Config(m) => m,
        other => other.to_string(),
    })
}

/// Runs a parsed command.
///
/// # Errors
/// The command's error.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Train(a) => match a.transport {
            crate::mpi::TransportArg::Local => crate::train::run_local(&a),
            crate::mpi::TransportArg::Mpi => crate::mpi::train(&a),
        },
        Command::Encode(a) => crate::tools::encode(&a),
        Command::Decode(a) => crate::tools::decode(&a),
        Command::Inspect(a) => crate::tools::inspect(&a),
        Command::Bench(a) => crate::bench::run(&a),
        Command::Study(a) => crate::study::run(&a),
    }
}

/// Loads the data set named by `--data`.
///
/// # Errors
/// [`CliError::Usage`] for an unknown source; the loader's errors.
pub fn load_data(spec: &str, seed: u64) -> Result<data::Split, CliError> {
    if spec == "digits" {
        return Ok(data::digits_split(seed)?);
    }
    if spec == "fashion-mnist" {
        return Ok(data::fashion_mnist()?);
    }
    if let Some(dir) = spec.strip_prefix("idx:") {
        if dir.is_empty() {
            return Err(CliError::Usage("--data idx:DIR needs a directory".into()));
        }
        return Ok(data::load_idx_dir(std::path::Path::new(dir))?);
    }
    Err(CliError::Usage(format!(
        "--data {spec:?}: expected `digits`, `fashion-mnist` or `idx:DIR`"
    )))
}

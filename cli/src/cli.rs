//! Command-line parsing (clap) and the commands' human and JSON output.

use crate::backends::BackendChoice;
use crate::data;
use crate::error::CliError;
use crate::sharing::Aggregate;
use crate::threshold::ThresholdSpec;
use crate::train::{self, EpochRecord, Observer, Summary, TrainConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The default threshold policy of `gradcast train` (see the crate README for the tuning).
pub const DEFAULT_THRESHOLD: &str = "fixed:0.01";

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
    /// Train an MLP with P workers, dense fp32 updates vs gradcast, side by side (the main job).
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
}

/// How contributions are combined (`--aggregate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AggregateArg {
    /// params -= (1/P) * sum of contributions.
    Mean,
    /// params -= sum of contributions.
    Sum,
}

/// Options of `gradcast train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Number of data-parallel workers P.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Backend gradcast encodes and decodes on: cpu, opencl or cuda (those compiled in).
    #[arg(long, default_value = "cpu", value_parser = parse_backend)]
    pub backend: BackendChoice,
    /// Threshold policy: fixed:TAU, adaptive, target:S (fraction sent) or budget:BYTES
    /// (per worker and round).
    #[arg(long, default_value = DEFAULT_THRESHOLD, value_parser = parse_threshold)]
    pub threshold: ThresholdSpec,
    /// Passes over the training set.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Global batch size (split into one shard per worker).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Learning rate of each worker's SGD step (update = lr * gradient).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// Seed of the initial weights, the train/test split and the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Hidden units of the MLP.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// How every replica combines the round's contributions.
    #[arg(long, value_enum, default_value_t = AggregateArg::Mean)]
    pub aggregate: AggregateArg,
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
    /// How the workers' updates travel: `local` (threads of this process) or `mpi` (ranks
    /// under mpirun, `--workers` per rank; needs a build with `--features mpi`).
    #[arg(long, value_enum, default_value_t = crate::mpi::TransportArg::Local)]
    pub transport: crate::mpi::TransportArg,
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

fn parse_threshold(s: &str) -> Result<ThresholdSpec, String> {
    s.parse().map_err(usage_message)
}

/// Runs a parsed command.
///
/// # Errors
/// The command's error.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Train(a) => run_train(&a),
        Command::Encode(a) => crate::tools::encode(&a),
        Command::Decode(a) => crate::tools::decode(&a),
        Command::Inspect(a) => crate::tools::inspect(&a),
        Command::Bench(a) => crate::bench::run(&a),
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

/// Human output: per-epoch lines and a progress bar on a terminal.
struct Human {
    bar: Option<ProgressBar>,
    print: bool,
}

impl Human {
    fn line(&self, s: &str) {
        if !self.print {
            return;
        }
        match &self.bar {
            Some(b) => b.suspend(|| println!("{s}")),
            None => println!("{s}"),
        }
    }
}

impl Observer for Human {
    fn round_done(&mut self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn epoch_done(&mut self, d: &EpochRecord, g: &EpochRecord) {
        for l in epoch_lines(d, g) {
            self.line(&l);
        }
    }
}

/// The heading of the per-epoch table (in-process and `--transport mpi` runs).
pub fn epoch_heading() -> String {
    format!(
        "{:>5}  {:<8} {:>7} {:>9} {:>10} {:>9} {:>9}  {}",
        "epoch", "run", "loss", "test acc", "bytes", "tau", "density", "sparse/bitmap/dense"
    )
}

/// One epoch's two table rows, dense then gradcast (in-process and `--transport mpi` runs).
pub fn epoch_lines(d: &EpochRecord, g: &EpochRecord) -> [String; 2] {
    let mix = g.encodings.unwrap_or_default();
    [
        format!(
            "{:>5}  {:<8} {:>7.4} {:>8.2}% {:>10}",
            d.epoch,
            "dense",
            d.loss,
            100.0 * d.test_accuracy,
            human_bytes(d.bytes)
        ),
        format!(
            "{:>5}  {:<8} {:>7.4} {:>8.2}% {:>10} {:>9.2e} {:>8.3}%  {}/{}/{}",
            "",
            "gradcast",
            g.loss,
            100.0 * g.test_accuracy,
            human_bytes(g.bytes),
            g.tau.unwrap_or(0.0),
            100.0 * g.density.unwrap_or(0.0),
            mix.sparse,
            mix.bitmap,
            mix.dense
        ),
    ]
}

/// Bytes with a decimal unit (B, kB, MB, GB).
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1e3 {
        format!("{b} B")
    } else if b < 1e6 {
        format!("{:.1} kB", b / 1e3)
    } else if b < 1e9 {
        format!("{:.2} MB", b / 1e6)
    } else {
        format!("{:.2} GB", b / 1e9)
    }
}

fn run_train(a: &TrainArgs) -> Result<(), CliError> {
    if a.transport == crate::mpi::TransportArg::Mpi {
        return crate::mpi::train(a);
    }
    let cfg = TrainConfig {
        workers: a.workers,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        hidden: a.hidden,
        threshold: a.threshold,
        aggregate: match a.aggregate {
            AggregateArg::Mean => Aggregate::Mean,
            AggregateArg::Sum => Aggregate::Sum,
        },
    };
    cfg.validate()?;
    let split = load_data(&a.data, a.seed)?;
    let n = cfg
        .model(split.train.dim, split.train.classes)?
        .num_params();
    std::fs::create_dir_all(&a.out).map_err(|source| CliError::Io {
        action: "create directory",
        path: a.out.clone(),
        source,
    })?;
    let rounds = train::rounds_per_epoch(split.train.len(), cfg.batch) * cfg.epochs as u64 * 2;
    let bar = (!a.json && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(rounds);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} rounds  {elapsed} (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let mut human = Human {
        bar,
        print: !a.json,
    };
    human.line(&format!(
        "gradcast train: {} ({} train / {} test samples, {} features), MLP {}-{}-{} \
         ({n} parameters)",
        split.name,
        split.train.len(),
        split.test.len(),
        split.train.dim,
        split.train.dim,
        cfg.hidden,
        split.train.classes
    ));
    human.line(&format!(
        "P = {} workers, batch {}, lr {}, {} epochs, {} of updates, threshold {}, backend {}",
        cfg.workers,
        cfg.batch,
        cfg.lr,
        cfg.epochs,
        cfg.aggregate.name(),
        cfg.threshold,
        a.backend
    ));
    human.line("");
    human.line(&epoch_heading());
    let summary = match a.backend {
        BackendChoice::Cpu => train::train(crate::backends::cpu()?, &cfg, &split, &mut human)?,
        #[cfg(feature = "opencl")]
        BackendChoice::OpenCl => {
            train::train(crate::backends::opencl()?, &cfg, &split, &mut human)?
        }
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => train::train(crate::backends::cuda()?, &cfg, &split, &mut human)?,
        #[allow(unreachable_patterns)]
        other => {
            return Err(CliError::Backend(format!(
                "`{other}` is not compiled into this build"
            )));
        }
    };
    if let Some(b) = &human.bar {
        b.finish_and_clear();
    }
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| CliError::Train(format!("cannot serialise the summary: {e}")))?;
    let summary_path = a.out.join("summary.json");
    crate::error::write_file(&summary_path, json.as_bytes())?;
    let plot_path = a.out.join("train.png");
    crate::plot::draw(&plot_path, &summary)?;
    if a.json {
        println!("{json}");
    } else {
        print_summary(&summary);
        println!(
            "\nwrote {} and {}",
            plot_path.display(),
            summary_path.display()
        );
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    let (d, g) = (&s.dense, &s.gradcast);
    println!();
    println!("{:<24} {:>12} {:>12}", "summary", "dense", "gradcast");
    println!(
        "{:<24} {:>11.2}% {:>11.2}%   (gap {:+.2} pp)",
        "final test accuracy",
        100.0 * d.test_accuracy,
        100.0 * g.test_accuracy,
        s.accuracy_gap_pp
    );
    println!(
        "{:<24} {:>12} {:>12}   (compression {:.0}x)",
        "bytes on the wire",
        human_bytes(d.bytes),
        human_bytes(g.bytes),
        s.compression_ratio
    );
    println!(
        "{:<24} {:>11.2}s {:>11.2}s",
        "wall time", d.seconds, g.seconds
    );
    println!(
        "{:<24} {:>12} {:>12}",
        "replicas bit-identical",
        if d.replicas_identical { "yes" } else { "NO" },
        if g.replicas_identical { "yes" } else { "NO" }
    );
    println!(
        "gradcast time in encode / exchange / decode: {:.3} s / {:.3} s / {:.3} s",
        g.encode_seconds.unwrap_or(0.0),
        g.exchange_seconds.unwrap_or(0.0),
        g.decode_seconds.unwrap_or(0.0)
    );
}

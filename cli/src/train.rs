//! `gradcast train`: the main job on gradcast-candle's training driver.
//!
//! Two runs side by side, same seed, same data order, same shards: a dense baseline
//! (`--baseline dense-fp32|dense-fp16`) and gradcast (`--threshold`), each a run of
//! [`gradcast_candle::driver::Job`], each worker's gradients exchanged through a
//! [`gradcast_candle::Sharing`]. The driver owns the epoch loop; this module turns the
//! options into its configuration, builds the report around it ([`Summary`], the epoch
//! table, the plot) and runs it over any [`Network`]: [`InProcess`] here, MPI from
//! [`crate::mpi`].

use crate::backends::BackendChoice;
use crate::cli::{TrainArgs, load_data};
use crate::data::Split;
use crate::error::CliError;
use crate::report;
use gradcast_candle::driver::{
    EpochRecord, Job, Observer, RoundRecord, RunSummary, TrainConfig, rounds_per_epoch,
};
use gradcast_candle::models::ModelSpec;
use gradcast_candle::network::{InProcess, Network};
use gradcast_candle::{Config, Exchange, GradcastConfig, Payload};
use gradcast_core::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;

/// The most parameters N a model may have: the wire format's element limit.
pub const MAX_PARAMS: u64 = gradcast_core::wire::MAX_ELEMENTS as u64;

/// The most `N x workers`: every worker holds several f32 copies of the parameters (its
/// replica in both runs, gradients, optimizer state, residual, messages), so `2^30` keeps
/// the job near 40 GiB.
pub const MAX_PARAMS_TIMES_WORKERS: u64 = 1 << 30;

/// What `summary.json` says about the configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigInfo {
    /// Workers of the whole job (ranks x workers per rank).
    pub workers: usize,
    /// Workers per process.
    pub workers_per_rank: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Global batch.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// `mlp` or `cnn`.
    pub model: String,
    /// Hidden layer widths of the MLP.
    pub hidden: Vec<usize>,
    /// `sgd` or `adamw`.
    pub optimizer: String,
    /// gradcast's threshold policy.
    pub threshold: String,
    /// `variable` or `whole`.
    pub segments: String,
    /// `mean` or `sum`.
    pub aggregate: String,
    /// `gradients` or `updates`.
    pub payload: String,
    /// `dense-fp32` or `dense-fp16`.
    pub baseline: String,
    /// `parallel` or `sequential`.
    pub compute: String,
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

/// What `--transport mpi` adds to the summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MpiInfo {
    /// Ranks.
    pub ranks: usize,
    /// Workers per rank.
    pub workers_per_rank: usize,
}

/// The whole comparison: what `--json` prints and `summary.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The configuration.
    pub config: ConfigInfo,
    /// The backend gradcast encoded and decoded on.
    pub backend: String,
    /// The data set.
    pub data: DataInfo,
    /// The model, in words.
    pub model: String,
    /// Model parameters N (the length of the shared vector).
    pub params: u64,
    /// Rounds per run.
    pub rounds: u64,
    /// The dense baseline.
    pub dense: RunSummary,
    /// gradcast.
    pub gradcast: RunSummary,
    /// `dense.bytes / gradcast.bytes`.
    pub compression_ratio: f64,
    /// `gradcast.test_accuracy - dense.test_accuracy`, in percentage points.
    pub accuracy_gap_pp: f64,
    /// With `--transport mpi`: the ranks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpi: Option<MpiInfo>,
}

impl TrainArgs {
    /// Checks the values a user can get wrong, before any data are loaded.
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
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad(format!(
                "--hidden {}: every hidden layer needs at least one unit",
                self.hidden_list()
            ));
        }
        // Whatever the data, N >= sum of the hidden widths.
        let floor = self
            .hidden
            .iter()
            .try_fold(0u64, |a, &h| a.checked_add(h as u64));
        if floor.is_none_or(|f| f > MAX_PARAMS) {
            return bad(format!(
                "--hidden {}: the model would have more than {MAX_PARAMS} parameters",
                self.hidden_list()
            ));
        }
        if self.checkpoint_every > 0 && self.checkpoint_dir().is_none() {
            return bad(format!(
                "--checkpoint-every {} needs --checkpoint-dir DIR (or --resume DIR)",
                self.checkpoint_every
            ));
        }
        if self.checkpoint_every == 0 && self.checkpoint_dir.is_some() {
            return bad("--checkpoint-dir needs --checkpoint-every K (K > 0)".into());
        }
        // The policy's parameters against the core's rules (target:S < 1/16, say).
        self.threshold.policies(&[1 << 16]).map_err(|e| match e {
            gradcast_candle::Error::Config(m) => CliError::Usage(format!("--{m}")),
            other => CliError::Usage(format!("--threshold {}: {other}", self.threshold)),
        })?;
        Ok(())
    }

    /// Where checkpoints go: --checkpoint-dir, else the --resume directory.
    pub fn checkpoint_dir(&self) -> Option<&std::path::Path> {
        self.checkpoint_dir.as_deref().or(self.resume.as_deref())
    }

    fn hidden_list(&self) -> String {
        self.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The model the options describe.
    pub fn model_spec(&self) -> ModelSpec {
        match self.model {
            crate::cli::ModelArg::Mlp => ModelSpec::Mlp {
                hidden: self.hidden.clone(),
            },
            crate::cli::ModelArg::Cnn => ModelSpec::Cnn,
        }
    }

    /// The parameter count N for data of `input` features and `classes` classes, checked:
    /// computed without overflow, at most [`MAX_PARAMS`] (a message's limit), and with
    /// `total_workers`, `N x workers` at most [`MAX_PARAMS_TIMES_WORKERS`] (memory).
    ///
    /// # Errors
    /// [`CliError::Usage`] naming `--model` or `--hidden`.
    pub fn checked_params(
        &self,
        input: usize,
        classes: usize,
        total_workers: usize,
    ) -> Result<u64, CliError> {
        let spec = self.model_spec();
        spec.check(input, classes)
            .map_err(|e| CliError::Usage(format!("--model {}: {e}", self.model.name())))?;
        let what = match self.model {
            crate::cli::ModelArg::Mlp => format!("--hidden {}", self.hidden_list()),
            crate::cli::ModelArg::Cnn => "--model cnn".to_string(),
        };
        let shape = spec.describe(input, classes);
        let n = spec.param_count(input, classes).ok_or_else(|| {
            CliError::Usage(format!(
                "{what}: the parameter count of the {shape} overflows"
            ))
        })?;
        if n > MAX_PARAMS {
            return Err(CliError::Usage(format!(
                "{what}: the {shape} has {n} parameters, more than the {MAX_PARAMS} a gradcast \
                 message can describe; lower --hidden"
            )));
        }
        if n.saturating_mul(total_workers as u64) > MAX_PARAMS_TIMES_WORKERS {
            return Err(CliError::Usage(format!(
                "{what}: the {shape} has {n} parameters; with {total_workers} workers that is \
                 more than {MAX_PARAMS_TIMES_WORKERS} parameters x workers (every worker holds \
                 several f32 copies); lower --hidden or --workers"
            )));
        }
        Ok(n)
    }

    /// The driver's configuration.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            model: self.model_spec(),
            workers: self.workers,
            batch: self.batch,
            epochs: self.epochs,
            seed: self.seed,
            optimizer: self.optimizer.spec(self.lr),
            compute: self.compute.into(),
            replicas: gradcast_candle::driver::Replicas::PerWorker,
            eval_every: 0,
        }
    }

    /// The two runs' sharing configurations: the baseline's, then gradcast's.
    pub fn sharing_configs(&self) -> [Config; 2] {
        let base = Config {
            payload: self.payload.into(),
            aggregate: self.aggregate.into(),
            ..Config::default()
        };
        let gradcast = GradcastConfig {
            threshold: self.threshold,
            segments: self.segments.into(),
            ..GradcastConfig::default()
        };
        [
            Config {
                exchange: self.baseline.into(),
                ..base
            },
            Config {
                exchange: Exchange::Gradcast(gradcast),
                ..base
            },
        ]
    }

    fn config_info(&self, ranks: usize) -> ConfigInfo {
        let [dense, _] = self.sharing_configs();
        ConfigInfo {
            workers: self.workers * ranks,
            workers_per_rank: self.workers,
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
            model: self.model.name().into(),
            hidden: self.hidden.clone(),
            optimizer: self.optimizer.spec(self.lr).name().into(),
            threshold: self.threshold.to_string(),
            segments: gradcast_candle::Segments::from(self.segments).name().into(),
            aggregate: gradcast_candle::Aggregate::from(self.aggregate)
                .name()
                .into(),
            payload: match Payload::from(self.payload) {
                Payload::Gradients => "gradients".into(),
                Payload::Updates => "updates".into(),
            },
            baseline: dense.exchange.name().into(),
            compute: match gradcast_candle::driver::Compute::from(self.compute) {
                gradcast_candle::driver::Compute::Parallel => "parallel".into(),
                gradcast_candle::driver::Compute::Sequential => "sequential".into(),
            },
        }
    }
}

/// Maps the driver's errors: configuration errors are usage errors (exit code 2).
pub fn candle_err(e: gradcast_candle::Error) -> CliError {
    match e {
        gradcast_candle::Error::Config(m) => CliError::Usage(m),
        other => CliError::Train(other.to_string()),
    }
}

/// Where the job runs: this process's rank among `ranks`, and whether ranks print their
/// checksums (`--transport mpi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// This process's rank.
    pub rank: usize,
    /// The number of processes.
    pub ranks: usize,
    /// Print every rank's checksum line.
    pub checksums: bool,
}

/// `gradcast train` in one process.
///
/// # Errors
/// Usage, data, training and output errors.
pub fn run_local(a: &TrainArgs) -> Result<(), CliError> {
    let place = Place {
        rank: 0,
        ranks: 1,
        checksums: false,
    };
    run(a, place, || Ok(InProcess))
}

/// `gradcast train` on this rank, every run over a network from `network` (one per run).
/// The same code runs in one process and under MPI.
///
/// # Errors
/// Usage, data, training, network and output errors; [`CliError::Train`] when the replicas
/// of a run ended different.
pub fn run<N: Network>(
    a: &TrainArgs,
    place: Place,
    network: impl FnMut() -> Result<N, CliError>,
) -> Result<(), CliError> {
    a.validate()?;
    let split = load_data(&a.data, a.seed)?;
    let total = a.workers * place.ranks;
    if a.batch < total {
        return Err(CliError::Usage(format!(
            "--batch {} is smaller than the {total} workers of {} ranks x {}: every worker \
             needs a sample",
            a.batch, place.ranks, a.workers
        )));
    }
    let n = a.checked_params(split.train.dim, split.train.classes, total)?;
    let lead = place.rank == 0;
    if lead {
        std::fs::create_dir_all(&a.out).map_err(|source| CliError::Io {
            action: "create directory",
            path: a.out.clone(),
            source,
        })?;
    }
    match a.backend {
        BackendChoice::Cpu => train(a, place, n, &split, crate::backends::cpu, network),
        #[cfg(feature = "opencl")]
        BackendChoice::OpenCl => train(a, place, n, &split, crate::backends::opencl, network),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => train(a, place, n, &split, crate::backends::cuda, network),
        #[allow(unreachable_patterns)]
        other => Err(CliError::Backend(format!(
            "`{other}` is not compiled into this build"
        ))),
    }
}

/// Human output: per-epoch lines and a progress bar on a terminal (rank 0 only).
struct Human {
    bar: Option<ProgressBar>,
    print: bool,
    names: [&'static str; 2],
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
    fn round(&mut self, _r: &RoundRecord<'_>) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn epoch(&mut self, records: &[EpochRecord]) {
        for l in report::epoch_lines(&self.names, records) {
            self.line(&l);
        }
    }
}

fn train<B: Backend, N: Network>(
    a: &TrainArgs,
    place: Place,
    n: u64,
    split: &Split,
    backend: fn() -> Result<B, CliError>,
    mut network: impl FnMut() -> Result<N, CliError>,
) -> Result<(), CliError> {
    let lead = place.rank == 0;
    let human = lead && !a.json;
    let model = a
        .model_spec()
        .describe(split.train.dim, split.train.classes);
    let rounds = rounds_per_epoch(split.train.len(), a.batch) * a.epochs as u64;
    let bar = (human && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(2 * rounds);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} rounds  {elapsed} (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let [dense_cfg, gc_cfg] = a.sharing_configs();
    let mut obs = Human {
        bar,
        print: human,
        names: ["dense", "gradcast"],
    };
    let backend_name = backend()?.name().to_string();
    let workers = if place.ranks > 1 {
        format!("{} ranks x {} workers", place.ranks, a.workers)
    } else {
        format!("P = {} workers", a.workers)
    };
    obs.line(&format!(
        "gradcast train: {} ({} train / {} test samples, {} features), {model} ({n} parameters)",
        split.name,
        split.train.len(),
        split.test.len(),
        split.train.dim,
    ));
    obs.line(&format!(
        "{workers}, batch {}, {}, {} epochs, {} of {}, {} vs gradcast {} ({} segments), backend \
         {backend_name}",
        a.batch,
        a.optimizer.spec(a.lr),
        a.epochs,
        a.aggregate.name(),
        a.payload.name(),
        dense_cfg.exchange.name(),
        a.threshold,
        a.segments.name(),
    ));
    obs.line("");
    obs.line(&report::epoch_heading());

    let mut job = Job::new(a.train_config(), &split.train, &split.test).map_err(candle_err)?;
    job.add_run("dense", dense_cfg, backend()?, network()?)
        .map_err(candle_err)?;
    job.add_run("gradcast", gc_cfg, backend()?, network()?)
        .map_err(candle_err)?;
    if let Some(dir) = &a.resume {
        let r = job.resume(dir).map_err(candle_err)?;
        if let Some(b) = &obs.bar {
            b.inc(2 * r.round);
        }
        obs.line(&format!(
            "resumed from {} (round {} of {rounds}, {} bytes, loaded in {:.1} ms)",
            r.path.display(),
            r.round,
            r.bytes,
            r.seconds * 1e3
        ));
    }
    let (mut saved, mut save_seconds, mut save_bytes) = (0u64, 0f64, 0u64);
    while job.round(&mut obs).map_err(candle_err)? {
        if a.checkpoint_every > 0
            && job.rounds_done().is_multiple_of(a.checkpoint_every)
            && let Some(dir) = a.checkpoint_dir()
        {
            let s = job.save_checkpoint(dir).map_err(candle_err)?;
            saved += 1;
            save_seconds += s.seconds;
            save_bytes = s.bytes;
        }
    }
    if saved > 0 {
        obs.line(&format!(
            "checkpoints: {saved} written, {save_bytes} bytes each on this rank, {:.1} ms each \
             (mean)",
            save_seconds * 1e3 / saved as f64
        ));
    }
    let mut runs = job.summaries().map_err(candle_err)?.into_iter();
    let (Some(dense), Some(gradcast)) = (runs.next(), runs.next()) else {
        return Err(CliError::Train("the driver returned no summaries".into()));
    };
    if let Some(b) = &obs.bar {
        b.finish_and_clear();
    }
    if place.checksums {
        let mut sums = Vec::new();
        for r in job.runs_mut() {
            sums.push(r.sharing().checksum(0).map_err(candle_err)?);
        }
        let line = format!(
            "rank {}/{}: checksum gradcast {:016x} dense {:016x}",
            place.rank, place.ranks, sums[1], sums[0]
        );
        if a.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    let diverged: Vec<String> = [&dense, &gradcast]
        .iter()
        .filter(|r| !r.replicas_identical)
        .map(|r| r.name.clone())
        .collect();
    if lead {
        let summary = Summary {
            config: a.config_info(place.ranks),
            backend: backend_name,
            data: DataInfo {
                name: split.name.clone(),
                train: split.train.len(),
                test: split.test.len(),
                features: split.train.dim,
                classes: split.train.classes,
            },
            model,
            params: n,
            rounds,
            compression_ratio: dense.bytes as f64 / gradcast.bytes.max(1) as f64,
            accuracy_gap_pp: 100.0 * (gradcast.test_accuracy - dense.test_accuracy),
            dense,
            gradcast,
            mpi: place.checksums.then_some(MpiInfo {
                ranks: place.ranks,
                workers_per_rank: a.workers,
            }),
        };
        write_outputs(a, &summary)?;
    }
    if !diverged.is_empty() {
        return Err(CliError::Train(format!(
            "the {} replicas diverged: they must stay bit-identical",
            diverged.join(" and ")
        )));
    }
    Ok(())
}

fn write_outputs(a: &TrainArgs, summary: &Summary) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(summary)
        .map_err(|e| CliError::Train(format!("cannot serialise the summary: {e}")))?;
    let summary_path = a.out.join("summary.json");
    crate::error::write_file(&summary_path, json.as_bytes())?;
    let plot_path = a.out.join("train.png");
    crate::plot::draw(&plot_path, summary)?;
    if a.json {
        println!("{json}");
    } else {
        report::print_summary(summary);
        println!(
            "\nwrote {} and {}",
            plot_path.display(),
            summary_path.display()
        );
    }
    Ok(())
}

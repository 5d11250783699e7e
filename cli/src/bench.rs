//! `gradcast bench`: the kernel benchmarks of every backend compiled in, with the plain read
//! bandwidth of the same buffer measured in the same run, as a ratio.
//!
//! The measuring routines belong to the backends (`gradcast_cpu::bench`,
//! `gradcast_opencl::bench`, `gradcast_cuda::bench`); this command picks the sizes, runs them
//! and prints a table or JSON.
//!
//! `gradcast bench --round` measures whole rounds of the round protocol on the CPU backend
//! instead (`gradcast_cpu::bench::round_cost`): P parties in one process, encode, exchange,
//! validation, decode and step, next to a dense in-process exchange of the same N and the
//! time to read N floats, measured in the same run.

use crate::error::CliError;
use clap::Args;
use serde::Serialize;

/// Options of `gradcast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Vector sizes as powers of two, comma-separated: 24 means 2^24 = 16,777,216 elements
    /// (64 MiB of f32). Each size needs a few vectors of that size in memory (with --round,
    /// a few per party). Default 24,26; with --round 20,23,26.
    #[arg(long, value_delimiter = ',')]
    pub log2_n: Vec<u32>,
    /// Fractions of elements at or above the threshold (default 1e-4,1e-3,1e-2; with
    /// --round 1e-3,1e-2).
    #[arg(long, value_delimiter = ',')]
    pub density: Vec<f64>,
    /// Repetitions of each measurement (the best is reported); with --round, timed rounds
    /// (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Measure whole rounds of the round protocol (CPU backend, in-process parties) against
    /// a dense in-process exchange, instead of the kernels.
    #[arg(long)]
    pub round: bool,
    /// With --round: party counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4])]
    pub parties: Vec<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Backend and configuration.
    pub backend: String,
    /// Elements.
    pub n: usize,
    /// Requested density.
    pub density: f64,
    /// Encoding written.
    pub encoding: String,
    /// Message length in bytes.
    pub message_bytes: usize,
    /// Encode throughput over the residual, GB/s (best run).
    pub encode_gbps: f64,
    /// Decode-add throughput over the target, GB/s (best run).
    pub decode_gbps: Option<f64>,
    /// Reference bandwidth of the same run, GB/s (host read of the same buffer, or a device
    /// copy for CUDA).
    pub reference_gbps: f64,
    /// What the reference measures.
    pub reference: &'static str,
    /// Encode throughput / reference bandwidth.
    pub encode_ratio: f64,
    /// Decode throughput / reference bandwidth.
    pub decode_ratio: Option<f64>,
    /// Whether the message matched the other configurations' byte for byte.
    pub identical: bool,
}

/// `--log2-n`, or its default for the mode.
fn sizes(a: &BenchArgs) -> Vec<u32> {
    match (a.log2_n.is_empty(), a.round) {
        (false, _) => a.log2_n.clone(),
        (true, false) => vec![24, 26],
        (true, true) => vec![20, 23, 26],
    }
}

/// `--density`, or its default for the mode.
fn densities(a: &BenchArgs) -> Vec<f64> {
    match (a.density.is_empty(), a.round) {
        (false, _) => a.density.clone(),
        (true, false) => vec![1e-4, 1e-3, 1e-2],
        (true, true) => vec![1e-3, 1e-2],
    }
}

fn check(a: &BenchArgs) -> Result<(), CliError> {
    if let Some(&p) = a.parties.iter().find(|&&p| !(1..=64).contains(&p)) {
        return Err(CliError::Usage(format!("--parties {p}: from 1 to 64")));
    }
    if a.reps == 0 {
        return Err(CliError::Usage("--reps must be at least 1".into()));
    }
    if let Some(l) = sizes(a).iter().find(|&&l| !(4..=28).contains(&l)) {
        return Err(CliError::Usage(format!(
            "--log2-n {l}: sizes from 2^4 to 2^28 elements"
        )));
    }
    if let Some(d) = densities(a).iter().find(|&&d| !(d > 0.0 && d <= 1.0)) {
        return Err(CliError::Usage(format!("--density {d}: must be in (0, 1]")));
    }
    Ok(())
}

#[cfg(any(feature = "opencl", feature = "cuda"))]
fn gbps(bytes: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / seconds / 1e9
    } else {
        0.0
    }
}

fn cpu_rows(a: &BenchArgs, rows: &mut Vec<BenchRow>) -> Result<(), CliError> {
    use gradcast_cpu::bench;
    let configs = bench::standard_configs();
    for &l in &sizes(a) {
        for &d in &densities(a) {
            let n = 1usize << l;
            let r = bench::cpu_report(n, d, a.reps, &configs)
                .map_err(|e| CliError::Backend(format!("cpu benchmark: {e}")))?;
            for row in &r.rows {
                rows.push(BenchRow {
                    backend: format!("cpu {} ({})", row.label, row.backend),
                    n,
                    density: d,
                    encoding: r.encoding.name().to_string(),
                    message_bytes: r.message_bytes,
                    encode_gbps: row.encode.best_gbps(r.bytes()),
                    decode_gbps: Some(row.decode.best_gbps(r.bytes())),
                    reference_gbps: r.read_gbps(),
                    reference: "host read",
                    encode_ratio: r.encode_ratio(row),
                    decode_ratio: Some(r.decode_ratio(row)),
                    identical: r.messages_identical,
                });
            }
        }
    }
    Ok(())
}

#[cfg(feature = "opencl")]
fn opencl_rows(a: &BenchArgs, rows: &mut Vec<BenchRow>) -> Result<(), CliError> {
    let ocl = match crate::backends::opencl() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP opencl: {e}");
            return Ok(());
        }
    };
    for &l in &sizes(a) {
        for &d in &densities(a) {
            let n = 1usize << l;
            let r = gradcast_opencl::bench::ocl_row(&ocl, n, d, a.reps)
                .map_err(|e| CliError::Backend(format!("opencl benchmark: {e}")))?;
            let read = r.read.best();
            rows.push(BenchRow {
                backend: "opencl".into(),
                n,
                density: d,
                encoding: r.encoding.name().to_string(),
                message_bytes: r.message_bytes,
                encode_gbps: r.ocl_encode.best_gbps(r.bytes()),
                decode_gbps: Some(r.ocl_decode.best_gbps(r.bytes())),
                reference_gbps: gbps(r.bytes(), read),
                reference: "host read",
                encode_ratio: r.encode_vs_read(),
                decode_ratio: Some(r.decode_vs_read()),
                identical: r.messages_identical,
            });
        }
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda_rows(a: &BenchArgs, rows: &mut Vec<BenchRow>) -> Result<(), CliError> {
    let cuda = match crate::backends::cuda() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP cuda: {e}");
            return Ok(());
        }
    };
    for &l in &sizes(a) {
        let n = 1usize << l;
        let r = gradcast_cuda::bench::encode_vs_copy(&cuda, n, a.reps)
            .map_err(|e| CliError::Backend(format!("cuda benchmark: {e}")))?;
        rows.push(BenchRow {
            backend: "cuda".into(),
            n,
            density: r.candidates as f64 / n as f64,
            encoding: "auto".into(),
            message_bytes: r.message_bytes,
            encode_gbps: gbps(4 * n, r.encode.as_secs_f64()),
            decode_gbps: None,
            reference_gbps: gbps(4 * n, r.copy.as_secs_f64()),
            reference: "device copy",
            encode_ratio: r.ratio(),
            decode_ratio: None,
            identical: true,
        });
    }
    Ok(())
}

/// Runs `gradcast bench`.
///
/// # Errors
/// Bad options; backend errors.
pub fn run(a: &BenchArgs) -> Result<(), CliError> {
    check(a)?;
    if a.round {
        return run_round(a);
    }
    let mut rows = Vec::new();
    cpu_rows(a, &mut rows)?;
    #[cfg(feature = "opencl")]
    opencl_rows(a, &mut rows)?;
    #[cfg(feature = "cuda")]
    cuda_rows(a, &mut rows)?;
    if a.json {
        let v = serde_json::json!({
            "backends": crate::backends::compiled_in(),
            "reps": a.reps,
            "rows": rows,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::Train(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "{:<44} {:>10} {:>8} {:>7} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "backend", "N", "density", "enc", "encode", "decode", "reference", "enc/ref", "dec/ref"
    );
    for r in &rows {
        println!(
            "{:<44} {:>10} {:>8.0e} {:>7} {:>7.2} GB/s {:>5} GB/s {:>5.2} GB/s {:>8.2} {:>8}{}",
            r.backend,
            format!("2^{}", r.n.trailing_zeros()),
            r.density,
            r.encoding,
            r.encode_gbps,
            r.decode_gbps.map_or("-".into(), |g| format!("{g:.2}")),
            r.reference_gbps,
            r.encode_ratio,
            r.decode_ratio.map_or("-".into(), |g| format!("{g:.2}")),
            if r.identical { "" } else { "  MESSAGES DIFFER" }
        );
    }
    println!(
        "\nreference: the plain read bandwidth of the same buffer in the same run (CUDA: a device copy); ratios use each operation's best run."
    );
    Ok(())
}

/// One measured round configuration of `gradcast bench --round`.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRow {
    /// Elements per vector.
    pub n: usize,
    /// Parties.
    pub parties: usize,
    /// Requested density of each update.
    pub density: f64,
    /// Entries each party sent per round (mean).
    pub entries: f64,
    /// Median time of one gradcast round (party 0: store_update + apply_update), ms.
    pub round_ms: f64,
    /// Median time of one dense in-process round (each party sums P vectors, steps), ms.
    pub dense_ms: f64,
    /// Median time to read N floats on one thread, ms.
    pub read_ms: f64,
    /// round_ms / dense_ms (below 1: gradcast is cheaper).
    pub round_vs_dense: f64,
    /// round_ms / read_ms.
    pub round_vs_read: f64,
    /// Whether every party's replica ended bit-identical (it must).
    pub replicas_identical: bool,
}

fn run_round(a: &BenchArgs) -> Result<(), CliError> {
    let mut rows = Vec::new();
    for &l in &sizes(a) {
        for &p in &a.parties {
            for &d in &densities(a) {
                let n = 1usize << l;
                let r = gradcast_cpu::bench::round_cost(n, p, d, a.reps)
                    .map_err(|e| CliError::Backend(format!("round benchmark: {e}")))?;
                rows.push(RoundRow {
                    n,
                    parties: p,
                    density: d,
                    entries: r.entries,
                    round_ms: r.round.median() * 1e3,
                    dense_ms: r.dense.median() * 1e3,
                    read_ms: r.read.median() * 1e3,
                    round_vs_dense: r.vs_dense(),
                    round_vs_read: r.vs_read(),
                    replicas_identical: r.replicas_identical,
                });
            }
        }
    }
    if rows.iter().any(|r| !r.replicas_identical) {
        eprintln!("error: replicas differ after the same rounds");
    }
    if a.json {
        let v = serde_json::json!({
            "backend": "cpu",
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "rounds": a.reps,
            "rows": rows,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::Train(e.to_string()))?
        );
    } else {
        println!(
            "{:>6} {:>3} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "N",
            "P",
            "density",
            "entries",
            "round ms",
            "dense ms",
            "read ms",
            "vs dense",
            "vs read",
            "replicas"
        );
        for r in &rows {
            println!(
                "{:>6} {:>3} {:>8.0e} {:>10.0} {:>10.3} {:>10.3} {:>10.3} {:>9.3} {:>9.2} {:>9}",
                format!("2^{}", r.n.trailing_zeros()),
                r.parties,
                r.density,
                r.entries,
                r.round_ms,
                r.dense_ms,
                r.read_ms,
                r.round_vs_dense,
                r.round_vs_read,
                if r.replicas_identical {
                    "same"
                } else {
                    "DIFFER"
                }
            );
        }
        println!(
            "\nround: one round of the round protocol per party (encode, exchange, validate, decode, step), median; dense: every party sums the P updates and steps; read: one thread reads N floats."
        );
    }
    if rows.iter().all(|r| r.replicas_identical) {
        Ok(())
    } else {
        Err(CliError::Backend(
            "replicas differ after the same rounds".into(),
        ))
    }
}

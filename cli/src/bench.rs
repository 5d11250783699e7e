//! `gradcast bench`: the kernel benchmarks of every backend compiled in, with the plain read
//! bandwidth of the same buffer measured in the same run, as a ratio.
//!
//! The measuring routines belong to the backends (`gradcast_cpu::bench`,
//! `gradcast_opencl::bench`, `gradcast_cuda::bench`); this command picks the sizes, runs them
//! and prints a table or JSON.

use crate::error::CliError;
use clap::Args;
use serde::Serialize;

/// Options of `gradcast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Vector sizes as powers of two (the CPU issue's sizes: 24 and 26).
    #[arg(long, value_delimiter = ',', default_values_t = [24u32, 26])]
    pub log2_n: Vec<u32>,
    /// Fractions of elements at or above the threshold.
    #[arg(long, value_delimiter = ',', default_values_t = [1e-4, 1e-3, 1e-2])]
    pub density: Vec<f64>,
    /// Repetitions of each measurement (the best is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
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

fn check(a: &BenchArgs) -> Result<(), CliError> {
    if a.reps == 0 {
        return Err(CliError::Usage("--reps must be at least 1".into()));
    }
    if let Some(l) = a.log2_n.iter().find(|&&l| !(4..=28).contains(&l)) {
        return Err(CliError::Usage(format!(
            "--log2-n {l}: sizes from 2^4 to 2^28 elements"
        )));
    }
    if let Some(d) = a.density.iter().find(|&&d| !(d > 0.0 && d <= 1.0)) {
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
    for &l in &a.log2_n {
        for &d in &a.density {
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
    for &l in &a.log2_n {
        for &d in &a.density {
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
    for &l in &a.log2_n {
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

//! Benchmark routines: the OpenCL backend against the CPU fast path (`gradcast-cpu`) and the
//! host's read bandwidth, measured in the same run. Used by `examples/bench.rs` and meant for
//! the CLI's `gradcast bench`.
//!
//! Protocol (the same as `gradcast_cpu::bench`): the synthetic residual of
//! [`gradcast_cpu::bench::synthetic_residual`] at threshold [`TAU`] is uploaded before every
//! encode (untimed), so every encode sees the same residual. A timed encode covers the
//! backend call, i.e. for OpenCL the count kernel, reading the group counts, the
//! select/write kernel, reading the payload back and sealing the header (CRC-32C); a timed
//! decode covers uploading the payload and the decode kernel, with the queue drained. The
//! rounds are interleaved (read sum, CPU encode + decode, OpenCL encode + decode) so that a
//! noisy neighbour slows all of them alike. Nothing here asserts a speed.

use crate::{OpenCl, OpenClError};
use gradcast_core::Backend;
use gradcast_core::codec::EncodeParams;
use gradcast_core::wire::{Encoding, MessageView};
use gradcast_cpu::bench::{Timing, decode_once, encode_once, out_buffer, sum_once};
use gradcast_cpu::{Cpu, CpuConfig};

pub use gradcast_cpu::bench::{TAU, synthetic_residual};

/// The sizes and densities of the benchmark (N = 2^24 and 2^26; 1e-4, 1e-3, 1e-2).
pub fn standard_cases() -> Vec<(usize, f64)> {
    let mut v = Vec::new();
    for n in [1usize << 24, 1 << 26] {
        for d in [1e-4, 1e-3, 1e-2] {
            v.push((n, d));
        }
    }
    v
}

/// One (N, density) point.
#[derive(Clone, Debug, PartialEq)]
pub struct OclRow {
    /// Elements.
    pub n: usize,
    /// Requested fraction of elements at or above the threshold.
    pub density: f64,
    /// Encoding written (the automatic choice).
    pub encoding: Encoding,
    /// Entries sent.
    pub entries: u32,
    /// Message length in bytes.
    pub message_bytes: usize,
    /// Whether the OpenCL message equals the CPU's byte for byte (it must).
    pub messages_identical: bool,
    /// Host read bandwidth reference: `gradcast_cpu::bench::sum` over the same buffer.
    pub read: Timing,
    /// CPU fast path (all threads) encode.
    pub cpu_encode: Timing,
    /// CPU fast path decode-add.
    pub cpu_decode: Timing,
    /// OpenCL encode.
    pub ocl_encode: Timing,
    /// OpenCL decode-add.
    pub ocl_decode: Timing,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

impl OclRow {
    /// OpenCL encode throughput / CPU fast path encode throughput (best runs).
    pub fn encode_vs_cpu(&self) -> f64 {
        ratio(self.cpu_encode.best(), self.ocl_encode.best())
    }

    /// OpenCL decode throughput / CPU fast path decode throughput (best runs).
    pub fn decode_vs_cpu(&self) -> f64 {
        ratio(self.cpu_decode.best(), self.ocl_decode.best())
    }

    /// OpenCL encode throughput as a fraction of the host read bandwidth (best runs).
    pub fn encode_vs_read(&self) -> f64 {
        ratio(self.read.best(), self.ocl_encode.best())
    }

    /// OpenCL decode throughput as a fraction of the host read bandwidth (best runs).
    pub fn decode_vs_read(&self) -> f64 {
        ratio(self.read.best(), self.ocl_decode.best())
    }

    /// The residual's size in bytes (`4 n`).
    pub fn bytes(&self) -> usize {
        4 * self.n
    }

    /// A Markdown table row: N, density, encoding, K, GB/s of read / CPU encode / OpenCL
    /// encode / CPU decode / OpenCL decode, and the two ratios to the CPU.
    pub fn markdown(&self) -> String {
        let b = self.bytes();
        format!(
            "| 2^{} | {:.0e} | {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.2} | {:.2} | {:.3} |",
            self.n.trailing_zeros(),
            self.density,
            self.encoding.name(),
            self.entries,
            self.read.best_gbps(b),
            self.cpu_encode.best_gbps(b),
            self.ocl_encode.best_gbps(b),
            self.encode_vs_cpu(),
            self.cpu_decode.best_gbps(b),
            self.ocl_decode.best_gbps(b),
            self.decode_vs_cpu(),
        )
    }
}

/// The header of [`OclRow::markdown`]'s table.
pub const MARKDOWN_HEADER: &str = "| N | density | encoding | K | read GB/s | CPU enc GB/s | OCL enc GB/s | OCL/CPU enc | CPU dec GB/s | OCL dec GB/s | OCL/CPU dec |\n|---|---|---|---|---|---|---|---|---|---|---|";

/// Errors of a benchmark run: either backend's.
#[derive(Debug)]
pub enum BenchError {
    /// The OpenCL backend failed.
    OpenCl(OpenClError),
    /// The CPU backend failed.
    Cpu(gradcast_cpu::CpuError),
    /// The core rejected a message.
    Core(gradcast_core::Error),
}

impl core::fmt::Display for BenchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BenchError::OpenCl(e) => write!(f, "opencl: {e}"),
            BenchError::Cpu(e) => write!(f, "cpu: {e}"),
            BenchError::Core(e) => write!(f, "core: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// Measures one (N, density) point in `reps` interleaved rounds: the host read sum, the CPU
/// fast path (`CpuConfig::fast()`, every thread) and `ocl`, encode then decode each.
///
/// # Errors
/// Either backend's errors.
pub fn ocl_row(ocl: &OpenCl, n: usize, density: f64, reps: usize) -> Result<OclRow, BenchError> {
    let host = synthetic_residual(n, density, 0x9E37_79B9 ^ n as u64);
    let params = EncodeParams::new(TAU);
    let cpu = Cpu::new(CpuConfig::fast());
    let cpu_err = BenchError::Cpu;
    let ocl_err = BenchError::OpenCl;

    let mut cpu_buf = cpu.alloc(n).map_err(cpu_err)?;
    let mut cpu_target = cpu.alloc(n).map_err(cpu_err)?;
    let mut ocl_buf = ocl.alloc(n).map_err(ocl_err)?;
    let mut ocl_target = ocl.alloc(n).map_err(ocl_err)?;
    let mut cpu_out = out_buffer(n, &params);
    let mut ocl_out = out_buffer(n, &params);
    let empty = || Timing {
        samples: Vec::new(),
    };
    let (mut read, mut ce, mut cd, mut oe, mut od) = (empty(), empty(), empty(), empty(), empty());
    let mut identical = true;
    let mut last = None;
    for _ in 0..reps.max(1) {
        read.samples
            .push(sum_once(&cpu, &host, &mut cpu_buf).map_err(cpu_err)?);

        let (t, cs) =
            encode_once(&cpu, &host, &mut cpu_buf, &params, &mut cpu_out).map_err(cpu_err)?;
        ce.samples.push(t);
        let msg =
            MessageView::parse(&cpu_out[..cs.bytes]).map_err(|e| BenchError::Core(e.into()))?;
        cd.samples
            .push(decode_once(&cpu, &msg, &mut cpu_target).map_err(cpu_err)?);

        let (t, os) =
            encode_once(ocl, &host, &mut ocl_buf, &params, &mut ocl_out).map_err(ocl_err)?;
        oe.samples.push(t);
        identical &= cs == os && cpu_out[..cs.bytes] == ocl_out[..os.bytes];
        let msg =
            MessageView::parse(&ocl_out[..os.bytes]).map_err(|e| BenchError::Core(e.into()))?;
        od.samples
            .push(decode_once(ocl, &msg, &mut ocl_target).map_err(ocl_err)?);
        last = Some(os);
    }
    let s = last.ok_or(BenchError::Core(
        gradcast_core::WireError::EmptyVector.into(),
    ))?;
    Ok(OclRow {
        n,
        density,
        encoding: s.encoding,
        entries: s.entries,
        message_bytes: s.bytes,
        messages_identical: identical,
        read,
        cpu_encode: ce,
        cpu_decode: cd,
        ocl_encode: oe,
        ocl_decode: od,
    })
}

/// The operations [`launch_overhead`] times, in order: `fill` (`clEnqueueFillBuffer`, no
/// kernel object: the reference), then calls that launch kernels.
pub const LAUNCH_OPS: [&str; 5] = ["fill", "add_assign", "sub_scaled", "encode", "decode_add"];

/// Per-call time of one small operation ([`launch_overhead`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchRow {
    /// The operation ([`LAUNCH_OPS`]).
    pub op: &'static str,
    /// Elements of the vectors.
    pub n: usize,
    /// Kernel launches per call (encode: count and select; `fill`: none).
    pub kernels: usize,
    /// Seconds per call, one sample per repetition (each the mean of many calls).
    pub per_call: Timing,
}

impl LaunchRow {
    /// Median microseconds per call.
    pub fn median_us(&self) -> f64 {
        self.per_call.median() * 1e6
    }

    /// Best (fastest repetition's) microseconds per call.
    pub fn best_us(&self) -> f64 {
        self.per_call.best() * 1e6
    }
}

/// Measures what a call costs when its work is tiny (vectors of `n` elements, `n` small), so
/// that the cost is the launch: creating or reusing kernel objects, setting arguments,
/// enqueueing, PoCL's scheduling, and the blocking reads an encode needs. Each repetition
/// times `calls` calls of each operation back to back and drains the queue once at the end
/// (`encode` blocks on its own reads); the operations are interleaved per repetition so that
/// a noisy neighbour slows them alike. `fill` launches no kernel: the other rows read best as
/// ratios to it.
///
/// # Errors
/// The backend's errors.
pub fn launch_overhead(
    ocl: &OpenCl,
    n: usize,
    calls: usize,
    reps: usize,
) -> Result<Vec<LaunchRow>, BenchError> {
    let e = BenchError::OpenCl;
    let host = synthetic_residual(n, 0.05, 0x5EED ^ n as u64);
    let params = EncodeParams::new(TAU);
    let mut a = ocl.alloc(n).map_err(e)?;
    let b = ocl.alloc(n).map_err(e)?;
    let mut residual = ocl.alloc(n).map_err(e)?;
    ocl.upload(&host, &mut residual).map_err(e)?;
    let mut out = out_buffer(n, &params);
    let s = ocl.encode(&mut residual, &params, &mut out).map_err(e)?;
    let message = out[..s.bytes].to_vec();
    let msg = MessageView::parse(&message).map_err(|e| BenchError::Core(e.into()))?;
    let kernels = [0, 1, 1, 2, 1];
    let mut rows: Vec<LaunchRow> = LAUNCH_OPS
        .iter()
        .zip(kernels)
        .map(|(&op, kernels)| LaunchRow {
            op,
            n,
            kernels,
            per_call: Timing {
                samples: Vec::new(),
            },
        })
        .collect();
    let calls = calls.max(1);
    for _ in 0..reps.max(1) {
        for row in rows.iter_mut() {
            ocl.sync().map_err(e)?;
            let t = std::time::Instant::now();
            for _ in 0..calls {
                match row.op {
                    "fill" => ocl.fill(&mut a, 0.5),
                    "add_assign" => ocl.add_assign(&mut a, &b),
                    "sub_scaled" => ocl.sub_scaled(&mut a, &b, 0.5),
                    // The residual drains after a few calls; what is timed is the launch.
                    "encode" => ocl.encode(&mut residual, &params, &mut out).map(|_| ()),
                    _ => ocl.decode_add(&msg, &mut a),
                }
                .map_err(e)?;
            }
            ocl.sync().map_err(e)?;
            row.per_call
                .samples
                .push(t.elapsed().as_secs_f64() / calls as f64);
        }
    }
    Ok(rows)
}

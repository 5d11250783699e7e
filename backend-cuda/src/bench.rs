//! Benchmark routines: encode throughput against a device-to-device copy of the same vector,
//! measured in the same run (`examples/bench.rs`, `scripts/gpu-check.sh`, and any CLI that
//! wants them).
//!
//! The data is [`synthetic`]: a closed-form function of the index, so that other tools (the
//! `torch.nonzero` comparison in `scripts/gpu-check.sh`) can build exactly the same vector
//! and the same candidate set without a file.

use crate::{Cuda, CudaBuffer, CudaError};
use gradcast_core::Backend;
use gradcast_core::codec::EncodeParams;
use gradcast_core::wire;
use std::time::{Duration, Instant};

/// The vector lengths of the table: 2^26, 2^27, 2^28.
pub const SIZES: [usize; 3] = [1 << 26, 1 << 27, 1 << 28];
/// One candidate per this many elements on average: density 1e-3.
pub const PERIOD: u64 = 1000;
/// The threshold of the benchmark data.
pub const TAU: f32 = 1e-3;

/// The multiplicative hash of an index: `(i * 2654435761) mod 2^32`.
pub fn hash(i: u64) -> u64 {
    i.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF
}

/// The benchmark vector: element `i` is a candidate iff `hash(i).is_multiple_of(period)`, with value
/// `±(1000 + (hash >> 20) % 8) * tau` (negative when bit 16 of the hash is set), so that a
/// few dozen encodes (each debiting one `tau`) keep the candidate set unchanged; every other
/// element is `((hash % 1000) / 1000 - 0.5) * tau`, below the threshold.
pub fn synthetic(n: usize, period: u64, tau: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = hash(i);
            if h.is_multiple_of(period) {
                let mag = tau * (1000 + ((h >> 20) & 7)) as f32;
                if (h >> 16) & 1 == 1 { -mag } else { mag }
            } else {
                ((h % 1000) as f32 / 1000.0 - 0.5) * tau
            }
        })
        .collect()
}

/// The number of candidates in [`synthetic`]`(n, period, _)`.
pub fn expected_candidates(n: usize, period: u64) -> u64 {
    (0..n as u64)
        .filter(|&i| hash(i).is_multiple_of(period))
        .count() as u64
}

/// One row of the benchmark table.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodeVsCopy {
    /// Vector length.
    pub n: usize,
    /// Candidates found (checked against [`expected_candidates`]).
    pub candidates: u64,
    /// Message length in bytes.
    pub message_bytes: usize,
    /// Median time of one full encode (count, scan, write pass, payload download, header and
    /// CRC on the host).
    pub encode: Duration,
    /// Median time of the counting pass alone ([`Backend::count`]).
    pub count: Duration,
    /// Median time of a device-to-device copy of the same vector.
    pub copy: Duration,
}

impl EncodeVsCopy {
    /// Encode throughput as a fraction of the copy's: `copy / encode` (target >= 0.6).
    pub fn ratio(&self) -> f64 {
        self.copy.as_secs_f64() / self.encode.as_secs_f64()
    }

    /// Elements encoded per second.
    pub fn encode_elements_per_s(&self) -> f64 {
        self.n as f64 / self.encode.as_secs_f64()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn time(iters: usize, mut f: impl FnMut() -> Result<(), CudaError>) -> Result<Duration, CudaError> {
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(median(samples))
}

/// Times encode, the counting pass and a device-to-device copy on the same `n`-element
/// [`synthetic`] vector, `iters` times each after two warm-up runs (kernel compilation);
/// every timed call ends synchronised with the device.
///
/// # Errors
/// Device errors; [`CudaError::Core`] if the encoder found a different number of candidates
/// than the data holds (a wrong result, not a slow one).
pub fn encode_vs_copy(cuda: &Cuda, n: usize, iters: usize) -> Result<EncodeVsCopy, CudaError> {
    let iters = iters.clamp(1, 200);
    let host = synthetic(n, PERIOD, TAU);
    let want = expected_candidates(n, PERIOD);
    let mut residual: CudaBuffer = cuda.alloc(n)?;
    let mut other: CudaBuffer = cuda.alloc(n)?;
    cuda.upload(&host, &mut residual)?;
    drop(host);
    let mut out = vec![0u8; wire::max_message_len(n)];
    let params = EncodeParams::new(TAU);
    let mut message_bytes = 0;
    let mut candidates = 0;
    for _ in 0..2 {
        let s = cuda.encode(&mut residual, &params, &mut out)?;
        cuda.copy(&residual, &mut other)?;
        cuda.sync()?;
        message_bytes = s.bytes;
        candidates = s.candidates;
    }
    if candidates != want {
        return Err(CudaError::WrongResult {
            what: format!("encode found {candidates} candidates, the data holds {want}"),
        });
    }
    let encode = time(iters, || {
        cuda.encode(&mut residual, &params, &mut out).map(|_| ())
    })?;
    let count = time(iters, || cuda.count(&residual, 0..n, TAU).map(|_| ()))?;
    let copy = time(iters, || {
        cuda.copy(&residual, &mut other)?;
        cuda.sync()
    })?;
    Ok(EncodeVsCopy {
        n,
        candidates,
        message_bytes,
        encode,
        count,
        copy,
    })
}

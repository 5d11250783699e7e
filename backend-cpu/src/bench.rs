//! Benchmark routines (feature `std`), shared by `cargo bench -p gradcast-cpu` and the CLI's
//! `gradcast bench`.
//!
//! Timing functions are generic over [`Backend`] and return plain structs; nothing here
//! asserts a speed. Speeds are meant to be reported as ratios against the plain read
//! bandwidth of the same buffer measured in the same run ([`time_sum`]), because machines
//! are shared and noisy.
//!
//! Protocol: before every repetition the input is uploaded again (untimed), so every
//! encode sees the same residual; the time of one repetition covers the backend call only
//! (for the CPU that includes the header and the CRC-32C).

use crate::{Cpu, CpuConfig, CpuError};
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::hint::black_box;
use gradcast_core::Backend;
use gradcast_core::codec::{EncodeParams, EncodeSummary};
use gradcast_core::wire::{self, Encoding, MessageView};
use std::time::Instant;

/// The threshold of [`synthetic_residual`]'s vectors.
pub const TAU: f32 = 1.0;

/// Times of repeated runs of one operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Each repetition's time in seconds, in run order.
    pub samples: Vec<f64>,
}

impl Timing {
    /// The median time in seconds (0 without samples).
    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => 0.0,
            n if n % 2 == 1 => s[n / 2],
            n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
        }
    }

    /// The fastest time in seconds (0 without samples).
    pub fn best(&self) -> f64 {
        self.samples.iter().copied().reduce(f64::min).unwrap_or(0.0)
    }

    /// Throughput in GB/s (10^9 bytes per second) for `bytes` per run, from the best run.
    pub fn best_gbps(&self, bytes: usize) -> f64 {
        let t = self.best();
        if t > 0.0 { bytes as f64 / t / 1e9 } else { 0.0 }
    }

    /// Throughput in GB/s (10^9 bytes per second) for `bytes` per run, from the median.
    pub fn gbps(&self, bytes: usize) -> f64 {
        let t = self.median();
        if t > 0.0 { bytes as f64 / t / 1e9 } else { 0.0 }
    }
}

/// A deterministic residual of `n` elements in which about a `density` fraction reaches
/// [`TAU`] (values `±[1, 2)`), the rest lying in `(-0.99, 0.99)`. xorshift64*, seeded.
pub fn synthetic_residual(n: usize, density: f64, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let threshold = (density.clamp(0.0, 1.0) * u32::MAX as f64) as u64;
    (0..n)
        .map(|_| {
            let r = next();
            let u = ((r >> 40) as f32) / (1u64 << 24) as f32; // [0, 1)
            let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
            if (r >> 8) & 0xFFFF_FFFF < threshold {
                sign * (TAU + u)
            } else {
                sign * 0.99 * u
            }
        })
        .collect()
}

/// A sum over `x` with 16 independent accumulators (so that it is limited by memory, not
/// by the latency of additions): the plain read bandwidth reference.
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in chunks.by_ref() {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v;
        }
    }
    let mut total: f32 = chunks.remainder().iter().sum();
    for a in acc {
        total += a;
    }
    total
}

/// [`sum`] over `x` cut into `threads` contiguous parts, summed as tasks of the same worker
/// pool the fast path uses (on the calling thread for one part): the read bandwidth
/// reference for a `threads`-thread encode.
pub fn sum_threads(x: &[f32], threads: usize) -> f32 {
    let parts = threads.clamp(1, x.len().max(1));
    if parts == 1 {
        return sum(x);
    }
    let len = x.len().div_ceil(parts);
    let chunks: Vec<&[f32]> = x.chunks(len).collect();
    crate::fast::parallel(chunks, sum).into_iter().sum()
}

/// Uploads `host` into `buf` (untimed), then times one [`sum_threads`] over `buf` with
/// `threads` parts, in seconds.
///
/// # Errors
/// The backend's upload errors.
pub fn sum_threads_once<B>(
    b: &B,
    host: &[f32],
    buf: &mut Vec<f32>,
    threads: usize,
) -> Result<f64, B::Error>
where
    B: Backend<Buffer = Vec<f32>>,
{
    b.upload(host, buf)?;
    let t = Instant::now();
    black_box(sum_threads(black_box(buf), threads));
    Ok(t.elapsed().as_secs_f64())
}

/// Uploads `host` into `buf` (untimed), then times one [`sum`] over `buf`, in seconds.
///
/// # Errors
/// The backend's upload errors.
pub fn sum_once<B>(b: &B, host: &[f32], buf: &mut Vec<f32>) -> Result<f64, B::Error>
where
    B: Backend<Buffer = Vec<f32>>,
{
    b.upload(host, buf)?;
    let t = Instant::now();
    black_box(sum(black_box(buf)));
    Ok(t.elapsed().as_secs_f64())
}

/// Uploads `host` into `buf` (untimed), then times one encode into `out`: seconds and the
/// summary.
///
/// # Errors
/// The backend's errors.
pub fn encode_once<B: Backend>(
    b: &B,
    host: &[f32],
    buf: &mut B::Buffer,
    params: &EncodeParams,
    out: &mut [u8],
) -> Result<(f64, EncodeSummary), B::Error> {
    b.upload(host, buf)?;
    b.sync()?;
    let t = Instant::now();
    let s = b.encode(buf, params, out)?;
    b.sync()?;
    Ok((t.elapsed().as_secs_f64(), s))
}

/// Times one decode-add of `msg` into `target`, in seconds.
///
/// # Errors
/// The backend's errors.
pub fn decode_once<B: Backend>(
    b: &B,
    msg: &MessageView<'_>,
    target: &mut B::Buffer,
) -> Result<f64, B::Error> {
    b.sync()?;
    let t = Instant::now();
    b.decode_add(msg, target)?;
    b.sync()?;
    Ok(t.elapsed().as_secs_f64())
}

/// An output buffer large enough for any message of `n` elements in this mode.
pub fn out_buffer(n: usize, params: &EncodeParams) -> Vec<u8> {
    let len = if params.mode == gradcast_core::codec::EncodingMode::Dense
        || params.mode == gradcast_core::codec::EncodingMode::Sparse
    {
        wire::dense_message_len(n)
    } else {
        wire::max_message_len(n)
    };
    vec![0u8; len]
}

/// Times `reps` runs of [`sum`] over a backend-owned buffer ([`sum_once`]).
///
/// # Errors
/// The backend's upload errors.
pub fn time_sum<B>(b: &B, host: &[f32], reps: usize) -> Result<Timing, B::Error>
where
    B: Backend<Buffer = Vec<f32>>,
{
    let mut buf = b.alloc(host.len())?;
    let samples = (0..reps)
        .map(|_| sum_once(b, host, &mut buf))
        .collect::<Result<_, _>>()?;
    Ok(Timing { samples })
}

/// Times `reps` encodes of `host` ([`encode_once`]) and returns the timing, the last
/// summary and the last message's bytes.
///
/// # Errors
/// The backend's errors.
pub fn time_encode<B: Backend>(
    b: &B,
    host: &[f32],
    params: &EncodeParams,
    reps: usize,
) -> Result<(Timing, EncodeSummary, Vec<u8>), B::Error> {
    let mut buf = b.alloc(host.len())?;
    let mut out = out_buffer(host.len(), params);
    let mut samples = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps.max(1) {
        let (t, s) = encode_once(b, host, &mut buf, params, &mut out)?;
        samples.push(t);
        last = Some(s);
    }
    let s = last.ok_or_else(|| {
        B::Error::from(gradcast_core::Error::Wire(
            gradcast_core::WireError::EmptyVector,
        ))
    })?;
    out.truncate(s.bytes);
    Ok((Timing { samples }, s, out))
}

/// Times `reps` decode-adds of `msg` into a zeroed vector of `n` elements (not reset between
/// runs: every run does the same work).
///
/// # Errors
/// The backend's errors ([`gradcast_core::CodecError::TargetSizeMismatch`] when `n` does not fit).
pub fn time_decode<B: Backend>(
    b: &B,
    msg: &MessageView<'_>,
    n: usize,
    reps: usize,
) -> Result<Timing, B::Error> {
    let mut target = b.alloc(n)?;
    let samples = (0..reps)
        .map(|_| decode_once(b, msg, &mut target))
        .collect::<Result<_, _>>()?;
    Ok(Timing { samples })
}

/// One configuration's results in a [`CpuReport`].
#[derive(Clone, Debug, PartialEq)]
pub struct CpuRow {
    /// A label (`"portable"`, `"fast 1 thread"`, ...).
    pub label: String,
    /// The backend's name (says whether AVX2 was used).
    pub backend: String,
    /// Threads the configuration may use (chunks per call; 1 for the portable path).
    pub threads: usize,
    /// The read bandwidth reference of this row: [`sum_threads`] with the row's thread
    /// count over the same buffer, in the same rounds.
    pub read: Timing,
    /// Encode times.
    pub encode: Timing,
    /// Decode-add times.
    pub decode: Timing,
}

/// Encode and decode of one synthetic residual by several CPU configurations, with the read
/// bandwidth of the same buffer measured in the same run.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuReport {
    /// Elements.
    pub n: usize,
    /// The requested fraction of elements at or above the threshold.
    pub density: f64,
    /// The encoding written.
    pub encoding: Encoding,
    /// Entries sent.
    pub entries: u32,
    /// Message length in bytes.
    pub message_bytes: usize,
    /// Whether every configuration wrote the same bytes (they must).
    pub messages_identical: bool,
    /// [`sum`] over the buffer (one thread).
    pub read: Timing,
    /// [`MessageView::parse`] of the message (header, CRC-32C, every entry): the validation
    /// a receiver does before decoding.
    pub parse: Timing,
    /// [`wire::checksum`] alone over the message (the CRC-32C part of the parse).
    pub crc: Timing,
    /// One row per configuration.
    pub rows: Vec<CpuRow>,
}

impl CpuReport {
    /// Bytes of residual each operation covers (`4 n`).
    pub fn bytes(&self) -> usize {
        4 * self.n
    }

    /// The one-thread read bandwidth in GB/s (best run).
    pub fn read_gbps(&self) -> f64 {
        self.read.best_gbps(self.bytes())
    }

    /// The read bandwidth with a row's thread count in GB/s (best run).
    pub fn row_read_gbps(&self, row: &CpuRow) -> f64 {
        row.read.best_gbps(self.bytes())
    }

    /// A row's encode throughput as a fraction of the read bandwidth with the row's thread
    /// count (best times: the least disturbed run of each).
    pub fn encode_ratio(&self, row: &CpuRow) -> f64 {
        ratio(row.read.best(), row.encode.best())
    }

    /// Entries per second a row validates ([`MessageView::parse`]) and adds into a vector
    /// (best times of each).
    pub fn validated_entries_per_s(&self, row: &CpuRow) -> f64 {
        ratio(self.entries as f64, self.parse.best() + row.decode.best())
    }

    /// A row's decode throughput as a fraction of the read bandwidth with the row's thread
    /// count (best times).
    pub fn decode_ratio(&self, row: &CpuRow) -> f64 {
        ratio(row.read.best(), row.decode.best())
    }
}

/// The threads a configuration runs on: its chunk count on the fast path, 1 on the
/// portable path.
fn row_threads(cpu: &Cpu) -> usize {
    match cpu.config().path {
        crate::Path::Portable => 1,
        crate::Path::Fast => cpu.config().threads,
    }
}

/// `reference / t`: a speed relative to the reference's when both are times (0 when `t` is
/// not positive).
fn ratio(reference: f64, t: f64) -> f64 {
    if t > 0.0 { reference / t } else { 0.0 }
}

/// The configurations `gradcast bench` and the encode benchmark measure: the portable path,
/// and the fast path on one thread and on every thread of the machine.
pub fn standard_configs() -> Vec<(String, CpuConfig)> {
    let fast = CpuConfig::fast();
    vec![
        ("portable".into(), CpuConfig::portable()),
        ("fast, 1 thread".into(), fast.with_threads(1)),
        (alloc::format!("fast, {} threads", fast.threads), fast),
    ]
}

/// Measures every configuration on one synthetic residual of `n` elements at `density`
/// and the read bandwidth of the same buffer, in `reps` interleaved rounds (each round: the
/// one-thread sum, then for every configuration a sum with its thread count, its encode and
/// its decode), so that a noisy neighbour slows all of them alike. Every configuration's message is compared with the first one's
/// ([`CpuReport::messages_identical`]). The residual and the decode target are allocated
/// with the first configuration's [`CpuConfig::huge_pages`].
///
/// # Errors
/// Backend errors.
pub fn cpu_report(
    n: usize,
    density: f64,
    reps: usize,
    configs: &[(String, CpuConfig)],
) -> Result<CpuReport, CpuError> {
    let host = synthetic_residual(n, density, 0x9E37_79B9 ^ n as u64);
    let params = EncodeParams::new(TAU);
    let cpus: Vec<Cpu> = configs.iter().map(|(_, c)| Cpu::new(*c)).collect();
    let huge = configs.first().is_none_or(|(_, c)| c.huge_pages);
    let any = Cpu::new(CpuConfig::portable().with_huge_pages(huge));
    let mut buf = any.alloc(n)?;
    let mut target = any.alloc(n)?;
    let mut out = out_buffer(n, &params);
    let mut first: Vec<u8> = Vec::new();
    let mut summary = None;
    let mut identical = true;
    let mut read = Timing {
        samples: Vec::new(),
    };
    let mut enc = vec![
        Timing {
            samples: Vec::new()
        };
        cpus.len()
    ];
    let mut dec = enc.clone();
    let mut reads = enc.clone();
    let mut parse = Timing {
        samples: Vec::new(),
    };
    let mut crc = Timing {
        samples: Vec::new(),
    };
    for _ in 0..reps.max(1) {
        read.samples.push(sum_once(&any, &host, &mut buf)?);
        for (k, cpu) in cpus.iter().enumerate() {
            let threads = row_threads(cpu);
            reads[k]
                .samples
                .push(sum_threads_once(&any, &host, &mut buf, threads)?);
            let (t, s) = encode_once(cpu, &host, &mut buf, &params, &mut out)?;
            enc[k].samples.push(t);
            let bytes = &out[..s.bytes];
            if summary.is_none() {
                first = bytes.to_vec();
                summary = Some(s);
            } else {
                identical &= first == bytes;
            }
            let t = Instant::now();
            let msg = black_box(MessageView::parse(black_box(bytes)))
                .map_err(gradcast_core::Error::from)?;
            if k == 0 {
                parse.samples.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                black_box(wire::checksum(
                    black_box(&bytes[..wire::HEADER_LEN - 4]),
                    black_box(&bytes[wire::HEADER_LEN..]),
                ));
                crc.samples.push(t.elapsed().as_secs_f64());
            }
            dec[k].samples.push(decode_once(cpu, &msg, &mut target)?);
        }
    }
    let rows = configs
        .iter()
        .zip(&cpus)
        .zip(enc.into_iter().zip(dec).zip(reads))
        .map(|(((label, _), cpu), ((encode, decode), read))| CpuRow {
            label: label.clone(),
            backend: String::from(cpu.name()),
            threads: row_threads(cpu),
            read,
            encode,
            decode,
        })
        .collect();
    let summary = summary.unwrap_or(EncodeSummary {
        encoding: Encoding::Sparse,
        entries: 0,
        candidates: 0,
        bytes: 0,
        truncated: false,
    });
    Ok(CpuReport {
        n,
        density,
        encoding: summary.encoding,
        entries: summary.entries,
        message_bytes: summary.bytes,
        messages_identical: identical,
        read,
        parse,
        crc,
        rows,
    })
}

/// The cost of one round of the round protocol, next to a dense in-process exchange of the
/// same N, measured in the same run ([`round_cost`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RoundCost {
    /// Elements per vector.
    pub n: usize,
    /// Parties (threads, one replica each).
    pub parties: usize,
    /// The requested fraction of each update's elements at or above the threshold.
    pub density: f64,
    /// Entries sent per party per round (mean over the timed rounds).
    pub entries: f64,
    /// Bytes published per party per round (mean).
    pub bytes: f64,
    /// One gradcast round, as party 0 saw it: `store_update` (residual += update, encode,
    /// validate, publish) and `apply_update` (exchange, decode every packet, step, both
    /// barriers), seconds, one sample per timed round.
    pub round: Timing,
    /// One dense in-process round: every party sums the P updates (P vectors of N floats)
    /// and steps its replica with the sum, between two barriers; seconds per round.
    pub dense: Timing,
    /// One thread reading N floats ([`sum`]), seconds.
    pub read: Timing,
    /// Whether every party's replica came out bit-identical (they must).
    pub replicas_identical: bool,
}

impl RoundCost {
    /// gradcast round time / dense round time (medians; below 1: gradcast is cheaper).
    pub fn vs_dense(&self) -> f64 {
        // `ratio(a, b)` is `a / b`.
        ratio(self.round.median(), self.dense.median())
    }

    /// gradcast round time / time to read N floats once (medians).
    pub fn vs_read(&self) -> f64 {
        ratio(self.round.median(), self.read.median())
    }
}

/// Party `p`'s update for round `r`: about a `density` fraction of the elements `±[1, 2)`
/// (over [`TAU`]), the others `±[0, small)`, so that `rounds` of them never push an element
/// over the threshold on their own. Two updates per party alternate.
fn round_update(n: usize, density: f64, p: usize, r: usize, small: f32) -> Vec<f32> {
    let seed = 0x5EED_0000 ^ ((p as u64) << 8) ^ (r as u64 % 2);
    synthetic_residual(n, density, seed)
        .into_iter()
        .map(|v| if v.abs() >= TAU { v } else { v * small })
        .collect()
}

/// Runs `rounds` rounds (after one untimed warm-up round) of P parties on one [`Cpu`] with
/// the default configuration (its chunks on the process's shared worker pool) and a
/// [`gradcast_core::packet::FixedEncoder`] at [`TAU`], in-process ([`gradcast_core::round::Local`]
/// transport, [`gradcast_core::barrier::Park`] barriers, so that parties beyond the cores
/// sleep instead of spinning); then the same number of dense rounds; then the read time of
/// N floats, all in the same run.
///
/// # Errors
/// Round protocol or backend errors, as text.
pub fn round_cost(
    n: usize,
    parties: usize,
    density: f64,
    rounds: usize,
) -> Result<RoundCost, String> {
    use gradcast_core::barrier::Park;
    use gradcast_core::packet::FixedEncoder;
    use gradcast_core::round::{Accumulator, Local, RoundConfig, Step, Ticket};
    use std::sync::Barrier;

    let p = parties.max(1);
    let rounds = rounds.max(1);
    let small = 0.99 / (rounds + 2) as f32;
    let updates: Vec<[Vec<f32>; 2]> = (0..p)
        .map(|q| {
            [
                round_update(n, density, q, 0, small),
                round_update(n, density, q, 1, small),
            ]
        })
        .collect();
    let cpu = Cpu::default();
    let mut config = RoundConfig::new(p, n);
    config.step = Step::Mean;
    let mut acc: Accumulator<Cpu, FixedEncoder, Local, Park> =
        Accumulator::new(cpu, config, vec![FixedEncoder::new(TAU); p], Local)
            .map_err(|e| alloc::format!("round protocol: {e}"))?;
    let backend = Cpu::default();
    let mut replicas: Vec<Vec<f32>> = (0..p).map(|_| vec![0.0f32; n]).collect();
    let mut grads: Vec<Vec<Vec<f32>>> = Vec::with_capacity(p);
    for u in &updates {
        let mut pair = Vec::with_capacity(2);
        for h in u {
            let mut b = backend.alloc(n).map_err(|e| e.to_string())?;
            backend.upload(h, &mut b).map_err(|e| e.to_string())?;
            pair.push(b);
        }
        grads.push(pair);
    }
    let first = acc.next_round();
    type PartyResult = Result<(Vec<f64>, f64, f64), String>;
    let results: Vec<PartyResult> = std::thread::scope(|s| {
        let handles: Vec<_> = acc
            .parties()
            .zip(replicas.iter_mut())
            .zip(grads.iter())
            .map(|((mut party, params), grad)| {
                s.spawn(move || -> PartyResult {
                    let mut times = Vec::with_capacity(rounds);
                    let (mut entries, mut bytes) = (0.0, 0.0);
                    for r in 0..=rounds {
                        let ticket = Ticket::new(first + r as u64, p);
                        let t0 = Instant::now();
                        let published = party
                            .store_update(ticket, &grad[r % 2])
                            .map_err(|e| e.to_string())?;
                        let summary = party.apply_update(params).map_err(|e| e.to_string())?;
                        let t = t0.elapsed().as_secs_f64();
                        if r > 0 {
                            times.push(t);
                            bytes += published.bytes as f64;
                            entries +=
                                (published.bytes.saturating_sub(wire::HEADER_LEN) / 4) as f64;
                        }
                        black_box(summary);
                    }
                    Ok((times, entries / rounds as f64, bytes / rounds as f64))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a party panicked".into())))
            .collect()
    });
    let mut own = Vec::new();
    for r in results {
        own.push(r?);
    }
    let (round_times, entries, bytes) = own.swap_remove(0);
    let replicas_identical = replicas.iter().all(|x| {
        x.iter()
            .map(|v| v.to_bits())
            .eq(replicas[0].iter().map(|v| v.to_bits()))
    });
    drop(acc);
    drop(grads);

    // Dense: every party sums the P updates and steps its replica, between two barriers.
    let start = Barrier::new(p);
    let end = Barrier::new(p);
    let scale = 1.0 / p as f32;
    let dense_times: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = replicas
            .iter_mut()
            .enumerate()
            .map(|(q, params)| {
                let (start, end, updates) = (&start, &end, &updates);
                s.spawn(move || {
                    let mut times = Vec::with_capacity(rounds);
                    for r in 0..=rounds {
                        start.wait();
                        let t0 = Instant::now();
                        dense_step(params, updates, r % 2, scale);
                        end.wait();
                        if r > 0 && q == 0 {
                            times.push(t0.elapsed().as_secs_f64());
                        }
                    }
                    times
                })
            })
            .collect();
        let mut first = Vec::new();
        for (q, h) in handles.into_iter().enumerate() {
            let t = h.join().unwrap_or_default();
            if q == 0 {
                first = t;
            }
        }
        first
    });
    let read = Timing {
        samples: (0..rounds)
            .map(|_| {
                let t = Instant::now();
                black_box(sum(black_box(&updates[0][0])));
                t.elapsed().as_secs_f64()
            })
            .collect(),
    };
    Ok(RoundCost {
        n,
        parties: p,
        density,
        entries,
        bytes,
        round: Timing {
            samples: round_times,
        },
        dense: Timing {
            samples: dense_times,
        },
        read,
        replicas_identical,
    })
}

/// `params[i] -= scale * (u_0[i] + ... + u_{P-1}[i])` over every party's update `which`, in
/// blocks of 4096 elements so that the P inputs stream together.
fn dense_step(params: &mut [f32], updates: &[[Vec<f32>; 2]], which: usize, scale: f32) {
    const B: usize = 4096;
    let mut acc = [0.0f32; B];
    for (k, p) in params.chunks_mut(B).enumerate() {
        let acc = &mut acc[..p.len()];
        acc.fill(0.0);
        for u in updates {
            for (a, v) in acc.iter_mut().zip(&u[which][k * B..k * B + p.len()]) {
                *a += *v;
            }
        }
        for (x, a) in p.iter_mut().zip(acc.iter()) {
            *x -= scale * *a;
        }
    }
}

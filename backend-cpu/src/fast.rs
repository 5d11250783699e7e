//! The fast path (`std`): the widest SIMD lanes the CPU has (AVX-512, AVX2, or plain loops),
//! and chunks run on the process's shared worker pool ([`parallel`]).
//!
//! # Encode
//!
//! The segment is cut into contiguous chunks of a multiple of [`BLOCK`] elements (so every
//! chunk starts on a bitmap byte), at most [`crate::CpuConfig::threads`] of them.
//!
//! 1. **Pass 1** (parallel): each chunk validates its elements and counts its candidates
//!    before and from the cap's start offset. While a chunk has few candidates (at most one
//!    in 16 elements) it also records each one (sparse entry, original bits) and debits it at
//!    once, so a sparse message needs no second walk over the residual.
//! 2. On a non-finite element or an output buffer that is too small, every chunk puts its
//!    original bits back (exactly: they were saved) and the error of the lowest index is
//!    returned, so the residual is unchanged, as the reference promises.
//! 3. The shared [`Plan`] turns the counts into the selection; each chunk's quota (how many
//!    of its candidates before and after the cap's start are sent) comes from walking the
//!    chunks in index order, and its first output slot from an exclusive scan of the quotas.
//! 4. **Pass 2** (parallel): each chunk writes its entries into its own part of the payload
//!    (sparse: its slots; bitmap: its bytes), from its list or by walking again, and restores
//!    the speculative debits of candidates the cap left out.
//! 5. The header and the checksum are written (CRC-32C with the CPU's CRC instruction).
//!
//! The result depends only on the data, never on the number of chunks or threads.

use crate::kernels::{self, BLOCK, BitmapSink, ChunkScan, Recs, Scalar, Sink, SparseSink};
use crate::{Cpu, Quotas, Simd, cap_split, seal};
use alloc::vec::Vec;
use core::ops::Range;
use gradcast_core::CodecError;
use gradcast_core::Error;
use gradcast_core::codec::{
    EncodeParams, EncodeSummary, EncodingMode, Plan, check_tau, segment_range,
};
use gradcast_core::wire::{Encoding, HEADER_LEN, MessageView};
use rayon::prelude::*;

/// Instructions this CPU was found to have: only [`Isa::detect`] makes one, which is what
/// makes the kernels' `unsafe` calls below sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa(Simd);

impl Isa {
    /// The best instructions at most `allowed` that this CPU has (detected at run time).
    pub(crate) fn detect(allowed: Simd) -> Isa {
        Isa(detect(allowed))
    }

    /// Which instructions.
    pub(crate) fn simd(self) -> Simd {
        self.0
    }
}

fn detect(allowed: Simd) -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("bmi1")
            && std::is_x86_feature_detected!("popcnt");
        if allowed >= Simd::Avx512 && avx2 && std::is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if allowed >= Simd::Avx2 && avx2 {
            return Simd::Avx2;
        }
    }
    let _ = allowed;
    Simd::None
}

/// The kernels compiled for each instruction set.
impl Isa {
    fn count(self, x: &[f32], split: usize, tau: f32) -> Result<(usize, usize), (usize, u32)> {
        match self.0 {
            // SAFETY: AVX-512F (and AVX2, BMI1, POPCNT) were detected by `detect`.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { kernels::avx512::count(x, split, tau) },
            // SAFETY: AVX2, BMI1 and POPCNT were detected by `detect`.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { kernels::avx2::count(x, split, tau) },
            // SAFETY: `Scalar` uses no special instructions.
            _ => unsafe { kernels::count_chunk::<Scalar>(x, split, tau) },
        }
    }

    fn record(
        self,
        x: &mut [f32],
        base: usize,
        split: usize,
        tau: f32,
        limit: usize,
        list: &mut Recs,
    ) -> Result<ChunkScan, (usize, u32)> {
        match self.0 {
            // SAFETY: detected by `detect`.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { kernels::avx512::record(x, base, split, tau, limit, list) },
            // SAFETY: detected by `detect`.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { kernels::avx2::record(x, base, split, tau, limit, list) },
            // SAFETY: `Scalar` uses no special instructions.
            _ => unsafe { kernels::record_chunk::<Scalar>(x, base, split, tau, limit, list) },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn select(
        self,
        x: &mut [f32],
        base: usize,
        split: usize,
        tau: f32,
        q_lo: usize,
        q_hi: usize,
        sink: &mut impl Sink,
    ) {
        match self.0 {
            // SAFETY: detected by `detect`; the chunk was validated.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe {
                kernels::avx512::select(x, base, split, tau, q_lo, q_hi, sink)
            },
            // SAFETY: detected by `detect`; the chunk was validated.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { kernels::avx2::select(x, base, split, tau, q_lo, q_hi, sink) },
            // SAFETY: `Scalar` uses no special instructions; the chunk was validated.
            _ => unsafe { kernels::select_chunk::<Scalar>(x, base, split, tau, q_lo, q_hi, sink) },
        }
    }
}

/// Runs `f` on every item and returns the results in item order: on the calling thread for
/// one item, else on rayon's global pool.
///
/// One pool per process, shared by every [`Cpu`] and every party that uses one: P parties
/// each asking for T chunks queue their chunks on the same `available_parallelism` workers
/// (the callers block meanwhile), so the cores are never oversubscribed, and no thread is
/// started per call. rayon's indexed `collect` keeps item order, and the kernels' results
/// do not depend on which worker ran a chunk, so the output is the same whatever the pool.
pub(crate) fn parallel<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    items.into_par_iter().map(f).collect()
}

/// The chunk length (a multiple of [`BLOCK`]) for `n` elements under this configuration.
fn chunk_len(cpu: &Cpu, n: usize) -> usize {
    let threads = cpu.config.threads.max(1);
    let min = cpu.config.min_chunk.max(BLOCK);
    let chunks = (n / min).clamp(1, threads);
    n.div_ceil(chunks).div_ceil(BLOCK).max(1) * BLOCK
}

/// Where the cap's split falls inside the chunk starting at `base` of length `len`.
fn local_split(split: usize, base: usize, len: usize) -> usize {
    split.saturating_sub(base).min(len)
}

/// Counts `|x| >= tau` over `range` with parallel chunks.
pub(crate) fn count(cpu: &Cpu, x: &[f32], range: Range<usize>, tau: f32) -> Result<u64, Error> {
    gradcast_core::backend::check_range(&range, x.len())?;
    check_tau(tau)?;
    let start = range.start;
    let seg = &x[range];
    let clen = chunk_len(cpu, seg.len());
    let simd = cpu.isa;
    let items: Vec<_> = seg.chunks(clen).enumerate().collect();
    let results = parallel(items, |(c, x)| {
        simd.count(x, 0, tau)
            .map_err(|(j, bits)| (c * clen + j, bits))
    });
    let mut total = 0u64;
    for r in results {
        let (lo, hi) = r.map_err(|(j, bits)| CodecError::NonFinite {
            index: start + j,
            bits,
        })?;
        total += (lo + hi) as u64;
    }
    Ok(total)
}

/// What pass 1 reported for one chunk.
type Pass1 = Result<ChunkScan, (usize, u32)>;

/// Encodes and commits, exactly as [`gradcast_core::codec::encode`]. See the module docs.
pub(crate) fn encode(
    cpu: &Cpu,
    residual: &mut [f32],
    params: &EncodeParams,
    out: &mut [u8],
) -> Result<EncodeSummary, Error> {
    check_tau(params.tau)?;
    let range = segment_range(params, residual.len())?;
    let offset = range.start;
    let seg = &mut residual[range];
    let n = seg.len();
    let tau = params.tau;
    let split = cap_split(params, n);
    let clen = chunk_len(cpu, n);
    let simd = cpu.isa;

    if params.mode == EncodingMode::Dense {
        return encode_dense(cpu, seg, offset, params, out, clen);
    }

    let mut lists = cpu.take_lists();
    let chunks = n.div_ceil(clen);
    if lists.len() < chunks {
        lists.resize_with(chunks, Recs::default);
    }
    // At most one candidate in 16 elements is recorded: beyond that a bitmap is likely, and
    // walking again costs less than a long list.
    let limit = clen / 16 + 16;

    // Pass 1: validate, count, record and debit speculatively.
    let items: Vec<_> = seg
        .chunks_mut(clen)
        .zip(lists.iter_mut())
        .enumerate()
        .collect();
    let scans: Vec<Pass1> = parallel(items, |(c, (x, list))| {
        let base = c * clen;
        let len = x.len();
        simd.record(x, base, local_split(split, base, len), tau, limit, list)
    });

    let undo = |seg: &mut [f32], scans: &[Pass1], lists: &[Recs]| {
        for ((c, x), s) in seg.chunks_mut(clen).enumerate().zip(scans) {
            if let Ok(ChunkScan { listed: true, .. }) = s {
                lists[c].restore(x, c * clen);
            }
        }
    };
    let mut lo_total = 0;
    let mut hi_total = 0;
    let mut failure = None;
    for (c, s) in scans.iter().enumerate() {
        match s {
            Ok(s) => {
                lo_total += s.lo;
                hi_total += s.hi;
            }
            Err((j, bits)) => {
                failure = Some(CodecError::NonFinite {
                    index: offset + c * clen + j,
                    bits: *bits,
                });
                break;
            }
        }
    }
    let plan = match failure {
        Some(e) => Err(Error::Codec(e)),
        None => Plan::new(params, n, lo_total + hi_total, out.len(), |start| {
            debug_assert_eq!(start, split);
            hi_total
        }),
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            undo(seg, &scans, &lists);
            cpu.put_lists(lists);
            return Err(e);
        }
    };

    // Quotas in index order, and each chunk's part of the payload.
    let mut quotas = Quotas::new(&plan);
    let encoding = plan.encoding;
    let mut rest: &mut [u8] = &mut out[HEADER_LEN..plan.bytes];
    let mut items = Vec::with_capacity(chunks);
    for (c, ((x, s), list)) in seg
        .chunks_mut(clen)
        .zip(scans.iter())
        .zip(lists.iter())
        .enumerate()
    {
        // Every scan is `Ok` here: a failure returned above.
        let Ok(scan) = *s else { continue };
        let (q_lo, q_hi) = quotas.take(scan.lo, scan.hi);
        let bytes = match encoding {
            Encoding::Sparse => 4 * (q_lo + q_hi),
            _ => x.len().div_ceil(4),
        };
        let at = bytes.min(rest.len());
        let (mine, tail) = core::mem::take(&mut rest).split_at_mut(at);
        rest = tail;
        let work = Pass2 {
            base: c * clen,
            x,
            scan,
            list,
            q_lo,
            q_hi,
        };
        items.push((work, mine));
    }

    // Pass 2: write each chunk's entries and settle its debits. Copying fewer recorded
    // entries than a minimal chunk holds elements is not worth starting threads for.
    let from_lists = items.iter().all(|(it, _)| it.scan.listed);
    let serial = from_lists && plan.candidates < cpu.config.min_chunk;
    let pass2 = |(it, out): (Pass2<'_>, &mut [u8])| {
        let split = local_split(split, it.base, it.x.len());
        match encoding {
            Encoding::Sparse => {
                let mut sink = SparseSink { out, pos: 0 };
                it.run(simd, split, tau, &mut sink);
            }
            _ => {
                out.fill(0);
                let mut sink = BitmapSink {
                    bytes: out,
                    base: it.base,
                };
                it.run(simd, split, tau, &mut sink);
            }
        }
    };
    if serial {
        items.into_iter().for_each(pass2);
    } else {
        parallel(items, pass2);
    }
    cpu.put_lists(lists);
    Ok(seal(out, &plan, params, n))
}

/// One chunk's work in pass 2.
struct Pass2<'a> {
    /// The chunk's first index in the segment.
    base: usize,
    /// The chunk.
    x: &'a mut [f32],
    /// What pass 1 found.
    scan: ChunkScan,
    /// Its recorded candidates (when `scan.listed`).
    list: &'a Recs,
    /// Candidates to send before the cap's start.
    q_lo: usize,
    /// Candidates to send from the cap's start on.
    q_hi: usize,
}

impl Pass2<'_> {
    fn run(self, simd: Isa, split: usize, tau: f32, sink: &mut impl Sink) {
        if self.scan.listed {
            kernels::emit_listed(
                self.x,
                self.base,
                self.list,
                self.scan.lo,
                self.q_lo,
                self.q_hi,
                sink,
            );
        } else {
            simd.select(self.x, self.base, split, tau, self.q_lo, self.q_hi, sink);
        }
    }
}

/// Dense (warm-up) encode: validate in parallel, then copy every value and leave `+0.0`.
fn encode_dense(
    cpu: &Cpu,
    seg: &mut [f32],
    offset: usize,
    params: &EncodeParams,
    out: &mut [u8],
    clen: usize,
) -> Result<EncodeSummary, Error> {
    let n = seg.len();
    let tau = params.tau;
    let simd = cpu.isa;
    let items: Vec<_> = seg.chunks(clen).enumerate().collect();
    let counts = parallel(items, |(c, x)| {
        simd.count(x, 0, tau)
            .map_err(|(j, bits)| (c * clen + j, bits))
    });
    let mut candidates = 0;
    for r in counts {
        let (lo, hi) = r.map_err(|(j, bits)| CodecError::NonFinite {
            index: offset + j,
            bits,
        })?;
        candidates += lo + hi;
    }
    let plan = Plan::new(params, n, candidates, out.len(), |_| 0)?;
    let payload = &mut out[HEADER_LEN..plan.bytes];
    let items: Vec<_> = seg
        .chunks_mut(clen)
        .zip(payload.chunks_mut(4 * clen))
        .collect();
    parallel(items, |(x, o)| kernels::encode_dense(x, o));
    Ok(seal(out, &plan, params, n))
}

/// The size of a transparent huge page on x86-64 and on aarch64 with 4 KiB pages (on other
/// page sizes a multiple of the base page, so still a valid `madvise` range).
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB-aligned part of `buf` with transparent huge pages.
/// Called on fresh, untouched allocations, so the first write of each 2 MiB region faults
/// in a huge page (with the kernel's THP mode `always` or `madvise`). Only an advice: the
/// contents never change and a refusal (THP off, an old kernel) is ignored.
pub(crate) fn advise_huge_pages(buf: &mut [f32]) {
    #[cfg(target_os = "linux")]
    {
        let start = buf.as_mut_ptr() as usize;
        let end = start + core::mem::size_of_val(buf);
        let from = start.next_multiple_of(HUGE_PAGE);
        let to = end / HUGE_PAGE * HUGE_PAGE;
        if to > from {
            // SAFETY: `[from, to)` lies inside `buf`, which is borrowed mutably, and is
            // page-aligned; MADV_HUGEPAGE changes how the kernel backs those pages, never
            // their contents or the mapping, so no Rust reference is affected.
            let _ =
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// The fewest sparse entries a decode thread handles.
const SPARSE_DECODE_PER_THREAD: usize = 1 << 15;

/// Adds a validated message into `target` with parallel chunks, exactly as
/// [`gradcast_core::codec::decode_add`]: every element is changed by at most one entry, so
/// the split cannot change the result.
pub(crate) fn decode_add(
    cpu: &Cpu,
    msg: &MessageView<'_>,
    target: &mut [f32],
) -> Result<(), Error> {
    let range = msg.target_range(target.len())?;
    let seg = &mut target[range];
    let tau = msg.tau();
    let payload = msg.payload();
    let clen = chunk_len(cpu, seg.len());
    match msg.encoding() {
        Encoding::Sparse => {
            let k = payload.len() / 4;
            // A thread is worth its start-up only for many entries.
            let groups = seg
                .len()
                .div_ceil(clen)
                .min(k / SPARSE_DECODE_PER_THREAD)
                .max(1);
            if groups <= 1 {
                kernels::decode_sparse(seg, 0, payload, tau);
                return Ok(());
            }
            // Cut the entries into groups and the target at each group's first index.
            let mut items = Vec::with_capacity(groups);
            let mut rest: &mut [f32] = seg;
            let mut base = 0;
            let mut from = 0;
            for g in 1..=groups {
                let to = if g == groups { k } else { g * k / groups };
                let cut = if g == groups {
                    base + rest.len()
                } else {
                    let c = &payload[4 * to..4 * to + 4];
                    i32::from_le_bytes([c[0], c[1], c[2], c[3]]).unsigned_abs() as usize - 1
                };
                let at = cut.saturating_sub(base).min(rest.len());
                let (mine, tail) = core::mem::take(&mut rest).split_at_mut(at);
                items.push((mine, base, &payload[4 * from..4 * to]));
                rest = tail;
                base = cut.max(base);
                from = to;
            }
            parallel(items, |(t, base, e)| {
                kernels::decode_sparse(t, base, e, tau)
            });
        }
        Encoding::Bitmap => {
            let items: Vec<_> = seg.chunks_mut(clen).zip(payload.chunks(clen / 4)).collect();
            parallel(items, |(t, b)| kernels::decode_bitmap(t, b, tau));
        }
        Encoding::Dense => {
            let items: Vec<_> = seg.chunks_mut(clen).zip(payload.chunks(4 * clen)).collect();
            parallel(items, |(t, v)| kernels::decode_dense(t, v));
        }
    }
    Ok(())
}

/// `dst[i] += src[i]` over parallel chunks.
pub(crate) fn add_assign(cpu: &Cpu, dst: &mut [f32], src: &[f32]) {
    let clen = chunk_len(cpu, dst.len());
    let items: Vec<_> = dst.chunks_mut(clen).zip(src.chunks(clen)).collect();
    parallel(items, |(d, s)| {
        for (d, s) in d.iter_mut().zip(s) {
            *d += *s;
        }
    });
}

/// `params[i] -= scale * update[i]` (never fused) over parallel chunks.
pub(crate) fn sub_scaled(cpu: &Cpu, params: &mut [f32], update: &[f32], scale: f32) {
    let clen = chunk_len(cpu, params.len());
    let items: Vec<_> = params.chunks_mut(clen).zip(update.chunks(clen)).collect();
    parallel(items, |(p, u)| {
        gradcast_core::backend::slices::sub_scaled(p, u, scale)
    });
}

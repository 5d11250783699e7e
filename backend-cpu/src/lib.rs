//! # gradcast-cpu
//!
//! The CPU backend of gradcast: an implementation of [`gradcast_core::Backend`] over host
//! `Vec<f32>` buffers whose messages are byte-identical, and whose residuals bit-identical,
//! to the core's reference codec, whatever the configuration.
//!
//! * **Portable path** ([`Path::Portable`], always available, `no_std` + `alloc`): plain
//!   loops, one thread, two passes (validate and count, then write and commit).
//! * **Fast path** ([`Path::Fast`], feature `std`, the default): SIMD lanes chosen at run time
//!   with `is_x86_feature_detected!` (AVX-512 with its compress instruction, else AVX2, else
//!   plain loops; [`CpuConfig::simd`] caps the choice, [`Cpu::simd`] says which runs),
//!   contiguous chunks run as tasks of one process-wide worker pool (rayon's global pool:
//!   every [`Cpu`] and every party of a process share it, so P parties asking for T chunks
//!   each never run more threads than the pool has; no thread is started per call), and for
//!   sparse messages a single walk over the residual: candidates are found per 512-element
//!   superblock without a branch per block, recorded and debited speculatively, and put
//!   back exactly if validation fails or the cap leaves them out. See
//!   [`fast`](crate#fast-path).
//!
//! The output never depends on the number of threads: chunks report their candidate
//! counts, the core's [`Plan`] turns them into a selection (the cap and its rotating start
//! included), an exclusive scan gives each chunk its output slots, and chunks write disjoint
//! parts of the payload (bitmap chunks start on a byte, i.e. a multiple of 4 elements).
//!
//! ```
//! use gradcast_core::Backend;
//! use gradcast_core::codec::EncodeParams;
//! use gradcast_core::wire::MessageView;
//! use gradcast_cpu::Cpu;
//!
//! let cpu = Cpu::default();
//! let mut residual = cpu.alloc(4).unwrap();
//! cpu.upload(&[0.5, -2.0, 0.1, 1.0], &mut residual).unwrap();
//! let mut out = [0u8; 64];
//! let s = cpu.encode(&mut residual, &EncodeParams::new(1.0), &mut out).unwrap();
//! assert_eq!(s.entries, 2);
//! assert_eq!(residual, [0.5, -1.0, 0.1, 0.0]);
//! let msg = MessageView::parse(&out[..s.bytes]).unwrap();
//! let mut update = cpu.alloc(4).unwrap();
//! cpu.decode_add(&msg, &mut update).unwrap();
//! assert_eq!(update, [0.0, -1.0, 0.0, 1.0]);
//! ```
//!
//! ## Fast path
//!
//! Pass 1 runs in parallel over chunks: validate, count candidates before and from the cap's
//! start, and (while a chunk has at most one candidate in 16 elements) record and debit
//! them. Errors restore every chunk. The [`Plan`] then fixes the selection, each chunk gets
//! its quota and first slot, and pass 2 writes the payload in parallel. The CRC-32C of the
//! message is the core's [`wire::checksum`] (the CPU's CRC instruction).
//!
//! A round of the round protocol steps with [`Backend::apply_messages`]: for sparse rounds
//! this backend touches only the entries (decode, step, clear), not the whole vector.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod kernels;
mod portable;

#[cfg(feature = "std")]
pub mod bench;
#[cfg(feature = "std")]
mod fast;

pub use error::CpuError;

use alloc::vec::Vec;
use core::ops::Range;
use gradcast_core::backend::{self, Backend, ClipStats, VectorStats, check_same_len, slices};
use gradcast_core::codec::{EncodeParams, EncodeSummary, Plan, cap_start};
use gradcast_core::wire::{self, HEADER_LEN, MessageView};

/// Which implementation a [`Cpu`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Plain loops, one thread; available without `std`.
    Portable,
    /// SIMD (when the CPU has AVX2 and [`CpuConfig::simd`] allows it) and threads over
    /// chunks. Needs feature `std`.
    #[cfg(feature = "std")]
    Fast,
}

/// The widest SIMD instructions the fast path may use. It uses the best the CPU has, up to
/// this (detected at run time), so [`Simd::Avx512`] means "whatever is best".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Simd {
    /// Plain loops.
    None,
    /// AVX2 (with BMI1 and POPCNT), 8 lanes.
    Avx2,
    /// AVX-512F, 16 lanes and the compress instruction.
    Avx512,
}

impl Simd {
    /// A short lowercase name (`"scalar"`, `"avx2"`, `"avx512"`).
    pub fn name(self) -> &'static str {
        match self {
            Simd::None => "scalar",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }
}

/// How a [`Cpu`] backend runs. Every configuration produces the same bytes and bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuConfig {
    /// The implementation.
    pub path: Path,
    /// The most chunks the fast path cuts a vector into, each a task for the process's
    /// worker pool (at least 1; 1 runs on the calling thread).
    pub threads: usize,
    /// The fewest elements a fast-path chunk holds, so that small vectors are not split
    /// into chunks whose thread start-up costs more than the work (default 65536).
    pub min_chunk: usize,
    /// The widest SIMD instructions the fast path may use (the best the CPU has up to
    /// this); [`Simd::None`] forces its scalar fallback.
    pub simd: Simd,
    /// Whether [`Backend::alloc`] asks the kernel to back large buffers with transparent
    /// huge pages (`madvise(MADV_HUGEPAGE)` on Linux with feature `std`; default `true`).
    /// A sparse decode-add touches one element every few KiB of its target: with 4 KiB
    /// pages each entry is a TLB miss too, with 2 MiB pages almost none is. Every 2 MiB
    /// region touched then takes 2 MiB of memory, which a fully used buffer does anyway.
    /// Elsewhere, or if the kernel refuses, it has no effect.
    pub huge_pages: bool,
}

impl CpuConfig {
    /// The portable path.
    pub fn portable() -> Self {
        CpuConfig {
            path: Path::Portable,
            threads: 1,
            min_chunk: 1 << 16,
            simd: Simd::None,
            huge_pages: true,
        }
    }

    /// The fast path with `available_parallelism` threads and SIMD.
    #[cfg(feature = "std")]
    pub fn fast() -> Self {
        CpuConfig {
            path: Path::Fast,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            min_chunk: 1 << 16,
            simd: Simd::Avx512,
            huge_pages: true,
        }
    }

    /// The same configuration with at most `threads` threads (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The same configuration with chunks of at least `min_chunk` elements.
    pub fn with_min_chunk(mut self, min_chunk: usize) -> Self {
        self.min_chunk = min_chunk.max(1);
        self
    }

    /// The same configuration with SIMD allowed (the best the CPU has) or not.
    pub fn with_simd(mut self, simd: bool) -> Self {
        self.simd = if simd { Simd::Avx512 } else { Simd::None };
        self
    }

    /// The same configuration with SIMD instructions up to `simd` (to run a narrower path on
    /// a CPU that has a wider one, as the conformance suite does).
    pub fn with_max_simd(mut self, simd: Simd) -> Self {
        self.simd = simd;
        self
    }

    /// The same configuration with transparent huge pages asked for large buffers or not
    /// ([`CpuConfig::huge_pages`]).
    pub fn with_huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }
}

impl Default for CpuConfig {
    /// The fast path with `std`, the portable path without.
    fn default() -> Self {
        #[cfg(feature = "std")]
        {
            CpuConfig::fast()
        }
        #[cfg(not(feature = "std"))]
        {
            CpuConfig::portable()
        }
    }
}

/// The CPU backend. Buffers are `Vec<f32>` in host memory.
///
/// It holds reusable scratch lists for the fast path (behind a mutex, so `&self` methods
/// may be called from several threads; concurrent encodes allocate their own).
#[derive(Debug)]
pub struct Cpu {
    config: CpuConfig,
    #[cfg(feature = "std")]
    isa: fast::Isa,
    #[cfg(feature = "std")]
    lists: std::sync::Mutex<Vec<kernels::Recs>>,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::new(CpuConfig::default())
    }
}

impl Cpu {
    /// A backend with this configuration.
    pub fn new(config: CpuConfig) -> Self {
        let mut config = config;
        config.threads = config.threads.max(1);
        config.min_chunk = config.min_chunk.max(1);
        Cpu {
            config,
            #[cfg(feature = "std")]
            isa: fast::Isa::detect(config.simd),
            #[cfg(feature = "std")]
            lists: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The portable path.
    pub fn portable() -> Self {
        Cpu::new(CpuConfig::portable())
    }

    /// The fast path with at most `threads` threads.
    #[cfg(feature = "std")]
    pub fn with_threads(threads: usize) -> Self {
        Cpu::new(CpuConfig::fast().with_threads(threads))
    }

    /// The configuration (threads and chunk size clamped to at least 1).
    pub fn config(&self) -> &CpuConfig {
        &self.config
    }

    /// The SIMD instructions this backend's kernels use on this CPU ([`Simd::None`] for the
    /// portable path).
    pub fn simd(&self) -> Simd {
        #[cfg(feature = "std")]
        if self.config.path == Path::Fast {
            return self.isa.simd();
        }
        Simd::None
    }

    /// Whether the fast path of this backend uses AVX2 (and not AVX-512) on this CPU.
    pub fn uses_avx2(&self) -> bool {
        self.simd() == Simd::Avx2
    }

    #[cfg(feature = "std")]
    fn take_lists(&self) -> Vec<kernels::Recs> {
        match self.lists.lock() {
            Ok(mut g) => core::mem::take(&mut *g),
            Err(p) => core::mem::take(&mut *p.into_inner()),
        }
    }

    #[cfg(feature = "std")]
    fn put_lists(&self, lists: Vec<kernels::Recs>) {
        match self.lists.lock() {
            Ok(mut g) => *g = lists,
            Err(p) => *p.into_inner() = lists,
        }
    }
}

/// Where the candidate counts are split: the cap's start offset when a cap is set (the
/// [`Plan`] asks for the candidates from it on when the cap truncates), else 0.
pub(crate) fn cap_split(params: &EncodeParams, n: usize) -> usize {
    if params.cap.is_some() {
        cap_start(params.round, n)
    } else {
        0
    }
}

/// Hands out, chunk by chunk in index order, how many candidates before and from the cap's
/// start each chunk sends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quotas {
    all: bool,
    head: usize,
    tail: usize,
}

impl Quotas {
    pub(crate) fn new(plan: &Plan) -> Self {
        Quotas {
            all: plan.entries >= plan.candidates,
            head: plan.take_head,
            tail: plan.take_tail,
        }
    }

    /// The quotas of the next chunk, which has `lo` candidates before the cap's start and
    /// `hi` from it on.
    pub(crate) fn take(&mut self, lo: usize, hi: usize) -> (usize, usize) {
        if self.all {
            return (lo, hi);
        }
        let a = lo.min(self.head);
        let b = hi.min(self.tail);
        self.head -= a;
        self.tail -= b;
        (a, b)
    }
}

/// Writes the header and the checksum of a message whose payload is in place.
pub(crate) fn seal(out: &mut [u8], plan: &Plan, params: &EncodeParams, n: usize) -> EncodeSummary {
    let header = plan.header(params, n);
    let total = header.message_len();
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    let sum = wire::checksum(&out[..HEADER_LEN - 4], &out[HEADER_LEN..total]);
    out[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    EncodeSummary {
        encoding: plan.encoding,
        entries: plan.entries as u32,
        candidates: plan.candidates as u64,
        bytes: total,
        truncated: header.truncated(),
    }
}

impl Backend for Cpu {
    type Buffer = Vec<f32>;
    type Error = CpuError;

    fn name(&self) -> &str {
        match self.config.path {
            Path::Portable => "cpu-portable",
            #[cfg(feature = "std")]
            Path::Fast => match self.simd() {
                Simd::Avx512 => "cpu-avx512",
                Simd::Avx2 => "cpu-avx2",
                Simd::None => "cpu-scalar",
            },
        }
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>, CpuError> {
        let buf = alloc::vec![0.0; len];
        #[cfg(feature = "std")]
        let buf = {
            let mut buf = buf;
            if self.config.huge_pages {
                fast::advise_huge_pages(&mut buf);
            }
            buf
        };
        Ok(buf)
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) -> Result<(), CpuError> {
        check_same_len(dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<(), CpuError> {
        check_same_len(dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn fill(&self, buf: &mut Vec<f32>, value: f32) -> Result<(), CpuError> {
        buf.fill(value);
        Ok(())
    }

    fn count(&self, x: &Vec<f32>, range: Range<usize>, tau: f32) -> Result<u64, CpuError> {
        match self.config.path {
            Path::Portable => Ok(portable::count(x, range, tau)?),
            #[cfg(feature = "std")]
            Path::Fast => Ok(fast::count(self, x, range, tau)?),
        }
    }

    fn encode(
        &self,
        residual: &mut Vec<f32>,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, CpuError> {
        match self.config.path {
            Path::Portable => Ok(portable::encode(residual, params, out)?),
            #[cfg(feature = "std")]
            Path::Fast => Ok(fast::encode(self, residual, params, out)?),
        }
    }

    fn decode_add(&self, msg: &MessageView<'_>, target: &mut Vec<f32>) -> Result<(), CpuError> {
        match self.config.path {
            Path::Portable => Ok(portable::decode_add(msg, target)?),
            #[cfg(feature = "std")]
            Path::Fast => Ok(fast::decode_add(self, msg, target)?),
        }
    }

    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<(), CpuError> {
        check_same_len(dst.len(), src.len())?;
        match self.config.path {
            Path::Portable => {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += *s;
                }
            }
            #[cfg(feature = "std")]
            Path::Fast => fast::add_assign(self, dst, src),
        }
        Ok(())
    }

    fn sub_scaled(
        &self,
        params: &mut Vec<f32>,
        update: &Vec<f32>,
        scale: f32,
    ) -> Result<(), CpuError> {
        check_same_len(params.len(), update.len())?;
        match self.config.path {
            Path::Portable => slices::sub_scaled(params, update, scale),
            #[cfg(feature = "std")]
            Path::Fast => fast::sub_scaled(self, params, update, scale),
        }
        Ok(())
    }

    /// For a round of sparse messages with few entries (at most N / 16 in all), touches
    /// only the entries: decodes them into `update`, then for each entry's element, the
    /// first time it is met, steps `params` by the element's full sum and sets it back to 0
    /// (elements whose sum is 0 are left alone: `p - scale * 0` is `p`). Otherwise the three
    /// full passes.
    fn apply_messages<'m, I>(
        &self,
        msgs: I,
        update: &mut Vec<f32>,
        params: &mut Vec<f32>,
        scale: f32,
    ) -> Result<(), CpuError>
    where
        I: Iterator<Item = MessageView<'m>> + Clone,
    {
        check_same_len(params.len(), update.len())?;
        let n = update.len();
        let mut entries = 0usize;
        let mut sparse = true;
        for m in msgs.clone() {
            sparse &= m.encoding() == wire::Encoding::Sparse;
            entries += m.count() as usize;
        }
        for m in msgs.clone() {
            self.decode_add(&m, update)?;
        }
        if !sparse || entries > n / 16 {
            self.sub_scaled(params, update, scale)?;
            return self.fill(update, 0.0);
        }
        for m in msgs {
            let offset = m.target_range(n)?.start;
            for e in m.sparse_entries() {
                // Validated: `1 <= |e| <= N` and the range fits the target.
                let i = offset + e.unsigned_abs() as usize - 1;
                if let (Some(u), Some(p)) = (update.get_mut(i), params.get_mut(i))
                    && *u != 0.0
                {
                    // `sub_scaled`'s rounding: a plain difference when scale is 1.
                    *p = if scale == 1.0 {
                        *p - *u
                    } else {
                        *p - scale * *u
                    };
                    *u = 0.0;
                }
            }
        }
        Ok(())
    }

    fn clip(
        &self,
        buf: &mut Vec<f32>,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, CpuError> {
        // The removed mass is an f64 sum in index order: kept serial so that it is
        // bit-identical to the reference.
        backend::check_range(&range, buf.len())?;
        Ok(slices::clip(&mut buf[range], limit))
    }

    fn stats(&self, buf: &Vec<f32>, range: Range<usize>) -> Result<VectorStats, CpuError> {
        // Sequential f64 sum of squares, as the reference (bit-identical).
        backend::check_range(&range, buf.len())?;
        Ok(slices::stats(&buf[range]))
    }
}

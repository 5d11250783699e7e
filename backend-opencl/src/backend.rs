//! `impl Backend for OpenCl`: the two-pass encode, decode-add, and the vector operations,
//! each a launch of the kernel objects of [`crate::program`].

use crate::buffer::{ClBuffer, Scratch, ensure, u32_of};
use crate::device::WORD;
use crate::program::{Arg, Entry};
use crate::{OpenCl, OpenClError};
use core::ops::Range;
use gradcast_core::backend::{ClipStats, VectorStats, check_range, check_same_len, slices};
use gradcast_core::codec::{
    self, EncodeParams, EncodeSummary, EncodingMode, Plan, cap_start, check_tau, passes,
};
use gradcast_core::wire::{self, Encoding, HEADER_LEN, MessageView};
use gradcast_core::{Backend, CodecError, Error};
use ocl::Buffer;

impl Backend for OpenCl {
    type Buffer = ClBuffer;
    type Error = OpenClError;

    fn name(&self) -> &str {
        &self.name
    }

    fn alloc(&self, len: usize) -> Result<ClBuffer, OpenClError> {
        OpenCl::check_len(len)?;
        let buf = Buffer::<f32>::builder()
            .queue(self.queue.clone())
            .len(len.max(1))
            .fill_val(0.0f32)
            .build()
            .map_err(OpenClError::ocl("allocating a buffer"))?;
        Ok(ClBuffer { buf, len })
    }

    fn len(&self, buf: &ClBuffer) -> usize {
        buf.len
    }

    fn upload(&self, src: &[f32], dst: &mut ClBuffer) -> Result<(), OpenClError> {
        check_same_len(dst.len, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        dst.buf
            .cmd()
            .write(src)
            .enq()
            .map_err(OpenClError::ocl("uploading"))
    }

    fn download(&self, src: &ClBuffer, dst: &mut [f32]) -> Result<(), OpenClError> {
        check_same_len(dst.len(), src.len)?;
        self.read_f32(&src.buf, 0, dst)
    }

    fn fill(&self, buf: &mut ClBuffer, value: f32) -> Result<(), OpenClError> {
        buf.buf
            .cmd()
            .fill(value, None)
            .enq()
            .map_err(OpenClError::ocl("filling"))
    }

    fn count(&self, x: &ClBuffer, range: Range<usize>, tau: f32) -> Result<u64, OpenClError> {
        check_range(&range, x.len)?;
        check_tau(tau)?;
        if range.is_empty() {
            return Ok(0);
        }
        let mut scratch = self.scratch();
        let (counts, bad) =
            self.count_groups(&mut scratch, &x.buf, range.start, range.len(), tau)?;
        if let Some(i) = bad {
            return Err(self.non_finite(&x.buf, range.start + i));
        }
        Ok(counts.iter().map(|&c| c as u64).sum())
    }

    fn encode(
        &self,
        residual: &mut ClBuffer,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, OpenClError> {
        let tau = params.tau;
        check_tau(tau)?;
        let range = codec::segment_range(params, residual.len)?;
        let (base, n) = (range.start, range.len());
        let x = &residual.buf;
        let mut scratch = self.scratch();

        // Pass 1: validate and count (nothing is written before the plan is known).
        let (counts, bad) = self.count_groups(&mut scratch, x, base, n, tau)?;
        if let Some(i) = bad {
            return Err(self.non_finite(x, base + i));
        }
        let candidates: usize = counts.iter().map(|&c| c as usize).sum();
        let cap = params.cap.map_or(usize::MAX, |c| c as usize);
        let truncated = params.mode != EncodingMode::Dense && cap < candidates;
        let (start, tail) = if truncated {
            let start = cap_start(params.round, n);
            (
                start,
                self.tail_candidates(
                    x,
                    base,
                    n,
                    tau,
                    &counts,
                    scratch.item_counts.as_ref(),
                    start,
                )?,
            )
        } else {
            (0, candidates)
        };
        let plan = Plan::new(params, n, candidates, out.len(), |_| tail)?;

        // Pass 2: write the payload on the device, debit, and bring the payload home.
        match plan.encoding {
            Encoding::Dense => {
                self.read_bytes(x.as_core(), 4 * base, &mut out[HEADER_LEN..plan.bytes])?;
                // SAFETY: the grid-stride loop writes only x[base + i] for i < n, with
                // base + n <= x.len() (segment_range checked it).
                unsafe {
                    self.launch(
                        Entry::ZeroRange,
                        self.elementwise_global(n),
                        &[
                            Arg::Buf(x.as_core()),
                            Arg::U64(base as u64),
                            Arg::U32(u32_of(n)),
                        ],
                    )
                }?;
            }
            Encoding::Sparse | Encoding::Bitmap if plan.entries == 0 => {
                // Nothing selected: an all-zero payload (bitmap) or none (sparse); no debit.
                out[HEADER_LEN..plan.bytes].fill(0);
            }
            Encoding::Sparse | Encoding::Bitmap => {
                let sparse = plan.encoding == Encoding::Sparse;
                let wg = self.limits.work_group;
                let groups = counts.len();
                let mut offsets = Vec::with_capacity(groups);
                let mut acc = 0u32;
                for &c in &counts {
                    offsets.push(acc);
                    acc += c;
                }
                let before_start = candidates - tail;
                let span = self.span(n);
                let words = if sparse {
                    plan.entries
                } else {
                    n.div_ceil(WORD)
                };
                let missing = || OpenClError::Ocl {
                    op: "encoding",
                    message: "group counts missing".into(),
                };
                let counts_buf = scratch.counts.clone().ok_or_else(missing)?;
                let items_buf = scratch.item_counts.clone().ok_or_else(missing)?;
                let off_buf = ensure(&mut scratch.offsets, &self.queue, groups)?;
                off_buf
                    .cmd()
                    .write(&offsets)
                    .enq()
                    .map_err(OpenClError::ocl("uploading offsets"))?;
                let off_buf = off_buf.clone();
                let payload = ensure(&mut scratch.payload, &self.queue, words)?;
                // SAFETY: `counts` and `offsets` hold `groups` words, one per work-group,
                // and `item_counts` `groups * wg`, one per work-item (the same n, span and
                // wg as the count pass, which filled them); the kernel reads and debits
                // only x[base + i] for i < n (base + n <= x.len()); it writes payload
                // slots < plan.entries (sparse: a selected candidate's slot is below the
                // number selected) or words < ceil(n / 16) (bitmap), and `payload` holds
                // `words` of them; the local array holds `wg` words, the local size.
                unsafe {
                    self.launch(
                        Entry::EncodeSelect,
                        groups * wg,
                        &[
                            Arg::Buf(x.as_core()),
                            Arg::U64(base as u64),
                            Arg::U32(u32_of(n)),
                            Arg::F32(tau),
                            Arg::U32(u32_of(span)),
                            Arg::Buf(counts_buf.as_core()),
                            Arg::Buf(items_buf.as_core()),
                            Arg::Buf(off_buf.as_core()),
                            Arg::U32(u32_of(start)),
                            Arg::U32(u32_of(before_start)),
                            Arg::U32(u32_of(plan.take_head)),
                            Arg::U32(u32_of(before_start + plan.take_tail)),
                            Arg::U32(if sparse { 0 } else { 1 }),
                            Arg::Buf(payload.as_core()),
                            Arg::Local(wg),
                        ],
                    )
                }?;
                let payload = payload.clone();
                self.read_bytes(payload.as_core(), 0, &mut out[HEADER_LEN..plan.bytes])?;
            }
        }
        let header = plan.header(params, n);
        let bytes = wire::seal(out, header);
        Ok(EncodeSummary {
            encoding: plan.encoding,
            entries: u32_of(plan.entries),
            candidates: plan.candidates as u64,
            bytes,
            truncated: header.truncated(),
        })
    }

    fn decode_add(&self, msg: &MessageView<'_>, target: &mut ClBuffer) -> Result<(), OpenClError> {
        let range = msg.target_range(target.len)?;
        let (base, n) = (range.start, range.len());
        let tau = msg.tau();
        let payload = msg.payload();
        let mut scratch = self.scratch();
        let (entry, items) = match msg.encoding() {
            Encoding::Sparse => (Entry::DecodeSparse, msg.count() as usize),
            Encoding::Bitmap => (Entry::DecodeBitmap, n),
            Encoding::Dense => (Entry::DecodeDense, n),
        };
        if msg.count() == 0 {
            return Ok(());
        }
        let dev = ensure(&mut scratch.payload, &self.queue, payload.len().div_ceil(4))?;
        self.write_bytes(dev.as_core(), payload)?;
        let (t, b, p) = (
            Arg::Buf(target.buf.as_core()),
            Arg::U64(base as u64),
            Arg::Buf(dev.as_core()),
        );
        let args = match msg.encoding() {
            Encoding::Sparse => [t, b, p, Arg::U32(u32_of(items)), Arg::F32(tau)],
            Encoding::Bitmap => [t, b, p, Arg::U32(u32_of(n)), Arg::F32(tau)],
            // Four arguments: the fifth is not passed.
            Encoding::Dense => [t, b, p, Arg::U32(u32_of(n)), Arg::U32(0)],
        };
        let args = if entry == Entry::DecodeDense {
            &args[..4]
        } else {
            &args[..]
        };
        // SAFETY: the payload buffer holds the whole validated payload (count entries,
        // ceil(N / 16) words, or N values); the grid-stride loops stop at `items`; every
        // index written is base + i with i < N and base + N <= target.len (target_range
        // checked it); sparse entries are strictly ascending, so no two work-items write one
        // element.
        unsafe { self.launch(entry, self.elementwise_global(items), args) }
    }

    fn add_assign(&self, dst: &mut ClBuffer, src: &ClBuffer) -> Result<(), OpenClError> {
        check_same_len(dst.len, src.len)?;
        if dst.len == 0 {
            return Ok(());
        }
        // SAFETY: both buffers hold `len` elements and the grid-stride loop stops at len.
        unsafe {
            self.launch(
                Entry::AddAssign,
                self.elementwise_global(dst.len),
                &[
                    Arg::Buf(dst.buf.as_core()),
                    Arg::Buf(src.buf.as_core()),
                    Arg::U32(u32_of(dst.len)),
                ],
            )
        }
    }

    fn sub_scaled(
        &self,
        params: &mut ClBuffer,
        update: &ClBuffer,
        scale: f32,
    ) -> Result<(), OpenClError> {
        check_same_len(params.len, update.len)?;
        if params.len == 0 {
            return Ok(());
        }
        // SAFETY: both buffers hold `len` elements and the grid-stride loop stops at len.
        unsafe {
            self.launch(
                Entry::SubScaled,
                self.elementwise_global(params.len),
                &[
                    Arg::Buf(params.buf.as_core()),
                    Arg::Buf(update.buf.as_core()),
                    Arg::U32(u32_of(params.len)),
                    Arg::F32(scale),
                    Arg::U32(u32::from(scale == 1.0)),
                ],
            )
        }
    }

    /// Clips on the device; the statistics (an f64 sum in index order, which a parallel
    /// reduction cannot reproduce bit for bit) are computed on the host from a copy of the
    /// range read before clipping, with [`slices::clip`].
    fn clip(
        &self,
        buf: &mut ClBuffer,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, OpenClError> {
        check_range(&range, buf.len)?;
        if range.is_empty() {
            return Ok(ClipStats::default());
        }
        let mut host = vec![0f32; range.len()];
        self.read_f32(&buf.buf, range.start, &mut host)?;
        let stats = slices::clip(&mut host, limit);
        if stats.elements == 0 {
            return Ok(stats);
        }
        // SAFETY: the grid-stride loop touches only x[start + i] for i < len, and
        // range.end <= buf.len.
        unsafe {
            self.launch(
                Entry::Clip,
                self.elementwise_global(range.len()),
                &[
                    Arg::Buf(buf.buf.as_core()),
                    Arg::U64(range.start as u64),
                    Arg::U32(u32_of(range.len())),
                    Arg::F32(limit),
                ],
            )
        }?;
        Ok(stats)
    }

    /// Computed on the host from a copy of the range with [`slices::stats`]: the reference's
    /// f64 sum in index order cannot be reproduced bit for bit by a parallel reduction.
    fn stats(&self, buf: &ClBuffer, range: Range<usize>) -> Result<VectorStats, OpenClError> {
        check_range(&range, buf.len)?;
        let mut host = vec![0f32; range.len()];
        self.read_f32(&buf.buf, range.start, &mut host)?;
        Ok(slices::stats(&host))
    }

    fn sync(&self) -> Result<(), OpenClError> {
        self.queue
            .finish()
            .map_err(OpenClError::ocl("waiting for the queue"))
    }
}

impl OpenCl {
    /// Launches `entry` over `global` work-items in groups of the instance's work-group size.
    ///
    /// # Safety
    /// As [`Kernels::launch`](crate::program::Kernels::launch): the kernel stays within the
    /// buffers given.
    unsafe fn launch(
        &self,
        entry: Entry,
        global: usize,
        args: &[Arg<'_>],
    ) -> Result<(), OpenClError> {
        // SAFETY: forwarded from the caller.
        unsafe {
            self.kernels
                .launch(&self.queue, entry, global, self.limits.work_group, args)
        }
    }

    /// Pass 1 of count and encode: per-group candidate counts of `x[base .. base + n)` and
    /// the first non-finite element (relative index), if any. `n >= 1`, `n <= MAX_ELEMENTS`.
    fn count_groups(
        &self,
        scratch: &mut Scratch,
        x: &Buffer<f32>,
        base: usize,
        n: usize,
        tau: f32,
    ) -> Result<(Vec<u32>, Option<usize>), OpenClError> {
        let wg = self.limits.work_group;
        let span = self.span(n);
        let groups = n.div_ceil(wg * span);
        let counts = ensure(&mut scratch.counts, &self.queue, groups)?;
        let bad = ensure(&mut scratch.bad, &self.queue, groups)?;
        let items = ensure(&mut scratch.item_counts, &self.queue, groups * wg)?;
        // SAFETY: `base + n <= x.len()` (checked by the caller); `counts` and `bad` hold at
        // least `groups` words and the kernel writes exactly index `get_group_id(0) <
        // groups`; `item_counts` holds `groups * wg` words, one per work-item; the two local
        // arrays hold `wg` words each, `wg` being the local size.
        unsafe {
            self.launch(
                Entry::CountGroups,
                groups * wg,
                &[
                    Arg::Buf(x.as_core()),
                    Arg::U64(base as u64),
                    Arg::U32(u32_of(n)),
                    Arg::F32(tau),
                    Arg::U32(u32_of(span)),
                    Arg::Buf(counts.as_core()),
                    Arg::Buf(bad.as_core()),
                    Arg::Buf(items.as_core()),
                    Arg::Local(wg),
                    Arg::Local(wg),
                ],
            )
        }?;
        let mut c = vec![0u32; groups];
        let mut b = vec![0u32; groups];
        counts
            .cmd()
            .read(&mut c)
            .enq()
            .map_err(OpenClError::ocl("reading counts"))?;
        bad.cmd()
            .read(&mut b)
            .enq()
            .map_err(OpenClError::ocl("reading counts"))?;
        // Groups are in index order, so the first group with a non-finite value has the
        // smallest index.
        let first_bad = b.iter().find(|&&v| v != u32::MAX).map(|&v| v as usize);
        Ok((c, first_bad))
    }

    /// The [`CodecError::NonFinite`] for element `index` of `x`.
    fn non_finite(&self, x: &Buffer<f32>, index: usize) -> OpenClError {
        let mut v = [0f32];
        match self.read_f32(x, index, &mut v) {
            Ok(()) => OpenClError::Core(Error::Codec(CodecError::NonFinite {
                index,
                bits: v[0].to_bits(),
            })),
            Err(e) => e,
        }
    }

    /// Candidates at relative index `>= start` of the segment: whole groups from the group
    /// counts; in the contiguous layout whole work-items of the partial group from the count
    /// pass's per-item counts (`items`); the rest by reading its elements (at most one
    /// work-item's span, or one group's chunk in the interleaved layout).
    #[allow(clippy::too_many_arguments)]
    fn tail_candidates(
        &self,
        x: &Buffer<f32>,
        base: usize,
        n: usize,
        tau: f32,
        counts: &[u32],
        items: Option<&Buffer<u32>>,
        start: usize,
    ) -> Result<usize, OpenClError> {
        let wg = self.limits.work_group;
        let span = self.span(n);
        let chunk = wg * span;
        let g0 = start / chunk;
        let mut total: usize = counts.iter().skip(g0 + 1).map(|&c| c as usize).sum();
        let mut end = ((g0 + 1) * chunk).min(n);
        if let (true, Some(items)) = (self.limits.contiguous, items) {
            // Work-item `item0` of group g0 holds `start`; those after it are whole.
            let item0 = (start - g0 * chunk) / span;
            let mut later = vec![0u32; wg - item0 - 1];
            if !later.is_empty() {
                items
                    .cmd()
                    .read(&mut later)
                    .offset(g0 * wg + item0 + 1)
                    .enq()
                    .map_err(OpenClError::ocl("reading item counts"))?;
            }
            total += later.iter().map(|&c| c as usize).sum::<usize>();
            end = (g0 * chunk + (item0 + 1) * span).min(n);
        }
        let mut part = vec![0f32; end.saturating_sub(start)];
        self.read_f32(x, base + start, &mut part)?;
        Ok(total + part.iter().filter(|&&v| passes(v, tau)).count())
    }
}

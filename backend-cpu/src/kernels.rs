//! Chunk kernels shared by the portable and the fast path.
//!
//! Every kernel works on one chunk of a segment, walks it in index order and makes exactly
//! the decisions the reference codec makes (`|x| >= tau`, one debit per selected element, the
//! same f32 operations in the same order), so whichever way a segment is cut into chunks the
//! result is the reference's, bit for bit.
//!
//! The walk looks at blocks of [`BLOCK`] elements at a time through a [`Lanes`]
//! implementation: [`Scalar`] (plain loops, `no_std`) or, with `std` on x86-64, `Avx2`
//! (selected at run time with `is_x86_feature_detected!`). A block yields a bit mask of its
//! candidates and a flag for a non-finite element; a block with neither costs a few
//! instructions, which is what makes sparse encoding run at memory speed.

#[cfg(feature = "std")]
use alloc::vec::Vec;
use gradcast_core::codec::debit;

/// Elements per block of the walk.
pub(crate) const BLOCK: usize = 32;
/// Elements per word: one `u64` candidate mask.
pub(crate) const WORD: usize = 64;
/// Words per superblock.
pub(crate) const SB_WORDS: usize = 8;
/// Elements per superblock: the unit of the sparse encode's first pass, whose candidates are
/// found without a data-dependent branch per block (see [`record_chunk`]).
pub(crate) const SUPER: usize = WORD * SB_WORDS;

/// A way of computing a block's masks.
pub(crate) trait Lanes {
    /// Returns the candidate mask (bit `k` set when `|b[k]| >= tau`) and whether some element
    /// of `b[..BLOCK]` is NaN or infinite.
    ///
    /// # Safety
    /// `b.len() >= BLOCK`, and the CPU supports the instructions of the implementation.
    unsafe fn block(b: &[f32], tau: f32) -> (u32, bool);

    /// Fills `masks` with the candidate masks of the [`SUPER`] elements `b[..SUPER]` (bit `k`
    /// of `masks[w]` set when `|b[64 w + k]| >= tau`) and returns whether some element is NaN
    /// or infinite.
    ///
    /// # Safety
    /// `b.len() >= SUPER`, and the CPU supports the instructions of the implementation.
    #[inline(always)]
    unsafe fn superblock(b: &[f32], tau: f32, masks: &mut [u64; SB_WORDS]) -> bool {
        let mut bad = false;
        for (w, m) in masks.iter_mut().enumerate() {
            // SAFETY: `64 w + 64 <= SUPER <= b.len()`; the caller vouches for the CPU.
            let (lo, bad_lo) = unsafe { Self::block(&b[WORD * w..], tau) };
            // SAFETY: as above.
            let (hi, bad_hi) = unsafe { Self::block(&b[WORD * w + BLOCK..], tau) };
            *m = lo as u64 | (hi as u64) << 32;
            bad |= bad_lo | bad_hi;
        }
        bad
    }

    /// Records and debits the candidates of the superblock `x[b..b + SUPER]` (masks
    /// `masks`), in index order; `base` is the segment index of `x[0]`. `scratch` is room
    /// for [`flatten`], kept across superblocks so that it is not cleared each time.
    ///
    /// # Safety
    /// `b + SUPER <= x.len()`, and the CPU supports the instructions of the implementation.
    #[cfg(feature = "std")]
    #[inline(always)]
    unsafe fn emit(
        x: &mut [f32],
        b: usize,
        base: usize,
        masks: &[u64; SB_WORDS],
        tau: f32,
        list: &mut Recs,
        scratch: &mut Offsets,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { emit_flat(x, b, base, masks, tau, list, scratch) }
    }
}

/// Plain loops: portable, `no_std`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

impl Lanes for Scalar {
    #[inline(always)]
    unsafe fn block(b: &[f32], tau: f32) -> (u32, bool) {
        scalar_mask(&b[..BLOCK], tau)
    }
}

/// Candidate mask and non-finite flag of up to 32 elements, with plain loops.
#[inline(always)]
fn scalar_mask(b: &[f32], tau: f32) -> (u32, bool) {
    let mut mask = 0u32;
    let mut bad = false;
    for (k, &v) in b.iter().enumerate() {
        let a = v.abs();
        // NaN fails both comparisons: never a candidate, always non-finite.
        bad |= !a.is_finite();
        mask |= ((a >= tau) as u32) << k;
    }
    (mask, bad)
}

/// Walks `x` in index order and calls `f(x, j)` for every candidate `j` until `f` returns
/// `false`. Returns `Ok(true)` when the walk reached the end, `Ok(false)` when `f` stopped
/// it, and `Err((j, bits))` at the first non-finite element (after `f` has seen exactly the
/// candidates before it).
///
/// # Safety
/// The CPU supports the instructions of `L`.
#[inline(always)]
pub(crate) unsafe fn walk<L: Lanes, X: AsRef<[f32]> + ?Sized>(
    x: &mut X,
    tau: f32,
    mut f: impl FnMut(&mut X, usize) -> bool,
) -> Result<bool, (usize, u32)> {
    let n = x.as_ref().len();
    let full = n - n % BLOCK;
    let mut b = 0;
    while b < n {
        let end = if b < full { b + BLOCK } else { n };
        let (mut mask, bad) = if b < full {
            // SAFETY: `b + BLOCK <= n`, and the caller vouches for `L`'s instructions.
            unsafe { L::block(&x.as_ref()[b..], tau) }
        } else {
            scalar_mask(&x.as_ref()[b..n], tau)
        };
        let mut stop = None;
        if bad {
            // Rare: only the candidates before the first non-finite element are seen.
            for j in b..end {
                let v = x.as_ref()[j];
                if !v.is_finite() {
                    let k = j - b;
                    mask &= (1u32 << k) - 1; // k < BLOCK = 32
                    stop = Some((j, v.to_bits()));
                    break;
                }
            }
        }
        // One call site for `f`, so that it is inlined into the (AVX2-compiled) walk.
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if !f(x, b + k) {
                return Ok(false);
            }
        }
        if let Some(e) = stop {
            return Err(e);
        }
        b = end;
    }
    Ok(true)
}

/// How many candidates of a superblock starting at chunk index `b` (masks `masks`) lie
/// before chunk index `split`.
#[inline(always)]
fn count_before(masks: &[u64; SB_WORDS], b: usize, split: usize) -> usize {
    let before = split.saturating_sub(b);
    let mut lo = 0;
    for (w, &m) in masks.iter().enumerate() {
        let start = w * WORD;
        let keep = if before >= start + WORD {
            m
        } else if before <= start {
            0
        } else {
            m & ((1u64 << (before - start)) - 1) // 0 < before - start < 64
        };
        lo += keep.count_ones() as usize;
    }
    lo
}

/// The candidates of a superblock's masks.
#[inline(always)]
fn popcount(masks: &[u64; SB_WORDS]) -> usize {
    masks.iter().map(|m| m.count_ones() as usize).sum()
}

/// The first NaN or infinity of `x` (its index and bits); `x` is known to hold one.
#[cold]
fn first_non_finite(x: &[f32]) -> (usize, u32) {
    let j = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
    (j, x.get(j).map_or(0, |v| v.to_bits()))
}

/// Counts the candidates of `x` before and from `split`, stopping at the first non-finite
/// element (its index in `x` and its bits).
///
/// # Safety
/// The CPU supports the instructions of `L`.
#[inline(always)]
pub(crate) unsafe fn count_chunk<L: Lanes>(
    x: &[f32],
    split: usize,
    tau: f32,
) -> Result<(usize, usize), (usize, u32)> {
    let n = x.len();
    let full = n - n % SUPER;
    let mut lo = 0;
    let mut hi = 0;
    let mut masks = [0u64; SB_WORDS];
    let mut b = 0;
    while b < full {
        // SAFETY: `b + SUPER <= n`; the caller vouches for `L`'s instructions.
        if unsafe { L::superblock(&x[b..], tau, &mut masks) } {
            let (j, bits) = first_non_finite(&x[b..b + SUPER]);
            return Err((b + j, bits));
        }
        let total = popcount(&masks);
        let l = if split <= b {
            0
        } else {
            count_before(&masks, b, split)
        };
        lo += l;
        hi += total - l;
        b += SUPER;
    }
    let mut tail = &x[full..];
    // SAFETY: forwarded from the caller.
    unsafe {
        walk::<L, _>(&mut tail, tau, |_, j| {
            if full + j < split {
                lo += 1;
            } else {
                hi += 1;
            }
            true
        })
    }
    .map_err(|(j, bits)| (full + j, bits))?;
    Ok((lo, hi))
}

/// The candidates [`record_chunk`] recorded, in index order: their sparse entries and their
/// values before the speculative debit (two arrays, so that a sparse payload is one copy of
/// `entries` and SIMD lanes can store both with plain vector stores).
#[cfg(feature = "std")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recs {
    /// `+(i+1)` or `-(i+1)`, `i` relative to the segment.
    pub entries: Vec<i32>,
    /// The elements' bits before the debit.
    pub origs: Vec<u32>,
}

#[cfg(feature = "std")]
impl Recs {
    /// Recorded candidates.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets every record (without restoring anything).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.origs.clear();
    }

    /// Puts back the original bits of every recorded element of a chunk starting at `base`.
    pub(crate) fn restore(&self, x: &mut [f32], base: usize) {
        for (&e, &orig) in self.entries.iter().zip(&self.origs) {
            let j = (e.unsigned_abs() as usize).wrapping_sub(1 + base);
            if let Some(v) = x.get_mut(j) {
                *v = f32::from_bits(orig);
            }
        }
    }
}

/// What [`record_chunk`] found in a chunk.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkScan {
    /// Candidates before `split`.
    pub lo: usize,
    /// Candidates from `split` on.
    pub hi: usize,
    /// Whether every candidate is in the list (and debited); otherwise the list is empty,
    /// nothing is debited and the chunk must be walked again to write its entries.
    pub listed: bool,
}

/// Scratch for [`flatten`]: a superblock's candidate offsets, with room for a few more.
#[cfg(feature = "std")]
pub(crate) type Offsets = [u16; SUPER + EAGER];

/// Candidate offsets [`flatten`] writes per word whether the word has them or not.
#[cfg(feature = "std")]
const EAGER: usize = 3;

/// Writes the chunk-relative indices of a superblock's candidates, in order, to `idx` and
/// returns how many there are. Branch-free for words with at most [`EAGER`] candidates (at
/// density 1e-2 a word has 0.64 on average, more than three in one word of 200): their
/// offsets are written whether the word has them or not (the ones past its count are
/// overwritten by the next word), so no branch depends on where the candidates are; a word
/// with more takes a short loop.
#[cfg(feature = "std")]
#[inline(always)]
pub(crate) fn flatten(masks: &[u64; SB_WORDS], idx: &mut Offsets) -> usize {
    let mut pos = 0;
    for (w, &m) in masks.iter().enumerate() {
        let off = (w * WORD) as u16;
        let cnt = m.count_ones() as usize;
        let mut bits = m;
        // `pos <= 64 w` (at most 64 candidates per earlier word), so the writes
        // `pos .. pos + EAGER` end at most at `64 w + EAGER <= SUPER + EAGER`.
        for slot in &mut idx[pos..pos + EAGER] {
            *slot = off + bits.trailing_zeros() as u16;
            bits &= bits.wrapping_sub(1);
        }
        if cnt > EAGER {
            let mut k = pos + EAGER;
            while bits != 0 {
                // `k < pos + cnt <= 64 (w + 1) <= SUPER`.
                idx[k] = off + bits.trailing_zeros() as u16;
                bits &= bits - 1;
                k += 1;
            }
        }
        pos += cnt;
    }
    pos
}

/// Pass 1 of the fast encode: counts the candidates before and from `split`, and while the
/// chunk has at most `limit` of them records each one (its sparse entry and original bits)
/// and debits it speculatively, so that a sparse message needs no second walk. A chunk with
/// more candidates restores what it debited and reports `listed: false`.
///
/// The chunk is walked in superblocks of [`SUPER`] elements: the lanes compute its masks,
/// a superblock without candidates costs one (well predicted) branch, and the candidates of
/// the others are found with [`Lanes::emit`] without a branch per block, which is what keeps
/// density 1e-2 at memory speed (a branch per 32-element block mispredicts about once per
/// candidate there).
///
/// `base` is the index of `x[0]` in the segment. On a non-finite element the chunk is
/// restored to its original bits and the element's index in `x` is returned.
///
/// # Safety
/// The CPU supports the instructions of `L`.
#[cfg(feature = "std")]
#[inline(always)]
pub(crate) unsafe fn record_chunk<L: Lanes>(
    x: &mut [f32],
    base: usize,
    split: usize,
    tau: f32,
    limit: usize,
    list: &mut Recs,
) -> Result<ChunkScan, (usize, u32)> {
    list.clear();
    let n = x.len();
    let full = n - n % SUPER;
    let mut lo = 0;
    let mut hi = 0;
    let mut listed = true;
    let mut masks = [0u64; SB_WORDS];
    let mut scratch: Offsets = [0; SUPER + EAGER];
    let mut b = 0;
    while b < full {
        // SAFETY: `b + SUPER <= n`; the caller vouches for `L`'s instructions.
        if unsafe { L::superblock(&x[b..], tau, &mut masks) } {
            list.restore(x, base);
            list.clear();
            let (j, bits) = first_non_finite(&x[b..b + SUPER]);
            return Err((b + j, bits));
        }
        let total = popcount(&masks);
        if total != 0 {
            let l = if split <= b {
                0
            } else {
                count_before(&masks, b, split)
            };
            lo += l;
            hi += total - l;
            if listed {
                if list.len() + total <= limit {
                    // SAFETY: `b + SUPER <= n`, forwarded from the caller.
                    unsafe { L::emit(x, b, base, &masks, tau, list, &mut scratch) };
                } else {
                    list.restore(x, base);
                    list.clear();
                    listed = false;
                }
            }
        }
        b += SUPER;
    }
    // The tail (less than a superblock), block by block.
    // SAFETY: forwarded from the caller.
    let walked = unsafe {
        walk::<L, _>(&mut x[full..], tau, |t: &mut [f32], j| {
            if full + j < split {
                lo += 1;
            } else {
                hi += 1;
            }
            if listed {
                if list.len() < limit {
                    let v = t[j];
                    let i = (base + full + j) as i32 + 1;
                    let neg = (v.to_bits() as i32) >> 31;
                    list.entries.push((i ^ neg) - neg);
                    list.origs.push(v.to_bits());
                    t[j] = debit_value(v, tau);
                } else {
                    listed = false;
                }
            }
            true
        })
    };
    if let Err((j, bits)) = walked {
        list.restore(x, base);
        list.clear();
        return Err((full + j, bits));
    }
    if !listed && !list.entries.is_empty() {
        list.restore(x, base);
        list.clear();
    }
    Ok(ChunkScan { lo, hi, listed })
}

/// [`Lanes::emit`] without special instructions: [`flatten`], then one record per candidate.
///
/// # Safety
/// `b + SUPER <= x.len()`.
#[cfg(feature = "std")]
#[inline(always)]
pub(crate) unsafe fn emit_flat(
    x: &mut [f32],
    b: usize,
    base: usize,
    masks: &[u64; SB_WORDS],
    tau: f32,
    list: &mut Recs,
    scratch: &mut Offsets,
) {
    let k = flatten(masks, scratch);
    let len = list.len();
    list.entries.reserve(k);
    list.origs.reserve(k);
    let entries = &mut list.entries.spare_capacity_mut()[..k];
    let origs = &mut list.origs.spare_capacity_mut()[..k];
    for ((&o, e), r) in scratch[..k].iter().zip(entries).zip(origs) {
        let j = b + o as usize;
        let v = x[j];
        let i = (base + j) as i32 + 1;
        // Branch-free sign: `neg` is 0 or -1 (v is a candidate, never zero).
        let neg = (v.to_bits() as i32) >> 31;
        e.write((i ^ neg) - neg);
        r.write(v.to_bits());
        x[j] = debit_value(v, tau);
    }
    // SAFETY: the loop wrote the first `k` spare elements of both lists (`scratch[..k]` has
    // `k` elements, and each list reserved room for `k` more).
    unsafe {
        list.entries.set_len(len + k);
        list.origs.set_len(len + k);
    }
}

/// The reference's debit of a candidate (`v - tau` for `v > 0`, else `v + tau`) without a
/// branch: `v - copysign(tau, v)`. For `v < 0` that is `v - (-tau)`, which IEEE 754 rounds
/// exactly as `v + tau`; candidates are never zero, so the sign decides as `v > 0` does.
#[cfg(feature = "std")]
#[inline(always)]
pub(crate) fn debit_value(v: f32, tau: f32) -> f32 {
    v - tau.copysign(v)
}

/// Where selected entries go.
pub(crate) trait Sink {
    /// Element `i` (relative to the segment) is sent, as `+tau` when `positive`.
    fn put(&mut self, i: usize, positive: bool);

    /// Every entry of `entries` (sparse `±(i+1)`, ascending) is sent.
    #[cfg(feature = "std")]
    fn put_entries(&mut self, entries: &[i32]) {
        for &e in entries {
            self.put(e.unsigned_abs() as usize - 1, e > 0);
        }
    }
}

/// Writes sparse entries, in order, into a slice of the payload.
#[derive(Debug)]
pub(crate) struct SparseSink<'a> {
    /// The chunk's part of the payload: 4 bytes per selected entry.
    pub out: &'a mut [u8],
    /// Bytes written so far.
    pub pos: usize,
}

impl Sink for SparseSink<'_> {
    #[inline(always)]
    fn put(&mut self, i: usize, positive: bool) {
        let e = i as i32 + 1;
        let e = if positive { e } else { -e };
        if let Some(slot) = self.out.get_mut(self.pos..self.pos + 4) {
            slot.copy_from_slice(&e.to_le_bytes());
        }
        self.pos += 4;
    }

    #[cfg(feature = "std")]
    fn put_entries(&mut self, entries: &[i32]) {
        let end = (self.pos + 4 * entries.len()).min(self.out.len());
        for (slot, e) in self.out[self.pos..end].chunks_exact_mut(4).zip(entries) {
            slot.copy_from_slice(&e.to_le_bytes());
        }
        self.pos += 4 * entries.len();
    }
}

/// Sets bitmap codes in the bytes of one chunk (which starts at a multiple of 4 elements).
#[derive(Debug)]
pub(crate) struct BitmapSink<'a> {
    /// The chunk's bytes, zeroed beforehand.
    pub bytes: &'a mut [u8],
    /// The segment index of the chunk's first element.
    pub base: usize,
}

impl Sink for BitmapSink<'_> {
    #[inline(always)]
    fn put(&mut self, i: usize, positive: bool) {
        let j = i - self.base;
        // Low bit of the pair: +tau; high bit: -tau.
        let bit = 2 * (j % 4) + usize::from(!positive);
        if let Some(b) = self.bytes.get_mut(j / 4) {
            *b |= 1 << bit;
        }
    }
}

/// Pass 2 for a chunk that was not listed: walks it again, sends the first `q_lo`
/// candidates before `split` and the first `q_hi` from `split` on, debiting each.
///
/// # Safety
/// The CPU supports the instructions of `L`; `x` holds no non-finite value that matters
/// (it was validated, so the walk cannot fail).
#[inline(always)]
pub(crate) unsafe fn select_chunk<L: Lanes>(
    x: &mut [f32],
    base: usize,
    split: usize,
    tau: f32,
    mut q_lo: usize,
    mut q_hi: usize,
    sink: &mut impl Sink,
) {
    if q_lo == 0 && q_hi == 0 {
        return;
    }
    // SAFETY: forwarded from the caller. The chunk was validated, so the walk cannot stop
    // at a non-finite element; should it, nothing more is selected, which is harmless.
    let _ = unsafe {
        walk::<L, _>(x, tau, |x: &mut [f32], j| {
            let take = if j < split {
                let t = q_lo > 0;
                q_lo -= usize::from(t);
                t
            } else {
                let t = q_hi > 0;
                q_hi -= usize::from(t);
                t
            };
            if take {
                sink.put(base + j, x[j] > 0.0);
                debit(&mut x[j], tau);
            }
            q_lo > 0 || q_hi > 0
        })
    };
}

/// Pass 2 for a listed chunk: sends the first `q_lo` recorded candidates before the split
/// (the list's first `lo` entries) and the first `q_hi` after it; puts back the original
/// bits of the others, which were debited speculatively.
#[cfg(feature = "std")]
pub(crate) fn emit_listed(
    x: &mut [f32],
    base: usize,
    list: &Recs,
    lo: usize,
    q_lo: usize,
    q_hi: usize,
    sink: &mut impl Sink,
) {
    if q_lo >= lo && q_hi >= list.len() - lo {
        // Everything is sent (no cap, or a cap that keeps this chunk whole).
        sink.put_entries(&list.entries);
        return;
    }
    for (k, (&e, &orig)) in list.entries.iter().zip(&list.origs).enumerate() {
        let take = if k < lo { k < q_lo } else { k - lo < q_hi };
        let i = e.unsigned_abs() as usize - 1;
        if take {
            sink.put(i, e > 0);
        } else if let Some(v) = x.get_mut(i - base) {
            *v = f32::from_bits(orig);
        }
    }
}

/// Adds sparse entries (4-byte little-endian `±(i+1)`) into `target`, whose first element
/// is element `base` of the message's range.
///
/// The updates are scattered over the whole target (at density 1e-3 of 2^26 elements, one
/// entry every 4 KiB: a cache and TLB miss each), so the element of the entry
/// [`PREFETCH_AHEAD`] places further on is prefetched: the misses of consecutive entries
/// overlap instead of queueing behind the loop's own loads.
pub(crate) fn decode_sparse(target: &mut [f32], base: usize, entries: &[u8], tau: f32) {
    let index = |c: &[u8]| {
        let e = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        ((e.unsigned_abs() as usize).wrapping_sub(1 + base), e > 0)
    };
    let ahead = entries.get(4 * PREFETCH_AHEAD..).unwrap_or(&[]);
    let mut pre = ahead.chunks_exact(4);
    for c in entries.chunks_exact(4) {
        if let Some(p) = pre.next() {
            let (i, _) = index(p);
            if let Some(t) = target.get(i) {
                prefetch(t);
            }
        }
        let (i, positive) = index(c);
        if let Some(t) = target.get_mut(i) {
            if positive {
                *t += tau;
            } else {
                *t -= tau;
            }
        }
    }
}

/// How many entries ahead [`decode_sparse`] prefetches.
const PREFETCH_AHEAD: usize = 48;

/// A hint that `*t` is about to be read and written (no effect on the result).
#[inline(always)]
fn prefetch(t: &f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline; a prefetch never faults and changes no
    // state a program can observe.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (t as *const f32).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = t;
}

/// Adds bitmap codes into `target`: `bytes[b]` holds the codes of `target[4b .. 4b + 4]`.
/// Eight zero bytes (32 elements) are skipped at once.
pub(crate) fn decode_bitmap(target: &mut [f32], bytes: &[u8], tau: f32) {
    let mut words = bytes.chunks_exact(8);
    let mut t = 0usize;
    for w in words.by_ref() {
        let word = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if word != 0 {
            for (k, &byte) in w.iter().enumerate() {
                if byte != 0 {
                    decode_byte(target, t + 4 * k, byte, tau);
                }
            }
        }
        t += 32;
    }
    for (k, &byte) in words.remainder().iter().enumerate() {
        if byte != 0 {
            decode_byte(target, t + 4 * k, byte, tau);
        }
    }
}

/// Applies the four codes of one bitmap byte to `target[at .. at + 4]`.
#[inline(always)]
fn decode_byte(target: &mut [f32], at: usize, byte: u8, tau: f32) {
    for s in 0..4 {
        let code = (byte >> (2 * s)) & 0b11;
        if let Some(t) = target.get_mut(at + s) {
            if code & 1 != 0 {
                *t += tau;
            } else if code & 2 != 0 {
                *t -= tau;
            }
        }
    }
}

/// Adds dense little-endian f32 values into `target`.
pub(crate) fn decode_dense(target: &mut [f32], values: &[u8]) {
    for (t, c) in target.iter_mut().zip(values.chunks_exact(4)) {
        *t += f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Writes a dense payload and leaves `x - x` (`+0.0`) behind, as the reference does.
pub(crate) fn encode_dense(x: &mut [f32], out: &mut [u8]) {
    for (v, c) in x.iter_mut().zip(out.chunks_exact_mut(4)) {
        c.copy_from_slice(&v.to_le_bytes());
        *v -= *v;
    }
}

/// The AVX2 implementation of [`Lanes`] and the kernels compiled for it.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) mod avx2 {
    use super::*;
    use core::arch::x86_64::*;

    /// 4 x 8 lanes per block: `and` for the absolute value, two compares, two movemasks.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2;

    impl Lanes for Avx2 {
        #[inline(always)]
        unsafe fn block(b: &[f32], tau: f32) -> (u32, bool) {
            debug_assert!(b.len() >= BLOCK);
            // SAFETY: the caller guarantees AVX2 (the trait's contract) and 32 readable
            // elements at `b`; `loadu` has no alignment requirement.
            unsafe {
                let p = b.as_ptr();
                let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
                let t = _mm256_set1_ps(tau);
                let max = _mm256_set1_ps(f32::MAX);
                let a0 = _mm256_and_ps(_mm256_loadu_ps(p), abs);
                let a1 = _mm256_and_ps(_mm256_loadu_ps(p.add(8)), abs);
                let a2 = _mm256_and_ps(_mm256_loadu_ps(p.add(16)), abs);
                let a3 = _mm256_and_ps(_mm256_loadu_ps(p.add(24)), abs);
                let c0 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(a0, t)) as u32;
                let c1 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(a1, t)) as u32;
                let c2 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(a2, t)) as u32;
                let c3 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(a3, t)) as u32;
                // Not (a <= MAX): infinities and NaN (unordered compares true).
                let n01 = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_NLE_UQ>(a0, max),
                    _mm256_cmp_ps::<_CMP_NLE_UQ>(a1, max),
                );
                let n23 = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_NLE_UQ>(a2, max),
                    _mm256_cmp_ps::<_CMP_NLE_UQ>(a3, max),
                );
                let bad = _mm256_movemask_ps(_mm256_or_ps(n01, n23)) != 0;
                (c0 | c1 << 8 | c2 << 16 | c3 << 24, bad)
            }
        }

        /// 64 x 8 lanes: per vector an `and`, a compare and a movemask for the candidates,
        /// and an unsigned maximum of the absolute bits, compared once at the end against
        /// the largest finite magnitude for the non-finite flag.
        #[inline(always)]
        unsafe fn superblock(b: &[f32], tau: f32, masks: &mut [u64; SB_WORDS]) -> bool {
            debug_assert!(b.len() >= SUPER);
            // SAFETY: the caller guarantees AVX2 and `SUPER` readable elements at `b`.
            unsafe {
                let p = b.as_ptr();
                let abs = _mm256_set1_epi32(0x7fff_ffff);
                let t = _mm256_set1_ps(tau);
                let mut top = _mm256_setzero_si256();
                for (w, m) in masks.iter_mut().enumerate() {
                    let mut word = 0u64;
                    for v in 0..8 {
                        let q = p.add(WORD * w + 8 * v) as *const __m256i;
                        let a = _mm256_and_si256(_mm256_loadu_si256(q), abs);
                        top = _mm256_max_epu32(top, a);
                        let c = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_castsi256_ps(a), t);
                        word |= (_mm256_movemask_ps(c) as u32 as u64) << (8 * v);
                    }
                    *m = word;
                }
                // Absolute bits above f32::MAX's: an infinity or a NaN. `top` is at most
                // 0x7fff_ffff, so the signed compare is the unsigned one.
                let over = _mm256_cmpgt_epi32(top, _mm256_set1_epi32(f32::MAX.to_bits() as i32));
                _mm256_movemask_epi8(over) != 0
            }
        }
    }

    /// [`count_chunk`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2,bmi1,popcnt")]
    pub(crate) unsafe fn count(
        x: &[f32],
        split: usize,
        tau: f32,
    ) -> Result<(usize, usize), (usize, u32)> {
        // SAFETY: AVX2 is enabled for this function, so `Avx2`'s contract holds.
        unsafe { count_chunk::<Avx2>(x, split, tau) }
    }

    /// [`record_chunk`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2,bmi1,popcnt")]
    pub(crate) unsafe fn record(
        x: &mut [f32],
        base: usize,
        split: usize,
        tau: f32,
        limit: usize,
        list: &mut Recs,
    ) -> Result<ChunkScan, (usize, u32)> {
        // SAFETY: AVX2 is enabled for this function.
        unsafe { record_chunk::<Avx2>(x, base, split, tau, limit, list) }
    }

    /// [`select_chunk`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2,bmi1,popcnt")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn select(
        x: &mut [f32],
        base: usize,
        split: usize,
        tau: f32,
        q_lo: usize,
        q_hi: usize,
        sink: &mut impl Sink,
    ) {
        // SAFETY: AVX2 is enabled for this function.
        unsafe { select_chunk::<Avx2>(x, base, split, tau, q_lo, q_hi, sink) }
    }
}

/// The AVX-512 implementation of [`Lanes`]: 16-lane compares straight into mask registers,
/// and for the sparse encode's records the compress instruction (`vpcompressd`), which is
/// stream compaction in one instruction: each 16-element vector's candidates are packed to
/// the front of a register and stored with one plain store, whatever their number.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) mod avx512 {
    use super::*;
    use core::arch::x86_64::*;

    /// 16 lanes per vector, masks in `k` registers.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512;

    /// `|v|` of 16 lanes, as bits.
    #[inline(always)]
    unsafe fn abs_bits(p: *const f32) -> __m512i {
        // SAFETY: the caller guarantees AVX-512F and 16 readable elements at `p`.
        unsafe {
            _mm512_and_si512(
                _mm512_loadu_si512(p as *const _),
                _mm512_set1_epi32(0x7fff_ffff),
            )
        }
    }

    impl Lanes for Avx512 {
        #[inline(always)]
        unsafe fn block(b: &[f32], tau: f32) -> (u32, bool) {
            debug_assert!(b.len() >= BLOCK);
            // SAFETY: the caller guarantees AVX-512F and 32 readable elements at `b`.
            unsafe {
                let p = b.as_ptr();
                let t = _mm512_set1_ps(tau);
                let max = _mm512_set1_epi32(f32::MAX.to_bits() as i32);
                let a0 = abs_bits(p);
                let a1 = abs_bits(p.add(16));
                let c0 = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_castsi512_ps(a0), t) as u32;
                let c1 = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_castsi512_ps(a1), t) as u32;
                let bad = _mm512_cmpgt_epu32_mask(_mm512_max_epu32(a0, a1), max) != 0;
                (c0 | c1 << 16, bad)
            }
        }

        #[inline(always)]
        unsafe fn superblock(b: &[f32], tau: f32, masks: &mut [u64; SB_WORDS]) -> bool {
            debug_assert!(b.len() >= SUPER);
            // SAFETY: the caller guarantees AVX-512F and `SUPER` readable elements at `b`.
            unsafe {
                let p = b.as_ptr();
                let t = _mm512_set1_ps(tau);
                let mut top = _mm512_setzero_si512();
                for (w, m) in masks.iter_mut().enumerate() {
                    let mut word = 0u64;
                    for v in 0..4 {
                        let a = abs_bits(p.add(WORD * w + 16 * v));
                        top = _mm512_max_epu32(top, a);
                        let c = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_castsi512_ps(a), t);
                        word |= (c as u64) << (16 * v);
                    }
                    *m = word;
                }
                let max = _mm512_set1_epi32(f32::MAX.to_bits() as i32);
                _mm512_cmpgt_epu32_mask(top, max) != 0
            }
        }

        /// Per 16-element vector: the sparse entries `±(i+1)` and the original bits of all 16
        /// lanes, compressed to the candidates and stored at the end of the lists (16 lanes
        /// written, the candidates' count kept), and the debit stored under the mask.
        #[inline(always)]
        unsafe fn emit(
            x: &mut [f32],
            b: usize,
            base: usize,
            masks: &[u64; SB_WORDS],
            tau: f32,
            list: &mut Recs,
            _scratch: &mut Offsets,
        ) {
            debug_assert!(b + SUPER <= x.len());
            // Room for every lane of every vector of the superblock past the current end.
            list.entries.reserve(SUPER + 16);
            list.origs.reserve(SUPER + 16);
            let mut len = list.entries.len();
            debug_assert_eq!(len, list.origs.len());
            // SAFETY: the caller guarantees AVX-512F and `b + SUPER <= x.len()`, so every
            // load and masked store lies in `x`. Each vector's two 16-lane stores start at
            // `len`, which grows by at most 16 per vector over SUPER / 16 vectors, so they
            // stay below `len0 + SUPER + 16`, within the capacity reserved above. `set_len`
            // covers only lanes written by the compress stores (their first `popcnt` lanes).
            unsafe {
                let p = x.as_mut_ptr().add(b);
                let ep = list.entries.as_mut_ptr();
                let op = list.origs.as_mut_ptr();
                let t = _mm512_castps_si512(_mm512_set1_ps(tau));
                let sign = _mm512_set1_epi32(i32::MIN);
                let lanes =
                    _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
                for v in 0..SUPER / 16 {
                    let m = (masks[v / 4] >> (16 * (v % 4))) as u16;
                    let q = p.add(16 * v);
                    let bits = _mm512_loadu_si512(q as *const _);
                    // i + 1 for each lane, then the sign of the value: (i ^ neg) - neg.
                    let first = (base + b + 16 * v) as i32;
                    let idx = _mm512_add_epi32(_mm512_set1_epi32(first), lanes);
                    let neg = _mm512_srai_epi32::<31>(bits);
                    let entry = _mm512_sub_epi32(_mm512_xor_si512(idx, neg), neg);
                    _mm512_storeu_si512(
                        ep.add(len) as *mut _,
                        _mm512_maskz_compress_epi32(m, entry),
                    );
                    _mm512_storeu_si512(
                        op.add(len) as *mut _,
                        _mm512_maskz_compress_epi32(m, bits),
                    );
                    // v - copysign(tau, v), as `debit_value`.
                    let signed_tau = _mm512_or_si512(_mm512_and_si512(bits, sign), t);
                    let debited =
                        _mm512_sub_ps(_mm512_castsi512_ps(bits), _mm512_castsi512_ps(signed_tau));
                    _mm512_mask_storeu_ps(q, m, debited);
                    len += m.count_ones() as usize;
                }
                list.entries.set_len(len);
                list.origs.set_len(len);
            }
        }
    }

    /// [`count_chunk`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f,avx2,bmi1,popcnt")]
    pub(crate) unsafe fn count(
        x: &[f32],
        split: usize,
        tau: f32,
    ) -> Result<(usize, usize), (usize, u32)> {
        // SAFETY: AVX-512F is enabled for this function, so `Avx512`'s contract holds.
        unsafe { count_chunk::<Avx512>(x, split, tau) }
    }

    /// [`record_chunk`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f,avx2,bmi1,popcnt")]
    pub(crate) unsafe fn record(
        x: &mut [f32],
        base: usize,
        split: usize,
        tau: f32,
        limit: usize,
        list: &mut Recs,
    ) -> Result<ChunkScan, (usize, u32)> {
        // SAFETY: AVX-512F is enabled for this function.
        unsafe { record_chunk::<Avx512>(x, base, split, tau, limit, list) }
    }

    /// [`select_chunk`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f,avx2,bmi1,popcnt")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn select(
        x: &mut [f32],
        base: usize,
        split: usize,
        tau: f32,
        q_lo: usize,
        q_hi: usize,
        sink: &mut impl Sink,
    ) {
        // SAFETY: AVX-512F is enabled for this function.
        unsafe { select_chunk::<Avx512>(x, base, split, tau, q_lo, q_hi, sink) }
    }
}

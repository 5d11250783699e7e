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

/// A way of computing a block's masks.
pub(crate) trait Lanes {
    /// Returns the candidate mask (bit `k` set when `|b[k]| >= tau`) and whether some element
    /// of `b[..BLOCK]` is NaN or infinite.
    ///
    /// # Safety
    /// `b.len() >= BLOCK`, and the CPU supports the instructions of the implementation.
    unsafe fn block(b: &[f32], tau: f32) -> (u32, bool);
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

/// Counts the candidates of `x` before and from `split`, stopping at the first non-finite
/// element (its index in `x` and its bits).
///
/// # Safety
/// The CPU supports the instructions of `L`.
#[inline(always)]
pub(crate) unsafe fn count_chunk<L: Lanes>(
    mut x: &[f32],
    split: usize,
    tau: f32,
) -> Result<(usize, usize), (usize, u32)> {
    let mut lo = 0;
    let mut hi = 0;
    // SAFETY: forwarded from the caller.
    unsafe {
        walk::<L, _>(&mut x, tau, |_, j| {
            if j < split {
                lo += 1;
            } else {
                hi += 1;
            }
            true
        })?;
    }
    Ok((lo, hi))
}

/// One candidate recorded by [`record_chunk`]: its sparse entry and its value before the
/// speculative debit.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rec {
    /// `+(i+1)` or `-(i+1)`, `i` relative to the segment.
    pub entry: i32,
    /// The element's bits before the debit.
    pub orig: u32,
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

/// Pass 1 of the fast encode: counts the candidates before and from `split`, and while the
/// chunk has at most `limit` of them records each one (its sparse entry and original bits)
/// and debits it speculatively, so that a sparse message needs no second walk. A chunk with
/// more candidates restores what it debited and reports `listed: false`.
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
    list: &mut Vec<Rec>,
) -> Result<ChunkScan, (usize, u32)> {
    list.clear();
    let mut lo = 0;
    let mut hi = 0;
    let mut listed = true;
    // SAFETY: forwarded from the caller.
    let walked = unsafe {
        walk::<L, _>(x, tau, |x: &mut [f32], j| {
            if j < split {
                lo += 1;
            } else {
                hi += 1;
            }
            if listed {
                if list.len() < limit {
                    let v = x[j];
                    let i = (base + j) as i32 + 1;
                    // Branch-free sign: `neg` is 0 or -1 (v is a candidate, never zero).
                    let neg = (v.to_bits() as i32) >> 31;
                    list.push(Rec {
                        entry: (i ^ neg) - neg,
                        orig: v.to_bits(),
                    });
                    x[j] = debit_value(v, tau);
                } else {
                    restore(x, base, list);
                    list.clear();
                    listed = false;
                }
            }
            true
        })
    };
    if let Err(e) = walked {
        restore(x, base, list);
        list.clear();
        return Err(e);
    }
    Ok(ChunkScan { lo, hi, listed })
}

/// The reference's debit of a candidate (`v - tau` for `v > 0`, else `v + tau`) without a
/// branch: `v - copysign(tau, v)`. For `v < 0` that is `v - (-tau)`, which IEEE 754 rounds
/// exactly as `v + tau`; candidates are never zero, so the sign decides as `v > 0` does.
#[cfg(feature = "std")]
#[inline(always)]
pub(crate) fn debit_value(v: f32, tau: f32) -> f32 {
    v - tau.copysign(v)
}

/// Puts back the original bits of every recorded element of a chunk starting at `base`.
#[cfg(feature = "std")]
pub(crate) fn restore(x: &mut [f32], base: usize, list: &[Rec]) {
    for r in list {
        let j = r.entry.unsigned_abs() as usize - 1 - base;
        if let Some(v) = x.get_mut(j) {
            *v = f32::from_bits(r.orig);
        }
    }
}

/// Where selected entries go.
pub(crate) trait Sink {
    /// Element `i` (relative to the segment) is sent, as `+tau` when `positive`.
    fn put(&mut self, i: usize, positive: bool);
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
    list: &[Rec],
    lo: usize,
    q_lo: usize,
    q_hi: usize,
    sink: &mut impl Sink,
) {
    for (k, r) in list.iter().enumerate() {
        let take = if k < lo { k < q_lo } else { k - lo < q_hi };
        let i = r.entry.unsigned_abs() as usize - 1;
        if take {
            sink.put(i, r.entry > 0);
        } else if let Some(v) = x.get_mut(i - base) {
            *v = f32::from_bits(r.orig);
        }
    }
}

/// Adds sparse entries (4-byte little-endian `±(i+1)`) into `target`, whose first element
/// is element `base` of the message's range.
pub(crate) fn decode_sparse(target: &mut [f32], base: usize, entries: &[u8], tau: f32) {
    for c in entries.chunks_exact(4) {
        let e = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let i = (e.unsigned_abs() as usize).wrapping_sub(1 + base);
        if let Some(t) = target.get_mut(i) {
            if e > 0 {
                *t += tau;
            } else {
                *t -= tau;
            }
        }
    }
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
    }

    /// [`count_chunk`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
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
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn record(
        x: &mut [f32],
        base: usize,
        split: usize,
        tau: f32,
        limit: usize,
        list: &mut Vec<Rec>,
    ) -> Result<ChunkScan, (usize, u32)> {
        // SAFETY: AVX2 is enabled for this function.
        unsafe { record_chunk::<Avx2>(x, base, split, tau, limit, list) }
    }

    /// [`select_chunk`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
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

//! The portable path: plain loops over the whole segment, `no_std`, one thread.
//!
//! Encode is the reference's two passes (validate and count, then write and commit) written
//! with the chunk kernels and the [`Scalar`] lanes; it is also the fallback the fast path's
//! design is checked against.

use crate::kernels::{self, BitmapSink, Scalar, SparseSink};
use crate::{Quotas, cap_split, seal};
use core::ops::Range;
use gradcast_core::CodecError;
use gradcast_core::Error;
use gradcast_core::codec::{EncodeParams, EncodeSummary, Plan, check_tau, segment_range};
use gradcast_core::wire::{Encoding, HEADER_LEN, MessageView};

/// Counts `|x| >= tau` over `range`, as the reference backend does.
pub(crate) fn count(x: &[f32], range: Range<usize>, tau: f32) -> Result<u64, Error> {
    gradcast_core::backend::check_range(&range, x.len())?;
    check_tau(tau)?;
    let start = range.start;
    // SAFETY: `Scalar` uses no special instructions.
    let (lo, hi) =
        unsafe { kernels::count_chunk::<Scalar>(&x[range], 0, tau) }.map_err(|(j, bits)| {
            CodecError::NonFinite {
                index: start + j,
                bits,
            }
        })?;
    Ok((lo + hi) as u64)
}

/// Encodes and commits, exactly as [`gradcast_core::codec::encode`].
pub(crate) fn encode(
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

    // Pass 1: validate and count, before and from the cap's start.
    // SAFETY: `Scalar` uses no special instructions.
    let (lo, hi) =
        unsafe { kernels::count_chunk::<Scalar>(seg, split, tau) }.map_err(|(j, bits)| {
            CodecError::NonFinite {
                index: offset + j,
                bits,
            }
        })?;
    let plan = Plan::new(params, n, lo + hi, out.len(), |start| {
        debug_assert_eq!(start, split);
        hi
    })?;

    // Pass 2: write the payload and debit what it carries.
    let payload = &mut out[HEADER_LEN..plan.bytes];
    let (q_lo, q_hi) = Quotas::new(&plan).take(lo, hi);
    match plan.encoding {
        Encoding::Dense => kernels::encode_dense(seg, payload),
        Encoding::Sparse => {
            let mut sink = SparseSink {
                out: payload,
                pos: 0,
            };
            // SAFETY: `Scalar` uses no special instructions; `seg` was validated.
            unsafe { kernels::select_chunk::<Scalar>(seg, 0, split, tau, q_lo, q_hi, &mut sink) };
        }
        Encoding::Bitmap => {
            payload.fill(0);
            let mut sink = BitmapSink {
                bytes: payload,
                base: 0,
            };
            // SAFETY: as above.
            unsafe { kernels::select_chunk::<Scalar>(seg, 0, split, tau, q_lo, q_hi, &mut sink) };
        }
    }
    Ok(seal(out, &plan, params, n))
}

/// Adds a validated message into `target`, exactly as [`gradcast_core::codec::decode_add`].
pub(crate) fn decode_add(msg: &MessageView<'_>, target: &mut [f32]) -> Result<(), Error> {
    let range = msg.target_range(target.len())?;
    let seg = &mut target[range];
    match msg.encoding() {
        Encoding::Sparse => kernels::decode_sparse(seg, 0, msg.payload(), msg.tau()),
        Encoding::Bitmap => kernels::decode_bitmap(seg, msg.payload(), msg.tau()),
        Encoding::Dense => kernels::decode_dense(seg, msg.payload()),
    }
    Ok(())
}

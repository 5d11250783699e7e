//! The [`Backend`] trait: what a compute device must do for gradcast.
//!
//! # Design
//!
//! * Methods take `&self` on an instance that owns its context (a CUDA stream, an OpenCL
//!   queue, a thread pool), so one process may hold several backends.
//! * Vectors (residuals, updates, parameters) live in the backend's own [`Backend::Buffer`]
//!   type and stay on the device. Only messages, which are small, cross to the host as byte
//!   slices. [`Backend::upload`] and [`Backend::download`] are explicit, so the conformance
//!   suite can compare any backend with the reference.
//! * Every backend's output is byte-identical (messages) and bit-identical (vectors) to the
//!   core's reference codec ([`crate::codec`]) and to [`Reference`]: no fast-math, no fused
//!   multiply-add where the reference rounds twice, a fixed order of entries.
//! * Messages are validated on the host with [`MessageView::parse`] before they reach a
//!   backend, so `decode_add` only sees valid messages and reports the same errors everywhere.
//! * Device work may be asynchronous: [`Backend::sync`] waits for it and returns launch errors.
//!   Methods that return data to the host (encode's message, `download`, `count`) synchronise
//!   themselves.

use crate::codec::{EncodeParams, EncodeSummary};
use crate::error::CodecError;
use crate::error::{Classify, Error};
use crate::wire::MessageView;
use core::ops::Range;

/// Statistics of a vector (or a range of it), computed in a fixed order so that every backend
/// returns the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct VectorStats {
    /// Sum of squares, accumulated in f64.
    pub sum_sq: f64,
    /// Largest absolute value.
    pub max_abs: f32,
}

impl VectorStats {
    /// The L2 norm, `sqrt(sum_sq)`.
    pub fn l2(&self) -> f64 {
        libm::sqrt(self.sum_sq)
    }
}

/// What clipping removed from a vector.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct ClipStats {
    /// Elements that were clipped.
    pub elements: u64,
    /// Sum of `|x| - limit` over the clipped elements, in f64: the mass removed.
    pub mass: f64,
}

/// A compute backend. See the [module docs](self) for the design rules.
pub trait Backend {
    /// A device-resident f32 vector.
    type Buffer;
    /// The backend's error type: converts from the core's [`Error`] and classifies itself.
    type Error: From<Error> + Classify + core::fmt::Debug + core::fmt::Display;

    /// A short name for messages and reports (`"cpu"`, `"opencl:<device>"`, ...).
    fn name(&self) -> &str;

    /// Allocates a zero-filled vector of `len` elements.
    ///
    /// # Errors
    /// Device allocation failures.
    fn alloc(&self, len: usize) -> Result<Self::Buffer, Self::Error>;

    /// The number of elements of a buffer.
    fn len(&self, buf: &Self::Buffer) -> usize;

    /// Copies host data into a buffer of the same length.
    ///
    /// # Errors
    /// [`CodecError::BufferTooSmall`] (as [`crate::ErrorKind::SizeMismatch`] or
    /// `BufferTooSmall`) when lengths differ; device errors.
    fn upload(&self, src: &[f32], dst: &mut Self::Buffer) -> Result<(), Self::Error>;

    /// Copies a buffer into host memory of the same length.
    ///
    /// # Errors
    /// As [`Backend::upload`].
    fn download(&self, src: &Self::Buffer, dst: &mut [f32]) -> Result<(), Self::Error>;

    /// Sets every element to `value`.
    ///
    /// # Errors
    /// Device errors.
    fn fill(&self, buf: &mut Self::Buffer, value: f32) -> Result<(), Self::Error>;

    /// Counts elements of `range` with `|x| >= tau`, as [`crate::codec::count`].
    ///
    /// # Errors
    /// [`WireError::BadTau`](crate::WireError::BadTau), [`CodecError::NonFinite`] (first index), [`CodecError::SegmentOutOfRange`].
    fn count(&self, x: &Self::Buffer, range: Range<usize>, tau: f32) -> Result<u64, Self::Error>;

    /// Encodes and commits, exactly as [`crate::codec::encode`] on the downloaded vector.
    ///
    /// # Errors
    /// As [`crate::codec::encode`]; on error the residual is unchanged.
    fn encode(
        &self,
        residual: &mut Self::Buffer,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, Self::Error>;

    /// Adds a validated message into `target`, exactly as [`crate::codec::decode_add`].
    ///
    /// # Errors
    /// [`CodecError::TargetSizeMismatch`]; device errors.
    fn decode_add(
        &self,
        msg: &MessageView<'_>,
        target: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// `dst[i] += src[i]` (residual += update).
    ///
    /// # Errors
    /// [`CodecError::TargetSizeMismatch`] when lengths differ; device errors.
    fn add_assign(&self, dst: &mut Self::Buffer, src: &Self::Buffer) -> Result<(), Self::Error>;

    /// `params[i] -= scale * update[i]`, rounded as two separate f32 operations (product,
    /// then difference; never fused), or `params[i] -= update[i]` exactly when `scale == 1`.
    ///
    /// # Errors
    /// As [`Backend::add_assign`].
    fn sub_scaled(
        &self,
        params: &mut Self::Buffer,
        update: &Self::Buffer,
        scale: f32,
    ) -> Result<(), Self::Error>;

    /// Applies one round's messages to a replica: decodes every message of `msgs` into
    /// `update`, in order (as [`Backend::decode_add`]), then `params -= scale * update` (as
    /// [`Backend::sub_scaled`]), and leaves `update` all zeros again. The round protocol's
    /// step.
    ///
    /// `update` must hold zeros on entry; after an error its contents are unspecified (fill
    /// it with zeros before the next call). The result is bit-identical to the three-step
    /// sequence, so a backend may skip elements no message touches (`p - scale * 0` is `p`)
    /// and clear only the elements it changed: the default does the three full passes (a
    /// decode, the step, a fill); the CPU backend, for sparse rounds, touches only the
    /// entries. (Only a signalling NaN in `params` could tell the difference: a full pass
    /// quiets it, a skipped element keeps it; Rust does not specify NaN bits of arithmetic
    /// results anyway.)
    ///
    /// # Errors
    /// As [`Backend::decode_add`] and [`Backend::sub_scaled`].
    fn apply_messages<'m, I>(
        &self,
        msgs: I,
        update: &mut Self::Buffer,
        params: &mut Self::Buffer,
        scale: f32,
    ) -> Result<(), Self::Error>
    where
        I: Iterator<Item = MessageView<'m>> + Clone,
    {
        for m in msgs {
            self.decode_add(&m, update)?;
        }
        self.sub_scaled(params, update, scale)?;
        self.fill(update, 0.0)
    }

    /// Clips `range` to `[-limit, limit]` and reports what was removed.
    ///
    /// # Errors
    /// [`CodecError::SegmentOutOfRange`]; device errors.
    fn clip(
        &self,
        buf: &mut Self::Buffer,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, Self::Error>;

    /// Sum of squares (f64, sequential order) and largest absolute value of `range`.
    ///
    /// # Errors
    /// [`CodecError::SegmentOutOfRange`]; device errors.
    fn stats(&self, buf: &Self::Buffer, range: Range<usize>) -> Result<VectorStats, Self::Error>;

    /// Waits for queued device work and reports asynchronous errors.
    ///
    /// # Errors
    /// Device errors.
    fn sync(&self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Checks that `range` lies in a vector of `len` elements.
///
/// # Errors
/// [`CodecError::SegmentOutOfRange`].
pub fn check_range(range: &Range<usize>, len: usize) -> Result<(), Error> {
    if range.start <= range.end && range.end <= len {
        Ok(())
    } else {
        Err(CodecError::SegmentOutOfRange {
            offset: range.start,
            len: range.end.saturating_sub(range.start),
            vector_len: len,
        }
        .into())
    }
}

/// Checks that two vectors have the same length.
///
/// # Errors
/// [`CodecError::TargetSizeMismatch`].
pub fn check_same_len(a: usize, b: usize) -> Result<(), Error> {
    if a == b {
        Ok(())
    } else {
        Err(CodecError::TargetSizeMismatch {
            message_n: b.min(u32::MAX as usize) as u32,
            offset: 0,
            target_len: a,
        }
        .into())
    }
}

/// Plain-loop implementations of the vector operations on host slices, shared by the
/// reference backend and by host-memory backends' portable paths.
pub mod slices {
    use super::*;

    /// `params[i] -= scale * update[i]` with the trait's rounding rule.
    pub fn sub_scaled(params: &mut [f32], update: &[f32], scale: f32) {
        if scale == 1.0 {
            for (p, u) in params.iter_mut().zip(update) {
                *p -= *u;
            }
        } else {
            for (p, u) in params.iter_mut().zip(update) {
                let d = scale * *u;
                *p -= d;
            }
        }
    }

    /// Clips to `[-limit, limit]`.
    pub fn clip(x: &mut [f32], limit: f32) -> ClipStats {
        let mut s = ClipStats::default();
        for v in x.iter_mut() {
            let a = v.abs();
            if a > limit {
                s.elements += 1;
                s.mass += (a as f64) - (limit as f64);
                *v = if *v > 0.0 { limit } else { -limit };
            }
        }
        s
    }

    /// Sum of squares and largest absolute value, in index order.
    pub fn stats(x: &[f32]) -> VectorStats {
        let mut s = VectorStats::default();
        for &v in x {
            s.sum_sq += (v as f64) * (v as f64);
            let a = v.abs();
            if a > s.max_abs {
                s.max_abs = a;
            }
        }
        s
    }
}

/// The reference backend: host `Vec<f32>` buffers and the core's reference codec. It is the
/// oracle of the conformance suite and the backend of the core's own round-protocol tests.
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

#[cfg(feature = "alloc")]
impl Backend for Reference {
    type Buffer = alloc::vec::Vec<f32>;
    type Error = Error;

    fn name(&self) -> &str {
        "reference"
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer, Error> {
        Ok(alloc::vec![0.0; len])
    }

    fn len(&self, buf: &Self::Buffer) -> usize {
        buf.len()
    }

    fn upload(&self, src: &[f32], dst: &mut Self::Buffer) -> Result<(), Error> {
        check_same_len(dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &Self::Buffer, dst: &mut [f32]) -> Result<(), Error> {
        check_same_len(dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn fill(&self, buf: &mut Self::Buffer, value: f32) -> Result<(), Error> {
        buf.fill(value);
        Ok(())
    }

    fn count(&self, x: &Self::Buffer, range: Range<usize>, tau: f32) -> Result<u64, Error> {
        check_range(&range, x.len())?;
        let start = range.start;
        crate::codec::count(&x[range], tau)
            .map(|c| c as u64)
            .map_err(|e| match e {
                Error::Codec(CodecError::NonFinite { index, bits }) => {
                    Error::Codec(CodecError::NonFinite {
                        index: index + start,
                        bits,
                    })
                }
                other => other,
            })
    }

    fn encode(
        &self,
        residual: &mut Self::Buffer,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, Error> {
        crate::codec::encode(residual, params, out)
    }

    fn decode_add(&self, msg: &MessageView<'_>, target: &mut Self::Buffer) -> Result<(), Error> {
        crate::codec::decode_add(msg, target)
    }

    fn add_assign(&self, dst: &mut Self::Buffer, src: &Self::Buffer) -> Result<(), Error> {
        check_same_len(dst.len(), src.len())?;
        for (d, s) in dst.iter_mut().zip(src) {
            *d += *s;
        }
        Ok(())
    }

    fn sub_scaled(
        &self,
        params: &mut Self::Buffer,
        update: &Self::Buffer,
        scale: f32,
    ) -> Result<(), Error> {
        check_same_len(params.len(), update.len())?;
        slices::sub_scaled(params, update, scale);
        Ok(())
    }

    fn clip(
        &self,
        buf: &mut Self::Buffer,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, Error> {
        check_range(&range, buf.len())?;
        Ok(slices::clip(&mut buf[range], limit))
    }

    fn stats(&self, buf: &Self::Buffer, range: Range<usize>) -> Result<VectorStats, Error> {
        check_range(&range, buf.len())?;
        Ok(slices::stats(&buf[range]))
    }
}

//! [`CodecError`]: the vectors and buffers handed to an operation do not fit it.

use super::{Classify, ErrorKind};

/// The vectors and buffers handed to an operation do not fit it: an output buffer too small,
/// a message or vector of another length, a range outside the vector, values that are not
/// finite.
///
/// The argument checks of the reference codec ([`crate::codec`]) and of every
/// [`crate::Backend`]; checkpoint save and restore and the transport's packet storage report
/// the same conditions with the same variants.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A caller-supplied output buffer is too small.
    #[error("output buffer too small: {needed} needed, {got} given")]
    BufferTooSmall {
        /// Bytes (or elements) needed.
        needed: usize,
        /// Bytes (or elements) supplied.
        got: usize,
    },
    /// A message does not fit the target vector (a message for a model of another size).
    #[error(
        "message covers elements {offset}..{} but the target vector has {target_len} (a message for a model of another size?)",
        *.offset as u64 + *.message_n as u64
    )]
    TargetSizeMismatch {
        /// The message's element count.
        message_n: u32,
        /// The message's segment offset.
        offset: u32,
        /// The target vector's length.
        target_len: usize,
    },
    /// A segment range lies outside the vector it is taken from.
    #[error(
        "segment {offset}..{} lies outside a vector of {vector_len} elements",
        *.offset as u64 + *.len as u64
    )]
    SegmentOutOfRange {
        /// The segment's first element.
        offset: usize,
        /// The segment's length.
        len: usize,
        /// The vector's length.
        vector_len: usize,
    },
    /// The residual (or update) holds NaN or an infinity; nothing was encoded or changed.
    #[error(
        "element {index} is not finite ({}); nothing was encoded",
        f32::from_bits(*.bits)
    )]
    NonFinite {
        /// The element's index in the vector.
        index: usize,
        /// The value's f32 bit pattern.
        bits: u32,
    },
}

impl Classify for CodecError {
    fn kind(&self) -> ErrorKind {
        match self {
            CodecError::BufferTooSmall { .. } => ErrorKind::BufferTooSmall,
            CodecError::TargetSizeMismatch { .. } | CodecError::SegmentOutOfRange { .. } => {
                ErrorKind::SizeMismatch
            }
            CodecError::NonFinite { .. } => ErrorKind::NonFinite,
        }
    }
}

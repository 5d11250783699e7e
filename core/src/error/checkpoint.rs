//! [`CheckpointError`]: an encoder checkpoint is malformed or belongs to another encoder.

use super::{Classify, ErrorKind};

/// An encoder checkpoint ([`crate::encoder::checkpoint`]) breaks a rule of its format, or is
/// valid but was written by an encoder of another shape.
///
/// What [`crate::encoder::checkpoint::CheckpointView::parse`] reports for untrusted bytes,
/// and what restoring reports when the checkpoint does not fit the restoring encoder.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Fewer bytes than the fixed header or than the header announces.
    #[error("checkpoint truncated: {needed} bytes needed, only {got} present")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first four bytes are not the encoder checkpoint magic.
    #[error(
        "bad magic {}: not a gradcast encoder checkpoint (expected {})",
        super::Magic(*.found),
        super::Magic(crate::encoder::checkpoint::MAGIC)
    )]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A checkpoint format version this build does not read.
    #[error(
        "unsupported checkpoint version {found} (this build reads version {})",
        crate::encoder::checkpoint::VERSION
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The buffer is longer than the checkpoint its header announces.
    #[error("checkpoint header announces {declared} bytes, the buffer holds {actual} bytes")]
    LengthMismatch {
        /// The length the header announces.
        declared: u64,
        /// The buffer's length.
        actual: usize,
    },
    /// The CRC-32C stored in the header does not match the bytes.
    #[error(
        "checkpoint checksum mismatch: header says {stored:#010x}, bytes give {computed:#010x} (corrupted)"
    )]
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum computed over the bytes.
        computed: u32,
    },
    /// A checkpoint's contents break a rule of the format; the text says which.
    #[error("malformed checkpoint: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A valid checkpoint written by an encoder of another shape (another N, another segment
    /// layout) than the one restoring it.
    #[error(
        "checkpoint does not fit this encoder: {what} is {found} in the checkpoint, {expected} here"
    )]
    ShapeMismatch {
        /// What differs (`"N"`, `"segmented flag"`, `"segment count"`, `"segment length"`, ...).
        what: &'static str,
        /// The restoring encoder's value.
        expected: u64,
        /// The checkpoint's value.
        found: u64,
    },
}

impl Classify for CheckpointError {
    fn kind(&self) -> ErrorKind {
        match self {
            CheckpointError::ChecksumMismatch { .. } => ErrorKind::Checksum,
            CheckpointError::ShapeMismatch { .. } => ErrorKind::SizeMismatch,
            CheckpointError::Truncated { .. }
            | CheckpointError::BadMagic { .. }
            | CheckpointError::UnsupportedVersion { .. }
            | CheckpointError::LengthMismatch { .. }
            | CheckpointError::Malformed { .. } => ErrorKind::Malformed,
        }
    }
}

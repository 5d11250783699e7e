//! [`WireError`]: bytes that claim to be a message, native or DL4J, break a rule of the format.

use super::{Classify, ErrorKind};

/// A message (gradcast wire format v1, or a DL4J int32 buffer) breaks a rule of its format,
/// or a value cannot be represented in it.
///
/// What [`crate::wire::MessageView::parse`], [`crate::packet::validate`] and
/// [`crate::dl4j::Dl4jView::parse`] report for untrusted bytes. The format's limits on
/// what a message can describe ([`WireError::EmptyVector`], [`WireError::TooManyElements`],
/// [`WireError::BadTau`]) are also reported when an encoder is asked to write such a message.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the fixed header or than the header announces.
    #[error("truncated: {needed} bytes needed, only {got} present")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first four bytes are not the gradcast magic.
    #[error(
        "bad magic {}: not a gradcast message (expected {})",
        super::Magic(*.found),
        super::Magic(crate::wire::MAGIC)
    )]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A format version this build does not read.
    #[error(
        "unsupported format version {found} (this build reads version {})",
        crate::wire::VERSION
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// An encoding code this build does not know.
    #[error("unknown encoding code {found}")]
    UnknownEncoding {
        /// The encoding byte found.
        found: u8,
    },
    /// Flag bits that this version does not define are set.
    #[error("unknown flag bits set: {found:#06x}")]
    UnknownFlags {
        /// The flags field found.
        found: u16,
    },
    /// A reserved field is not zero.
    #[error("reserved header field is {found}, not 0")]
    ReservedNotZero {
        /// The reserved field found.
        found: u16,
    },
    /// The element count N is zero: every message describes at least one element.
    #[error("element count N is 0; a vector has at least one element")]
    EmptyVector,
    /// The element count N is larger than the format allows.
    #[error("element count {n} exceeds the format's limit of {max}")]
    TooManyElements {
        /// The count found or requested.
        n: u64,
        /// The largest count allowed.
        max: u32,
    },
    /// The threshold is not a finite, strictly positive f32.
    #[error(
        "threshold {} (bits {bits:#010x}) is not a finite, strictly positive number",
        f32::from_bits(*.bits)
    )]
    BadTau {
        /// The f32 bit pattern found.
        bits: u32,
    },
    /// The segment fields are inconsistent (a non-zero segment or offset without the segment
    /// flag, or an offset + N past the largest vector the format can address).
    #[error("inconsistent segment fields: segment {segment}, offset {offset}, N {n}")]
    BadSegment {
        /// The segment id found.
        segment: u16,
        /// The offset found.
        offset: u32,
        /// The element count found.
        n: u32,
    },
    /// The entry count is larger than the element count (sparse, bitmap), or differs from it
    /// (dense: a dense message carries every element).
    #[error(
        "entry count {count} does not fit element count {n} (sparse and bitmap: at most N; dense: exactly N)"
    )]
    CountOutOfRange {
        /// The entry count found.
        count: u32,
        /// The element count found.
        n: u32,
    },
    /// The header's payload length does not match what its encoding, N and count imply.
    #[error("header declares a {declared}-byte payload, its fields imply {expected} bytes")]
    PayloadLengthMismatch {
        /// The payload length in the header.
        declared: u32,
        /// The payload length the other fields imply.
        expected: u64,
    },
    /// The buffer length does not match the header (trailing bytes, or a short payload).
    #[error("header announces a {declared}-byte message, the buffer holds {actual} bytes")]
    LengthMismatch {
        /// The total length the header announces.
        declared: usize,
        /// The buffer's actual length.
        actual: usize,
    },
    /// The CRC-32C stored in the header does not match the bytes.
    #[error(
        "checksum mismatch: header says {stored:#010x}, bytes give {computed:#010x} (corrupted)"
    )]
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum computed over the bytes.
        computed: u32,
    },
    /// A sparse entry is 0, which encodes no index.
    #[error("sparse entry #{position} is 0, which names no element")]
    EntryZero {
        /// The entry's position in the payload.
        position: usize,
    },
    /// A sparse entry names an element outside `1..=N`.
    #[error("sparse entry #{position} ({entry}) names an element outside 1..={n}")]
    EntryOutOfRange {
        /// The entry's position in the payload.
        position: usize,
        /// The entry.
        entry: i32,
        /// The element count.
        n: u32,
    },
    /// Sparse entries are not strictly ascending by index (a duplicate or a disorder).
    #[error(
        "sparse entry #{position} ({entry}) does not follow {previous} in strictly ascending index order"
    )]
    EntriesNotAscending {
        /// The position of the offending entry.
        position: usize,
        /// The entry before it.
        previous: i32,
        /// The offending entry.
        entry: i32,
    },
    /// A bitmap element uses the reserved code `0b11`.
    #[error("bitmap element {index} uses the reserved code 0b11")]
    ReservedBitmapCode {
        /// The element's index.
        index: usize,
    },
    /// Bits past the last element of a bitmap are set.
    #[error("bitmap bits past the last element are set")]
    BitmapPaddingSet,
    /// The number of non-zero bitmap codes differs from the header's count.
    #[error("bitmap header counts {declared} non-zero codes, the payload holds {actual}")]
    BitmapCountMismatch {
        /// The count in the header.
        declared: u32,
        /// The count of non-zero codes found.
        actual: u64,
    },
    /// A dense payload value is NaN or infinite.
    #[error("dense payload value {index} is not finite")]
    DenseValueNotFinite {
        /// The element's index.
        index: usize,
    },

    // ----- DL4J interop -----
    /// A DL4J buffer is malformed; the text says which rule it breaks.
    #[error("malformed DL4J buffer: {reason}")]
    Dl4jMalformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A DL4J header word 3 (the encoding mode) is neither 0 (sparse) nor 1 (bitmap).
    #[error("unknown DL4J encoding mode {found} in header word 3 (0 = sparse, 1 = bitmap)")]
    Dl4jUnknownMode {
        /// Word 3 found.
        found: i32,
    },
    /// This native encoding has no DL4J equivalent.
    #[error("native encoding {encoding} has no DL4J equivalent (DL4J knows sparse and bitmap)")]
    Dl4jUnsupportedEncoding {
        /// The native encoding code.
        encoding: u8,
    },
}

impl Classify for WireError {
    fn kind(&self) -> ErrorKind {
        match self {
            WireError::ChecksumMismatch { .. } => ErrorKind::Checksum,
            WireError::Dl4jUnsupportedEncoding { .. } => ErrorKind::Unsupported,
            WireError::Truncated { .. }
            | WireError::BadMagic { .. }
            | WireError::UnsupportedVersion { .. }
            | WireError::UnknownEncoding { .. }
            | WireError::UnknownFlags { .. }
            | WireError::ReservedNotZero { .. }
            | WireError::EmptyVector
            | WireError::TooManyElements { .. }
            | WireError::BadTau { .. }
            | WireError::BadSegment { .. }
            | WireError::CountOutOfRange { .. }
            | WireError::PayloadLengthMismatch { .. }
            | WireError::LengthMismatch { .. }
            | WireError::EntryZero { .. }
            | WireError::EntryOutOfRange { .. }
            | WireError::EntriesNotAscending { .. }
            | WireError::ReservedBitmapCode { .. }
            | WireError::BitmapPaddingSet
            | WireError::BitmapCountMismatch { .. }
            | WireError::DenseValueNotFinite { .. }
            | WireError::Dl4jMalformed { .. }
            | WireError::Dl4jUnknownMode { .. } => ErrorKind::Malformed,
        }
    }
}

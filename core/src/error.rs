//! The core's error type and the [`ErrorKind`] classification shared by every backend.
//!
//! Every fallible operation of the core returns [`Error`]. Each variant says what is wrong
//! with the input in words a user can act on (its `Display`), and carries the values that
//! prove it. Backends keep their own, richer error types but classify them with the same
//! [`ErrorKind`], so the conformance suite can check that every backend rejects a bad input
//! in the same way (embedded-hal's pattern).

use core::fmt;

/// A coarse classification of errors, shared by the core and every backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A message, checkpoint or file is malformed: wrong magic, version, length, layout,
    /// entries or codes.
    Malformed,
    /// The bytes are well formed but their checksum does not match: corruption in transit.
    Checksum,
    /// A message or buffer does not fit the vector it is applied to (another model size).
    SizeMismatch,
    /// An argument is out of its domain (a threshold that is not finite and positive, an
    /// empty vector, a bad configuration).
    InvalidArgument,
    /// The data holds NaN or an infinity where finite values are required.
    NonFinite,
    /// A caller-supplied output buffer is too small.
    BufferTooSmall,
    /// A feature or encoding is not supported by this implementation or peer.
    Unsupported,
    /// A round, barrier or queue was poisoned by a failing participant.
    Poisoned,
    /// A protocol rule was broken: a duplicate, a message of another round, an unknown sender.
    Protocol,
    /// A transport failed to exchange messages.
    Transport,
    /// A device, driver or runtime failed.
    Device,
    /// A device kernel failed to compile.
    KernelCompile,
    /// Anything else.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Malformed => "malformed input",
            ErrorKind::Checksum => "checksum mismatch",
            ErrorKind::SizeMismatch => "size mismatch",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NonFinite => "non-finite value",
            ErrorKind::BufferTooSmall => "buffer too small",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Poisoned => "poisoned",
            ErrorKind::Protocol => "protocol violation",
            ErrorKind::Transport => "transport failure",
            ErrorKind::Device => "device failure",
            ErrorKind::KernelCompile => "kernel compilation failed",
            ErrorKind::Other => "other error",
        };
        f.write_str(s)
    }
}

/// Errors that can be classified by an [`ErrorKind`]: every backend's error type implements
/// this, and so does the core's [`Error`].
pub trait Classify {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

/// Every error of the core.
///
/// Wire-format variants come first (what [`crate::wire::MessageView::parse`] reports for
/// untrusted bytes), then codec, DL4J, encoder and round-protocol variants.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    // ----- wire format -----
    /// Fewer bytes than the fixed header or than the header announces.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first four bytes are not the gradcast magic.
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A format version this build does not read.
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// An encoding code this build does not know.
    UnknownEncoding {
        /// The encoding byte found.
        found: u8,
    },
    /// Flag bits that this version does not define are set.
    UnknownFlags {
        /// The flags field found.
        found: u16,
    },
    /// A reserved field is not zero.
    ReservedNotZero {
        /// The reserved field found.
        found: u16,
    },
    /// The element count N is zero: every message describes at least one element.
    EmptyVector,
    /// The element count N is larger than the format allows.
    TooManyElements {
        /// The count found or requested.
        n: u64,
        /// The largest count allowed.
        max: u32,
    },
    /// The threshold is not a finite, strictly positive f32.
    BadTau {
        /// The f32 bit pattern found.
        bits: u32,
    },
    /// The segment fields are inconsistent (a non-zero segment or offset without the segment
    /// flag, or an offset + N past the largest vector the format can address).
    BadSegment {
        /// The segment id found.
        segment: u16,
        /// The offset found.
        offset: u32,
        /// The element count found.
        n: u32,
    },
    /// The entry count is larger than the element count.
    CountOutOfRange {
        /// The entry count found.
        count: u32,
        /// The element count found.
        n: u32,
    },
    /// The header's payload length does not match what its encoding, N and count imply.
    PayloadLengthMismatch {
        /// The payload length in the header.
        declared: u32,
        /// The payload length the other fields imply.
        expected: u64,
    },
    /// The buffer length does not match the header (trailing bytes, or a short payload).
    LengthMismatch {
        /// The total length the header announces.
        declared: usize,
        /// The buffer's actual length.
        actual: usize,
    },
    /// The CRC-32C stored in the header does not match the bytes.
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum computed over the bytes.
        computed: u32,
    },
    /// A sparse entry is 0, which encodes no index.
    EntryZero {
        /// The entry's position in the payload.
        position: usize,
    },
    /// A sparse entry names an element outside `1..=N`.
    EntryOutOfRange {
        /// The entry's position in the payload.
        position: usize,
        /// The entry.
        entry: i32,
        /// The element count.
        n: u32,
    },
    /// Sparse entries are not strictly ascending by index (a duplicate or a disorder).
    EntriesNotAscending {
        /// The position of the offending entry.
        position: usize,
        /// The entry before it.
        previous: i32,
        /// The offending entry.
        entry: i32,
    },
    /// A bitmap element uses the reserved code `0b11`.
    ReservedBitmapCode {
        /// The element's index.
        index: usize,
    },
    /// Bits past the last element of a bitmap are set.
    BitmapPaddingSet,
    /// The number of non-zero bitmap codes differs from the header's count.
    BitmapCountMismatch {
        /// The count in the header.
        declared: u32,
        /// The count of non-zero codes found.
        actual: u64,
    },
    /// A dense payload value is NaN or infinite.
    DenseValueNotFinite {
        /// The element's index.
        index: usize,
    },

    // ----- codec -----
    /// A caller-supplied output buffer is too small.
    BufferTooSmall {
        /// Bytes (or elements) needed.
        needed: usize,
        /// Bytes (or elements) supplied.
        got: usize,
    },
    /// A message does not fit the target vector (a message for a model of another size).
    TargetSizeMismatch {
        /// The message's element count.
        message_n: u32,
        /// The message's segment offset.
        offset: u32,
        /// The target vector's length.
        target_len: usize,
    },
    /// A segment range lies outside the vector it is taken from.
    SegmentOutOfRange {
        /// The segment's first element.
        offset: usize,
        /// The segment's length.
        len: usize,
        /// The vector's length.
        vector_len: usize,
    },
    /// The residual (or update) holds NaN or an infinity; nothing was encoded or changed.
    NonFinite {
        /// The element's index in the vector.
        index: usize,
        /// The value's f32 bit pattern.
        bits: u32,
    },

    // ----- DL4J interop -----
    /// A DL4J buffer is malformed; the text says which rule it breaks.
    Dl4jMalformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A DL4J header word 3 (the encoding mode) is neither 0 (sparse) nor 1 (bitmap).
    Dl4jUnknownMode {
        /// Word 3 found.
        found: i32,
    },
    /// This native encoding has no DL4J equivalent.
    Dl4jUnsupportedEncoding {
        /// The native encoding code.
        encoding: u8,
    },
    // ----- encoder (threshold policies, checkpoints): add variants below -----
    /// A configuration value is outside its domain: the field, the value and the rule it
    /// breaks (a policy's parameters, clipping, warm-up).
    InvalidConfig {
        /// The configuration field, e.g. `"adaptive.decay"`.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The rule it must satisfy, e.g. `"0.5 <= d < 1"`.
        rule: &'static str,
    },
    /// A byte budget smaller than a message header: no message fits in it.
    BudgetBelowHeader {
        /// The budget in bytes.
        budget: usize,
        /// The header length in bytes.
        header: usize,
    },
    /// A segment layout the encoder cannot use (no segments, too many, an empty segment, a
    /// duplicate id).
    BadSegmentLayout {
        /// The offending segment's position in the layout.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A warm-up message (dense or bitmap) would exceed the segment's byte budget.
    WarmupOverBudget {
        /// The segment id.
        segment: u16,
        /// The warm-up message's length in bytes.
        needed: usize,
        /// The budget in bytes.
        budget: usize,
    },
    /// A policy state of another kind of policy (reducing or seeding Adaptive state into a
    /// ByteBudget policy, or restoring a checkpoint written with another policy).
    PolicyMismatch {
        /// The kind code of the policy that receives the state.
        expected: u8,
        /// The kind code the state belongs to.
        found: u8,
    },
    /// The first four bytes are not the encoder checkpoint magic.
    CheckpointBadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A checkpoint format version this build does not read.
    CheckpointVersion {
        /// The version found.
        found: u16,
    },
    /// The buffer is longer than the checkpoint its header announces.
    CheckpointLengthMismatch {
        /// The length the header announces.
        declared: u64,
        /// The buffer's length.
        actual: usize,
    },
    /// A checkpoint's contents break a rule of the format; the text says which.
    CheckpointMalformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A valid checkpoint written by an encoder of another shape (another N, another segment
    /// layout) than the one restoring it.
    CheckpointMismatch {
        /// What differs (`"N"`, `"segmented flag"`, `"segment count"`, `"segment length"`, ...).
        what: &'static str,
        /// The restoring encoder's value.
        expected: u64,
        /// The checkpoint's value.
        found: u64,
    },

    // ----- queues, barrier, round protocol: add variants below -----
    /// A round or barrier was poisoned: a party failed, panicked or abandoned the round, and
    /// every other party returns this error, which names it.
    Poisoned {
        /// The local party that failed (`None`: no single party, e.g. a broken protocol rule).
        party: Option<u32>,
        /// The round in which it failed.
        round: u64,
        /// How it failed.
        cause: crate::barrier::PoisonCause,
    },
    /// A queue's capacity is below what one round needs (DL4J can deadlock there, W9).
    QueueTooSmall {
        /// The capacity asked for.
        capacity: usize,
        /// The capacity one round needs.
        needed: usize,
    },
    /// A participant count of 0, or above the most the barrier or accumulator supports.
    PartiesOutOfRange {
        /// The count given.
        parties: usize,
        /// The largest count allowed.
        max: usize,
    },
    /// More participants arrived in one barrier generation than it was told to expect.
    BarrierOverrun {
        /// Arrivals counted.
        arrived: usize,
        /// Participants expected.
        parties: usize,
    },
    /// A round-protocol configuration the accumulator cannot use; the text says why.
    RoundConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// A party used the round protocol out of order (applying without joining, joining twice,
    /// a member count that differs from the round's, more members than announced).
    RoundMisuse {
        /// The local party.
        party: u32,
        /// The round concerned.
        round: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A party's ticket names a round that is already over.
    TicketOutOfOrder {
        /// The local party.
        party: u32,
        /// The round on the ticket.
        ticket: u64,
        /// The current round.
        current: u64,
    },
    /// Two packets of one round claim the same sender.
    DuplicateSender {
        /// The round.
        round: u64,
        /// The global sender id claimed twice.
        sender: u32,
    },
    /// A remote packet claims a sender id the transport does not know.
    UnknownSender {
        /// The round.
        round: u64,
        /// The unknown global sender id.
        sender: u32,
    },
    /// A message that belongs to another round.
    WrongRound {
        /// The message's sender.
        sender: u32,
        /// The round being exchanged.
        expected: u64,
        /// The round in the message's header.
        found: u64,
    },
    /// A message whose header names another sender than the packet it arrived in.
    SenderMismatch {
        /// The round.
        round: u64,
        /// The sender the transport delivered the packet for.
        declared: u32,
        /// The sender in the message's header.
        found: u32,
    },
    /// A transport delivered more remote packets than the round's storage was sized for.
    TooManyRemotePackets {
        /// The most remote packets a round can hold.
        max: usize,
    },
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            Truncated { .. }
            | BadMagic { .. }
            | UnsupportedVersion { .. }
            | UnknownEncoding { .. }
            | UnknownFlags { .. }
            | ReservedNotZero { .. }
            | EmptyVector
            | TooManyElements { .. }
            | BadTau { .. }
            | BadSegment { .. }
            | CountOutOfRange { .. }
            | PayloadLengthMismatch { .. }
            | LengthMismatch { .. }
            | EntryZero { .. }
            | EntryOutOfRange { .. }
            | EntriesNotAscending { .. }
            | ReservedBitmapCode { .. }
            | BitmapPaddingSet
            | BitmapCountMismatch { .. }
            | DenseValueNotFinite { .. }
            | Dl4jMalformed { .. }
            | Dl4jUnknownMode { .. } => ErrorKind::Malformed,
            ChecksumMismatch { .. } => ErrorKind::Checksum,
            BufferTooSmall { .. } => ErrorKind::BufferTooSmall,
            TargetSizeMismatch { .. } | SegmentOutOfRange { .. } => ErrorKind::SizeMismatch,
            NonFinite { .. } => ErrorKind::NonFinite,
            Dl4jUnsupportedEncoding { .. } => ErrorKind::Unsupported,
            InvalidConfig { .. }
            | BudgetBelowHeader { .. }
            | BadSegmentLayout { .. }
            | WarmupOverBudget { .. }
            | PolicyMismatch { .. } => ErrorKind::InvalidArgument,
            CheckpointBadMagic { .. }
            | CheckpointVersion { .. }
            | CheckpointLengthMismatch { .. }
            | CheckpointMalformed { .. } => ErrorKind::Malformed,
            CheckpointMismatch { .. } => ErrorKind::SizeMismatch,
            Poisoned { .. } => ErrorKind::Poisoned,
            QueueTooSmall { .. } | PartiesOutOfRange { .. } | RoundConfig { .. } => {
                ErrorKind::InvalidArgument
            }
            BarrierOverrun { .. }
            | RoundMisuse { .. }
            | TicketOutOfOrder { .. }
            | DuplicateSender { .. }
            | UnknownSender { .. }
            | WrongRound { .. }
            | SenderMismatch { .. }
            | TooManyRemotePackets { .. } => ErrorKind::Protocol,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match *self {
            Truncated { needed, got } => {
                write!(f, "truncated: {needed} bytes needed, only {got} present")
            }
            BadMagic { found } => write!(
                f,
                "bad magic {found:02x?}: not a gradcast message (expected {:02x?})",
                crate::wire::MAGIC
            ),
            UnsupportedVersion { found } => write!(
                f,
                "unsupported format version {found} (this build reads version {})",
                crate::wire::VERSION
            ),
            UnknownEncoding { found } => write!(f, "unknown encoding code {found}"),
            UnknownFlags { found } => write!(f, "unknown flag bits set: {found:#06x}"),
            ReservedNotZero { found } => write!(f, "reserved header field is {found}, not 0"),
            EmptyVector => f.write_str("element count N is 0; a vector has at least one element"),
            TooManyElements { n, max } => {
                write!(f, "element count {n} exceeds the format's limit of {max}")
            }
            BadTau { bits } => write!(
                f,
                "threshold {} (bits {bits:#010x}) is not a finite, strictly positive number",
                f32::from_bits(bits)
            ),
            BadSegment { segment, offset, n } => write!(
                f,
                "inconsistent segment fields: segment {segment}, offset {offset}, N {n}"
            ),
            CountOutOfRange { count, n } => {
                write!(f, "entry count {count} exceeds element count {n}")
            }
            PayloadLengthMismatch { declared, expected } => write!(
                f,
                "header declares a {declared}-byte payload, its fields imply {expected} bytes"
            ),
            LengthMismatch { declared, actual } => write!(
                f,
                "header announces a {declared}-byte message, the buffer holds {actual} bytes"
            ),
            ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: header says {stored:#010x}, bytes give {computed:#010x} (corrupted)"
            ),
            EntryZero { position } => {
                write!(f, "sparse entry #{position} is 0, which names no element")
            }
            EntryOutOfRange { position, entry, n } => write!(
                f,
                "sparse entry #{position} ({entry}) names an element outside 1..={n}"
            ),
            EntriesNotAscending {
                position,
                previous,
                entry,
            } => write!(
                f,
                "sparse entry #{position} ({entry}) does not follow {previous} in strictly ascending index order"
            ),
            ReservedBitmapCode { index } => {
                write!(f, "bitmap element {index} uses the reserved code 0b11")
            }
            BitmapPaddingSet => f.write_str("bitmap bits past the last element are set"),
            BitmapCountMismatch { declared, actual } => write!(
                f,
                "bitmap header counts {declared} non-zero codes, the payload holds {actual}"
            ),
            DenseValueNotFinite { index } => {
                write!(f, "dense payload value {index} is not finite")
            }
            BufferTooSmall { needed, got } => {
                write!(f, "output buffer too small: {needed} needed, {got} given")
            }
            TargetSizeMismatch {
                message_n,
                offset,
                target_len,
            } => write!(
                f,
                "message covers elements {offset}..{} but the target vector has {target_len} (a message for a model of another size?)",
                offset as u64 + message_n as u64
            ),
            SegmentOutOfRange {
                offset,
                len,
                vector_len,
            } => write!(
                f,
                "segment {offset}..{} lies outside a vector of {vector_len} elements",
                offset as u64 + len as u64
            ),
            NonFinite { index, bits } => write!(
                f,
                "element {index} is not finite ({}); nothing was encoded",
                f32::from_bits(bits)
            ),
            Dl4jMalformed { reason } => write!(f, "malformed DL4J buffer: {reason}"),
            Dl4jUnknownMode { found } => write!(
                f,
                "unknown DL4J encoding mode {found} in header word 3 (0 = sparse, 1 = bitmap)"
            ),
            Dl4jUnsupportedEncoding { encoding } => write!(
                f,
                "native encoding {encoding} has no DL4J equivalent (DL4J knows sparse and bitmap)"
            ),
            InvalidConfig { field, value, rule } => {
                write!(
                    f,
                    "invalid configuration: {field} = {value}, must satisfy {rule}"
                )
            }
            BudgetBelowHeader { budget, header } => write!(
                f,
                "byte budget of {budget} bytes is smaller than the {header}-byte message header"
            ),
            BadSegmentLayout { index, reason } => {
                write!(f, "bad segment layout at segment #{index}: {reason}")
            }
            WarmupOverBudget {
                segment,
                needed,
                budget,
            } => write!(
                f,
                "segment {segment}: a warm-up message takes {needed} bytes, over its budget of {budget} bytes"
            ),
            PolicyMismatch { expected, found } => write!(
                f,
                "policy state of kind {found} given to a policy of kind {expected}"
            ),
            CheckpointBadMagic { found } => write!(
                f,
                "bad magic {found:02x?}: not a gradcast encoder checkpoint (expected {:02x?})",
                crate::encoder::checkpoint::MAGIC
            ),
            CheckpointVersion { found } => write!(
                f,
                "unsupported checkpoint version {found} (this build reads version {})",
                crate::encoder::checkpoint::VERSION
            ),
            CheckpointLengthMismatch { declared, actual } => write!(
                f,
                "checkpoint header announces {declared} bytes, the buffer holds {actual} bytes"
            ),
            CheckpointMalformed { reason } => write!(f, "malformed checkpoint: {reason}"),
            CheckpointMismatch {
                what,
                expected,
                found,
            } => write!(
                f,
                "checkpoint does not fit this encoder: {what} is {found} in the checkpoint, {expected} here"
            ),
            Poisoned {
                party: Some(party),
                round,
                cause,
            } => write!(f, "round {round} was poisoned: party {party} {cause}"),
            Poisoned {
                party: None,
                round,
                cause,
            } => write!(f, "round {round} was poisoned: a protocol step {cause}"),
            QueueTooSmall { capacity, needed } => write!(
                f,
                "queue capacity {capacity} is below the {needed} slots one round needs (it would deadlock)"
            ),
            PartiesOutOfRange { parties, max } => {
                write!(f, "participant count {parties} is outside 1..={max}")
            }
            BarrierOverrun { arrived, parties } => write!(
                f,
                "{arrived} participants arrived at a barrier generation that expects {parties}"
            ),
            RoundConfig { reason } => write!(f, "invalid round configuration: {reason}"),
            RoundMisuse {
                party,
                round,
                reason,
            } => write!(f, "party {party}, round {round}: {reason}"),
            TicketOutOfOrder {
                party,
                ticket,
                current,
            } => write!(
                f,
                "party {party} holds a ticket for round {ticket}, which is over (the current round is {current})"
            ),
            DuplicateSender { round, sender } => {
                write!(f, "round {round}: two packets claim sender {sender}")
            }
            UnknownSender { round, sender } => write!(
                f,
                "round {round}: a remote packet claims unknown sender {sender}"
            ),
            WrongRound {
                sender,
                expected,
                found,
            } => write!(
                f,
                "sender {sender} sent a message of round {found} during round {expected}"
            ),
            SenderMismatch {
                round,
                declared,
                found,
            } => write!(
                f,
                "round {round}: a packet delivered for sender {declared} holds a message from sender {found}"
            ),
            TooManyRemotePackets { max } => write!(
                f,
                "the transport delivered more than the {max} remote packets a round can hold"
            ),
        }
    }
}

impl core::error::Error for Error {}

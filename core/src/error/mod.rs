//! The core's errors, one enum per concern, and the [`ErrorKind`] classification shared by
//! every backend.
//!
//! Every variant says what is wrong with the input in words a user can act on (its
//! `Display`), and carries the values that prove it. Backends keep their own, richer error
//! types but classify them with the same [`ErrorKind`], so the conformance suite can check
//! that every backend rejects a bad input in the same way (embedded-hal's pattern).
//!
//! # Layout: one enum per concern
//!
//! | concern | enum | file | what it covers |
//! |---|---|---|---|
//! | wire format | [`WireError`] | `error/wire.rs` | untrusted message bytes (native and DL4J), the format's limits |
//! | codec arguments | [`CodecError`] | `error/codec.rs` | buffers too small, vectors of another length, ranges outside a vector, non-finite values |
//! | configuration | [`ConfigError`] | `error/config.rs` | policies, clipping, warm-up, segment layouts, queue and participant counts, round configuration |
//! | round protocol | [`ProtocolError`] | `error/protocol.rs` | poisoning, barrier overruns, party misuse, tickets, senders, rounds, remote packet storage |
//! | checkpoint | [`CheckpointError`] | `error/checkpoint.rs` | untrusted checkpoint bytes, a checkpoint of another encoder |
//!
//! [`Error`] has one variant per concern, holding that concern's enum; `From` converts each
//! concern into it, so `?` lifts a concern's error wherever an [`Error`] (or a backend or
//! transport error, which converts from [`Error`]) is returned.
//!
//! **Adding a variant:** put it in the enum of its concern, with a `#[error("...")]` text
//! that names the values a user needs, and add it to that enum's [`Classify`] match. A new
//! concern is a new file here, a variant of [`Error`] and an arm of its `Classify` match.
//!
//! **Which type a function returns:** parsers of untrusted bytes return their concern's
//! enum ([`crate::wire::MessageView::parse`], [`crate::packet::validate`],
//! [`crate::dl4j::Dl4jView::parse`] and [`crate::dl4j::export_len`] return [`WireError`];
//! [`crate::encoder::checkpoint::CheckpointView::parse`] returns [`CheckpointError`]), and so
//! do constructors and validators of configuration (the threshold policies,
//! [`crate::encoder::EncoderConfig::validate`], [`crate::queue::Queue::with_capacity`] return
//! [`ConfigError`]): a caller matches on the variants that can occur. Everything that can
//! fail in more than one concern returns [`Error`]: the codec, the [`crate::Backend`] trait,
//! the encoder, checkpoint save and restore, the barrier, the round protocol.

use core::fmt;

mod checkpoint;
mod codec;
mod config;
mod protocol;
mod wire;

pub use checkpoint::CheckpointError;
pub use codec::CodecError;
pub use config::ConfigError;
pub use protocol::ProtocolError;
pub use wire::WireError;

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
/// this, and so do the core's [`Error`] and each concern's enum.
pub trait Classify {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

/// Every error of the core: one variant per concern, each holding that concern's enum.
///
/// `Display` and [`core::error::Error::source`] are the concern's own (the variant is a
/// classification, not a layer of context), so a report that walks the source chain prints
/// each message once. Match a concern's variants through it, e.g.
/// `Err(Error::Wire(WireError::BadMagic { .. }))`.
///
/// ```
/// use gradcast_core::error::{Classify, Error, ErrorKind, WireError};
///
/// let e = Error::from(WireError::BadMagic { found: *b"GCSU" });
/// assert_eq!(e.kind(), ErrorKind::Malformed);
/// assert!(matches!(e, Error::Wire(WireError::BadMagic { .. })));
/// assert_eq!(
///     e.to_string(),
///     "bad magic 47 43 53 55 (\"GCSU\"): not a gradcast message (expected 47 43 53 54 (\"GCST\"))"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Untrusted message bytes (native or DL4J) break a rule of the format.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The vectors or buffers handed to an operation do not fit it.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A configuration or set-up argument is outside its domain.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A round, barrier or exchange failed, or a rule of the round protocol was broken.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// An encoder checkpoint is malformed or belongs to another encoder.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Wire(e) => e.kind(),
            Error::Codec(e) => e.kind(),
            Error::Config(e) => e.kind(),
            Error::Protocol(e) => e.kind(),
            Error::Checkpoint(e) => e.kind(),
        }
    }
}

/// Four magic bytes in hex, with their text when it is printable ASCII:
/// `47 43 53 54 ("GCST")`.
struct Magic([u8; 4]);

impl fmt::Display for Magic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a:02x} {b:02x} {c:02x} {d:02x}")?;
        if self.0.iter().all(|x| x.is_ascii_graphic() || *x == b' ') {
            f.write_str(" (\"")?;
            for &x in &self.0 {
                write!(f, "{}", x as char)?;
            }
            f.write_str("\")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use super::*;
    use crate::barrier::PoisonCause;
    use alloc::string::ToString;

    /// Each concern's error keeps its kind and its text through [`Error`].
    #[test]
    fn error_is_its_concern_in_kind_and_text() {
        let cases: [(Error, ErrorKind); 10] = [
            (WireError::EmptyVector.into(), ErrorKind::Malformed),
            (
                WireError::ChecksumMismatch {
                    stored: 1,
                    computed: 2,
                }
                .into(),
                ErrorKind::Checksum,
            ),
            (
                WireError::Dl4jUnsupportedEncoding { encoding: 2 }.into(),
                ErrorKind::Unsupported,
            ),
            (
                CodecError::BufferTooSmall { needed: 2, got: 1 }.into(),
                ErrorKind::BufferTooSmall,
            ),
            (
                CodecError::NonFinite {
                    index: 3,
                    bits: f32::NAN.to_bits(),
                }
                .into(),
                ErrorKind::NonFinite,
            ),
            (
                ConfigError::Round { reason: "no" }.into(),
                ErrorKind::InvalidArgument,
            ),
            (
                ProtocolError::Poisoned {
                    party: None,
                    round: 4,
                    cause: PoisonCause::Panicked,
                }
                .into(),
                ErrorKind::Poisoned,
            ),
            (
                ProtocolError::TooManyRemotePackets { max: 1 }.into(),
                ErrorKind::Protocol,
            ),
            (
                CheckpointError::ShapeMismatch {
                    what: "N",
                    expected: 1,
                    found: 2,
                }
                .into(),
                ErrorKind::SizeMismatch,
            ),
            (
                CheckpointError::ChecksumMismatch {
                    stored: 1,
                    computed: 2,
                }
                .into(),
                ErrorKind::Checksum,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e:?}");
            let inner = match &e {
                Error::Wire(c) => (c.kind(), c.to_string()),
                Error::Codec(c) => (c.kind(), c.to_string()),
                Error::Config(c) => (c.kind(), c.to_string()),
                Error::Protocol(c) => (c.kind(), c.to_string()),
                Error::Checkpoint(c) => (c.kind(), c.to_string()),
            };
            assert_eq!(inner, (kind, e.to_string()));
            // The concern is not a cause of its own: nothing to print twice.
            assert!(core::error::Error::source(&e).is_none());
        }
    }

    #[test]
    fn texts_name_the_values() {
        let t = |e: Error| e.to_string();
        assert_eq!(
            t(ProtocolError::Poisoned {
                party: Some(2),
                round: 7,
                cause: PoisonCause::Abandoned
            }
            .into()),
            "round 7 was poisoned: party 2 abandoned the round"
        );
        assert_eq!(
            t(ProtocolError::Poisoned {
                party: None,
                round: 7,
                cause: PoisonCause::Panicked
            }
            .into()),
            "round 7 was poisoned: a protocol step panicked"
        );
        assert_eq!(
            t(WireError::BadTau {
                bits: f32::NAN.to_bits()
            }
            .into()),
            "threshold NaN (bits 0x7fc00000) is not a finite, strictly positive number"
        );
        assert_eq!(
            t(CodecError::TargetSizeMismatch {
                message_n: 10,
                offset: u32::MAX,
                target_len: 5
            }
            .into()),
            "message covers elements 4294967295..4294967305 but the target vector has 5 \
             (a message for a model of another size?)"
        );
        // A dense message whose count is below N: the text must not claim it "exceeds" N.
        let dense = t(WireError::CountOutOfRange { count: 2, n: 3 }.into());
        assert!(!dense.contains("exceeds"), "{dense}");
        assert!(dense.contains("dense: exactly N"), "{dense}");
        // Magic bytes print in hex, with their text when printable, and never in decimal.
        assert_eq!(
            t(CheckpointError::BadMagic { found: *b"GCST" }.into()),
            "bad magic 47 43 53 54 (\"GCST\"): not a gradcast encoder checkpoint \
             (expected 47 43 45 4b (\"GCEK\"))"
        );
        assert_eq!(
            t(WireError::BadMagic {
                found: [0, 0xff, 10, 0x41]
            }
            .into()),
            "bad magic 00 ff 0a 41: not a gradcast message (expected 47 43 53 54 (\"GCST\"))"
        );
        // Checkpoint framing errors say they are about a checkpoint.
        assert!(
            t(CheckpointError::Truncated { needed: 32, got: 3 }.into()).starts_with("checkpoint")
        );
        assert!(
            t(CheckpointError::ChecksumMismatch {
                stored: 0,
                computed: 1
            }
            .into())
            .starts_with("checkpoint")
        );
    }
}

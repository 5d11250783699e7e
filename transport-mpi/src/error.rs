//! [`MpiError`]: everything the MPI transport reports, classified with the core's
//! [`ErrorKind`].

use gradcast_core::barrier::{PartySet, PoisonCause, WaitStage};
use gradcast_core::{Classify, Error, ErrorKind};
use mpi::ffi;
use std::fmt;
use std::os::raw::{c_char, c_int};
use std::time::Duration;

/// Why another rank failed its round, as its packet table told the others.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PeerCause {
    /// Its transport refused its own packets (a sender outside its range, a packet too
    /// large...): the [`MpiError::code`] of its own error.
    Transport {
        /// The error's code on that rank.
        code: u64,
    },
    /// A local failure poisoned its round before the exchange (a worker's error, panic or
    /// timeout): the poison record's party (a local party of that rank) and cause.
    Poisoned {
        /// The party of that rank that failed, if one did.
        party: Option<u32>,
        /// How it failed.
        cause: PoisonCause,
    },
}

impl fmt::Display for PeerCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerCause::Transport { code } => {
                write!(f, "its transport refused its packets (error code {code})")
            }
            PeerCause::Poisoned {
                party: Some(p),
                cause,
            } => write!(f, "its party {p} {cause}"),
            PeerCause::Poisoned { party: None, cause } => write!(f, "a protocol step {cause}"),
        }
    }
}

/// An error of the MPI transport.
///
/// Every rank sees the same packet tables, so every check on them gives the same verdict on
/// every rank: a bad table, a mismatched configuration, a rank out of step or a rank that
/// failed locally ends the round with an error on **every** rank, and no rank is left
/// waiting in a collective call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MpiError {
    /// A core error: remote storage full, a bad configuration of the round protocol.
    Core(Error),
    /// An MPI call returned an error code (the transport's communicator returns errors
    /// instead of aborting).
    Mpi {
        /// The MPI function.
        call: &'static str,
        /// The return code.
        code: i32,
        /// The error class of the code (`MPI_Error_class`).
        class: i32,
        /// The MPI library's description (`MPI_Error_string`).
        message: String,
    },
    /// The transport cannot be built as asked: no parties, sizes beyond MPI's 32-bit counts
    /// or the 32-bit sender ids, a threading level too low to move the transport between
    /// threads.
    Config {
        /// What is wrong.
        reason: String,
    },
    /// Another rank was built with a different configuration (parties per rank, largest
    /// packet) or speaks another table format.
    ConfigMismatch {
        /// The other rank.
        rank: usize,
        /// The field that differs.
        field: &'static str,
        /// This side's value (the lowest rank's, for a disagreement between two others).
        expected: u64,
        /// The other rank's value.
        found: u64,
    },
    /// A rank exchanged another round than rank 0: the ranks are out of step.
    RoundMismatch {
        /// The rank out of step.
        rank: usize,
        /// Rank 0's round.
        expected: u64,
        /// That rank's round.
        found: u64,
    },
    /// Another rank failed in this round (see its own error) and sent no packets; the round
    /// is abandoned on every rank, and the transport works for the next one.
    PeerFailed {
        /// The failing rank (the lowest, if several failed).
        rank: usize,
        /// The round.
        round: u64,
        /// Why, as that rank told.
        cause: PeerCause,
    },
    /// A wait ran past the transport's timeout: `missing` did not take part in time. After a
    /// timeout in the exchange the transport is unusable ([`MpiError::Unusable`]): MPI may
    /// still hold its buffers, and the ranks are out of step. End the job (see the crate
    /// docs: `MPI_Abort`, not `MPI_Finalize`, when a rank cannot be reached).
    Timeout {
        /// What was waited for: `"packet tables"`, `"packets"`, or the MPI call
        /// (`"MPI_Iallreduce"`, ...).
        what: &'static str,
        /// The round, for the exchange and failure reports.
        round: Option<u64>,
        /// The ranks whose messages did not arrive, or that did not take this rank's, in
        /// time, ascending; empty when MPI cannot tell (a collective call).
        missing: Vec<usize>,
        /// The bound.
        after: Duration,
    },
    /// The transport (or [`crate::Collectives`]) timed out before and cannot be used again.
    Unusable {
        /// What timed out.
        what: &'static str,
        /// The round that timed out, for the exchange.
        round: Option<u64>,
    },
    /// A rank's packet table is malformed (a sender outside its range, senders out of
    /// order, a packet longer than the largest packet, more packets than parties).
    BadTable {
        /// The rank whose table is malformed.
        rank: usize,
        /// The round.
        round: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A local packet names a sender that is not one of this rank's parties.
    NotLocalSender {
        /// The round.
        round: u64,
        /// The sender id.
        sender: u32,
        /// This rank's first sender id.
        first: u32,
        /// This rank's parties.
        parties: usize,
    },
    /// A local packet is longer than the largest packet the transport was sized for.
    PacketTooLarge {
        /// The round.
        round: u64,
        /// The sender id.
        sender: u32,
        /// The packet's length.
        len: usize,
        /// The largest packet.
        max: usize,
    },
    /// The local packets are not in strictly ascending sender order, or more than the
    /// parties.
    LocalOrder {
        /// The round.
        round: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl MpiError {
    /// Checks an MPI return code: `Ok` for `MPI_SUCCESS`, otherwise [`MpiError::Mpi`] with the
    /// library's description of the code. MPI must be initialized.
    ///
    /// # Errors
    /// [`MpiError::Mpi`] for any code but `MPI_SUCCESS`.
    pub fn check(call: &'static str, code: c_int) -> Result<(), MpiError> {
        if code == ffi::MPI_SUCCESS as c_int {
            return Ok(());
        }
        let mut class: c_int = 0;
        // SAFETY: `class` is a valid out pointer; `MPI_Error_class` may be called with any
        // code once MPI is initialized, and reports an invalid code through its return
        // value (then `class` keeps 0 and we ignore it).
        let _ = unsafe { ffi::MPI_Error_class(code, &mut class) };
        let mut buf = vec![0 as c_char; ffi::MPI_MAX_ERROR_STRING as usize + 1];
        let mut len: c_int = 0;
        // SAFETY: `buf` holds MPI_MAX_ERROR_STRING characters as the standard requires;
        // `len` is a valid out pointer.
        let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr(), &mut len) };
        let message = if rc == ffi::MPI_SUCCESS as c_int {
            let len = (len.max(0) as usize).min(buf.len());
            let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            format!("unknown MPI error code {code}")
        };
        Err(MpiError::Mpi {
            call,
            code,
            class,
            message,
        })
    }

    /// A small number naming this error's variant, sent to the other ranks in the packet
    /// table when this rank fails locally (they report [`MpiError::PeerFailed`] with it).
    pub fn code(&self) -> u64 {
        match self {
            MpiError::Core(_) => 1,
            MpiError::Mpi { .. } => 2,
            MpiError::Config { .. } => 3,
            MpiError::ConfigMismatch { .. } => 4,
            MpiError::RoundMismatch { .. } => 5,
            MpiError::PeerFailed { .. } => 6,
            MpiError::BadTable { .. } => 7,
            MpiError::NotLocalSender { .. } => 8,
            MpiError::PacketTooLarge { .. } => 9,
            MpiError::LocalOrder { .. } => 10,
            MpiError::Timeout { .. } => 11,
            MpiError::Unusable { .. } => 12,
        }
    }

    /// The ranks this error says could not be reached in time (a [`MpiError::Timeout`]), or
    /// none. A job whose rank got a timeout naming other ranks cannot finish cleanly
    /// (`MPI_Finalize` waits for every rank): end it with `MPI_Abort`.
    pub fn unreachable_ranks(&self) -> &[usize] {
        match self {
            MpiError::Timeout { missing, .. } => missing,
            _ => &[],
        }
    }

    /// Whether this error ended a wait at its bound: a [`MpiError::Timeout`], or another
    /// rank's failure that was a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            MpiError::Timeout { .. }
                | MpiError::PeerFailed {
                    cause: PeerCause::Poisoned {
                        cause: PoisonCause::TimedOut { .. },
                        ..
                    },
                    ..
                }
        )
    }
}

impl From<Error> for MpiError {
    fn from(e: Error) -> Self {
        MpiError::Core(e)
    }
}

impl Classify for MpiError {
    fn kind(&self) -> ErrorKind {
        match self {
            MpiError::Core(e) => e.kind(),
            MpiError::Mpi { .. } => ErrorKind::Transport,
            MpiError::Config { .. } => ErrorKind::InvalidArgument,
            MpiError::ConfigMismatch { .. } => ErrorKind::Protocol,
            MpiError::RoundMismatch { .. } => ErrorKind::Protocol,
            MpiError::PeerFailed { .. } => ErrorKind::Poisoned,
            MpiError::Timeout { .. } | MpiError::Unusable { .. } => ErrorKind::Transport,
            MpiError::BadTable { .. } => ErrorKind::Malformed,
            MpiError::NotLocalSender { .. } => ErrorKind::Protocol,
            MpiError::PacketTooLarge { .. } => ErrorKind::BufferTooSmall,
            MpiError::LocalOrder { .. } => ErrorKind::Protocol,
        }
    }
}

impl fmt::Display for MpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MpiError::Core(e) => fmt::Display::fmt(e, f),
            MpiError::Mpi {
                call,
                code,
                class,
                message,
            } => write!(
                f,
                "{call} failed with code {code} (class {class}): {message}"
            ),
            MpiError::Config { reason } => write!(f, "MPI transport configuration: {reason}"),
            MpiError::ConfigMismatch {
                rank,
                field,
                expected,
                found,
            } => write!(
                f,
                "rank {rank} was configured with {field} = {found}, expected {expected}: every \
                 rank must use the same configuration"
            ),
            MpiError::RoundMismatch {
                rank,
                expected,
                found,
            } => write!(
                f,
                "rank {rank} exchanged round {found} while rank 0 exchanged round {expected}: \
                 the ranks are out of step"
            ),
            MpiError::PeerFailed { rank, round, cause } => {
                write!(f, "rank {rank} failed in round {round}: {cause}")
            }
            MpiError::Timeout {
                what,
                round,
                missing,
                after,
            } => {
                write!(f, "timed out after {after:?} waiting for {what}")?;
                if let Some(r) = round {
                    write!(f, " of round {r}")?;
                }
                match missing.as_slice() {
                    [] => f.write_str(" (MPI cannot tell which ranks did not take part)"),
                    [one] => write!(f, ": rank {one} did not take part"),
                    many => write!(f, ": ranks {many:?} did not take part"),
                }
            }
            MpiError::Unusable { what, round } => {
                write!(f, "the transport gave up waiting for {what}")?;
                if let Some(r) = round {
                    write!(f, " in round {r}")?;
                }
                f.write_str(" and cannot be used again: end the job")
            }
            MpiError::BadTable {
                rank,
                round,
                reason,
            } => write!(
                f,
                "rank {rank}'s packet table of round {round} is malformed: {reason}"
            ),
            MpiError::NotLocalSender {
                round,
                sender,
                first,
                parties,
            } => write!(
                f,
                "round {round}: local packet of sender {sender}, but this rank's senders are \
                 {first}..{}",
                *first as u64 + *parties as u64
            ),
            MpiError::PacketTooLarge {
                round,
                sender,
                len,
                max,
            } => write!(
                f,
                "round {round}: sender {sender}'s packet is {len} bytes, more than the \
                 transport's largest packet of {max} bytes"
            ),
            MpiError::LocalOrder { round, reason } => {
                write!(f, "round {round}: local packets {reason}")
            }
        }
    }
}

impl std::error::Error for MpiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MpiError::Core(e) => Some(e),
            _ => None,
        }
    }
}

/// The packet table's encoding of a poison's cause: `[cause, party, missing bits, missing
/// count | timeout in ms << 32]`. Kinds and stages travel as small numbers; a number this
/// build does not know decodes as [`ErrorKind::Other`] / [`WaitStage::Exchange`].
pub(crate) fn encode_cause(party: Option<u32>, cause: &PoisonCause) -> [u64; 4] {
    let party = party.map_or(u64::MAX, u64::from);
    match *cause {
        PoisonCause::Failed(kind) => [1 | (kind_code(kind) << 8), party, 0, 0],
        PoisonCause::Panicked => [2, party, 0, 0],
        PoisonCause::Abandoned => [3, party, 0, 0],
        PoisonCause::TimedOut {
            stage,
            missing,
            after,
        } => {
            let (named, len) = missing.to_parts();
            let ms = u64::try_from(after.as_millis())
                .unwrap_or(u64::MAX)
                .min(u32::MAX as u64);
            [
                4 | (stage_code(stage) << 16),
                party,
                named,
                len as u64 | ms << 32,
            ]
        }
        // A cause this build does not know how to send.
        _ => [1 | (kind_code(ErrorKind::Other) << 8), party, 0, 0],
    }
}

/// The inverse of [`encode_cause`].
pub(crate) fn decode_cause(words: &[u64]) -> PeerCause {
    let (w, party) = (words[0], words[1]);
    let party = u32::try_from(party).ok();
    let cause = match w & 0xff {
        2 => PoisonCause::Panicked,
        3 => PoisonCause::Abandoned,
        4 => PoisonCause::TimedOut {
            stage: stage_of((w >> 16) & 0xff),
            missing: PartySet::from_parts(words[2], words[3] as u32),
            after: Duration::from_millis(words[3] >> 32),
        },
        _ => PoisonCause::Failed(kind_of((w >> 8) & 0xff)),
    };
    PeerCause::Poisoned { party, cause }
}

const KINDS: [ErrorKind; 13] = [
    ErrorKind::Malformed,
    ErrorKind::Checksum,
    ErrorKind::SizeMismatch,
    ErrorKind::InvalidArgument,
    ErrorKind::NonFinite,
    ErrorKind::BufferTooSmall,
    ErrorKind::Unsupported,
    ErrorKind::Poisoned,
    ErrorKind::Protocol,
    ErrorKind::Transport,
    ErrorKind::Device,
    ErrorKind::KernelCompile,
    ErrorKind::Other,
];

fn kind_code(kind: ErrorKind) -> u64 {
    KINDS
        .iter()
        .position(|&k| k == kind)
        .map_or(KINDS.len() as u64 - 1, |i| i as u64)
}

fn kind_of(code: u64) -> ErrorKind {
    KINDS
        .get(code as usize)
        .copied()
        .unwrap_or(ErrorKind::Other)
}

const STAGES: [WaitStage; 5] = [
    WaitStage::Barrier,
    WaitStage::Join,
    WaitStage::Publish,
    WaitStage::Apply,
    WaitStage::Exchange,
];

fn stage_code(stage: WaitStage) -> u64 {
    STAGES
        .iter()
        .position(|&s| s == stage)
        .map_or(STAGES.len() as u64 - 1, |i| i as u64)
}

fn stage_of(code: u64) -> WaitStage {
    STAGES
        .get(code as usize)
        .copied()
        .unwrap_or(WaitStage::Exchange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_survive_the_table() {
        let mut missing = PartySet::EMPTY;
        missing.insert(2);
        missing.insert(80);
        let causes = [
            PoisonCause::Failed(ErrorKind::Device),
            PoisonCause::Failed(ErrorKind::Other),
            PoisonCause::Panicked,
            PoisonCause::Abandoned,
            PoisonCause::TimedOut {
                stage: WaitStage::Publish,
                missing,
                after: Duration::from_millis(2500),
            },
        ];
        for cause in causes {
            for party in [None, Some(0), Some(7)] {
                assert_eq!(
                    decode_cause(&encode_cause(party, &cause)),
                    PeerCause::Poisoned { party, cause }
                );
            }
        }
        for (i, &k) in KINDS.iter().enumerate() {
            assert_eq!(kind_of(kind_code(k)), k, "{i}");
        }
        assert_eq!(kind_of(200), ErrorKind::Other);
        assert_eq!(stage_of(200), WaitStage::Exchange);
    }
}

//! [`MpiError`]: everything the MPI transport reports, classified with the core's
//! [`ErrorKind`].

use gradcast_core::{Classify, Error, ErrorKind};
use mpi::ffi;
use std::fmt;
use std::os::raw::{c_char, c_int};

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
    /// Another rank failed locally in this round (see its own error) and sent no packets;
    /// the round is abandoned on every rank.
    PeerFailed {
        /// The failing rank.
        rank: usize,
        /// The round.
        round: u64,
        /// The failure's code on that rank ([`MpiError::code`]).
        code: u64,
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
        }
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
            MpiError::PeerFailed { rank, round, code } => write!(
                f,
                "rank {rank} failed in round {round} (error code {code}; see its own report)"
            ),
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

//! [`ProtocolError`]: a round, barrier or exchange failed or its rules were broken.

use super::{Classify, ErrorKind};
use crate::barrier::PoisonCause;

/// A round, barrier or exchange failed, or a party or peer broke a rule of the round
/// protocol: a poisoned round, a barrier overrun, misuse of a party handle, a stale ticket, a
/// duplicate, unknown or lying sender, a message of another round.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A round or barrier was poisoned: a party failed, panicked or abandoned the round, and
    /// every other party returns this error, which names it.
    #[error("round {round} was poisoned: {} {cause}", Poisoner(*.party))]
    Poisoned {
        /// The local party that failed (`None`: no single party, e.g. a broken protocol rule).
        party: Option<u32>,
        /// The round in which it failed.
        round: u64,
        /// How it failed.
        cause: PoisonCause,
    },
    /// More participants arrived in one barrier generation than it was told to expect.
    #[error("{arrived} participants arrived at a barrier generation that expects {parties}")]
    BarrierOverrun {
        /// Arrivals counted.
        arrived: usize,
        /// Participants expected.
        parties: usize,
    },
    /// A party used the round protocol out of order (applying without joining, joining twice,
    /// a member count that differs from the round's, more members than announced).
    #[error("party {party}, round {round}: {reason}")]
    RoundMisuse {
        /// The local party.
        party: u32,
        /// The round concerned.
        round: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A party's ticket names a round that is already over.
    #[error(
        "party {party} holds a ticket for round {ticket}, which is over (the current round is {current})"
    )]
    TicketOutOfOrder {
        /// The local party.
        party: u32,
        /// The round on the ticket.
        ticket: u64,
        /// The current round.
        current: u64,
    },
    /// Two packets of one round claim the same sender.
    #[error("round {round}: two packets claim sender {sender}")]
    DuplicateSender {
        /// The round.
        round: u64,
        /// The global sender id claimed twice.
        sender: u32,
    },
    /// A remote packet claims a sender id the transport does not know.
    #[error("round {round}: a remote packet claims unknown sender {sender}")]
    UnknownSender {
        /// The round.
        round: u64,
        /// The unknown global sender id.
        sender: u32,
    },
    /// A message that belongs to another round.
    #[error("sender {sender} sent a message of round {found} during round {expected}")]
    WrongRound {
        /// The message's sender.
        sender: u32,
        /// The round being exchanged.
        expected: u64,
        /// The round in the message's header.
        found: u64,
    },
    /// A message whose header names another sender than the packet it arrived in.
    #[error(
        "round {round}: a packet delivered for sender {declared} holds a message from sender {found}"
    )]
    SenderMismatch {
        /// The round.
        round: u64,
        /// The sender the transport delivered the packet for.
        declared: u32,
        /// The sender in the message's header.
        found: u32,
    },
    /// A transport delivered more remote packets than the round's storage was sized for.
    #[error("the transport delivered more than the {max} remote packets a round can hold")]
    TooManyRemotePackets {
        /// The most remote packets a round can hold.
        max: usize,
    },
}

impl Classify for ProtocolError {
    fn kind(&self) -> ErrorKind {
        match self {
            ProtocolError::Poisoned { .. } => ErrorKind::Poisoned,
            ProtocolError::BarrierOverrun { .. }
            | ProtocolError::RoundMisuse { .. }
            | ProtocolError::TicketOutOfOrder { .. }
            | ProtocolError::DuplicateSender { .. }
            | ProtocolError::UnknownSender { .. }
            | ProtocolError::WrongRound { .. }
            | ProtocolError::SenderMismatch { .. }
            | ProtocolError::TooManyRemotePackets { .. } => ErrorKind::Protocol,
        }
    }
}

/// Who poisoned a round, in words: `party 3`, or `a protocol step` when no single party did.
struct Poisoner(Option<u32>);

impl core::fmt::Display for Poisoner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(party) => write!(f, "party {party}"),
            None => f.write_str("a protocol step"),
        }
    }
}

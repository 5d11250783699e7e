//! The round protocol: what replaces DL4J's `EncodedGradientsAccumulator`.
//!
//! (`W1` .. `W21` below name DL4J's weaknesses as `docs/DL4J.md` describes them.)
//!
//! P local *parties* (worker threads, one model replica each) share one [`Accumulator`]. In
//! every round, each party that has an update *contributes* it, and every party that takes
//! part applies the round's sum, so replicas stay bit-identical:
//!
//! ```text
//! store_update(ticket, update)    residual += update; encode into the party's slot; publish
//!   (or abstain(ticket))          take part without contributing
//! apply_update(params)
//!   barrier A, its leader:        collect the published slots; Transport::exchange for the
//!                                 remote packets; validate them; fix the canonical order
//!   every party:                  update = 0; decode every packet in global sender order;
//!                                 params -= update (sum) or update / k (mean)
//!   barrier B, then the leader:   the round is over; the next round may start
//! ```
//!
//! * **Zero copies.** A party encodes straight into its own slot (sized once with
//!   [`PartyEncoder::max_packet_len`]); every party reads the same bytes. DL4J copies each
//!   message into P queues (W8).
//! * **Bit-identical replicas.** Packets are decoded in ascending global sender id, local
//!   and remote merged, whatever the thread timing, so every replica performs the same
//!   floating-point operations in the same order (DL4J drifts, W10).
//! * **k <= P.** A [`Ticket`] names the round and its number of *members*. Members are
//!   parties that take part (contribute with [`Party::store_update`], or not with
//!   [`Party::abstain`]) and apply; the mean divides by the number of contributions. Keep
//!   every party a member (abstaining when it has no data) and all replicas stay identical;
//!   a party that is not a member misses the round's update. A round of one member (and any
//!   round when P = 1) runs without barriers (DL4J's bypass mode).
//! * **No deadlock by construction.** The publication queue's capacity is checked at
//!   construction against what a round needs (P slots; DL4J can deadlock when workers
//!   outnumber queue slots, W9), and a push never blocks.
//! * **Nothing hangs.** Any error of any party poisons the round; every other party returns
//!   [`ProtocolError::Poisoned`](crate::ProtocolError::Poisoned) naming the party, the round and the cause, promptly (no
//!   sleep-polling). With `std`, a party whose thread panics poisons too (its [`Party`]
//!   handle sees the unwinding), and so does a party that drops its handle in the middle of
//!   a round. **Every wait is bounded** by [`RoundConfig::timeout`] ([`DEFAULT_TIMEOUT`]
//!   with `std`): a party that waits longer poisons the round with a
//!   [`PoisonCause::TimedOut`] record naming the round, where it waited and the parties that
//!   did not arrive. A local failure in a round this node has not exchanged yet is passed to
//!   the other nodes ([`Transport::fail_round`]), so they return an error naming this node
//!   instead of waiting for it. The bounds, wait by wait, are listed under
//!   [Bounds](#bounds).
//! * **Memory sized once** from (N, P) and the transport's remote sender count: residuals,
//!   update buffers, slots, the queue, remote storage. No allocation per round.
//! * **[`Accumulator::reset`]** clears queues and rounds but keeps every residual unless
//!   told to drop them, and reports the mass it dropped (DL4J drops residuals, W17); the
//!   packets of a round that nobody applied are credited back to their senders' residuals.
//! * **Timings per round**: encode, exchange (waiting for peers and the transport), decode,
//!   from [`RoundConfig::clock`] (with `std`, a monotonic clock by default).
//!
//! The accumulator needs `alloc`; [`workers::run`] (`std`) runs the P worker threads over a
//! closure that computes each worker's update (DL4J's `ParallelWrapper` role).
//!
//! # Bounds
//!
//! Every blocking wait of the protocol, with T = [`RoundConfig::timeout`]:
//!
//! | wait | who | bound |
//! |---|---|---|
//! | the gate ([`Party::store_update`], [`Party::abstain`]): earlier rounds still running | a party ahead of the others | T |
//! | barrier A ([`Party::apply_update`]): members still to publish | every member but the last | T until every member has arrived; then the leader's exchange |
//! | the leader's exchange ([`Transport::exchange`]) | the last member to arrive | the transport's own bound (the MPI transport: its timeout per phase; [`Local`]: none needed) |
//! | barrier B: members still decoding | every member but the last | T |
//! | a failure report ([`Transport::fail_round`]) | the failing party | the transport's own bound |
//! | [`workers::run`]: each worker's report of the round | the calling thread | the slowest closure, plus the bounds above |
//!
//! The queue never waits (a full queue hands the item back). Without a clock (`no_std`
//! without one, or `clock: None`) there is no deadline, and only poisoning ends a wait.
//!
//! [`PoisonCause::TimedOut`]: crate::barrier::PoisonCause::TimedOut
//!
//! # Example
//!
//! ```
//! use gradcast_core::backend::Reference;
//! use gradcast_core::packet::FixedEncoder;
//! use gradcast_core::round::{Accumulator, Local, RoundConfig, Ticket};
//! use gradcast_core::barrier::SpinThenYield;
//!
//! let (p, n) = (2, 8);
//! let mut acc: Accumulator<Reference, FixedEncoder, Local, SpinThenYield> =
//!     Accumulator::new(Reference, RoundConfig::new(p, n), vec![FixedEncoder::new(0.5); p], Local)?;
//! let mut replicas = vec![vec![1.0f32; n]; p];
//! std::thread::scope(|s| {
//!     for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
//!         s.spawn(move || {
//!             let update = vec![0.25 * (party.index() + 1) as f32; n];
//!             for round in 0..4 {
//!                 party.store_update(Ticket::new(round, p), &update).unwrap();
//!                 party.apply_update(params).unwrap();
//!             }
//!         });
//!     }
//! });
//! assert_eq!(replicas[0], replicas[1]); // bit-identical
//! # Ok::<(), gradcast_core::round::RoundError<gradcast_core::Error, gradcast_core::Error>>(())
//! ```
//!
//! # Checking it (commands, run from the repository root)
//!
//! * Tests: `cargo test -p gradcast-core`. The round protocol's own targets are
//!   `round_basic` (the contract, small enough for Miri), `round_stress` (P = 8 threads,
//!   random delays, random contributors or members; the main test's round count is
//!   `GRADCAST_STRESS_ROUNDS`, default 10 000), `round_faults` (an error and a panic
//!   mid-round reach every other worker within 1 s; watchdogs abort a hung test after 10 s),
//!   `round_straggler` (a party late by 300 ms breaks nothing under the default timeout) and
//!   `round_timeouts` (a party late past a 200 ms timeout, at each wait, poisons the round
//!   for all with a record naming it; a node's failure reaches the other nodes of a
//!   loopback; a stopped node is named by the others' exchange timeout).
//! * Loom models of the queue, the barrier (a bounded wait included) and two small
//!   round-protocol scenarios, with a preemption bound of 2 unless `LOOM_MAX_PREEMPTIONS`
//!   says otherwise (a target directory of its own, since `--cfg gradcast_loom` rebuilds
//!   everything): `RUSTFLAGS="--cfg gradcast_loom" CARGO_TARGET_DIR=target/loom cargo test
//!   -p gradcast-core --release --test loom`.
//! * Miri (`rustup +nightly component add miri rust-src`), over the unit tests of the queue
//!   and the barrier: `MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test -p
//!   gradcast-core --lib -- queue barrier`, and over the threaded round-protocol tests (as
//!   CI runs them): `MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-tree-borrows
//!   -Zmiri-disable-isolation" cargo +nightly miri test -p gradcast-core --test round_basic`.
//! * The benchmark (not a test): `cargo run -p gradcast-core --release --example
//!   round_bench`; its numbers are in `docs/BENCHMARKS.md`.
//! * `no_std`: `cargo build -p gradcast-core --no-default-features --target
//!   thumbv7em-none-eabihf` (queue and barrier), and with `--features alloc` (the
//!   accumulator and the loopback transport).
//!
//! [`PartyEncoder::max_packet_len`]: crate::packet::PartyEncoder::max_packet_len

use crate::error::{Classify, Error, ErrorKind};
use core::fmt;
use core::time::Duration;

#[cfg(feature = "alloc")]
mod accumulator;
#[cfg(feature = "alloc")]
pub mod loopback;
pub mod transport;
#[cfg(feature = "std")]
pub mod workers;

#[cfg(feature = "alloc")]
pub use accumulator::{Accumulator, Party};
#[cfg(feature = "alloc")]
pub use loopback::{Loopback, LoopbackHub};
pub use transport::{Local, LocalPacket, LocalPackets, RemoteEntry, RemotePackets, Transport};

pub use crate::barrier::Clock;
#[cfg(feature = "std")]
pub use crate::barrier::std_clock;

/// The default bound of every wait of the round protocol ([`RoundConfig::timeout`]) and of
/// the transports that follow it (the loopback's, the MPI transport's): five minutes.
///
/// A wait starts when a party begins to wait for the others, so it includes how much
/// longer the slowest member's work takes than the waiter's: five minutes leaves room for
/// training steps of large models on loaded machines (a round in the CI tests takes
/// milliseconds; the slowest legitimate wait seen there is well under a second), and still
/// ends a hung job in bounded time (PyTorch's process groups wait 10 to 30 minutes by
/// default). Shorten it where steps are fast and a hang should surface quickly.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How a round's decoded update is applied: `params -= update` (sum, DL4J's rule) or
/// `params -= update / k` with k the number of contributions (mean). With the sum, the
/// effective learning rate grows with the number of workers (DL4J's weakness W6 in docs/DL4J.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Step {
    /// `params -= sum of the round's decoded packets`.
    #[default]
    Sum,
    /// `params -= (1/k) * sum`, k = packets in the round (local and remote).
    Mean,
}

/// The shape of an [`Accumulator`], fixed at construction.
#[derive(Clone, Copy, Debug)]
pub struct RoundConfig {
    /// P, the number of local parties.
    pub parties: usize,
    /// N, the length of every vector (parameters, updates, residuals).
    pub n: usize,
    /// Sum or mean.
    pub step: Step,
    /// The global sender id of local party 0; party i sends as `first_sender + i`. With a
    /// multi-node transport, each node gets its own range.
    pub first_sender: u32,
    /// The number of the first round.
    pub first_round: u64,
    /// Capacity of the publication queue; at least P (the default).
    pub queue_capacity: Option<usize>,
    /// The clock for per-round timings and deadlines; `None` reports zeros and allows no
    /// timeout. With `std` the default is [`std_clock`].
    pub clock: Option<Clock>,
    /// The bound of every wait of the protocol: joining a round while earlier rounds run,
    /// each of the round's two barriers. A party that waits longer poisons the round with a
    /// [`PoisonCause::TimedOut`] record naming the parties that did not arrive, and every
    /// party returns it. `None`: no bound (a party waits until the others arrive or the round
    /// is poisoned). Needs a clock. With `std` the default is [`DEFAULT_TIMEOUT`]; without
    /// it, `None`.
    ///
    /// The leader's exchange is bounded by the transport (the MPI transport's own timeout,
    /// [`DEFAULT_TIMEOUT`] by default); the other members wait for it without a deadline
    /// once they have all arrived.
    ///
    /// [`PoisonCause::TimedOut`]: crate::barrier::PoisonCause::TimedOut
    pub timeout: Option<Duration>,
}

impl RoundConfig {
    /// P parties, vectors of N elements, sum, senders `0..P`, rounds from 0, queue capacity
    /// P, the default clock and timeout.
    pub fn new(parties: usize, n: usize) -> Self {
        RoundConfig {
            parties,
            n,
            step: Step::Sum,
            first_sender: 0,
            first_round: 0,
            queue_capacity: None,
            #[cfg(feature = "std")]
            clock: Some(std_clock),
            #[cfg(not(feature = "std"))]
            clock: None,
            #[cfg(feature = "std")]
            timeout: Some(DEFAULT_TIMEOUT),
            #[cfg(not(feature = "std"))]
            timeout: None,
        }
    }
}

/// Admission to a round: its number and how many parties are members.
///
/// Every member of a round holds the same ticket. Rounds run in order: a party holding the
/// ticket of a later round waits until the rounds before it are over; a ticket of a round
/// that is already over is an error ([`ProtocolError::TicketOutOfOrder`](crate::ProtocolError::TicketOutOfOrder)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// The round's number.
    pub round: u64,
    /// The number of local parties taking part, `1..=P`.
    pub members: usize,
}

impl Ticket {
    /// A ticket for `round` with `members` members.
    pub fn new(round: u64, members: usize) -> Self {
        Ticket { round, members }
    }
}

/// What [`Party::store_update`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The round.
    pub round: u64,
    /// The packet's length in bytes.
    pub bytes: usize,
    /// Nanoseconds spent adding the update and encoding.
    pub encode_ns: u64,
}

/// What one party saw of one round ([`Party::apply_update`]'s report).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundSummary {
    /// The round.
    pub round: u64,
    /// Members of the round (local parties that took part).
    pub members: usize,
    /// Packets decoded: local plus remote contributions.
    pub packets: usize,
    /// Local contributions.
    pub local_packets: usize,
    /// Remote contributions.
    pub remote_packets: usize,
    /// Bytes of this node's packets (what it published).
    pub bytes_published: usize,
    /// Bytes of the remote packets received.
    pub bytes_received: usize,
    /// This party's own packet in bytes (0 if it abstained).
    pub own_bytes: usize,
    /// Whether this party contributed.
    pub contributed: bool,
    /// Whether this party led the round's exchange.
    pub led: bool,
    /// The scale applied: 1 (sum) or 1/k (mean).
    pub scale: f32,
    /// Nanoseconds of this party's encode (residual += update, encode).
    pub encode_ns: u64,
    /// Nanoseconds from entering `apply_update` until the round's packets were ready:
    /// waiting for the other parties, the exchange and validation.
    pub exchange_ns: u64,
    /// Nanoseconds of the transport's exchange alone (measured by the leader).
    pub transport_ns: u64,
    /// Nanoseconds of decoding every packet and stepping the parameters.
    pub decode_ns: u64,
    /// Nanoseconds in the closing barrier.
    pub sync_ns: u64,
}

/// Residual statistics reported by [`Accumulator::reset`], over every party's residual.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResidualMass {
    /// Sum of absolute values (f64).
    pub l1: f64,
    /// Sum of squares (f64).
    pub sum_sq: f64,
    /// Largest absolute value.
    pub max_abs: f32,
    /// Non-zero elements.
    pub nonzero: u64,
}

/// Options of [`Accumulator::reset`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetOptions {
    /// Zero every residual (DL4J's behaviour; the mass is reported). Default: keep them.
    pub drop_residuals: bool,
    /// The number of the next round; default: the round after the last one started.
    pub next_round: Option<u64>,
}

/// What [`Accumulator::reset`] cleared.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResetReport {
    /// A round that had started but not finished (or was poisoned).
    pub unfinished_round: Option<u64>,
    /// Some replicas applied the unfinished round and others did not: the replicas differ
    /// and must be re-synchronised (nothing was credited back).
    pub partially_applied: bool,
    /// Packets of the unfinished round that no replica applied, credited back to their
    /// senders' residuals (mass conserved up to rounding).
    pub refunded_packets: usize,
    /// Entries cleared from the publication queue.
    pub queue_cleared: usize,
    /// The poison that was cleared.
    pub poison: Option<crate::barrier::Poison>,
    /// Whether the residuals were dropped (zeroed).
    pub residuals_dropped: bool,
    /// The residuals' mass at the reset: the mass dropped when `residuals_dropped`.
    pub residual: ResidualMass,
    /// The number of the next round.
    pub next_round: u64,
}

/// An error of the round protocol: the party's backend (or encoder), the transport, or a
/// rule of the protocol (poisoned, duplicate sender, wrong round, misuse, configuration).
#[derive(Debug)]
pub enum RoundError<BE, TE> {
    /// This party's backend or encoder failed.
    Backend(BE),
    /// The transport failed, in the exchange this party led.
    Transport(TE),
    /// A protocol error, a poisoned round, a bad configuration or a malformed packet.
    Round(Error),
}

impl<BE, TE> RoundError<BE, TE> {
    /// The core error, if this is one (for matching on [`ProtocolError::Poisoned`](crate::ProtocolError::Poisoned) and friends).
    pub fn core(&self) -> Option<&Error> {
        match self {
            RoundError::Round(e) => Some(e),
            _ => None,
        }
    }
}

impl<BE, TE> From<Error> for RoundError<BE, TE> {
    fn from(e: Error) -> Self {
        RoundError::Round(e)
    }
}

/// `?` lifts each concern's error of the core into [`RoundError::Round`].
macro_rules! round_error_from_concern {
    ($($concern:ty),*) => {$(
        impl<BE, TE> From<$concern> for RoundError<BE, TE> {
            fn from(e: $concern) -> Self {
                RoundError::Round(e.into())
            }
        }
    )*};
}
round_error_from_concern!(
    crate::error::WireError,
    crate::error::CodecError,
    crate::error::ConfigError,
    crate::error::ProtocolError,
    crate::error::CheckpointError
);

impl<BE: Classify, TE: Classify> Classify for RoundError<BE, TE> {
    fn kind(&self) -> ErrorKind {
        match self {
            RoundError::Backend(e) => e.kind(),
            RoundError::Transport(e) => e.kind(),
            RoundError::Round(e) => e.kind(),
        }
    }
}

impl<BE: fmt::Display, TE: fmt::Display> fmt::Display for RoundError<BE, TE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundError::Backend(e) => write!(f, "backend: {e}"),
            RoundError::Transport(e) => write!(f, "transport: {e}"),
            RoundError::Round(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<BE: fmt::Debug + fmt::Display, TE: fmt::Debug + fmt::Display> core::error::Error
    for RoundError<BE, TE>
{
}

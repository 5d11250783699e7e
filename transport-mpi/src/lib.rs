//! # gradcast-mpi
//!
//! The round protocol's [`Transport`](gradcast_core::round::Transport) over MPI (Open MPI
//! through [rsmpi](https://docs.rs/mpi)): several processes ("ranks"), on one machine or
//! many, share one gradcast round. Inside a rank, the local parties (worker threads) keep
//! the in-process path of [`gradcast_core::round::Accumulator`]: zero-copy slots, barriers.
//! Between ranks, each round's packets travel by [`MpiTransport`].
//!
//! # Ranks and sender ids
//!
//! Every rank runs the same number `P` of local parties. **Rank `r`'s local party `j` sends
//! as global id `r * P + j`**: rank 0 owns ids `0..P`, rank 1 owns `P..2P`, and so on
//! ([`MpiTransport::first_sender`], [`MpiTransport::round_config`]). The accumulator
//! decodes every packet of a round in ascending global id, local and remote merged, so
//! every replica on every rank applies the same packets in the same (rank, local sender)
//! order and performs the same floating-point operations: replicas stay bit-identical
//! across ranks, whatever the timing.
//!
//! # One round on the wire
//!
//! The rank's round leader calls [`MpiTransport::exchange`](gradcast_core::round::Transport::exchange)
//! with the rank's packets (ascending sender id). Two phases follow, each of non-blocking
//! point-to-point messages (`MPI_Isend` / `MPI_Irecv`) completed against the transport's
//! timeout (see [Bounded waits](#bounded-waits)):
//!
//! 1. **Packet tables**: each rank sends its fixed-size table (`8 * (10 + 2P)` bytes: format
//!    magic, round, status, packet count, `P`, the largest packet, four words of failure
//!    cause, then `(sender, length)` per packet) to every other rank. Every rank checks
//!    every table, in rank order: the same format and configuration, no failure status, the
//!    same round as rank 0, senders inside the rank's range and ascending, lengths within the
//!    largest packet. Every rank holds the same tables, so every rank reaches the same
//!    verdict, and an error ends the round on every rank; nobody is left waiting in the
//!    second phase.
//! 2. **Packets**: each rank sends its packets' bytes to every other rank, which receives
//!    them at the displacements the tables give. The other ranks' packets are recorded in
//!    the round's [`RemotePackets`](gradcast_core::round::RemotePackets) in (rank, local
//!    sender) order; the accumulator then validates every message (parses, checksum,
//!    sender, round, size) before anyone decodes.
//!
//! A rank whose local packets are bad (a sender outside its range, a packet longer than the
//! largest packet) still takes part in the table phase, with a failure status: it returns
//! its own error, the others return [`MpiError::PeerFailed`] naming it. So does a rank whose
//! round a local failure poisoned before the exchange (a worker's error, panic or timeout):
//! the accumulator calls [`Transport::fail_round`](gradcast_core::round::Transport::fail_round),
//! which sends the table with the poison's party and cause, and every other rank's exchange
//! returns [`MpiError::PeerFailed`] with [`PeerCause::Poisoned`]. In both cases the transport
//! works again for the next round.
//!
//! Every buffer is sized once, at construction: the tables, the rank's send buffer
//! (`P * max_packet_len` bytes) and the receive buffer (`size * P * max_packet_len` bytes;
//! MPI's 32-bit counts cap a round at 2 GiB).
//!
//! # Bounded waits
//!
//! No blocking MPI call can time out, so none is used: every wait of this crate starts
//! non-blocking operations and polls them (`MPI_Testsome`, spinning briefly, then yielding
//! between polls, never sleeping) until they complete or the timeout passes
//! ([`DEFAULT_TIMEOUT`], five minutes, unless [`MpiTransport::with_timeout`] /
//! [`Collectives::with_timeout`] say otherwise):
//!
//! | wait | bound |
//! |---|---|
//! | [`MpiTransport::new`], [`Collectives::new`]: duplicating the communicator (`MPI_Comm_idup`) | the timeout |
//! | each of an exchange's two phases (and a failure report's table phase) | the timeout, each |
//! | [`Collectives`]: `MPI_Iallreduce`, `MPI_Iallgather`, `MPI_Ibarrier` | the timeout, each |
//!
//! A rank that waits longer returns [`MpiError::Timeout`], naming the ranks whose messages
//! did not arrive in time (the exchange knows them: every message has one sender; a
//! collective call cannot tell). From then on the transport (or the collectives) returns
//! [`MpiError::Unusable`]: operations that did not complete may still touch their buffers, so
//! the buffers are leaked rather than freed, and the ranks are out of step.
//!
//! # Ending a job after a failure
//!
//! Open MPI, measured with 4 ranks on one machine (4.1.4): `MPI_Finalize` waits for every
//! rank, so with a stopped rank it never returns; a rank that exits without finalizing (or
//! returns non-zero) makes `mpirun` end the whole job within about a second, and so does
//! `MPI_Abort`, stopped ranks included (mpirun wakes and kills them). So:
//!
//! * after [`MpiError::PeerFailed`] (or any error while [`MpiTransport::gave_up_in`] is
//!   `None`) every rank is reachable and in step: reset the accumulator and go on, or
//!   finalize as usual;
//! * after a timeout ([`MpiTransport::gave_up_in`] is `Some`, [`MpiError::unreachable_ranks`]
//!   names who did not arrive) a rank may be stopped, wedged or gone: print the error and
//!   end the job with `MPI_Abort` (`world.abort(code)`), never by dropping the `Universe`
//!   (which finalizes). The library itself never calls `MPI_Abort`: the application
//!   decides. A rank that wants every other rank's message printed first can wait for the
//!   others a few seconds, with non-blocking messages, before aborting (this crate's fault
//!   tests do).
//!
//! # Errors
//!
//! The transport and [`Collectives`] call MPI on **duplicates** of the caller's
//! communicator whose error handler is `MPI_ERRORS_RETURN`: an MPI failure is an
//! [`MpiError::Mpi`] (the call, the code, its class and the library's message), classified
//! as [`ErrorKind::Transport`](gradcast_core::ErrorKind::Transport), never an abort.
//! [`MpiError`] converts from the core's errors and implements
//! [`Classify`](gradcast_core::Classify).
//!
//! A rank that fails inside the round protocol tells the others (see above). A rank that
//! fails outside it (its application stops calling the accumulator) is found by the
//! others' timeouts.
//!
//! # Threads
//!
//! The round's leader is whichever local party arrives last, so MPI must be initialized
//! with [`Threading::Serialized`](mpi::environment::Threading::Serialized) or higher
//! (`mpi::initialize_with_threading`); [`MpiTransport::new`] refuses less. Drop the
//! accumulator (and with it the transport) before the `Universe`, which finalizes MPI.
//!
//! # Example
//!
//! Every rank runs this program (under `mpirun -np R`); run directly, it is an MPI job of one
//! rank, which is how this example runs as a test.
//!
//! ```
//! use gradcast_core::backend::Reference;
//! use gradcast_core::barrier::Park;
//! use gradcast_core::packet::{FixedEncoder, PartyEncoder};
//! use gradcast_core::round::{Accumulator, Ticket};
//! use gradcast_mpi::{Collectives, MpiTransport, checksum};
//! use mpi::environment::Threading;
//!
//! let (universe, _) = mpi::initialize_with_threading(Threading::Serialized).unwrap();
//! let world = universe.world();
//! let (parties, n) = (2, 1000);
//! let encoders = vec![FixedEncoder::new(1e-3); parties];
//! let max_packet = PartyEncoder::<Reference>::max_packet_len(&encoders[0], n);
//! let transport = MpiTransport::new(&world, parties, max_packet)?;
//! let config = transport.round_config(n);
//! let mut acc: Accumulator<Reference, FixedEncoder, MpiTransport, Park> =
//!     Accumulator::new(Reference, config, encoders, transport)?;
//! // Each local party on its own thread: store its update, apply the round's.
//! let mut replicas = vec![vec![0.0f32; n]; parties];
//! std::thread::scope(|s| {
//!     for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
//!         s.spawn(move || {
//!             let update: Vec<f32> = (0..n)
//!                 .map(|i| ((i * 7 + party.index()) % 13) as f32 * 4e-4)
//!                 .collect();
//!             for round in 0..3 {
//!                 party.store_update(Ticket::new(round, parties), &update).unwrap();
//!                 party.apply_update(params).unwrap();
//!             }
//!         });
//!     }
//! });
//! drop(acc); // before the universe, which finalizes MPI
//! // Every replica on every rank holds the same parameters.
//! assert_eq!(replicas[0], replicas[1]);
//! let sums = Collectives::new(&world)?.all_gather_u64(checksum(&replicas[0]))?;
//! assert!(sums.iter().all(|&s| s == sums[0]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Running under mpirun
//!
//! ```text
//! cargo build --release -p gradcast-mpi --tests
//! mpirun --allow-run-as-root --oversubscribe -np 4 target/release/deps/mpi-<hash>
//! ```
//!
//! `--allow-run-as-root` is needed as root (containers, CI), `--oversubscribe` when there
//! are more ranks than cores. A binary started without `mpirun` runs as a singleton MPI job
//! of one rank, which is how plain `cargo test -p gradcast-mpi` runs the tests (the test
//! binary then starts the 4-rank run itself when `mpirun` is on the `PATH`; see the
//! README).
// A std-only crate (MPI needs an operating system): the workspace's no_std-oriented lints
// (prefer `core`/`alloc` paths) only add noise here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod collectives;
pub mod error;
pub mod transport;
mod wait;

pub use collectives::{Collectives, checksum};
pub use error::{MpiError, PeerCause};
pub use transport::{ExchangeStats, MpiTransport};
pub use wait::DEFAULT_TIMEOUT;

/// rsmpi, re-exported so callers initialize MPI with the same version this crate links.
pub use mpi;

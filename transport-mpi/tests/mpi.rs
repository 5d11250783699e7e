//! The MPI transport's tests: one program, run on every rank.
//!
//! `cargo test -p gradcast-mpi` runs this binary without `mpirun`: it first starts itself
//! under `mpirun --allow-run-as-root --oversubscribe -np 4` (when `mpirun` is on the
//! `PATH`; `GRADCAST_MPI_RANKS` changes the count, `0` skips it) and fails if that run
//! fails, then runs every check as a singleton MPI job of one rank. Under `mpirun` it runs
//! every check on every rank; a failing check ends the whole job with `MPI_Abort`.
//!
//! Every check asserts the same thing on every rank count: bit-identical replicas across
//! ranks (checksums compared through MPI, and equal to an in-process simulation of the same
//! job over the core's `Loopback` transport), every packet delivered once in canonical
//! order, and every failure reported on every rank as a typed error.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::backend::Reference;
use gradcast_core::barrier::{Park, Poison, PoisonCause};
use gradcast_core::packet::{FixedEncoder, PartyEncoder};
use gradcast_core::round::{
    Accumulator, LocalPacket, LocalPackets, LoopbackHub, RemoteEntry, RemotePackets, RoundConfig,
    RoundError, Step, Ticket, Transport,
};
use gradcast_core::{Classify, Error, ErrorKind};
use gradcast_core::{ProtocolError, WireError};
use gradcast_mpi::mpi::collective::CommunicatorCollectives;
use gradcast_mpi::mpi::environment::Threading;
use gradcast_mpi::mpi::ffi;
use gradcast_mpi::mpi::raw::AsRaw;
use gradcast_mpi::mpi::topology::{Communicator, SimpleCommunicator};
use gradcast_mpi::{Collectives, MpiError, MpiTransport, PeerCause, checksum};
use std::os::raw::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// SplitMix64: the updates of (sender, round) are the same in every process.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The job of the training check: P parties per rank, N elements, rounds.
const PARTIES: usize = 2;
const N: usize = 1000;
const ROUNDS: u64 = 30;
const TAU: f32 = 0.05;

/// Party `sender`'s update of `round`, or `None` when it abstains (some parties sit out
/// some rounds, and in round 7 every party of the last rank does, so a rank with no packet
/// is covered).
fn update_of(sender: u32, round: u64, last_rank_first: u32) -> Option<Vec<f32>> {
    if (sender as u64 + round).is_multiple_of(5) || (round == 7 && sender >= last_rank_first) {
        return None;
    }
    let mut rng = Rng::new((sender as u64) << 32 ^ round ^ 0x5EED);
    // Sparse-ish: most elements small, a few large, so packets vary in size and encoding.
    Some(
        (0..N)
            .map(|_| {
                let v = rng.f32() * 0.02;
                if rng.next().is_multiple_of(16) {
                    v * 20.0
                } else {
                    v
                }
            })
            .collect(),
    )
}

/// One node's accumulator in these checks.
type Node<T> = Accumulator<Reference, FixedEncoder, T, Park>;

fn initial_params() -> Vec<f32> {
    let mut rng = Rng::new(42);
    (0..N).map(|_| rng.f32()).collect()
}

/// Runs `ROUNDS` rounds on one node: one thread per party, every party a member of every
/// round; returns every local replica.
fn run_node<T: Transport + Send>(
    mut acc: Node<T>,
    first_sender: u32,
    last_rank_first: u32,
) -> Result<(Vec<Vec<f32>>, Node<T>), String>
where
    T::Error: Send,
{
    let mut replicas = vec![initial_params(); PARTIES];
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = acc
            .parties()
            .zip(replicas.iter_mut())
            .map(|(mut party, params)| {
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        let ticket = Ticket::new(round, PARTIES);
                        let sender = first_sender + party.index() as u32;
                        match update_of(sender, round, last_rank_first) {
                            Some(u) => party.store_update(ticket, &u).map(|_| ()),
                            None => party.abstain(ticket),
                        }
                        .map_err(|e| format!("store, round {round}: {e}"))?;
                        party
                            .apply_update(params)
                            .map_err(|e| format!("apply, round {round}: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("party panicked".into())))
            .collect()
    });
    for r in results {
        r?;
    }
    Ok((replicas, acc))
}

fn round_config(first_sender: u32) -> RoundConfig {
    RoundConfig {
        first_sender,
        step: Step::Mean,
        ..RoundConfig::new(PARTIES, N)
    }
}

fn max_packet() -> usize {
    PartyEncoder::<Reference>::max_packet_len(&FixedEncoder::new(TAU), N)
}

/// The same job in one process: `size` nodes over the core's Loopback transport.
fn simulate(size: usize) -> Vec<u64> {
    let hub: std::sync::Arc<LoopbackHub<Park>> =
        LoopbackHub::new(&vec![PARTIES; size], max_packet()).expect("hub");
    let last = hub.first_sender(size - 1);
    let nodes: Vec<_> = (0..size)
        .map(|r| {
            Accumulator::new(
                Reference,
                round_config(hub.first_sender(r)),
                vec![FixedEncoder::new(TAU); PARTIES],
                hub.endpoint(r),
            )
            .expect("accumulator")
        })
        .collect();
    let sums: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(r, acc)| {
                let first = hub.first_sender(r);
                s.spawn(move || {
                    let (replicas, _acc) = run_node(acc, first, last)?;
                    Ok(checksum(&replicas[0]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    sums.into_iter()
        .map(|r| r.expect("simulated node"))
        .collect()
}

/// Training rounds over MPI: every replica on every rank bit-identical, equal to the
/// in-process simulation, and the byte counts consistent across ranks.
fn training_rounds_are_bit_identical(world: &SimpleCommunicator) {
    let transport = MpiTransport::new(world, PARTIES, max_packet()).expect("transport");
    let size = transport.size();
    let rank = transport.rank();
    assert_eq!(transport.first_sender(), (rank * PARTIES) as u32);
    assert_eq!(transport.max_remote_packets(), (size - 1) * PARTIES);
    let first = transport.first_sender();
    let last = transport.first_sender_of(size - 1);
    let acc: Accumulator<Reference, FixedEncoder, MpiTransport, Park> = Accumulator::new(
        Reference,
        round_config(first),
        vec![FixedEncoder::new(TAU); PARTIES],
        transport,
    )
    .expect("accumulator");
    let (replicas, mut acc) = run_node(acc, first, last).expect("rounds");
    assert!(
        replicas.iter().all(|r| r == &replicas[0]),
        "local replicas differ"
    );
    assert_ne!(replicas[0], initial_params(), "the rounds changed nothing");
    let stats = acc.transport().stats();
    assert_eq!(stats.rounds, ROUNDS);

    let coll = Collectives::new(world).expect("collectives");
    let sums = coll.all_gather_u64(checksum(&replicas[0])).expect("gather");
    assert!(
        sums.iter().all(|&s| s == sums[0]),
        "rank {rank}: checksums differ across ranks: {sums:x?}"
    );
    let expected = simulate(size);
    assert!(expected.iter().all(|&s| s == expected[0]));
    assert_eq!(
        sums[0], expected[0],
        "the MPI job and the in-process simulation differ"
    );
    // What every rank sent is what every other rank received.
    let sent = coll
        .all_gather_u64(stats.packet_bytes_sent)
        .expect("gather");
    let total: u64 = sent.iter().sum();
    assert_eq!(stats.packet_bytes_received, total - sent[rank]);
    assert!(stats.packet_bytes_sent > 0);
    if rank == 0 {
        println!(
            "    {size} ranks x {PARTIES} parties, {ROUNDS} rounds, checksum {:016x}, \
             {:.0} bytes/rank/round (dense would be {})",
            sums[0],
            stats.bytes_sent_per_round(),
            4 * N * PARTIES
        );
    }
}

/// Each rank sends packets whose bytes name their sender; every rank receives exactly the
/// other ranks' packets, in ascending sender order, with their bytes intact.
fn packets_arrive_in_canonical_order(world: &SimpleCommunicator) {
    let parties = 3;
    let mut t = MpiTransport::new(world, parties, 64).expect("transport");
    let (rank, size) = (t.rank(), t.size());
    for round in 0..4u64 {
        // Party j of rank r contributes in round k unless (r + j + k) % 3 == 0; its packet
        // is (j + k) % 7 + 1 bytes, each the sender id's low byte.
        let contributes = |r: usize, j: usize| !(r + j + round as usize).is_multiple_of(3);
        let len = |j: usize| (j + round as usize) % 7 + 1;
        let bytes: Vec<Vec<u8>> = (0..parties)
            .map(|j| vec![(rank * parties + j) as u8; len(j)])
            .collect();
        let local: Vec<LocalPacket<'_>> = (0..parties)
            .filter(|&j| contributes(rank, j))
            .map(|j| LocalPacket {
                sender: t.first_sender() + j as u32,
                bytes: &bytes[j],
            })
            .collect();
        let mut arena = vec![0u8; t.max_remote_packets() * 64];
        let mut entries = vec![RemoteEntry::default(); t.max_remote_packets()];
        let mut remote = RemotePackets::new(&mut arena, &mut entries);
        t.exchange(round, &LocalPackets::from_slice(&local), &mut remote)
            .expect("exchange");
        let got: Vec<(u32, Vec<u8>)> = remote.iter().map(|(s, b)| (s, b.to_vec())).collect();
        let want: Vec<(u32, Vec<u8>)> = (0..size)
            .filter(|&r| r != rank)
            .flat_map(|r| (0..parties).map(move |j| (r, j)))
            .filter(|&(r, j)| contributes(r, j))
            .map(|(r, j)| {
                let s = (r * parties + j) as u32;
                (s, vec![s as u8; len(j)])
            })
            .collect();
        assert_eq!(got, want, "rank {rank}, round {round}");
        assert!(got.iter().all(|&(s, _)| t.is_remote_sender(s)));
        for j in 0..parties {
            assert!(!t.is_remote_sender(t.first_sender() + j as u32));
        }
        assert!(!t.is_remote_sender(t.total_senders() as u32));
    }
}

/// A rank with a bad local packet gets its own error, every other rank `PeerFailed` naming
/// it, and the next round works again.
fn local_failures_reach_every_rank(world: &SimpleCommunicator) {
    let max = 16;
    let mut t = MpiTransport::new(world, 1, max).expect("transport");
    let (rank, size) = (t.rank(), t.size());
    let bad = size - 1;
    let good = [7u8; 4];
    let big = [7u8; 17];
    let mut arena = vec![0u8; t.max_remote_packets() * max];
    let mut entries = vec![RemoteEntry::default(); t.max_remote_packets()];
    let cases: [(u64, &str); 3] = [(0, "foreign sender"), (1, "too large"), (2, "recovers")];
    for (round, case) in cases {
        let mut remote = RemotePackets::new(&mut arena, &mut entries);
        let sender = if rank == bad && case == "foreign sender" {
            t.total_senders() as u32 + 5
        } else {
            t.first_sender()
        };
        let bytes: &[u8] = if rank == bad && case == "too large" {
            &big
        } else {
            &good
        };
        let local = [LocalPacket { sender, bytes }];
        let r = t.exchange(round, &LocalPackets::from_slice(&local), &mut remote);
        match (case, rank == bad) {
            ("recovers", _) => {
                r.expect("the round after a failure works");
                assert_eq!(remote.len(), size - 1);
            }
            ("foreign sender", true) => {
                let e = r.expect_err("foreign sender accepted");
                assert!(
                    matches!(e, MpiError::NotLocalSender { round: 0, .. }),
                    "{e}"
                );
                assert_eq!(e.kind(), ErrorKind::Protocol);
            }
            ("too large", true) => {
                let e = r.expect_err("oversized packet accepted");
                assert!(
                    matches!(
                        e,
                        MpiError::PacketTooLarge {
                            len: 17,
                            max: 16,
                            ..
                        }
                    ),
                    "{e}"
                );
                assert_eq!(e.kind(), ErrorKind::BufferTooSmall);
            }
            (_, false) => {
                let e = r.expect_err("a peer's failure went unnoticed");
                assert!(
                    matches!(e, MpiError::PeerFailed { rank: b, round: rr, .. } if b == bad && rr == round),
                    "{e}"
                );
                assert_eq!(e.kind(), ErrorKind::Poisoned);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(t.stats().rounds, 1, "only the last round succeeded");
}

/// A rank whose round a local failure poisoned reports it (`fail_round`): every other rank's
/// exchange of that round fails with `PeerFailed` naming the rank, its party and the cause,
/// and the next round works again on every rank.
fn failure_reports_reach_every_rank(world: &SimpleCommunicator) {
    let mut t = MpiTransport::new(world, 2, 16).expect("transport");
    let (rank, size) = (t.rank(), t.size());
    let bad = size - 1;
    let mut arena = vec![0u8; t.max_remote_packets() * 16];
    let mut entries = vec![RemoteEntry::default(); t.max_remote_packets()];
    let poison = Poison {
        party: Some(1),
        round: 4,
        cause: PoisonCause::Panicked,
    };
    let bytes = [9u8; 8];
    let local = [LocalPacket {
        sender: t.first_sender(),
        bytes: &bytes,
    }];
    if rank == bad {
        t.fail_round(4, &poison);
    } else {
        let mut remote = RemotePackets::new(&mut arena, &mut entries);
        let e = t
            .exchange(4, &LocalPackets::from_slice(&local), &mut remote)
            .expect_err("a failure report went unnoticed");
        assert_eq!(
            e,
            MpiError::PeerFailed {
                rank: bad,
                round: 4,
                cause: PeerCause::Poisoned {
                    party: Some(1),
                    cause: PoisonCause::Panicked
                }
            }
        );
        assert!(e.to_string().contains(&format!("rank {bad}")), "{e}");
        assert!(remote.is_empty(), "packets arrived from a failed round");
    }
    assert_eq!(t.gave_up_in(), None);
    let mut remote = RemotePackets::new(&mut arena, &mut entries);
    t.exchange(5, &LocalPackets::from_slice(&local), &mut remote)
        .expect("the round after a failure report works");
    assert_eq!(remote.len(), size - 1);
}

/// A rank that does not take part in an exchange is named by every other rank's timeout;
/// the transport is unusable afterwards. (Skipped on one rank.)
fn a_rank_that_skips_an_exchange_is_named_by_the_timeout(world: &SimpleCommunicator) {
    let timeout = Duration::from_millis(300);
    let mut t = MpiTransport::with_timeout(world, 1, 8, timeout).expect("transport");
    let (rank, size) = (t.rank(), t.size());
    if size == 1 {
        return;
    }
    let absent = size - 1;
    if rank != absent {
        let mut arena = vec![0u8; t.max_remote_packets() * 8];
        let mut entries = vec![RemoteEntry::default(); t.max_remote_packets()];
        let mut remote = RemotePackets::new(&mut arena, &mut entries);
        let t0 = std::time::Instant::now();
        let e = t
            .exchange(0, &LocalPackets::from_slice(&[]), &mut remote)
            .expect_err("an absent rank went unnoticed");
        let waited = t0.elapsed();
        assert_eq!(
            e,
            MpiError::Timeout {
                what: "packet tables",
                round: Some(0),
                missing: vec![absent],
                after: timeout
            }
        );
        assert_eq!(e.unreachable_ranks(), [absent]);
        assert!(e.is_timeout());
        assert!(
            waited >= timeout && waited < timeout + Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(t.gave_up_in(), Some(0));
        let mut remote = RemotePackets::new(&mut arena, &mut entries);
        let e = t
            .exchange(1, &LocalPackets::from_slice(&[]), &mut remote)
            .expect_err("a transport that gave up was used again");
        assert!(
            matches!(e, MpiError::Unusable { round: Some(0), .. }),
            "{e}"
        );
    }
    // Everyone (the absent rank included) keeps its transport until the others are done.
    world.barrier();
}

/// A rank that skips a collective call: every other rank's call times out (MPI cannot tell
/// who is missing from a collective), and the collectives are unusable afterwards.
fn a_rank_that_skips_a_collective_times_the_others_out(world: &SimpleCommunicator) {
    let timeout = Duration::from_millis(300);
    let c = Collectives::with_timeout(world, timeout).expect("collectives");
    let (rank, size) = (c.rank(), c.size());
    if size == 1 {
        return;
    }
    if rank != size - 1 {
        let e = c.barrier().expect_err("an absent rank went unnoticed");
        assert_eq!(
            e,
            MpiError::Timeout {
                what: "MPI_Ibarrier",
                round: None,
                missing: vec![],
                after: timeout
            }
        );
        let e = c.all_gather_u64(1).expect_err("used again");
        assert!(
            matches!(
                e,
                MpiError::Unusable {
                    what: "MPI_Ibarrier",
                    ..
                }
            ),
            "{e}"
        );
    }
    world.barrier();
}

/// A rank out of step (another round number) fails the round on every rank.
fn ranks_out_of_step_fail_everywhere(world: &SimpleCommunicator) {
    let mut t = MpiTransport::new(world, 1, 8).expect("transport");
    let (rank, size) = (t.rank(), t.size());
    if size == 1 {
        return; // one rank is never out of step with itself
    }
    let mut arena = vec![0u8; t.max_remote_packets() * 8];
    let mut entries = vec![RemoteEntry::default(); t.max_remote_packets()];
    let mut remote = RemotePackets::new(&mut arena, &mut entries);
    let round = if rank == size - 1 { 11 } else { 10 };
    let e = t
        .exchange(round, &LocalPackets::from_slice(&[]), &mut remote)
        .expect_err("out of step accepted");
    assert!(
        matches!(e, MpiError::RoundMismatch { rank: r, expected: 10, found: 11 } if r == size - 1),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Protocol);
}

/// A transport that corrupts the packets of one rank on their way out: the receiving
/// ranks' accumulators reject them (the checksum) with a typed error before decoding.
struct Corrupting {
    inner: MpiTransport,
    corrupt: bool,
    scratch: Vec<u8>,
}

impl Transport for Corrupting {
    type Error = MpiError;
    fn max_remote_packets(&self) -> usize {
        self.inner.max_remote_packets()
    }
    fn is_remote_sender(&self, sender: u32) -> bool {
        self.inner.is_remote_sender(sender)
    }
    fn exchange(
        &mut self,
        round: u64,
        local: &LocalPackets<'_>,
        remote: &mut RemotePackets<'_>,
    ) -> Result<(), MpiError> {
        if !self.corrupt {
            return self.inner.exchange(round, local, remote);
        }
        let p = local.get(0).expect("one local packet");
        self.scratch.clear();
        self.scratch.extend_from_slice(p.bytes);
        let last = self.scratch.len() - 1;
        self.scratch[last] ^= 0x40;
        let bad = [LocalPacket {
            sender: p.sender,
            bytes: &self.scratch,
        }];
        self.inner
            .exchange(round, &LocalPackets::from_slice(&bad), remote)
    }
}

fn corrupt_packets_are_rejected_by_receivers(world: &SimpleCommunicator) {
    let n = 64;
    let enc = FixedEncoder::new(0.1);
    let max = PartyEncoder::<Reference>::max_packet_len(&enc, n);
    let inner = MpiTransport::new(world, 1, max).expect("transport");
    let (rank, size) = (inner.rank(), inner.size());
    let corrupt = rank == size - 1;
    let config = inner.round_config(n);
    let mut acc: Accumulator<Reference, FixedEncoder, Corrupting, Park> = Accumulator::new(
        Reference,
        config,
        [enc],
        Corrupting {
            inner,
            corrupt,
            scratch: Vec::new(),
        },
    )
    .expect("accumulator");
    let mut params = vec![0.0f32; n];
    let mut party = acc.party(0);
    party
        .store_update(Ticket::new(0, 1), &vec![1.0f32; n])
        .expect("store");
    let r = party.apply_update(&mut params);
    if corrupt {
        // Its own packet is fine locally, and the others' packets are valid.
        r.expect("the corrupting rank applies its round");
    } else {
        let e = r.expect_err("a corrupt packet was applied");
        assert!(
            matches!(
                e,
                RoundError::Round(Error::Wire(WireError::ChecksumMismatch { .. }))
            ),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::Checksum);
        assert!(params.iter().all(|&v| v == 0.0), "a rejected round stepped");
    }
}

/// MPI failures come back as `MpiError::Mpi` with the library's message, not an abort.
fn mpi_failures_are_typed_errors(world: &SimpleCommunicator) {
    let e = MpiError::check("MPI_Test", ffi::MPI_ERR_COUNT as c_int).expect_err("error code");
    match &e {
        MpiError::Mpi {
            call,
            class,
            message,
            ..
        } => {
            assert_eq!(*call, "MPI_Test");
            assert_eq!(*class, ffi::MPI_ERR_COUNT as c_int);
            assert!(!message.is_empty());
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.kind(), ErrorKind::Transport);
    MpiError::check("MPI_Test", ffi::MPI_SUCCESS as c_int).expect("success");

    // A real failing call on a communicator whose errors return, as the transport's.
    let dup = world.duplicate();
    // SAFETY: `dup` is live; the handler is predefined.
    let rc = unsafe { ffi::MPI_Comm_set_errhandler(dup.as_raw(), ffi::RSMPI_ERRORS_RETURN) };
    MpiError::check("MPI_Comm_set_errhandler", rc).expect("set handler");
    let x = [0u64; 1];
    let mut y = [0u64; 1];
    // SAFETY: a negative count is rejected by MPI's argument check before any buffer is
    // touched; the buffers are valid for one element anyway.
    let rc = unsafe {
        ffi::MPI_Allreduce(
            x.as_ptr() as *const c_void,
            y.as_mut_ptr() as *mut c_void,
            -1,
            ffi::RSMPI_UINT64_T,
            ffi::RSMPI_SUM,
            dup.as_raw(),
        )
    };
    let e = MpiError::check("MPI_Allreduce", rc).expect_err("a negative count was accepted");
    assert!(
        matches!(&e, MpiError::Mpi { class, .. } if *class == ffi::MPI_ERR_COUNT as c_int),
        "{e}"
    );
    assert!(e.to_string().contains("MPI_Allreduce"), "{e}");

    // Configuration errors.
    for (parties, max) in [(0, 8), (1 << 20, 1 << 20)] {
        let e = MpiTransport::new(world, parties, max).expect_err("bad configuration");
        assert!(matches!(e, MpiError::Config { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    // Core errors convert and keep their kind.
    let e = MpiError::from(Error::from(ProtocolError::TooManyRemotePackets { max: 3 }));
    assert_eq!(
        e.kind(),
        ProtocolError::TooManyRemotePackets { max: 3 }.kind()
    );
}

/// The dense baseline's allreduce sums every rank's vector.
fn dense_allreduce_sums(world: &SimpleCommunicator) {
    let mut c = Collectives::new(world).expect("collectives");
    let (rank, size) = (c.rank(), c.size());
    let input: Vec<f32> = (0..100).map(|i| (i * (rank + 1)) as f32).collect();
    let mut out = vec![0.0f32; 100];
    c.allreduce_sum(&input, &mut out).expect("allreduce");
    let factor = (size * (size + 1) / 2) as f32;
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, i as f32 * factor);
    }
    assert_eq!(c.allreduce_stats(), (1, 400));
    let e = c
        .allreduce_sum(&input, &mut out[..10])
        .expect_err("length mismatch");
    assert!(matches!(e, MpiError::Config { .. }), "{e}");
    let f = c.all_gather_f64(&[rank as f64, 0.5]).expect("gather");
    assert_eq!(f.len(), 2 * size);
    assert!((0..size).all(|r| f[2 * r] == r as f64 && f[2 * r + 1] == 0.5));
    c.barrier().expect("barrier");
}

type Check = (&'static str, fn(&SimpleCommunicator));

const CHECKS: &[Check] = &[
    (
        "training_rounds_are_bit_identical",
        training_rounds_are_bit_identical,
    ),
    (
        "packets_arrive_in_canonical_order",
        packets_arrive_in_canonical_order,
    ),
    (
        "local_failures_reach_every_rank",
        local_failures_reach_every_rank,
    ),
    (
        "failure_reports_reach_every_rank",
        failure_reports_reach_every_rank,
    ),
    (
        "ranks_out_of_step_fail_everywhere",
        ranks_out_of_step_fail_everywhere,
    ),
    (
        "a_rank_that_skips_an_exchange_is_named_by_the_timeout",
        a_rank_that_skips_an_exchange_is_named_by_the_timeout,
    ),
    (
        "a_rank_that_skips_a_collective_times_the_others_out",
        a_rank_that_skips_a_collective_times_the_others_out,
    ),
    (
        "corrupt_packets_are_rejected_by_receivers",
        corrupt_packets_are_rejected_by_receivers,
    ),
    (
        "mpi_failures_are_typed_errors",
        mpi_failures_are_typed_errors,
    ),
    ("dense_allreduce_sums", dense_allreduce_sums),
];

/// Starts this binary under `mpirun` with `ranks` ranks; `Ok(false)` when mpirun is absent.
fn spawn_mpirun(ranks: usize) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(&exe)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("mpirun: {e}")),
    };
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(true)
    } else {
        Err(format!("the {ranks}-rank run failed: {}", out.status))
    }
}

fn main() -> ExitCode {
    let under_mpirun = std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
        || std::env::var_os("PMI_SIZE").is_some();
    // `cargo test -- --list` and filters: this binary has no test names to list.
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    if !under_mpirun {
        let ranks: usize = std::env::var("GRADCAST_MPI_RANKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        if ranks > 0 {
            println!("mpi: {ranks} ranks under mpirun");
            match spawn_mpirun(ranks) {
                Ok(true) => {}
                Ok(false) => println!("SKIP: mpirun is not on the PATH; singleton only"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let Some((universe, threading)) =
        gradcast_mpi::mpi::initialize_with_threading(Threading::Serialized)
    else {
        eprintln!("error: MPI was already initialized");
        return ExitCode::FAILURE;
    };
    assert!(threading >= Threading::Serialized, "{threading:?}");
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    if rank == 0 {
        println!("mpi: {size} rank(s)");
    }
    for (name, check) in CHECKS {
        let r = catch_unwind(AssertUnwindSafe(|| check(&world)));
        if r.is_err() {
            eprintln!("rank {rank}: FAILED {name}");
            world.abort(1);
        }
        world.barrier();
        if rank == 0 {
            println!("  ok {name}");
        }
    }
    if rank == 0 {
        println!("mpi: {} checks passed on {size} rank(s)", CHECKS.len());
    }
    drop(world);
    drop(universe);
    ExitCode::SUCCESS
}

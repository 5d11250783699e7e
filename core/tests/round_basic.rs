//! The round protocol's contract, small enough for Miri:
//! `cargo +nightly miri test -p gradcast-core --test round_basic`.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // test code is std

mod round_common;

use gradcast_core::backend::Reference;
use gradcast_core::barrier::{Park, PoisonCause, SpinThenYield};
use gradcast_core::codec::{self, EncodeParams};
use gradcast_core::packet::FixedEncoder;
use gradcast_core::round::{
    Accumulator, Local, LocalPackets, Loopback, LoopbackHub, RemotePackets, ResetOptions,
    RoundConfig, RoundError, Step, Ticket, Transport,
};
use gradcast_core::wire::max_message_len;
use gradcast_core::{Classify, Error, ErrorKind};
use gradcast_core::{CodecError, ConfigError, ProtocolError, WireError};
use round_common::{Oracle, Rng, assert_bits_eq, update_of};

const TAU: f32 = 0.05;

type Acc<T = Local, R = SpinThenYield> = Accumulator<Reference, FixedEncoder, T, R>;
type RErr = RoundError<Error, Error>;

fn acc(p: usize, n: usize) -> Acc {
    Acc::new(
        Reference,
        RoundConfig::new(p, n),
        vec![FixedEncoder::new(TAU); p],
        Local,
    )
    .unwrap()
}

fn rounds(full: u64) -> u64 {
    if cfg!(miri) { 3 } else { full }
}

#[test]
fn single_party_bypass_matches_oracle() {
    let n = 24;
    let mut acc = acc(1, n);
    let mut oracle = Oracle::new(1, n, TAU);
    let mut params = vec![0.5f32; n];
    let mut expected = params.clone();
    let mut update = vec![0.0; n];
    for round in 0..rounds(40) {
        update_of(0, round, &mut update);
        let mut party = acc.party(0);
        let published = party.store_update(Ticket::new(round, 1), &update).unwrap();
        let s = party.apply_update(&mut params).unwrap();
        drop(party);
        assert!(s.led && s.contributed);
        assert_eq!((s.round, s.packets, s.members), (round, 1, 1));
        assert_eq!(s.own_bytes, published.bytes);
        assert_eq!(s.bytes_published, published.bytes);
        Oracle::apply(&mut expected, &oracle.round(round, &[0], Step::Sum));
        assert_bits_eq(&params, &expected, "replica");
        assert_bits_eq(acc.residual(0), &oracle.residuals[0], "residual");
    }
    assert_eq!(acc.next_round(), rounds(40));
}

/// P threads, every party contributes: bit-identical replicas equal to the oracle, for
/// the sum and the mean.
fn threads_match_oracle(step: Step) {
    let (p, n) = (3, 20);
    let mut config = RoundConfig::new(p, n);
    config.step = step;
    let mut acc: Acc =
        Accumulator::new(Reference, config, vec![FixedEncoder::new(TAU); p], Local).unwrap();
    let rounds = rounds(60);
    let mut replicas = vec![vec![0.25f32; n]; p];
    std::thread::scope(|s| {
        for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
            s.spawn(move || {
                let mut update = vec![0.0; n];
                for round in 0..rounds {
                    update_of(party.sender(), round, &mut update);
                    party.store_update(Ticket::new(round, p), &update).unwrap();
                    let summary = party.apply_update(params).unwrap();
                    assert_eq!(summary.packets, p);
                }
            });
        }
    });
    let mut oracle = Oracle::new(p, n, TAU);
    let mut expected = vec![0.25f32; n];
    for round in 0..rounds {
        Oracle::apply(&mut expected, &oracle.round(round, &[0, 1, 2], step));
    }
    for (i, r) in replicas.iter().enumerate() {
        assert_bits_eq(r, &expected, &format!("replica {i}"));
        assert_bits_eq(acc.residual(i), &oracle.residuals[i], "residual");
    }
}

#[test]
fn threads_match_oracle_sum() {
    threads_match_oracle(Step::Sum);
}

#[test]
fn threads_match_oracle_mean() {
    threads_match_oracle(Step::Mean);
}

/// Members that abstain still apply; the mean divides by the contributions; a round
/// without contributions changes nothing.
#[test]
fn abstaining_members_apply_the_round() {
    let (p, n) = (3, 16);
    let mut config = RoundConfig::new(p, n);
    config.step = Step::Mean;
    let mut acc: Acc<Local, Park> =
        Accumulator::new(Reference, config, vec![FixedEncoder::new(TAU); p], Local).unwrap();
    // Contributors per round (bit i = party i).
    let schedule: Vec<u8> = vec![0b111, 0b001, 0b000, 0b110, 0b010, 0b101];
    let schedule = &schedule;
    let mut replicas = vec![vec![1.0f32; n]; p];
    std::thread::scope(|s| {
        for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
            s.spawn(move || {
                let mut update = vec![0.0; n];
                for (round, &mask) in schedule.iter().enumerate() {
                    let round = round as u64;
                    let ticket = Ticket::new(round, p);
                    let mine = (mask >> party.index()) & 1 == 1;
                    if mine {
                        update_of(party.sender(), round, &mut update);
                        party.store_update(ticket, &update).unwrap();
                    } else {
                        party.abstain(ticket).unwrap();
                    }
                    let s = party.apply_update(params).unwrap();
                    assert_eq!(s.contributed, mine);
                    assert_eq!(s.packets, mask.count_ones() as usize);
                    assert_eq!(s.local_packets, s.packets);
                    let k = mask.count_ones().max(1) as f32;
                    assert_eq!(s.scale, 1.0 / k);
                    if !mine {
                        assert_eq!((s.own_bytes, s.encode_ns), (0, 0));
                    }
                }
            });
        }
    });
    let mut oracle = Oracle::new(p, n, TAU);
    let mut expected = vec![1.0f32; n];
    for (round, &mask) in schedule.iter().enumerate() {
        let ids: Vec<u32> = (0..p as u32).filter(|i| (mask >> i) & 1 == 1).collect();
        Oracle::apply(&mut expected, &oracle.round(round as u64, &ids, Step::Mean));
    }
    for r in &replicas {
        assert_bits_eq(r, &expected, "replica");
    }
}

#[test]
fn construction_errors_are_typed() {
    let enc = |k| vec![FixedEncoder::new(TAU); k];
    let mut config = RoundConfig::new(4, 8);
    config.queue_capacity = Some(3);
    let e = <Acc>::new(Reference, config, enc(4), Local).unwrap_err();
    assert!(matches!(
        e,
        RoundError::Round(Error::Config(ConfigError::QueueTooSmall {
            capacity: 3,
            needed: 4
        }))
    ));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = <Acc>::new(Reference, RoundConfig::new(0, 8), enc(0), Local).unwrap_err();
    assert!(matches!(
        e,
        RoundError::Round(Error::Config(ConfigError::PartiesOutOfRange {
            parties: 0,
            ..
        }))
    ));
    let e = <Acc>::new(Reference, RoundConfig::new(2, 0), enc(2), Local).unwrap_err();
    assert!(matches!(
        e,
        RoundError::Round(Error::Config(ConfigError::Round { .. }))
    ));
    let e = <Acc>::new(Reference, RoundConfig::new(2, 8), enc(3), Local).unwrap_err();
    assert!(matches!(
        e,
        RoundError::Round(Error::Config(ConfigError::Round { .. }))
    ));
    // A larger queue than needed is fine.
    let mut config = RoundConfig::new(2, 8);
    config.queue_capacity = Some(16);
    assert!(<Acc>::new(Reference, config, enc(2), Local).is_ok());
}

#[test]
fn misuse_is_typed_and_poisons() {
    let n = 8;
    let mut acc = acc(2, n);
    let mut params = vec![0.0f32; n];
    {
        let mut ps: Vec<_> = acc.parties().collect();
        let e = ps[1].apply_update(&mut params).unwrap_err();
        assert!(matches!(
            e.core(),
            Some(Error::Protocol(ProtocolError::RoundMisuse {
                party: 1,
                round: 0,
                ..
            }))
        ));
        assert_eq!(e.kind(), ErrorKind::Protocol);
        // Everyone else now gets the poison, naming party 1.
        let e = ps[0].abstain(Ticket::new(0, 2)).unwrap_err();
        assert_eq!(
            e.core(),
            Some(&Error::Protocol(ProtocolError::Poisoned {
                party: Some(1),
                round: 0,
                cause: PoisonCause::Failed(ErrorKind::Protocol)
            }))
        );
        assert_eq!(e.kind(), ErrorKind::Poisoned);
    }
    let report = acc.reset(ResetOptions::default()).unwrap();
    assert!(report.poison.is_some());
    assert!(acc.poisoned().is_none());
    let next = report.next_round;

    // A ticket of a round that is over.
    {
        let mut party = acc.party(0);
        party.abstain(Ticket::new(next, 1)).unwrap();
        party.apply_update(&mut params).unwrap();
        let e = party.abstain(Ticket::new(next, 1)).unwrap_err();
        assert_eq!(
            e.core(),
            Some(&Error::Protocol(ProtocolError::TicketOutOfOrder {
                party: 0,
                ticket: next,
                current: next + 1
            }))
        );
    }
    acc.reset(ResetOptions::default()).unwrap();

    // Joining twice; a member count outside 1..=P; members that disagree.
    let r = acc.next_round();
    {
        let mut ps: Vec<_> = acc.parties().collect();
        ps[0].abstain(Ticket::new(r, 2)).unwrap();
        let e = ps[1].abstain(Ticket::new(r, 1)).unwrap_err();
        assert!(matches!(
            e.core(),
            Some(Error::Protocol(ProtocolError::RoundMisuse { party: 1, .. }))
        ));
    }
    acc.reset(ResetOptions::default()).unwrap();
    let r = acc.next_round();
    {
        let mut party = acc.party(0);
        assert!(matches!(
            party.abstain(Ticket::new(r, 3)).unwrap_err().core(),
            Some(Error::Config(ConfigError::PartiesOutOfRange {
                parties: 3,
                max: 2
            }))
        ));
    }
    acc.reset(ResetOptions::default()).unwrap();
    let r = acc.next_round();
    {
        let mut party = acc.party(0);
        party.abstain(Ticket::new(r, 1)).unwrap();
        assert!(matches!(
            party.abstain(Ticket::new(r, 1)).unwrap_err().core(),
            Some(Error::Protocol(ProtocolError::RoundMisuse { party: 0, .. }))
        ));
    }
}

/// A handle dropped mid-round poisons (Abandoned); reset credits the unapplied packet back.
#[test]
fn reset_refunds_an_unfinished_round_and_keeps_residuals() {
    let n = 6;
    // A threshold and updates that f32 represents exactly, so the refund is exact.
    let mut acc: Acc = Accumulator::new(
        Reference,
        RoundConfig::new(2, n),
        vec![FixedEncoder::new(0.25); 2],
        Local,
    )
    .unwrap();
    let update = vec![0.75f32, -1.25, 0.125, 0.5, -0.25, 0.0];
    {
        let mut ps: Vec<_> = acc.parties().collect();
        let published = ps[0].store_update(Ticket::new(0, 2), &update).unwrap();
        assert!(published.bytes > 0);
        // Party 0's residual is debited by what the packet carries.
        assert_ne!(ps[0].residual(), &update);
        drop(ps.pop()); // party 1 walks away... it had not joined: no poison yet
        assert!(ps[0].poisoned().is_none());
    } // party 0's handle drops mid-round: poisoned, Abandoned
    let poison = acc.poisoned().unwrap();
    assert_eq!(poison.party, Some(0));
    assert_eq!(poison.cause, PoisonCause::Abandoned);
    let report = acc.reset(ResetOptions::default()).unwrap();
    assert_eq!(report.unfinished_round, Some(0));
    assert!(!report.partially_applied);
    assert_eq!(report.refunded_packets, 1);
    assert!(!report.residuals_dropped);
    assert_eq!(report.next_round, 1);
    // Credited back exactly (these values are representable).
    assert_bits_eq(acc.residual(0), &update, "refunded residual");
    let l1: f64 = update.iter().map(|x| x.abs() as f64).sum();
    assert!((report.residual.l1 - l1).abs() < 1e-6);
    assert_eq!(report.residual.nonzero, 5);
    assert_eq!(report.residual.max_abs, 1.25);

    // Dropping residuals zeroes them and reports their mass.
    let report = acc
        .reset(ResetOptions {
            drop_residuals: true,
            next_round: Some(100),
        })
        .unwrap();
    assert!(report.residuals_dropped);
    assert_eq!(report.unfinished_round, None);
    assert!((report.residual.l1 - l1).abs() < 1e-6);
    assert!(acc.residual(0).iter().all(|x| *x == 0.0));
    assert_eq!(acc.next_round(), 100);

    // The accumulator works again.
    let mut replicas = vec![vec![0.0f32; n]; 2];
    std::thread::scope(|s| {
        for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
            let update = &update;
            s.spawn(move || {
                party.store_update(Ticket::new(100, 2), update).unwrap();
                party.apply_update(params).unwrap();
            });
        }
    });
    assert_bits_eq(&replicas[0], &replicas[1], "replicas");
}

/// Remote packets come through the transport; what it delivers is validated.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Inject {
    /// A valid packet of sender 5.
    Valid,
    /// Two packets of sender 5.
    Duplicate,
    /// A packet claiming local sender 0.
    LocalId,
    /// A packet of sender 99, which the transport does not know.
    Unknown,
    /// Sender 5's message for the next round.
    WrongRound,
    /// A message of sender 6 delivered as sender 5's.
    SenderMismatch,
    /// Sender 5's packet with a flipped bit.
    Corrupt,
    /// A message for a vector of another length.
    OtherLength,
    /// More packets than the storage holds.
    TooMany,
    /// The transport itself fails.
    Fail,
}

#[derive(Debug)]
struct Injector {
    mode: Inject,
    n: usize,
}

/// A message of `sender` for `round` over a vector of `n` elements.
fn remote_message(sender: u32, round: u64, n: usize) -> Vec<u8> {
    let mut x: Vec<f32> = (0..n)
        .map(|i| if i % 3 == 0 { 0.3 } else { -0.01 })
        .collect();
    let mut out = vec![0u8; max_message_len(n)];
    let params = EncodeParams {
        sender,
        round,
        ..EncodeParams::new(TAU)
    };
    let len = codec::encode(&mut x, &params, &mut out).unwrap().bytes;
    out.truncate(len);
    out
}

impl Transport for Injector {
    type Error = Error;
    fn max_remote_packets(&self) -> usize {
        2
    }
    fn is_remote_sender(&self, sender: u32) -> bool {
        (5..7).contains(&sender)
    }
    fn exchange(
        &mut self,
        round: u64,
        local: &LocalPackets<'_>,
        remote: &mut RemotePackets<'_>,
    ) -> Result<(), Error> {
        assert!(local.iter().all(|p| p.sender < 2));
        let n = self.n;
        let good = remote_message(5, round, n);
        match self.mode {
            Inject::Valid => remote.push(5, &good),
            Inject::Duplicate => {
                remote.push(5, &good)?;
                remote.push(5, &good)
            }
            Inject::LocalId => remote.push(0, &remote_message(0, round, n)),
            Inject::Unknown => remote.push(99, &remote_message(99, round, n)),
            Inject::WrongRound => remote.push(5, &remote_message(5, round + 1, n)),
            Inject::SenderMismatch => remote.push(5, &remote_message(6, round, n)),
            Inject::Corrupt => {
                let mut bad = good.clone();
                let last = bad.len() - 1;
                bad[last] ^= 0x10;
                remote.push(5, &bad)
            }
            Inject::OtherLength => remote.push(5, &remote_message(5, round, n + 1)),
            Inject::TooMany => {
                remote.push(5, &good)?;
                remote.push(6, &remote_message(6, round, n))?;
                remote.push(6, &good)
            }
            Inject::Fail => Err(Error::Config(ConfigError::Round {
                reason: "injected transport failure",
            })),
        }
    }
}

/// Runs one round of two parties over an injecting transport; returns each party's result.
fn inject(mode: Inject) -> Vec<Result<Vec<f32>, RErr>> {
    let n = 12;
    let transport = Injector { mode, n };
    let mut acc: Acc<Injector> = Accumulator::new(
        Reference,
        RoundConfig::new(2, n),
        vec![FixedEncoder::new(TAU); 2],
        transport,
    )
    .unwrap();
    let mut out = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = acc
            .parties()
            .map(|mut party| {
                s.spawn(move || {
                    let mut params = vec![0.0f32; n];
                    let mut update = vec![0.0f32; n];
                    update_of(party.sender(), 7, &mut update);
                    party.store_update(Ticket::new(0, 2), &update)?;
                    party.apply_update(&mut params)?;
                    Ok(params)
                })
            })
            .collect();
        for h in handles {
            out.push(h.join().unwrap());
        }
    });
    out
}

#[test]
fn valid_remote_packet_is_merged_in_sender_order() {
    let results = inject(Inject::Valid);
    let n = 12;
    // Oracle: local senders 0 and 1, then remote sender 5.
    let mut expected = vec![0.0f32; n];
    let mut sum = vec![0.0f32; n];
    let mut residuals = vec![vec![0.0f32; n]; 2];
    let mut buf = vec![0u8; max_message_len(n)];
    for (i, r) in residuals.iter_mut().enumerate() {
        update_of(i as u32, 7, r);
        let params = EncodeParams {
            sender: i as u32,
            round: 0,
            ..EncodeParams::new(TAU)
        };
        let len = codec::encode(r, &params, &mut buf).unwrap().bytes;
        let view = gradcast_core::wire::MessageView::parse(&buf[..len]).unwrap();
        codec::decode_add(&view, &mut sum).unwrap();
    }
    let remote = remote_message(5, 0, n);
    codec::decode_add(
        &gradcast_core::wire::MessageView::parse(&remote).unwrap(),
        &mut sum,
    )
    .unwrap();
    gradcast_core::backend::slices::sub_scaled(&mut expected, &sum, 1.0);
    for r in results {
        assert_bits_eq(&r.unwrap(), &expected, "replica with the remote packet");
    }
}

/// The leader reports the precise error; the other party gets the poison naming it.
fn assert_rejected(mode: Inject, check: impl Fn(&RErr) -> bool, kind: ErrorKind) {
    let results = inject(mode);
    let errors: Vec<RErr> = results.into_iter().map(|r| r.unwrap_err()).collect();
    let precise: Vec<&RErr> = errors.iter().filter(|e| check(e)).collect();
    assert_eq!(
        precise.len(),
        1,
        "{mode:?}: exactly the leader reports it: {errors:?}"
    );
    assert_eq!(precise[0].kind(), kind, "{mode:?}");
    let poisoned: Vec<&RErr> = errors
        .iter()
        .filter(|e| {
            matches!(
                e.core(),
                Some(Error::Protocol(ProtocolError::Poisoned { .. }))
            )
        })
        .collect();
    assert_eq!(
        poisoned.len(),
        1,
        "{mode:?}: the other party is poisoned: {errors:?}"
    );
    match poisoned[0].core() {
        Some(Error::Protocol(ProtocolError::Poisoned {
            party: Some(_),
            round: 0,
            cause: PoisonCause::Failed(k),
        })) => assert_eq!(*k, kind),
        other => panic!("{mode:?}: {other:?}"),
    }
}

#[test]
fn remote_validation_rejects_bad_packets() {
    let core = |f: fn(&Error) -> bool| move |e: &RErr| e.core().is_some_and(f);
    assert_rejected(
        Inject::Duplicate,
        core(|e| {
            matches!(
                e,
                Error::Protocol(ProtocolError::DuplicateSender {
                    round: 0,
                    sender: 5
                })
            )
        }),
        ErrorKind::Protocol,
    );
    assert_rejected(
        Inject::LocalId,
        core(|e| {
            matches!(
                e,
                Error::Protocol(ProtocolError::DuplicateSender {
                    round: 0,
                    sender: 0
                })
            )
        }),
        ErrorKind::Protocol,
    );
    assert_rejected(
        Inject::Unknown,
        core(|e| {
            matches!(
                e,
                Error::Protocol(ProtocolError::UnknownSender {
                    round: 0,
                    sender: 99
                })
            )
        }),
        ErrorKind::Protocol,
    );
    assert_rejected(
        Inject::WrongRound,
        core(|e| {
            matches!(
                e,
                Error::Protocol(ProtocolError::WrongRound {
                    sender: 5,
                    expected: 0,
                    found: 1
                })
            )
        }),
        ErrorKind::Protocol,
    );
    assert_rejected(
        Inject::SenderMismatch,
        core(|e| {
            matches!(
                e,
                Error::Protocol(ProtocolError::SenderMismatch {
                    round: 0,
                    declared: 5,
                    found: 6
                })
            )
        }),
        ErrorKind::Protocol,
    );
    assert_rejected(
        Inject::Corrupt,
        core(|e| matches!(e, Error::Wire(WireError::ChecksumMismatch { .. }))),
        ErrorKind::Checksum,
    );
    assert_rejected(
        Inject::OtherLength,
        core(|e| matches!(e, Error::Codec(CodecError::TargetSizeMismatch { .. }))),
        ErrorKind::SizeMismatch,
    );
    assert_rejected(
        Inject::TooMany,
        |e| {
            matches!(
                e,
                RoundError::Transport(Error::Protocol(ProtocolError::TooManyRemotePackets {
                    max: 2
                }))
            )
        },
        ErrorKind::Protocol,
    );
    assert_rejected(
        Inject::Fail,
        |e| {
            matches!(
                e,
                RoundError::Transport(Error::Config(ConfigError::Round { .. }))
            )
        },
        ErrorKind::InvalidArgument,
    );
}

/// Two nodes of two parties over the loopback transport: four bit-identical replicas, equal
/// to the oracle over four global senders.
#[test]
fn loopback_nodes_stay_identical() {
    let (nodes, p, n) = (2, 2, 16);
    let rounds = rounds(30);
    let hub = LoopbackHub::<Park>::new(&[p; 2], max_message_len(n)).unwrap();
    // Contributors per round, over the 4 global senders.
    let mut rng = Rng(42);
    let schedule: Vec<u8> = (0..rounds).map(|_| rng.below(16) as u8).collect();
    let schedule = &schedule;
    let mut accs: Vec<Acc<Loopback<Park>, Park>> = (0..nodes)
        .map(|node| {
            let mut config = RoundConfig::new(p, n);
            config.first_sender = hub.first_sender(node);
            Accumulator::new(
                Reference,
                config,
                vec![FixedEncoder::new(TAU); p],
                hub.endpoint(node),
            )
            .unwrap()
        })
        .collect();
    let mut replicas = vec![vec![0.0f32; n]; nodes * p];
    std::thread::scope(|s| {
        let mut replica_slots = replicas.chunks_mut(p);
        for acc in accs.iter_mut() {
            let slots = replica_slots.next().unwrap();
            for (mut party, params) in acc.parties().zip(slots.iter_mut()) {
                s.spawn(move || {
                    let mut update = vec![0.0; n];
                    for round in 0..rounds {
                        let ticket = Ticket::new(round, p);
                        let mask = schedule[round as usize];
                        if (mask >> party.sender()) & 1 == 1 {
                            update_of(party.sender(), round, &mut update);
                            party.store_update(ticket, &update).unwrap();
                        } else {
                            party.abstain(ticket).unwrap();
                        }
                        let s = party.apply_update(params).unwrap();
                        assert_eq!(s.packets, mask.count_ones() as usize);
                        assert_eq!(s.local_packets + s.remote_packets, s.packets);
                    }
                });
            }
        }
    });
    let mut oracle = Oracle::new(4, n, TAU);
    let mut expected = vec![0.0f32; n];
    for (round, &mask) in schedule.iter().enumerate() {
        let ids: Vec<u32> = (0..4).filter(|i| (mask >> i) & 1 == 1).collect();
        Oracle::apply(&mut expected, &oracle.round(round as u64, &ids, Step::Sum));
    }
    for (i, r) in replicas.iter().enumerate() {
        assert_bits_eq(r, &expected, &format!("replica {i}"));
    }
}

/// Per-round statistics add up.
#[test]
fn summaries_report_bytes_and_times() {
    let (p, n) = (2, 64);
    let mut acc = acc(p, n);
    let summaries: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = acc
            .parties()
            .map(|mut party| {
                s.spawn(move || {
                    let mut params = vec![0.0; n];
                    let update = vec![0.2f32; n];
                    let published = party.store_update(Ticket::new(0, p), &update).unwrap();
                    let s = party.apply_update(&mut params).unwrap();
                    (published, s)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = summaries.iter().map(|(p, _)| p.bytes).sum();
    for (published, s) in &summaries {
        assert_eq!(s.bytes_published, total);
        assert_eq!(s.own_bytes, published.bytes);
        assert_eq!(s.bytes_received, 0);
        assert_eq!(s.remote_packets, 0);
        assert_eq!(s.encode_ns, published.encode_ns);
        if !cfg!(miri) {
            assert!(s.encode_ns > 0 && s.decode_ns > 0, "{s:?}");
        }
    }
    assert_eq!(summaries.iter().filter(|(_, s)| s.led).count(), 1);
}

/// `round_local`: one thread drives every party; the round's decoded sum and scale equal the
/// oracle's, for the sum and the mean, and the residuals follow the oracle's.
#[test]
fn round_local_yields_the_oracles_sum() {
    for step in [Step::Sum, Step::Mean] {
        let (p, n) = (3, 20);
        let mut config = RoundConfig::new(p, n);
        config.step = step;
        let mut acc: Acc =
            Accumulator::new(Reference, config, vec![FixedEncoder::new(TAU); p], Local).unwrap();
        let mut oracle = Oracle::new(p, n, TAU);
        let mut sum = vec![f32::NAN; n]; // garbage: round_local zeroes it
        let mut published = vec![Default::default(); p];
        for round in 0..rounds(30) {
            for i in 0..p {
                update_of(i as u32, round, acc.update_mut(i).1);
            }
            let s = acc.round_local(&mut sum, &mut published).unwrap();
            let (want, scale) = oracle.round(round, &[0, 1, 2], step);
            assert_bits_eq(&sum, &want, "decoded sum");
            assert_eq!(s.scale.to_bits(), scale.to_bits());
            assert_eq!((s.round, s.packets, s.members), (round, p, p));
            let bytes: usize = published.iter().map(|x| x.bytes).sum();
            assert_eq!(s.bytes_published, bytes);
            for (i, pb) in published.iter().enumerate().take(p) {
                assert_eq!(pb.round, round);
                assert_bits_eq(acc.residual(i), &oracle.residuals[i], "residual");
            }
        }
        assert_eq!(acc.next_round(), rounds(30));
    }
}

/// `round_local` and the threaded path agree: stepping with the yielded sum gives the
/// threaded replicas, bit for bit, and both paths can alternate on one accumulator.
#[test]
fn round_local_and_threads_agree() {
    let (p, n) = (2, 16);
    let mut local = acc(p, n);
    let mut threaded = acc(p, n);
    let mut from_local = vec![0.5f32; n];
    let mut replicas = vec![vec![0.5f32; n]; p];
    let mut sum = vec![0.0f32; n];
    let mut published = vec![Default::default(); p];
    for round in 0..rounds(10) {
        for i in 0..p {
            update_of(i as u32, round, local.update_mut(i).1);
        }
        let s = local.round_local(&mut sum, &mut published).unwrap();
        gradcast_core::backend::slices::sub_scaled(&mut from_local, &sum, s.scale);
        std::thread::scope(|sc| {
            for (mut party, params) in threaded.parties().zip(replicas.iter_mut()) {
                sc.spawn(move || {
                    let mut update = vec![0.0; n];
                    update_of(party.sender(), round, &mut update);
                    party.store_update(Ticket::new(round, p), &update).unwrap();
                    party.apply_update(params).unwrap();
                });
            }
        });
        assert_bits_eq(&from_local, &replicas[0], "round_local vs threads");
        assert_bits_eq(&replicas[1], &replicas[0], "threaded replicas");
    }
}

/// A transport failure in `round_local` credits every packet back: the residuals hold their
/// old mass plus the update, the accumulator is poisoned until a reset (the round's place in
/// the exchange is used), and the next round works.
#[test]
fn round_local_refunds_on_transport_failure() {
    let n = 12;
    let mut acc: Acc<Injector> = Accumulator::new(
        Reference,
        RoundConfig::new(2, n),
        vec![FixedEncoder::new(0.25); 2],
        Injector {
            mode: Inject::Fail,
            n,
        },
    )
    .unwrap();
    // Values f32 represents exactly, so the refund is exact.
    let update = [
        0.75f32, -1.25, 0.125, 0.5, -0.25, 0.0, 1.0, 2.0, -0.5, 0.0, 0.0, 0.375,
    ];
    for i in 0..2 {
        acc.update_mut(i).1.copy_from_slice(&update);
    }
    let mut sum = vec![0.0f32; n];
    let mut published = vec![Default::default(); 2];
    let e = acc.round_local(&mut sum, &mut published).unwrap_err();
    assert!(matches!(e, RoundError::Transport(_)), "{e}");
    for i in 0..2 {
        assert_bits_eq(acc.residual(i), &update, "refunded residual");
    }
    assert_eq!(acc.next_round(), 0);
    // The round's place in the exchange is used: poisoned until a reset, which finds
    // nothing left to refund (the residuals already hold everything).
    assert!(acc.poisoned().is_some());
    let e = acc.round_local(&mut sum, &mut published).unwrap_err();
    assert!(
        matches!(
            e.core(),
            Some(Error::Protocol(ProtocolError::Poisoned { .. }))
        ),
        "{e}"
    );
    let report = acc.reset(ResetOptions::default()).unwrap();
    assert_eq!(report.refunded_packets, 0);
    for i in 0..2 {
        assert_bits_eq(acc.residual(i), &update, "residual after the reset");
    }
    // Too few `Published` slots is misuse; a short `sum` is a size error.
    let e = acc.round_local(&mut sum, &mut published[..1]).unwrap_err();
    assert!(
        matches!(
            e.core(),
            Some(Error::Protocol(ProtocolError::RoundMisuse { .. }))
        ),
        "{e}"
    );
    let e = acc
        .round_local(&mut sum[..3].to_vec(), &mut published)
        .unwrap_err();
    assert!(
        matches!(
            e.core(),
            Some(Error::Codec(CodecError::TargetSizeMismatch { .. }))
        ),
        "{e}"
    );
    // A working transport continues, after the used round 0, with the refunded residuals.
    acc.transport().mode = Inject::Valid;
    for i in 0..2 {
        acc.update_mut(i).1.fill(0.0);
    }
    let s = acc.round_local(&mut sum, &mut published).unwrap();
    assert_eq!((s.round, s.packets, s.remote_packets), (1, 3, 1));
}

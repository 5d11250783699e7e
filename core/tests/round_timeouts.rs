//! Bounded waits: a party that waits longer than `RoundConfig::timeout` poisons the round
//! with a `TimedOut` record naming the round, where it waited and the parties that did not
//! arrive, and every party returns that record; a node whose round fails before its exchange
//! tells the other nodes (`Transport::fail_round`); a node that stops is named by the other
//! nodes' exchange timeout. Each test prints the observed times (docs/RELIABILITY.md).
//!
//! Timeouts here are 100-300 ms and the faults last 700 ms; the assertions allow 2 s of
//! scheduling slack on a loaded 2-core machine, and a watchdog aborts a hung test after 20 s.
//! Not run under Miri (wall-clock deadlines).
#![cfg(not(miri))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // test code is std

mod round_common;

use gradcast_core::backend::{ClipStats, Reference, VectorStats};
use gradcast_core::barrier::{
    Park, PartySet, Poison, PoisonCause, Relax, SpinThenYield, Timeout, WaitStage,
};
use gradcast_core::codec::{EncodeParams, EncodeSummary};
use gradcast_core::packet::FixedEncoder;
use gradcast_core::round::{
    Accumulator, Local, Loopback, LoopbackHub, RoundConfig, RoundError, Ticket, std_clock,
};
use gradcast_core::wire::{MessageView, max_message_len};
use gradcast_core::{Backend, ConfigError, Error, ErrorKind, ProtocolError};
use round_common::{update_of, with_watchdog};
use std::cell::Cell;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const N: usize = 16;
const TAU: f32 = 0.05;
/// The round timeout of these tests.
const T: Duration = Duration::from_millis(200);
/// How late the straggler is: well past `T`.
const LATE: Duration = Duration::from_millis(700);
/// Scheduling slack on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);
const WATCHDOG: Duration = Duration::from_secs(20);

/// One timing test at a time: the test harness runs this file's tests on parallel threads,
/// and on 2 cores the parties of one test (spinning ones included) could delay another
/// test's punctual party past its 200 ms timeout, which then names it as not arrived too.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs alone.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(p: usize, timeout: Duration) -> RoundConfig {
    RoundConfig {
        timeout: Some(timeout),
        ..RoundConfig::new(p, N)
    }
}

fn set(members: &[usize]) -> PartySet {
    let mut s = PartySet::EMPTY;
    for &m in members {
        s.insert(m);
    }
    s
}

/// The timed-out record every party must return.
fn expect_timeout(e: &RoundError<Error, Error>, round: u64, stage: WaitStage) -> Poison {
    match e.core() {
        Some(&Error::Protocol(ProtocolError::Poisoned {
            party,
            round: r,
            cause: cause @ PoisonCause::TimedOut {
                stage: s, after, ..
            },
        })) => {
            assert_eq!((r, s, after), (round, stage, T), "{e}");
            Poison {
                party,
                round,
                cause,
            }
        }
        _ => panic!("expected a timeout at {stage:?} in round {round}, got {e:?}"),
    }
}

fn missing(p: &Poison) -> PartySet {
    match p.cause {
        PoisonCause::TimedOut { missing, .. } => missing,
        _ => unreachable!(),
    }
}

/// What one party saw: the round it failed in, when it started waiting, when it returned.
type Failure = (u64, Instant, Instant, RoundError<Error, Error>);

/// P = 3; party 1 is `LATE` to publish in round 3. Parties 0 and 2 wait at the first
/// barrier, time out after `T`, and all three return the same record naming party 1; the
/// round is applied by nobody, a reset refunds the published packets, and the next rounds
/// work.
fn straggler_past_the_timeout<R: Relax>() {
    let what = format!("straggler ({})", std::any::type_name::<R>());
    let _serial = serial();
    with_watchdog(&what.clone(), WATCHDOG, || {
        let p = 3;
        let mut acc: Accumulator<Reference, FixedEncoder, Local, R> = Accumulator::new(
            Reference,
            config(p, T),
            vec![FixedEncoder::new(TAU); p],
            Local,
        )
        .unwrap();
        let mut replicas = vec![vec![0.5f32; N]; p];
        let failures: Vec<Failure> = std::thread::scope(|s| {
            let hs: Vec<_> = acc
                .parties()
                .zip(replicas.iter_mut())
                .map(|(mut party, params)| {
                    s.spawn(move || {
                        let mut update = vec![0.0f32; N];
                        for round in 0..5 {
                            update_of(party.sender(), round, &mut update);
                            if party.index() == 1 && round == 3 {
                                std::thread::sleep(LATE);
                            }
                            let t0 = Instant::now();
                            if let Err(e) = party.store_update(Ticket::new(round, p), &update) {
                                return (round, t0, Instant::now(), e);
                            }
                            let t0 = Instant::now();
                            if let Err(e) = party.apply_update(params) {
                                return (round, t0, Instant::now(), e);
                            }
                        }
                        panic!("party {} finished every round", party.index());
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = expect_timeout(&failures[0].3, 3, WaitStage::Publish);
        // Party 1 is named. Parties 0 and 2 arrive within microseconds and time out at about
        // the same instant: the first to poison may already see the other's arrival
        // withdrawn (a timed-out party withdraws it before poisoning), which the record
        // counts as one more party not arrived, unnamed. Never another named party.
        let named = missing(&first);
        assert!(
            named.iter().eq([1]) && (1..=2).contains(&named.len()),
            "{}",
            failures[0].3
        );
        let mut worst = Duration::ZERO;
        for (i, (round, started, at, e)) in failures.iter().enumerate() {
            assert_eq!(*round, 3);
            assert_eq!(expect_timeout(e, 3, WaitStage::Publish), first, "party {i}");
            if i != 1 {
                let waited = at.duration_since(*started);
                // The first to time out waited T; the other punctual party returns when it
                // sees the poison, T after the first one's arrival: less than T by the
                // difference of their arrivals, which scheduling on 2 cores can stretch.
                assert!(
                    waited >= T / 2 && waited < T + SLACK,
                    "party {i} waited {waited:?}"
                );
                worst = worst.max(waited);
            }
        }
        assert!(matches!(first.party, Some(0 | 2)), "{first:?}");
        println!(
            "{what}: timeout {T:?}, party 1 late by {LATE:?}: parties 0 and 2 returned the \
             timeout naming party 1 after at most {worst:?}; party 1 got it on arrival"
        );
        // Nobody applied round 3: the replicas agree, and a reset refunds what parties 0
        // and 2 published.
        assert!(replicas.iter().all(|r| r == &replicas[0]));
        let report = acc.reset(Default::default()).unwrap();
        assert_eq!(report.unfinished_round, Some(3));
        assert!(!report.partially_applied);
        assert_eq!(report.refunded_packets, 2);
        assert_eq!(report.poison, Some(first));
        // The next rounds work.
        std::thread::scope(|s| {
            for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
                s.spawn(move || {
                    let update = vec![0.1f32; N];
                    for round in 4..7 {
                        party.store_update(Ticket::new(round, p), &update).unwrap();
                        party.apply_update(params).unwrap();
                    }
                });
            }
        });
        assert!(replicas.iter().all(|r| r == &replicas[0]));
    });
}

#[test]
fn straggler_past_the_timeout_park() {
    straggler_past_the_timeout::<Park>();
}

#[test]
fn straggler_past_the_timeout_spin_then_yield() {
    straggler_past_the_timeout::<SpinThenYield>();
}

thread_local! {
    /// Makes `Slow::sub_scaled` sleep `LATE` on this thread.
    static SLOW_STEP: Cell<bool> = const { Cell::new(false) };
}

/// The reference backend, except that `sub_scaled` is `LATE` on threads that ask for it.
#[derive(Debug, Default, Clone, Copy)]
struct Slow;

impl Backend for Slow {
    type Buffer = Vec<f32>;
    type Error = Error;
    fn name(&self) -> &str {
        "slow"
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>, Error> {
        Reference.alloc(len)
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) -> Result<(), Error> {
        Reference.upload(src, dst)
    }
    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<(), Error> {
        Reference.download(src, dst)
    }
    fn fill(&self, buf: &mut Vec<f32>, value: f32) -> Result<(), Error> {
        Reference.fill(buf, value)
    }
    fn count(&self, x: &Vec<f32>, range: Range<usize>, tau: f32) -> Result<u64, Error> {
        Reference.count(x, range, tau)
    }
    fn encode(
        &self,
        residual: &mut Vec<f32>,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, Error> {
        Reference.encode(residual, params, out)
    }
    fn decode_add(&self, msg: &MessageView<'_>, target: &mut Vec<f32>) -> Result<(), Error> {
        Reference.decode_add(msg, target)
    }
    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<(), Error> {
        Reference.add_assign(dst, src)
    }
    fn sub_scaled(
        &self,
        params: &mut Vec<f32>,
        update: &Vec<f32>,
        scale: f32,
    ) -> Result<(), Error> {
        if SLOW_STEP.with(Cell::get) {
            std::thread::sleep(LATE);
        }
        Reference.sub_scaled(params, update, scale)
    }
    fn clip(
        &self,
        buf: &mut Vec<f32>,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, Error> {
        Reference.clip(buf, range, limit)
    }
    fn stats(&self, buf: &Vec<f32>, range: Range<usize>) -> Result<VectorStats, Error> {
        Reference.stats(buf, range)
    }
}

/// P = 3; party 1 steps its parameters `LATE` in round 2. Parties 0 and 2 wait at the
/// closing barrier, time out after `T` naming party 1, and party 1 gets the same record when
/// it arrives. Every replica stepped round 2, so a reset reports a partially applied round.
#[test]
fn slow_step_times_out_at_the_closing_barrier() {
    let _serial = serial();
    with_watchdog("closing barrier", WATCHDOG, || {
        let p = 3;
        let mut acc: Accumulator<Slow, FixedEncoder, Local, Park> =
            Accumulator::new(Slow, config(p, T), vec![FixedEncoder::new(TAU); p], Local).unwrap();
        let failures: Vec<Failure> = std::thread::scope(|s| {
            let hs: Vec<_> = acc
                .parties()
                .map(|mut party| {
                    s.spawn(move || {
                        let mut params = vec![0.5f32; N];
                        let mut update = vec![0.0f32; N];
                        for round in 0..4 {
                            update_of(party.sender(), round, &mut update);
                            SLOW_STEP.with(|f| f.set(party.index() == 1 && round == 2));
                            party.store_update(Ticket::new(round, p), &update).unwrap();
                            let t0 = Instant::now();
                            if let Err(e) = party.apply_update(&mut params) {
                                return (round, t0, Instant::now(), e);
                            }
                        }
                        panic!("party {} finished every round", party.index());
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = expect_timeout(&failures[0].3, 2, WaitStage::Apply);
        assert_eq!(missing(&first), set(&[1]));
        let mut worst = Duration::ZERO;
        for (i, (round, started, at, e)) in failures.iter().enumerate() {
            assert_eq!(*round, 2);
            assert_eq!(expect_timeout(e, 2, WaitStage::Apply), first, "party {i}");
            if i != 1 {
                // The wait at the closing barrier starts after the decode, within the call.
                let took = at.duration_since(*started);
                assert!(took >= T && took < T + SLACK, "party {i}: {took:?}");
                worst = worst.max(took);
            }
        }
        println!(
            "closing barrier: timeout {T:?}, party 1's step late by {LATE:?}: parties 0 and 2 \
             returned the timeout naming party 1 after at most {worst:?}"
        );
        let report = acc.reset(Default::default()).unwrap();
        assert_eq!(report.unfinished_round, Some(2));
        assert!(report.partially_applied);
    });
}

/// P = 2; party 1 runs round 0 alone and is `LATE` to apply it, while party 0 holds a
/// ticket for round 1 and waits at the gate: it times out naming round 0 and party 1.
#[test]
fn gate_timeout_names_the_round_still_running() {
    let _serial = serial();
    with_watchdog("gate", WATCHDOG, || {
        let p = 2;
        let mut acc: Accumulator<Reference, FixedEncoder, Local, Park> = Accumulator::new(
            Reference,
            config(p, T),
            vec![FixedEncoder::new(TAU); p],
            Local,
        )
        .unwrap();
        let mut parties: Vec<_> = acc.parties().collect();
        let mut p1 = parties.pop().unwrap();
        let mut p0 = parties.pop().unwrap();
        let (joined_tx, joined_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let late = s.spawn(move || {
                let mut params = vec![0.0f32; N];
                p1.abstain(Ticket::new(0, 1)).unwrap();
                joined_tx.send(()).unwrap();
                std::thread::sleep(LATE);
                p1.apply_update(&mut params).unwrap_err()
            });
            joined_rx.recv().unwrap();
            let t0 = Instant::now();
            let e = p0.abstain(Ticket::new(1, 1)).unwrap_err();
            let waited = t0.elapsed();
            let record = expect_timeout(&e, 0, WaitStage::Join);
            assert_eq!(record.party, Some(0));
            assert_eq!(missing(&record), set(&[1]));
            assert!(waited >= T && waited < T + SLACK, "{waited:?}");
            let e1 = late.join().unwrap();
            assert_eq!(expect_timeout(&e1, 0, WaitStage::Join), record);
            println!(
                "gate: timeout {T:?}: party 0 waited {waited:?} for round 0 (party 1) and \
                 returned the timeout; party 1 got it when it applied"
            );
        });
    });
}

/// A timeout needs a clock to measure it.
#[test]
fn a_timeout_without_a_clock_is_a_configuration_error() {
    let mut c = config(2, T);
    c.clock = None;
    let e = Accumulator::<Reference, FixedEncoder, Local, Park>::new(
        Reference,
        c,
        vec![FixedEncoder::new(TAU); 2],
        Local,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            RoundError::Round(Error::Config(ConfigError::Round { .. }))
        ),
        "{e}"
    );
    c.timeout = None;
    Accumulator::<Reference, FixedEncoder, Local, Park>::new(
        Reference,
        c,
        vec![FixedEncoder::new(TAU); 2],
        Local,
    )
    .unwrap();
}

type Node = Accumulator<Reference, FixedEncoder, Loopback<Park>, Park>;

fn nodes(hub: &std::sync::Arc<LoopbackHub<Park>>, p: usize, timeout: Duration) -> Vec<Node> {
    (0..hub.nodes())
        .map(|node| {
            let c = RoundConfig {
                first_sender: hub.first_sender(node),
                ..config(p, timeout)
            };
            Accumulator::new(
                Reference,
                c,
                vec![FixedEncoder::new(TAU); p],
                hub.endpoint(node),
            )
            .unwrap()
        })
        .collect()
}

/// What a party of a node saw: its node, its index, the error and when.
type NodeFailure = (usize, usize, Instant, RoundError<Error, Error>);

/// Two nodes of two parties over the loopback; in round 3, node 1's party 1 fails before
/// joining (its work failed). Node 1 tells node 0 (`fail_round`), and node 0's exchange
/// fails at once with an error naming node 1 and the cause, long before any timeout.
#[test]
fn a_node_whose_round_fails_tells_the_other_nodes() {
    let _serial = serial();
    with_watchdog("node failure", WATCHDOG, || {
        let p = 2;
        let long = Duration::from_secs(30);
        let hub = LoopbackHub::<Park>::with_timeout(
            &[p; 2],
            max_message_len(N),
            Some(Timeout::new(long, std_clock)),
        )
        .unwrap();
        let mut accs = nodes(&hub, p, long);
        let failed_at = std::sync::Mutex::new(None);
        let failed_at = &failed_at;
        let results: Vec<NodeFailure> = std::thread::scope(|s| {
            let mut hs = Vec::new();
            for (node, acc) in accs.iter_mut().enumerate() {
                for mut party in acc.parties() {
                    hs.push(s.spawn(move || {
                        let i = party.index();
                        let mut params = vec![0.0f32; N];
                        let mut update = vec![0.0f32; N];
                        for round in 0..10 {
                            update_of(party.sender(), round, &mut update);
                            if node == 1 && i == 1 && round == 3 {
                                std::thread::sleep(Duration::from_millis(50));
                                *failed_at.lock().unwrap() = Some(Instant::now());
                                party.abort(PoisonCause::Failed(ErrorKind::Other));
                                return None;
                            }
                            let r = party
                                .store_update(Ticket::new(round, p), &update)
                                .and_then(|_| party.apply_update(&mut params));
                            if let Err(e) = r {
                                assert_eq!(round, 3, "node {node} party {i}: {e}");
                                return Some((node, i, Instant::now(), e));
                            }
                        }
                        panic!("node {node} party {i} finished every round");
                    }));
                }
            }
            hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        let failed_at = failed_at.lock().unwrap().unwrap();
        assert_eq!(results.len(), 3);
        let mut named = false;
        let mut worst = Duration::ZERO;
        for (node, i, at, e) in &results {
            worst = worst.max(at.saturating_duration_since(failed_at));
            if *node == 0 {
                if let RoundError::Transport(t) = e {
                    // The leader of node 0: node 1 failed, and why.
                    assert_eq!(
                        *t,
                        Error::Protocol(ProtocolError::Poisoned {
                            party: Some(1),
                            round: 3,
                            cause: PoisonCause::Failed(ErrorKind::Other)
                        }),
                        "node 0 party {i}"
                    );
                    named = true;
                } else {
                    assert!(
                        matches!(
                            e.core(),
                            Some(Error::Protocol(ProtocolError::Poisoned { round: 3, .. }))
                        ),
                        "{e}"
                    );
                }
            } else {
                assert_eq!(
                    e.core(),
                    Some(&Error::Protocol(ProtocolError::Poisoned {
                        party: Some(1),
                        round: 3,
                        cause: PoisonCause::Failed(ErrorKind::Other)
                    }))
                );
            }
        }
        assert!(named, "node 0's leader did not name node 1: {results:?}");
        assert!(worst < SLACK, "an error took {worst:?}");
        println!("node failure: every party of both nodes returned an error within {worst:?}");
    });
}

/// Two nodes; node 1 stops taking part after round 2 (its parties return, its accumulator
/// stays alive). Node 0's parties all arrive at the first barrier of round 3, so they wait
/// for the leader's exchange without their own deadline (100 ms); the exchange gives up
/// after the hub's 300 ms, naming node 1.
#[test]
fn a_node_that_stops_is_named_by_the_exchange_timeout() {
    let _serial = serial();
    with_watchdog("node stops", WATCHDOG, || {
        let p = 2;
        let hub_timeout = Duration::from_millis(300);
        let hub = LoopbackHub::<Park>::with_timeout(
            &[p; 2],
            max_message_len(N),
            Some(Timeout::new(hub_timeout, std_clock)),
        )
        .unwrap();
        let mut accs = nodes(&hub, p, Duration::from_millis(100));
        let results: Vec<NodeFailure> = std::thread::scope(|s| {
            let mut hs = Vec::new();
            for (node, acc) in accs.iter_mut().enumerate() {
                for mut party in acc.parties() {
                    hs.push(s.spawn(move || {
                        let i = party.index();
                        let mut params = vec![0.0f32; N];
                        let mut update = vec![0.0f32; N];
                        for round in 0..10 {
                            if node == 1 && round == 3 {
                                return None;
                            }
                            update_of(party.sender(), round, &mut update);
                            party.store_update(Ticket::new(round, p), &update).unwrap();
                            let t0 = Instant::now();
                            if let Err(e) = party.apply_update(&mut params) {
                                assert_eq!(round, 3, "node {node} party {i}: {e}");
                                return Some((node, i, t0, e));
                            }
                        }
                        panic!("node {node} party {i} finished every round");
                    }));
                }
            }
            hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.len(), 2);
        let mut leader = None;
        for (_, i, t0, e) in &results {
            match e {
                RoundError::Transport(Error::Protocol(ProtocolError::Poisoned {
                    party: Some(0),
                    round: 3,
                    cause:
                        PoisonCause::TimedOut {
                            stage: WaitStage::Exchange,
                            missing,
                            after,
                        },
                })) => {
                    assert_eq!((*missing, *after), (set(&[1]), hub_timeout));
                    let waited = t0.elapsed();
                    assert!(waited >= hub_timeout && waited < hub_timeout + SLACK);
                    leader = Some((*i, waited));
                }
                // The other party waited for the exchange, not for its own deadline.
                other => assert!(
                    matches!(
                        other.core(),
                        Some(Error::Protocol(ProtocolError::Poisoned {
                            round: 3,
                            cause: PoisonCause::Failed(_),
                            ..
                        }))
                    ),
                    "party {i}: {other}"
                ),
            }
        }
        let (i, waited) = leader.expect("node 0's leader reported the exchange timeout");
        println!(
            "node stops: node 0's leader (party {i}) returned the exchange timeout naming node 1 \
             after {waited:?} (hub timeout {hub_timeout:?}); its other party waited for it"
        );
    });
}

//! Faults: a worker that returns an error, and one that panics, in the middle of a round.
//! Every other worker returns an error naming the failure within 1 s (the observed latency
//! is printed), and no thread hangs (a watchdog aborts the test binary after 10 s).
//!
//! Not run under Miri (wall-clock deadlines and thousands of rounds); Miri runs
//! `round_basic` and the queue and barrier unit tests instead.
#![cfg(not(miri))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // test code is std

mod round_common;

use gradcast_core::backend::{ClipStats, Reference, VectorStats};
use gradcast_core::barrier::{Park, PoisonCause, Relax, SpinThenYield};
use gradcast_core::codec::{EncodeParams, EncodeSummary};
use gradcast_core::packet::FixedEncoder;
use gradcast_core::round::workers::{self, Contribution, RunError, WorkerError};
use gradcast_core::round::{Accumulator, Local, RoundConfig, RoundError, Ticket};
use gradcast_core::wire::MessageView;
use gradcast_core::{Backend, Error, ErrorKind};
use gradcast_core::{CodecError, ProtocolError};
use round_common::{update_of, with_watchdog};
use std::cell::Cell;
use std::ops::{ControlFlow, Range};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const P: usize = 4;
const N: usize = 16;
const FAIL_ROUND: u64 = 20;
const FAILING: usize = 2;
/// How long the failing worker lingers before failing, so the others are already waiting.
const LINGER: Duration = Duration::from_millis(50);
const PROMPT: Duration = Duration::from_secs(1);
const WATCHDOG: Duration = Duration::from_secs(10);

fn report_latencies(what: &str, failed_at: Instant, others: &[(usize, Instant)]) {
    let mut worst = Duration::ZERO;
    for &(party, at) in others {
        let latency = at.saturating_duration_since(failed_at);
        worst = worst.max(latency);
        assert!(latency < PROMPT, "{what}: worker {party} took {latency:?}");
    }
    println!(
        "{what}: {} other workers returned an error; worst latency {worst:?}",
        others.len()
    );
}

/// With the helper: worker FAILING's closure fails (or panics) in round FAIL_ROUND.
fn helper_fault<R: Relax>(panic: bool) {
    let what = if panic {
        "helper, panic"
    } else {
        "helper, error"
    };
    with_watchdog(what, WATCHDOG, || {
        let mut acc: Accumulator<Reference, FixedEncoder, Local, R> = Accumulator::new(
            Reference,
            RoundConfig::new(P, N),
            vec![FixedEncoder::new(0.05); P],
            Local,
        )
        .unwrap();
        let mut replicas = vec![vec![0.0f32; N]; P];
        let failed_at = Mutex::new(None);
        let result = workers::run(
            &mut acc,
            &mut replicas,
            100,
            |w| {
                if w.party == FAILING && w.round == FAIL_ROUND {
                    std::thread::sleep(LINGER);
                    *failed_at.lock().unwrap() = Some(Instant::now());
                    if panic {
                        panic!("worker {} gives up", w.party);
                    }
                    return Err(format!("worker {} has no data", w.party));
                }
                update_of(w.party as u32, w.round, w.update);
                Ok(Contribution::Update)
            },
            |_| ControlFlow::Continue(()),
        );
        let Err(RunError::Failed {
            round,
            completed,
            failures,
        }) = result
        else {
            panic!("{what}: the run did not fail: {result:?}");
        };
        assert_eq!((round, completed), (FAIL_ROUND, FAIL_ROUND));
        assert_eq!(failures.len(), P, "every worker reports");
        let origin = &failures[0];
        assert_eq!(origin.party, FAILING);
        match (&origin.error, panic) {
            (WorkerError::Panicked(m), true) => assert!(m.contains("gives up"), "{m}"),
            (WorkerError::Work(m), false) => assert!(m.contains("no data"), "{m}"),
            (e, _) => panic!("{what}: unexpected origin {e:?}"),
        }
        let cause = if panic {
            PoisonCause::Panicked
        } else {
            PoisonCause::Failed(ErrorKind::Other)
        };
        let mut others = Vec::new();
        for f in &failures[1..] {
            match &f.error {
                WorkerError::Round(RoundError::Round(Error::Protocol(
                    ProtocolError::Poisoned {
                        party,
                        round,
                        cause: c,
                    },
                ))) => {
                    assert_eq!(*party, Some(FAILING as u32));
                    assert_eq!(*round, FAIL_ROUND);
                    assert_eq!(*c, cause);
                }
                e => panic!("{what}: worker {} got {e:?}", f.party),
            }
            others.push((f.party, f.at));
        }
        let failed_at = failed_at.lock().unwrap().unwrap();
        report_latencies(
            &format!("{what} ({})", std::any::type_name::<R>()),
            failed_at,
            &others,
        );
        // The replicas agree up to the failed round.
        assert!(replicas.iter().all(|r| r == &replicas[0]));
    });
}

#[test]
fn helper_worker_error_park() {
    helper_fault::<Park>(false);
}

#[test]
fn helper_worker_panic_park() {
    helper_fault::<Park>(true);
}

#[test]
fn helper_worker_error_spin_then_yield() {
    helper_fault::<SpinThenYield>(false);
}

#[test]
fn helper_worker_panic_spin_then_yield() {
    helper_fault::<SpinThenYield>(true);
}

/// Where the failing party fails, with raw party handles.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Its work fails before it joins the round: it aborts (the others wait at barrier A).
    ErrorBeforeJoin,
    /// Its thread panics before it joins: the handle's drop poisons.
    PanicBeforeJoin,
    /// It panics after publishing, before applying: the handle's drop poisons.
    PanicMidRound,
    /// It drops its handle after publishing (returns early): Abandoned.
    AbandonMidRound,
    /// Its backend fails after barrier A (the others wait at barrier B).
    BackendAfterBarrierA,
}

thread_local! {
    /// Makes `Flaky::sub_scaled` fail on this thread.
    static FAIL_STEP: Cell<bool> = const { Cell::new(false) };
}

/// The reference backend, except that `sub_scaled` fails on threads that ask for it.
#[derive(Debug, Default, Clone, Copy)]
struct Flaky;

impl Backend for Flaky {
    type Buffer = Vec<f32>;
    type Error = Error;
    fn name(&self) -> &str {
        "flaky"
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
        if FAIL_STEP.with(Cell::get) {
            return Err(Error::Codec(CodecError::NonFinite {
                index: 0,
                bits: f32::NAN.to_bits(),
            }));
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

/// A raw worker's result: done, or the instant and error it returned.
type Outcome = Result<(), (Instant, RoundError<Error, Error>)>;

/// Raw party handles on scoped threads; FAILING fails as `fault` says in FAIL_ROUND.
fn raw_fault<R: Relax>(fault: Fault) {
    let what = format!("raw, {fault:?} ({})", std::any::type_name::<R>());
    with_watchdog(&what.clone(), WATCHDOG, || {
        let mut acc: Accumulator<Flaky, FixedEncoder, Local, R> = Accumulator::new(
            Flaky,
            RoundConfig::new(P, N),
            vec![FixedEncoder::new(0.05); P],
            Local,
        )
        .unwrap();
        let failed_at = Mutex::new(None);
        let failed_at = &failed_at;
        let results: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = acc
                .parties()
                .map(|mut party| {
                    s.spawn(move || {
                        let mut params = vec![0.0f32; N];
                        let mut update = vec![0.0f32; N];
                        let me = party.index();
                        for round in 0..100 {
                            let ticket = Ticket::new(round, P);
                            update_of(me as u32, round, &mut update);
                            let failing = me == FAILING && round == FAIL_ROUND;
                            if failing {
                                std::thread::sleep(LINGER);
                                match fault {
                                    Fault::ErrorBeforeJoin => {
                                        *failed_at.lock().unwrap() = Some(Instant::now());
                                        party.abort(PoisonCause::Failed(ErrorKind::Other));
                                        return Ok(());
                                    }
                                    Fault::PanicBeforeJoin => {
                                        *failed_at.lock().unwrap() = Some(Instant::now());
                                        panic!("injected panic before joining");
                                    }
                                    _ => {}
                                }
                            }
                            let stored = party.store_update(ticket, &update);
                            if failing {
                                stored.unwrap();
                                match fault {
                                    Fault::PanicMidRound => {
                                        *failed_at.lock().unwrap() = Some(Instant::now());
                                        panic!("injected panic mid-round");
                                    }
                                    Fault::AbandonMidRound => {
                                        *failed_at.lock().unwrap() = Some(Instant::now());
                                        return Ok(()); // drops the handle mid-round
                                    }
                                    Fault::BackendAfterBarrierA => {
                                        FAIL_STEP.with(|f| f.set(true));
                                        *failed_at.lock().unwrap() = Some(Instant::now());
                                    }
                                    _ => unreachable!(),
                                }
                            } else if let Err(e) = stored {
                                return Err((Instant::now(), e));
                            }
                            if let Err(e) = party.apply_update(&mut params) {
                                return Err((Instant::now(), e));
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| match h.join() {
                    Ok(r) => r,
                    Err(_) => {
                        assert_eq!(i, FAILING, "only the failing worker panics");
                        Ok(())
                    }
                })
                .collect()
        });
        let failed_at = failed_at.lock().unwrap().expect("the fault happened");
        let cause = match fault {
            Fault::ErrorBeforeJoin => PoisonCause::Failed(ErrorKind::Other),
            Fault::PanicBeforeJoin | Fault::PanicMidRound => PoisonCause::Panicked,
            Fault::AbandonMidRound => PoisonCause::Abandoned,
            Fault::BackendAfterBarrierA => PoisonCause::Failed(ErrorKind::NonFinite),
        };
        let mut others = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            if i == FAILING {
                if fault == Fault::BackendAfterBarrierA {
                    let (_, e) = r.unwrap_err();
                    assert!(
                        matches!(
                            e,
                            RoundError::Backend(Error::Codec(CodecError::NonFinite { .. }))
                        ),
                        "{e:?}"
                    );
                }
                continue;
            }
            let (at, e) = r.unwrap_err();
            assert_eq!(
                e.core(),
                Some(&Error::Protocol(ProtocolError::Poisoned {
                    party: Some(FAILING as u32),
                    round: FAIL_ROUND,
                    cause
                })),
                "{what}: worker {i}"
            );
            others.push((i, at));
        }
        report_latencies(&what, failed_at, &others);
        let poison = acc.poisoned().unwrap();
        assert_eq!(poison.party, Some(FAILING as u32));
        // The accumulator recovers after a reset.
        let report = acc.reset(Default::default()).unwrap();
        assert_eq!(report.unfinished_round, Some(FAIL_ROUND));
        assert!(acc.poisoned().is_none());
    });
}

#[test]
fn raw_error_before_join() {
    raw_fault::<Park>(Fault::ErrorBeforeJoin);
    raw_fault::<SpinThenYield>(Fault::ErrorBeforeJoin);
}

#[test]
fn raw_panic_before_join() {
    raw_fault::<Park>(Fault::PanicBeforeJoin);
    raw_fault::<SpinThenYield>(Fault::PanicBeforeJoin);
}

#[test]
fn raw_panic_mid_round() {
    raw_fault::<Park>(Fault::PanicMidRound);
    raw_fault::<SpinThenYield>(Fault::PanicMidRound);
}

#[test]
fn raw_abandon_mid_round() {
    raw_fault::<Park>(Fault::AbandonMidRound);
    raw_fault::<SpinThenYield>(Fault::AbandonMidRound);
}

#[test]
fn raw_backend_failure_after_barrier_a() {
    raw_fault::<Park>(Fault::BackendAfterBarrierA);
    raw_fault::<SpinThenYield>(Fault::BackendAfterBarrierA);
}

/// Parties waiting at the gate for a later round are released by the poison too.
#[test]
fn poison_reaches_parties_waiting_for_a_later_round() {
    with_watchdog("gate", WATCHDOG, || {
        let mut acc: Accumulator<Reference, FixedEncoder, Local, Park> = Accumulator::new(
            Reference,
            RoundConfig::new(3, N),
            vec![FixedEncoder::new(0.05); 3],
            Local,
        )
        .unwrap();
        let mut ps: Vec<_> = acc.parties().collect();
        let mut p2 = ps.pop().unwrap();
        let mut p1 = ps.pop().unwrap();
        let mut p0 = ps.pop().unwrap();
        std::thread::scope(|s| {
            // Parties 1 and 2 hold tickets of round 5; round 0 is not over.
            let waiters: Vec<_> = [&mut p1, &mut p2]
                .into_iter()
                .map(|p| s.spawn(move || (p.abstain(Ticket::new(5, 2)), Instant::now())))
                .collect();
            std::thread::sleep(LINGER);
            p0.abstain(Ticket::new(0, 1)).unwrap();
            let failed_at = Instant::now();
            p0.abort(PoisonCause::Failed(ErrorKind::Device));
            let mut others = Vec::new();
            for (i, w) in waiters.into_iter().enumerate() {
                let (r, at) = w.join().unwrap();
                assert!(matches!(
                    r.unwrap_err().core(),
                    Some(Error::Protocol(ProtocolError::Poisoned {
                        party: Some(0),
                        round: 0,
                        ..
                    }))
                ));
                others.push((i + 1, at));
            }
            report_latencies("waiting at the gate", failed_at, &others);
        });
    });
}

//! [`run`]: P worker threads over a closure that computes each worker's update, the role of
//! DL4J's `ParallelWrapper` (`std`).
//!
//! Each worker owns one replica of the parameters. In every round, each worker calls the
//! closure with its replica and an update buffer to fill; the closure returns
//! [`Contribution::Update`] (the buffer holds the update) or [`Contribution::Abstain`] (no
//! data this round, say at the end of an epoch). The worker then stores its update (or
//! abstains) and applies the round. Every worker is a member of every round, so the
//! replicas stay bit-identical. Rounds run in lockstep: the calling thread dispatches a
//! round, collects every worker's report, passes a [`RoundReport`] to the `on_round`
//! callback, and goes on until `rounds` rounds are done or the callback breaks.
//!
//! When a worker's closure fails or panics, the worker poisons the round, every other
//! worker returns [`crate::error::ProtocolError::Poisoned`] naming it, and [`run`] returns
//! [`RunError::Failed`] with every worker's failure, the original one first, each with the
//! instant it was observed.
//!
//! # Example
//!
//! ```
//! use std::ops::ControlFlow;
//! use gradcast_core::backend::Reference;
//! use gradcast_core::barrier::Park;
//! use gradcast_core::packet::FixedEncoder;
//! use gradcast_core::round::workers::{self, Contribution};
//! use gradcast_core::round::{Accumulator, Local, RoundConfig};
//!
//! let (p, n) = (4, 16);
//! let mut acc: Accumulator<Reference, FixedEncoder, Local, Park> =
//!     Accumulator::new(Reference, RoundConfig::new(p, n), vec![FixedEncoder::new(0.01); p], Local)
//!         .unwrap();
//! let mut replicas = vec![vec![1.0f32; n]; p];
//! let summary = workers::run(
//!     &mut acc,
//!     &mut replicas,
//!     10,
//!     |w| {
//!         // The gradient of 0.5 * |params|^2 times a learning rate, on this worker's replica.
//!         for (u, x) in w.update.iter_mut().zip(w.params.iter()) {
//!             *u = 0.1 * x;
//!         }
//!         Ok::<_, String>(Contribution::Update)
//!     },
//!     |report| {
//!         assert_eq!(report.contributors, 4);
//!         ControlFlow::Continue(())
//!     },
//! )
//! .unwrap();
//! assert_eq!(summary.rounds, 10);
//! assert!(replicas.iter().all(|r| r == &replicas[0]));
//! assert!(replicas[0][0] < 1.0);
//! ```

use super::{Accumulator, RoundError, RoundSummary, Ticket};
use crate::backend::Backend;
use crate::barrier::{PoisonCause, Relax};
use crate::error::{Classify, Error, ErrorKind};
use crate::error::{ConfigError, ProtocolError};
use crate::packet::PartyEncoder;
use crate::round::Transport;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::ControlFlow;
use core::panic::AssertUnwindSafe;
use std::panic::catch_unwind;
use std::sync::mpsc;
use std::time::Instant;

/// What the closure gets for one worker and one round.
#[derive(Debug)]
pub struct Work<'a, B: Backend> {
    /// The worker's party index, `0..P`.
    pub party: usize,
    /// The round's number.
    pub round: u64,
    /// The round's index within this [`run`] call (0, 1, ...).
    pub step: u64,
    /// The worker's replica of the parameters (as of the end of the previous round).
    pub params: &'a B::Buffer,
    /// The buffer to write this round's update into (its previous content is stale).
    pub update: &'a mut B::Buffer,
    /// The backend.
    pub backend: &'a B,
}

/// What a worker does with its round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contribution {
    /// The update buffer holds the update: store it.
    Update,
    /// No update this round: take part without contributing (the replica is still stepped).
    Abstain,
}

/// One round as the calling thread saw it: totals over the node, and the slowest worker's
/// times (the round's critical path).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundReport {
    /// The round's number.
    pub round: u64,
    /// Workers that contributed.
    pub contributors: usize,
    /// Packets decoded (local and remote).
    pub packets: usize,
    /// Bytes this node published.
    pub bytes_published: u64,
    /// Bytes received from other nodes.
    pub bytes_received: u64,
    /// The slowest worker's closure, in nanoseconds.
    pub work_ns: u64,
    /// The slowest worker's encode.
    pub encode_ns: u64,
    /// The slowest worker's exchange (waiting for peers, transport, validation).
    pub exchange_ns: u64,
    /// The transport call alone.
    pub transport_ns: u64,
    /// The slowest worker's decode and step.
    pub decode_ns: u64,
    /// Wall time of the round, dispatch to last report.
    pub wall_ns: u64,
}

impl RoundReport {
    fn absorb(&mut self, s: &RoundSummary, work_ns: u64) {
        self.round = s.round;
        self.contributors += s.contributed as usize;
        self.packets = s.packets;
        self.bytes_published = s.bytes_published as u64;
        self.bytes_received = s.bytes_received as u64;
        self.work_ns = self.work_ns.max(work_ns);
        self.encode_ns = self.encode_ns.max(s.encode_ns);
        self.exchange_ns = self.exchange_ns.max(s.exchange_ns);
        self.transport_ns = self.transport_ns.max(s.transport_ns);
        self.decode_ns = self.decode_ns.max(s.decode_ns);
    }
}

/// Totals of a [`run`]: sums over its rounds of the [`RoundReport`] fields.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunSummary {
    /// Rounds completed.
    pub rounds: u64,
    /// The number the next round will have.
    pub next_round: u64,
    /// Bytes published by this node.
    pub bytes_published: u64,
    /// Bytes received from other nodes.
    pub bytes_received: u64,
    /// Sum of the rounds' slowest closures, nanoseconds.
    pub work_ns: u64,
    /// Sum of the rounds' slowest encodes.
    pub encode_ns: u64,
    /// Sum of the rounds' slowest exchanges.
    pub exchange_ns: u64,
    /// Sum of the transport calls.
    pub transport_ns: u64,
    /// Sum of the rounds' slowest decodes.
    pub decode_ns: u64,
    /// Wall time of all rounds.
    pub wall_ns: u64,
}

impl RunSummary {
    fn add(&mut self, r: &RoundReport) {
        self.rounds += 1;
        self.next_round = r.round + 1;
        self.bytes_published += r.bytes_published;
        self.bytes_received += r.bytes_received;
        self.work_ns += r.work_ns;
        self.encode_ns += r.encode_ns;
        self.exchange_ns += r.exchange_ns;
        self.transport_ns += r.transport_ns;
        self.decode_ns += r.decode_ns;
        self.wall_ns += r.wall_ns;
    }
}

/// How one worker failed.
#[derive(Debug)]
pub enum WorkerError<X, BE, TE> {
    /// The closure returned this error.
    Work(X),
    /// The worker panicked, with this message.
    Panicked(String),
    /// The round protocol failed (for every worker but the first to fail: poisoned).
    Round(RoundError<BE, TE>),
}

impl<X, BE, TE> WorkerError<X, BE, TE> {
    /// Whether this is the poison another worker's failure left (not an original failure).
    pub fn is_poisoned(&self) -> bool {
        matches!(
            self,
            WorkerError::Round(RoundError::Round(Error::Protocol(
                ProtocolError::Poisoned { .. }
            )))
        )
    }
}

impl<X: fmt::Display, BE: fmt::Display, TE: fmt::Display> fmt::Display for WorkerError<X, BE, TE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::Work(e) => write!(f, "work failed: {e}"),
            WorkerError::Panicked(m) => write!(f, "panicked: {m}"),
            WorkerError::Round(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// One worker's failure.
#[derive(Debug)]
pub struct WorkerFailure<X, BE, TE> {
    /// The worker's party index.
    pub party: usize,
    /// The round.
    pub round: u64,
    /// What went wrong.
    pub error: WorkerError<X, BE, TE>,
    /// When the worker observed it.
    pub at: Instant,
}

/// Why [`run`] stopped early.
#[derive(Debug)]
pub enum RunError<X, BE, TE> {
    /// The run could not start: a replica count other than P, a buffer allocation failed,
    /// or the accumulator is poisoned.
    Setup(RoundError<BE, TE>),
    /// A round failed.
    Failed {
        /// The failed round.
        round: u64,
        /// Rounds completed before it.
        completed: u64,
        /// Every worker's failure: original failures first, then the poisoned ones, each
        /// group by party.
        failures: Vec<WorkerFailure<X, BE, TE>>,
    },
}

impl<X: fmt::Display, BE: fmt::Display, TE: fmt::Display> fmt::Display for RunError<X, BE, TE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Setup(e) => write!(f, "cannot start the workers: {e}"),
            RunError::Failed {
                round, failures, ..
            } => {
                write!(f, "round {round} failed")?;
                if let Some(first) = failures.first() {
                    write!(f, ": worker {} {}", first.party, first.error)?;
                }
                Ok(())
            }
        }
    }
}

impl<X, BE, TE> core::error::Error for RunError<X, BE, TE>
where
    X: fmt::Debug + fmt::Display,
    BE: fmt::Debug + fmt::Display,
    TE: fmt::Debug + fmt::Display,
{
}

type Report<X, BE, TE> = Result<(RoundSummary, u64), WorkerFailure<X, BE, TE>>;

/// Runs `rounds` rounds on P worker threads; see the [module docs](self).
///
/// `replicas[i]` is worker i's copy of the parameters (P of them, usually equal at the
/// start). `work` computes one worker's update for one round; `on_round` sees each round's
/// report on the calling thread and may stop the run early. Round numbers continue from
/// [`Accumulator::next_round`], so successive calls (an epoch each, say) continue the
/// sequence.
///
/// # Errors
/// [`RunError::Setup`] before any round; [`RunError::Failed`] when a worker fails.
pub fn run<B, E, T, R, X, W, O>(
    acc: &mut Accumulator<B, E, T, R>,
    replicas: &mut [B::Buffer],
    rounds: u64,
    work: W,
    mut on_round: O,
) -> Result<RunSummary, RunError<X, B::Error, T::Error>>
where
    B: Backend + Sync,
    B::Buffer: Send,
    B::Error: Send,
    E: PartyEncoder<B> + Send,
    T: Transport + Send,
    T::Error: Send,
    R: Relax,
    X: Send,
    W: Fn(&mut Work<'_, B>) -> Result<Contribution, X> + Sync,
    O: FnMut(&RoundReport) -> ControlFlow<()>,
{
    let p = acc.config().parties;
    let n = acc.config().n;
    if replicas.len() != p {
        return Err(RunError::Setup(RoundError::Round(
            ConfigError::Round {
                reason: "run needs exactly one replica per party",
            }
            .into(),
        )));
    }
    if let Some(poison) = acc.poisoned() {
        return Err(RunError::Setup(RoundError::Round(poison.to_error())));
    }
    let mut updates = Vec::with_capacity(p);
    for _ in 0..p {
        updates.push(
            acc.backend()
                .alloc(n)
                .map_err(|e| RunError::Setup(RoundError::Backend(e)))?,
        );
    }
    let first_round = acc.next_round();
    let mut summary = RunSummary {
        next_round: first_round,
        ..RunSummary::default()
    };
    let work = &work;
    std::thread::scope(|s| {
        let (report_tx, report_rx) = mpsc::channel::<(usize, Report<X, B::Error, T::Error>)>();
        let mut dispatch = Vec::with_capacity(p);
        for ((mut party, replica), mut update) in
            acc.parties().zip(replicas.iter_mut()).zip(updates)
        {
            let (tx, rx) = mpsc::channel::<(u64, u64)>();
            dispatch.push(tx);
            let report_tx = report_tx.clone();
            s.spawn(move || {
                let i = party.index();
                for (round, step) in rx.iter() {
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        let t0 = Instant::now();
                        let backend = party.backend();
                        let contribution = work(&mut Work {
                            party: i,
                            round,
                            step,
                            params: &*replica,
                            update: &mut update,
                            backend,
                        })
                        .map_err(WorkerError::Work)?;
                        let work_ns = t0.elapsed().as_nanos() as u64;
                        let ticket = Ticket::new(round, p);
                        match contribution {
                            Contribution::Update => party.store_update(ticket, &update).map(drop),
                            Contribution::Abstain => party.abstain(ticket),
                        }
                        .map_err(WorkerError::Round)?;
                        let summary = party.apply_update(replica).map_err(WorkerError::Round)?;
                        Ok((summary, work_ns))
                    }));
                    let report = match outcome {
                        Ok(Ok(done)) => Ok(done),
                        Ok(Err(error)) => {
                            if let WorkerError::Work(_) = error {
                                party.abort(PoisonCause::Failed(ErrorKind::Other));
                            }
                            Err(error)
                        }
                        Err(payload) => {
                            party.abort(PoisonCause::Panicked);
                            Err(WorkerError::Panicked(panic_message(payload)))
                        }
                    };
                    let report = report.map_err(|error| WorkerFailure {
                        party: i,
                        round,
                        error,
                        at: Instant::now(),
                    });
                    let failed = report.is_err();
                    if report_tx.send((i, report)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(report_tx);

        for step in 0..rounds {
            let round = first_round + step;
            let t0 = Instant::now();
            for tx in &dispatch {
                // A worker that already left has reported its failure; nothing to do here.
                let _ = tx.send((round, step));
            }
            let mut report = RoundReport {
                round,
                ..RoundReport::default()
            };
            let mut failures = Vec::new();
            for _ in 0..p {
                match report_rx.recv() {
                    Ok((_, Ok((s, work_ns)))) => report.absorb(&s, work_ns),
                    Ok((_, Err(f))) => failures.push(f),
                    Err(_) => break,
                }
            }
            report.wall_ns = t0.elapsed().as_nanos() as u64;
            if !failures.is_empty() {
                failures.sort_by_key(|f| (f.error.is_poisoned(), f.party));
                return Err(RunError::Failed {
                    round,
                    completed: summary.rounds,
                    failures,
                });
            }
            summary.add(&report);
            if on_round(&report).is_break() {
                break;
            }
        }
        Ok(summary)
    })
}

fn panic_message(payload: Box<dyn core::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        String::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(non-string panic payload)")
    }
}

/// Classifies a [`WorkerError`] (the closure's errors count as [`ErrorKind::Other`]).
impl<X, BE: Classify, TE: Classify> Classify for WorkerError<X, BE, TE> {
    fn kind(&self) -> ErrorKind {
        match self {
            WorkerError::Work(_) | WorkerError::Panicked(_) => ErrorKind::Other,
            WorkerError::Round(e) => e.kind(),
        }
    }
}

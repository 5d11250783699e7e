//! A reusable barrier as an explicit state machine: a generation counter and an arrival
//! count, packed into one atomic word, for k <= P participants per generation, with a relax
//! strategy as a type parameter and poisoning.
//!
//! # The state machine
//!
//! The word holds `generation << COUNT_BITS | arrived`.
//! * **Arrive**: `fetch_add(1)` returns the generation `g` and the earlier arrivals
//!   atomically, so no arrival can be counted in the wrong generation.
//! * **Lead**: the arrival that makes `arrived == parties` is the leader. It runs its
//!   *lead* action (if any) while every other participant still waits, so the action has
//!   the round's shared state to itself; then it advances the word to `g + 1` with
//!   `arrived` reduced by `parties` (one `fetch_add`), and wakes the waiters.
//! * **Wait**: the others relax until the generation differs from `g` (acquire), or until
//!   the barrier is poisoned.
//!
//! Memory ordering: each arrival is a release (its writes before the barrier), the leader's
//! arrival acquires them all (release sequence of the read-modify-writes), and the
//! generation advance is a release that every waiter acquires. So whatever any participant
//! wrote before arriving, and whatever the lead action wrote, is visible to every
//! participant after the barrier.
//!
//! `parties` may change from one generation to the next (k <= P participants per round,
//! DL4J's `registerConsumers`); the caller guarantees that the participants of one generation
//! arrive only after the previous generation completed (the round protocol's gate does). A
//! participant that has been released must observe its release before `2^GEN_BITS` further
//! generations complete (4 billion on 64-bit targets, a million on 32-bit ones).
//!
//! # Poisoning
//!
//! A participant that fails calls [`Barrier::poison`] with a [`Poison`] naming who failed,
//! in which round and how; the first poison wins. Every waiter returns
//! [`ProtocolError::Poisoned`] with that record at its next check: spinning waiters at once,
//! parked waiters because poisoning wakes them. There is no polling interval and no sleep
//! (DL4J sleep-polls a shared `throwable` every millisecond: weakness W7 in docs/DL4J.md). Every later call
//! fails the same way until [`Barrier::reset`]. With `std`, the round protocol poisons on
//! panics as well (a drop guard sees the unwinding).
//!
//! # Bounded waits
//!
//! [`Barrier::wait_bounded`] and [`Barrier::wait_until_bounded`] take a [`Timeout`], counted
//! from when the participant starts to wait (a participant that need not wait reads no
//! clock): a participant still waiting when it runs out *withdraws* its arrival (a compare-and-swap on the
//! state word, so it either withdraws before the generation completes or sees it complete:
//! never both), poisons the barrier with the record its caller builds (who did not arrive, a
//! [`PoisonCause::TimedOut`]), and returns that error; every other participant returns it
//! too, so a generation that one participant gave up on completes for nobody. Once every
//! participant has arrived, the leader's lead action runs under its own bound (the round
//! protocol's transport has one), and the waiters wait for it without a deadline. The
//! unbounded [`Barrier::wait`], [`Barrier::wait_with`] and [`Barrier::wait_until`] wait
//! until the generation completes or the barrier is poisoned, however long that takes.
//!
//! A timeout needs a [`Clock`]: with `std`, [`std_clock`] (monotonic nanoseconds);
//! without `std`, whatever clock the platform has, or no timeout at all.
//!
//! # Relax strategies
//!
//! [`Spin`] spins with the CPU's spin-loop hint: lowest latency when every participant has
//! a core of its own, wasteful (and prone to priority inversion) otherwise.
//! [`SpinThenYield`] backs off exponentially, then yields to the OS scheduler (with `std`;
//! without it, it keeps backing off). [`Park`] (`std`) spins briefly, then blocks on a
//! condition variable (with a timed wait when there is a deadline): the right choice when
//! threads outnumber cores. The spinning strategies read the deadline's clock between
//! checks ([`Spin`] every 64 spins), so none of them sleeps past a deadline by more than one
//! relaxation step.
//!
//! # Example
//!
//! ```
//! use gradcast_core::barrier::{Barrier, SpinThenYield};
//!
//! let barrier: Barrier<SpinThenYield> = Barrier::new();
//! std::thread::scope(|s| {
//!     for _ in 0..3 {
//!         s.spawn(|| {
//!             for _ in 0..10 {
//!                 barrier.wait(3).unwrap();
//!             }
//!         });
//!     }
//! });
//! assert_eq!(barrier.generation(), 10);
//! ```

use crate::error::{ConfigError, ProtocolError};
use crate::error::{Error, ErrorKind};
use crate::primitive::{
    AtomicU8, AtomicUsize, CachePadded, Ordering, UnsafeCell, spin_loop, yield_now,
};
use core::fmt;
use core::time::Duration;

/// A monotonic clock in nanoseconds. Any origin will do; the round protocol reads it for its
/// per-round timings and its deadlines.
pub type Clock = fn() -> u64;

/// The default clock with `std`: nanoseconds since the first call, from `std::time::Instant`.
#[cfg(feature = "std")]
pub fn std_clock() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    origin.elapsed().as_nanos() as u64
}

/// The bound of a wait: `after`, measured on `clock` from when the wait starts.
#[derive(Clone, Copy, Debug)]
pub struct Timeout {
    /// How long a wait may last.
    pub after: Duration,
    /// The clock that measures it.
    pub clock: Clock,
}

impl Timeout {
    /// A bound of `after` on `clock`.
    pub fn new(after: Duration, clock: Clock) -> Self {
        Timeout { after, clock }
    }

    /// The deadline of a wait that starts now.
    pub fn start(&self) -> Deadline {
        Deadline::start(self.clock, self.after)
    }
}

/// When a bounded wait gives up: `after` from the moment [`Deadline::start`] read the clock.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    clock: Clock,
    start: u64,
    after: Duration,
}

impl Deadline {
    /// A deadline `after` from now, on `clock`.
    pub fn start(clock: Clock, after: Duration) -> Self {
        Deadline {
            clock,
            start: clock(),
            after,
        }
    }

    /// The bound this deadline was started with.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// Nanoseconds since the deadline was started.
    pub fn elapsed_ns(&self) -> u64 {
        (self.clock)().saturating_sub(self.start)
    }

    /// The time left, or `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        let after = u64::try_from(self.after.as_nanos()).unwrap_or(u64::MAX);
        let left = after.checked_sub(self.elapsed_ns())?;
        (left > 0).then(|| Duration::from_nanos(left))
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        self.remaining().is_none()
    }
}

/// A set of participants by index, small enough to travel in a [`Poison`] record: the
/// indices below 64 by name, the others by count. Used to say who did not arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PartySet {
    /// Bit `i` set: index `i` is in the set (`i < 64`).
    named: u64,
    /// Members in all, named or not.
    len: u32,
}

impl PartySet {
    /// The empty set.
    pub const EMPTY: PartySet = PartySet { named: 0, len: 0 };

    /// Adds index `i` (by name below 64, by count above).
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            if self.named & (1 << i) != 0 {
                return;
            }
            self.named |= 1 << i;
        }
        self.len = self.len.saturating_add(1);
    }

    /// Adds `count` members whose indices are not known.
    pub fn add_unnamed(&mut self, count: usize) {
        self.len = self
            .len
            .saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
    }

    /// How many members, named or not.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether index `i` is named in the set (always `false` for `i >= 64`).
    pub fn contains(&self, i: usize) -> bool {
        i < 64 && self.named & (1 << i) != 0
    }

    /// The named members, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..64).filter(|&i| self.named & (1u64 << i) != 0)
    }

    /// Members that are counted but not named (indices of 64 and above, or unknown).
    pub fn unnamed(&self) -> usize {
        self.len() - self.named.count_ones() as usize
    }

    /// The raw parts `(named bits, len)`, to send the set elsewhere.
    pub fn to_parts(&self) -> (u64, u32) {
        (self.named, self.len)
    }

    /// A set from [`PartySet::to_parts`]'s parts (`len` is raised to the named count if it
    /// is below it).
    pub fn from_parts(named: u64, len: u32) -> Self {
        PartySet {
            named,
            len: len.max(named.count_ones()),
        }
    }
}

impl fmt::Display for PartySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for i in self.iter() {
            f.write_str(if first { "" } else { ", " })?;
            write!(f, "{i}")?;
            first = false;
        }
        match (self.unnamed(), first) {
            (0, true) => f.write_str("none"),
            (0, false) => Ok(()),
            (n, true) => write!(f, "{n} unnamed"),
            (n, false) => write!(f, " and {n} more"),
        }
    }
}

/// Where a bounded wait gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitStage {
    /// A plain [`Barrier::wait_bounded`] (outside the round protocol).
    Barrier,
    /// The round protocol's gate: waiting for earlier rounds to end before joining.
    Join,
    /// The round's first barrier: waiting for every member to publish (or abstain).
    Publish,
    /// The round's closing barrier: waiting for every member to apply the round.
    Apply,
    /// A transport: waiting for other nodes (ranks) to exchange.
    Exchange,
}

impl fmt::Display for WaitStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitStage::Barrier => "at a barrier",
            WaitStage::Join => "at the round's gate (earlier rounds still running)",
            WaitStage::Publish => "at the round's first barrier (members still to publish)",
            WaitStage::Apply => "at the round's closing barrier (members still applying)",
            WaitStage::Exchange => "in the exchange with other nodes",
        })
    }
}

/// Bits of the state word that count arrivals; the rest count generations.
const COUNT_BITS: u32 = if usize::BITS >= 64 { 32 } else { 12 };
const COUNT_MASK: usize = (1 << COUNT_BITS) - 1;
const ONE_GENERATION: usize = 1 << COUNT_BITS;
/// Bits of the generation counter (it wraps around).
pub const GEN_BITS: u32 = usize::BITS - COUNT_BITS;

/// The most participants one generation may have (`2^32 - 1` on 64-bit targets, 4095 on
/// 32-bit ones).
pub const MAX_PARTIES: usize = COUNT_MASK;

/// How a participant failed, as recorded by the poison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoisonCause {
    /// One of its operations failed with an error of this kind (its backend, encoder,
    /// transport, the work it was given, or a protocol check).
    Failed(ErrorKind),
    /// Its thread panicked (with `std`).
    Panicked,
    /// It left a round it had joined without finishing it (its handle was dropped).
    Abandoned,
    /// It waited longer than its bound: `missing` did not arrive in time.
    TimedOut {
        /// Where it waited.
        stage: WaitStage,
        /// Who did not arrive (local party indices; node or rank indices at
        /// [`WaitStage::Exchange`]).
        missing: PartySet,
        /// The bound it waited.
        after: Duration,
    },
}

impl fmt::Display for PoisonCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoisonCause::Failed(kind) => write!(f, "failed ({kind})"),
            PoisonCause::Panicked => f.write_str("panicked"),
            PoisonCause::Abandoned => f.write_str("abandoned the round"),
            PoisonCause::TimedOut {
                stage,
                missing,
                after,
            } => write!(
                f,
                "timed out after {after:?} {stage}; not arrived: {missing}"
            ),
        }
    }
}

/// Who poisoned a barrier, in which round, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Poison {
    /// The local party that failed, or `None` when the failure belongs to no single party
    /// (a coordinator, a broken protocol rule).
    pub party: Option<u32>,
    /// The round in which it failed (0 where rounds mean nothing).
    pub round: u64,
    /// How it failed.
    pub cause: PoisonCause,
}

impl Poison {
    /// The error every other participant returns.
    pub fn to_error(self) -> Error {
        ProtocolError::Poisoned {
            party: self.party,
            round: self.round,
            cause: self.cause,
        }
        .into()
    }
}

impl From<Poison> for Error {
    fn from(p: Poison) -> Error {
        p.to_error()
    }
}

/// How a waiting thread passes the time: spin, yield, or park. See the
/// [module docs](self#relax-strategies).
pub trait Relax: Default + Send + Sync {
    /// Returns `true` once `blocked()` returns `false`, or `false` when `deadline` passes
    /// first (never without a deadline). `blocked` is cheap and is called again after every
    /// relaxation (and after every [`Relax::wake_all`]); the deadline is checked at least
    /// once per relaxation step.
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool, deadline: Option<&Deadline>) -> bool;

    /// Wakes every thread inside [`Relax::wait_while`] of this instance, after the state its
    /// `blocked` reads has changed. A no-op for strategies that never sleep.
    fn wake_all(&self);
}

/// Spins with the CPU's spin-loop hint (reading the deadline's clock every 64 spins).
#[derive(Clone, Copy, Debug, Default)]
pub struct Spin;

impl Relax for Spin {
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool, deadline: Option<&Deadline>) -> bool {
        let mut spins = 0u32;
        while blocked() {
            if let Some(d) = deadline
                && (cfg!(gradcast_loom) || spins.is_multiple_of(64))
                && d.has_passed()
            {
                return false;
            }
            spins = spins.wrapping_add(1);
            spin_loop();
        }
        true
    }

    fn wake_all(&self) {}
}

/// Spins with exponential backoff (1, 2, 4 .. 64 hints), then yields to the scheduler
/// between checks (with `std`; without it, it keeps spinning 64 hints at a time). Reads the
/// deadline's clock once per step.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinThenYield;

/// Backoff steps before [`SpinThenYield`] starts yielding.
const SPIN_STEPS: u32 = 6;

impl Relax for SpinThenYield {
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool, deadline: Option<&Deadline>) -> bool {
        let mut step = 0u32;
        while blocked() {
            if deadline.is_some_and(Deadline::has_passed) {
                return false;
            }
            if cfg!(gradcast_loom) {
                // One scheduling point per check keeps loom's state space small.
                spin_loop();
            } else if step <= SPIN_STEPS || cfg!(not(feature = "std")) {
                for _ in 0..1u32 << step.min(SPIN_STEPS) {
                    spin_loop();
                }
            } else {
                yield_now();
            }
            step = step.saturating_add(1);
        }
        true
    }

    fn wake_all(&self) {}
}

/// Spins briefly, then blocks on a condition variable until woken (`std`), with a timed
/// wait when there is a deadline.
///
/// [`Relax::wake_all`] takes the mutex before notifying, and waiters check their condition
/// while holding it, so no wake-up is lost.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub struct Park {
    lock: crate::primitive::Mutex<()>,
    cv: crate::primitive::Condvar,
}

#[cfg(feature = "std")]
impl Relax for Park {
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool, deadline: Option<&Deadline>) -> bool {
        if !cfg!(gradcast_loom) {
            for step in 0..=SPIN_STEPS {
                if !blocked() {
                    return true;
                }
                for _ in 0..1u32 << step {
                    spin_loop();
                }
            }
        }
        let mut guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while blocked() {
            guard = match deadline {
                None => self
                    .cv
                    .wait(guard)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    let Some(left) = d.remaining() else {
                        return false;
                    };
                    // Loom's timed wait never times out; loom models bound spinning waits.
                    self.cv
                        .wait_timeout(guard, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
        true
    }

    fn wake_all(&self) {
        drop(
            self.lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.cv.notify_all();
    }
}

/// What [`Barrier::wait`] tells a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitResult {
    leader: bool,
}

impl WaitResult {
    /// Whether this participant arrived last and led the generation (ran the lead action).
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

/// The record of a timeout nobody can reach: the unbounded waits pass no deadline, so their
/// `timed_out` closures are never called.
fn unreachable_poison() -> Poison {
    Poison {
        party: None,
        round: 0,
        cause: PoisonCause::Failed(ErrorKind::Other),
    }
}

/// The poison record: written once by the first poisoner, then read by everyone.
struct PoisonSlot {
    /// `CLEAR`, `WRITING` (the first poisoner owns `value`), or `SET` (`value` is final).
    state: AtomicU8,
    /// The record; written only by the thread that moved `state` from `CLEAR` to `WRITING`,
    /// read only after acquiring `SET`.
    value: UnsafeCell<Poison>,
}

const CLEAR: u8 = 0;
const WRITING: u8 = 1;
const SET: u8 = 2;

/// A reusable barrier for up to [`MAX_PARTIES`] participants per generation; see the
/// [module docs](self).
pub struct Barrier<R: Relax = SpinThenYield> {
    /// `generation << COUNT_BITS | arrived`.
    state: CachePadded<AtomicUsize>,
    poison: PoisonSlot,
    relax: R,
}

// SAFETY: the only non-atomic state is the poison record, written by exactly one thread (the
// one whose compare-and-swap moved the slot from CLEAR to WRITING) and read only after an
// acquire load observes SET, which that thread stores with release after writing.
unsafe impl<R: Relax> Sync for Barrier<R> {}

impl<R: Relax> Default for Barrier<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Relax> Barrier<R> {
    /// A barrier at generation 0, not poisoned.
    pub fn new() -> Self {
        Barrier {
            state: CachePadded(AtomicUsize::new(0)),
            poison: PoisonSlot {
                state: AtomicU8::new(CLEAR),
                value: UnsafeCell::new(Poison {
                    party: None,
                    round: 0,
                    cause: PoisonCause::Abandoned,
                }),
            },
            relax: R::default(),
        }
    }

    /// Waits until `parties` participants (this one included) have arrived in this
    /// generation. Exactly one of them gets [`WaitResult::is_leader`].
    ///
    /// No bound of its own: it returns when the generation completes or the barrier is
    /// poisoned. [`Barrier::wait_timeout`] and [`Barrier::wait_bounded`] give up at a
    /// deadline.
    ///
    /// # Errors
    /// [`ProtocolError::Poisoned`] when the barrier is or becomes poisoned before the generation
    /// completes; [`ConfigError::PartiesOutOfRange`] when `parties` is 0 or above
    /// [`MAX_PARTIES`]; [`ProtocolError::BarrierOverrun`] (and the barrier is poisoned) when more
    /// than `parties` arrive.
    pub fn wait(&self, parties: usize) -> Result<WaitResult, Error> {
        self.wait_with(parties, || Ok(()))
    }

    /// As [`Barrier::wait`], and the leader runs `lead` before releasing the others, while
    /// every other participant waits: `lead` has the shared state to itself and its writes
    /// are visible to all after the barrier. When `lead` fails, the barrier is poisoned with
    /// its record and every participant, the leader included, returns [`ProtocolError::Poisoned`].
    ///
    /// # Errors
    /// As [`Barrier::wait`], plus the poison `lead` returns.
    pub fn wait_with(
        &self,
        parties: usize,
        lead: impl FnOnce() -> Result<(), Poison>,
    ) -> Result<WaitResult, Error> {
        self.arrive(parties, None, lead, |_| unreachable_poison())
    }

    /// As [`Barrier::wait`], but a participant that has waited `timeout` (and not every
    /// participant has arrived) withdraws and poisons the barrier with a
    /// [`PoisonCause::TimedOut`] record that counts the participants that did not arrive
    /// (`party: None`, round 0, [`WaitStage::Barrier`]).
    ///
    /// # Errors
    /// As [`Barrier::wait`]; the timed-out record as [`ProtocolError::Poisoned`].
    pub fn wait_timeout(&self, parties: usize, timeout: Timeout) -> Result<WaitResult, Error> {
        self.wait_bounded(
            parties,
            Some(timeout),
            || Ok(()),
            |arrived| {
                let mut missing = PartySet::EMPTY;
                missing.add_unnamed(parties.saturating_sub(arrived));
                Poison {
                    party: None,
                    round: 0,
                    cause: PoisonCause::TimedOut {
                        stage: WaitStage::Barrier,
                        missing,
                        after: timeout.after,
                    },
                }
            },
        )
    }

    /// As [`Barrier::wait_with`], bounded by `timeout` (none: unbounded), counted from when
    /// this participant starts to wait. A participant still waiting when it runs out, while
    /// fewer than `parties` have arrived, withdraws its arrival, poisons the barrier with
    /// `timed_out(arrived)` (`arrived` counts the participants that had arrived, this one
    /// included), and returns that poison; so does every other participant of the
    /// generation, and the generation never completes. Withdrawing is a compare-and-swap on
    /// the state word: a participant either withdraws before the last arrival or sees every
    /// participant arrive, never both. Once every participant has arrived, the waiters wait
    /// for the lead action without a deadline (the lead action is bounded by its own means).
    ///
    /// # Errors
    /// As [`Barrier::wait_with`]; the timed-out record as [`ProtocolError::Poisoned`].
    pub fn wait_bounded(
        &self,
        parties: usize,
        timeout: Option<Timeout>,
        lead: impl FnOnce() -> Result<(), Poison>,
        timed_out: impl FnOnce(usize) -> Poison,
    ) -> Result<WaitResult, Error> {
        self.arrive(parties, timeout, lead, timed_out)
    }

    fn arrive(
        &self,
        parties: usize,
        timeout: Option<Timeout>,
        lead: impl FnOnce() -> Result<(), Poison>,
        timed_out: impl FnOnce(usize) -> Poison,
    ) -> Result<WaitResult, Error> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(ConfigError::PartiesOutOfRange {
                parties,
                max: MAX_PARTIES,
            }
            .into());
        }
        if let Some(p) = self.poisoned() {
            return Err(p.to_error());
        }
        // AcqRel: publish this participant's writes; the leader acquires everyone's.
        let prev = self.state.fetch_add(1, Ordering::AcqRel);
        let generation = prev >> COUNT_BITS;
        let arrived = (prev & COUNT_MASK) + 1;
        if arrived > parties {
            let poison = Poison {
                party: None,
                round: 0,
                cause: PoisonCause::Failed(ErrorKind::Protocol),
            };
            self.poison(poison);
            return Err(ProtocolError::BarrierOverrun { arrived, parties }.into());
        }
        if arrived == parties {
            // A generation some participant gave up on (or that a failure poisoned while
            // it filled) completes for nobody: the lead action does not run.
            if let Some(p) = self.poisoned() {
                return Err(p.to_error());
            }
            if let Err(p) = lead() {
                self.poison(p);
                return Err(self.poisoned().unwrap_or(p).to_error());
            }
            // Release: the waiters acquire the arrivals and the lead action's writes.
            self.state
                .fetch_add(ONE_GENERATION.wrapping_sub(parties), Ordering::Release);
            self.relax.wake_all();
            return Ok(WaitResult { leader: true });
        }
        let started = timeout.map(|t| t.start());
        let mut deadline = started.as_ref();
        let mut poisoned = None;
        loop {
            let settled = self.relax.wait_while(
                &mut || {
                    if self.state.load(Ordering::Acquire) >> COUNT_BITS != generation {
                        return false;
                    }
                    poisoned = self.poisoned();
                    poisoned.is_none()
                },
                deadline,
            );
            if settled {
                break;
            }
            // The deadline passed while this participant waited.
            let now = self.state.load(Ordering::Acquire);
            if now >> COUNT_BITS != generation {
                break; // released after all
            }
            if now & COUNT_MASK >= parties {
                // Everyone arrived: the leader runs its lead action, bounded by its own
                // means. Wait for it.
                deadline = None;
                continue;
            }
            // Withdraw this arrival, unless the word changed meanwhile (then look again).
            if self
                .state
                .compare_exchange(now, now - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let p = timed_out(now & COUNT_MASK);
                self.poison(p);
                return Err(self.poisoned().unwrap_or(p).to_error());
            }
        }
        match poisoned {
            Some(p) => Err(p.to_error()),
            None => Ok(WaitResult { leader: false }),
        }
    }

    /// Waits, with this barrier's relax strategy, until `ready()` returns `true` or the
    /// barrier is poisoned. Whoever makes `ready` true must call [`Barrier::notify_all`]
    /// afterwards (the [`Park`] strategy sleeps until then). No bound of its own; see
    /// [`Barrier::wait_until_bounded`].
    ///
    /// # Errors
    /// [`ProtocolError::Poisoned`].
    pub fn wait_until(&self, ready: impl FnMut() -> bool) -> Result<(), Error> {
        self.wait_until_bounded(ready, None, unreachable_poison)
    }

    /// As [`Barrier::wait_until`], bounded by `timeout` (none: unbounded), counted from the
    /// first check that finds `ready()` false: when it runs out before `ready()` holds, the
    /// barrier is poisoned with `timed_out()` and that poison is returned.
    ///
    /// # Errors
    /// [`ProtocolError::Poisoned`], the timed-out record included.
    pub fn wait_until_bounded(
        &self,
        mut ready: impl FnMut() -> bool,
        timeout: Option<Timeout>,
        timed_out: impl FnOnce() -> Poison,
    ) -> Result<(), Error> {
        if ready() {
            return Ok(());
        }
        let started = timeout.map(|t| t.start());
        let deadline = started.as_ref();
        let mut poisoned = None;
        let settled = self.relax.wait_while(
            &mut || {
                if ready() {
                    return false;
                }
                poisoned = self.poisoned();
                poisoned.is_none()
            },
            deadline,
        );
        if !settled && !ready() {
            let p = timed_out();
            self.poison(p);
            return Err(self.poisoned().unwrap_or(p).to_error());
        }
        match poisoned {
            Some(p) => Err(p.to_error()),
            None => Ok(()),
        }
    }

    /// Wakes the threads inside [`Barrier::wait_until`] after their condition changed.
    pub fn notify_all(&self) {
        self.relax.wake_all();
    }

    /// Poisons the barrier with `poison` and wakes every waiter. The first poison wins:
    /// returns `false` (and changes nothing) when the barrier was already poisoned.
    pub fn poison(&self, poison: Poison) -> bool {
        let won = self
            .poison
            .state
            .compare_exchange(CLEAR, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if won {
            // SAFETY: the compare-and-swap above made this thread the only writer, and
            // readers only read after acquiring SET, which is stored below.
            self.poison.value.with_mut(|p| unsafe { *p = poison });
            self.poison.state.store(SET, Ordering::Release);
        }
        self.relax.wake_all();
        won
    }

    /// The poison record, if the barrier is poisoned (and its record is complete).
    pub fn poisoned(&self) -> Option<Poison> {
        if self.poison.state.load(Ordering::Acquire) == SET {
            // SAFETY: SET was stored with release after the only write, and is never
            // cleared while shared (`reset` takes `&mut self`).
            Some(self.poison.value.with(|p| unsafe { *p }))
        } else {
            None
        }
    }

    /// Clears the poison and the arrival count, keeping the generation counter. Exclusive
    /// access guarantees nobody is waiting.
    pub fn reset(&mut self) {
        self.poison.state = AtomicU8::new(CLEAR);
        let generation = self.state.load(Ordering::Relaxed) >> COUNT_BITS;
        self.state = CachePadded(AtomicUsize::new(generation << COUNT_BITS));
    }

    /// The number of completed generations, modulo `2^GEN_BITS` (a snapshot).
    pub fn generation(&self) -> usize {
        self.state.load(Ordering::Acquire) >> COUNT_BITS
    }

    /// How many participants have arrived in the current generation (a snapshot).
    pub fn arrived(&self) -> usize {
        self.state.load(Ordering::Acquire) & COUNT_MASK
    }

    /// The relax strategy (its state, for [`Park`]).
    pub fn relax(&self) -> &R {
        &self.relax
    }
}

impl<R: Relax> fmt::Debug for Barrier<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("generation", &self.generation())
            .field("arrived", &self.arrived())
            .field("poisoned", &self.poisoned())
            .finish()
    }
}

#[cfg(all(test, not(gradcast_loom)))]
mod tests {
    use super::*;

    #[test]
    fn single_party_leads_every_generation() {
        let b: Barrier<Spin> = Barrier::new();
        for g in 0..5 {
            assert_eq!(b.generation(), g);
            assert!(b.wait(1).unwrap().is_leader());
        }
        assert_eq!(b.arrived(), 0);
    }

    #[test]
    fn parties_out_of_range() {
        let b: Barrier = Barrier::new();
        assert_eq!(
            b.wait(0),
            Err(Error::Config(ConfigError::PartiesOutOfRange {
                parties: 0,
                max: MAX_PARTIES
            }))
        );
    }

    #[test]
    fn lead_failure_poisons_for_everyone() {
        let mut b: Barrier<Spin> = Barrier::new();
        let p = Poison {
            party: Some(3),
            round: 7,
            cause: PoisonCause::Failed(ErrorKind::Transport),
        };
        assert_eq!(b.wait_with(1, || Err(p)), Err(p.to_error()));
        assert_eq!(b.poisoned(), Some(p));
        assert_eq!(b.wait(2), Err(p.to_error()));
        // The first poison wins.
        assert!(!b.poison(Poison {
            party: Some(1),
            ..p
        }));
        assert_eq!(b.poisoned(), Some(p));
        b.reset();
        assert_eq!(b.poisoned(), None);
        assert!(b.wait(1).is_ok());
    }

    #[cfg(feature = "std")]
    fn threads_generations<R: Relax>() {
        extern crate std;
        const ROUNDS: usize = if cfg!(miri) { 20 } else { 2_000 };
        let b: Barrier<R> = Barrier::new();
        let leaders = core::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        if b.wait(3).unwrap().is_leader() {
                            leaders.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(leaders.into_inner(), ROUNDS);
        assert_eq!(b.generation(), ROUNDS);
    }

    #[cfg(feature = "std")]
    #[test]
    fn threads_spin_then_yield() {
        threads_generations::<SpinThenYield>();
    }

    #[cfg(feature = "std")]
    #[test]
    fn threads_park() {
        threads_generations::<Park>();
    }

    /// A clock of its own for each test (tests run in parallel): one microsecond per
    /// reading, deterministic, also under Miri.
    macro_rules! ticking_clock {
        () => {{
            static NOW: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
            fn clock() -> u64 {
                NOW.fetch_add(1_000, core::sync::atomic::Ordering::Relaxed)
            }
            clock as Clock
        }};
    }

    #[test]
    fn deadline_counts_down_on_its_clock() {
        let d = Deadline::start(ticking_clock!(), Duration::from_micros(3));
        assert_eq!(d.after(), Duration::from_micros(3));
        assert!(!d.has_passed()); // 1 us
        assert!(d.remaining().is_some()); // 2 us
        assert!(d.has_passed()); // 3 us
        assert_eq!(d.remaining(), None);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn party_set_names_small_indices_and_counts_the_rest() {
        let mut s = PartySet::EMPTY;
        assert!(s.is_empty());
        assert_eq!(alloc::format!("{s}"), "none");
        s.insert(3);
        s.insert(1);
        s.insert(3);
        s.insert(70);
        s.add_unnamed(2);
        assert_eq!(s.len(), 5);
        assert_eq!(s.unnamed(), 3);
        assert!(s.contains(1) && s.contains(3) && !s.contains(2) && !s.contains(70));
        assert_eq!(s.iter().collect::<alloc::vec::Vec<_>>(), [1, 3]);
        assert_eq!(alloc::format!("{s}"), "1, 3 and 3 more");
        let (named, len) = s.to_parts();
        assert_eq!(PartySet::from_parts(named, len), s);
        assert_eq!(PartySet::from_parts(0b11, 0).len(), 2);
    }

    /// A participant alone past its deadline withdraws, poisons with a record counting the
    /// one that did not arrive, and a late arrival gets that record instead of completing
    /// the generation.
    #[test]
    fn timeout_withdraws_and_poisons_for_late_arrivals() {
        let b: Barrier<Spin> = Barrier::new();
        let t = Timeout::new(Duration::from_micros(50), ticking_clock!());
        let e = b.wait_timeout(2, t).unwrap_err();
        let Error::Protocol(ProtocolError::Poisoned {
            party: None,
            round: 0,
            cause:
                PoisonCause::TimedOut {
                    stage: WaitStage::Barrier,
                    missing,
                    after,
                },
        }) = e
        else {
            panic!("{e:?}");
        };
        assert_eq!((missing.len(), missing.unnamed(), after), (1, 1, t.after));
        assert_eq!(b.arrived(), 0, "the timed-out arrival was withdrawn");
        assert_eq!(b.generation(), 0);
        assert_eq!(b.wait(2), Err(e));
    }

    /// Once every participant has arrived, a waiter past its deadline waits for the lead
    /// action (bounded by its own means) instead of giving up. The waiter's clock stands
    /// still until the lead action starts, then ticks only when the waiter reads it; the
    /// lead action lasts until the waiter has seen its deadline pass.
    #[cfg(feature = "std")]
    fn waiters_wait_for_the_lead_action<R: Relax>(
        clock: Clock,
        now: &core::sync::atomic::AtomicU64,
        go: &core::sync::atomic::AtomicBool,
    ) {
        extern crate std;
        use core::sync::atomic::Ordering::SeqCst;
        let b: Barrier<R> = Barrier::new();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let t = Timeout::new(Duration::from_micros(5), clock);
                b.wait_bounded(2, Some(t), || Ok(()), |_| unreachable_poison())
            });
            while b.arrived() == 0 {
                std::thread::yield_now();
            }
            let w = b
                .wait_with(2, || {
                    go.store(true, SeqCst);
                    // The waiter's read that finds the deadline passed leaves the clock at
                    // 6 us or more.
                    while now.load(SeqCst) < 6_000 {
                        std::thread::yield_now();
                    }
                    Ok(())
                })
                .unwrap();
            assert!(w.is_leader());
            assert_eq!(waiter.join().unwrap(), Ok(WaitResult { leader: false }));
        });
        assert_eq!(b.generation(), 1);
    }

    /// Stands still until `go`, then ticks a microsecond per reading.
    macro_rules! gated_clock {
        () => {{
            use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
            static NOW: AtomicU64 = AtomicU64::new(0);
            static GO: AtomicBool = AtomicBool::new(false);
            fn clock() -> u64 {
                if GO.load(SeqCst) {
                    NOW.fetch_add(1_000, SeqCst)
                } else {
                    NOW.load(SeqCst)
                }
            }
            (clock as Clock, &NOW, &GO)
        }};
    }

    #[cfg(feature = "std")]
    #[test]
    fn waiters_wait_for_the_lead_action_park() {
        let (clock, now, go) = gated_clock!();
        waiters_wait_for_the_lead_action::<Park>(clock, now, go);
    }

    #[cfg(feature = "std")]
    #[test]
    fn waiters_wait_for_the_lead_action_spin() {
        let (clock, now, go) = gated_clock!();
        waiters_wait_for_the_lead_action::<Spin>(clock, now, go);
    }

    /// A bounded `wait_until` that times out poisons with the caller's record.
    #[test]
    fn wait_until_bounded_times_out_with_the_callers_record() {
        let b: Barrier<SpinThenYield> = Barrier::new();
        let t = Timeout::new(Duration::from_micros(20), ticking_clock!());
        let record = Poison {
            party: Some(4),
            round: 9,
            cause: PoisonCause::TimedOut {
                stage: WaitStage::Join,
                missing: PartySet::EMPTY,
                after: t.after,
            },
        };
        assert_eq!(
            b.wait_until_bounded(|| false, Some(t), || record),
            Err(record.to_error())
        );
        assert_eq!(b.poisoned(), Some(record));
        let b: Barrier<SpinThenYield> = Barrier::new();
        assert_eq!(b.wait_until_bounded(|| true, Some(t), || record), Ok(()));
    }

    /// A parked waiter returns the poison promptly.
    #[cfg(feature = "std")]
    #[test]
    fn poison_wakes_parked_waiter() {
        extern crate std;
        let b: Barrier<Park> = Barrier::new();
        let p = Poison {
            party: Some(1),
            round: 2,
            cause: PoisonCause::Panicked,
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(|| b.wait(2));
            while b.arrived() == 0 {
                std::thread::yield_now();
            }
            b.poison(p);
            assert_eq!(waiter.join().unwrap(), Err(p.to_error()));
        });
    }
}

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
//! [`Error::Poisoned`] with that record at its next check: spinning waiters at once,
//! parked waiters because poisoning wakes them. There is no polling interval and no sleep
//! (DL4J sleep-polls a shared `throwable` every millisecond, weakness W7). Every later call
//! fails the same way until [`Barrier::reset`]. With `std`, the round protocol poisons on
//! panics as well (a drop guard sees the unwinding).
//!
//! # Relax strategies
//!
//! [`Spin`] spins with the CPU's spin-loop hint: lowest latency when every participant has
//! a core of its own, wasteful (and prone to priority inversion) otherwise.
//! [`SpinThenYield`] backs off exponentially, then yields to the OS scheduler (with `std`;
//! without it, it keeps backing off). [`Park`] (`std`) spins briefly, then blocks on a
//! condition variable: the right choice when threads outnumber cores.
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

use crate::error::{Error, ErrorKind};
use crate::primitive::{
    AtomicU8, AtomicUsize, CachePadded, Ordering, UnsafeCell, spin_loop, yield_now,
};
use core::fmt;

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
}

impl fmt::Display for PoisonCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoisonCause::Failed(kind) => write!(f, "failed ({kind})"),
            PoisonCause::Panicked => f.write_str("panicked"),
            PoisonCause::Abandoned => f.write_str("abandoned the round"),
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
        Error::Poisoned {
            party: self.party,
            round: self.round,
            cause: self.cause,
        }
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
    /// Returns once `blocked()` returns `false`. `blocked` is cheap and is called again after
    /// every relaxation (and after every [`Relax::wake_all`]).
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool);

    /// Wakes every thread inside [`Relax::wait_while`] of this instance, after the state its
    /// `blocked` reads has changed. A no-op for strategies that never sleep.
    fn wake_all(&self);
}

/// Spins with the CPU's spin-loop hint.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spin;

impl Relax for Spin {
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool) {
        while blocked() {
            spin_loop();
        }
    }

    fn wake_all(&self) {}
}

/// Spins with exponential backoff (1, 2, 4 .. 64 hints), then yields to the scheduler
/// between checks (with `std`; without it, it keeps spinning 64 hints at a time).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinThenYield;

/// Backoff steps before [`SpinThenYield`] starts yielding.
const SPIN_STEPS: u32 = 6;

impl Relax for SpinThenYield {
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool) {
        let mut step = 0u32;
        while blocked() {
            if cfg!(loom) {
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
    }

    fn wake_all(&self) {}
}

/// Spins briefly, then blocks on a condition variable until woken (`std`).
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
    fn wait_while(&self, blocked: &mut dyn FnMut() -> bool) {
        if !cfg!(loom) {
            for step in 0..=SPIN_STEPS {
                if !blocked() {
                    return;
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
            guard = self
                .cv
                .wait(guard)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
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
    /// # Errors
    /// [`Error::Poisoned`] when the barrier is or becomes poisoned before the generation
    /// completes; [`Error::PartiesOutOfRange`] when `parties` is 0 or above
    /// [`MAX_PARTIES`]; [`Error::BarrierOverrun`] (and the barrier is poisoned) when more
    /// than `parties` arrive.
    pub fn wait(&self, parties: usize) -> Result<WaitResult, Error> {
        self.wait_with(parties, || Ok(()))
    }

    /// As [`Barrier::wait`], and the leader runs `lead` before releasing the others, while
    /// every other participant waits: `lead` has the shared state to itself and its writes
    /// are visible to all after the barrier. When `lead` fails, the barrier is poisoned with
    /// its record and every participant, the leader included, returns [`Error::Poisoned`].
    ///
    /// # Errors
    /// As [`Barrier::wait`], plus the poison `lead` returns.
    pub fn wait_with(
        &self,
        parties: usize,
        lead: impl FnOnce() -> Result<(), Poison>,
    ) -> Result<WaitResult, Error> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::PartiesOutOfRange {
                parties,
                max: MAX_PARTIES,
            });
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
            return Err(Error::BarrierOverrun { arrived, parties });
        }
        if arrived == parties {
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
        let mut poisoned = None;
        self.relax.wait_while(&mut || {
            if self.state.load(Ordering::Acquire) >> COUNT_BITS != generation {
                return false;
            }
            poisoned = self.poisoned();
            poisoned.is_none()
        });
        match poisoned {
            Some(p) => Err(p.to_error()),
            None => Ok(WaitResult { leader: false }),
        }
    }

    /// Waits, with this barrier's relax strategy, until `ready()` returns `true` or the
    /// barrier is poisoned. Whoever makes `ready` true must call [`Barrier::notify_all`]
    /// afterwards (the [`Park`] strategy sleeps until then).
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn wait_until(&self, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
        let mut poisoned = None;
        self.relax.wait_while(&mut || {
            if ready() {
                return false;
            }
            poisoned = self.poisoned();
            poisoned.is_none()
        });
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

#[cfg(all(test, not(loom)))]
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
            Err(Error::PartiesOutOfRange {
                parties: 0,
                max: MAX_PARTIES
            })
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

//! A bounded multi-producer multi-consumer queue whose capacity is fixed at construction.
//!
//! [`Queue`] is Dmitry Vyukov's bounded MPMC array queue (the algorithm of crossbeam's
//! `ArrayQueue`), with one change that makes it never wait for another thread: where
//! crossbeam spins until a pre-empted peer finishes, [`Queue::try_push`] and
//! [`Queue::try_pop`] report *full* or *empty* and return.
//!
//! * Capacity is exact: a queue of capacity `c` holds `c` items (not heapless's `N - 1`).
//!   [`ArrayQueue`] fixes it at compile time (`const N`, no allocation, `no_std`);
//!   [`HeapQueue`] (feature `alloc`) sizes it once at run time and never reallocates.
//! * [`Queue::try_push`] hands the item back in `Err(item)` when the queue is full: nothing
//!   is ever dropped, and nothing ever blocks.
//!
//! # Progress guarantee
//!
//! Both operations are **lock-free and never wait for another thread**. Each call finishes
//! in a bounded number of its own steps, except that it retries when a compare-and-swap fails
//! or when it read a stale index; both mean another operation completed meanwhile, so some
//! thread always makes progress.
//!
//! The price of never waiting is **spurious full and empty reports under concurrency**.
//! An operation claims a position with a compare-and-swap, then moves the item, then
//! publishes the slot. While a thread sits between claim and publish (pre-empted, say),
//! operations that reach that slot do not wait for it:
//! * [`Queue::try_push`] may return `Err(item)` although [`Queue::len`] is below the
//!   capacity, because a pop of the slot it needs is still in flight;
//! * [`Queue::try_pop`] may return `None` although a push has claimed its position,
//!   because that push has not published yet.
//!
//! Without operations in flight, the answers are exact: if every earlier operation
//! *happens before* a call (the calling thread joined, or synchronised with, the threads
//! that made them), then `try_push` fails only when `len() == capacity()`, and `try_pop`
//! returns `None` only when the queue is empty. The round protocol relies on exactly that:
//! its pushes all happen before the barrier that precedes the drain. Items come out in FIFO
//! order of their claimed positions.
//!
//! This is the behaviour the heapless documentation asks a bounded MPMC queue to state
//! (heapless deprecated its Vyukov queue because its `dequeue` could report empty while an
//! item was present, issue #583); here it is the documented contract, and the loom models
//! in `core/tests/loom.rs` check it.
//!
//! # Why not heapless or spin
//!
//! heapless's `mpmc::Queue` is deprecated (see above), and its capacity must be a power of
//! two known at compile time, while the round protocol sizes its queue from the party count
//! P at run time. heapless's `spsc::Queue` allows one producer, and a round has up to P.
//! spin has no queue, and a `spin::Mutex` around a `heapless::Deque` would make every thread
//! wait behind a pre-empted lock holder. So this module writes its own, in about a hundred
//! lines, with every unsafe block justified and checked by loom and Miri.
//!
//! # Example
//!
//! ```
//! use gradcast_core::queue::ArrayQueue;
//!
//! let q: ArrayQueue<u32, 2> = ArrayQueue::new();
//! assert_eq!(q.try_push(1), Ok(()));
//! assert_eq!(q.try_push(2), Ok(()));
//! assert_eq!(q.try_push(3), Err(3)); // full: the item comes back
//! assert_eq!(q.try_pop(), Some(1));
//! assert_eq!(q.len(), 1);
//! ```

#[cfg(feature = "alloc")]
use crate::error::ConfigError;
use crate::primitive::{AtomicUsize, CachePadded, Ordering, UnsafeCell, spin_loop};
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;

/// One cell of a [`Queue`]: a stamp and room for one item.
///
/// Storage for the queue's constructors; it has no public API of its own.
pub struct Slot<T> {
    /// The position this slot expects next, as `lap | index`:
    /// * `stamp == position`: empty, a push at `position` may claim it;
    /// * `stamp == position + 1`: holds the item pushed at `position`, a pop may claim it;
    /// * the pop of `position` sets `position + one_lap`, the next lap's empty stamp.
    stamp: AtomicUsize,
    /// The item; initialised exactly while the stamp says "holds an item" (and while the one
    /// thread that claimed the slot moves it in or out).
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    fn new(index: usize) -> Self {
        Slot {
            stamp: AtomicUsize::new(index),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

impl<T> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

/// A bounded MPMC queue over storage `S`; see the [module docs](self) for the contract.
///
/// Use [`ArrayQueue`] (compile-time capacity) or [`HeapQueue`] (run-time capacity, `alloc`).
pub struct Queue<T, S: AsRef<[Slot<T>]>> {
    /// The next position to pop from, `lap | index`. Only ever advanced by a successful
    /// compare-and-swap of the thread that then owns the slot's item.
    head: CachePadded<AtomicUsize>,
    /// The next position to push to, `lap | index`. Only ever advanced by a successful
    /// compare-and-swap of the thread that then owns the empty slot.
    tail: CachePadded<AtomicUsize>,
    /// The smallest power of two greater than the capacity: positions are `lap | index` with
    /// `index < capacity <= one_lap - 1`, and each wrap adds `one_lap`.
    one_lap: usize,
    /// The slots; `slots.as_ref().len()` is the capacity, at least 1.
    slots: S,
    _items: PhantomData<T>,
}

/// A queue with capacity `N`, fixed at compile time; no allocation, `no_std`.
pub type ArrayQueue<T, const N: usize> = Queue<T, [Slot<T>; N]>;

/// A queue whose capacity is chosen once at run time (feature `alloc`).
#[cfg(feature = "alloc")]
pub type HeapQueue<T> = Queue<T, alloc::boxed::Box<[Slot<T>]>>;

// SAFETY: the queue moves `T` values between threads (hence `T: Send`), and every access to
// a slot's value is owned by exactly one thread at a time: the one whose compare-and-swap
// claimed that position, between its claim and its release store of the stamp. The other
// threads only touch atomics. `S` itself is only read through `as_ref`.
unsafe impl<T: Send, S: AsRef<[Slot<T>]> + Send> Sync for Queue<T, S> {}

impl<T, const N: usize> Queue<T, [Slot<T>; N]> {
    /// An empty queue of capacity `N`.
    ///
    /// `N` must be at least 1 (checked at compile time).
    pub fn new() -> Self {
        const { assert!(N >= 1, "a queue needs a capacity of at least 1") };
        Self::from_slots(core::array::from_fn(Slot::new))
    }
}

impl<T, const N: usize> Default for Queue<T, [Slot<T>; N]> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "alloc")]
impl<T> Queue<T, alloc::boxed::Box<[Slot<T>]>> {
    /// An empty queue of `capacity` items; the only allocation it ever makes.
    ///
    /// # Errors
    /// [`ConfigError::QueueTooSmall`] when `capacity` is 0.
    pub fn with_capacity(capacity: usize) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::QueueTooSmall {
                capacity,
                needed: 1,
            });
        }
        let slots: alloc::boxed::Box<[Slot<T>]> = (0..capacity).map(Slot::new).collect();
        Ok(Self::from_slots(slots))
    }
}

impl<T, S: AsRef<[Slot<T>]>> Queue<T, S> {
    fn from_slots(slots: S) -> Self {
        let cap = slots.as_ref().len();
        Queue {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            one_lap: (cap + 1).next_power_of_two(),
            slots,
            _items: PhantomData,
        }
    }

    /// The number of items the queue holds when full.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    /// The position after `pos`: the next index, or index 0 of the next lap.
    #[inline]
    fn next(&self, pos: usize) -> usize {
        let index = pos & (self.one_lap - 1);
        if index + 1 < self.capacity() {
            pos.wrapping_add(1)
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// Appends `item`, or hands it back in `Err(item)` when the queue is full (or, under
    /// concurrency, when the pop of the slot it needs is still in flight; see the
    /// [module docs](self)). Never blocks, never drops the item.
    ///
    /// # Errors
    /// `Err(item)`: the queue is full.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let slots = self.slots.as_ref();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &slots[tail & (self.one_lap - 1)];
            // Acquire: if the slot is empty, the pop that emptied it has finished reading.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                // The slot is free for position `tail`: claim the position.
                match self.tail.compare_exchange_weak(
                    tail,
                    self.next(tail),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the successful compare-and-swap made this thread the only
                        // one that owns position `tail`; the slot's stamp says it is empty,
                        // and no other thread touches the value until the stamp changes.
                        slot.value.with_mut(|p| unsafe { (*p).write(item) });
                        // Release: publishes the item to the pop that acquires this stamp.
                        slot.stamp.store(tail.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => tail = current,
                }
            } else if stamp.wrapping_add(self.one_lap) == tail.wrapping_add(1) {
                // The slot still holds the item pushed one lap ago: the queue is full (or
                // that item's pop is in flight). Do not wait for it.
                return Err(item);
            } else {
                // Our `tail` is stale: another push moved on. Reload and retry.
                spin_loop();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes the oldest item, or returns `None` when the queue is empty (or, under
    /// concurrency, when the push of the next item is still in flight; see the
    /// [module docs](self)). Never blocks.
    pub fn try_pop(&self) -> Option<T> {
        let slots = self.slots.as_ref();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &slots[head & (self.one_lap - 1)];
            // Acquire: if the slot holds an item, its push has finished writing it.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head.wrapping_add(1) {
                match self.head.compare_exchange_weak(
                    head,
                    self.next(head),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the successful compare-and-swap made this thread the only
                        // one that owns position `head`; the stamp (acquired above) says the
                        // push of this position initialised the value, and nobody else reads
                        // or writes it until the stamp changes.
                        let item = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                        // Release: the next lap's push may overwrite the slot after this.
                        slot.stamp
                            .store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return Some(item);
                    }
                    Err(current) => head = current,
                }
            } else if stamp == head {
                // Nothing was published at `head`: empty (or a push is in flight).
                return None;
            } else {
                // Our `head` is stale: another pop moved on. Reload and retry.
                spin_loop();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// The number of items, as a consistent snapshot of head and tail; exact when no
    /// operation is in flight.
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::Acquire);
            let head = self.head.load(Ordering::Acquire);
            if self.tail.load(Ordering::Acquire) != tail {
                spin_loop();
                continue;
            }
            let hix = head & (self.one_lap - 1);
            let tix = tail & (self.one_lap - 1);
            return if hix < tix {
                tix - hix
            } else if hix > tix {
                self.capacity() - hix + tix
            } else if tail == head {
                0
            } else {
                self.capacity()
            };
        }
    }

    /// Whether the queue holds no item (a snapshot, as [`Queue::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is full (a snapshot, as [`Queue::len`]).
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Removes and drops every item; returns how many there were. Exclusive access makes
    /// the drain exact.
    pub fn clear(&mut self) -> usize {
        let mut n = 0;
        while self.try_pop().is_some() {
            n += 1;
        }
        n
    }
}

impl<T, S: AsRef<[Slot<T>]>> Drop for Queue<T, S> {
    fn drop(&mut self) {
        if core::mem::needs_drop::<T>() {
            self.clear();
        }
    }
}

impl<T, S: AsRef<[Slot<T>]>> fmt::Debug for Queue<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(all(test, not(gradcast_loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize as StdCounter;

    #[test]
    fn fifo_and_full() {
        let q: ArrayQueue<u32, 3> = ArrayQueue::new();
        assert!(q.is_empty());
        for lap in 0..5u32 {
            for i in 0..3 {
                q.try_push(lap * 10 + i).unwrap();
            }
            assert!(q.is_full());
            assert_eq!(q.try_push(99), Err(99));
            for i in 0..3 {
                assert_eq!(q.try_pop(), Some(lap * 10 + i));
            }
            assert_eq!(q.try_pop(), None);
        }
    }

    #[test]
    fn capacity_one_and_len_wraps() {
        let q: ArrayQueue<u8, 1> = ArrayQueue::new();
        for i in 0..10 {
            assert_eq!(q.len(), 0);
            q.try_push(i).unwrap();
            assert_eq!(q.len(), 1);
            assert_eq!(q.try_push(i), Err(i));
            assert_eq!(q.try_pop(), Some(i));
        }
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn heap_queue_sizes_once_and_rejects_zero() {
        assert_eq!(
            HeapQueue::<u8>::with_capacity(0).unwrap_err(),
            ConfigError::QueueTooSmall {
                capacity: 0,
                needed: 1
            }
        );
        let q = HeapQueue::with_capacity(5).unwrap();
        assert_eq!(q.capacity(), 5);
        for i in 0..5 {
            q.try_push(i).unwrap();
        }
        assert_eq!(q.try_push(7), Err(7));
        assert_eq!(q.len(), 5);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn drops_every_remaining_item_once() {
        static DROPS: StdCounter = StdCounter::new(0);
        struct D;
        impl Drop for D {
            fn drop(&mut self) {
                DROPS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
        }
        let q = HeapQueue::with_capacity(4).unwrap();
        for _ in 0..3 {
            assert!(q.try_push(D).is_ok());
        }
        drop(q.try_pop());
        assert_eq!(DROPS.load(core::sync::atomic::Ordering::Relaxed), 1);
        drop(q);
        assert_eq!(DROPS.load(core::sync::atomic::Ordering::Relaxed), 3);
    }

    /// Producers and consumers on real threads: every item comes out exactly once.
    #[cfg(feature = "std")]
    #[test]
    fn mpmc_exactly_once() {
        extern crate std;
        use alloc::vec::Vec;
        const PER: usize = if cfg!(miri) { 40 } else { 20_000 };
        const THREADS: usize = 2;
        let q = HeapQueue::with_capacity(4).unwrap();
        let seen: Vec<StdCounter> = (0..THREADS * PER).map(|_| StdCounter::new(0)).collect();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let q = &q;
                s.spawn(move || {
                    for i in 0..PER {
                        let mut item = t * PER + i;
                        while let Err(back) = q.try_push(item) {
                            item = back;
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..THREADS {
                let (q, seen) = (&q, &seen);
                s.spawn(move || {
                    let mut got = 0;
                    while got < PER {
                        match q.try_pop() {
                            Some(item) => {
                                seen[item].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                                got += 1;
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                });
            }
        });
        assert!(
            seen.iter()
                .all(|c| c.load(core::sync::atomic::Ordering::Relaxed) == 1)
        );
        assert!(q.is_empty());
    }
}

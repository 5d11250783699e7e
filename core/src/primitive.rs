//! The synchronisation primitives the queue, the barrier and the round protocol are built on:
//! `core`'s atomics normally, [loom]'s when the crate is compiled with `--cfg gradcast_loom`
//! (crossbeam's `primitive` shim). The cfg is prefixed so that it switches only this crate:
//! dependencies that check the conventional `cfg(loom)` keep their normal code. Every
//! concurrent module imports through here and nowhere
//! else, so the loom models in `core/tests/loom.rs` check the very code that ships.
//!
//! Also here: [`UnsafeCell`] with loom's closure API (`with`, `with_mut`), so loom can detect
//! unsynchronised accesses, and [`CachePadded`], which keeps hot atomics on their own cache
//! line.
//!
//! [loom]: https://docs.rs/loom

#[cfg(gradcast_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

#[cfg(not(gradcast_loom))]
pub(crate) use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// `std`'s mutex and condition variable (loom's under `cfg(gradcast_loom)`), for the parking relax
/// strategy.
#[cfg(all(feature = "std", gradcast_loom))]
pub(crate) use loom::sync::{Condvar, Mutex};
#[cfg(all(feature = "std", not(gradcast_loom)))]
pub(crate) use std::sync::{Condvar, Mutex};

/// One busy-wait step: the CPU's spin-loop hint (a yield to loom's scheduler under loom).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(gradcast_loom)]
    loom::hint::spin_loop();
    #[cfg(not(gradcast_loom))]
    core::hint::spin_loop();
}

/// Gives the rest of the time slice to another thread: the OS scheduler with `std`, loom's
/// scheduler under loom, and a spin-loop hint without either (there is nothing to yield to).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(gradcast_loom)]
    loom::thread::yield_now();
    #[cfg(all(not(gradcast_loom), feature = "std"))]
    std::thread::yield_now();
    #[cfg(all(not(gradcast_loom), not(feature = "std")))]
    core::hint::spin_loop();
}

/// Whether the current thread is unwinding from a panic (always `false` without `std`).
#[cfg(feature = "alloc")]
#[inline]
pub(crate) fn panicking() -> bool {
    #[cfg(feature = "std")]
    {
        std::thread::panicking()
    }
    #[cfg(not(feature = "std"))]
    {
        false
    }
}

/// `core::cell::UnsafeCell` behind loom's closure API; under loom, loom's own cell, which
/// reports accesses that are not ordered by happens-before.
#[cfg(gradcast_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `core::cell::UnsafeCell` behind loom's closure API (see the module docs).
#[cfg(not(gradcast_loom))]
#[derive(Debug, Default)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T: ?Sized>(core::cell::UnsafeCell<T>);

#[cfg(not(gradcast_loom))]
impl<T> UnsafeCell<T> {
    /// A cell holding `value`.
    #[inline]
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }
}

#[cfg(not(gradcast_loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Calls `f` with a shared pointer to the contents.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a unique pointer to the contents.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Aligns and pads a value to the length of a cache line (128 bytes where adjacent-line
/// prefetching pairs lines: x86-64, aarch64, powerpc64; 64 elsewhere; 32 on 32-bit Arm and
/// RISC-V), so two hot atomics never share one (false sharing).
#[cfg_attr(
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    ),
    repr(align(128))
)]
#[cfg_attr(
    any(target_arch = "arm", target_arch = "riscv32", target_arch = "riscv64"),
    repr(align(32))
)]
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64",
        target_arch = "arm",
        target_arch = "riscv32",
        target_arch = "riscv64"
    )),
    repr(align(64))
)]
#[derive(Debug, Default)]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

//! The stack's high-water mark, measured on a painted stack.
//!
//! cortex-m-rt fills the stack region (`_stack_end` .. `_stack_start`, see `memory.x`) with
//! `0xCCCC_CCCC` at reset (feature `paint-stack`). A word that no longer holds the pattern was
//! written by some frame: the lowest such word is the deepest the stack has reached. To measure
//! one call alone, [`Depth::start`] repaints the stack below the caller's frame, and
//! [`Depth::stop`] finds how far below it the call reached.

use core::arch::asm;
use core::ptr;

/// cortex-m-rt's paint.
const PAINT: u32 = cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    /// The top of the stack (its first push goes just below), from the linker script.
    static _stack_start: u32;
    /// The bottom of the stack region, from the linker script.
    static _stack_end: u32;
}

/// `(bottom, top)` of the stack region.
fn bounds() -> (usize, usize) {
    // Only the symbols' addresses are taken; they are never read.
    (
        ptr::addr_of!(_stack_end) as usize,
        ptr::addr_of!(_stack_start) as usize,
    )
}

/// The stack region's size in bytes.
pub fn size() -> usize {
    let (bottom, top) = bounds();
    top - bottom
}

/// The current stack pointer.
#[inline(always)]
fn sp() -> usize {
    let sp: usize;
    // SAFETY: copies the stack pointer into a register; no memory access, no side effect.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// The lowest address whose word no longer holds the paint (the stack's top when the whole
/// region is still painted).
fn lowest_touched() -> usize {
    let (bottom, top) = bounds();
    let mut addr = bottom;
    while addr < top {
        // SAFETY: `addr` is a word-aligned address inside the stack region (`bottom` is
        // 4-byte aligned by cortex-m-rt's linker script); reading stack memory below the live
        // frames has no side effect.
        if unsafe { ptr::read_volatile(addr as *const u32) } != PAINT {
            return addr;
        }
        addr += 4;
    }
    top
}

/// Room left unpainted below the caller's stack pointer for [`repaint_below`]'s own frame
/// (two saved registers today; the compiler may push them after reading the stack pointer,
/// so the painting stops well short of it).
const GUARD: usize = 256;

/// Paints the stack between its bottom and `limit`, which lies at least [`GUARD`] bytes
/// below the caller's stack pointer.
#[inline(never)]
fn repaint_below(limit: usize) {
    let (bottom, _) = bounds();
    let mut addr = bottom;
    while addr + 4 <= limit {
        // SAFETY: `[bottom, limit)` is stack memory below every live frame: the caller's
        // frame ends at its stack pointer, this function's frame (a few saved registers) lies
        // within the GUARD bytes below it, the AAPCS has no red zone, and no interrupt is
        // enabled that could run on it meanwhile; so no Rust object lives there. `addr` is
        // word-aligned and inside the region.
        unsafe { ptr::write_volatile(addr as *mut u32, PAINT) };
        addr += 4;
    }
}

/// Measures the stack depth of calls made between [`Depth::start`] and [`Depth::stop`] from
/// one frame, and the whole program's high-water mark.
pub struct Depth {
    /// The caller's stack pointer at `start`.
    base: usize,
    /// The most any measured call went below `base`, in bytes.
    deepest: usize,
    /// The lowest address the stack has reached since reset.
    lowest: usize,
}

impl Depth {
    /// A new measurement (the paint from reset still holds the startup's high-water mark).
    pub fn new() -> Self {
        Depth {
            base: 0,
            deepest: 0,
            lowest: lowest_touched(),
        }
    }

    /// Before the measured call: records the high-water mark so far, then repaints below the
    /// caller's frame.
    #[inline(always)]
    pub fn start(&mut self) {
        self.lowest = self.lowest.min(lowest_touched());
        self.base = sp();
        repaint_below(self.base.saturating_sub(GUARD));
    }

    /// After the measured call: how far below the caller's frame it reached.
    #[inline(always)]
    pub fn stop(&mut self) {
        let low = lowest_touched();
        self.lowest = self.lowest.min(low);
        self.deepest = self.deepest.max(self.base.saturating_sub(low));
    }

    /// Records the high-water mark now (e.g. at the end of the program).
    pub fn sample(&mut self) {
        self.lowest = self.lowest.min(lowest_touched());
    }

    /// The deepest measured call, in bytes below its caller's frame.
    pub fn encode_bytes(&self) -> usize {
        self.deepest
    }

    /// The program's high-water mark: bytes of stack used at the deepest point since reset.
    pub fn peak_bytes(&self) -> usize {
        bounds().1 - self.lowest
    }
}

//! Device buffers: the vectors a caller holds ([`ClBuffer`]), the grow-only scratch an
//! instance keeps between calls, and the blocking transfers between host and device.

use crate::{OpenCl, OpenClError};
use ocl::{Buffer, Queue};
use std::sync::MutexGuard;

/// A device-resident f32 vector of [`OpenCl`].
#[derive(Debug)]
pub struct ClBuffer {
    /// The device buffer: at least one element (OpenCL has no empty buffers), `len` used.
    pub(crate) buf: Buffer<f32>,
    /// The vector's length.
    pub(crate) len: usize,
}

impl ClBuffer {
    /// The underlying ocl buffer (its length may exceed [`ClBuffer::len`] by one for an
    /// empty vector).
    pub fn as_ocl(&self) -> &Buffer<f32> {
        &self.buf
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Grow-only device scratch buffers, reused across calls.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) counts: Option<Buffer<u32>>,
    pub(crate) bad: Option<Buffer<u32>>,
    pub(crate) item_counts: Option<Buffer<u32>>,
    pub(crate) offsets: Option<Buffer<u32>>,
    pub(crate) payload: Option<Buffer<u32>>,
}

/// `u32` of a length already checked against [`MAX_ELEMENTS`].
pub(crate) fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Ensures a grow-only scratch buffer holds at least `len` elements.
pub(crate) fn ensure<'a>(
    slot: &'a mut Option<Buffer<u32>>,
    queue: &Queue,
    len: usize,
) -> Result<&'a Buffer<u32>, OpenClError> {
    let len = len.max(1);
    let big_enough = slot.as_ref().is_some_and(|b| b.len() >= len);
    if !big_enough {
        // Grow geometrically so that varying sizes do not reallocate every call.
        let cap = slot.as_ref().map_or(len, |b| len.max(b.len() * 2));
        let b = Buffer::<u32>::builder()
            .queue(queue.clone())
            .len(cap)
            .build()
            .map_err(OpenClError::ocl("allocating scratch"))?;
        *slot = Some(b);
    }
    slot.as_ref().ok_or(OpenClError::Ocl {
        op: "allocating scratch",
        message: "no buffer".into(),
    })
}

impl OpenCl {
    pub(crate) fn scratch(&self) -> MutexGuard<'_, Scratch> {
        // Scratch contents never outlive one call, so a poisoned lock is still usable.
        self.scratch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `dst.len()` f32 values starting at element `offset`.
    pub(crate) fn read_f32(
        &self,
        buf: &Buffer<f32>,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<(), OpenClError> {
        if dst.is_empty() {
            return Ok(());
        }
        buf.cmd()
            .read(dst)
            .offset(offset)
            .enq()
            .map_err(OpenClError::ocl("reading a buffer"))
    }

    /// Reads `dst.len()` bytes starting at byte `offset` of any buffer (blocking).
    pub(crate) fn read_bytes(
        &self,
        mem: &ocl::core::Mem,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), OpenClError> {
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the read is blocking, so `dst` outlives it; callers pass
        // `offset + dst.len()` within the buffer's size in bytes (OpenCL checks it too and
        // returns CL_INVALID_VALUE otherwise).
        unsafe {
            ocl::core::enqueue_read_buffer::<u8, _, &mut ocl::core::Event, &ocl::core::Event>(
                &self.queue,
                mem,
                true,
                offset,
                dst,
                None,
                None,
            )
        }
        .map_err(|e| OpenClError::Ocl {
            op: "reading a buffer",
            message: e.to_string(),
        })
    }

    /// Writes `src` at byte 0 of any buffer (blocking).
    pub(crate) fn write_bytes(&self, mem: &ocl::core::Mem, src: &[u8]) -> Result<(), OpenClError> {
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the write is blocking, so `src` outlives it; callers size the buffer to at
        // least `src.len()` bytes (OpenCL checks it too).
        unsafe {
            ocl::core::enqueue_write_buffer::<u8, _, &mut ocl::core::Event, &ocl::core::Event>(
                &self.queue,
                mem,
                true,
                0,
                src,
                None,
                None,
            )
        }
        .map_err(|e| OpenClError::Ocl {
            op: "writing a buffer",
            message: e.to_string(),
        })
    }
}

//! [`Collectives`]: the few collective calls beside the transport that a data-parallel job
//! needs, with typed errors: the dense baseline (an `MPI_Allreduce` sum of f32 vectors) and
//! gathering one `u64` per rank (parameter checksums, counters). Plus [`checksum`], the
//! parameter checksum every rank compares.

use crate::error::MpiError;
use mpi::datatype::Equivalence;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::os::raw::{c_int, c_void};

/// A duplicate of a communicator whose errors are returned, not fatal, for the calls
/// beside the transport. Not `Send`: use it from the thread that owns it.
pub struct Collectives {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Bytes this rank contributed to [`Collectives::allreduce_sum`] calls.
    allreduce_bytes: u64,
    allreduce_calls: u64,
}

impl std::fmt::Debug for Collectives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collectives")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("allreduce_bytes", &self.allreduce_bytes)
            .field("allreduce_calls", &self.allreduce_calls)
            .finish()
    }
}

impl Collectives {
    /// Duplicates `comm` (collective: every rank calls it) and makes its errors returned.
    ///
    /// # Errors
    /// [`MpiError::Mpi`] when the error handler cannot be set.
    pub fn new<C: Communicator>(comm: &C) -> Result<Self, MpiError> {
        let dup = comm.duplicate();
        // SAFETY: `dup` is a live communicator owned here; RSMPI_ERRORS_RETURN is the
        // predefined handler, valid for the whole MPI session.
        let rc = unsafe { ffi::MPI_Comm_set_errhandler(dup.as_raw(), ffi::RSMPI_ERRORS_RETURN) };
        MpiError::check("MPI_Comm_set_errhandler", rc)?;
        Ok(Collectives {
            rank: dup.rank() as usize,
            size: dup.size() as usize,
            comm: dup,
            allreduce_bytes: 0,
            allreduce_calls: 0,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `out = sum over ranks of input`, element-wise (`MPI_Allreduce`, `MPI_SUM`): the dense
    /// fp32 baseline. Counts `4 * len` bytes contributed by this rank per call.
    ///
    /// The summation order inside MPI is the library's choice; every rank gets the same
    /// result from one call.
    ///
    /// # Errors
    /// [`MpiError::Config`] when the lengths differ or exceed MPI's 32-bit counts;
    /// [`MpiError::Mpi`] from the call.
    pub fn allreduce_sum(&mut self, input: &[f32], out: &mut [f32]) -> Result<(), MpiError> {
        if input.len() != out.len() || input.len() > c_int::MAX as usize {
            return Err(MpiError::Config {
                reason: format!(
                    "allreduce of {} elements into {}: the lengths must agree and fit 32 bits",
                    input.len(),
                    out.len()
                ),
            });
        }
        let dt = f32::equivalent_datatype();
        // SAFETY: both buffers hold `input.len()` f32 values, do not overlap (a shared and
        // an exclusive borrow), and the datatype is MPI's f32; RSMPI_SUM is predefined.
        let rc = unsafe {
            ffi::MPI_Allreduce(
                input.as_ptr() as *const c_void,
                out.as_mut_ptr() as *mut c_void,
                input.len() as c_int,
                dt.as_raw(),
                ffi::RSMPI_SUM,
                self.comm.as_raw(),
            )
        };
        MpiError::check("MPI_Allreduce", rc)?;
        self.allreduce_bytes += 4 * input.len() as u64;
        self.allreduce_calls += 1;
        Ok(())
    }

    /// `(calls, bytes contributed by this rank)` of [`Collectives::allreduce_sum`].
    pub fn allreduce_stats(&self) -> (u64, u64) {
        (self.allreduce_calls, self.allreduce_bytes)
    }

    /// Every rank's `value`, in rank order (`MPI_Allgather`).
    ///
    /// # Errors
    /// [`MpiError::Mpi`] from the call.
    pub fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, MpiError> {
        let mut all = vec![0u64; self.size];
        let dt = u64::equivalent_datatype();
        // SAFETY: one u64 sent, `size` u64 received into `all` (one per rank); the
        // datatype is MPI's u64; the communicator is live.
        let rc = unsafe {
            ffi::MPI_Allgather(
                &value as *const u64 as *const c_void,
                1,
                dt.as_raw(),
                all.as_mut_ptr() as *mut c_void,
                1,
                dt.as_raw(),
                self.comm.as_raw(),
            )
        };
        MpiError::check("MPI_Allgather", rc)?;
        Ok(all)
    }

    /// Every rank's `values` (the same length on every rank), concatenated in rank order.
    ///
    /// # Errors
    /// [`MpiError::Config`] beyond MPI's 32-bit counts; [`MpiError::Mpi`] from the call.
    pub fn all_gather_f64(&self, values: &[f64]) -> Result<Vec<f64>, MpiError> {
        if values
            .len()
            .checked_mul(self.size)
            .is_none_or(|t| t > c_int::MAX as usize)
        {
            return Err(MpiError::Config {
                reason: "gathered values exceed MPI's 32-bit counts".into(),
            });
        }
        let mut all = vec![0f64; values.len() * self.size];
        let dt = f64::equivalent_datatype();
        // SAFETY: `values.len()` f64 sent, that many per rank received into `all`; the
        // datatype is MPI's f64; the communicator is live.
        let rc = unsafe {
            ffi::MPI_Allgather(
                values.as_ptr() as *const c_void,
                values.len() as c_int,
                dt.as_raw(),
                all.as_mut_ptr() as *mut c_void,
                values.len() as c_int,
                dt.as_raw(),
                self.comm.as_raw(),
            )
        };
        MpiError::check("MPI_Allgather", rc)?;
        Ok(all)
    }

    /// Waits until every rank arrives (`MPI_Barrier`).
    ///
    /// # Errors
    /// [`MpiError::Mpi`] from the call.
    pub fn barrier(&self) -> Result<(), MpiError> {
        // SAFETY: the communicator is live.
        let rc = unsafe { ffi::MPI_Barrier(self.comm.as_raw()) };
        MpiError::check("MPI_Barrier", rc)
    }
}

/// A checksum of a parameter vector's exact bits (FNV-1a, 64 bits, over each value's
/// little-endian bytes): equal checksums on every rank mean bit-identical replicas (up to
/// a 2^-64 chance).
pub fn checksum(params: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in params {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

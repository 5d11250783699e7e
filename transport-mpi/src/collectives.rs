//! [`Collectives`]: the few collective calls beside the transport that a data-parallel job
//! needs, with typed errors: the dense baseline (an `MPI_Allreduce` sum of f32 vectors) and
//! gathering one `u64` per rank (parameter checksums, counters). Plus [`checksum`], the
//! parameter checksum every rank compares.

use crate::error::MpiError;
use crate::transport::duplicate;
use crate::wait::{DEFAULT_TIMEOUT, Requests};
use mpi::datatype::Equivalence;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::time::Duration;

/// A duplicate of a communicator whose errors are returned, not fatal, for the calls
/// beside the transport. Not `Send`: use it from the thread that owns it.
///
/// Every call is a non-blocking MPI collective polled against the timeout
/// ([`DEFAULT_TIMEOUT`] unless set): a rank that does not take part in time makes the call
/// return [`MpiError::Timeout`] (MPI cannot tell which rank is missing from a collective),
/// after which the collectives are unusable ([`MpiError::Unusable`]). The data travel through
/// buffers owned here (a timed-out operation never leaves MPI pointing into the caller's
/// memory), at the price of a copy in and out.
pub struct Collectives {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// The call that timed out, after which nothing works (a cell: the gathers take `&self`).
    gave_up: Cell<Option<&'static str>>,
    /// Bytes this rank contributed to [`Collectives::allreduce_sum`] calls.
    allreduce_bytes: u64,
    allreduce_calls: u64,
}

impl std::fmt::Debug for Collectives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collectives")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("timeout", &self.timeout)
            .field("gave_up", &self.gave_up.get())
            .field("allreduce_bytes", &self.allreduce_bytes)
            .field("allreduce_calls", &self.allreduce_calls)
            .finish()
    }
}

impl Collectives {
    /// Duplicates `comm` (collective: every rank calls it) and makes its errors returned,
    /// with the default timeout ([`DEFAULT_TIMEOUT`]).
    ///
    /// # Errors
    /// [`MpiError::Timeout`] when not every rank duplicates the communicator in time;
    /// [`MpiError::Mpi`] when an MPI call fails.
    pub fn new<C: Communicator>(comm: &C) -> Result<Self, MpiError> {
        Self::with_timeout(comm, DEFAULT_TIMEOUT)
    }

    /// As [`Collectives::new`], with `timeout` bounding every call.
    ///
    /// # Errors
    /// As [`Collectives::new`].
    pub fn with_timeout<C: Communicator>(comm: &C, timeout: Duration) -> Result<Self, MpiError> {
        let dup = duplicate(comm, timeout)?;
        Ok(Collectives {
            rank: dup.rank() as usize,
            size: dup.size() as usize,
            comm: dup,
            timeout,
            gave_up: Cell::new(None),
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

    /// The bound of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the bound of every call (every rank should use the same).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs one non-blocking collective, started by `start`, to completion within the
    /// timeout. On a timeout the operation is abandoned, `keep` (the buffers it uses) is
    /// leaked, and every later call fails.
    fn run<K>(
        &self,
        call: &'static str,
        keep: K,
        start: impl FnOnce(&mut ffi::MPI_Request) -> c_int,
    ) -> Result<K, MpiError> {
        if let Some(what) = self.gave_up.get() {
            return Err(MpiError::Unusable { what, round: None });
        }
        let mut reqs = Requests::with_capacity(1);
        reqs.start(call, None, false, start)?;
        match reqs.complete(self.timeout) {
            Ok(Ok(())) => Ok(keep),
            outcome => {
                reqs.abandon();
                std::mem::forget(keep);
                self.gave_up.set(Some(call));
                Err(outcome.err().unwrap_or(MpiError::Timeout {
                    what: call,
                    round: None,
                    missing: Vec::new(),
                    after: self.timeout,
                }))
            }
        }
    }

    /// `out = sum over ranks of input`, element-wise (`MPI_Iallreduce`, `MPI_SUM`): the
    /// dense fp32 baseline. Counts `4 * len` bytes contributed by this rank per call.
    ///
    /// The summation order inside MPI is the library's choice; every rank gets the same
    /// result from one call.
    ///
    /// # Errors
    /// [`MpiError::Config`] when the lengths differ or exceed MPI's 32-bit counts;
    /// [`MpiError::Timeout`], [`MpiError::Unusable`], [`MpiError::Mpi`].
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
        let send = input.to_vec();
        let mut recv = vec![0f32; input.len()];
        let (sp, rp) = (send.as_ptr(), recv.as_mut_ptr());
        let n = input.len() as c_int;
        let dt = f32::equivalent_datatype();
        let comm = self.comm.as_raw();
        let (_send, recv) = self.run("MPI_Iallreduce", (send, recv), |req| {
            // SAFETY: both buffers hold `n` f32 values, are owned by `run`'s `keep` (alive
            // until the operation completes, or leaked) and do not overlap; MPI's f32
            // datatype; RSMPI_SUM is predefined; the communicator is live.
            unsafe {
                ffi::MPI_Iallreduce(
                    sp as *const c_void,
                    rp as *mut c_void,
                    n,
                    dt.as_raw(),
                    ffi::RSMPI_SUM,
                    comm,
                    req,
                )
            }
        })?;
        out.copy_from_slice(&recv);
        self.allreduce_bytes += 4 * input.len() as u64;
        self.allreduce_calls += 1;
        Ok(())
    }

    /// `(calls, bytes contributed by this rank)` of [`Collectives::allreduce_sum`].
    pub fn allreduce_stats(&self) -> (u64, u64) {
        (self.allreduce_calls, self.allreduce_bytes)
    }

    /// Every rank's `value`, in rank order (`MPI_Iallgather`).
    ///
    /// # Errors
    /// [`MpiError::Timeout`], [`MpiError::Unusable`], [`MpiError::Mpi`].
    pub fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, MpiError> {
        self.all_gather(&[value])
    }

    /// Every rank's `values` (the same length on every rank), concatenated in rank order.
    ///
    /// # Errors
    /// [`MpiError::Config`] beyond MPI's 32-bit counts; [`MpiError::Timeout`],
    /// [`MpiError::Unusable`], [`MpiError::Mpi`].
    pub fn all_gather_f64(&self, values: &[f64]) -> Result<Vec<f64>, MpiError> {
        self.all_gather(values)
    }

    fn all_gather<T: Equivalence + Copy + Default>(
        &self,
        values: &[T],
    ) -> Result<Vec<T>, MpiError> {
        if values
            .len()
            .checked_mul(self.size)
            .is_none_or(|t| t > c_int::MAX as usize)
        {
            return Err(MpiError::Config {
                reason: "gathered values exceed MPI's 32-bit counts".into(),
            });
        }
        let send = values.to_vec();
        let mut all = vec![T::default(); values.len() * self.size];
        let (sp, rp) = (send.as_ptr(), all.as_mut_ptr());
        let n = values.len() as c_int;
        let dt = T::equivalent_datatype();
        let comm = self.comm.as_raw();
        let (_send, all) = self.run("MPI_Iallgather", (send, all), |req| {
            // SAFETY: `n` values sent from `send`, `n` per rank received into `all` (`size`
            // ranks); both owned by `run`'s `keep` (alive until completion, or leaked);
            // MPI's datatype for T; live communicator.
            unsafe {
                ffi::MPI_Iallgather(
                    sp as *const c_void,
                    n,
                    dt.as_raw(),
                    rp as *mut c_void,
                    n,
                    dt.as_raw(),
                    comm,
                    req,
                )
            }
        })?;
        Ok(all)
    }

    /// Every rank's `mine` (the same length on every rank), concatenated in rank order into
    /// `all` (`MPI_Iallgather` of bytes), within the timeout.
    ///
    /// # Errors
    /// [`MpiError::Config`] when `all` is not `size * mine.len()` bytes or the sizes exceed
    /// MPI's 32-bit counts; [`MpiError::Timeout`], [`MpiError::Unusable`], [`MpiError::Mpi`].
    pub fn all_gather_bytes(&self, mine: &[u8], all: &mut [u8]) -> Result<(), MpiError> {
        if mine.len().checked_mul(self.size) != Some(all.len()) || all.len() > c_int::MAX as usize {
            return Err(MpiError::Config {
                reason: format!(
                    "gathering {} bytes from each of {} ranks into {} bytes: the sizes must \
                     agree and fit MPI's 32-bit counts",
                    mine.len(),
                    self.size,
                    all.len()
                ),
            });
        }
        all.copy_from_slice(&self.all_gather(mine)?);
        Ok(())
    }

    /// Copies rank `root`'s `bytes` into every rank's `bytes` (`MPI_Ibcast`; the same length
    /// on every rank), within the timeout.
    ///
    /// # Errors
    /// [`MpiError::Config`] for a root that is not a rank or a length beyond MPI's 32-bit
    /// counts; [`MpiError::Timeout`], [`MpiError::Unusable`], [`MpiError::Mpi`].
    pub fn broadcast_bytes(&self, bytes: &mut [u8], root: usize) -> Result<(), MpiError> {
        if root >= self.size || bytes.len() > c_int::MAX as usize {
            return Err(MpiError::Config {
                reason: format!(
                    "broadcast of {} bytes from rank {root} of {}: the root must be a rank and \
                     the length fit 32 bits",
                    bytes.len(),
                    self.size
                ),
            });
        }
        let mut buf = bytes.to_vec();
        let bp = buf.as_mut_ptr();
        let n = bytes.len() as c_int;
        let dt = u8::equivalent_datatype();
        let comm = self.comm.as_raw();
        let buf = self.run("MPI_Ibcast", buf, |req| {
            // SAFETY: `buf` holds `n` bytes, sent from the root and received in place
            // elsewhere; owned by `run`'s `keep` (alive until completion, or leaked); MPI's
            // byte datatype; live communicator.
            unsafe { ffi::MPI_Ibcast(bp as *mut c_void, n, dt.as_raw(), root as c_int, comm, req) }
        })?;
        bytes.copy_from_slice(&buf);
        Ok(())
    }

    /// Waits until every rank arrives (`MPI_Ibarrier`), within the timeout.
    ///
    /// # Errors
    /// [`MpiError::Timeout`], [`MpiError::Unusable`], [`MpiError::Mpi`].
    pub fn barrier(&self) -> Result<(), MpiError> {
        let comm = self.comm.as_raw();
        self.run("MPI_Ibarrier", (), |req| {
            // SAFETY: the communicator is live; `req` is a valid out pointer.
            unsafe { ffi::MPI_Ibarrier(comm, req) }
        })
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

//! Non-blocking MPI operations completed against a deadline.
//!
//! A blocking MPI call cannot time out: a rank that never arrives (stopped, wedged, gone
//! without telling) keeps every other rank inside it forever. So every wait of this crate
//! starts non-blocking operations (`MPI_Isend`, `MPI_Irecv`, `MPI_Iallreduce`, ...) and
//! polls them with `MPI_Testsome` until they complete or the deadline passes. Polling spins
//! briefly, then yields to the scheduler between polls (no sleeping): MPI's own blocking
//! calls busy-poll the same way.
//!
//! An operation that did not complete may still read or write its buffers later (a peer
//! that wakes up, a shared-memory transport that copies straight into this process), so
//! whoever gave up on it must keep those buffers alive: the transport and the collectives
//! leak them ([`std::mem::forget`]) instead of freeing them, and never use them again.

use crate::error::MpiError;
use mpi::ffi;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

/// Pending requests, with the peer rank of each (`None`: a non-blocking collective).
pub(crate) struct Requests {
    reqs: Vec<ffi::MPI_Request>,
    peers: Vec<Option<usize>>,
    receives: Vec<bool>,
    indices: Vec<c_int>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("pending", &self.pending())
            .finish()
    }
}

// SAFETY: MPI request handles are plain handles that any thread may pass to MPI as long as
// MPI runs with `Threading::Serialized` or higher and no two threads call MPI at once; the
// owners (the transport, whose constructor checks the threading level, and the collectives,
// which are not `Send`) only touch them through `&mut self`.
unsafe impl Send for Requests {}

/// `MPI_REQUEST_NULL`.
fn null() -> ffi::MPI_Request {
    // SAFETY: a constant the MPI library defines, read-only.
    unsafe { ffi::RSMPI_REQUEST_NULL }
}

impl Requests {
    /// Room for `n` requests.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Requests {
            reqs: Vec::with_capacity(n),
            peers: Vec::with_capacity(n),
            receives: Vec::with_capacity(n),
            indices: vec![0; n],
        }
    }

    /// Records a started operation: `make` receives the request handle to fill (through
    /// the MPI call that starts it) and returns the call's code.
    pub(crate) fn start(
        &mut self,
        call: &'static str,
        peer: Option<usize>,
        receive: bool,
        make: impl FnOnce(&mut ffi::MPI_Request) -> c_int,
    ) -> Result<(), MpiError> {
        let mut req = null();
        MpiError::check(call, make(&mut req))?;
        self.reqs.push(req);
        self.peers.push(peer);
        self.receives.push(receive);
        if self.indices.len() < self.reqs.len() {
            self.indices.resize(self.reqs.len(), 0);
        }
        Ok(())
    }

    /// Requests not yet complete.
    pub(crate) fn pending(&self) -> usize {
        let null = null();
        self.reqs.iter().filter(|&&r| r != null).count()
    }

    /// Polls until every request has completed (then forgets them all and returns
    /// `Ok(Ok(()))`) or `timeout` has passed since the call (then returns the peers of the
    /// pending requests, ascending, and keeps them pending).
    ///
    /// # Errors
    /// [`MpiError::Mpi`] when polling fails (the requests stay as they are).
    pub(crate) fn complete(
        &mut self,
        timeout: Duration,
    ) -> Result<Result<(), Vec<Option<usize>>>, MpiError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut active = self.pending();
        let mut idle_polls = 0u32;
        while active > 0 {
            let mut done: c_int = 0;
            // SAFETY: `reqs` holds `reqs.len()` handles (completed ones are
            // MPI_REQUEST_NULL, which MPI skips); `indices` has room for as many indices;
            // statuses are ignored.
            let rc = unsafe {
                ffi::MPI_Testsome(
                    self.reqs.len() as c_int,
                    self.reqs.as_mut_ptr(),
                    &mut done,
                    self.indices.as_mut_ptr(),
                    ffi::RSMPI_STATUSES_IGNORE,
                )
            };
            MpiError::check("MPI_Testsome", rc)?;
            if done > 0 && done != ffi::MPI_UNDEFINED {
                active = active.saturating_sub(done as usize);
                idle_polls = 0;
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let null = null();
                let mut missing: Vec<Option<usize>> = self
                    .reqs
                    .iter()
                    .zip(&self.peers)
                    .filter(|(r, _)| **r != null)
                    .map(|(_, &p)| p)
                    .collect();
                missing.sort_unstable();
                missing.dedup();
                return Ok(Err(missing));
            }
            if idle_polls < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            idle_polls = idle_polls.saturating_add(1);
        }
        self.reqs.clear();
        self.peers.clear();
        self.receives.clear();
        Ok(Ok(()))
    }

    /// Gives up on every pending request: cancels the receives and frees the point-to-point
    /// handles (MPI completes or drops those operations on its own). A non-blocking
    /// collective can be neither cancelled nor freed (the standard makes both erroneous):
    /// its handle is simply forgotten. The buffers they use must stay alive (the callers
    /// leak them).
    pub(crate) fn abandon(&mut self) {
        let null = null();
        for ((req, &receive), peer) in self.reqs.iter_mut().zip(&self.receives).zip(&self.peers) {
            if *req == null || peer.is_none() {
                continue;
            }
            if receive {
                // SAFETY: a live request handle of this process. A failure (the receive
                // completed meanwhile, say) changes nothing here; the code is ignored.
                let _ = unsafe { ffi::MPI_Cancel(req) };
            }
            // SAFETY: as above; MPI_Request_free sets the handle to MPI_REQUEST_NULL and lets
            // the operation finish or be cancelled on its own.
            let _ = unsafe { ffi::MPI_Request_free(req) };
        }
        self.reqs.clear();
        self.peers.clear();
        self.receives.clear();
    }
}

/// The transport's default timeout: the core's, [`gradcast_core::round::DEFAULT_TIMEOUT`].
pub const DEFAULT_TIMEOUT: Duration = gradcast_core::round::DEFAULT_TIMEOUT;

//! [`Mpi`]: the [`Network`] of a job under `mpirun`, one process per rank (cargo feature
//! `mpi`; needs Open MPI and libclang to build).
//!
//! ```no_run
//! use gradcast_candle::mpi::{Mpi, initialize};
//! use gradcast_candle::{Config, Cpu, Sharing};
//! # fn main() -> gradcast_candle::Result<()> {
//! let universe = initialize()?; // once per process, kept alive until the end
//! let world = universe.world();
//! let varmap = candle_nn::VarMap::new();
//! // ... build the model on `varmap` ...
//! let sharing = Sharing::new(&varmap, Config::default(), Cpu::default(), Mpi::new(&world)?)?;
//! # Ok(())
//! # }
//! ```
//!
//! gradcast's rounds travel by `gradcast_mpi::MpiTransport` (an all-gather of every rank's
//! packets); the dense fp32 exchange is an `MPI_Allreduce`; dense fp16 and the set-up checks
//! use all-gathers, the initial parameters a broadcast. Every call goes to a duplicate of the
//! communicator whose errors are returned, not fatal. A rank that fails outside a collective
//! call leaves the others waiting: end the job with `MPI_Abort` (`world.abort(1)`).

use crate::error::{Error, Result};
use crate::network::Network;
use gradcast_mpi::mpi::environment::{Threading, Universe};
use gradcast_mpi::mpi::topology::{Communicator, SimpleCommunicator};
use gradcast_mpi::{Collectives, MpiTransport};

/// The MPI transport crate (and through it rsmpi, `gradcast_mpi::mpi`), re-exported so that
/// callers use the same MPI bindings.
pub use gradcast_mpi;

/// Initializes MPI with the threading level the transport needs (`Serialized`).
///
/// # Errors
/// [`Error::Network`] when MPI was already initialized.
pub fn initialize() -> Result<Universe> {
    gradcast_mpi::mpi::initialize_with_threading(Threading::Serialized)
        .map(|(u, _)| u)
        .ok_or_else(|| Error::Network {
            kind: gradcast_core::ErrorKind::Transport,
            message: "MPI was already initialized".into(),
        })
}

/// The processes of an MPI communicator; see the [module docs](self).
pub struct Mpi {
    coll: Collectives,
    comm: SimpleCommunicator,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.coll.rank())
            .field("size", &self.coll.size())
            .finish_non_exhaustive()
    }
}

impl Mpi {
    /// The network of `comm`'s ranks (collective: every rank calls it).
    ///
    /// # Errors
    /// [`Error::Network`] when the communicator cannot be duplicated with returned errors.
    pub fn new<C: Communicator>(comm: &C) -> Result<Self> {
        Ok(Mpi {
            coll: Collectives::new(comm).map_err(Error::network)?,
            comm: comm.duplicate(),
            scratch: Vec::new(),
        })
    }

    /// The collective calls beside the transport.
    pub fn collectives(&self) -> &Collectives {
        &self.coll
    }
}

impl Network for Mpi {
    type Transport = MpiTransport;

    fn rank(&self) -> usize {
        self.coll.rank()
    }

    fn ranks(&self) -> usize {
        self.coll.size()
    }

    fn round_transport(
        &mut self,
        parties: usize,
        max_packet_len: usize,
    ) -> Result<(MpiTransport, u32)> {
        let t = MpiTransport::new(&self.comm, parties, max_packet_len).map_err(Error::network)?;
        let first = t.first_sender();
        Ok((t, first))
    }

    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<()> {
        self.scratch.clear();
        self.scratch.extend_from_slice(values);
        self.coll
            .allreduce_sum(&self.scratch, values)
            .map_err(Error::network)
    }

    fn all_gather(&mut self, mine: &[u8], all: &mut [u8]) -> Result<()> {
        self.coll
            .all_gather_bytes(mine, all)
            .map_err(Error::network)
    }

    fn broadcast(&mut self, bytes: &mut [u8]) -> Result<()> {
        self.coll.broadcast_bytes(bytes, 0).map_err(Error::network)
    }
}

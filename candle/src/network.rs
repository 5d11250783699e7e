//! How the processes of a job reach each other: [`Network`], with [`InProcess`] (one
//! process: every worker is local) and, with the `mpi` feature, `mpi::Mpi` (one
//! process per rank under `mpirun`).
//!
//! A network provides what the exchanges need: the round protocol's transport for gradcast,
//! an all-reduce for the dense fp32 baseline, an all-gather (dense fp16, checks), a
//! broadcast (the initial parameters). Every rank runs the same number of local workers;
//! rank `r`'s local worker `j` is global worker `r * P + j`.

use crate::error::{Error, Result};
use gradcast_core::round::{Local, Transport};

/// The processes of a job and the collective operations between them. See the
/// [module docs](self).
///
/// Every method except [`Network::rank`] and [`Network::ranks`] is collective: every rank
/// calls it, in the same order, with the same sizes.
pub trait Network {
    /// The round protocol's transport (gradcast's exchange).
    type Transport: Transport;

    /// This process's rank, `0..ranks()`.
    fn rank(&self) -> usize;

    /// The number of processes.
    fn ranks(&self) -> usize;

    /// The round transport for `parties` local workers per rank and packets of at most
    /// `max_packet_len` bytes, and the global sender id of this rank's first worker.
    ///
    /// # Errors
    /// [`Error::Network`] when the transport cannot be set up.
    fn round_transport(
        &mut self,
        parties: usize,
        max_packet_len: usize,
    ) -> Result<(Self::Transport, u32)>;

    /// `values = sum over ranks of values`, element-wise, the same result on every rank
    /// (the dense fp32 exchange).
    ///
    /// # Errors
    /// [`Error::Network`].
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<()>;

    /// Every rank's `mine` (the same length on every rank), concatenated in rank order
    /// into `all` (`ranks() * mine.len()` bytes).
    ///
    /// # Errors
    /// [`Error::Network`]; [`Error::Count`] when `all` has the wrong length.
    fn all_gather(&mut self, mine: &[u8], all: &mut [u8]) -> Result<()>;

    /// Copies rank 0's `bytes` into every rank's `bytes` (the same length everywhere).
    ///
    /// # Errors
    /// [`Error::Network`].
    fn broadcast(&mut self, bytes: &mut [u8]) -> Result<()>;

    /// Every rank's `mine`, which may differ in length, in rank order.
    ///
    /// # Errors
    /// As [`Network::all_gather`].
    fn all_gather_varlen(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let ranks = self.ranks();
        let mut lens = vec![0u8; 8 * ranks];
        self.all_gather(&(mine.len() as u64).to_le_bytes(), &mut lens)?;
        let lens: Vec<usize> = lens
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
            .collect();
        let max = lens.iter().copied().max().unwrap_or(0);
        let mut padded = mine.to_vec();
        padded.resize(max, 0);
        let mut all = vec![0u8; max * ranks];
        self.all_gather(&padded, &mut all)?;
        Ok(all
            .chunks_exact(max.max(1))
            .zip(&lens)
            .map(|(c, &l)| c[..l.min(c.len())].to_vec())
            .collect())
    }

    /// `values = sum over ranks of values`, added in rank order (deterministic), for the
    /// driver's per-epoch totals.
    ///
    /// # Errors
    /// As [`Network::all_gather`].
    fn sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
        if self.ranks() == 1 {
            return Ok(());
        }
        let mine: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut all = vec![0u8; mine.len() * self.ranks()];
        self.all_gather(&mine, &mut all)?;
        values.iter_mut().for_each(|v| *v = 0.0);
        for rank in all.chunks_exact(mine.len().max(1)) {
            for (v, b) in values.iter_mut().zip(rank.chunks_exact(8)) {
                *v += f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            }
        }
        Ok(())
    }
}

/// One process: every worker is local, nothing crosses a process boundary. The round
/// transport is the core's [`Local`]; the collectives are no-ops (or copies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InProcess;

impl InProcess {
    /// The single-process network.
    pub fn new() -> Self {
        InProcess
    }
}

impl Network for InProcess {
    type Transport = Local;

    fn rank(&self) -> usize {
        0
    }

    fn ranks(&self) -> usize {
        1
    }

    fn round_transport(&mut self, _parties: usize, _max_packet_len: usize) -> Result<(Local, u32)> {
        Ok((Local, 0))
    }

    fn all_reduce_sum(&mut self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_gather(&mut self, mine: &[u8], all: &mut [u8]) -> Result<()> {
        if all.len() != mine.len() {
            return Err(Error::Count {
                what: "all_gather output bytes",
                expected: mine.len(),
                got: all.len(),
            });
        }
        all.copy_from_slice(mine);
        Ok(())
    }

    fn broadcast(&mut self, _bytes: &mut [u8]) -> Result<()> {
        Ok(())
    }
}

//! `gradcast train --transport mpi`: the main job across MPI ranks (build with `--features
//! mpi`, run under `mpirun`).
//!
//! ```text
//! cargo build --release -p gradcast-cli --features mpi
//! mpirun --allow-run-as-root --oversubscribe -np 4 target/release/gradcast train --transport mpi --workers 1
//! ```
//!
//! The job is [`crate::train::run`] unchanged, over gradcast-candle's MPI network: every rank
//! runs `--workers` local workers (rank `r`'s worker `j` is global worker `r * workers + j`),
//! draws the same global batches and computes its own workers' shards; gradcast's messages
//! travel by an all-gather, the dense fp32 baseline by `MPI_Allreduce`. So a 4-rank job with
//! one worker per rank trains the same model on the same data as `gradcast train --workers
//! 4`, and gradcast ends with the same parameters bit for bit. Every backend works.
//!
//! Every rank prints one line with both runs' parameter checksums (stdout; stderr with
//! `--json`); rank 0 prints the epoch table and the summary and writes the files. A failure
//! after MPI started ends the whole job (`MPI_Abort`), so no rank waits forever for a peer
//! that is gone; a bad option fails on every rank alike before any communication.

use crate::cli::TrainArgs;
use crate::error::CliError;
use clap::ValueEnum;

/// How the workers' gradients travel (`--transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum TransportArg {
    /// Workers of this process.
    #[default]
    Local,
    /// MPI ranks (under mpirun); needs a build with `--features mpi`.
    Mpi,
}

/// Runs `gradcast train --transport mpi` on this rank.
///
/// # Errors
/// Without the `mpi` feature, [`CliError::Usage`].
#[cfg(not(feature = "mpi"))]
pub fn train(_a: &TrainArgs) -> Result<(), CliError> {
    Err(CliError::Usage(
        "--transport mpi: this build has no MPI support; rebuild with `--features mpi` (needs \
         Open MPI and libclang) and run under mpirun"
            .into(),
    ))
}

/// Runs `gradcast train --transport mpi` on this rank.
///
/// # Errors
/// Bad options, data, model, training and MPI errors (an error after training started ends
/// the whole job with `MPI_Abort`).
#[cfg(feature = "mpi")]
pub fn train(a: &TrainArgs) -> Result<(), CliError> {
    use gradcast_candle::mpi::{Mpi, initialize};
    use gradcast_mpi::mpi::topology::Communicator;

    let universe = initialize().map_err(crate::train::candle_err)?;
    let world = universe.world();
    let place = crate::train::Place {
        rank: world.rank() as usize,
        ranks: world.size() as usize,
        checksums: true,
    };
    let result = crate::train::run(a, place, || {
        Mpi::new(&world).map_err(crate::train::candle_err)
    });
    if let Err(e) = &result
        && world.size() > 1
        && !matches!(e, CliError::Usage(_) | CliError::Backend(_))
    {
        // The other ranks may wait in a collective call for this one: end the job.
        eprintln!("rank {}: error: {e}", world.rank());
        world.abort(1);
    }
    result
}

//! `gradcast bench`: the kernel benchmarks of every backend compiled in.

use crate::error::CliError;
use clap::Args;

/// Options of `gradcast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `gradcast bench`.
///
/// # Errors
/// Backend errors.
pub fn run(_a: &BenchArgs) -> Result<(), CliError> {
    Err(CliError::Backend("bench is not available yet".into()))
}

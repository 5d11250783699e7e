//! # gradcast-cli
//!
//! The `gradcast` command-line tool:
//!
//! * `gradcast train`: the main job. Data-parallel training of a candle classifier (an MLP,
//!   or a small convnet) on the UCI digits (shipped inside smartcore, no download) or on
//!   MNIST-format IDX files, with P workers, once with a dense baseline and once with
//!   gradcast, compared side by side (accuracy, bytes on the wire, time), with a PNG plot
//!   and a JSON summary. It is a thin user of gradcast-candle's training driver
//!   ([`gradcast_candle::driver`]), in one process or across MPI ranks.
//! * `gradcast encode | decode | inspect`: raw little-endian f32 files to messages and back,
//!   in gradcast's format or DL4J's; `inspect` validates a message and prints its header and
//!   statistics.
//! * `gradcast bench`: the kernel benchmarks of every backend compiled in.
//!
//! Every failure is a [`CliError`] with a message that says what is wrong; bad arguments exit
//! with code 2, bad files and failed work with code 1.
//!
//! # Example
//!
//! The commands are functions of this library too: `gradcast encode` and `gradcast decode`
//! on raw little-endian f32 files.
//!
//! ```
//! use gradcast_cli::tools::{self, DecodeArgs, EncodeArgs, EncodingArg, Format};
//!
//! let dir = std::env::temp_dir().join(format!("gradcast-cli-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let (input, msg, output) = (dir.join("r.f32"), dir.join("m.gcm"), dir.join("u.f32"));
//! let residual: Vec<u8> = [0.5f32, -2.0, 0.1, 1.0]
//!     .iter()
//!     .flat_map(|x| x.to_le_bytes())
//!     .collect();
//! std::fs::write(&input, residual)?;
//! tools::encode(&EncodeArgs {
//!     input,
//!     output: msg.clone(),
//!     tau: 1.0,
//!     format: Format::Native,
//!     encoding: EncodingArg::Auto,
//!     cap: None,
//!     sender: 0,
//!     round: 0,
//!     residual: None,
//! })?;
//! tools::decode(&DecodeArgs {
//!     input: msg,
//!     output: output.clone(),
//!     format: Format::Native,
//!     max_elements: tools::DEFAULT_MAX_ELEMENTS,
//! })?;
//! assert_eq!(tools::read_f32(&output)?, [0.0, -1.0, 0.0, 1.0]);
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// The CLI is a std program: the workspace's no_std-oriented lints (prefer `core`/`alloc` paths)
// only add noise here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod backends;
pub mod bench;
pub mod cli;
pub mod data;
pub mod error;
pub mod idx;
pub mod mpi;
pub mod netmodel;
pub mod plot;
pub mod report;
pub mod study;
pub mod tools;
pub mod train;

pub use error::CliError;

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

/// Parses `args` (program name first), runs the command, prints errors to stderr and returns
/// the exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // clap prints help and version to stdout with code 0, errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

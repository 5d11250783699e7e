//! The CLI's one error type: every failure a user can cause ends here, with a message that
//! says what is wrong, and maps to an exit code.

use std::fmt;
use std::path::PathBuf;

/// Exit code for bad command-line arguments (the same as clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code for bad input files and failed work.
pub const EXIT_FAILURE: u8 = 1;

/// Everything that can go wrong in a `gradcast` command.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// An option value is out of its domain (reported with exit code 2).
    Usage(String),
    /// A file could not be read or written.
    Io {
        /// What was being done (`"read"`, `"write"`, `"create directory"`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file's content is not what the command expects.
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The core rejected a message, a vector or a parameter.
    Core {
        /// What was being done.
        context: String,
        /// The core's error.
        source: gradcast_core::Error,
    },
    /// A data set could not be loaded.
    Data(crate::data::DataError),
    /// A backend was asked for that this build does not have, or that failed to start.
    Backend(String),
    /// The plot could not be drawn.
    Plot(String),
    /// Anything else that went wrong while training.
    Train(String),
}

impl CliError {
    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Backend(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Wraps a core error (of any concern) with what was being done.
    pub fn core(context: impl Into<String>, source: impl Into<gradcast_core::Error>) -> Self {
        CliError::Core {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A bad-file error.
    pub fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CliError::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "invalid argument: {m}"),
            CliError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            CliError::BadFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            CliError::Core { context, source } => write!(f, "{context}: {source}"),
            CliError::Data(e) => write!(f, "{e}"),
            CliError::Backend(m) => write!(f, "backend: {m}"),
            CliError::Plot(m) => write!(f, "cannot draw the plot: {m}"),
            CliError::Train(m) => write!(f, "training failed: {m}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Io { source, .. } => Some(source),
            CliError::Data(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::data::DataError> for CliError {
    fn from(e: crate::data::DataError) -> Self {
        CliError::Data(e)
    }
}

impl From<gradcast_candle::Error> for CliError {
    fn from(e: gradcast_candle::Error) -> Self {
        crate::train::candle_err(e)
    }
}

/// Reads a whole file, with the path in the error.
///
/// # Errors
/// [`CliError::Io`].
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a whole file, with the path in the error.
///
/// # Errors
/// [`CliError::Io`].
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|source| CliError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

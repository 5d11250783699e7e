//! The CPU backend's error type.

use core::fmt;
use gradcast_core::{Classify, Error, ErrorKind};

/// Errors of the CPU backend.
///
/// The CPU backend has no device of its own that can fail, so every error it reports is one
/// of the core's, classified exactly as the reference classifies it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum CpuError {
    /// An error of the core (wire format, codec, sizes).
    Core(Error),
}

impl From<Error> for CpuError {
    fn from(e: Error) -> Self {
        CpuError::Core(e)
    }
}

impl Classify for CpuError {
    fn kind(&self) -> ErrorKind {
        match self {
            CpuError::Core(e) => e.kind(),
        }
    }
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuError::Core(e) => write!(f, "cpu backend: {e}"),
        }
    }
}

impl core::error::Error for CpuError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            CpuError::Core(e) => Some(e),
        }
    }
}

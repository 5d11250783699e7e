//! The crate's error type, [`CudaError`].

use core::fmt;
use cudarc::driver::DriverError;
use gradcast_core::{Classify, Error, ErrorKind};

/// Everything that can go wrong in the CUDA backend.
///
/// Input errors are the core's [`Error`] (wrapped in [`CudaError::Core`]), reported exactly as
/// the reference codec reports them; the other variants are about the machine: a missing
/// driver or NVRTC library, no such device, a failing driver call, a kernel that does not
/// compile.
#[derive(Debug)]
#[non_exhaustive]
pub enum CudaError {
    /// An input error, identical to the reference codec's.
    Core(Error),
    /// The CUDA driver library (`libcuda.so`) cannot be loaded, or it lacks a function this
    /// build needs: there is no usable NVIDIA driver on this machine.
    NoDriver {
        /// What failed.
        reason: String,
    },
    /// The NVRTC library (`libnvrtc.so`) cannot be loaded, so kernels cannot be compiled.
    NoNvrtc {
        /// What failed.
        reason: String,
    },
    /// The driver is present but the requested device is not (or the driver cannot start).
    NoDevice {
        /// The device ordinal asked for.
        ordinal: usize,
        /// What the driver said.
        reason: String,
    },
    /// A CUDA driver call failed.
    Driver {
        /// The operation that failed.
        op: &'static str,
        /// The driver's error code.
        source: DriverError,
    },
    /// NVRTC rejected a kernel source: the log and the options that produced it.
    Compile {
        /// The kernel file (`"encode.cu"`, ...).
        kernel: &'static str,
        /// The NVRTC result code, in words.
        status: String,
        /// The options passed to NVRTC (architecture included).
        options: Vec<String>,
        /// NVRTC's compilation log.
        log: String,
    },
    /// A device result disagrees with what the data implies (a benchmark's self-check).
    WrongResult {
        /// What differs.
        what: String,
    },
    /// A vector is too long for a kernel's index arithmetic.
    TooLong {
        /// The operation.
        op: &'static str,
        /// The length asked for.
        len: usize,
    },
}

impl CudaError {
    /// Wraps a failing driver call.
    pub(crate) fn driver(op: &'static str) -> impl FnOnce(DriverError) -> CudaError {
        move |source| CudaError::Driver { op, source }
    }
}

impl From<Error> for CudaError {
    fn from(e: Error) -> Self {
        CudaError::Core(e)
    }
}

impl Classify for CudaError {
    fn kind(&self) -> ErrorKind {
        match self {
            CudaError::Core(e) => e.kind(),
            CudaError::NoDriver { .. }
            | CudaError::NoNvrtc { .. }
            | CudaError::NoDevice { .. }
            | CudaError::Driver { .. } => ErrorKind::Device,
            CudaError::Compile { .. } => ErrorKind::KernelCompile,
            CudaError::TooLong { .. } => ErrorKind::Unsupported,
            CudaError::WrongResult { .. } => ErrorKind::Other,
        }
    }
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::Core(e) => write!(f, "{e}"),
            CudaError::NoDriver { reason } => write!(f, "no CUDA driver: {reason}"),
            CudaError::NoNvrtc { reason } => write!(
                f,
                "NVRTC is not available (kernels cannot be compiled): {reason}; \
                 put libnvrtc.so.12 on LD_LIBRARY_PATH"
            ),
            CudaError::NoDevice { ordinal, reason } => {
                write!(f, "no CUDA device {ordinal}: {reason}")
            }
            CudaError::Driver { op, source } => {
                write!(f, "CUDA driver call failed in {op}: {source}")
            }
            CudaError::Compile {
                kernel,
                status,
                options,
                log,
            } => {
                writeln!(f, "[Compilation Error] kernels/{kernel}: {status}")?;
                writeln!(f, "[Options] {}", options.join(" "))?;
                write!(f, "[Log]\n{log}")
            }
            CudaError::WrongResult { what } => write!(f, "wrong device result: {what}"),
            CudaError::TooLong { op, len } => {
                write!(
                    f,
                    "{op}: {len} elements is more than the CUDA kernels can index"
                )
            }
        }
    }
}

impl std::error::Error for CudaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CudaError::Core(e) => Some(e),
            CudaError::Driver { source, .. } => Some(source),
            _ => None,
        }
    }
}

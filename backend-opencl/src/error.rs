//! The OpenCL backend's error type.

use core::fmt;
use gradcast_core::{Classify, ErrorKind};

/// Everything that can go wrong in the OpenCL backend.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum OpenClError {
    /// An error of the core (bad threshold, non-finite residual, buffer too small, size
    /// mismatch, ...): the same value the reference backend returns for the same input.
    Core(gradcast_core::Error),
    /// No OpenCL platform is installed (the ICD loader found none). Detected with one
    /// `clGetPlatformIDs` call, without ocl's 10 s retry loop.
    NoPlatform {
        /// The OpenCL status code of the probe (0 when it succeeded but found 0 platforms).
        status: i32,
    },
    /// Platforms exist, but none has a device matching the request.
    NoDevice {
        /// What was asked for.
        wanted: String,
    },
    /// The kernel program failed to build for the device.
    Build {
        /// The device the build was for.
        device: String,
        /// The compiler options used.
        options: String,
        /// The compiler's build log.
        log: String,
    },
    /// A buffer longer than the backend supports (the wire format's `MAX_ELEMENTS`).
    TooLong {
        /// The requested length.
        len: usize,
        /// The largest supported length.
        max: usize,
    },
    /// An OpenCL call failed.
    Ocl {
        /// What the backend was doing.
        op: &'static str,
        /// The driver's (or ocl's) message.
        message: String,
    },
}

impl OpenClError {
    /// The core error inside, if this is one.
    pub fn core(&self) -> Option<&gradcast_core::Error> {
        match self {
            OpenClError::Core(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this error says that no OpenCL platform or matching device exists (tests use it
    /// to print `SKIP: ...`).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            OpenClError::NoPlatform { .. } | OpenClError::NoDevice { .. }
        )
    }

    pub(crate) fn ocl(op: &'static str) -> impl FnOnce(ocl::Error) -> OpenClError {
        move |e| OpenClError::Ocl {
            op,
            message: e.to_string(),
        }
    }
}

impl From<gradcast_core::Error> for OpenClError {
    fn from(e: gradcast_core::Error) -> Self {
        OpenClError::Core(e)
    }
}

impl Classify for OpenClError {
    fn kind(&self) -> ErrorKind {
        match self {
            OpenClError::Core(e) => e.kind(),
            OpenClError::NoPlatform { .. } | OpenClError::NoDevice { .. } => ErrorKind::Device,
            OpenClError::Build { .. } => ErrorKind::KernelCompile,
            OpenClError::TooLong { .. } => ErrorKind::InvalidArgument,
            OpenClError::Ocl { .. } => ErrorKind::Device,
        }
    }
}

impl fmt::Display for OpenClError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenClError::Core(e) => fmt::Display::fmt(e, f),
            OpenClError::NoPlatform { status } => write!(
                f,
                "no OpenCL platform installed (clGetPlatformIDs status {status}); install an ICD \
                 such as pocl-opencl-icd"
            ),
            OpenClError::NoDevice { wanted } => {
                write!(f, "no OpenCL device matches the request: {wanted}")
            }
            OpenClError::Build {
                device,
                options,
                log,
            } => write!(
                f,
                "OpenCL kernel build failed on {device} with options `{options}`\n\
                 ----- build log -----\n{log}\n---------------------"
            ),
            OpenClError::TooLong { len, max } => write!(
                f,
                "buffer of {len} elements is longer than the {max} the OpenCL backend supports"
            ),
            OpenClError::Ocl { op, message } => write!(f, "OpenCL error while {op}: {message}"),
        }
    }
}

impl std::error::Error for OpenClError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenClError::Core(e) => Some(e),
            _ => None,
        }
    }
}

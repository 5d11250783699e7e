#![doc = include_str!("../README.md")]
// A std-only crate (OpenCL needs the host OS): core/alloc paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod backend;
pub mod bench;
mod buffer;
mod device;
mod discovery;
mod error;
mod program;

pub use buffer::ClBuffer;
pub use device::{Layout, Limits, OpenCl};
pub use discovery::{DeviceDesc, DeviceKind, list_devices, probe_platforms};
pub use error::OpenClError;
pub use program::{BUILD_OPTIONS, KERNEL_NAMES, KERNELS_SRC};

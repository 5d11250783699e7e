#![doc = include_str!("../README.md")]
// A std-only crate (the CUDA driver and NVRTC are loaded at run time through std's dynamic
// loading), so the workspace's no_std-oriented lints that prefer `core`/`alloc` paths do not
// apply here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod bench;
mod device;
pub mod error;
pub mod kernels;
#[cfg(test)]
mod model;

pub use device::{Cuda, CudaBuffer, driver_available};
pub use error::CudaError;

//! # gradcast-candle
//!
//! Data-parallel training for [candle](https://github.com/huggingface/candle) models. Every
//! worker (a process under `mpirun`, or a thread-free local worker in one process) trains
//! its own replica on its share of each batch; each step, the workers' gradients are
//! exchanged and every replica steps with the same aggregated gradient, so the replicas stay
//! bit-identical. What travels is gradcast's threshold-encoded messages with error feedback
//! (100-1000x fewer bytes than dense fp32; what is not sent stays in a residual and goes out
//! later), or, for baselines behind the same interface, dense fp32 or fp16 gradients.
//!
//! What a candle training loop adds: a [`Sharing`] built from the model's `VarMap`, and
//! [`Sharing::wrap`] around any `candle_nn::Optimizer`:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
//! use gradcast_candle::{Config, Cpu, InProcess, Sharing};
//!
//! # fn main() -> gradcast_candle::Result<()> {
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let model = candle_nn::linear(4, 1, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
//! for v in varmap.all_vars() {
//!     v.set(&v.zeros_like()?)?; // a fixed start, so this example is deterministic
//! }
//! let x = Tensor::new(&[[1f32, 2., 3., 4.], [0., 1., 0., 1.], [2., 0., 1., 0.]], &dev)?;
//! let y = Tensor::new(&[[10f32], [2.], [3.]], &dev)?;
//!
//! // gradcast's lines: the sharing (here one process; `gradcast_candle::mpi::Mpi` for
//! // mpirun) and the wrapped optimizer.
//! let sharing = Sharing::new(&varmap, Config::default(), Cpu::default(), InProcess)?;
//! let mut opt = sharing.wrap(candle_nn::SGD::new(varmap.all_vars(), 0.02)?);
//!
//! let first = model.forward(&x)?.sub(&y)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
//! for _ in 0..200 {
//!     let loss = model.forward(&x)?.sub(&y)?.sqr()?.mean_all()?;
//!     opt.backward_step(&loss)?;
//! }
//! let last = model.forward(&x)?.sub(&y)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
//! assert!(last < first / 2.0, "{first} -> {last}");
//! let stats = opt.stats(); // bytes, density, tau, encode / exchange / decode time
//! assert!(stats.bytes > 0 && stats.workers[0].tau_min > 0.0);
//! # Ok(())
//! # }
//! ```
//!
//! * **Layout** ([`Layout`]): variables ordered by name, one encoder segment (own threshold
//!   state) per variable; two processes that build the same model agree byte for byte.
//! * **Payload** ([`Payload`]): gradients by default (every replica runs the same optimizer
//!   step, so optimizer state stays identical), post-optimizer updates as an option (each
//!   worker keeps its own optimizer state). See the README for the trade-off.
//! * **Network** ([`Network`]): [`InProcess`] for workers of one process, `mpi::Mpi` (cargo
//!   feature `mpi`) for one process per rank, through the same code path.
//! * **Start**: every rank checks that the others built the same model (an error names the
//!   first variable that differs), then rank 0's parameters are broadcast ([`Init`]).
//! * **Checkpoints**: [`Sharing::save`] / [`Sharing::restore`] of every residual and
//!   threshold state, keyed by variable name, checksummed; a restored run continues
//!   bit-identically.
//! * **Errors** ([`Error`]), each naming the variable: a variable added, removed or reshaped
//!   between steps; NaN or infinity in a gradient; models that differ across ranks. A
//!   failed step leaves residuals and parameters as they were; a variable without a
//!   gradient contributes zeros and is counted in the statistics.
//! * **The training driver** ([`driver`]): the epoch loop `gradcast train` runs, for
//!   classification on in-memory data, with per-round records for an [`driver::Observer`].
//!
//! Backends by cargo feature: `cpu` (default), `opencl`, `cuda`; the backend encodes and
//! decodes, candle computes. candle's CPU device is the target; see the README for candle's
//! CUDA device.
// A std crate: the workspace's no_std-oriented lints (prefer `core`/`alloc` paths) only add
// noise here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod checkpoint;
pub mod data;
pub mod driver;
pub mod error;
pub mod layout;
pub mod models;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod network;
pub mod optim;
pub mod rng;
pub mod sharing;
mod tensors;
pub mod threshold;

pub use error::{Error, Result};
pub use layout::{Layout, Variable};
pub use network::{InProcess, Network};
pub use sharing::{
    Aggregate, Config, Exchange, GradcastConfig, Init, MAX_SEGMENTS, Payload, SegmentEncoder,
    SharedOptimizer, Sharing, StepStats, WorkerStats,
};
pub use tensors::params_checksum;
pub use threshold::{Segments, Threshold};

/// The core crate, re-exported (encoder configuration, the `Backend` trait).
pub use gradcast_core;

/// The CPU backend (feature `cpu`, on by default).
#[cfg(feature = "cpu")]
pub use gradcast_cpu::Cpu;
/// The CUDA backend (feature `cuda`).
#[cfg(feature = "cuda")]
pub use gradcast_cuda::Cuda;
/// The OpenCL backend (feature `opencl`).
#[cfg(feature = "opencl")]
pub use gradcast_opencl::OpenCl;

//! # gradcast-core
//!
//! The `no_std` heart of gradcast, communication-efficient data-parallel training by threshold
//! encoding with error feedback (Strom 2015; Deeplearning4j's `EncodedGradientsAccumulator`).
//!
//! * [`wire`]: the versioned, checksummed wire format v1 (`docs/FORMAT.md`), zero-copy
//!   parsing into a validated [`wire::MessageView`].
//! * [`codec`]: the reference codec: count, encode-then-commit, decode-add. The oracle every
//!   backend is checked against.
//! * [`dl4j`]: bit-exact import and export of DL4J's int32 layouts.
//! * [`packet`]: packets (a party's messages for one round) and the [`packet::PartyEncoder`] seam.
//! * [`encoder`]: the per-worker encoder: threshold policies, residual clipping, warm-up,
//!   segments, statistics and checkpoints.
//! * [`backend`]: the [`Backend`] trait every compute device implements, and the
//!   [`backend::Reference`] backend (with `alloc`).
//! * [`queue`], [`barrier`], [`round`]: what replaces DL4J's `EncodedGradientsAccumulator`:
//!   a bounded lock-free queue, a barrier state machine with poisoning, and the round
//!   protocol (P local parties, a [`round::Transport`] to other nodes, bit-identical
//!   replicas; the accumulator needs `alloc`, its worker-thread helper `std`).
//!
//! Without features the crate needs neither `std` nor `alloc`: it builds for
//! `thumbv7em-none-eabihf`. Feature `alloc` adds heap-backed conveniences, `std` adds
//! parking, panic poisoning and the worker-thread helper. The error type implements
//! `core::error::Error`.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
pub mod barrier;
pub mod codec;
pub mod dl4j;
pub mod encoder;
pub mod error;
#[cfg(feature = "alloc")]
pub mod kat;
pub mod packet;
mod primitive;
pub mod queue;
pub mod round;
pub mod wire;

pub use backend::Backend;
pub use error::{Classify, Error, ErrorKind};

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
//! parking, panic poisoning and the worker-thread helper.
//!
//! Errors come in one enum per concern ([`WireError`] for message bytes, [`CodecError`],
//! [`ConfigError`], [`ProtocolError`] for the round protocol, [`CheckpointError`]), gathered
//! by [`Error`] and classified by the [`ErrorKind`] every backend shares; see [`error`].
//! They implement `core::error::Error`, and their `Display` says what is wrong.
//!
//! # Example
//!
//! One worker encodes its residual; every replica decodes the same bytes.
//!
//! ```
//! use gradcast_core::codec::{self, EncodeParams};
//! use gradcast_core::wire::{self, MessageView};
//!
//! // What the worker has not sent yet (its accumulated updates).
//! let mut residual = [0.5f32, -2.0, 0.1, 1.0, 0.0, -0.25, 3.5, -1.0];
//! let mut out = [0u8; wire::HEADER_LEN + 8];
//! assert!(out.len() >= wire::max_message_len(residual.len()));
//! let sent = codec::encode(&mut residual, &EncodeParams::new(1.0), &mut out)?;
//! // Four elements reached tau = 1: each is sent as +1 or -1 and debited by exactly that.
//! assert_eq!(sent.entries, 4);
//! assert_eq!(residual, [0.5, -1.0, 0.1, 0.0, 0.0, -0.25, 2.5, 0.0]);
//!
//! // A receiver validates the bytes (header, checksum, every entry), then adds them.
//! let msg = MessageView::parse(&out[..sent.bytes])?;
//! let mut update = [0.0f32; 8];
//! codec::decode_add(&msg, &mut update)?;
//! assert_eq!(update, [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 1.0, -1.0]);
//! # Ok::<(), gradcast_core::Error>(())
//! ```
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
pub use error::{
    CheckpointError, Classify, CodecError, ConfigError, Error, ErrorKind, ProtocolError, WireError,
};

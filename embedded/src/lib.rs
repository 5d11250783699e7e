//! # gradcast-embedded
//!
//! The core of gradcast on a microcontroller: a firmware for a Cortex-M4F
//! (`thumbv7em-none-eabihf`) that runs the core's policy-driven encoder and its decoder from
//! static buffers, with no allocator, under QEMU (`mps2-an386`); and this library, the part
//! the firmware and the host share, so the host can reproduce the firmware's run exactly and
//! compare every message byte for byte (`tests/qemu.rs`; how to run it: `embedded/README.md`).
//!
//! * [`Run`]: the scenario. A two-segment [`Encoder`] (an [`Adaptive`] policy keeping the
//!   density of 3072 elements within `[1e-3, 3e-3]`, a [`TargetSparsity`] policy on 1024; a
//!   4-round density ramp as warm-up; residual clipping, see [`config`]) encodes [`ROUNDS`]
//!   rounds of a pseudo-random update stream ([`stream`]) of [`N`] elements.
//! * [`Slices`]: a [`Backend`] over borrowed slices (static arrays), for targets without an
//!   allocator.
//! * [`REFERENCE`]: messages written at build time (every encoding, a cap, segments) that the
//!   firmware decodes; [`kat`]: the format's known-answer vectors, checked on the target.
//! * [`RoundLine`], [`EncodeLine`], [`DecodeLine`]: the report lines the firmware prints and
//!   the host test compares.
//!
//! # Example
//!
//! The scenario on the host, with the slice backend over a local array, as the firmware runs
//! it over its static ones:
//!
//! ```
//! use gradcast_core::packet::Messages;
//! use gradcast_embedded::{MAX_PACKET, N, ROUNDS, Run, Slices};
//!
//! let mut storage = vec![0.0f32; N];
//! let mut residual: &mut [f32] = &mut storage;
//! let mut packet = [0u8; MAX_PACKET];
//! let backend = Slices::new();
//! let mut run = Run::new()?;
//! for _ in 0..ROUNDS {
//!     run.add_update(residual);
//!     let stats = run.encode(&backend, &mut residual, &mut packet)?;
//!     // One message per segment, laid end to end.
//!     assert_eq!(Messages::new(&packet[..stats.message_bytes]).count(), 2);
//! }
//! assert_eq!(run.encoder().cumulative().rounds, ROUNDS);
//! # Ok::<(), gradcast_embedded::SliceError>(())
//! ```
#![no_std]

pub mod kat;
pub mod slices;
pub mod stream;

use core::fmt;

use gradcast_core::Error;
use gradcast_core::backend::Backend;
use gradcast_core::encoder::policy::DEFAULT_DECAY;
use gradcast_core::encoder::{
    Adaptive, Clipping, Encoder, EncoderConfig, Policy, RoundStats, Segment, TargetSparsity, Warmup,
};
use gradcast_core::packet::Messages;
use gradcast_core::wire::HEADER_LEN;

pub use slices::{SliceError, Slices};
pub use stream::{N, REFERENCE_SEED, SCALE, SEED, SplitMix64};

/// Rounds the firmware encodes.
pub const ROUNDS: u64 = 40;
/// The sender id in the firmware's message headers.
pub const SENDER: u32 = 3;
/// The segments: `(id, length)`, laid end to end over the N elements.
pub const SEGMENTS: [(u16, usize); 2] = [(1, 3072), (2, 1024)];
const _: () = assert!(SEGMENTS[0].1 + SEGMENTS[1].1 == N);

/// The largest packet the scenario's encoder writes: per segment a header and a 2-bit bitmap
/// (the policies put no cap, and the warm-up ramp never sends more than the bitmap).
pub const MAX_PACKET: usize =
    2 * HEADER_LEN + SEGMENTS[0].1.div_ceil(4) + SEGMENTS[1].1.div_ceil(4);

/// The encoder type of the scenario: any built-in policy, two segments.
pub type ScenarioEncoder = Encoder<Policy, 2>;

/// The scenario's encoder configuration: residual clipping to `+-tau` every 5 rounds (the
/// stream's rare large values make it act) and a warm-up whose density falls from 25 % to
/// 1 % over 4 rounds.
pub fn config() -> EncoderConfig {
    EncoderConfig {
        clipping: Some(Clipping {
            factor: 1.0,
            every: 5,
        }),
        warmup: Warmup::Ramp {
            rounds: 4,
            start: 0.25,
            end: 0.01,
        },
        residual_stats: true,
    }
}

/// The messages the firmware decodes into a zeroed vector of N elements, written at build
/// time by the core's codec (`build.rs`): three senders, four rounds each; a dense warm-up
/// message, bitmap and sparse messages, capped ones, and segment messages.
pub static REFERENCE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reference.bin"));

/// The firmware's run: the encoder and the update stream, one round at a time.
#[derive(Clone, Debug)]
pub struct Run {
    encoder: ScenarioEncoder,
    rng: SplitMix64,
}

impl Run {
    /// A fresh run: round 0, the stream at [`SEED`].
    ///
    /// # Errors
    /// None for the built-in configuration (the encoder's constructor checks it).
    pub fn new() -> Result<Self, Error> {
        let [(id0, len0), (id1, len1)] = SEGMENTS;
        let encoder = Encoder::segmented(
            config(),
            [
                Segment {
                    id: id0,
                    len: len0,
                    policy: Adaptive::new(1e-3, 1e-3, 3e-3, DEFAULT_DECAY)?.into(),
                },
                Segment {
                    id: id1,
                    len: len1,
                    policy: TargetSparsity::default().into(),
                },
            ],
        )?;
        Ok(Run {
            encoder,
            rng: SplitMix64::new(SEED),
        })
    }

    /// Adds the next round's update to `residual`, element by element in index order (N
    /// values of the stream for a residual of N elements).
    pub fn add_update(&mut self, residual: &mut [f32]) {
        for r in residual.iter_mut() {
            *r += self.rng.update_value(SCALE);
        }
    }

    /// Encodes the next round into `out` (at least [`MAX_PACKET`] bytes) and returns its
    /// statistics; the packet is `out[..stats.message_bytes]`. The round number in the
    /// headers is the encoder's round index.
    ///
    /// # Errors
    /// As [`Encoder::encode`].
    pub fn encode<B: Backend>(
        &mut self,
        backend: &B,
        residual: &mut B::Buffer,
        out: &mut [u8],
    ) -> Result<RoundStats, B::Error> {
        let round = self.encoder.index();
        self.encoder.encode(backend, residual, SENDER, round, out)
    }

    /// The encoder (statistics, policies).
    pub fn encoder(&self) -> &ScenarioEncoder {
        &self.encoder
    }
}

/// Decodes [`REFERENCE`] into `target` (N elements, normally zeroed) and returns the number
/// of messages applied.
///
/// # Errors
/// A message that does not parse, or does not fit `target`.
pub fn decode_reference<B: Backend>(
    backend: &B,
    target: &mut B::Buffer,
) -> Result<usize, B::Error> {
    let mut count = 0;
    for msg in Messages::new(REFERENCE) {
        backend.decode_add(&msg.map_err(Error::from)?, target)?;
        count += 1;
    }
    Ok(count)
}

/// CRC-32C (the wire format's checksum) of the values' little-endian bytes: the checksum of a
/// vector that the firmware reports and the host recomputes.
pub fn crc32c(values: &[f32]) -> u32 {
    // One 256-entry table (1 KiB of flash); the bytes are fed 4 at a time.
    static CRC: crc::Crc<u32, crc::Table<1>> =
        crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISCSI);
    let mut digest = CRC.digest();
    for v in values {
        digest.update(&v.to_le_bytes());
    }
    digest.finalize()
}

/// A round's report line: every statistic, floats as bit patterns (so the comparison with
/// the host is exact).
#[derive(Clone, Copy, Debug)]
pub struct RoundLine<'a>(pub &'a RoundStats);

impl fmt::Display for RoundLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(
            f,
            "round index={} round={} warmup={} messages={} sparse={} bitmap={} dense={} \
             truncated={} entries={} candidates={} bytes={} tau={:08x} tau_max={:08x} \
             density={:016x} l2={} max={} clipped={} clipped_mass={:016x}",
            s.index,
            s.round,
            u8::from(s.warmup),
            s.messages,
            s.sparse_messages,
            s.bitmap_messages,
            s.dense_messages,
            s.truncated_messages,
            s.entries,
            s.candidates,
            s.message_bytes,
            s.tau.to_bits(),
            s.tau_max.to_bits(),
            s.density.to_bits(),
            Bits(s.residual_l2.map(|v| (v.to_bits(), 16))),
            Bits(s.residual_max.map(|v| (u64::from(v.to_bits()), 8))),
            s.clipped_elements,
            s.clipped_mass.to_bits(),
        )
    }
}

/// A statistic's bits in hex (`(bits, digits)`), or `none` when it was not computed.
struct Bits(Option<(u64, usize)>);

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((bits, digits)) => write!(f, "{bits:0digits$x}"),
            None => f.write_str("none"),
        }
    }
}

/// The encode summary line: totals over the run and the final residual's checksum.
#[derive(Clone, Copy, Debug)]
pub struct EncodeLine<'a> {
    /// The encoder after the run.
    pub encoder: &'a ScenarioEncoder,
    /// [`crc32c`] of the final residual.
    pub residual_crc32c: u32,
}

impl fmt::Display for EncodeLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.encoder.cumulative();
        write!(
            f,
            "encode rounds={} bytes={} entries={} sparse={} bitmap={} dense={} \
             clipped={} residual_crc32c={:08x}",
            c.rounds,
            c.message_bytes,
            c.entries,
            c.sparse_messages,
            c.bitmap_messages,
            c.dense_messages,
            c.clipped_elements,
            self.residual_crc32c,
        )?;
        // Each segment's policy threshold (f64 bits), by segment id.
        for (info, p) in self.encoder.segments().zip(self.encoder.policy_states()) {
            write!(f, " tau_s{}={:016x}", info.id, p.tau.to_bits())?;
        }
        Ok(())
    }
}

/// The decode summary line: how many reference messages were applied and the checksum of the
/// resulting vector.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLine {
    /// Messages applied.
    pub messages: usize,
    /// [`crc32c`] of the decoded vector.
    pub crc32c: u32,
}

impl fmt::Display for DecodeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decode messages={} bytes={} crc32c={:08x}",
            self.messages,
            REFERENCE.len(),
            self.crc32c
        )
    }
}

//! Helpers shared by the encoder tests: a deterministic generator of updates and a driver
//! that runs an encoder round by round and keeps the mass accounts.
#![allow(dead_code)]

use gradcast_core::backend::{Backend, Reference};
use gradcast_core::encoder::{Encoder, RoundStats, ThresholdPolicy};
use gradcast_core::packet::Messages;
use gradcast_core::wire::MessageView;

/// SplitMix64: small, deterministic, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal (sum of four uniforms, centred and scaled to unit variance).
    pub fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3.0f64.sqrt()
    }
}

/// The update of round `round` for an `n`-element vector: normal values of scale `scale`, with
/// a few large spikes, reproducible from `(seed, round)`.
pub fn update(seed: u64, round: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(round));
    (0..n)
        .map(|_| {
            let spike = if rng.next_u64().is_multiple_of(97) {
                20.0
            } else {
                1.0
            };
            (rng.normal() * scale as f64 * spike) as f32
        })
        .collect()
}

/// Dyadic updates: multiples of 2^-12 in [-2^-6, 2^-6], so that with a power-of-two threshold
/// every f32 operation of a round is exact.
pub fn dyadic_update(seed: u64, round: u64, n: usize, positive: bool) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ round.wrapping_mul(0x2545_F491_4F6C_DD1D));
    (0..n)
        .map(|_| {
            let m = (rng.next_u64() % 129) as i32 - 64;
            let m = if positive { m.abs() } else { m };
            m as f32 / 4096.0
        })
        .collect()
}

/// Runs an encoder round by round against the reference backend and keeps the accounts.
#[derive(Debug)]
pub struct Driver<P: ThresholdPolicy, const S: usize> {
    pub backend: Reference,
    pub encoder: Encoder<P, S>,
    pub residual: Vec<f32>,
    /// Sum of all updates, per element, in f64.
    pub updates: Vec<f64>,
    /// Sum of all decoded messages, per element, in f64.
    pub decoded: Vec<f64>,
    pub packet: Vec<u8>,
    pub round: u64,
}

impl<P: ThresholdPolicy, const S: usize> Driver<P, S> {
    pub fn new(encoder: Encoder<P, S>) -> Self {
        let n = encoder.n();
        let packet = vec![0u8; encoder.max_packet_bytes()];
        Driver {
            backend: Reference,
            encoder,
            residual: vec![0.0; n],
            updates: vec![0.0; n],
            decoded: vec![0.0; n],
            packet,
            round: 0,
        }
    }

    /// Adds `update` into the residual, encodes a round, decodes the packet into the
    /// accounts, and returns the round's statistics and the packet's bytes.
    pub fn step(&mut self, update: &[f32]) -> (RoundStats, Vec<u8>) {
        let b = self.backend;
        let mut u = b.alloc(update.len()).unwrap();
        b.upload(update, &mut u).unwrap();
        b.add_assign(&mut self.residual, &u).unwrap();
        for (acc, &v) in self.updates.iter_mut().zip(update) {
            *acc += v as f64;
        }
        let stats = self
            .encoder
            .encode(&b, &mut self.residual, 7, self.round, &mut self.packet)
            .unwrap();
        let packet = self.packet[..stats.message_bytes].to_vec();
        for msg in Messages::new(&packet) {
            let msg = msg.unwrap();
            add_message(&msg, &mut self.decoded);
        }
        self.round += 1;
        (stats, packet)
    }

    /// Per element: updates - decoded - residual (what went missing: clipping only).
    pub fn missing(&self) -> Vec<f64> {
        self.updates
            .iter()
            .zip(&self.decoded)
            .zip(&self.residual)
            .map(|((u, d), r)| u - d - *r as f64)
            .collect()
    }
}

/// Adds a message's values into an f64 vector at its offset.
pub fn add_message(msg: &MessageView<'_>, target: &mut [f64]) {
    let mut dense = vec![0.0f32; target.len()];
    gradcast_core::codec::decode_add(msg, &mut dense).unwrap();
    for (t, d) in target.iter_mut().zip(&dense) {
        *t += *d as f64;
    }
}

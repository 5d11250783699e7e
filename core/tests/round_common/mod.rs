//! Shared helpers of the round-protocol tests: a deterministic RNG, deterministic updates,
//! a sequential oracle of the protocol, and a watchdog that turns a hang into a failure.
#![allow(dead_code)]

use gradcast_core::backend::{Reference, slices};
use gradcast_core::codec;
use gradcast_core::packet::{FixedEncoder, Messages, PartyEncoder};
use gradcast_core::round::Step;
use gradcast_core::wire::max_message_len;
use std::sync::mpsc;
use std::time::Duration;

/// splitmix64.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The update of `party` (global id) in `round`: deterministic, mixed signs and magnitudes.
pub fn update_of(party: u32, round: u64, out: &mut [f32]) {
    let mut rng = Rng(((party as u64) << 40) ^ round.wrapping_mul(0x2545_F491_4F6C_DD1D));
    for x in out.iter_mut() {
        let scale = if rng.below(8) == 0 { 0.6 } else { 0.08 };
        *x = rng.unit() * scale;
    }
}

/// The protocol replayed sequentially: residuals per global sender, and the round's update
/// decoded in ascending sender order.
pub struct Oracle {
    pub n: usize,
    pub residuals: Vec<Vec<f32>>,
    pub encoders: Vec<FixedEncoder>,
    buf: Vec<u8>,
    update: Vec<f32>,
    input: Vec<f32>,
}

impl Oracle {
    pub fn new(senders: usize, n: usize, tau: f32) -> Self {
        Oracle {
            n,
            residuals: vec![vec![0.0; n]; senders],
            encoders: vec![FixedEncoder::new(tau); senders],
            buf: vec![0; max_message_len(n)],
            update: vec![0.0; n],
            input: vec![0.0; n],
        }
    }

    /// Runs one round with `contributors` (global ids, any order) and returns the round's
    /// decoded sum and its scale.
    pub fn round(&mut self, round: u64, contributors: &[u32], step: Step) -> (Vec<f32>, f32) {
        let mut ids = contributors.to_vec();
        ids.sort_unstable();
        self.update.iter_mut().for_each(|x| *x = 0.0);
        for &id in &ids {
            let i = id as usize;
            update_of(id, round, &mut self.input);
            for (r, u) in self.residuals[i].iter_mut().zip(&self.input) {
                *r += *u;
            }
            let len = self.encoders[i]
                .encode_round(&Reference, &mut self.residuals[i], id, round, &mut self.buf)
                .unwrap();
            for m in Messages::new(&self.buf[..len]) {
                codec::decode_add(&m.unwrap(), &mut self.update).unwrap();
            }
        }
        let scale = match step {
            Step::Sum => 1.0,
            Step::Mean if ids.len() > 1 => 1.0 / ids.len() as f32,
            Step::Mean => 1.0,
        };
        (self.update.clone(), scale)
    }

    /// Steps `params` by a round's result, as every replica does. (The accumulator skips
    /// the step of a round without packets; subtracting zeros changes no bit, so the oracle
    /// need not.)
    pub fn apply(params: &mut [f32], result: &(Vec<f32>, f32)) {
        slices::sub_scaled(params, &result.0, result.1);
    }
}

/// Bitwise equality of two vectors, with the first difference in the message.
pub fn assert_bits_eq(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{what}: element {i} differs: {x} vs {y}"
        );
    }
}

/// Runs `body`; if it has not finished after `limit`, prints `name` and aborts the process
/// (a hung test fails loudly instead of hanging CI).
pub fn with_watchdog<T>(name: &str, limit: Duration, body: impl FnOnce() -> T) -> T {
    let (done, wait) = mpsc::channel::<()>();
    let name = name.to_string();
    let dog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            eprintln!("WATCHDOG: {name} did not finish within {limit:?}: deadlock or hang");
            std::process::abort();
        }
    });
    let out = body();
    drop(done);
    dog.join().unwrap();
    out
}

/// A round count from the environment, or the default.
pub fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

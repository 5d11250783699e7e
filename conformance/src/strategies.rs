//! Input generators shared by the properties (and usable by backend crates' own tests).
//!
//! Vectors are generated from a seed by a small deterministic generator rather than element
//! by element, so that vectors of 2^20 elements cost milliseconds; proptest still shrinks
//! the length, the threshold, the density and the seed.

use gradcast_core::codec::{EncodeParams, EncodingMode, SegmentRef};
use proptest::prelude::*;

/// xorshift64*: the deterministic generator behind every vector.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// The f32 just below `x` (for positive finite `x`).
pub fn next_down(x: f32) -> f32 {
    if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        x
    }
}

/// The f32 just above `x` (for positive finite `x` below the largest).
pub fn next_up(x: f32) -> f32 {
    if (0.0..f32::MAX).contains(&x) {
        f32::from_bits(x.to_bits() + 1)
    } else {
        x
    }
}

/// How a vector is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VecSpec {
    /// Elements.
    pub n: usize,
    /// The threshold the values are scaled to.
    pub tau: f32,
    /// Fraction of elements at or above the threshold (`|x| in [tau, 3 tau)`).
    pub density: f64,
    /// Fraction of special values (0, -0, ±tau, next to tau, 2 tau, subnormals, huge).
    pub specials: f64,
    /// The generator's seed.
    pub seed: u64,
}

impl VecSpec {
    /// The vector (all values finite).
    pub fn build(&self) -> Vec<f32> {
        let mut r = Rng::new(self.seed);
        let tau = self.tau as f64;
        (0..self.n)
            .map(|_| {
                let sign = if r.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
                if r.unit() < self.specials {
                    let t = self.tau;
                    let v = match r.below(10) {
                        0 => 0.0,
                        1 => -0.0,
                        2 => t,
                        3 => next_down(t),
                        4 => next_up(t),
                        5 => (2.0 * tau).min(f32::MAX as f64) as f32,
                        6 => f32::from_bits(1 + r.below(0x007F_FFFF) as u32),
                        7 => f32::MAX,
                        8 => f32::MIN_POSITIVE,
                        _ => (tau * (1.0 + r.below(8) as f64)).min(f32::MAX as f64) as f32,
                    };
                    return if sign > 0.0 { v } else { -v };
                }
                let u = if r.unit() < self.density {
                    1.0 + 2.0 * r.unit()
                } else {
                    r.unit()
                };
                (sign * (u * tau).min(f32::MAX as f64)) as f32
            })
            .collect()
    }
}

/// A positive finite threshold: mostly in `[2^-10, 2^10)`, sometimes a power of two, a
/// subnormal or a huge value.
pub fn tau() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => (-10i32..10, 0u32..(1 << 23))
            .prop_map(|(e, m)| f32::from_bits((((127 + e) as u32) << 23) | m)),
        2 => (-10i32..10).prop_map(|e| 2f32.powi(e)),
        1 => (1u32..0x0080_0000).prop_map(f32::from_bits),
        1 => (0x7E00_0000u32..0x7F80_0000).prop_map(f32::from_bits),
    ]
}

/// A threshold in `[2^-10, 2^10)`: for runs that accumulate over rounds and must stay far
/// from overflow.
pub fn moderate_tau() -> impl Strategy<Value = f32> {
    (-10i32..10, 0u32..(1 << 23)).prop_map(|(e, m)| f32::from_bits((((127 + e) as u32) << 23) | m))
}

/// A density of candidates, from none to all.
pub fn density() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(0.0),
        3 => 0.0..0.02f64,
        3 => 0.02..0.3f64,
        1 => 0.3..1.0f64,
        1 => Just(1.0),
    ]
}

/// Vector lengths for ordinary properties: mostly small, sometimes a few thousand.
pub fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1usize..=64,
        3 => 65usize..=1024,
        1 => 1025usize..=8192,
    ]
}

/// A vector spec over `lengths`.
pub fn vec_spec(lengths: impl Strategy<Value = usize>) -> impl Strategy<Value = VecSpec> {
    (
        lengths,
        tau(),
        density(),
        prop_oneof![2 => Just(0.0), 1 => 0.0..0.3f64],
        any::<u64>(),
    )
        .prop_map(|(n, tau, density, specials, seed)| VecSpec {
            n,
            tau,
            density,
            specials,
            seed,
        })
}

/// Encode parameters for a vector of `n` elements at `tau`: random sender and round, a cap
/// (sometimes), any mode, and (sometimes) a valid segment.
pub fn params(n: usize, tau: f32) -> impl Strategy<Value = EncodeParams> {
    let cap = prop_oneof![3 => Just(None), 2 => (0..=n as u32 + 2).prop_map(Some)];
    let round = prop_oneof![0u64..16, any::<u64>()];
    let mode = prop_oneof![
        4 => Just(EncodingMode::Auto),
        1 => Just(EncodingMode::Sparse),
        1 => Just(EncodingMode::Bitmap),
        1 => Just(EncodingMode::Dense),
    ];
    let segment = prop_oneof![
        4 => Just(None),
        1 => (0..n.max(1), 1..=n.max(1), any::<u16>()).prop_map(move |(offset, len, id)| {
            let offset = offset.min(n.saturating_sub(1));
            Some(SegmentRef {
                id,
                offset,
                len: len.min(n - offset).max(1),
            })
        }),
    ];
    (any::<u32>(), round, cap, mode, segment).prop_map(
        move |(sender, round, cap, mode, segment)| EncodeParams {
            tau,
            sender,
            round,
            cap,
            mode,
            segment,
        },
    )
}

/// A vector spec over `lengths` and parameters that fit it.
pub fn encode_case(
    lengths: impl Strategy<Value = usize>,
) -> impl Strategy<Value = (VecSpec, EncodeParams)> {
    vec_spec(lengths).prop_flat_map(|s| (Just(s), params(s.n, s.tau)))
}

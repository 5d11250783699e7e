//! Input generators shared by the properties (and usable by backend crates' own tests).
//!
//! Vectors are generated from a seed by a small deterministic generator rather than element
//! by element, so that vectors of 2^20 elements cost milliseconds; proptest still shrinks
//! the length, the threshold, the density and the seed.

use gradcast_core::codec::{EncodeParams, EncodingMode, SegmentRef};
use gradcast_core::encoder::{
    Adaptive, ByteBudget, Clipping, Encoder, EncoderConfig, Fixed, Policy, Segment, TargetSparsity,
    Warmup,
};
use gradcast_core::wire;
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

/// One segment's threshold policy, as drawn ([`PolicySpec::build`] makes it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PolicySpec {
    /// [`Fixed`] at this threshold.
    Fixed(f32),
    /// [`Adaptive`] with `tau0`, the band `[min, max]` and `decay`.
    Adaptive {
        /// The first threshold.
        tau0: f64,
        /// The band's lower end.
        min: f64,
        /// The band's upper end.
        max: f64,
        /// The step factor.
        decay: f64,
    },
    /// [`TargetSparsity`] with `tau0`, `target` and `decay`.
    Target {
        /// The first threshold.
        tau0: f64,
        /// The sparsity aimed at.
        target: f64,
        /// The step factor.
        decay: f64,
    },
    /// [`ByteBudget`] of `budget` bytes per message (raised to what a dense or bitmap
    /// warm-up needs), starting at `tau0`.
    Budget {
        /// Bytes per message.
        budget: usize,
        /// The first threshold.
        tau0: f64,
        /// The largest density aimed at.
        max_density: f64,
    },
}

impl PolicySpec {
    /// The policy for a segment of `len` elements under `warmup`.
    ///
    /// # Panics
    /// Never for specs drawn by [`policy_spec`] (they are valid by construction).
    pub fn build(&self, len: usize, warmup: Warmup) -> Policy {
        let policy: Result<Policy, gradcast_core::ConfigError> = match *self {
            PolicySpec::Fixed(tau) => Fixed::new(tau).map(Policy::from),
            PolicySpec::Adaptive {
                tau0,
                min,
                max,
                decay,
            } => Adaptive::new(tau0, min, max, decay).map(Policy::from),
            PolicySpec::Target {
                tau0,
                target,
                decay,
            } => TargetSparsity::new(tau0, target, decay).map(Policy::from),
            PolicySpec::Budget {
                budget,
                tau0,
                max_density,
            } => {
                let needed = match warmup {
                    Warmup::Dense { rounds } if rounds > 0 => wire::dense_message_len(len),
                    Warmup::Bitmap { rounds } if rounds > 0 => wire::max_message_len(len),
                    _ => 0,
                };
                ByteBudget::with_params(budget.max(needed), tau0, max_density).map(Policy::from)
            }
        };
        policy.unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }
}

/// A threshold policy of any kind, its thresholds scaled around `scale` (the magnitude of
/// the updates it will see).
pub fn policy_spec(scale: f32) -> impl Strategy<Value = PolicySpec> {
    let s = scale as f64;
    let tau0 = (0.25..4.0f64).prop_map(move |f| f32_normal(s * f));
    let decay = prop_oneof![Just(0.5f64.powf(1.0 / 20.0)), 0.5..0.99f64];
    prop_oneof![
        (0.25..4.0f64).prop_map(move |f| PolicySpec::Fixed(f32_normal(s * f) as f32)),
        (tau0.clone(), 1e-4..0.05f64, 1.0..20.0f64, decay.clone()).prop_map(
            |(tau0, min, widen, decay)| PolicySpec::Adaptive {
                tau0,
                min,
                max: (min * widen).min(1.0),
                decay,
            }
        ),
        (tau0.clone(), 1e-4..0.06f64, decay).prop_map(|(tau0, target, decay)| {
            PolicySpec::Target {
                tau0,
                target,
                decay,
            }
        }),
        (
            tau0,
            prop_oneof![48usize..64, 64usize..400, 400usize..4000],
            prop_oneof![Just(1.0 / 16.0), 0.001..1.0f64]
        )
            .prop_map(|(tau0, budget, max_density)| PolicySpec::Budget {
                budget,
                tau0,
                max_density,
            }),
    ]
}

/// `x` as an `f64` that is a normal, finite `f32` (policies refuse others).
fn f32_normal(x: f64) -> f64 {
    x.clamp(f32::MIN_POSITIVE as f64, f32::MAX as f64 / 16.0) as f32 as f64
}

/// A policy-driven encoder's configuration: its segments (or one unsegmented vector), their
/// policies, warm-up, clipping and residual statistics; and how its updates are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderSpec {
    /// `None`: one unsegmented vector ([`Encoder::new`]) of `lens[0]` elements; `Some(ids)`:
    /// segments with these ids and `lens` ([`Encoder::segmented`]).
    pub ids: Option<Vec<u16>>,
    /// The segment lengths (one for an unsegmented encoder).
    pub lens: Vec<usize>,
    /// One policy per segment.
    pub policies: Vec<PolicySpec>,
    /// The configuration besides segments and policies.
    pub config: EncoderConfig,
    /// The magnitude of the updates ([`EncoderSpec::update`]).
    pub scale: f32,
    /// The updates' seed.
    pub seed: u64,
}

/// The most segments an [`EncoderSpec`] draws: the capacity of [`SpecEncoder`].
pub const MAX_SEGMENTS: usize = 4;

/// The encoder type the properties drive: any built-in policy, up to [`MAX_SEGMENTS`]
/// segments.
pub type SpecEncoder = Encoder<Policy, MAX_SEGMENTS>;

impl EncoderSpec {
    /// The vector's length N.
    pub fn n(&self) -> usize {
        self.lens.iter().sum()
    }

    /// A new encoder of this configuration (a fresh state: round index 0).
    ///
    /// # Panics
    /// Never for specs drawn by [`encoder_spec`].
    pub fn build(&self) -> SpecEncoder {
        let warmup = self.config.warmup;
        let r = match &self.ids {
            None => Encoder::new(
                self.lens[0],
                self.policies[0].build(self.lens[0], warmup),
                self.config,
            ),
            Some(ids) => Encoder::segmented(
                self.config,
                ids.iter()
                    .zip(&self.lens)
                    .zip(&self.policies)
                    .map(|((&id, &len), p)| Segment {
                        id,
                        len,
                        policy: p.build(len, warmup),
                    }),
            ),
        };
        r.unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }

    /// The update of worker `worker` in round `round`: mostly below the policies' thresholds,
    /// a few percent around them, and now and then a larger burst, so that thresholds move,
    /// messages switch between sparse and bitmap, and residuals grow enough to be clipped.
    pub fn update(&self, worker: usize, round: u64) -> Vec<f32> {
        let seed = self.seed ^ ((worker as u64) << 40) ^ round.wrapping_mul(0x9E37_79B9);
        let density = match round % 4 {
            0 => 0.02,
            1 => 0.2,
            2 => 0.0,
            _ => 0.6,
        };
        VecSpec {
            n: self.n(),
            tau: self.scale,
            density,
            specials: 0.0,
            seed,
        }
        .build()
    }
}

/// A warm-up of any kind (mostly short, so that later rounds follow the policy).
pub fn warmup() -> impl Strategy<Value = Warmup> {
    prop_oneof![
        3 => Just(Warmup::None),
        1 => (0u32..3).prop_map(|rounds| Warmup::Dense { rounds }),
        1 => (0u32..3).prop_map(|rounds| Warmup::Bitmap { rounds }),
        2 => (1u32..4, 0.001..1.0f64, 0.0..1.0f64).prop_map(|(rounds, start, f)| {
            Warmup::Ramp {
                rounds,
                start,
                end: (start * f).max(1e-4),
            }
        }),
    ]
}

/// A configuration over segments of `lengths` elements each (one to [`MAX_SEGMENTS`], or
/// unsegmented), with any policies, warm-up, clipping and statistics setting.
pub fn encoder_spec(
    lengths: impl Strategy<Value = usize> + Clone,
) -> impl Strategy<Value = EncoderSpec> {
    let clipping = prop_oneof![
        Just(None),
        (1.0f32..8.0, 1u32..4).prop_map(|(factor, every)| Some(Clipping { factor, every })),
    ];
    (
        any::<bool>(),
        prop::collection::vec(lengths, 1..=MAX_SEGMENTS),
        moderate_tau(),
        warmup(),
        clipping,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(
            move |(segmented, lens, scale, warmup, clipping, stats, seed)| {
                let lens = if segmented { lens } else { lens[..1].to_vec() };
                let k = lens.len();
                let ids = if segmented {
                    // Distinct ids, in no particular order.
                    prop::sample::subsequence((0u16..64).collect::<Vec<_>>(), k)
                        .prop_shuffle()
                        .prop_map(Some)
                        .boxed()
                } else {
                    Just(None).boxed()
                };
                (
                    ids,
                    prop::collection::vec(policy_spec(scale), k),
                    Just((lens, scale, warmup, clipping, stats, seed)),
                )
            },
        )
        .prop_map(
            |(ids, policies, (lens, scale, warmup, clipping, residual_stats, seed))| EncoderSpec {
                ids,
                lens,
                policies,
                config: EncoderConfig {
                    clipping,
                    warmup,
                    residual_stats,
                },
                scale,
                seed,
            },
        )
}

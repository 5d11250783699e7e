//! The per-worker encoder: decides each round's threshold and message, keeps the residual in
//! good health, reports statistics and saves checkpoints.
//!
//! It replaces DL4J's `EncodingHandler`, `ThresholdAlgorithm` and `ResidualPostProcessor`
//! (`docs/DL4J.md`, sections 4 to 6) without their defects (the W-codes are that page's):
//! nothing is debited that is not sent (W1), the residual survives restarts (W17),
//! thresholds may differ per segment (W5), the bytes on the wire can be bounded (W18), and
//! everything DL4J only logged is a plain statistics struct (DL4J issue 5931).
//!
//! # One round
//!
//! The caller adds the round's update into its residual, then calls [`Encoder::encode`] (or
//! the [`PartyEncoder`] seam, which the round protocol drives). For each segment, in order:
//!
//! 1. **Threshold**: the segment's [`ThresholdPolicy`] gives `tau` (or the warm-up decides,
//!    below).
//! 2. **Encode, then commit**: [`Backend::encode`] writes the segment's message at the end of
//!    the packet and debits exactly what it carries.
//! 3. **Feedback**: the policy observes what was sent (`entries / N`, candidates, bytes).
//! 4. **Clipping** (optional, [`Clipping`]): on rounds `index > 0` with `index % every == 0`,
//!    the segment's residual is clipped to `+-factor * tau` with the `tau` just used; the
//!    clipped elements and mass are counted in the statistics.
//! 5. **Statistics**: residual L2 and max (optional, one extra pass), entries, density,
//!    encoding, bytes; per segment, per round, and cumulative ([`stats`]).
//!
//! On error nothing changes: not the encoder (policies, statistics, round index) and not the
//! residual, except after a device failure inside the backend, which the backend reports.
//! (Every input error is caught before the first segment commits: the vector length, the
//! output size, and with several segments non-finite values, by a validating pass.)
//!
//! # Segments
//!
//! [`Encoder::segmented`] splits the vector into consecutive segments (layers), each with its
//! own id, policy and threshold (DL4J issue 6749). A packet is then **one message per
//! segment, in segment order, laid end to end**; each message carries the segment flag, its
//! id and its offset (`docs/FORMAT.md`, "Segments"), and a receiver decodes each at its
//! offset. Every segment sends a message every round, possibly empty (48 bytes), so a packet's
//! structure never depends on the data. [`Encoder::new`] builds an unsegmented encoder: one
//! plain whole-vector message per round.
//!
//! # Warm-up
//!
//! [`Warmup`] treats the first `rounds` rounds specially, as DGC and 1-bit Adam users need:
//! [`Warmup::Dense`] sends every value as f32 (the residual is emptied exactly; the policy is
//! not consulted and starts fresh afterwards), [`Warmup::Bitmap`] forces the bitmap encoding at
//! the policy's threshold, and [`Warmup::Ramp`] sends a geometrically falling density from
//! `start` to `end` (DGC's exponential ramp): the threshold is the `k`-th largest magnitude
//! for `k = ceil(density * N)`, found by bisection (at most 33 `count` passes over the
//! segment, warm-up rounds only), the message is capped at `k` entries, and the threshold is
//! handed to the policy ([`ThresholdPolicy::adopt`]) so it continues from there.
//!
//! # Clipping: off by default
//!
//! DL4J clips the residual to `+-5 tau` every 5 rounds to stop "residual explosion". We leave
//! it **off** by default ([`EncoderConfig::default`]) because:
//!
//! * clipping throws gradient mass away, which biases the update; error feedback's
//!   guarantees rest on the residual keeping everything not yet sent, and mass conservation
//!   is this project's invariant;
//! * DL4J's residuals grew partly from its own defects (the sparse-to-bitmap switch, W1),
//!   which this encoder does not have;
//! * the adaptive policies already react to a residual that piles up: more elements reach
//!   `tau`, the density rises, and `tau` goes up, which drains large values faster;
//! * growth is visible: [`RoundStats::residual_max`] over `tau` shows it, and
//!   [`Clipping::DL4J`] turns DL4J's rule on when it is wanted. Whatever clipping removes is
//!   counted ([`RoundStats::clipped_mass`], [`CumulativeStats::clipped_mass`]), never lost
//!   silently.
//!
//! # Checkpoints
//!
//! [`Encoder::save`] writes the encoder's state (policy states, round index, cumulative
//! statistics) and the residual into a caller's buffer ([`Encoder::checkpoint_len`] bytes);
//! [`Encoder::restore`] validates and loads it, so a restarted run continues bit-identically.
//! The format is versioned and checksummed ([`checkpoint`], `docs/FORMAT.md`).
//!
//! # Example
//!
//! ```
//! use gradcast_core::backend::{Backend, Reference};
//! use gradcast_core::encoder::{Adaptive, Encoder, EncoderConfig};
//! use gradcast_core::packet::Messages;
//!
//! let backend = Reference;
//! let n = 4096;
//! let mut encoder: Encoder =
//!     Encoder::new(n, Adaptive::default().into(), EncoderConfig::default())?;
//! let mut residual = backend.alloc(n)?;
//! let mut update = backend.alloc(n)?;
//! let mut received = vec![0.0f32; n];
//! let mut packet = vec![0u8; encoder.max_packet_bytes()];
//!
//! for round in 0..10u64 {
//!     // This round's update (a gradient step), added into the residual.
//!     let g: Vec<f32> = (0..n)
//!         .map(|i| ((i * 31 + round as usize * 7) % 97) as f32 * 2e-5 - 1e-3)
//!         .collect();
//!     backend.upload(&g, &mut update)?;
//!     backend.add_assign(&mut residual, &update)?;
//!
//!     let stats = encoder.encode(&backend, &mut residual, 0, round, &mut packet)?;
//!     assert!(stats.message_bytes <= packet.len());
//!     for msg in Messages::new(&packet[..stats.message_bytes]) {
//!         gradcast_core::codec::decode_add(&msg?, &mut received)?;
//!     }
//! }
//! let total = encoder.cumulative();
//! assert_eq!(total.rounds, 10);
//! assert!(total.compression() > 1.0);
//! # Ok::<(), gradcast_core::Error>(())
//! ```

pub mod checkpoint;
pub mod policy;
pub mod stats;

pub use policy::{
    Adaptive, ByteBudget, Fixed, Limits, Observation, Policy, PolicyReducer, PolicyState,
    TargetSparsity, ThresholdPolicy,
};
pub use stats::{CumulativeStats, RoundStats, SegmentStats};

use crate::backend::{Backend, ClipStats};
use crate::codec::{EncodeParams, EncodingMode, SegmentRef};
use crate::error::Error;
use crate::error::{CodecError, ConfigError, WireError};
use crate::packet::PartyEncoder;
use crate::wire::{self, Encoding, MAX_ELEMENTS};
use core::ops::Range;

/// Residual clipping to `+-factor * tau` every `every` rounds (DL4J's
/// `ResidualClippingPostProcessor`): applied after encoding round `index` when `index > 0` and
/// `index % every == 0`, with the threshold that round used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clipping {
    /// `C`: the clip limit in thresholds, `>= 1`.
    pub factor: f32,
    /// `f`: clip every this many rounds, `>= 1`.
    pub every: u32,
}

impl Clipping {
    /// DL4J's default: `C = 5`, `f = 5`.
    pub const DL4J: Clipping = Clipping {
        factor: 5.0,
        every: 5,
    };

    /// Whether round `index` (0-based) is clipped.
    pub fn applies(&self, index: u64) -> bool {
        index > 0 && index.is_multiple_of(self.every as u64)
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] unless `factor` is finite and `>= 1` and `every >= 1`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(ConfigError::InvalidValue {
                field: "clipping.factor",
                value: self.factor as f64,
                rule: "finite and C >= 1",
            });
        }
        if self.every == 0 {
            return Err(ConfigError::InvalidValue {
                field: "clipping.every",
                value: 0.0,
                rule: "f >= 1",
            });
        }
        Ok(())
    }
}

/// How the first rounds are sent.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Warmup {
    /// No warm-up.
    #[default]
    None,
    /// The first `rounds` rounds send every value as f32 ([`EncodingMode::Dense`]), which
    /// empties the residual exactly. The policy is not consulted and starts fresh afterwards.
    Dense {
        /// Warm-up rounds.
        rounds: u32,
    },
    /// The first `rounds` rounds force the bitmap encoding at the policy's threshold.
    Bitmap {
        /// Warm-up rounds.
        rounds: u32,
    },
    /// The first `rounds` rounds send a density that falls geometrically from `start` (round
    /// 0) to `end` (round `rounds - 1`): at most `ceil(density * N)` entries, at the largest
    /// threshold that many elements reach. The policy adopts each ramp round's threshold.
    Ramp {
        /// Warm-up rounds, `>= 1`.
        rounds: u32,
        /// The first round's density, in `(0, 1]`.
        start: f64,
        /// The last round's density, in `(0, 1]`.
        end: f64,
    },
}

impl Warmup {
    /// The number of warm-up rounds.
    pub fn rounds(&self) -> u32 {
        match *self {
            Warmup::None => 0,
            Warmup::Dense { rounds } | Warmup::Bitmap { rounds } | Warmup::Ramp { rounds, .. } => {
                rounds
            }
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] for a ramp with no rounds or a density outside `(0, 1]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Warmup::Ramp { rounds, start, end } = *self {
            if rounds == 0 {
                return Err(ConfigError::InvalidValue {
                    field: "warmup.rounds",
                    value: 0.0,
                    rule: "a ramp has at least one round",
                });
            }
            for (field, v) in [("warmup.start", start), ("warmup.end", end)] {
                if !(v > 0.0 && v <= 1.0) {
                    return Err(ConfigError::InvalidValue {
                        field,
                        value: v,
                        rule: "0 < density <= 1",
                    });
                }
            }
        }
        Ok(())
    }
}

/// The encoder's configuration besides its segments and policies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderConfig {
    /// Residual clipping; `None` (the default) never clips. See the [module docs](self) for
    /// why it is off by default.
    pub clipping: Option<Clipping>,
    /// Warm-up; none by default.
    pub warmup: Warmup,
    /// Whether to compute the residual's L2 norm and largest value each round: one more
    /// pass over the residual (on a device backend, a download of N floats, since the sum of
    /// squares is an f64 sum in index order that must match the reference bit for bit), so
    /// it is off by default and the statistics are `None`; turn it on when you log or plot
    /// them.
    pub residual_stats: bool,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            clipping: None,
            warmup: Warmup::None,
            residual_stats: false,
        }
    }
}

impl EncoderConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    /// As [`Clipping::validate`] and [`Warmup::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(c) = &self.clipping {
            c.validate()?;
        }
        self.warmup.validate()
    }
}

/// One segment of a segmented encoder: an id carried in its messages, a length, a policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment<P> {
    /// The id carried in the segment's message headers; unique within the encoder.
    pub id: u16,
    /// The segment's element count, `>= 1`.
    pub len: usize,
    /// The segment's threshold policy.
    pub policy: P,
}

/// Where a segment lies in the vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentInfo {
    /// The segment id.
    pub id: u16,
    /// The segment's first element.
    pub offset: usize,
    /// The segment's element count.
    pub len: usize,
}

impl SegmentInfo {
    /// The segment's elements in the vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

#[derive(Clone, Debug)]
struct SegState<P> {
    info: SegmentInfo,
    policy: P,
    last: Option<SegmentStats>,
}

/// What decides a round's threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Normal,
    Dense,
    Bitmap,
    Ramp(f64),
}

/// Who chose a segment's threshold this round (and so hears about it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chooser {
    Policy,
    Ramp,
    Nobody,
}

/// The per-worker encoder: up to `S` segments, each with a policy of type `P`.
///
/// See the [module docs](self). `P` defaults to [`Policy`] (any built-in policy) and `S` to 1
/// (an unsegmented encoder needs one).
#[derive(Clone, Debug)]
pub struct Encoder<P = Policy, const S: usize = 1> {
    n: usize,
    segmented: bool,
    config: EncoderConfig,
    /// Per-round density factor of the warm-up ramp (1 without one).
    ramp_factor: f64,
    segs: heapless::Vec<SegState<P>, S>,
    cumulative: CumulativeStats,
    last: Option<RoundStats>,
}

impl<P: ThresholdPolicy, const S: usize> Encoder<P, S> {
    /// An unsegmented encoder for vectors of `n` elements: one plain message per round.
    ///
    /// # Errors
    /// [`WireError::EmptyVector`], [`WireError::TooManyElements`], [`ConfigError::BadSegmentLayout`] when
    /// `S == 0`, configuration errors ([`EncoderConfig::validate`]),
    /// [`ConfigError::WarmupOverBudget`].
    pub fn new(n: usize, policy: P, config: EncoderConfig) -> Result<Self, Error> {
        Self::build(
            false,
            config,
            core::iter::once(Segment {
                id: 0,
                len: n,
                policy,
            }),
        )
    }

    /// A segmented encoder: the vector is the segments laid end to end, in the order given;
    /// each round sends one message per segment.
    ///
    /// # Errors
    /// [`ConfigError::BadSegmentLayout`] (no segments, more than `S`, an empty segment, a duplicate
    /// id), [`WireError::TooManyElements`] when the segments add up to more than the format
    /// addresses, configuration errors, [`ConfigError::WarmupOverBudget`].
    pub fn segmented(
        config: EncoderConfig,
        segments: impl IntoIterator<Item = Segment<P>>,
    ) -> Result<Self, Error> {
        Self::build(true, config, segments)
    }

    fn build(
        segmented: bool,
        config: EncoderConfig,
        segments: impl IntoIterator<Item = Segment<P>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let mut segs: heapless::Vec<SegState<P>, S> = heapless::Vec::new();
        let mut offset = 0usize;
        for (index, s) in segments.into_iter().enumerate() {
            if s.len == 0 {
                if !segmented {
                    return Err(WireError::EmptyVector.into());
                }
                return Err(ConfigError::BadSegmentLayout {
                    index,
                    reason: "a segment has no elements",
                }
                .into());
            }
            if segs.iter().any(|t| t.info.id == s.id) {
                return Err(ConfigError::BadSegmentLayout {
                    index,
                    reason: "duplicate segment id",
                }
                .into());
            }
            let end = offset
                .checked_add(s.len)
                .filter(|&e| e <= MAX_ELEMENTS as usize);
            let Some(end) = end else {
                return Err(WireError::TooManyElements {
                    n: offset as u64 + s.len as u64,
                    max: MAX_ELEMENTS,
                }
                .into());
            };
            let state = SegState {
                info: SegmentInfo {
                    id: s.id,
                    offset,
                    len: s.len,
                },
                policy: s.policy,
                last: None,
            };
            if index >= u16::MAX as usize {
                return Err(ConfigError::BadSegmentLayout {
                    index,
                    reason: "more than 65535 segments",
                }
                .into());
            }
            if segs.push(state).is_err() {
                return Err(ConfigError::BadSegmentLayout {
                    index,
                    reason: "more segments than the encoder's capacity S",
                }
                .into());
            }
            offset = end;
        }
        if segs.is_empty() {
            return Err(ConfigError::BadSegmentLayout {
                index: 0,
                reason: "no segments (or an encoder capacity S of 0)",
            }
            .into());
        }
        // A byte-bounded policy must be able to carry the warm-up messages.
        for s in &segs {
            let Some(budget) = s.policy.byte_limit(s.info.len) else {
                continue;
            };
            let needed = match config.warmup {
                Warmup::Dense { rounds } if rounds > 0 => wire::dense_message_len(s.info.len),
                Warmup::Bitmap { rounds } if rounds > 0 => wire::max_message_len(s.info.len),
                _ => 0,
            };
            if needed > budget {
                return Err(ConfigError::WarmupOverBudget {
                    segment: s.info.id,
                    needed,
                    budget,
                }
                .into());
            }
        }
        let ramp_factor = match config.warmup {
            Warmup::Ramp { rounds, start, end } if rounds > 1 => {
                // The factor whose (rounds - 1)-th power is end / start.
                libm::pow(end / start, 1.0 / (rounds - 1) as f64)
            }
            _ => 1.0,
        };
        Ok(Encoder {
            n: offset,
            segmented,
            config,
            ramp_factor,
            segs,
            cumulative: CumulativeStats::default(),
            last: None,
        })
    }

    /// The vector's element count N.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether messages carry segment fields ([`Encoder::segmented`]).
    pub fn is_segmented(&self) -> bool {
        self.segmented
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The number of segments (1 for an unsegmented encoder).
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// The segments' places in the vector, in packet order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = SegmentInfo> + '_ {
        self.segs.iter().map(|s| s.info)
    }

    /// Segment `k`'s policy.
    pub fn policy(&self, k: usize) -> Option<&P> {
        self.segs.get(k).map(|s| &s.policy)
    }

    /// Segment `k`'s policy, to adjust between rounds.
    pub fn policy_mut(&mut self, k: usize) -> Option<&mut P> {
        self.segs.get_mut(k).map(|s| &mut s.policy)
    }

    /// The round index: rounds encoded so far (the next round's index).
    pub fn index(&self) -> u64 {
        self.cumulative.rounds
    }

    /// The last round's statistics (`None` before the first round and after a restore).
    pub fn last_round(&self) -> Option<&RoundStats> {
        self.last.as_ref()
    }

    /// The last round's statistics per segment, in packet order (empty before the first
    /// round and after a restore).
    pub fn segment_stats(&self) -> impl Iterator<Item = &SegmentStats> + '_ {
        self.segs.iter().filter_map(|s| s.last.as_ref())
    }

    /// Totals since the start of the run.
    pub fn cumulative(&self) -> &CumulativeStats {
        &self.cumulative
    }

    /// Every segment's policy state, in packet order.
    pub fn policy_states(&self) -> heapless::Vec<PolicyState, S> {
        self.segs.iter().map(|s| s.policy.state()).collect()
    }

    /// Replaces every segment's policy state (one per segment, in packet order), e.g. with
    /// [`Encoder::average_policies`] of the previous run's workers.
    ///
    /// # Errors
    /// [`ConfigError::BadSegmentLayout`] when the count differs from the segment count; the
    /// policies' [`ThresholdPolicy::set_state`] errors. On error nothing changes.
    pub fn seed_policies(&mut self, states: &[PolicyState]) -> Result<(), ConfigError> {
        if states.len() != self.segs.len() {
            return Err(ConfigError::BadSegmentLayout {
                index: states.len().min(self.segs.len()),
                reason: "one policy state per segment is needed",
            });
        }
        let mut policies: heapless::Vec<P, S> = heapless::Vec::new();
        for (s, st) in self.segs.iter().zip(states) {
            let mut p = s.policy.clone();
            p.set_state(st)?;
            // Cannot fail: at most S segments.
            let _ = policies.push(p);
        }
        for (s, p) in self.segs.iter_mut().zip(policies) {
            s.policy = p;
        }
        Ok(())
    }

    /// Averages the policy states of several workers' encoders, segment by segment (DL4J's
    /// reducers: threshold and sparsity averaged over the states that hold them). The result
    /// seeds a new run through [`Encoder::seed_policies`].
    ///
    /// # Errors
    /// [`ConfigError::BadSegmentLayout`] when the encoders have different segment counts;
    /// [`ConfigError::PolicyMismatch`] when a segment's policies are of different kinds.
    pub fn average_policies<'a>(
        encoders: impl IntoIterator<Item = &'a Self>,
    ) -> Result<heapless::Vec<PolicyState, S>, ConfigError>
    where
        P: 'a,
    {
        let mut reducers: heapless::Vec<PolicyReducer, S> = heapless::Vec::new();
        let mut kinds: heapless::Vec<u8, S> = heapless::Vec::new();
        for (e_index, e) in encoders.into_iter().enumerate() {
            if e_index == 0 {
                for s in &e.segs {
                    let _ = reducers.push(PolicyReducer::new());
                    let _ = kinds.push(s.policy.kind());
                }
            } else if e.segs.len() != reducers.len() {
                return Err(ConfigError::BadSegmentLayout {
                    index: e_index,
                    reason: "encoders with different segment counts",
                });
            }
            for (r, s) in reducers.iter_mut().zip(&e.segs) {
                r.add(&s.policy.state())?;
            }
        }
        Ok(reducers
            .iter()
            .zip(&kinds)
            .map(|(r, &k)| r.finish().unwrap_or(PolicyState::empty(k)))
            .collect())
    }

    /// The largest packet [`Encoder::encode`] writes: the sum over segments of the largest
    /// message each may send (its policy's limits, or a dense or bitmap warm-up message).
    /// [`Encoder::encode`] requires an output buffer of at least this size.
    pub fn max_packet_bytes(&self) -> usize {
        self.segs
            .iter()
            .map(|s| {
                let len = s.info.len;
                let normal = s.policy.limits(len).max_message_len(len);
                let warm = match self.config.warmup {
                    Warmup::Dense { rounds } if rounds > 0 => wire::dense_message_len(len),
                    Warmup::Bitmap { rounds } if rounds > 0 => wire::max_message_len(len),
                    _ => 0,
                };
                normal.max(warm)
            })
            .sum()
    }

    /// Whether round `index` is a warm-up round.
    pub fn is_warmup(&self, index: u64) -> bool {
        index < self.config.warmup.rounds() as u64
    }

    fn phase(&self, index: u64) -> Phase {
        if !self.is_warmup(index) {
            return Phase::Normal;
        }
        match self.config.warmup {
            Warmup::None => Phase::Normal,
            Warmup::Dense { .. } => Phase::Dense,
            Warmup::Bitmap { .. } => Phase::Bitmap,
            // The last ramp round sends exactly `end`, whatever the rounding of the factor.
            Warmup::Ramp { rounds, end, .. } if index + 1 == rounds as u64 => Phase::Ramp(end),
            Warmup::Ramp { start, .. } => {
                Phase::Ramp((start * libm::pow(self.ramp_factor, index as f64)).clamp(0.0, 1.0))
            }
        }
    }

    /// Encodes one round: for each segment, decides the threshold, writes the message into
    /// `out` (one after another), debits exactly what it carries, clips if due, and returns
    /// the round's statistics (the packet is `out[..stats.message_bytes]`).
    ///
    /// `sender` and `round` go into the headers; `round` also seeds the codec's cap rotation.
    /// Warm-up and clipping count in the encoder's own [`index`](Encoder::index).
    ///
    /// # Errors
    /// [`CodecError::TargetSizeMismatch`] when the residual's length is not N;
    /// [`CodecError::BufferTooSmall`] when `out` is shorter than [`Encoder::max_packet_bytes`];
    /// [`CodecError::NonFinite`] when the residual holds NaN or an infinity; device errors. On
    /// error the encoder and (except after a device failure) the residual are unchanged.
    pub fn encode<B: Backend>(
        &mut self,
        backend: &B,
        residual: &mut B::Buffer,
        sender: u32,
        round: u64,
        out: &mut [u8],
    ) -> Result<RoundStats, B::Error> {
        let len = backend.len(residual);
        if len != self.n {
            return Err(Error::Codec(CodecError::TargetSizeMismatch {
                message_n: self.n as u32,
                offset: 0,
                target_len: len,
            })
            .into());
        }
        let needed = self.max_packet_bytes();
        if out.len() < needed {
            return Err(Error::Codec(CodecError::BufferTooSmall {
                needed,
                got: out.len(),
            })
            .into());
        }
        if self.segs.len() > 1 {
            // Validate the whole vector before the first segment commits.
            backend.count(residual, 0..self.n, 1.0)?;
        }
        let index = self.cumulative.rounds;
        let phase = self.phase(index);
        let mut segs = self.segs.clone();
        let mut total = RoundStats {
            index,
            round,
            messages: 0,
            warmup: phase != Phase::Normal,
            tau: f32::NAN,
            tau_max: f32::NAN,
            encoding: None,
            sparse_messages: 0,
            bitmap_messages: 0,
            dense_messages: 0,
            truncated_messages: 0,
            n: self.n as u64,
            entries: 0,
            candidates: 0,
            density: 0.0,
            message_bytes: 0,
            dense_bytes: 4 * self.n as u64,
            residual_l2: None,
            residual_max: self.config.residual_stats.then_some(0.0),
            clipped_elements: 0,
            clipped_mass: 0.0,
        };
        let mut sum_sq = 0.0f64;
        for seg in segs.iter_mut() {
            let info = seg.info;
            let limits = seg.policy.limits(info.len);
            let (tau, limits, chooser) = match phase {
                Phase::Normal => (seg.policy.threshold(), limits, Chooser::Policy),
                Phase::Bitmap => (
                    seg.policy.threshold(),
                    limits.with(None, EncodingMode::Bitmap),
                    Chooser::Policy,
                ),
                Phase::Dense => (
                    1.0,
                    Limits {
                        cap: None,
                        mode: EncodingMode::Dense,
                    },
                    Chooser::Nobody,
                ),
                Phase::Ramp(density) => {
                    let k = ceil_u64(density * info.len as f64).clamp(1, info.len as u64);
                    let limits =
                        limits.with(Some(k.min(u32::MAX as u64) as u32), EncodingMode::Auto);
                    match ramp_tau(backend, residual, info.range(), k)? {
                        Some(t) => (t, limits, Chooser::Ramp),
                        None => (1.0, limits, Chooser::Nobody),
                    }
                }
            };
            let params = EncodeParams {
                tau,
                sender,
                round,
                cap: limits.cap,
                mode: limits.mode,
                segment: self.segmented.then_some(SegmentRef {
                    id: info.id,
                    offset: info.offset,
                    len: info.len,
                }),
            };
            let summary = backend.encode(residual, &params, &mut out[total.message_bytes..])?;
            let dense = summary.encoding == Encoding::Dense;
            let obs = Observation {
                tau,
                n: info.len as u64,
                entries: summary.entries as u64,
                candidates: summary.candidates,
                encoding: summary.encoding,
                bytes: summary.bytes,
                truncated: summary.truncated,
            };
            match chooser {
                Chooser::Policy => seg.policy.observe(&obs),
                Chooser::Ramp => seg.policy.adopt(&obs),
                Chooser::Nobody => {}
            }
            let clip = match self.config.clipping {
                Some(c) if !dense && c.applies(index) => {
                    let limit = (c.factor * tau).min(f32::MAX);
                    backend.clip(residual, info.range(), limit)?
                }
                _ => ClipStats::default(),
            };
            let residual_stats = if self.config.residual_stats {
                Some(backend.stats(residual, info.range())?)
            } else {
                None
            };
            let (entries, candidates) = if dense {
                (info.len as u64, info.len as u64)
            } else {
                (obs.entries, obs.candidates)
            };
            let stats = SegmentStats {
                id: info.id,
                offset: info.offset,
                len: info.len,
                tau: if dense { f32::NAN } else { tau },
                entries,
                candidates,
                density: entries as f64 / info.len as f64,
                encoding: summary.encoding,
                truncated: summary.truncated,
                warmup: total.warmup,
                message_bytes: summary.bytes,
                dense_bytes: 4 * info.len as u64,
                residual_sum_sq: residual_stats.map(|v| v.sum_sq),
                residual_l2: residual_stats.map(|v| v.l2()),
                residual_max: residual_stats.map(|v| v.max_abs),
                clipped_elements: clip.elements,
                clipped_mass: clip.mass,
            };
            seg.last = Some(stats);

            // Fold into the round's totals.
            total.encoding = if total.messages == 0 || total.encoding == Some(stats.encoding) {
                Some(stats.encoding)
            } else {
                None
            };
            total.messages += 1;
            match stats.encoding {
                Encoding::Sparse => total.sparse_messages += 1,
                Encoding::Bitmap => total.bitmap_messages += 1,
                Encoding::Dense => total.dense_messages += 1,
            }
            total.truncated_messages += stats.truncated as u16;
            if !dense {
                total.tau = if total.tau.is_nan() {
                    tau
                } else {
                    total.tau.min(tau)
                };
                total.tau_max = if total.tau_max.is_nan() {
                    tau
                } else {
                    total.tau_max.max(tau)
                };
            }
            total.entries += entries;
            total.candidates += candidates;
            total.message_bytes += summary.bytes;
            if let (Some(v), Some(max)) = (residual_stats, total.residual_max.as_mut()) {
                sum_sq += v.sum_sq;
                *max = max.max(v.max_abs);
            }
            total.clipped_elements += clip.elements;
            total.clipped_mass += clip.mass;
        }
        total.density = total.entries as f64 / self.n as f64;
        if self.config.residual_stats {
            total.residual_l2 = Some(
                crate::backend::VectorStats {
                    sum_sq,
                    max_abs: 0.0,
                }
                .l2(),
            );
        }
        self.segs = segs;
        self.cumulative.add(&total);
        self.last = Some(total);
        Ok(total)
    }
}

/// The largest threshold at which at least `k` elements of `range` pass (fewer when fewer are
/// non-zero: then the smallest non-zero magnitude): the `k`-th largest magnitude, found by
/// bisection over the `f32` bit patterns of positive thresholds, which are ordered like their
/// values (at most 33 `count` passes). `None` when the range is all zeros.
fn ramp_tau<B: Backend>(
    backend: &B,
    residual: &B::Buffer,
    range: Range<usize>,
    k: u64,
) -> Result<Option<f32>, B::Error> {
    let max_abs = backend.stats(residual, range.clone())?.max_abs;
    if max_abs.is_nan() || max_abs <= 0.0 {
        // All zeros (or NaN, which the encode reports before touching anything).
        return Ok(None);
    }
    let count = |bits: u32| backend.count(residual, range.clone(), f32::from_bits(bits));
    // An infinity makes count fail with NonFinite, as it should.
    let mut hi = max_abs.to_bits();
    let at_max = count(hi)?;
    if at_max >= k {
        return Ok(Some(max_abs));
    }
    let mut lo = 1u32; // the smallest positive subnormal
    let k = k.min(count(lo)?);
    if at_max >= k {
        return Ok(Some(max_abs));
    }
    // Invariant: count(lo) >= k > count(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let c = count(mid)?;
        if c >= k {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(f32::from_bits(lo)))
}

impl<B: Backend, P: ThresholdPolicy, const S: usize> PartyEncoder<B> for Encoder<P, S> {
    /// [`Encoder::max_packet_bytes`] (the encoder knows its N; `n` is not consulted).
    fn max_packet_len(&self, _n: usize) -> usize {
        self.max_packet_bytes()
    }

    fn encode_round(
        &mut self,
        backend: &B,
        residual: &mut B::Buffer,
        sender: u32,
        round: u64,
        out: &mut [u8],
    ) -> Result<usize, B::Error> {
        Ok(self
            .encode(backend, residual, sender, round, out)?
            .message_bytes)
    }
}

/// The smallest integer `>= x` as a `u64`: `0` for `x <= 0` or NaN, `u64::MAX` past it (the
/// float-to-integer cast saturates).
pub(crate) fn ceil_u64(x: f64) -> u64 {
    libm::ceil(x) as u64
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::backend::Reference;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn ceil_u64_rounds_up_and_saturates() {
        assert_eq!(ceil_u64(2.0), 2);
        assert_eq!(ceil_u64(2.1), 3);
        assert_eq!(ceil_u64(0.0), 0);
        assert_eq!(ceil_u64(-1.5), 0);
        assert_eq!(ceil_u64(f64::NAN), 0);
        assert_eq!(ceil_u64(1e30), u64::MAX);
    }

    #[test]
    fn ramp_tau_is_the_kth_largest_magnitude() {
        let x: Vec<f32> = (0..1000)
            .map(|i| {
                let v = ((i * 7919) % 1000) as f32 * 1e-3 + 1e-4;
                if i % 3 == 0 { -v } else { v }
            })
            .collect();
        let mut sorted: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
        for k in [1u64, 2, 10, 100, 999, 1000] {
            let t = ramp_tau(&Reference, &x, 0..1000, k).unwrap().unwrap();
            let c = crate::codec::count(&x, t).unwrap() as u64;
            assert_eq!(c, k);
            assert_eq!(t, sorted[k as usize - 1]);
        }
        // More than the non-zero elements: the smallest non-zero magnitude.
        let y = [0.0f32, 0.5, 0.0, -0.25];
        assert_eq!(
            ramp_tau(&Reference, &y.to_vec(), 0..4, 4).unwrap(),
            Some(0.25)
        );
        assert_eq!(
            ramp_tau(&Reference, &vec![0.0f32; 4], 0..4, 2).unwrap(),
            None
        );
        // Equal magnitudes.
        assert_eq!(
            ramp_tau(&Reference, &vec![0.5f32; 4], 0..4, 2).unwrap(),
            Some(0.5)
        );
        // A sub-range.
        assert_eq!(
            ramp_tau(&Reference, &y.to_vec(), 2..4, 1).unwrap(),
            Some(0.25)
        );
    }
}

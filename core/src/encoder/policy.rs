//! Threshold policies: how each round's threshold `tau` is chosen.
//!
//! Every policy implements [`ThresholdPolicy`]. The encoder asks it for a threshold before a
//! round ([`ThresholdPolicy::threshold`]), encodes, and reports what the round sent
//! ([`ThresholdPolicy::observe`]). Policies are small `Copy` values, so each worker (and each
//! segment) clones its own; their state ([`PolicyState`]) is plain numbers that checkpoints
//! save and that [`PolicyReducer`] averages across workers to seed a new run (DL4J's
//! `getAverageThresholdAlgorithm`).
//!
//! | policy | rule | DL4J |
//! |---|---|---|
//! | [`Fixed`] | a constant `tau` | `FixedThresholdAlgorithm` |
//! | [`Adaptive`] | keep the sparsity `entries / N` in `[s_min, s_max]`: `tau * d` below, `tau / d` above | `AdaptiveThresholdAlgorithm` |
//! | [`TargetSparsity`] | steer the sparsity to one target: `tau * d` below, `tau / d` above | `TargetSparsityThresholdAlgorithm` |
//! | [`ByteBudget`] | every message at most `budget` bytes (a codec cap), `tau` steered so the cap rarely bites | none (weakness W18 in docs/DL4J.md) |
//!
//! Thresholds are kept in `f64` and converted to `f32` (the wire's type) only when emitted, so
//! long trajectories follow the DL4J rule without accumulating `f32` rounding: with the
//! defaults and a sparsity stuck below `s_min`, twenty adaptation steps halve `tau` to within
//! `1e-12` (DL4J check 11). Emitted thresholds are clamped to `[f32::MIN_POSITIVE, f32::MAX]`,
//! so a policy never produces a threshold the codec rejects.
//!
//! Differences from DL4J: sparsity is `entries / N` (DL4J divides the message length,
//! header words included, by N), and a bitmap round counts at its true density (DL4J assumes
//! 1/16 for every bitmap round, which pushes `tau` up after each one).

use crate::codec::EncodingMode;
use crate::error::ConfigError;
use crate::wire::{self, Encoding, HEADER_LEN};

use super::ceil_u64;

/// Kind codes of the built-in policies, stored in checkpoints and policy states. Custom
/// policies should use codes from `0x80` up.
pub mod kind {
    /// [`super::Fixed`].
    pub const FIXED: u8 = 1;
    /// [`super::Adaptive`].
    pub const ADAPTIVE: u8 = 2;
    /// [`super::TargetSparsity`].
    pub const TARGET_SPARSITY: u8 = 3;
    /// [`super::ByteBudget`].
    pub const BYTE_BUDGET: u8 = 4;
}

/// What one round sent for one segment: the policy's feedback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The threshold the message was encoded at.
    pub tau: f32,
    /// The segment's element count N.
    pub n: u64,
    /// Elements sent (K).
    pub entries: u64,
    /// Elements that reached the threshold, before any cap.
    pub candidates: u64,
    /// The encoding written.
    pub encoding: Encoding,
    /// The message's length in bytes.
    pub bytes: usize,
    /// Whether a cap left candidates in the residual.
    pub truncated: bool,
}

impl Observation {
    /// The sparsity ratio `entries / N`, whatever the encoding.
    pub fn sparsity(&self) -> f64 {
        self.entries as f64 / self.n.max(1) as f64
    }

    /// The candidate density `candidates / N` (what would have been sent without a cap).
    pub fn candidate_density(&self) -> f64 {
        self.candidates as f64 / self.n.max(1) as f64
    }
}

/// Limits a policy puts on its messages, besides the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many entries per message.
    pub cap: Option<u32>,
    /// The encoding to write.
    pub mode: EncodingMode,
}

impl Limits {
    /// No cap, automatic encoding.
    pub const NONE: Limits = Limits {
        cap: None,
        mode: EncodingMode::Auto,
    };

    /// The longest message these limits let through for a segment of `n` elements.
    pub fn max_message_len(&self, n: usize) -> usize {
        let bitmap = wire::message_len(Encoding::Bitmap, n, 0);
        let k = self.cap.map_or(n, |c| (c as usize).min(n));
        match self.mode {
            EncodingMode::Dense => wire::dense_message_len(n),
            EncodingMode::Bitmap => bitmap,
            EncodingMode::Sparse => wire::message_len(Encoding::Sparse, n, k),
            EncodingMode::Auto => bitmap.min(wire::message_len(Encoding::Sparse, n, k)),
        }
    }

    /// These limits tightened by another cap and mode: the smaller cap; `other.mode` unless it
    /// is [`EncodingMode::Auto`].
    pub fn with(self, cap: Option<u32>, mode: EncodingMode) -> Limits {
        let cap = match (self.cap, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mode = if mode == EncodingMode::Auto {
            self.mode
        } else {
            mode
        };
        Limits { cap, mode }
    }
}

/// A policy's state: the numbers that checkpoints save and [`PolicyReducer`] averages.
///
/// A field that holds no value is NaN (a fresh [`Adaptive`] has neither a threshold nor an
/// observed sparsity). Equality compares bit patterns, so states with NaN fields compare equal
/// to themselves.
#[derive(Clone, Copy, Debug)]
pub struct PolicyState {
    /// The policy's kind code ([`kind`]).
    pub kind: u8,
    /// The current threshold, in `f64`.
    pub tau: f64,
    /// The last observed sparsity (`entries / N`; [`ByteBudget`]: `candidates / N`).
    pub sparsity: f64,
    /// A third number for policies that need it ([`ByteBudget`]: its target density).
    pub aux: f64,
}

impl PolicyState {
    /// A state with no values, of kind `kind`.
    pub const fn empty(kind: u8) -> Self {
        PolicyState {
            kind,
            tau: f64::NAN,
            sparsity: f64::NAN,
            aux: f64::NAN,
        }
    }
}

impl PartialEq for PolicyState {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.tau.to_bits() == other.tau.to_bits()
            && self.sparsity.to_bits() == other.sparsity.to_bits()
            && self.aux.to_bits() == other.aux.to_bits()
    }
}

/// A threshold policy: decides `tau` for each round from what earlier rounds sent.
///
/// The encoder calls, per segment and round: [`threshold`](Self::threshold), then encodes,
/// then [`observe`](Self::observe) (or [`adopt`](Self::adopt) for a round whose threshold the
/// warm-up ramp chose). Implementations must be deterministic functions of their state and
/// inputs: checkpoints rely on it.
pub trait ThresholdPolicy: Clone + core::fmt::Debug {
    /// The policy's kind code ([`kind`]; custom policies from `0x80`).
    fn kind(&self) -> u8;

    /// The threshold for the coming round: finite and strictly positive.
    fn threshold(&mut self) -> f32;

    /// What the round encoded at the last [`threshold`](Self::threshold) sent.
    fn observe(&mut self, obs: &Observation);

    /// What a round sent at a threshold the policy did not choose (the warm-up ramp's): the
    /// policy continues from `obs.tau`. The default treats it as [`observe`](Self::observe).
    fn adopt(&mut self, obs: &Observation) {
        self.observe(obs);
    }

    /// Limits on the messages for a segment of `n` elements. They must depend only on the
    /// policy's configuration (not its state): the encoder sizes packets with them once.
    fn limits(&self, n: usize) -> Limits {
        let _ = n;
        Limits::NONE
    }

    /// The most bytes the policy promises any message for a segment of `n` elements will
    /// take, if it promises a bound ([`ByteBudget`]: its budget). The encoder refuses a
    /// warm-up whose messages would break it. Like [`limits`](Self::limits), it must depend
    /// only on the configuration.
    fn byte_limit(&self, n: usize) -> Option<usize> {
        let _ = n;
        None
    }

    /// The policy's state.
    fn state(&self) -> PolicyState;

    /// Replaces the policy's state (a checkpoint's, or an average of several workers').
    ///
    /// # Errors
    /// [`ConfigError::PolicyMismatch`] for a state of another kind; [`ConfigError::InvalidValue`] for
    /// values out of their domain. On error the policy is unchanged.
    fn set_state(&mut self, state: &PolicyState) -> Result<(), ConfigError>;
}

/// Averages policy states across workers, as DL4J's reducers do: the threshold, the sparsity
/// and the auxiliary value are each averaged over the states that hold one (non-NaN), in the
/// order they are added.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyReducer {
    kind: Option<u8>,
    sums: [f64; 3],
    counts: [u64; 3],
}

impl PolicyReducer {
    /// An empty reducer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one worker's state.
    ///
    /// # Errors
    /// [`ConfigError::PolicyMismatch`] when `state` is of another kind than the first one added.
    pub fn add(&mut self, state: &PolicyState) -> Result<(), ConfigError> {
        match self.kind {
            Some(k) if k != state.kind => {
                return Err(ConfigError::PolicyMismatch {
                    expected: k,
                    found: state.kind,
                });
            }
            _ => self.kind = Some(state.kind),
        }
        for (i, v) in [state.tau, state.sparsity, state.aux]
            .into_iter()
            .enumerate()
        {
            if !v.is_nan() {
                self.sums[i] += v;
                self.counts[i] += 1;
            }
        }
        Ok(())
    }

    /// The averaged state, or `None` when nothing was added. A field no state held is NaN.
    pub fn finish(&self) -> Option<PolicyState> {
        let kind = self.kind?;
        let avg = |i: usize| {
            if self.counts[i] == 0 {
                f64::NAN
            } else {
                self.sums[i] / self.counts[i] as f64
            }
        };
        Some(PolicyState {
            kind,
            tau: avg(0),
            sparsity: avg(1),
            aux: avg(2),
        })
    }

    /// Averages the states of several policies (see [`PolicyReducer`]).
    ///
    /// # Errors
    /// [`ConfigError::PolicyMismatch`] when they are of different kinds.
    pub fn average<'a, P: ThresholdPolicy + 'a>(
        policies: impl IntoIterator<Item = &'a P>,
    ) -> Result<Option<PolicyState>, ConfigError> {
        let mut r = PolicyReducer::new();
        for p in policies {
            r.add(&p.state())?;
        }
        Ok(r.finish())
    }
}

// ----- helpers -----

/// The smallest and largest thresholds a policy keeps (and emits): the positive normal `f32`
/// range, so that the `f32` conversion is always a valid threshold.
const TAU_MIN: f64 = f32::MIN_POSITIVE as f64;
const TAU_MAX: f64 = f32::MAX as f64;

fn clamp_tau(t: f64) -> f64 {
    t.clamp(TAU_MIN, TAU_MAX)
}

fn emit(t: f64) -> f32 {
    clamp_tau(t) as f32
}

fn check_tau0(field: &'static str, tau0: f64) -> Result<(), ConfigError> {
    if tau0.is_finite() && (TAU_MIN..=TAU_MAX).contains(&tau0) {
        Ok(())
    } else {
        Err(ConfigError::InvalidValue {
            field,
            value: tau0,
            rule: "a finite threshold in the positive normal f32 range",
        })
    }
}

fn check_decay(field: &'static str, d: f64) -> Result<(), ConfigError> {
    if (0.5..1.0).contains(&d) {
        Ok(())
    } else {
        Err(ConfigError::InvalidValue {
            field,
            value: d,
            rule: "0.5 <= d < 1",
        })
    }
}

fn check_kind(expected: u8, state: &PolicyState) -> Result<(), ConfigError> {
    if state.kind == expected {
        Ok(())
    } else {
        Err(ConfigError::PolicyMismatch {
            expected,
            found: state.kind,
        })
    }
}

/// A state threshold: NaN (none) or a finite positive value.
fn check_state_tau(tau: f64) -> Result<(), ConfigError> {
    if tau.is_nan() || (tau.is_finite() && tau > 0.0) {
        Ok(())
    } else {
        Err(ConfigError::InvalidValue {
            field: "policy state tau",
            value: tau,
            rule: "NaN (none) or finite and > 0",
        })
    }
}

/// A state density: NaN (none) or in `[0, 1]`.
fn check_state_density(field: &'static str, s: f64) -> Result<(), ConfigError> {
    if s.is_nan() || (0.0..=1.0).contains(&s) {
        Ok(())
    } else {
        Err(ConfigError::InvalidValue {
            field,
            value: s,
            rule: "NaN (none) or 0 <= s <= 1",
        })
    }
}

/// `0.5^(1/20)`: DL4J's default decay, which halves or doubles `tau` in 20 steps.
pub const DEFAULT_DECAY: f64 = 0.965_936_328_924_845_6;

// ----- Fixed -----

/// A constant threshold (DL4J's `FixedThresholdAlgorithm`).
#[derive(Clone, Copy, Debug)]
pub struct Fixed {
    tau: f32,
    sparsity: f64,
}

impl Fixed {
    /// A fixed threshold.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] unless `tau` is finite and strictly positive.
    pub fn new(tau: f32) -> Result<Self, ConfigError> {
        if tau.is_finite() && tau > 0.0 {
            Ok(Fixed {
                tau,
                sparsity: f64::NAN,
            })
        } else {
            Err(ConfigError::InvalidValue {
                field: "fixed.tau",
                value: tau as f64,
                rule: "finite and > 0",
            })
        }
    }

    /// The threshold.
    pub fn tau(&self) -> f32 {
        self.tau
    }
}

impl ThresholdPolicy for Fixed {
    fn kind(&self) -> u8 {
        kind::FIXED
    }

    fn threshold(&mut self) -> f32 {
        self.tau
    }

    fn observe(&mut self, obs: &Observation) {
        self.sparsity = obs.sparsity();
    }

    /// A fixed threshold does not follow the ramp: it only records the sparsity.
    fn adopt(&mut self, obs: &Observation) {
        self.sparsity = obs.sparsity();
    }

    fn state(&self) -> PolicyState {
        PolicyState {
            kind: kind::FIXED,
            tau: self.tau as f64,
            sparsity: self.sparsity,
            aux: f64::NAN,
        }
    }

    /// Takes the sparsity only: the threshold is configuration (DL4J's reducer for it keeps
    /// any one instance, which is the same).
    fn set_state(&mut self, state: &PolicyState) -> Result<(), ConfigError> {
        check_kind(kind::FIXED, state)?;
        check_state_tau(state.tau)?;
        check_state_density("policy state sparsity", state.sparsity)?;
        self.sparsity = state.sparsity;
        Ok(())
    }
}

// ----- Adaptive -----

/// DL4J's `AdaptiveThresholdAlgorithm`: keeps the sparsity `entries / N` inside
/// `[s_min, s_max]`.
///
/// * The first call returns `tau0`.
/// * Afterwards, with `s` the last observed sparsity: `s < s_min` gives `tau * d` (a lower
///   threshold, more entries), `s > s_max` gives `tau / d`, otherwise `tau` is kept.
/// * Defaults ([`Adaptive::default`]): `tau0 = 1e-3`, `s_min = 1e-4`, `s_max = 1e-2`,
///   `d = 0.5^(1/20)` (halves or doubles `tau` in 20 steps).
#[derive(Clone, Copy, Debug)]
pub struct Adaptive {
    tau0: f64,
    min_sparsity: f64,
    max_sparsity: f64,
    decay: f64,
    tau: f64,
    sparsity: f64,
}

impl Adaptive {
    /// DL4J's default initial threshold.
    pub const DEFAULT_TAU0: f64 = 1e-3;
    /// DL4J's default lower sparsity bound.
    pub const DEFAULT_MIN_SPARSITY: f64 = 1e-4;
    /// DL4J's default upper sparsity bound.
    pub const DEFAULT_MAX_SPARSITY: f64 = 1e-2;

    /// An adaptive policy.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] unless `tau0 > 0` (and a normal `f32`),
    /// `0 < min_sparsity <= max_sparsity` (and `max_sparsity <= 1`), and `0.5 <= decay < 1`.
    pub fn new(
        tau0: f64,
        min_sparsity: f64,
        max_sparsity: f64,
        decay: f64,
    ) -> Result<Self, ConfigError> {
        check_tau0("adaptive.tau0", tau0)?;
        if min_sparsity.is_nan() || min_sparsity <= 0.0 {
            return Err(ConfigError::InvalidValue {
                field: "adaptive.min_sparsity",
                value: min_sparsity,
                rule: "0 < s_min <= s_max",
            });
        }
        if !(max_sparsity >= min_sparsity && max_sparsity <= 1.0) {
            return Err(ConfigError::InvalidValue {
                field: "adaptive.max_sparsity",
                value: max_sparsity,
                rule: "s_min <= s_max <= 1",
            });
        }
        check_decay("adaptive.decay", decay)?;
        Ok(Adaptive {
            tau0,
            min_sparsity,
            max_sparsity,
            decay,
            tau: f64::NAN,
            sparsity: f64::NAN,
        })
    }

    /// The threshold in `f64`, as the policy keeps it (NaN before the first call).
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// The last observed sparsity (NaN before the first observation).
    pub fn sparsity(&self) -> f64 {
        self.sparsity
    }
}

impl Default for Adaptive {
    /// DL4J's defaults.
    fn default() -> Self {
        Adaptive {
            tau0: Self::DEFAULT_TAU0,
            min_sparsity: Self::DEFAULT_MIN_SPARSITY,
            max_sparsity: Self::DEFAULT_MAX_SPARSITY,
            decay: DEFAULT_DECAY,
            tau: f64::NAN,
            sparsity: f64::NAN,
        }
    }
}

impl ThresholdPolicy for Adaptive {
    fn kind(&self) -> u8 {
        kind::ADAPTIVE
    }

    fn threshold(&mut self) -> f32 {
        steer_to_band(
            &mut self.tau,
            self.tau0,
            self.sparsity,
            (self.min_sparsity, self.max_sparsity),
            self.decay,
        )
    }

    fn observe(&mut self, obs: &Observation) {
        self.sparsity = obs.sparsity();
    }

    fn adopt(&mut self, obs: &Observation) {
        self.tau = clamp_tau(obs.tau as f64);
        self.sparsity = obs.sparsity();
    }

    fn state(&self) -> PolicyState {
        PolicyState {
            kind: kind::ADAPTIVE,
            tau: self.tau,
            sparsity: self.sparsity,
            aux: f64::NAN,
        }
    }

    fn set_state(&mut self, state: &PolicyState) -> Result<(), ConfigError> {
        set_band_state(kind::ADAPTIVE, state, &mut self.tau, &mut self.sparsity)
    }
}

/// DL4J's band rule, shared by [`Adaptive`] (band `[min, max]`) and [`TargetSparsity`]
/// (band `[target, target]`): the first call returns `tau0`; afterwards a sparsity below the
/// band gives `tau * decay` (send more), above it `tau / decay`, inside it keeps `tau`. A state
/// seeded with a threshold only (sparsity NaN) keeps the threshold.
fn steer_to_band(tau: &mut f64, tau0: f64, sparsity: f64, band: (f64, f64), decay: f64) -> f32 {
    if tau.is_nan() {
        *tau = tau0;
        return emit(*tau);
    }
    if sparsity < band.0 {
        *tau = clamp_tau(*tau * decay);
    } else if sparsity > band.1 {
        *tau = clamp_tau(*tau / decay);
    }
    emit(*tau)
}

/// Restores the `(tau, sparsity)` state of a band policy of `kind`, validated.
fn set_band_state(
    kind: u8,
    state: &PolicyState,
    tau: &mut f64,
    sparsity: &mut f64,
) -> Result<(), ConfigError> {
    check_kind(kind, state)?;
    check_state_tau(state.tau)?;
    check_state_density("policy state sparsity", state.sparsity)?;
    *tau = if state.tau.is_nan() {
        f64::NAN
    } else {
        clamp_tau(state.tau)
    };
    *sparsity = state.sparsity;
    Ok(())
}

// ----- TargetSparsity -----

/// DL4J's `TargetSparsityThresholdAlgorithm`: steers the sparsity `entries / N` to a target.
///
/// The first call returns `tau0`; afterwards `s < target` gives `tau * d`, `s > target` gives
/// `tau / d`, equality keeps `tau`. Defaults: `tau0 = 1e-4`, `target = 1e-3`,
/// `d = 0.5^(1/20)`.
#[derive(Clone, Copy, Debug)]
pub struct TargetSparsity {
    tau0: f64,
    target: f64,
    decay: f64,
    tau: f64,
    sparsity: f64,
}

impl TargetSparsity {
    /// DL4J's default initial threshold.
    pub const DEFAULT_TAU0: f64 = 1e-4;
    /// DL4J's default target sparsity.
    pub const DEFAULT_TARGET: f64 = 1e-3;

    /// A target-sparsity policy.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] unless `tau0 > 0` (and a normal `f32`),
    /// `0 < target < 1/16`, and `0.5 <= decay < 1`.
    pub fn new(tau0: f64, target: f64, decay: f64) -> Result<Self, ConfigError> {
        check_tau0("target_sparsity.tau0", tau0)?;
        if !(target > 0.0 && target < 1.0 / 16.0) {
            return Err(ConfigError::InvalidValue {
                field: "target_sparsity.target",
                value: target,
                rule: "0 < target < 1/16",
            });
        }
        check_decay("target_sparsity.decay", decay)?;
        Ok(TargetSparsity {
            tau0,
            target,
            decay,
            tau: f64::NAN,
            sparsity: f64::NAN,
        })
    }

    /// The threshold in `f64` (NaN before the first call).
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// The target sparsity.
    pub fn target(&self) -> f64 {
        self.target
    }
}

impl Default for TargetSparsity {
    /// DL4J's defaults.
    fn default() -> Self {
        TargetSparsity {
            tau0: Self::DEFAULT_TAU0,
            target: Self::DEFAULT_TARGET,
            decay: DEFAULT_DECAY,
            tau: f64::NAN,
            sparsity: f64::NAN,
        }
    }
}

impl ThresholdPolicy for TargetSparsity {
    fn kind(&self) -> u8 {
        kind::TARGET_SPARSITY
    }

    fn threshold(&mut self) -> f32 {
        steer_to_band(
            &mut self.tau,
            self.tau0,
            self.sparsity,
            (self.target, self.target),
            self.decay,
        )
    }

    fn observe(&mut self, obs: &Observation) {
        self.sparsity = obs.sparsity();
    }

    fn adopt(&mut self, obs: &Observation) {
        self.tau = clamp_tau(obs.tau as f64);
        self.sparsity = obs.sparsity();
    }

    fn state(&self) -> PolicyState {
        PolicyState {
            kind: kind::TARGET_SPARSITY,
            tau: self.tau,
            sparsity: self.sparsity,
            aux: f64::NAN,
        }
    }

    fn set_state(&mut self, state: &PolicyState) -> Result<(), ConfigError> {
        set_band_state(
            kind::TARGET_SPARSITY,
            state,
            &mut self.tau,
            &mut self.sparsity,
        )
    }
}

// ----- ByteBudget -----

/// Every message at most `budget` bytes (ours; DL4J controls only the element ratio: weakness W18 in docs/DL4J.md).
///
/// **The guarantee comes from the codec, not from the controller.** For a segment of `n`
/// elements, [`ThresholdPolicy::limits`] returns:
///
/// * no limits when a bitmap message fits (`budget >= 48 + ceil(n / 4)`): the automatic
///   encoding is never larger than the bitmap;
/// * otherwise a cap of `floor((budget - 48) / 4)` entries in forced sparse encoding, so the
///   message is at most `48 + 4 * cap <= budget` bytes whatever the residual holds.
///
/// Candidates the cap leaves out stay in the residual (nothing is lost). The threshold is
/// steered so the cap rarely bites: the controller aims the candidate count at
/// `7/8 * min(cap, ceil(n * max_density))` (`max_density` defaults to 1/16, where sparse and
/// bitmap cost the same) with a damped multiplicative step, `tau *= clamp(r^(1/8), 1/2, 2)`,
/// `r` being the observed candidate density over the target density. The eighth root keeps
/// the loop stable for the steep candidate-count curves of near-Gaussian residuals
/// (`count ~ tau^-alpha` with `alpha` up to about 15) and still converges for heavy tails.
///
/// A budget below 52 bytes leaves no room for an entry: messages are then always empty (all
/// mass stays in the residual).
#[derive(Clone, Copy, Debug)]
pub struct ByteBudget {
    budget: usize,
    tau0: f64,
    max_density: f64,
    tau: f64,
    density: f64,
    target: f64,
}

impl ByteBudget {
    /// The default initial threshold.
    pub const DEFAULT_TAU0: f64 = 1e-3;
    /// The default largest density the controller aims at: 1/16, where a sparse message
    /// costs as much as a bitmap.
    pub const DEFAULT_MAX_DENSITY: f64 = 1.0 / 16.0;
    /// The fraction of the target the controller aims at, so that ordinary fluctuations do
    /// not hit the cap.
    pub const FILL: f64 = 0.875;

    /// A byte-budget policy with the default `tau0` and largest density.
    ///
    /// # Errors
    /// [`ConfigError::BudgetBelowHeader`] when `budget < 48`.
    pub fn new(budget: usize) -> Result<Self, ConfigError> {
        Self::with_params(budget, Self::DEFAULT_TAU0, Self::DEFAULT_MAX_DENSITY)
    }

    /// A byte-budget policy.
    ///
    /// # Errors
    /// [`ConfigError::BudgetBelowHeader`] when `budget < 48`; [`ConfigError::InvalidValue`] unless
    /// `tau0 > 0` (a normal `f32`) and `0 < max_density <= 1`.
    pub fn with_params(budget: usize, tau0: f64, max_density: f64) -> Result<Self, ConfigError> {
        if budget < HEADER_LEN {
            return Err(ConfigError::BudgetBelowHeader {
                budget,
                header: HEADER_LEN,
            });
        }
        check_tau0("byte_budget.tau0", tau0)?;
        if !(max_density > 0.0 && max_density <= 1.0) {
            return Err(ConfigError::InvalidValue {
                field: "byte_budget.max_density",
                value: max_density,
                rule: "0 < max_density <= 1",
            });
        }
        Ok(ByteBudget {
            budget,
            tau0,
            max_density,
            tau: f64::NAN,
            density: f64::NAN,
            target: f64::NAN,
        })
    }

    /// The budget in bytes per message.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The threshold in `f64` (NaN before the first call).
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// The entry cap the budget imposes on a segment of `n` elements (`None` when a bitmap
    /// fits).
    pub fn cap(&self, n: usize) -> Option<u32> {
        if self.budget >= wire::message_len(Encoding::Bitmap, n, 0) {
            None
        } else {
            let k = ((self.budget - HEADER_LEN) / 4).min(n);
            Some(k.min(u32::MAX as usize) as u32)
        }
    }

    /// The candidate density the controller aims at for a segment of `n` elements.
    pub fn target_density(&self, n: usize) -> f64 {
        let n = n.max(1);
        let by_density = ceil_u64(n as f64 * self.max_density);
        let by_bytes = ((self.budget - HEADER_LEN) / 4) as u64;
        let k = by_density.min(by_bytes) as f64 * Self::FILL;
        k.max(0.5) / n as f64
    }
}

impl ThresholdPolicy for ByteBudget {
    fn kind(&self) -> u8 {
        kind::BYTE_BUDGET
    }

    fn threshold(&mut self) -> f32 {
        if self.tau.is_nan() {
            self.tau = self.tau0;
            return emit(self.tau);
        }
        if self.density.is_nan() || self.target.is_nan() || self.target <= 0.0 {
            return emit(self.tau);
        }
        let r = self.density / self.target;
        let step = if r > 0.0 {
            // The eighth root, as three square roots (each correctly rounded).
            libm::sqrt(libm::sqrt(libm::sqrt(r))).clamp(0.5, 2.0)
        } else {
            0.5
        };
        self.tau = clamp_tau(self.tau * step);
        emit(self.tau)
    }

    fn observe(&mut self, obs: &Observation) {
        self.density = obs.candidate_density();
        self.target = self.target_density(obs.n as usize);
    }

    fn adopt(&mut self, obs: &Observation) {
        self.tau = clamp_tau(obs.tau as f64);
        self.observe(obs);
    }

    fn limits(&self, n: usize) -> Limits {
        match self.cap(n) {
            None => Limits::NONE,
            Some(cap) => Limits {
                cap: Some(cap),
                mode: EncodingMode::Sparse,
            },
        }
    }

    fn byte_limit(&self, _n: usize) -> Option<usize> {
        Some(self.budget)
    }

    fn state(&self) -> PolicyState {
        PolicyState {
            kind: kind::BYTE_BUDGET,
            tau: self.tau,
            sparsity: self.density,
            aux: self.target,
        }
    }

    fn set_state(&mut self, state: &PolicyState) -> Result<(), ConfigError> {
        check_kind(kind::BYTE_BUDGET, state)?;
        check_state_tau(state.tau)?;
        check_state_density("policy state sparsity", state.sparsity)?;
        check_state_density("policy state aux (target density)", state.aux)?;
        self.tau = if state.tau.is_nan() {
            f64::NAN
        } else {
            clamp_tau(state.tau)
        };
        self.density = state.sparsity;
        self.target = state.aux;
        Ok(())
    }
}

// Policies compare bit for bit, so that states holding NaN ("no value yet") equal themselves.
macro_rules! bitwise_eq {
    ($t:ty { $($f:ident),* }) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                true $(&& self.$f.to_bits() == other.$f.to_bits())*
            }
        }
    };
}

bitwise_eq!(Fixed { tau, sparsity });
bitwise_eq!(Adaptive {
    tau0,
    min_sparsity,
    max_sparsity,
    decay,
    tau,
    sparsity
});
bitwise_eq!(TargetSparsity {
    tau0,
    target,
    decay,
    tau,
    sparsity
});

impl PartialEq for ByteBudget {
    fn eq(&self, other: &Self) -> bool {
        self.budget == other.budget
            && [
                self.tau0,
                self.max_density,
                self.tau,
                self.density,
                self.target,
            ]
            .iter()
            .zip([
                other.tau0,
                other.max_density,
                other.tau,
                other.density,
                other.target,
            ])
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

// ----- Policy: any built-in policy -----

/// Any built-in policy, so that segments of one encoder can use different ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// [`Fixed`].
    Fixed(Fixed),
    /// [`Adaptive`].
    Adaptive(Adaptive),
    /// [`TargetSparsity`].
    TargetSparsity(TargetSparsity),
    /// [`ByteBudget`].
    ByteBudget(ByteBudget),
}

impl Default for Policy {
    /// [`Adaptive::default`].
    fn default() -> Self {
        Policy::Adaptive(Adaptive::default())
    }
}

impl From<Fixed> for Policy {
    fn from(p: Fixed) -> Self {
        Policy::Fixed(p)
    }
}

impl From<Adaptive> for Policy {
    fn from(p: Adaptive) -> Self {
        Policy::Adaptive(p)
    }
}

impl From<TargetSparsity> for Policy {
    fn from(p: TargetSparsity) -> Self {
        Policy::TargetSparsity(p)
    }
}

impl From<ByteBudget> for Policy {
    fn from(p: ByteBudget) -> Self {
        Policy::ByteBudget(p)
    }
}

macro_rules! each_policy {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            Policy::Fixed($p) => $e,
            Policy::Adaptive($p) => $e,
            Policy::TargetSparsity($p) => $e,
            Policy::ByteBudget($p) => $e,
        }
    };
}

impl ThresholdPolicy for Policy {
    fn kind(&self) -> u8 {
        each_policy!(self, p => p.kind())
    }

    fn threshold(&mut self) -> f32 {
        each_policy!(self, p => p.threshold())
    }

    fn observe(&mut self, obs: &Observation) {
        each_policy!(self, p => p.observe(obs))
    }

    fn adopt(&mut self, obs: &Observation) {
        each_policy!(self, p => p.adopt(obs))
    }

    fn limits(&self, n: usize) -> Limits {
        each_policy!(self, p => p.limits(n))
    }

    fn byte_limit(&self, n: usize) -> Option<usize> {
        each_policy!(self, p => p.byte_limit(n))
    }

    fn state(&self) -> PolicyState {
        each_policy!(self, p => p.state())
    }

    fn set_state(&mut self, state: &PolicyState) -> Result<(), ConfigError> {
        each_policy!(self, p => p.set_state(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(tau: f32, entries: u64, n: u64) -> Observation {
        Observation {
            tau,
            n,
            entries,
            candidates: entries,
            encoding: Encoding::Sparse,
            bytes: 48 + 4 * entries as usize,
            truncated: false,
        }
    }

    #[test]
    fn decay_constant_is_dl4j() {
        assert!((DEFAULT_DECAY - libm::pow(0.5, 1.0 / 20.0)).abs() < 1e-16);
    }

    #[test]
    fn adaptive_band() {
        let mut p = Adaptive::default();
        assert_eq!(p.threshold(), 1e-3);
        p.observe(&obs(1e-3, 50, 10_000)); // 5e-3: in band
        assert_eq!(p.threshold(), 1e-3);
        p.observe(&obs(1e-3, 500, 10_000)); // 5e-2: too dense
        p.threshold();
        assert_eq!(p.tau(), 1e-3 / DEFAULT_DECAY);
        p.observe(&obs(1e-3, 0, 10_000)); // 0: too sparse
        p.threshold();
        assert_eq!(p.tau(), 1e-3 / DEFAULT_DECAY * DEFAULT_DECAY);
    }

    #[test]
    fn tau_is_clamped_to_f32() {
        let mut p = Adaptive::default();
        p.threshold();
        for _ in 0..100_000 {
            p.observe(&obs(1.0, 0, 10));
            let t = p.threshold();
            assert!(t > 0.0 && t.is_finite());
        }
        assert_eq!(p.tau(), TAU_MIN);
    }

    #[test]
    fn limits_with() {
        let l = Limits::NONE.with(Some(5), EncodingMode::Auto);
        assert_eq!(l.cap, Some(5));
        let l = l.with(Some(3), EncodingMode::Sparse);
        assert_eq!((l.cap, l.mode), (Some(3), EncodingMode::Sparse));
        assert_eq!(l.max_message_len(100), 48 + 12);
    }
}

//! [`ConfigError`]: a configuration or set-up argument is outside its domain.

use super::{Classify, ErrorKind};

/// A configuration or set-up argument is outside its domain: a threshold policy's
/// parameters, clipping, warm-up, a segment layout, a queue or participant count, the round
/// protocol's configuration.
///
/// Reported when something is built or configured (policy constructors,
/// [`crate::encoder::EncoderConfig::validate`], [`crate::queue::Queue::with_capacity`],
/// [`crate::round::Accumulator::new`]), before any work is done. Every variant classifies as
/// [`ErrorKind::InvalidArgument`].
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration value is outside its domain: the field, the value and the rule it
    /// breaks (a policy's parameters, clipping, warm-up).
    #[error("invalid configuration: {field} = {value}, must satisfy {rule}")]
    InvalidValue {
        /// The configuration field, e.g. `"adaptive.decay"`.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The rule it must satisfy, e.g. `"0.5 <= d < 1"`.
        rule: &'static str,
    },
    /// A byte budget smaller than a message header: no message fits in it.
    #[error("byte budget of {budget} bytes is smaller than the {header}-byte message header")]
    BudgetBelowHeader {
        /// The budget in bytes.
        budget: usize,
        /// The header length in bytes.
        header: usize,
    },
    /// A segment layout the encoder cannot use (no segments, too many, an empty segment, a
    /// duplicate id).
    #[error("bad segment layout at segment #{index}: {reason}")]
    BadSegmentLayout {
        /// The offending segment's position in the layout.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A warm-up message (dense or bitmap) would exceed the segment's byte budget.
    #[error(
        "segment {segment}: a warm-up message takes {needed} bytes, over its budget of {budget} bytes"
    )]
    WarmupOverBudget {
        /// The segment id.
        segment: u16,
        /// The warm-up message's length in bytes.
        needed: usize,
        /// The budget in bytes.
        budget: usize,
    },
    /// A policy state of another kind of policy (reducing or seeding Adaptive state into a
    /// ByteBudget policy, or restoring a checkpoint written with another policy).
    #[error("policy state of kind {found} given to a policy of kind {expected}")]
    PolicyMismatch {
        /// The kind code of the policy that receives the state.
        expected: u8,
        /// The kind code the state belongs to.
        found: u8,
    },
    /// A queue's capacity is below what one round needs (DL4J can deadlock there, W9).
    #[error(
        "queue capacity {capacity} is below the {needed} slots one round needs (it would deadlock)"
    )]
    QueueTooSmall {
        /// The capacity asked for.
        capacity: usize,
        /// The capacity one round needs.
        needed: usize,
    },
    /// A participant count of 0, or above the most the barrier or accumulator supports.
    #[error("participant count {parties} is outside 1..={max}")]
    PartiesOutOfRange {
        /// The count given.
        parties: usize,
        /// The largest count allowed.
        max: usize,
    },
    /// A round-protocol configuration the accumulator cannot use; the text says why.
    #[error("invalid round configuration: {reason}")]
    Round {
        /// What is wrong.
        reason: &'static str,
    },
}

impl Classify for ConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

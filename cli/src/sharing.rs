//! How the workers' updates reach every replica: the dense fp32 baseline and gradcast.
//!
//! Both follow the same rule so that they differ only in what travels: each replica sums the
//! round's contributions in sender order into an update buffer, then steps
//! `params -= scale * update` with `scale = 1/P` (mean) or `1` (sum). Dense contributions are
//! the workers' fp32 updates ([`DenseSharing`]); gradcast's are the decoded threshold-encoded
//! messages of each worker's residual, moved by the core's round protocol
//! (`gradcast_core::round`, driven from [`crate::train`]) with one [`encoder_for`] per worker.

use crate::error::CliError;
use crate::threshold::ThresholdSpec;
use gradcast_core::Backend;
use gradcast_core::backend::slices;
use gradcast_core::encoder::policy::DEFAULT_DECAY;
use gradcast_core::encoder::{
    Adaptive, ByteBudget, Encoder, EncoderConfig, Fixed, Policy, TargetSparsity,
};
use gradcast_core::packet::PartyEncoder;
use gradcast_core::wire::Encoding;
use std::time::Duration;

/// How the round's contributions are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Aggregate {
    /// `params -= (1/P) * sum`: the step size does not depend on P.
    #[default]
    Mean,
    /// `params -= sum`.
    Sum,
}

impl Aggregate {
    /// The step's scale for `workers` workers.
    pub fn scale(self, workers: usize) -> f32 {
        match self {
            Aggregate::Mean => 1.0 / workers as f32,
            Aggregate::Sum => 1.0,
        }
    }

    /// `"mean"` or `"sum"`.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Mean => "mean",
            Aggregate::Sum => "sum",
        }
    }
}

/// One message of a round, as the statistics see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MessageStat {
    /// Threshold carried by the message.
    pub tau: f32,
    /// Entries (elements sent).
    pub entries: u32,
    /// Encoding chosen.
    pub encoding: Encoding,
    /// Message length in bytes, header included.
    pub bytes: usize,
}

/// What one round moved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundStats {
    /// Bytes sent by all workers this round.
    pub bytes: u64,
    /// Per message statistics (empty for dense).
    pub messages: Vec<MessageStat>,
}

/// Time spent in the phases of gradcast's rounds: per round the slowest worker's time (the
/// round's critical path, as the round protocol reports it), summed over rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// `residual += update` and encode-then-commit.
    pub encode: Duration,
    /// Waiting for the other workers, publishing the packets to every party and validating
    /// them (parse, checksum).
    pub exchange: Duration,
    /// Decoding every packet into the worker's replica and stepping its parameters.
    pub decode: Duration,
}

/// A way of sharing updates among P replicas.
pub trait Sharing {
    /// Replica `worker`'s current parameters, on the host.
    ///
    /// # Errors
    /// Backend errors.
    fn params(&self, worker: usize) -> Result<Vec<f32>, CliError>;

    /// Shares the round's updates (one per worker, in worker order) and steps every replica.
    ///
    /// # Errors
    /// Backend and codec errors.
    fn share(&mut self, round: u64, updates: &[Vec<f32>]) -> Result<RoundStats, CliError>;

    /// Whether every replica holds bit-identical parameters.
    ///
    /// # Errors
    /// Backend errors.
    fn replicas_identical(&self) -> Result<bool, CliError> {
        replicas_identical(self.workers(), |w| self.params(w))
    }

    /// Number of workers (and replicas).
    fn workers(&self) -> usize;
}

/// Whether the `workers` replicas that `params` downloads hold bit-identical parameters
/// (compared with replica 0, bit for bit: `-0.0 != 0.0`, NaN payloads count).
///
/// # Errors
/// The first error of `params`.
pub fn replicas_identical(
    workers: usize,
    params: impl Fn(usize) -> Result<Vec<f32>, CliError>,
) -> Result<bool, CliError> {
    if workers == 0 {
        return Ok(true);
    }
    let first = params(0)?;
    for w in 1..workers {
        let p = params(w)?;
        if p.len() != first.len()
            || p.iter()
                .zip(&first)
                .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The dense baseline: every worker's fp32 update goes to every replica; a round costs
/// `4 * N * P` bytes (the raw updates, no header).
#[derive(Clone, Debug)]
pub struct DenseSharing {
    replicas: Vec<Vec<f32>>,
    acc: Vec<f32>,
    scale: f32,
}

impl DenseSharing {
    /// P replicas starting at `init`.
    pub fn new(init: &[f32], workers: usize, aggregate: Aggregate) -> Self {
        DenseSharing {
            replicas: vec![init.to_vec(); workers],
            acc: vec![0.0; init.len()],
            scale: aggregate.scale(workers),
        }
    }
}

impl Sharing for DenseSharing {
    fn params(&self, worker: usize) -> Result<Vec<f32>, CliError> {
        Ok(self.replicas[worker].clone())
    }

    fn share(&mut self, _round: u64, updates: &[Vec<f32>]) -> Result<RoundStats, CliError> {
        check_updates(updates, self.replicas.len(), self.acc.len())?;
        for params in &mut self.replicas {
            self.acc.fill(0.0);
            for u in updates {
                for (a, v) in self.acc.iter_mut().zip(u) {
                    *a += *v;
                }
            }
            slices::sub_scaled(params, &self.acc, self.scale);
        }
        Ok(RoundStats {
            bytes: (4 * self.acc.len() * updates.len()) as u64,
            messages: Vec::new(),
        })
    }

    fn workers(&self) -> usize {
        self.replicas.len()
    }
}

fn check_updates(updates: &[Vec<f32>], workers: usize, n: usize) -> Result<(), CliError> {
    if updates.len() != workers {
        return Err(CliError::Train(format!(
            "{} updates for {workers} workers",
            updates.len()
        )));
    }
    if let Some(u) = updates.iter().find(|u| u.len() != n) {
        return Err(CliError::Train(format!(
            "an update has {} elements, the model has {n}",
            u.len()
        )));
    }
    Ok(())
}

/// A worker's encoder for `spec` over `n` elements: the core's policy-driven
/// [`Encoder`] with the matching policy (DL4J's defaults for `adaptive`, and for the starting
/// threshold and step of `target:S`) and the default configuration (no clipping, no warm-up).
///
/// # Errors
/// [`CliError::Usage`] when the core rejects the policy's parameters.
pub fn encoder_for(spec: ThresholdSpec, n: usize) -> Result<Encoder, CliError> {
    let usage = |e: gradcast_core::Error| CliError::Usage(format!("--threshold {spec}: {e}"));
    let bad_policy = |e: gradcast_core::ConfigError| usage(e.into());
    let policy: Policy = match spec {
        ThresholdSpec::Fixed(tau) => Fixed::new(tau).map_err(bad_policy)?.into(),
        ThresholdSpec::Adaptive => Adaptive::default().into(),
        ThresholdSpec::Target(s) => {
            TargetSparsity::new(TargetSparsity::DEFAULT_TAU0, s, DEFAULT_DECAY)
                .map_err(bad_policy)?
                .into()
        }
        ThresholdSpec::Budget(b) => ByteBudget::new(b).map_err(bad_policy)?.into(),
    };
    Encoder::new(n, policy, EncoderConfig::default()).map_err(usage)
}

/// [`encoder_for`] behind the [`PartyEncoder`] seam, for code that wraps encoders.
///
/// # Errors
/// As [`encoder_for`].
pub fn make_encoder<B: Backend>(
    spec: ThresholdSpec,
    n: usize,
) -> Result<Box<dyn PartyEncoder<B> + Send>, CliError> {
    Ok(Box::new(encoder_for(spec, n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_builds_an_encoder_and_bad_parameters_are_usage_errors() {
        for spec in ["fixed:0.01", "adaptive", "target:0.001", "budget:200"] {
            assert!(encoder_for(spec.parse().unwrap(), 100).is_ok(), "{spec}");
        }
        // The core's TargetSparsity needs S < 1/16.
        let e = encoder_for(ThresholdSpec::Target(0.5), 100).unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{e}");
    }

    #[test]
    fn dense_applies_the_mean() {
        let mut d = DenseSharing::new(&[1.0, 1.0], 2, Aggregate::Mean);
        let s = d.share(0, &[vec![1.0, 0.0], vec![0.0, 2.0]]).unwrap();
        assert_eq!(s.bytes, 16);
        assert_eq!(d.params(1).unwrap(), vec![0.5, 0.0]);
        assert!(d.replicas_identical().unwrap());
        assert!(d.share(1, &[vec![1.0]]).is_err());
    }

    #[test]
    fn replicas_are_compared_bit_for_bit() {
        let same = |_| Ok(vec![1.0f32, 0.0]);
        assert!(replicas_identical(3, same).unwrap());
        let sign = |w| Ok(vec![1.0f32, if w == 2 { -0.0 } else { 0.0 }]);
        assert!(!replicas_identical(3, sign).unwrap());
        let short = |w| Ok(vec![1.0f32; if w == 1 { 1 } else { 2 }]);
        assert!(!replicas_identical(2, short).unwrap());
        let fail = |w| {
            if w == 1 {
                Err(CliError::Train("gone".into()))
            } else {
                Ok(vec![0.0f32])
            }
        };
        assert!(replicas_identical(2, fail).is_err());
    }
}

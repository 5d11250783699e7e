//! Which threshold policy each segment's encoder follows, and how the vector is cut into
//! segments.

use crate::error::{Error, Result};
use crate::layout::Layout;
use gradcast_core::encoder::policy::DEFAULT_DECAY;
use gradcast_core::encoder::{Adaptive, ByteBudget, Fixed, Policy, TargetSparsity};
use gradcast_core::wire::HEADER_LEN;
use std::fmt;
use std::str::FromStr;

/// A threshold policy, written `fixed:TAU`, `adaptive`, `target:S` or `budget:BYTES`.
///
/// With [`Segments::PerVariable`] every variable gets its own policy of this kind: the same
/// `TAU`, DL4J's adaptive defaults, the same fraction `S`; a byte budget is split over the
/// variables (see [`Threshold::policies`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// `fixed:TAU`: the same threshold every step.
    Fixed(f32),
    /// `adaptive`: DL4J's adaptive rule (the density kept in `[1e-4, 1e-2]` by a
    /// multiplicative step, from `tau0 = 1e-3`).
    Adaptive,
    /// `target:S`: the threshold that sends a fraction `S` of the elements (`S < 1/16`).
    Target(f64),
    /// `budget:BYTES`: each worker's message stays within `BYTES` bytes per step.
    Budget(usize),
}

impl Default for Threshold {
    /// [`Threshold::Adaptive`]: no tuning needed to start.
    fn default() -> Self {
        Threshold::Adaptive
    }
}

impl FromStr for Threshold {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "{s:?}: {why} (expected fixed:TAU, adaptive, target:S or budget:BYTES)"
            ))
        };
        let (kind, value) = match s.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        match (kind, value) {
            ("adaptive", None) => Ok(Threshold::Adaptive),
            ("adaptive", Some(_)) => Err(bad("`adaptive` takes no value")),
            ("fixed", Some(v)) => {
                let tau: f32 = v.parse().map_err(|_| bad("TAU is not a number"))?;
                if !(tau.is_finite() && tau > 0.0) {
                    return Err(bad("TAU must be finite and greater than 0"));
                }
                Ok(Threshold::Fixed(tau))
            }
            ("target", Some(v)) => {
                let s: f64 = v.parse().map_err(|_| bad("S is not a number"))?;
                if !(s > 0.0 && s <= 1.0) {
                    return Err(bad("S is the fraction of elements sent, in (0, 1]"));
                }
                Ok(Threshold::Target(s))
            }
            ("budget", Some(v)) => {
                let b: usize = v.parse().map_err(|_| bad("BYTES is not a whole number"))?;
                if b < HEADER_LEN {
                    return Err(bad(&format!(
                        "BYTES must hold at least a message header ({HEADER_LEN} bytes)"
                    )));
                }
                Ok(Threshold::Budget(b))
            }
            ("fixed" | "target" | "budget", None) => Err(bad("missing value after `:`")),
            _ => Err(bad("unknown policy")),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Fixed(t) => write!(f, "fixed:{t}"),
            Threshold::Adaptive => write!(f, "adaptive"),
            Threshold::Target(s) => write!(f, "target:{s}"),
            Threshold::Budget(b) => write!(f, "budget:{b}"),
        }
    }
}

/// How the shared vector is cut into encoder segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Segments {
    /// One segment per variable (the default): per-layer threshold state; every message
    /// carries one 48-byte header per variable.
    #[default]
    PerVariable,
    /// One segment for the whole vector: one policy, one header per message. Pays off for
    /// small models, where the headers of many small variables dominate the bytes.
    Whole,
}

impl Segments {
    /// `"variable"` or `"whole"`.
    pub fn name(self) -> &'static str {
        match self {
            Segments::PerVariable => "variable",
            Segments::Whole => "whole",
        }
    }

    /// The segment lengths of `layout`, in order.
    pub fn lengths(self, layout: &Layout) -> Vec<usize> {
        match self {
            Segments::PerVariable => layout.variables().iter().map(|v| v.len).collect(),
            Segments::Whole => vec![layout.n()],
        }
    }
}

impl FromStr for Segments {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "variable" => Ok(Segments::PerVariable),
            "whole" => Ok(Segments::Whole),
            other => Err(Error::Config(format!(
                "{other:?}: expected `variable` (one segment per variable) or `whole`"
            ))),
        }
    }
}

impl Threshold {
    /// One policy per segment of the given lengths.
    ///
    /// A byte budget is split into one 48-byte header per segment plus 4-byte entries,
    /// dealt out in proportion to the segments' lengths, at least one entry per segment (so
    /// that no variable's residual is stuck), never more than `BYTES` in all.
    ///
    /// # Errors
    /// [`Error::Config`] when the core rejects a parameter (`target:S` needs `S < 1/16`), or
    /// a budget is below `52` bytes per segment.
    pub fn policies(self, lengths: &[usize]) -> Result<Vec<Policy>> {
        let core =
            |e: gradcast_core::error::ConfigError| Error::Config(format!("threshold {self}: {e}"));
        let one = |budget: usize| -> Result<Policy> {
            Ok(match self {
                Threshold::Fixed(tau) => Fixed::new(tau).map_err(core)?.into(),
                Threshold::Adaptive => Adaptive::default().into(),
                Threshold::Target(s) => {
                    TargetSparsity::new(TargetSparsity::DEFAULT_TAU0, s, DEFAULT_DECAY)
                        .map_err(core)?
                        .into()
                }
                Threshold::Budget(_) => ByteBudget::new(budget).map_err(core)?.into(),
            })
        };
        let Threshold::Budget(bytes) = self else {
            return lengths.iter().map(|_| one(0)).collect();
        };
        let s = lengths.len();
        let minimum = s * (HEADER_LEN + 4);
        if bytes < minimum {
            return Err(Error::Config(format!(
                "threshold {self}: {s} segments need at least {minimum} bytes (a {HEADER_LEN}-byte \
                 header and one 4-byte entry each); raise BYTES or use one segment for the \
                 whole vector"
            )));
        }
        let entries = (bytes - s * HEADER_LEN) / 4;
        let n: u128 = lengths.iter().map(|&l| l as u128).sum();
        // Proportional shares, at least one each; the rest by largest remainder.
        let spare = (entries - s) as u128;
        let mut share: Vec<usize> = lengths
            .iter()
            .map(|&l| 1 + (spare * l as u128 / n.max(1)) as usize)
            .collect();
        // Each share lost less than one entry to the rounding: fewer than `s` are left.
        let left = entries - share.iter().sum::<usize>();
        let mut order: Vec<usize> = (0..s).collect();
        order.sort_by_key(|&k| std::cmp::Reverse((spare * lengths[k] as u128) % n.max(1)));
        for &k in order.iter().take(left) {
            share[k] += 1;
        }
        share.iter().map(|&e| one(HEADER_LEN + 4 * e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradcast_core::encoder::ThresholdPolicy;

    #[test]
    fn parses_and_rejects() {
        for (s, t) in [
            ("fixed:0.01", Threshold::Fixed(0.01)),
            ("adaptive", Threshold::Adaptive),
            ("target:0.001", Threshold::Target(0.001)),
            ("budget:200", Threshold::Budget(200)),
        ] {
            assert_eq!(s.parse::<Threshold>().unwrap(), t);
            assert_eq!(t.to_string(), s);
        }
        for bad in [
            "fixed",
            "fixed:-1",
            "fixed:nan",
            "target:0",
            "target:2",
            "budget:10",
            "foo:1",
            "adaptive:3",
            "",
        ] {
            assert!(
                matches!(bad.parse::<Threshold>(), Err(Error::Config(_))),
                "{bad}"
            );
        }
        assert!("variable".parse::<Segments>().is_ok());
        assert!("layers".parse::<Segments>().is_err());
    }

    #[test]
    fn a_budget_is_split_within_its_bytes_with_an_entry_for_every_segment() {
        let lengths = [8192usize, 128, 1280, 10];
        for bytes in [208usize, 300, 400, 1000, 5000] {
            let ps = Threshold::Budget(bytes).policies(&lengths).unwrap();
            let total: usize = ps
                .iter()
                .map(|p| match p {
                    Policy::ByteBudget(b) => b.budget(),
                    _ => unreachable!(),
                })
                .sum();
            assert!(total <= bytes, "{bytes}: {total}");
            assert!(total + 4 > bytes - 4 * lengths.len(), "{bytes}: {total}");
            for p in &ps {
                let Policy::ByteBudget(b) = p else {
                    unreachable!()
                };
                assert!(b.budget() >= HEADER_LEN + 4);
            }
        }
        let e = Threshold::Budget(200)
            .policies(&lengths)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 208 bytes"), "{e}");
        assert_eq!(Threshold::Budget(200).policies(&[9610]).unwrap().len(), 1);
        // Every policy kind builds; the core's limit on S is a configuration error.
        for t in [
            Threshold::Fixed(0.1),
            Threshold::Adaptive,
            Threshold::Target(0.01),
        ] {
            let ps = t.policies(&lengths).unwrap();
            assert_eq!(ps.len(), 4);
            assert!(ps.iter().all(|p| p.kind() == ps[0].kind()));
        }
        assert!(Threshold::Target(0.5).policies(&lengths).is_err());
    }
}

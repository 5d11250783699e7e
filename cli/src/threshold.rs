//! The `--threshold` option: which policy picks each worker's threshold every round.

use crate::error::CliError;
use core::fmt;
use core::str::FromStr;

/// A threshold policy as written on the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdSpec {
    /// `fixed:TAU`: the same threshold every round.
    Fixed(f32),
    /// `adaptive`: DL4J's adaptive rule (sparsity kept in a band by a multiplicative step).
    Adaptive,
    /// `target:S`: the threshold that sends a fraction `S` of the elements.
    Target(f64),
    /// `budget:BYTES`: each worker's message stays within `BYTES` bytes per round.
    Budget(usize),
}

impl FromStr for ThresholdSpec {
    type Err = CliError;

    fn from_str(s: &str) -> Result<Self, CliError> {
        let bad = |why: &str| {
            CliError::Usage(format!(
                "--threshold {s:?}: {why} (expected fixed:TAU, adaptive, target:S or budget:BYTES)"
            ))
        };
        let (kind, value) = match s.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        match (kind, value) {
            ("adaptive", None) => Ok(ThresholdSpec::Adaptive),
            ("adaptive", Some(_)) => Err(bad("`adaptive` takes no value")),
            ("fixed", Some(v)) => {
                let tau: f32 = v.parse().map_err(|_| bad("TAU is not a number"))?;
                if !(tau.is_finite() && tau > 0.0) {
                    return Err(bad("TAU must be finite and greater than 0"));
                }
                Ok(ThresholdSpec::Fixed(tau))
            }
            ("target", Some(v)) => {
                let s: f64 = v.parse().map_err(|_| bad("S is not a number"))?;
                if !(s > 0.0 && s <= 1.0) {
                    return Err(bad("S is the fraction of elements sent, in (0, 1]"));
                }
                Ok(ThresholdSpec::Target(s))
            }
            ("budget", Some(v)) => {
                let b: usize = v.parse().map_err(|_| bad("BYTES is not a whole number"))?;
                if b < gradcast_core::wire::HEADER_LEN {
                    return Err(bad(&format!(
                        "BYTES must hold at least a message header ({} bytes)",
                        gradcast_core::wire::HEADER_LEN
                    )));
                }
                Ok(ThresholdSpec::Budget(b))
            }
            ("fixed" | "target" | "budget", None) => Err(bad("missing value after `:`")),
            _ => Err(bad("unknown policy")),
        }
    }
}

impl fmt::Display for ThresholdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdSpec::Fixed(t) => write!(f, "fixed:{t}"),
            ThresholdSpec::Adaptive => write!(f, "adaptive"),
            ThresholdSpec::Target(s) => write!(f, "target:{s}"),
            ThresholdSpec::Budget(b) => write!(f, "budget:{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            "fixed:0.01".parse::<ThresholdSpec>().unwrap(),
            ThresholdSpec::Fixed(0.01)
        );
        assert_eq!(
            "adaptive".parse::<ThresholdSpec>().unwrap(),
            ThresholdSpec::Adaptive
        );
        assert_eq!(
            "target:0.001".parse::<ThresholdSpec>().unwrap(),
            ThresholdSpec::Target(0.001)
        );
        assert_eq!(
            "budget:200".parse::<ThresholdSpec>().unwrap(),
            ThresholdSpec::Budget(200)
        );
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
            let e = bad.parse::<ThresholdSpec>().unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{bad}");
        }
        let s = ThresholdSpec::Fixed(0.5);
        assert_eq!(s.to_string().parse::<ThresholdSpec>().unwrap(), s);
    }
}

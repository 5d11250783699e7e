//! The network cost model that turns measured rounds into modeled wall-clock time: an
//! alpha-beta link, a ring all-reduce for the dense baselines (credited with overlap with the
//! backward pass) and an all-gather of every worker's message for gradcast.
//!
//! A message of `m` bytes costs `alpha + m / B` on a [`Link`] of latency `alpha` and bandwidth
//! `B`. One synchronous data-parallel round of `P` workers then costs
//!
//! * **dense fp32 / fp16** (ring all-reduce of the `M`-byte gradient, [`dense_step_s`]):
//!   `F + max(Bw, 2 (P-1) alpha + 2 (P-1)/P * M / B)`, where `F` and `Bw` are the slowest
//!   worker's forward and backward time: a well-tuned baseline reduces gradient buckets while
//!   the backward pass still runs, so only the part of the all-reduce longer than the backward
//!   pass is paid;
//! * **gradcast** (all-gather of every worker's message, [`gradcast_step_s`]):
//!   `max_w (F_w + Bw_w + E_w) + (P-1) alpha + max_w (S - m_w) / B + max_w D_w`: encoding
//!   needs the whole gradient, so nothing overlaps; the all-gather starts when the last worker
//!   has encoded, and each worker receives the `S - m_w` bytes of the other workers' messages
//!   (`S` all messages' bytes, `m_w` its own), the one with the smallest own message the most;
//!   then every worker decodes the round.
//!
//! Compute times (`F`, `Bw`, encode `E`, decode `D`) are measured per worker; the
//! communication is modeled from the bytes each worker actually produced in the round, so
//! one training run serves every bandwidth. The model is pure arithmetic: the inputs are
//! checked ([`ModelError`]) and nothing here measures or sleeps.
//!
//! ```
//! use gradcast_cli::netmodel::{Compute, Link, Message, Precision, cumulative, dense_step_s, gradcast_step_s};
//!
//! let link = Link::gbit(50e-6, 1.0)?; // alpha = 50 us, B = 1 Gbit/s
//! let compute = [Compute { forward_s: 0.002, backward_s: 0.004 }; 8];
//! let m = Precision::Fp32.gradient_bytes(1_863_690); // 7.45 MB of fp32 gradient
//! let dense = dense_step_s(&link, &compute, m)?;
//! let msgs = [Message { encode_s: 0.001, decode_s: 0.002, bytes: 20_000 }; 8];
//! let gc = gradcast_step_s(&link, &compute, &msgs)?;
//! assert!(dense > 10.0 * gc);
//! let wall = cumulative([dense; 3]);
//! assert_eq!(wall.len(), 3);
//! # Ok::<(), gradcast_cli::netmodel::ModelError>(())
//! ```

use std::fmt;

/// The latency per message the study assumes: 50 us.
pub const ALPHA_S: f64 = 50e-6;

/// The bandwidths the study models, in Gbit/s.
pub const BANDWIDTHS_GBIT: [f64; 4] = [0.1, 1.0, 10.0, 100.0];

/// Why the model's inputs are unusable.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ModelError {
    /// A link parameter is negative, zero (bandwidth) or not finite.
    BadLink {
        /// What is wrong.
        reason: String,
    },
    /// A round has no workers, or its per-worker lists disagree in length.
    Workers {
        /// What is wrong.
        reason: String,
    },
    /// A measured time is negative or not finite.
    BadTime {
        /// Which time, of which worker.
        what: String,
        /// The value.
        value: f64,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::BadLink { reason } => write!(f, "network model: bad link: {reason}"),
            ModelError::Workers { reason } => write!(f, "network model: {reason}"),
            ModelError::BadTime { what, value } => write!(
                f,
                "network model: {what} is {value} s; a measured time must be finite and >= 0"
            ),
        }
    }
}

impl std::error::Error for ModelError {}

/// An alpha-beta link: a message of `m` bytes takes `alpha + m / B` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    alpha_s: f64,
    bytes_per_s: f64,
}

impl Link {
    /// A link with latency `alpha_s` seconds per message and bandwidth `bytes_per_s`.
    ///
    /// # Errors
    /// [`ModelError::BadLink`] for a negative or non-finite latency, or a bandwidth that is
    /// not finite and positive.
    pub fn new(alpha_s: f64, bytes_per_s: f64) -> Result<Self, ModelError> {
        if !(alpha_s.is_finite() && alpha_s >= 0.0) {
            return Err(ModelError::BadLink {
                reason: format!("latency {alpha_s} s must be finite and >= 0"),
            });
        }
        if !(bytes_per_s.is_finite() && bytes_per_s > 0.0) {
            return Err(ModelError::BadLink {
                reason: format!("bandwidth {bytes_per_s} B/s must be finite and > 0"),
            });
        }
        Ok(Link {
            alpha_s,
            bytes_per_s,
        })
    }

    /// A link with latency `alpha_s` seconds and bandwidth `gbit_per_s` (10^9 bit/s).
    ///
    /// # Errors
    /// As [`Link::new`].
    pub fn gbit(alpha_s: f64, gbit_per_s: f64) -> Result<Self, ModelError> {
        Link::new(alpha_s, gbit_per_s * 1e9 / 8.0)
    }

    /// The per-worker link of `workers` workers that share one medium of `bytes_per_s`, such
    /// as the loopback of one machine, which every byte between any two workers crosses:
    /// when all workers send at once (every collective here), each gets `1/P` of it, so the
    /// per-worker bandwidth is `bytes_per_s / workers`. With it, a ring all-reduce costs
    /// `2 (P-1) alpha + 2 (P-1) M / rate` and an all-gather of `m` bytes per worker
    /// `(P-1) alpha + P (P-1) m / rate`: the whole traffic over the one medium.
    ///
    /// # Errors
    /// As [`Link::new`]; also for zero workers.
    pub fn shared(alpha_s: f64, bytes_per_s: f64, workers: usize) -> Result<Self, ModelError> {
        if workers == 0 {
            return Err(ModelError::BadLink {
                reason: "a shared link needs at least one worker".into(),
            });
        }
        Link::new(alpha_s, bytes_per_s)?;
        Link::new(alpha_s, bytes_per_s / workers as f64)
    }

    /// The study's links: [`ALPHA_S`] at each of [`BANDWIDTHS_GBIT`].
    pub fn study() -> [Link; 4] {
        BANDWIDTHS_GBIT.map(|g| Link {
            alpha_s: ALPHA_S,
            bytes_per_s: g * 1e9 / 8.0,
        })
    }

    /// Latency per message, seconds.
    pub fn alpha_s(&self) -> f64 {
        self.alpha_s
    }

    /// Bandwidth, bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes_per_s
    }

    /// Bandwidth, Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes_per_s * 8.0 / 1e9
    }

    /// One message of `bytes`: `alpha + bytes / B`.
    pub fn message_s(&self, bytes: u64) -> f64 {
        self.alpha_s + bytes as f64 / self.bytes_per_s
    }

    /// A ring all-reduce of `bytes` over `workers`: `2 (P-1) alpha + 2 (P-1)/P * bytes / B`
    /// (a reduce-scatter then an all-gather, `P-1` steps each, every step moving `bytes / P`).
    /// Zero for one worker.
    pub fn ring_allreduce_s(&self, workers: usize, bytes: u64) -> f64 {
        if workers <= 1 {
            return 0.0;
        }
        let p = workers as f64;
        2.0 * (p - 1.0) * self.alpha_s + 2.0 * (p - 1.0) / p * bytes as f64 / self.bytes_per_s
    }

    /// An all-gather in which worker `w` contributes `messages[w]` bytes: `(P-1) alpha` plus
    /// the bytes of the other workers' messages over `B` for the worker that receives the
    /// most (the one whose own message is smallest). Zero for one worker.
    pub fn all_gather_s(&self, messages: &[u64]) -> f64 {
        if messages.len() <= 1 {
            return 0.0;
        }
        let total: u128 = messages.iter().map(|&m| m as u128).sum();
        let smallest = messages.iter().copied().min().unwrap_or(0) as u128;
        (messages.len() - 1) as f64 * self.alpha_s + (total - smallest) as f64 / self.bytes_per_s
    }
}

/// The element type of a dense exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// 4 bytes per parameter.
    Fp32,
    /// 2 bytes per parameter (IEEE half precision).
    Fp16,
}

impl Precision {
    /// Bytes per parameter.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::Fp32 => 4,
            Precision::Fp16 => 2,
        }
    }

    /// The gradient's size `M` for `params` parameters.
    pub fn gradient_bytes(self, params: usize) -> u64 {
        params as u64 * self.bytes()
    }
}

/// One worker's measured compute in one round, seconds (each worker timed on its own, not
/// while other workers share its cores).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Compute {
    /// The forward pass (loss included).
    pub forward_s: f64,
    /// The backward pass (gradients of every parameter).
    pub backward_s: f64,
}

/// One worker's gradcast message in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Message {
    /// Measured time to encode the worker's message, seconds.
    pub encode_s: f64,
    /// Measured time for the worker to decode and apply the round's messages, seconds.
    pub decode_s: f64,
    /// The message's bytes as sent (the packet, with its headers).
    pub bytes: u64,
}

fn check_time(what: &str, w: usize, value: f64) -> Result<f64, ModelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ModelError::BadTime {
            what: format!("worker {w}'s {what} time"),
            value,
        })
    }
}

fn check_workers(compute: &[Compute]) -> Result<(), ModelError> {
    if compute.is_empty() {
        return Err(ModelError::Workers {
            reason: "a round needs at least one worker".into(),
        });
    }
    for (w, c) in compute.iter().enumerate() {
        check_time("forward", w, c.forward_s)?;
        check_time("backward", w, c.backward_s)?;
    }
    Ok(())
}

/// Modeled time of one dense round: `F + max(Bw, ring all-reduce of gradient_bytes)`, with `F`
/// and `Bw` the largest forward and backward times over the workers (the all-reduce
/// completes only when every worker has contributed).
///
/// # Errors
/// [`ModelError`] for no workers or a negative or non-finite time.
pub fn dense_step_s(
    link: &Link,
    compute: &[Compute],
    gradient_bytes: u64,
) -> Result<f64, ModelError> {
    check_workers(compute)?;
    let forward = compute.iter().map(|c| c.forward_s).fold(0.0, f64::max);
    let backward = compute.iter().map(|c| c.backward_s).fold(0.0, f64::max);
    Ok(forward + backward.max(link.ring_allreduce_s(compute.len(), gradient_bytes)))
}

/// Modeled time of one gradcast round: the last worker's forward + backward + encode, then the
/// all-gather of every worker's message ([`Link::all_gather_s`]), then the slowest decode.
///
/// # Errors
/// [`ModelError`] for no workers, `compute` and `messages` of different lengths, or a
/// negative or non-finite time.
pub fn gradcast_step_s(
    link: &Link,
    compute: &[Compute],
    messages: &[Message],
) -> Result<f64, ModelError> {
    check_workers(compute)?;
    if messages.len() != compute.len() {
        return Err(ModelError::Workers {
            reason: format!(
                "{} workers' compute times but {} messages",
                compute.len(),
                messages.len()
            ),
        });
    }
    let mut ready = 0.0f64;
    let mut decode = 0.0f64;
    for (w, (c, m)) in compute.iter().zip(messages).enumerate() {
        let e = check_time("encode", w, m.encode_s)?;
        let d = check_time("decode", w, m.decode_s)?;
        ready = ready.max(c.forward_s + c.backward_s + e);
        decode = decode.max(d);
    }
    let bytes: Vec<u64> = messages.iter().map(|m| m.bytes).collect();
    Ok(ready + link.all_gather_s(&bytes) + decode)
}

/// Running sums of per-round times: the modeled wall-clock time at the end of each round.
pub fn cumulative(steps: impl IntoIterator<Item = f64>) -> Vec<f64> {
    steps
        .into_iter()
        .scan(0.0, |t, s| {
            *t += s;
            Some(*t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    const C: Compute = Compute {
        forward_s: 0.001,
        backward_s: 0.002,
    };

    #[test]
    fn links_convert_units_and_reject_nonsense() {
        let l = Link::gbit(50e-6, 1.0).unwrap();
        assert_eq!(l.bytes_per_s(), 125e6);
        assert!(close(l.gbit_per_s(), 1.0));
        // 1 MB at 1 Gbit/s: 8 ms plus 50 us.
        assert!(close(l.message_s(1_000_000), 0.008_05));
        let s = Link::study();
        assert_eq!(s.map(|l| l.alpha_s()), [50e-6; 4]);
        assert_eq!(s.map(|l| l.bytes_per_s()), [12.5e6, 125e6, 1.25e9, 12.5e9]);
        for (a, b) in [
            (-1e-6, 1.0),
            (f64::NAN, 1.0),
            (0.0, 0.0),
            (0.0, -5.0),
            (0.0, f64::INFINITY),
        ] {
            assert!(
                matches!(Link::new(a, b), Err(ModelError::BadLink { .. })),
                "{a} {b}"
            );
        }
        assert!(Link::new(0.0, 1.0).is_ok());
    }

    #[test]
    fn a_shared_medium_carries_the_whole_traffic() {
        // 4 workers on one 12.5 MB/s loopback: each collective's whole traffic crosses it.
        let (rate, p) = (12.5e6, 4usize);
        let l = Link::shared(10e-6, rate, p).unwrap();
        assert_eq!(l.bytes_per_s(), rate / 4.0);
        let m = 1_000_000u64;
        let ar = 6.0 * 10e-6 + 2.0 * 3.0 * m as f64 / rate;
        assert!(close(l.ring_allreduce_s(p, m), ar));
        let ag = 3.0 * 10e-6 + 4.0 * 3.0 * m as f64 / rate;
        assert!(close(l.all_gather_s(&[m; 4]), ag));
        assert!(matches!(
            Link::shared(0.0, rate, 0),
            Err(ModelError::BadLink { .. })
        ));
        assert!(matches!(
            Link::shared(0.0, -1.0, 2),
            Err(ModelError::BadLink { .. })
        ));
    }

    #[test]
    fn ring_allreduce_matches_the_formula() {
        let l = Link::gbit(50e-6, 1.0).unwrap();
        // P = 8, M = 7.5 MB: 14 alpha + 2 * 7/8 * 7.5e6 / 125e6.
        let want = 14.0 * 50e-6 + 1.75 * 7.5e6 / 125e6;
        assert!(close(l.ring_allreduce_s(8, 7_500_000), want));
        // P = 2: 2 alpha + M / B (each worker sends and receives half, twice).
        assert!(close(l.ring_allreduce_s(2, 1_000_000), 100e-6 + 0.008));
        assert_eq!(l.ring_allreduce_s(1, 7_500_000), 0.0);
        assert_eq!(l.ring_allreduce_s(0, 7_500_000), 0.0);
        // The bandwidth term tends to 2 M / B as P grows; fp16 halves it.
        let big = l.ring_allreduce_s(1000, 1_000_000) - 2.0 * 999.0 * 50e-6;
        assert!((big - 2.0 * 0.008).abs() < 0.008 * 0.01);
    }

    #[test]
    fn all_gather_charges_the_bytes_of_the_others() {
        let l = Link::new(1e-4, 1e6).unwrap();
        // Messages of 100, 300, 600 bytes: the worker with 100 receives 900.
        assert!(close(l.all_gather_s(&[300, 100, 600]), 2e-4 + 900e-6));
        assert!(close(l.all_gather_s(&[500; 4]), 3e-4 + 1500e-6));
        assert_eq!(l.all_gather_s(&[1 << 40]), 0.0);
        assert_eq!(l.all_gather_s(&[]), 0.0);
        // No overflow for huge messages.
        assert!(l.all_gather_s(&[u64::MAX; 3]).is_finite());
    }

    #[test]
    fn dense_is_credited_with_overlap() {
        let fast = Link::gbit(0.0, 100.0).unwrap();
        let slow = Link::gbit(50e-6, 0.1).unwrap();
        let m = Precision::Fp32.gradient_bytes(1000);
        assert_eq!(m, 4000);
        // On a fast link the all-reduce hides under the backward pass: step = F + Bw.
        let s = dense_step_s(&fast, &[C; 4], m).unwrap();
        assert!(close(s, 0.003));
        // On a slow one it does not: step = F + all-reduce.
        let ar = slow.ring_allreduce_s(4, 40_000_000);
        assert!(ar > 0.002);
        let s = dense_step_s(&slow, &[C; 4], 40_000_000).unwrap();
        assert!(close(s, 0.001 + ar));
        // The slowest worker sets each phase.
        let mixed = [
            C,
            Compute {
                forward_s: 0.004,
                backward_s: 0.001,
            },
            Compute {
                forward_s: 0.001,
                backward_s: 0.005,
            },
        ];
        assert!(close(dense_step_s(&fast, &mixed, m).unwrap(), 0.009));
        // fp16 halves the bytes, so the exposed communication.
        let s32 = dense_step_s(&slow, &[C; 8], Precision::Fp32.gradient_bytes(1 << 20)).unwrap();
        let s16 = dense_step_s(&slow, &[C; 8], Precision::Fp16.gradient_bytes(1 << 20)).unwrap();
        let comm = |s: f64| s - 0.001 - 14.0 * 50e-6;
        assert!(close(comm(s32), 2.0 * comm(s16)));
    }

    #[test]
    fn gradcast_pays_encode_exchange_and_decode_in_sequence() {
        let l = Link::new(1e-4, 1e6).unwrap();
        let msgs = [
            Message {
                encode_s: 0.0005,
                decode_s: 0.0002,
                bytes: 100,
            },
            Message {
                encode_s: 0.0001,
                decode_s: 0.0007,
                bytes: 300,
            },
        ];
        let c = [
            C,
            Compute {
                forward_s: 0.001,
                backward_s: 0.0025,
            },
        ];
        // Ready at max(0.0035, 0.0036) = 0.0036; all-gather alpha + 300 B / 1e6 B/s = 0.0004;
        // slowest decode 0.0007.
        let s = gradcast_step_s(&l, &c, &msgs).unwrap();
        assert!(close(s, 0.0036 + 0.0004 + 0.0007), "{s}");
        // One worker: nothing to exchange.
        let s = gradcast_step_s(&l, &c[..1], &msgs[..1]).unwrap();
        assert!(close(s, 0.0035 + 0.0002));
    }

    #[test]
    fn bad_rounds_are_typed_errors() {
        let l = Link::gbit(ALPHA_S, 1.0).unwrap();
        let m = Message {
            encode_s: 0.0,
            decode_s: 0.0,
            bytes: 1,
        };
        assert!(matches!(
            dense_step_s(&l, &[], 4),
            Err(ModelError::Workers { .. })
        ));
        assert!(matches!(
            gradcast_step_s(&l, &[C; 3], &[m; 2]),
            Err(ModelError::Workers { .. })
        ));
        let nan = Compute {
            forward_s: f64::NAN,
            backward_s: 0.0,
        };
        let e = dense_step_s(&l, &[C, nan], 4).unwrap_err();
        assert!(e.to_string().contains("worker 1's forward time"), "{e}");
        let neg = Message {
            decode_s: -1.0,
            ..m
        };
        let e = gradcast_step_s(&l, &[C; 2], &[m, neg]).unwrap_err();
        assert!(matches!(e, ModelError::BadTime { value, .. } if value == -1.0));
        assert!(e.to_string().contains("worker 1's decode time"), "{e}");
    }

    #[test]
    fn cumulative_sums_rounds() {
        assert_eq!(cumulative([1.0, 2.0, 0.5]), vec![1.0, 3.0, 3.5]);
        assert!(cumulative(std::iter::empty()).is_empty());
    }

    #[test]
    fn the_mlp_at_one_gigabit_is_communication_bound_for_dense() {
        // The study's headline setting in numbers: 784-1024-1024-10 (1,863,690 parameters),
        // P = 8, 1 Gbit/s. The dense fp32 all-reduce alone is 2 * 7/8 * 7.45 MB / 125 MB/s
        // = 104.4 ms (plus 14 alpha = 0.7 ms), far above a few ms of backward pass; a gradcast message of 20 kB per
        // worker costs 7 * 50 us + 7 * 20 kB / 125 MB/s = 1.5 ms.
        let [_, gig, ..] = Link::study();
        let n = 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10;
        assert_eq!(n, 1_863_690);
        let ar = gig.ring_allreduce_s(8, Precision::Fp32.gradient_bytes(n));
        assert!(close(ar, 14.0 * 50e-6 + 1.75 * 7_454_760.0 / 125e6), "{ar}");
        assert!((0.105..0.1055).contains(&ar), "{ar}");
        assert!(close(
            gig.all_gather_s(&[20_000; 8]),
            7.0 * 50e-6 + 7.0 * 20_000.0 / 125e6
        ));
    }
}

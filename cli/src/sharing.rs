//! How the workers' updates reach every replica: the dense fp32 baseline and gradcast.
//!
//! Both share the same rule so that they differ only in what travels: each replica sums the
//! round's contributions in sender order into an update buffer, then steps
//! `params -= scale * update` with `scale = 1/P` (mean) or `1` (sum). Dense contributions are
//! the workers' fp32 updates; gradcast contributions are the decoded threshold-encoded messages
//! of each worker's residual (`residual += update`, encode, commit).

use crate::error::CliError;
use crate::threshold::ThresholdSpec;
use gradcast_core::Backend;
use gradcast_core::backend::slices;
use gradcast_core::packet::{FixedEncoder, Messages, PartyEncoder};
use gradcast_core::wire::Encoding;
use std::time::{Duration, Instant};

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

/// Time spent in the phases of gradcast's rounds, summed over workers and replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// `residual += update` and encode-then-commit.
    pub encode: Duration,
    /// Publishing the messages to every party and validating them (parse, checksum).
    pub exchange: Duration,
    /// Decoding every message into every replica and stepping its parameters.
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
        let first = self.params(0)?;
        for w in 1..self.workers() {
            let p = self.params(w)?;
            if p.iter()
                .zip(&first)
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Number of workers (and replicas).
    fn workers(&self) -> usize;
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

/// Builds worker `worker`'s encoder for `spec`.
///
/// # Errors
/// [`CliError::Usage`] for policies this build does not provide yet.
pub fn make_encoder<B: Backend>(
    spec: ThresholdSpec,
) -> Result<Box<dyn PartyEncoder<B> + Send>, CliError> {
    match spec {
        ThresholdSpec::Fixed(tau) => Ok(Box::new(FixedEncoder::new(tau))),
        other => Err(CliError::Usage(format!(
            "--threshold {other}: this policy is not available in this build yet (use fixed:TAU)"
        ))),
    }
}

/// gradcast: each worker keeps a residual on the backend, adds its update, encodes and
/// commits one packet per round; every replica decodes every packet in sender order.
pub struct GradcastSharing<'b, B: Backend> {
    backend: &'b B,
    encoders: Vec<Box<dyn PartyEncoder<B> + Send>>,
    residuals: Vec<B::Buffer>,
    staging: B::Buffer,
    replicas: Vec<B::Buffer>,
    acc: B::Buffer,
    packets: Vec<Vec<u8>>,
    lens: Vec<usize>,
    scale: f32,
    n: usize,
    /// Phase timings so far.
    pub times: PhaseTimes,
}

impl<B: Backend> core::fmt::Debug for GradcastSharing<'_, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GradcastSharing")
            .field("backend", &self.backend.name())
            .field("workers", &self.replicas.len())
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

fn be<E: core::fmt::Display>(what: &'static str) -> impl Fn(E) -> CliError {
    move |e| CliError::Train(format!("{what}: {e}"))
}

impl<'b, B: Backend> GradcastSharing<'b, B> {
    /// P replicas starting at `init`, zero residuals, one encoder per worker from `spec`.
    ///
    /// # Errors
    /// Backend allocation errors; [`make_encoder`]'s errors.
    pub fn new(
        backend: &'b B,
        init: &[f32],
        workers: usize,
        aggregate: Aggregate,
        spec: ThresholdSpec,
    ) -> Result<Self, CliError> {
        let n = init.len();
        let alloc = |what| backend.alloc(n).map_err(be(what));
        let mut replicas = Vec::with_capacity(workers);
        let mut residuals = Vec::with_capacity(workers);
        let mut encoders = Vec::with_capacity(workers);
        let mut packets = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut r = alloc("allocate a replica")?;
            backend
                .upload(init, &mut r)
                .map_err(be("upload parameters"))?;
            replicas.push(r);
            residuals.push(alloc("allocate a residual")?);
            let enc = make_encoder::<B>(spec)?;
            packets.push(vec![0u8; enc.max_packet_len(n)]);
            encoders.push(enc);
        }
        Ok(GradcastSharing {
            backend,
            encoders,
            residuals,
            staging: alloc("allocate an update buffer")?,
            acc: alloc("allocate an update buffer")?,
            replicas,
            packets,
            lens: vec![0; workers],
            scale: aggregate.scale(workers),
            n,
            times: PhaseTimes::default(),
        })
    }
}

impl<B: Backend> Sharing for GradcastSharing<'_, B> {
    fn params(&self, worker: usize) -> Result<Vec<f32>, CliError> {
        let mut out = vec![0.0; self.n];
        self.backend
            .download(&self.replicas[worker], &mut out)
            .map_err(be("download parameters"))?;
        Ok(out)
    }

    fn share(&mut self, round: u64, updates: &[Vec<f32>]) -> Result<RoundStats, CliError> {
        check_updates(updates, self.replicas.len(), self.n)?;
        let b = self.backend;
        // Each worker: residual += update, then encode-then-commit its packet.
        let t = Instant::now();
        for (w, u) in updates.iter().enumerate() {
            b.upload(u, &mut self.staging)
                .map_err(be("upload update"))?;
            b.add_assign(&mut self.residuals[w], &self.staging)
                .map_err(be("residual += update"))?;
            self.lens[w] = self.encoders[w]
                .encode_round(
                    b,
                    &mut self.residuals[w],
                    w as u32,
                    round,
                    &mut self.packets[w],
                )
                .map_err(be("encode"))?;
        }
        b.sync().map_err(be("encode"))?;
        self.times.encode += t.elapsed();

        // Exchange: every party reads the same bytes; each packet is validated once.
        let t = Instant::now();
        let mut stats = RoundStats::default();
        for (w, packet) in self.packets.iter().enumerate() {
            let packet = &packet[..self.lens[w]];
            stats.bytes += packet.len() as u64;
            for m in Messages::new(packet) {
                let m = m.map_err(|e| CliError::core(format!("message of worker {w}"), e))?;
                stats.messages.push(MessageStat {
                    tau: m.tau(),
                    entries: m.count(),
                    encoding: m.encoding(),
                    bytes: m.as_bytes().len(),
                });
            }
        }
        self.times.exchange += t.elapsed();

        // Every replica decodes every packet in sender order, then steps.
        let t = Instant::now();
        for params in &mut self.replicas {
            b.fill(&mut self.acc, 0.0).map_err(be("clear update"))?;
            for (w, packet) in self.packets.iter().enumerate() {
                for m in Messages::new(&packet[..self.lens[w]]) {
                    let m = m.map_err(|e| CliError::core(format!("message of worker {w}"), e))?;
                    b.decode_add(&m, &mut self.acc).map_err(be("decode"))?;
                }
            }
            b.sub_scaled(params, &self.acc, self.scale)
                .map_err(be("apply update"))?;
        }
        b.sync().map_err(be("decode"))?;
        self.times.decode += t.elapsed();
        Ok(stats)
    }

    fn workers(&self) -> usize {
        self.replicas.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradcast_core::backend::Reference;

    /// Mass conservation across the whole run: what the replicas applied plus what is left in
    /// the residuals equals the sum of all updates.
    #[test]
    fn gradcast_conserves_mass_and_keeps_replicas_identical() {
        let n = 50;
        let init = vec![0.0f32; n];
        let mut g = GradcastSharing::new(
            &Reference,
            &init,
            3,
            Aggregate::Sum,
            ThresholdSpec::Fixed(0.25),
        )
        .unwrap();
        let mut rng = crate::rng::SplitMix64::new(1);
        let mut total = vec![0.0f64; n];
        for round in 0..20 {
            let ups: Vec<Vec<f32>> = (0..3)
                .map(|_| (0..n).map(|_| rng.next_f32() - 0.4).collect())
                .collect();
            for u in &ups {
                for (t, v) in total.iter_mut().zip(u) {
                    *t += *v as f64;
                }
            }
            let s = g.share(round, &ups).unwrap();
            assert_eq!(s.messages.len(), 3);
        }
        assert!(g.replicas_identical().unwrap());
        let p = g.params(0).unwrap();
        for i in 0..n {
            let left: f64 = g.residuals.iter().map(|r| r[i] as f64).sum();
            assert!(
                (-(p[i] as f64) + left - total[i]).abs() < 1e-3,
                "element {i}"
            );
        }
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
}

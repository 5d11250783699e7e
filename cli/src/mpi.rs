//! `gradcast train --transport mpi`: the main job across MPI ranks (build with `--features
//! mpi`, run under `mpirun`).
//!
//! ```text
//! cargo build --release -p gradcast-cli --features mpi
//! mpirun --allow-run-as-root --oversubscribe -np 4 target/release/gradcast train --transport mpi --workers 1
//! ```
//!
//! * **Workers.** Every rank runs `--workers` local workers (threads), so the job has
//!   `W = ranks x workers` replicas; rank `r`'s worker `j` is global worker (and gradcast
//!   sender id) `r * workers + j` (`gradcast_mpi`'s scheme).
//! * **Data.** Every rank draws the same global batches (same seed, same order); each round's
//!   batch is split into `W` shards as in the in-process run, and each rank computes the
//!   gradients of its own workers' shards only. So a 4-rank job with one worker per rank
//!   trains the same model on the same data as `gradcast train --workers 4`.
//! * **gradcast.** The core's round protocol ([`gradcast_core::round::Accumulator`]) with
//!   `gradcast_mpi::MpiTransport` (feature `mpi`): local
//!   workers share their packets in process, ranks by an allgather of packets; every
//!   replica on every rank applies every packet in global sender order, so all replicas stay
//!   bit-identical.
//! * **Dense baseline.** Each rank sums its workers' fp32 updates and the ranks add them up
//!   with `MPI_Allreduce`, in the same run, on the same data.
//! * **Output.** Every rank prints one line with both runs' parameter checksums (stdout; on
//!   stderr with `--json`); rank 0 prints the per-epoch lines and the summary table, with
//!   the bytes each rank puts on the wire per round for gradcast (packets plus the packet
//!   table) beside the dense allreduce (`4 N` bytes: the rank's summed update), and writes
//!   `summary.json` (the in-process summary's fields plus an `mpi` object) and `train.png`.
//!   With `--json`, rank 0 prints the summary on stdout.
//!
//! A failure after MPI started ends the whole job (`MPI_Abort`), so no rank waits forever
//! for a peer that is gone; a bad option fails on every rank alike before any communication.

use crate::cli::TrainArgs;
use crate::error::CliError;
use clap::ValueEnum;

/// How the workers' updates travel (`--transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum TransportArg {
    /// Threads of this process.
    #[default]
    Local,
    /// MPI ranks (under mpirun); needs a build with `--features mpi`.
    Mpi,
}

/// Runs `gradcast train --transport mpi` on this rank.
///
/// # Errors
/// Without the `mpi` feature, [`CliError::Usage`]. Otherwise bad options, data, model and
/// MPI errors (an error after training started ends the whole job with `MPI_Abort`).
#[cfg(not(feature = "mpi"))]
pub fn train(_a: &TrainArgs) -> Result<(), CliError> {
    Err(CliError::Usage(
        "--transport mpi: this build has no MPI support; rebuild with `--features mpi` (needs \
         Open MPI and libclang) and run under mpirun"
            .into(),
    ))
}

/// Runs `gradcast train --transport mpi` on this rank.
///
/// # Errors
/// Without the `mpi` feature, [`CliError::Usage`]. Otherwise bad options, data, model and
/// MPI errors (an error after training started ends the whole job with `MPI_Abort`).
#[cfg(feature = "mpi")]
pub fn train(a: &TrainArgs) -> Result<(), CliError> {
    imp::train(a)
}

#[cfg(feature = "mpi")]
mod imp {
    use super::*;
    use crate::backends::BackendChoice;
    use crate::cli::{epoch_heading, epoch_lines, human_bytes, load_data};
    use crate::rng::SplitMix64;
    use crate::sharing::{Aggregate, make_encoder, replicas_identical};
    use crate::train::{
        DataInfo, EncodingMix, EpochRecord, RunSummary, Summary, TrainConfig, gradients, shard,
    };
    use gradcast_core::Backend;
    use gradcast_core::barrier::Park;
    use gradcast_core::packet::{Messages, PartyEncoder};
    use gradcast_core::round::{Accumulator, RoundConfig, RoundSummary, Step, Ticket};
    use gradcast_core::wire::Encoding;
    use gradcast_mpi::mpi::environment::Threading;
    use gradcast_mpi::mpi::topology::{Communicator, SimpleCommunicator};
    use gradcast_mpi::{Collectives, MpiError, MpiTransport, checksum};
    use serde::Serialize;
    use std::time::{Duration, Instant};

    fn mpi_err(what: &'static str) -> impl Fn(MpiError) -> CliError {
        move |e| CliError::Train(format!("MPI, {what}: {e}"))
    }

    fn be<E: core::fmt::Display>(what: &'static str) -> impl Fn(E) -> CliError {
        move |e| CliError::Train(format!("{what}: {e}"))
    }

    /// One worker's encoder from the CLI's `--threshold`, with statistics of the messages
    /// it writes (the accumulator owns the encoders; the job reads them between rounds).
    struct CountingEncoder<B: Backend> {
        inner: Box<dyn PartyEncoder<B> + Send>,
        stats: MessageTally,
    }

    /// Sums over messages: threshold, fraction of elements sent, encodings.
    #[derive(Clone, Copy, Debug, Default)]
    struct MessageTally {
        tau: f64,
        density: f64,
        messages: f64,
        sparse: f64,
        bitmap: f64,
        dense: f64,
    }

    impl<B: Backend> PartyEncoder<B> for CountingEncoder<B> {
        fn max_packet_len(&self, n: usize) -> usize {
            self.inner.max_packet_len(n)
        }

        fn encode_round(
            &mut self,
            backend: &B,
            residual: &mut B::Buffer,
            sender: u32,
            round: u64,
            out: &mut [u8],
        ) -> Result<usize, B::Error> {
            let len = self
                .inner
                .encode_round(backend, residual, sender, round, out)?;
            for m in Messages::new(&out[..len]).flatten() {
                let t = &mut self.stats;
                t.tau += m.tau() as f64;
                t.density += m.count() as f64 / m.header().n as f64;
                t.messages += 1.0;
                match m.encoding() {
                    Encoding::Sparse => t.sparse += 1.0,
                    Encoding::Bitmap => t.bitmap += 1.0,
                    Encoding::Dense => t.dense += 1.0,
                }
            }
            Ok(len)
        }
    }

    /// What `summary.json` adds under `mpi`.
    #[derive(Clone, Debug, Serialize)]
    struct MpiInfo {
        ranks: usize,
        workers_per_rank: usize,
        rounds: u64,
        /// Mean bytes one rank put on the wire per round: its packets plus its table.
        gradcast_bytes_per_rank_per_round: f64,
        /// Of which the packet table.
        gradcast_table_bytes_per_rank_per_round: f64,
        /// One rank's contribution to the dense allreduce per round: `4 N`.
        dense_allreduce_bytes_per_rank_per_round: f64,
        /// Every rank's gradcast parameter checksum, rank order (hex).
        gradcast_checksums: Vec<String>,
        /// Every rank's dense parameter checksum, rank order (hex).
        dense_checksums: Vec<String>,
        /// Seconds in the gradcast transport's collective calls, summed over ranks.
        transport_seconds: f64,
    }

    #[derive(Serialize)]
    struct MpiSummary<'a> {
        #[serde(flatten)]
        summary: &'a Summary,
        mpi: &'a MpiInfo,
    }

    pub(super) fn train(a: &TrainArgs) -> Result<(), CliError> {
        let Some((universe, _)) =
            gradcast_mpi::mpi::initialize_with_threading(Threading::Serialized)
        else {
            return Err(CliError::Train("MPI was already initialized".into()));
        };
        let world = universe.world();
        let result = run(a, &world);
        if let Err(e) = &result
            && world.size() > 1
            && !matches!(e, CliError::Usage(_) | CliError::Backend(_))
        {
            // The other ranks may wait in a collective call for this one: end the job.
            eprintln!("rank {}: error: {e}", world.rank());
            world.abort(1);
        }
        result
    }

    type Acc<B> = Accumulator<B, CountingEncoder<B>, MpiTransport, Park>;

    /// The gradcast side of one rank: the accumulator, one replica and one update buffer
    /// per local worker.
    struct GradcastRank<B: Backend> {
        acc: Acc<B>,
        replicas: Vec<B::Buffer>,
        updates: Vec<B::Buffer>,
        round: u64,
        encode_ns: u64,
        exchange_ns: u64,
        decode_ns: u64,
    }

    impl<B> GradcastRank<B>
    where
        B: Backend + Sync,
        B::Buffer: Send + Sync,
        B::Error: Send,
    {
        fn params(&self, j: usize) -> Result<Vec<f32>, CliError> {
            let b = self.acc.backend();
            let mut out = vec![0.0; b.len(&self.replicas[j])];
            b.download(&self.replicas[j], &mut out)
                .map_err(be("download parameters"))?;
            Ok(out)
        }

        /// One round: every local worker stores its update and applies the round.
        fn round(&mut self, updates: &[Vec<f32>]) -> Result<(), CliError> {
            let p = self.replicas.len();
            let b = self.acc.backend();
            for (buf, u) in self.updates.iter_mut().zip(updates) {
                b.upload(u, buf).map_err(be("upload update"))?;
            }
            let ticket = Ticket::new(self.round, p);
            let results: Vec<Result<RoundSummary, String>> = std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .acc
                    .parties()
                    .zip(self.replicas.iter_mut().zip(&self.updates))
                    .map(|(mut party, (params, update))| {
                        s.spawn(move || {
                            party
                                .store_update(ticket, update)
                                .map_err(|e| format!("store: {e}"))?;
                            party
                                .apply_update(params)
                                .map_err(|e| format!("apply: {e}"))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("a worker thread panicked".into()))
                    })
                    .collect()
            });
            for r in results {
                let s =
                    r.map_err(|e| CliError::Train(format!("gradcast round {}: {e}", self.round)))?;
                self.encode_ns += s.encode_ns;
                self.exchange_ns += s.exchange_ns;
                self.decode_ns += s.decode_ns;
            }
            self.round += 1;
            Ok(())
        }

        fn take_tally(&mut self) -> MessageTally {
            let mut t = MessageTally::default();
            for j in 0..self.replicas.len() {
                let e = &mut self.acc.encoder_mut(j).stats;
                t.tau += e.tau;
                t.density += e.density;
                t.messages += e.messages;
                t.sparse += e.sparse;
                t.bitmap += e.bitmap;
                t.dense += e.dense;
                *e = MessageTally::default();
            }
            t
        }
    }

    /// Per-epoch sums of one rank, summed over ranks with one gather.
    const EPOCH_FIELDS: usize = 11;

    fn sum_over_ranks(coll: &Collectives, v: [f64; EPOCH_FIELDS]) -> Result<Vec<f64>, CliError> {
        let all = coll.all_gather_f64(&v).map_err(mpi_err("gather epoch"))?;
        let mut out = vec![0.0; EPOCH_FIELDS];
        for chunk in all.chunks(EPOCH_FIELDS) {
            for (o, x) in out.iter_mut().zip(chunk) {
                *o += x;
            }
        }
        Ok(out)
    }

    fn run(a: &TrainArgs, world: &SimpleCommunicator) -> Result<(), CliError> {
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let lead = rank == 0;
        let human = lead && !a.json;
        if !matches!(a.backend, BackendChoice::Cpu) {
            return Err(CliError::Usage(format!(
                "--transport mpi runs gradcast on the cpu backend (got --backend {})",
                a.backend
            )));
        }
        let p = a.workers;
        let cfg = TrainConfig {
            workers: p,
            epochs: a.epochs,
            batch: a.batch,
            lr: a.lr,
            seed: a.seed,
            hidden: a.hidden,
            threshold: a.threshold,
            aggregate: match a.aggregate {
                crate::cli::AggregateArg::Mean => Aggregate::Mean,
                crate::cli::AggregateArg::Sum => Aggregate::Sum,
            },
        };
        cfg.validate()?;
        let w = p * size;
        if cfg.batch < w {
            return Err(CliError::Usage(format!(
                "--batch {} is smaller than the {w} workers of {size} ranks x {p}: every \
                 worker needs a sample",
                cfg.batch
            )));
        }
        let data = load_data(&a.data, a.seed)?;
        if data.train.is_empty() || data.test.is_empty() {
            return Err(CliError::Train("the training or test set is empty".into()));
        }
        if lead {
            std::fs::create_dir_all(&a.out).map_err(|source| CliError::Io {
                action: "create directory",
                path: a.out.clone(),
                source,
            })?;
        }
        // This rank's memory: its `p` workers.
        let model = cfg.model(data.train.dim, data.train.classes)?;
        let n = model.num_params();
        let init = model.init(cfg.seed);
        let backend = crate::backends::cpu()?;

        // gradcast: the round protocol over MPI.
        let encoders = (0..p)
            .map(|_| {
                Ok(CountingEncoder {
                    inner: make_encoder::<gradcast_cpu::Cpu>(cfg.threshold, n)?,
                    stats: MessageTally::default(),
                })
            })
            .collect::<Result<Vec<_>, CliError>>()?;
        let max_packet = encoders
            .iter()
            .map(|e| e.max_packet_len(n))
            .max()
            .unwrap_or(0);
        let transport = MpiTransport::new(world, p, max_packet).map_err(mpi_err("transport"))?;
        let config = RoundConfig {
            step: match cfg.aggregate {
                Aggregate::Mean => Step::Mean,
                Aggregate::Sum => Step::Sum,
            },
            ..transport.round_config(n)
        };
        let acc = Accumulator::new(backend, config, encoders, transport)
            .map_err(be("build the round protocol"))?;
        let backend = acc.backend();
        let mut replicas = Vec::with_capacity(p);
        let mut updates = Vec::with_capacity(p);
        for _ in 0..p {
            let mut r = backend.alloc(n).map_err(be("allocate a replica"))?;
            backend
                .upload(&init, &mut r)
                .map_err(be("upload parameters"))?;
            replicas.push(r);
            updates.push(backend.alloc(n).map_err(be("allocate an update"))?);
        }
        let mut gc = GradcastRank {
            acc,
            replicas,
            updates,
            round: 0,
            encode_ns: 0,
            exchange_ns: 0,
            decode_ns: 0,
        };

        // Dense: one replica per rank (its workers' replicas are identical), MPI_Allreduce.
        let mut coll = Collectives::new(world).map_err(mpi_err("collectives"))?;
        let mut dense = init.clone();
        let mut local_sum = vec![0.0f32; n];
        let mut global_sum = vec![0.0f32; n];
        let scale = cfg.aggregate.scale(w);

        if human {
            println!(
                "gradcast train --transport mpi: {} ({} train / {} test samples, {} features), \
                 MLP {}-{}-{} ({n} parameters)",
                data.name,
                data.train.len(),
                data.test.len(),
                data.train.dim,
                data.train.dim,
                cfg.hidden,
                data.train.classes
            );
            println!(
                "{size} ranks x {p} workers = {w} workers, batch {}, lr {}, {} epochs, {} of \
                 updates, threshold {}, backend cpu",
                cfg.batch,
                cfg.lr,
                cfg.epochs,
                cfg.aggregate.name(),
                cfg.threshold
            );
            println!();
            println!("{}", epoch_heading());
        }

        let mut order: Vec<usize> = (0..data.train.len()).collect();
        let mut rng = SplitMix64::new(cfg.seed.wrapping_add(0xDA7A));
        let (mut dense_time, mut gc_time) = (Duration::ZERO, Duration::ZERO);
        let (mut dense_bytes, mut gc_bytes) = (0u64, 0u64);
        let mut dense_records: Vec<EpochRecord> = Vec::new();
        let mut gc_records: Vec<EpochRecord> = Vec::new();
        let mut dense_rounds = 0u64;
        let mut last_stats = gc.acc.transport().stats();
        for epoch in 1..=cfg.epochs {
            rng.shuffle(&mut order);
            let (mut dense_loss, mut gc_loss, mut loss_n) = (0.0f64, 0.0f64, 0.0f64);

            // Dense epoch.
            let t = Instant::now();
            let mut rounds = 0u64;
            for batch in order.chunks(cfg.batch) {
                let mine: Vec<&[usize]> = (0..p).map(|j| shard(batch, w, rank * p + j)).collect();
                let params = vec![dense.clone(); p];
                let grads = gradients(&model, &cfg, &data, &mine, &params, dense_rounds + rounds)?;
                local_sum.fill(0.0);
                for ((loss, g), idx) in grads.iter().zip(&mine) {
                    // An empty shard (a last batch smaller than W) has no loss to average.
                    if !idx.is_empty() {
                        dense_loss += *loss as f64;
                    }
                    for (s, v) in local_sum.iter_mut().zip(g) {
                        *s += *v;
                    }
                }
                coll.allreduce_sum(&local_sum, &mut global_sum)
                    .map_err(mpi_err("dense allreduce"))?;
                for (x, g) in dense.iter_mut().zip(&global_sum) {
                    *x -= scale * *g;
                }
                rounds += 1;
            }
            dense_time += t.elapsed();
            dense_rounds += rounds;

            // gradcast epoch, same batches.
            let t = Instant::now();
            for batch in order.chunks(cfg.batch) {
                let mine: Vec<&[usize]> = (0..p).map(|j| shard(batch, w, rank * p + j)).collect();
                let params = (0..p)
                    .map(|j| gc.params(j))
                    .collect::<Result<Vec<_>, _>>()?;
                let grads = gradients(&model, &cfg, &data, &mine, &params, gc.round)?;
                let ups: Vec<Vec<f32>> = grads
                    .into_iter()
                    .zip(&mine)
                    .map(|((loss, g), idx)| {
                        if !idx.is_empty() {
                            gc_loss += loss as f64;
                            loss_n += 1.0;
                        }
                        g
                    })
                    .collect();
                gc.round(&ups)?;
            }
            gc_time += t.elapsed();
            let stats = gc.acc.transport().stats();
            let epoch_bytes = stats.bytes_sent() - last_stats.bytes_sent();
            last_stats = stats;
            let tally = gc.take_tally();

            let sums = sum_over_ranks(
                &coll,
                [
                    dense_loss,
                    gc_loss,
                    loss_n,
                    epoch_bytes as f64,
                    tally.tau,
                    tally.density,
                    tally.messages,
                    tally.sparse,
                    tally.bitmap,
                    tally.dense,
                    (rounds * 4 * n as u64) as f64,
                ],
            )?;
            let loss_n = sums[2].max(1.0);
            let m = sums[6].max(1.0);
            let d_bytes = sums[10] as u64;
            let g_bytes = sums[3] as u64;
            dense_bytes += d_bytes;
            gc_bytes += g_bytes;
            let d = EpochRecord {
                epoch,
                loss: sums[0] / loss_n,
                test_accuracy: model.accuracy(&dense, &data.test)?,
                bytes: d_bytes,
                cumulative_bytes: dense_bytes,
                tau: None,
                density: None,
                encodings: None,
            };
            let mix = EncodingMix {
                sparse: sums[7] as u64,
                bitmap: sums[8] as u64,
                dense: sums[9] as u64,
            };
            let g = EpochRecord {
                epoch,
                loss: sums[1] / loss_n,
                test_accuracy: model.accuracy(&gc.params(0)?, &data.test)?,
                bytes: g_bytes,
                cumulative_bytes: gc_bytes,
                tau: Some(sums[4] / m),
                density: Some(sums[5] / m),
                encodings: Some(mix),
            };
            if human {
                for l in epoch_lines(&d, &g) {
                    println!("{l}");
                }
            }
            dense_records.push(d);
            gc_records.push(g);
        }

        // Checksums: every replica of this rank, then every rank.
        let gc_params = gc.params(0)?;
        let local_identical = replicas_identical(p, |j| gc.params(j))?;
        let gc_sum = checksum(&gc_params);
        let dense_sum = checksum(&dense);
        let line = format!(
            "rank {rank}/{size}: checksum gradcast {gc_sum:016x} dense {dense_sum:016x}{}",
            if local_identical {
                ""
            } else {
                " (local replicas differ)"
            }
        );
        if a.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        let gc_sums = coll
            .all_gather_u64(gc_sum)
            .map_err(mpi_err("gather checksums"))?;
        let dense_sums = coll
            .all_gather_u64(dense_sum)
            .map_err(mpi_err("gather checksums"))?;
        let all_local = coll
            .all_gather_u64(local_identical as u64)
            .map_err(mpi_err("gather checksums"))?;
        let stats = gc.acc.transport().stats();
        let secs = |ns: u64| ns as f64 / 1e9;
        let totals = sum_over_ranks(
            &coll,
            [
                secs(gc.encode_ns),
                secs(gc.exchange_ns),
                secs(gc.decode_ns),
                secs(stats.exchange_ns),
                stats.table_bytes_sent as f64,
                dense_time.as_secs_f64(),
                gc_time.as_secs_f64(),
                0.0,
                0.0,
                0.0,
                0.0,
            ],
        )?;
        let gc_identical =
            all_local.iter().all(|&x| x == 1) && gc_sums.iter().all(|&s| s == gc_sums[0]);
        let dense_identical = dense_sums.iter().all(|&s| s == dense_sums[0]);
        let rounds = gc.round;
        if !lead {
            if !gc_identical {
                return Err(CliError::Train(
                    "the gradcast replicas diverged across ranks".into(),
                ));
            }
            return Ok(());
        }

        let per_round = (rounds * size as u64).max(1) as f64;
        let info = MpiInfo {
            ranks: size,
            workers_per_rank: p,
            rounds,
            gradcast_bytes_per_rank_per_round: gc_bytes as f64 / per_round,
            gradcast_table_bytes_per_rank_per_round: totals[4] / per_round,
            dense_allreduce_bytes_per_rank_per_round: dense_bytes as f64
                / (dense_rounds * size as u64).max(1) as f64,
            gradcast_checksums: gc_sums.iter().map(|s| format!("{s:016x}")).collect(),
            dense_checksums: dense_sums.iter().map(|s| format!("{s:016x}")).collect(),
            transport_seconds: totals[3],
        };
        let last = |r: &[EpochRecord]| r.last().map_or((0.0, 0.0), |e| (e.test_accuracy, e.loss));
        let (d_acc, d_loss) = last(&dense_records);
        let (g_acc, g_loss) = last(&gc_records);
        let summary = Summary {
            config: TrainConfig { workers: w, ..cfg },
            backend: "cpu".into(),
            data: DataInfo {
                name: data.name.clone(),
                train: data.train.len(),
                test: data.test.len(),
                features: data.train.dim,
                classes: data.train.classes,
            },
            params: n,
            rounds,
            dense: RunSummary {
                test_accuracy: d_acc,
                bytes: dense_bytes,
                seconds: totals[5] / size as f64,
                final_loss: d_loss,
                replicas_identical: dense_identical,
                encode_seconds: None,
                exchange_seconds: None,
                decode_seconds: None,
                epochs: dense_records,
            },
            gradcast: RunSummary {
                test_accuracy: g_acc,
                bytes: gc_bytes,
                seconds: totals[6] / size as f64,
                final_loss: g_loss,
                replicas_identical: gc_identical,
                encode_seconds: Some(totals[0]),
                exchange_seconds: Some(totals[1]),
                decode_seconds: Some(totals[2]),
                epochs: gc_records,
            },
            compression_ratio: dense_bytes as f64 / gc_bytes.max(1) as f64,
            accuracy_gap_pp: 100.0 * (g_acc - d_acc),
        };
        let json = serde_json::to_string_pretty(&MpiSummary {
            summary: &summary,
            mpi: &info,
        })
        .map_err(|e| CliError::Train(format!("cannot serialise the summary: {e}")))?;
        let summary_path = a.out.join("summary.json");
        crate::error::write_file(&summary_path, json.as_bytes())?;
        let plot_path = a.out.join("train.png");
        crate::plot::draw(&plot_path, &summary)?;
        if a.json {
            println!("{json}");
        } else {
            print_table(&summary, &info);
            println!(
                "\nwrote {} and {}",
                plot_path.display(),
                summary_path.display()
            );
        }
        if !gc_identical {
            return Err(CliError::Train(
                "the gradcast replicas diverged across ranks: they must stay bit-identical".into(),
            ));
        }
        Ok(())
    }

    fn print_table(s: &Summary, m: &MpiInfo) {
        let (d, g) = (&s.dense, &s.gradcast);
        println!();
        println!(
            "{:<34} {:>16} {:>16}",
            format!("summary ({} ranks x {})", m.ranks, m.workers_per_rank),
            "dense allreduce",
            "gradcast"
        );
        println!(
            "{:<34} {:>15.2}% {:>15.2}%   (gap {:+.2} pp)",
            "final test accuracy",
            100.0 * d.test_accuracy,
            100.0 * g.test_accuracy,
            s.accuracy_gap_pp
        );
        println!(
            "{:<34} {:>16} {:>16}   (packet table {:.0} B)",
            "bytes on the wire per rank per round",
            format!("{:.0} B", m.dense_allreduce_bytes_per_rank_per_round),
            format!("{:.1} B", m.gradcast_bytes_per_rank_per_round),
            m.gradcast_table_bytes_per_rank_per_round
        );
        println!(
            "{:<34} {:>16} {:>16}   (compression {:.0}x)",
            "bytes on the wire, all ranks",
            human_bytes(d.bytes),
            human_bytes(g.bytes),
            s.compression_ratio
        );
        println!(
            "{:<34} {:>15.2}s {:>15.2}s",
            "wall time (mean over ranks)", d.seconds, g.seconds
        );
        println!(
            "{:<34} {:>16} {:>16}",
            "replicas bit-identical (all ranks)",
            if d.replicas_identical { "yes" } else { "NO" },
            if g.replicas_identical { "yes" } else { "NO" }
        );
        println!(
            "gradcast time in encode / exchange / decode (all workers): {:.3} s / {:.3} s / \
             {:.3} s (MPI transport {:.3} s)",
            g.encode_seconds.unwrap_or(0.0),
            g.exchange_seconds.unwrap_or(0.0),
            g.decode_seconds.unwrap_or(0.0),
            m.transport_seconds
        );
    }
}

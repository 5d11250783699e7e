//! Measures the link between MPI ranks: latency `alpha` and bandwidth `B` of the alpha-beta
//! model (from a ping-pong between ranks 0 and 1), then the time of the two collectives a
//! data-parallel job uses (the dense baseline's `MPI_Allreduce` of f32 values and an
//! `MPI_Allgather` of bytes, gradcast's exchange) against what the alpha-beta model predicts.
//!
//! ```text
//! cargo build --release -p gradcast-mpi --example link_probe
//! mpirun --allow-run-as-root --oversubscribe -np 4 target/release/examples/link_probe
//! scripts/throttled-link.sh target/release/examples/link_probe    # over a 100 Mbit/s loopback
//! ```
//!
//! Each point is the median over repetitions of the slowest rank's time. Run the ping-pong
//! with `-np 2` for alpha: with more ranks than cores, idle ranks busy-poll (Open MPI) and
//! delay the two that talk. Rank 0 prints one table per measurement and, last, one line `probe-json: {...}` with the
//! fitted `alpha_s` and `bytes_per_s` and every measured point, for scripts. Where the
//! kernel exposes it (Linux: `/proc/net/dev`), each point also reports the bytes the
//! loopback interface carried per operation (TCP/IP headers included), so the traffic of
//! Open MPI's algorithms can be compared with the model's.
//!
//! Options: `--quick` (fewer sizes and repetitions), `--max-bytes N` (the largest message,
//! default 4 MiB).
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_mpi::Collectives;
use gradcast_mpi::mpi::collective::CommunicatorCollectives;
use gradcast_mpi::mpi::point_to_point::{Destination, Source};
use gradcast_mpi::mpi::topology::{Communicator, SimpleCommunicator};
use std::process::ExitCode;
use std::time::Instant;

/// Bytes the loopback interface has transmitted (this network namespace), if readable.
fn lo_tx_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/dev").ok()?;
    s.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != "lo" {
            return None;
        }
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
        rest.split_whitespace().nth(8)?.parse().ok()
    })
}

/// One measured point: `bytes` per operation, mean seconds per operation over `reps`, and the
/// loopback bytes per operation (when known).
#[derive(Clone, Debug)]
struct Point {
    bytes: usize,
    reps: usize,
    seconds: f64,
    wire_bytes: Option<f64>,
}

impl Point {
    fn json(&self) -> String {
        format!(
            "{{\"bytes\":{},\"reps\":{},\"seconds\":{:e},\"wire_bytes\":{}}}",
            self.bytes,
            self.reps,
            self.seconds,
            self.wire_bytes
                .map_or_else(|| "null".to_string(), |w| format!("{w:.0}"))
        )
    }
}

/// Repetitions so that one size moves about `budget` bytes (at least 3, at most `max`).
fn reps(bytes: usize, budget: usize, max: usize) -> usize {
    (budget / bytes.max(1)).clamp(3, max)
}

/// Times `op` `reps` times after one warm-up call, between barriers: the median time of one
/// call on the slowest rank (every rank returns it), and the loopback bytes per call.
fn time_op(
    coll: &Collectives,
    reps: usize,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<(f64, Option<f64>), String> {
    op()?;
    coll.barrier().map_err(|e| e.to_string())?;
    let tx0 = lo_tx_bytes();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        op()?;
        times.push(t.elapsed().as_secs_f64());
    }
    coll.barrier().map_err(|e| e.to_string())?;
    let tx = match (tx0, lo_tx_bytes()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / reps as f64),
        _ => None,
    };
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let all = coll
        .all_gather_f64(&[median])
        .map_err(|e| format!("gather times: {e}"))?;
    Ok((all.iter().copied().fold(0.0, f64::max), tx))
}

/// The link's `(alpha, B)`: alpha is the one-way time of the smallest message (its bytes
/// take a negligible `bytes / B`), B the inverse slope of a least-squares line through the
/// messages of 64 KiB and more, where the bandwidth term dominates (a plain fit through every
/// size lets the large messages' noise swamp the intercept). B is infinite when fewer than two
/// sizes are that large.
fn fit(points: &[Point]) -> (f64, f64) {
    let alpha = points
        .iter()
        .min_by_key(|p| p.bytes)
        .map_or(0.0, |p| p.seconds);
    let big: Vec<&Point> = points.iter().filter(|p| p.bytes >= 64 << 10).collect();
    if big.len() < 2 {
        return (alpha, f64::INFINITY);
    }
    let n = big.len() as f64;
    let mx = big.iter().map(|p| p.bytes as f64).sum::<f64>() / n;
    let my = big.iter().map(|p| p.seconds).sum::<f64>() / n;
    let sxy: f64 = big
        .iter()
        .map(|p| (p.bytes as f64 - mx) * (p.seconds - my))
        .sum();
    let sxx: f64 = big.iter().map(|p| (p.bytes as f64 - mx).powi(2)).sum();
    (alpha, sxx / sxy)
}

fn run(world: &SimpleCommunicator, quick: bool, max_bytes: usize) -> Result<(), String> {
    let (rank, size) = (world.rank(), world.size() as usize);
    if size < 2 {
        return Err("the probe needs at least 2 ranks (run it under mpirun -np 2 or more)".into());
    }
    let coll = Collectives::new(world).map_err(|e| e.to_string())?;
    let lead = rank == 0;
    let budget = if quick { 2 << 20 } else { 16 << 20 };
    let max_reps = if quick { 50 } else { 400 };
    let mut sizes: Vec<usize> = vec![8, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
    sizes.extend([4 << 20, 16 << 20].into_iter().filter(|&s| s <= max_bytes));
    sizes.retain(|&s| s <= max_bytes);
    if quick {
        sizes.retain(|&s| [8, 16 << 10, 256 << 10, 1 << 20, 4 << 20].contains(&s));
    }

    // Ping-pong between ranks 0 and 1: one-way time = round trip / 2.
    let mut ping = Vec::new();
    for &bytes in &sizes {
        let r = reps(bytes, budget, max_reps);
        let mut buf = vec![0u8; bytes];
        let (secs, wire) = time_op(&coll, r, || {
            match rank {
                0 => {
                    world.process_at_rank(1).send(&buf[..]);
                    world.process_at_rank(1).receive_into(&mut buf[..]);
                }
                1 => {
                    world.process_at_rank(0).receive_into(&mut buf[..]);
                    world.process_at_rank(0).send(&buf[..]);
                }
                _ => {}
            }
            Ok(())
        })?;
        ping.push(Point {
            bytes,
            reps: r,
            seconds: secs / 2.0,
            wire_bytes: wire.map(|w| w / 2.0),
        });
    }
    let (alpha, bw) = fit(&ping);

    // Dense: MPI_Allreduce (sum) of f32 values, every rank contributing `bytes`.
    let mut allreduce = Vec::new();
    for &bytes in sizes.iter().filter(|&&b| b >= 1 << 10) {
        let n = bytes / 4;
        let r = reps(bytes * size, budget, max_reps);
        let input = vec![1.0f32; n];
        let mut out = vec![0.0f32; n];
        let mut c2 = Collectives::new(world).map_err(|e| e.to_string())?;
        let (secs, wire) = time_op(&coll, r, || {
            c2.allreduce_sum(&input, &mut out)
                .map_err(|e| format!("allreduce: {e}"))
        })?;
        allreduce.push(Point {
            bytes,
            reps: r,
            seconds: secs,
            wire_bytes: wire,
        });
    }

    // gradcast-like: MPI_Allgather of `bytes` from every rank.
    let mut allgather = Vec::new();
    for &bytes in sizes.iter().filter(|&&b| b <= 1 << 20) {
        let r = reps(bytes * size, budget, max_reps);
        let input = vec![7u8; bytes];
        let mut out = vec![0u8; bytes * size];
        let (secs, wire) = time_op(&coll, r, || {
            world.all_gather_into(&input[..], &mut out[..]);
            Ok(())
        })?;
        allgather.push(Point {
            bytes,
            reps: r,
            seconds: secs,
            wire_bytes: wire,
        });
    }

    if lead {
        let p = size as f64;
        println!("link probe: {size} ranks; ping-pong between ranks 0 and 1");
        println!(
            "{:>10} {:>6} {:>12} {:>12} {:>14}",
            "bytes", "reps", "one-way us", "fit us", "lo bytes/msg"
        );
        for pt in &ping {
            println!(
                "{:>10} {:>6} {:>12.1} {:>12.1} {:>14}",
                pt.bytes,
                pt.reps,
                pt.seconds * 1e6,
                (alpha + pt.bytes as f64 / bw) * 1e6,
                pt.wire_bytes.map_or("-".into(), |w| format!("{w:.0}"))
            );
        }
        println!(
            "fit: alpha = {:.1} us (smallest message), B = {:.2} MB/s = {:.1} Mbit/s \
             (slope over messages >= 64 KiB)",
            alpha * 1e6,
            bw / 1e6,
            bw * 8.0 / 1e6
        );
        println!();
        println!(
            "MPI_Allreduce (f32 sum), {size} ranks; model: ring 2(P-1) alpha + 2(P-1)/P M/B \
             on a link per rank, and the same traffic, 2(P-1) M, on one shared link"
        );
        println!(
            "{:>10} {:>6} {:>12} {:>12} {:>12} {:>16} {:>14}",
            "M bytes", "reps", "measured ms", "ring ms", "shared ms", "lo bytes/call", "2(P-1)M"
        );
        for pt in &allreduce {
            let m = pt.bytes as f64;
            let ring = 2.0 * (p - 1.0) * alpha + 2.0 * (p - 1.0) / p * m / bw;
            let shared = 2.0 * (p - 1.0) * alpha + 2.0 * (p - 1.0) * m / bw;
            println!(
                "{:>10} {:>6} {:>12.3} {:>12.3} {:>12.3} {:>16} {:>14.0}",
                pt.bytes,
                pt.reps,
                pt.seconds * 1e3,
                ring * 1e3,
                shared * 1e3,
                pt.wire_bytes.map_or("-".into(), |w| format!("{w:.0}")),
                2.0 * (p - 1.0) * m
            );
        }
        println!();
        println!(
            "MPI_Allgather of m bytes per rank, {size} ranks; model: (P-1) alpha + (P-1) m / B \
             on a link per rank, and the same traffic, P (P-1) m, on one shared link"
        );
        println!(
            "{:>10} {:>6} {:>12} {:>12} {:>12} {:>16} {:>14}",
            "m bytes",
            "reps",
            "measured ms",
            "per-rank ms",
            "shared ms",
            "lo bytes/call",
            "P(P-1)m"
        );
        for pt in &allgather {
            let m = pt.bytes as f64;
            let own = (p - 1.0) * alpha + (p - 1.0) * m / bw;
            let shared = (p - 1.0) * alpha + p * (p - 1.0) * m / bw;
            println!(
                "{:>10} {:>6} {:>12.3} {:>12.3} {:>12.3} {:>16} {:>14.0}",
                pt.bytes,
                pt.reps,
                pt.seconds * 1e3,
                own * 1e3,
                shared * 1e3,
                pt.wire_bytes.map_or("-".into(), |w| format!("{w:.0}")),
                p * (p - 1.0) * m
            );
        }
        let list = |v: &[Point]| v.iter().map(Point::json).collect::<Vec<_>>().join(",");
        println!(
            "probe-json: {{\"ranks\":{size},\"alpha_s\":{alpha:e},\"bytes_per_s\":{bw:e},\
             \"ping_pong\":[{}],\"allreduce_f32\":[{}],\"allgather\":[{}]}}",
            list(&ping),
            list(&allreduce),
            list(&allgather)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let max_bytes = match args.iter().position(|a| a == "--max-bytes") {
        None => 4 << 20,
        Some(i) => match args.get(i + 1).and_then(|v| v.parse::<usize>().ok()) {
            Some(v) if v >= 1 << 10 => v,
            _ => {
                eprintln!("link_probe: --max-bytes needs a number of bytes >= 1024");
                return ExitCode::from(2);
            }
        },
    };
    let Some(universe) = gradcast_mpi::mpi::initialize() else {
        eprintln!("link_probe: MPI was already initialized");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    match run(&world, quick, max_bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("link_probe: rank {}: {e}", world.rank());
            if world.size() > 1 {
                world.abort(1);
            }
            ExitCode::FAILURE
        }
    }
}

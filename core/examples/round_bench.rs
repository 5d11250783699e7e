//! Benchmark (not a test): barrier round-trip latency for P = 2 and 4 threads, and a full
//! round's overhead excluding encode and decode.
//!
//! ```text
//! cargo run -p gradcast-core --release --example round_bench [-- --quick]
//! ```
//!
//! * **Barrier round trip**: P threads call `wait(P)` in a loop; the figure is wall time per
//!   generation (every thread arrives and is released once), the median of 5 runs, next to
//!   `std::sync::Barrier` for scale.
//! * **Round overhead**: P parties run full rounds (gate, publication queue, barrier A with
//!   its lead action and an empty exchange, barrier B) with an encoder that publishes an
//!   empty packet and N = 1, so neither encoding nor decoding costs anything; and the same
//!   with every party abstaining (no queue traffic). DL4J's two barriers and registration
//!   handshake poll at 1 ms, so its floor is about 1-3 ms per round (weakness W7 in
//!   docs/DL4J.md).
//! * **Bounded waits**: the same rounds (publishing) with the clock on, without a timeout and
//!   with the default one (`RoundConfig::timeout`): what the deadlines cost, as a ratio
//!   measured in the same run.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // test code is std

use gradcast_core::backend::Reference;
use gradcast_core::barrier::{Barrier, Park, Relax, Spin, SpinThenYield};
use gradcast_core::packet::PartyEncoder;
use gradcast_core::round::{Accumulator, Local, RoundConfig, Ticket};
use std::time::Instant;

/// Publishes an empty packet: the round protocol without encode or decode work.
#[derive(Clone, Copy, Debug)]
struct Empty;

impl PartyEncoder<Reference> for Empty {
    fn max_packet_len(&self, _n: usize) -> usize {
        0
    }

    fn encode_round(
        &mut self,
        _backend: &Reference,
        _residual: &mut Vec<f32>,
        _sender: u32,
        _round: u64,
        _out: &mut [u8],
    ) -> Result<usize, gradcast_core::Error> {
        Ok(0)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Nanoseconds per generation of `wait(p)` on our barrier.
fn barrier_ns<R: Relax>(p: usize, iters: u32) -> f64 {
    let b: Barrier<R> = Barrier::new();
    let start = std::sync::Barrier::new(p);
    let t = std::thread::scope(|s| {
        let hs: Vec<_> = (0..p)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        b.wait(p).unwrap();
                    }
                    t0.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    });
    t.as_nanos() as f64 / iters as f64
}

/// Nanoseconds per generation of `std::sync::Barrier::wait`.
fn std_barrier_ns(p: usize, iters: u32) -> f64 {
    let b = std::sync::Barrier::new(p);
    let t = std::thread::scope(|s| {
        let hs: Vec<_> = (0..p)
            .map(|_| {
                s.spawn(|| {
                    b.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        b.wait();
                    }
                    t0.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    });
    t.as_nanos() as f64 / iters as f64
}

/// Nanoseconds per round of the accumulator with empty packets (or abstaining parties),
/// without a clock (so without timings and timeouts).
fn round_ns<R: Relax>(p: usize, rounds: u64, contribute: bool) -> f64 {
    let mut config = RoundConfig::new(p, 1);
    config.clock = None;
    config.timeout = None;
    rounds_ns::<R>(config, rounds, contribute)
}

/// Nanoseconds per round with the default clock, with or without the default timeout.
fn bounded_round_ns<R: Relax>(p: usize, rounds: u64, bounded: bool) -> f64 {
    let mut config = RoundConfig::new(p, 1);
    if !bounded {
        config.timeout = None;
    }
    rounds_ns::<R>(config, rounds, true)
}

fn rounds_ns<R: Relax>(config: RoundConfig, rounds: u64, contribute: bool) -> f64 {
    let p = config.parties;
    let mut acc: Accumulator<Reference, Empty, Local, R> =
        Accumulator::new(Reference, config, vec![Empty; p], Local).unwrap();
    let start = std::sync::Barrier::new(p);
    let t = std::thread::scope(|s| {
        let hs: Vec<_> = acc
            .parties()
            .map(|mut party| {
                let start = &start;
                s.spawn(move || {
                    let mut params = vec![0.0f32; 1];
                    let update = vec![0.0f32; 1];
                    start.wait();
                    let t0 = Instant::now();
                    for round in 0..rounds {
                        let ticket = Ticket::new(round, p);
                        if contribute {
                            party.store_update(ticket, &update).unwrap();
                        } else {
                            party.abstain(ticket).unwrap();
                        }
                        party.apply_update(&mut params).unwrap();
                    }
                    t0.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    });
    t.as_nanos() as f64 / rounds as f64
}

fn us(ns: f64) -> String {
    format!("{:.2}", ns / 1e3)
}

/// Median of 5 runs of `f(iters)`, with `iters` chosen from a pilot run so that one run takes
/// about `target` seconds (at least 20 iterations): oversubscribed spinning costs a scheduler
/// quantum per round trip, and a fixed count would run for minutes.
fn measure(target: f64, f: &dyn Fn(u64) -> f64) -> f64 {
    let pilot = f(20);
    let iters = ((target * 1e9 / pilot.max(1.0)) as u64).clamp(20, 2_000_000);
    median((0..5).map(|_| f(iters)).collect())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let target = if quick { 0.05 } else { 0.3 };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# gradcast round_bench ({cores} hardware threads)");
    println!();
    println!("## Barrier round trip (microseconds per generation, median of 5)");
    println!();
    println!(
        "| P | Spin | SpinThenYield | Park | std::sync::Barrier (reference) | best of ours / std |"
    );
    println!("|---|---|---|---|---|---|");
    for p in [2usize, 4] {
        let spin = measure(target, &|it| barrier_ns::<Spin>(p, it as u32));
        let yld = measure(target, &|it| barrier_ns::<SpinThenYield>(p, it as u32));
        let park = measure(target, &|it| barrier_ns::<Park>(p, it as u32));
        let stdb = measure(target, &|it| std_barrier_ns(p, it as u32));
        let best = spin.min(yld).min(park);
        println!(
            "| {p} | {} | {} | {} | {} | {:.2} |",
            us(spin),
            us(yld),
            us(park),
            us(stdb),
            best / stdb
        );
    }
    println!();
    println!("## Full round overhead, no encode/decode (microseconds per round, median of 5)");
    println!();
    println!(
        "| P | parties | Spin | SpinThenYield | Park | 2 x std::sync::Barrier (reference) | best of ours / reference |"
    );
    println!("|---|---|---|---|---|---|---|");
    for p in [1usize, 2, 4] {
        let reference = if p > 1 {
            2.0 * measure(target, &|it| std_barrier_ns(p, it as u32))
        } else {
            f64::NAN
        };
        for contribute in [true, false] {
            let spin = measure(target, &|it| round_ns::<Spin>(p, it, contribute));
            let yld = measure(target, &|it| round_ns::<SpinThenYield>(p, it, contribute));
            let park = measure(target, &|it| round_ns::<Park>(p, it, contribute));
            let what = if contribute {
                "publish empty packets"
            } else {
                "abstain"
            };
            let best = spin.min(yld).min(park);
            let (reference_us, ratio) = if p > 1 {
                (us(reference), format!("{:.2}", best / reference))
            } else {
                ("-".to_string(), "-".to_string())
            };
            println!(
                "| {p} | {what} | {} | {} | {} | {reference_us} | {ratio} |",
                us(spin),
                us(yld),
                us(park)
            );
        }
    }
    println!();
    println!(
        "## Bounded waits: the default timeout against none, clock on (microseconds per round, \
         median of 5)"
    );
    println!();
    println!(
        "| P | SpinThenYield, no timeout | SpinThenYield, timeout | ratio | Park, no timeout | Park, timeout | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for p in [1usize, 2, 4] {
        let y0 = measure(target, &|it| {
            bounded_round_ns::<SpinThenYield>(p, it, false)
        });
        let y1 = measure(target, &|it| bounded_round_ns::<SpinThenYield>(p, it, true));
        let k0 = measure(target, &|it| bounded_round_ns::<Park>(p, it, false));
        let k1 = measure(target, &|it| bounded_round_ns::<Park>(p, it, true));
        println!(
            "| {p} | {} | {} | {:.2} | {} | {} | {:.2} |",
            us(y0),
            us(y1),
            y1 / y0,
            us(k0),
            us(k1),
            k1 / k0
        );
    }
}

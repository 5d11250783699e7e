//! Stress: P = 8 threads, many rounds, random delays, random contributors (k <= P) or
//! random members each round. No deadlock (a watchdog aborts after a deadline), no packet
//! lost or applied twice (every replica equals a sequential oracle bit for bit, and every
//! round reports the expected packet count), all replicas bit-identical.
//!
//! `GRADCAST_STRESS_ROUNDS` sets the main test's round count (default 10 000).
//!
//! Not run under Miri (wall-clock deadlines and thousands of rounds); Miri runs
//! `round_basic` and the queue and barrier unit tests instead.
#![cfg(not(miri))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // test code is std

mod round_common;

use gradcast_core::backend::Reference;
use gradcast_core::barrier::{Park, Relax, SpinThenYield};
use gradcast_core::packet::FixedEncoder;
use gradcast_core::round::workers::{self, Contribution};
use gradcast_core::round::{Accumulator, Local, RoundConfig, Step, Ticket};
use round_common::{Oracle, Rng, assert_bits_eq, env_count, update_of, with_watchdog};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

const TAU: f32 = 0.05;
const P: usize = 8;
const N: usize = 32;

/// A random pause: mostly none, sometimes a short spin, a yield, or a sleep.
fn delay(rng: &mut Rng) {
    match rng.below(100) {
        0..=59 => {}
        60..=89 => {
            for _ in 0..rng.below(2_000) {
                std::hint::spin_loop();
            }
        }
        90..=98 => std::thread::yield_now(),
        _ => std::thread::sleep(Duration::from_micros(10 + rng.below(90))),
    }
}

/// Every party a member of every round, a random subset of k (0..=P) contributors.
fn contributors_stress<R: Relax>(rounds: u64, seed: u64, step: Step) {
    let mut rng = Rng(seed);
    let schedule: Vec<u8> = (0..rounds)
        .map(|_| {
            let k = rng.below(P as u64 + 1) as u32;
            // A random subset of size k.
            let mut mask = 0u8;
            while mask.count_ones() < k {
                mask |= 1 << rng.below(P as u64);
            }
            mask
        })
        .collect();
    let mut config = RoundConfig::new(P, N);
    config.step = step;
    let mut acc: Accumulator<Reference, FixedEncoder, Local, R> =
        Accumulator::new(Reference, config, vec![FixedEncoder::new(TAU); P], Local).unwrap();
    let mut replicas = vec![vec![0.0f32; N]; P];
    let schedule = &schedule;
    let t0 = Instant::now();
    let packets_seen: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = acc
            .parties()
            .zip(replicas.iter_mut())
            .map(|(mut party, params)| {
                s.spawn(move || {
                    let mut rng = Rng(seed ^ (party.index() as u64 + 1) << 32);
                    let mut update = vec![0.0; N];
                    let mut seen = 0u64;
                    for (round, &mask) in schedule.iter().enumerate() {
                        let round = round as u64;
                        let ticket = Ticket::new(round, P);
                        delay(&mut rng);
                        if (mask >> party.index()) & 1 == 1 {
                            update_of(party.sender(), round, &mut update);
                            party.store_update(ticket, &update).unwrap();
                        } else {
                            party.abstain(ticket).unwrap();
                        }
                        delay(&mut rng);
                        let s = party.apply_update(params).unwrap();
                        assert_eq!(s.round, round);
                        assert_eq!(s.packets, mask.count_ones() as usize, "round {round}");
                        seen += s.packets as u64;
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = t0.elapsed();
    let expected_packets: u64 = schedule.iter().map(|m| m.count_ones() as u64).sum();
    assert!(packets_seen.iter().all(|&s| s == expected_packets));

    let mut oracle = Oracle::new(P, N, TAU);
    let mut expected = vec![0.0f32; N];
    for (round, &mask) in schedule.iter().enumerate() {
        let ids: Vec<u32> = (0..P as u32).filter(|i| (mask >> i) & 1 == 1).collect();
        Oracle::apply(&mut expected, &oracle.round(round as u64, &ids, step));
    }
    for (i, r) in replicas.iter().enumerate() {
        assert_bits_eq(r, &expected, &format!("replica {i}"));
        assert_bits_eq(
            acc.residual(i),
            &oracle.residuals[i],
            &format!("residual {i}"),
        );
    }
    assert!(
        expected.iter().any(|x| *x != 0.0),
        "the test moved the parameters"
    );
    println!(
        "{} rounds x {P} threads ({}), {expected_packets} packets: {:.2?} ({:.1} us/round)",
        rounds,
        std::any::type_name::<R>(),
        elapsed,
        elapsed.as_secs_f64() * 1e6 / rounds as f64
    );
}

#[test]
fn stress_p8_random_contributors_park() {
    let rounds = env_count("GRADCAST_STRESS_ROUNDS", 10_000);
    with_watchdog(
        "stress_p8_random_contributors_park",
        Duration::from_secs(300),
        || contributors_stress::<Park>(rounds, 0x5EED, Step::Sum),
    );
}

#[test]
fn stress_p8_random_contributors_spin_then_yield_mean() {
    let rounds = env_count("GRADCAST_STRESS_ROUNDS", 10_000) / 5;
    with_watchdog("stress_spin_then_yield", Duration::from_secs(300), || {
        contributors_stress::<SpinThenYield>(rounds, 0xFEED, Step::Mean)
    });
}

/// Random members each round (absent parties miss it; one-member rounds bypass the
/// barriers), random contributors among them. Each replica equals its own oracle: the
/// rounds it was a member of, applied in order.
#[test]
fn stress_p8_random_members() {
    let rounds = env_count("GRADCAST_STRESS_ROUNDS", 10_000) / 4;
    with_watchdog("stress_p8_random_members", Duration::from_secs(300), || {
        let mut rng = Rng(0xABCD);
        // (members, contributors) masks; contributors a subset of members.
        let schedule: Vec<(u8, u8)> = (0..rounds)
            .map(|_| {
                let mut members = 0u8;
                let m = 1 + rng.below(P as u64) as u32;
                while members.count_ones() < m {
                    members |= 1 << rng.below(P as u64);
                }
                (members, members & rng.below(256) as u8)
            })
            .collect();
        let schedule = &schedule;
        let mut acc: Accumulator<Reference, FixedEncoder, Local, Park> = Accumulator::new(
            Reference,
            RoundConfig::new(P, N),
            vec![FixedEncoder::new(TAU); P],
            Local,
        )
        .unwrap();
        let mut replicas = vec![vec![0.0f32; N]; P];
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
                s.spawn(move || {
                    let me = party.index();
                    let mut rng = Rng(me as u64 * 7919);
                    let mut update = vec![0.0; N];
                    for (round, &(members, contributors)) in schedule.iter().enumerate() {
                        if (members >> me) & 1 == 0 {
                            continue; // not a member: this replica misses the round
                        }
                        let round = round as u64;
                        let ticket = Ticket::new(round, members.count_ones() as usize);
                        delay(&mut rng);
                        if (contributors >> me) & 1 == 1 {
                            update_of(party.sender(), round, &mut update);
                            party.store_update(ticket, &update).unwrap();
                        } else {
                            party.abstain(ticket).unwrap();
                        }
                        let s = party.apply_update(params).unwrap();
                        assert_eq!(s.packets, contributors.count_ones() as usize);
                        assert_eq!(s.members, members.count_ones() as usize);
                    }
                });
            }
        });
        let elapsed = t0.elapsed();
        let mut oracle = Oracle::new(P, N, TAU);
        let mut expected = vec![vec![0.0f32; N]; P];
        for (round, &(members, contributors)) in schedule.iter().enumerate() {
            let ids: Vec<u32> = (0..P as u32)
                .filter(|i| (contributors >> i) & 1 == 1)
                .collect();
            let result = oracle.round(round as u64, &ids, Step::Sum);
            for (i, e) in expected.iter_mut().enumerate() {
                if (members >> i) & 1 == 1 {
                    Oracle::apply(e, &result);
                }
            }
        }
        for i in 0..P {
            assert_bits_eq(&replicas[i], &expected[i], &format!("replica {i}"));
            assert_bits_eq(
                acc.residual(i),
                &oracle.residuals[i],
                &format!("residual {i}"),
            );
        }
        println!("{rounds} rounds with random members: {elapsed:.2?}");
    });
}

/// The worker-thread helper under the same load: random abstentions, bit-identical
/// replicas equal to the oracle.
#[test]
fn stress_workers_helper() {
    let rounds = env_count("GRADCAST_STRESS_ROUNDS", 10_000) / 5;
    with_watchdog("stress_workers_helper", Duration::from_secs(300), || {
        let abstains = |party: usize, round: u64| {
            Rng(round.wrapping_mul(31) ^ party as u64)
                .next_u64()
                .is_multiple_of(3)
        };
        let mut acc: Accumulator<Reference, FixedEncoder, Local, Park> = Accumulator::new(
            Reference,
            RoundConfig::new(P, N),
            vec![FixedEncoder::new(TAU); P],
            Local,
        )
        .unwrap();
        let mut replicas = vec![vec![0.0f32; N]; P];
        let mut reported = 0u64;
        let summary = workers::run(
            &mut acc,
            &mut replicas,
            rounds,
            |w| {
                let mut rng = Rng(w.round ^ (w.party as u64) << 20);
                delay(&mut rng);
                if abstains(w.party, w.round) {
                    return Ok::<_, String>(Contribution::Abstain);
                }
                update_of(w.party as u32, w.round, w.update);
                Ok(Contribution::Update)
            },
            |report| {
                let k = (0..P).filter(|&i| !abstains(i, report.round)).count();
                assert_eq!(report.contributors, k);
                assert_eq!(report.packets, k);
                reported += 1;
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(summary.rounds, rounds);
        assert_eq!(reported, rounds);
        let mut oracle = Oracle::new(P, N, TAU);
        let mut expected = vec![0.0f32; N];
        for round in 0..rounds {
            let ids: Vec<u32> = (0..P)
                .filter(|&i| !abstains(i, round))
                .map(|i| i as u32)
                .collect();
            Oracle::apply(&mut expected, &oracle.round(round, &ids, Step::Sum));
        }
        for (i, r) in replicas.iter().enumerate() {
            assert_bits_eq(r, &expected, &format!("replica {i}"));
        }
        println!(
            "helper: {rounds} rounds, {:.1} us/round wall",
            summary.wall_ns as f64 / 1e3 / rounds as f64
        );
    });
}

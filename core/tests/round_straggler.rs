//! A straggler (issue 9): one party that is late, by far more than a round usually takes,
//! delays the others but breaks nothing: no timeout fires, nothing is lost or applied twice,
//! and every replica ends bit-identical to the sequential oracle.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // test code is std

mod round_common;

use gradcast_core::backend::Reference;
use gradcast_core::barrier::Park;
use gradcast_core::packet::FixedEncoder;
use gradcast_core::round::{Accumulator, Local, RoundConfig, Step, Ticket};
use round_common::{Oracle, assert_bits_eq, update_of, with_watchdog};
use std::time::{Duration, Instant};

const TAU: f32 = 0.05;
const LATE: Duration = Duration::from_millis(300);

#[test]
fn a_straggler_delays_the_round_but_breaks_nothing() {
    let (p, n, rounds) = (3usize, 32usize, 12u64);
    let mut acc: Accumulator<Reference, FixedEncoder, Local, Park> = Accumulator::new(
        Reference,
        RoundConfig::new(p, n),
        vec![FixedEncoder::new(TAU); p],
        Local,
    )
    .unwrap();
    let mut replicas = vec![vec![0.25f32; n]; p];
    let started = Instant::now();
    with_watchdog("straggler", Duration::from_secs(20), || {
        std::thread::scope(|s| {
            for (mut party, params) in acc.parties().zip(replicas.iter_mut()) {
                s.spawn(move || {
                    let mut update = vec![0.0; n];
                    for round in 0..rounds {
                        update_of(party.sender(), round, &mut update);
                        // Party 1 is late to publish in round 3 and late to apply in round 7.
                        if party.sender() == 1 && round == 3 {
                            std::thread::sleep(LATE);
                        }
                        party.store_update(Ticket::new(round, p), &update).unwrap();
                        if party.sender() == 1 && round == 7 {
                            std::thread::sleep(LATE);
                        }
                        let summary = party.apply_update(params).unwrap();
                        assert_eq!(summary.packets, p, "round {round}: a packet lost");
                    }
                });
            }
        });
    });
    let elapsed = started.elapsed();
    // The others waited for the straggler (twice) instead of giving up on it.
    assert!(
        elapsed >= 2 * LATE,
        "finished in {elapsed:?}: nobody waited"
    );
    let mut oracle = Oracle::new(p, n, TAU);
    let mut expected = vec![0.25f32; n];
    for round in 0..rounds {
        Oracle::apply(&mut expected, &oracle.round(round, &[0, 1, 2], Step::Sum));
    }
    for (i, r) in replicas.iter().enumerate() {
        assert_bits_eq(r, &expected, &format!("replica {i}"));
        assert_bits_eq(acc.residual(i), &oracle.residuals[i], "residual");
    }
    println!("straggler: {rounds} rounds with two {LATE:?} delays took {elapsed:?}");
}

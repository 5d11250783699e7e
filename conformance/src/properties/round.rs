//! Rounds: P workers over several rounds, driven by hand with the backend's operations, and
//! the round protocol's [`Accumulator`] with three parties
//! on threads. Replicas stay bit-identical to each other and to the reference's.

use crate::strategies::{self, EncoderSpec, SpecEncoder, VecSpec};
use crate::{ByRef, bits, check, check_fraction, dev, to_device, to_host};
use gradcast_core::Backend;
use gradcast_core::backend::Reference;
use gradcast_core::barrier::Park;
use gradcast_core::codec::EncodeParams;
use gradcast_core::encoder::{CumulativeStats, RoundStats};
use gradcast_core::round::{
    Accumulator, LocalPackets, Published, RemotePackets, RoundConfig, Step, Ticket, Transport,
};
use gradcast_core::wire::{self, MessageView};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Property: a whole multi-round run with P workers, driven in canonical order (each worker
/// adds its update to its residual and encodes; every replica decodes all messages by
/// sender id into its update buffer and steps `params -= scale * update`), leaves every
/// replica with bit-identical parameters, equal to the reference's run, and every residual
/// equal to the reference's.
pub fn multi_round_replicas_identical<B: Backend>(b: &B) {
    let case = (
        2usize..=4,
        1u64..=5,
        1usize..=1500,
        strategies::moderate_tau(),
        prop::option::of(1u32..64),
        prop_oneof![Just(1.0f32), 0.01f32..1.0],
        any::<u64>(),
    );
    check(
        "multi_round_replicas_identical",
        b.name(),
        case,
        |(workers, rounds, n, tau, cap, scale, seed)| {
            let init = VecSpec {
                n,
                tau: 1.0,
                density: 0.5,
                specials: 0.0,
                seed,
            }
            .build();
            let grad = |w: usize, r: u64| {
                VecSpec {
                    n,
                    tau,
                    density: 0.05,
                    specials: 0.0,
                    seed: seed ^ ((w as u64) << 32) ^ r.wrapping_mul(0x9E37),
                }
                .build()
            };
            // The reference run.
            let mut ref_params = vec![init.clone(); workers];
            let mut ref_res = vec![vec![0.0f32; n]; workers];
            // The backend run.
            let mut params = Vec::new();
            let mut res = Vec::new();
            for _ in 0..workers {
                params.push(to_device(b, &init)?);
                res.push(dev(b.alloc(n))?);
            }
            let mut update = dev(b.alloc(n))?;
            for r in 0..rounds {
                let mut want_msgs = Vec::new();
                let mut got_msgs = Vec::new();
                for w in 0..workers {
                    let g = grad(w, r);
                    let mut p = EncodeParams::new(tau);
                    p.sender = w as u32;
                    p.round = r;
                    p.cap = cap;
                    Reference
                        .add_assign(&mut ref_res[w], &g)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut out = vec![0u8; wire::max_message_len(n)];
                    let s = Reference
                        .encode(&mut ref_res[w], &p, &mut out)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    want_msgs.push(out[..s.bytes].to_vec());
                    let gd = to_device(b, &g)?;
                    dev(b.add_assign(&mut res[w], &gd))?;
                    let mut out = vec![0x5Au8; wire::max_message_len(n)];
                    let s = dev(b.encode(&mut res[w], &p, &mut out))?;
                    got_msgs.push(out[..s.bytes].to_vec());
                }
                prop_assert!(got_msgs == want_msgs, "round {}: messages differ", r);
                for w in 0..workers {
                    let mut u = vec![0.0f32; n];
                    for m in &want_msgs {
                        let msg = MessageView::parse(m)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        Reference
                            .decode_add(&msg, &mut u)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                    Reference
                        .sub_scaled(&mut ref_params[w], &u, scale)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    // The round protocol's step: `update` holds zeros before and after.
                    let views = got_msgs
                        .iter()
                        .map(|m| MessageView::parse(m))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    dev(b.apply_messages(views.into_iter(), &mut update, &mut params[w], scale))?;
                }
            }
            dev(b.sync())?;
            let first = bits(&to_host(b, &params[0])?);
            for w in 0..workers {
                prop_assert_eq!(
                    &bits(&to_host(b, &params[w])?),
                    &first,
                    "replica {} diverged",
                    w
                );
                prop_assert_eq!(
                    &bits(&ref_params[w]),
                    &first,
                    "replica {} differs from the reference",
                    w
                );
                prop_assert_eq!(
                    bits(&to_host(b, &res[w])?),
                    bits(&ref_res[w]),
                    "residual {}",
                    w
                );
            }
            Ok(())
        },
    );
}

/// One round's local packets as a [`Recorder`] keeps them: the round, and each packet's
/// sender id and bytes.
type RecordedRound = (u64, Vec<(u32, Vec<u8>)>);

/// A [`Transport`] for one node that keeps a copy of every round's local packets (sender id
/// and bytes, in the canonical order the accumulator hands them over).
#[derive(Debug, Default)]
struct Recorder {
    rounds: Vec<RecordedRound>,
}

impl Transport for Recorder {
    type Error = gradcast_core::Error;

    fn max_remote_packets(&self) -> usize {
        0
    }

    fn is_remote_sender(&self, _sender: u32) -> bool {
        false
    }

    fn exchange(
        &mut self,
        round: u64,
        local: &LocalPackets<'_>,
        _remote: &mut RemotePackets<'_>,
    ) -> Result<(), gradcast_core::Error> {
        let packets = local.iter().map(|p| (p.sender, p.bytes.to_vec())).collect();
        self.rounds.push((round, packets));
        Ok(())
    }
}

/// One accumulator run: the packets of every round, and every party's parameters, residual,
/// cumulative and last round's encoder statistics at the end (all on the host).
#[derive(Debug, PartialEq)]
struct AccOutcome {
    packets: Vec<RecordedRound>,
    params: Vec<Vec<u32>>,
    residuals: Vec<Vec<u32>>,
    cumulative: Vec<CumulativeStats>,
    last: Vec<Option<RoundStats>>,
}

/// How the parties of an accumulator run behave.
#[derive(Clone, Debug)]
struct AccCase {
    spec: EncoderSpec,
    rounds: u64,
    step: Step,
    first_sender: u32,
    first_round: u64,
    /// `contributes[round][party]`: store an update, or abstain.
    contributes: Vec<[bool; PARTIES]>,
}

/// P, the number of parties of the accumulator property.
const PARTIES: usize = 3;

/// Runs `case` through an [`Accumulator`] on `backend`: one thread per party; every round
/// each party stores its update (or abstains) and applies the round.
fn run_accumulator<B>(backend: B, case: &AccCase) -> Result<AccOutcome, TestCaseError>
where
    B: Backend + Sync,
    B::Buffer: Send,
{
    let n = case.spec.n();
    let mut config = RoundConfig::new(PARTIES, n);
    config.step = case.step;
    config.first_sender = case.first_sender;
    config.first_round = case.first_round;
    // The default clock and timeout: a hung round fails the case instead of hanging the
    // test (nothing compared below depends on time).
    let encoders = (0..PARTIES).map(|_| case.spec.build());
    let mut acc: Accumulator<B, SpecEncoder, Recorder, Park> =
        Accumulator::new(backend, config, encoders, Recorder::default())
            .map_err(|e| TestCaseError::fail(format!("Accumulator::new: {e}")))?;
    let b = acc.backend();
    let init = VecSpec {
        n,
        tau: case.spec.scale * 8.0,
        density: 0.5,
        specials: 0.0,
        seed: case.spec.seed.rotate_left(17),
    }
    .build();
    let mut params = Vec::new();
    let mut updates = Vec::new();
    for party in 0..PARTIES {
        params.push(to_device(b, &init)?);
        let mut mine = Vec::new();
        for r in 0..case.rounds {
            mine.push(to_device(b, &case.spec.update(party, r))?);
        }
        updates.push(mine);
    }
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = acc
            .parties()
            .zip(params.iter_mut())
            .zip(updates)
            .map(|((mut party, params), updates)| {
                s.spawn(move || -> Result<(), String> {
                    let i = party.index();
                    for (r, update) in updates.iter().enumerate() {
                        let ticket = Ticket::new(case.first_round + r as u64, PARTIES);
                        if case.contributes[r][i] {
                            party.store_update(ticket, update)
                        } else {
                            party.abstain(ticket).map(|()| Published::default())
                        }
                        .map_err(|e| format!("party {i} round {r}: {e}"))?;
                        party
                            .apply_update(params)
                            .map_err(|e| format!("party {i} round {r}: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a party panicked".into())))
            .collect()
    });
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(TestCaseError::fail(e));
    }
    let b = acc.backend();
    dev(b.sync())?;
    let mut out = AccOutcome {
        packets: Vec::new(),
        params: Vec::new(),
        residuals: Vec::new(),
        cumulative: Vec::new(),
        last: Vec::new(),
    };
    for (i, p) in params.iter().enumerate() {
        out.params.push(bits(&to_host(b, p)?));
        out.residuals.push(bits(&to_host(b, acc.residual(i))?));
        out.cumulative.push(*acc.encoder(i).cumulative());
        out.last.push(acc.encoder(i).last_round().copied());
    }
    out.packets = std::mem::take(&mut acc.transport().rounds);
    Ok(out)
}

/// Property: a round of the round protocol's [`Accumulator`] with P = 3 parties on three
/// threads, each with a policy-driven encoder (any policy, segments, warm-up, clipping), over
/// up to four rounds in which each party contributes or abstains, with the sum or the mean:
/// every round's packets are byte-identical to those of the same run on the reference
/// backend, the three replicas are bit-identical to each other and to the reference's, and
/// so are the residuals and the encoders' statistics. A quarter of
/// [`DEFAULT_CASES`](crate::DEFAULT_CASES): each case starts six threads.
pub fn accumulator_round_matches_reference<B>(b: &B)
where
    B: Backend + Sync,
    B::Buffer: Send,
{
    let len = prop_oneof![3 => 1usize..=64, 2 => 65usize..=1500];
    let case = (
        strategies::encoder_spec(len),
        1u64..=4,
        prop_oneof![Just(Step::Sum), Just(Step::Mean)],
        0u32..1000,
        0u64..1000,
        prop::collection::vec(prop::array::uniform3(prop::bool::weighted(0.8)), 4),
    )
        .prop_map(
            |(spec, rounds, step, first_sender, first_round, contributes)| AccCase {
                spec,
                rounds,
                step,
                first_sender,
                first_round,
                contributes,
            },
        );
    check_fraction(
        "accumulator_round_matches_reference",
        b.name(),
        4,
        case,
        |case| {
            let want = run_accumulator(Reference, &case)?;
            let got = run_accumulator(ByRef(b), &case)?;
            prop_assert_eq!(want.packets.len() as u64, case.rounds);
            for (r, (g, w)) in got.packets.iter().zip(&want.packets).enumerate() {
                prop_assert!(g == w, "{}: round {} packets differ", b.name(), r);
            }
            for i in 1..PARTIES {
                prop_assert_eq!(&want.params[i], &want.params[0], "reference replica {}", i);
                prop_assert_eq!(&got.params[i], &got.params[0], "replica {} diverged", i);
            }
            prop_assert_eq!(
                &got.params,
                &want.params,
                "replicas differ from the reference"
            );
            prop_assert_eq!(&got.residuals, &want.residuals, "residuals differ");
            prop_assert_eq!(&got.cumulative, &want.cumulative, "statistics differ");
            prop_assert_eq!(&got.last, &want.last, "last rounds' statistics differ");
            Ok(())
        },
    );
}

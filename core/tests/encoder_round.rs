//! The encoder round by round (issue 3): mass conservation, clipping and its accounting,
//! warm-up, segments, statistics, the PartyEncoder seam, and errors that change nothing.

extern crate alloc;

mod encoder_common;

use alloc::collections::BTreeSet;
use gradcast_core::{CodecError, ConfigError, WireError};

use encoder_common::{Driver, dyadic_update, update};
use gradcast_core::backend::Reference;
use gradcast_core::encoder::{
    Adaptive, ByteBudget, Clipping, Encoder, EncoderConfig, Fixed, Policy, Segment, TargetSparsity,
    ThresholdPolicy, Warmup,
};
use gradcast_core::packet::{Messages, PartyEncoder};
use gradcast_core::wire::{self, Encoding, MessageView};
use gradcast_core::{Classify, Error, ErrorKind};

fn fixed(tau: f32) -> Policy {
    Fixed::new(tau).unwrap().into()
}

fn config(clipping: Option<Clipping>, warmup: Warmup) -> EncoderConfig {
    EncoderConfig {
        clipping,
        warmup,
        residual_stats: true,
    }
}

#[test]
fn no_mass_lost_exactly_with_dyadic_values() {
    // Power-of-two threshold and dyadic updates: every f32 operation is exact, so
    // updates == decoded + residual bit for bit, including across sparse/bitmap switches.
    let n = 1000;
    let enc: Encoder = Encoder::new(n, fixed(1.0 / 16.0), EncoderConfig::default()).unwrap();
    let mut d = Driver::new(enc);
    let mut encodings = BTreeSet::new();
    for r in 0..60 {
        // Alternate quiet and busy rounds so both encodings occur (scaling by powers of two
        // keeps the values dyadic).
        let mut u = dyadic_update(1, r, n, false);
        let scale = if r % 5 == 0 { 4.0 } else { 1.0 / 8.0 };
        for v in &mut u {
            *v *= scale;
        }
        let (stats, _) = d.step(&u);
        encodings.insert(stats.encoding.unwrap().name());
    }
    assert!(
        encodings.contains("sparse") && encodings.contains("bitmap"),
        "{encodings:?}"
    );
    assert!(d.missing().iter().all(|&m| m == 0.0));
    assert_eq!(d.encoder.cumulative().clipped_mass, 0.0);
}

#[test]
fn no_mass_lost_with_adaptive_segments_and_warmup() {
    // Arbitrary floats: conservation holds up to f32 rounding of each add and debit.
    for warmup in [
        Warmup::None,
        Warmup::Dense { rounds: 3 },
        Warmup::Bitmap { rounds: 3 },
        Warmup::Ramp {
            rounds: 5,
            start: 0.25,
            end: 0.001,
        },
    ] {
        // A dense or bitmap warm-up needs a budget that holds its messages.
        let budget = match warmup {
            Warmup::Dense { .. } | Warmup::Bitmap { .. } => wire::dense_message_len(2000),
            _ => 48 + 4 * 30,
        };
        let segs = [
            Segment {
                id: 10,
                len: 700,
                policy: Policy::from(Adaptive::default()),
            },
            Segment {
                id: 11,
                len: 300,
                policy: TargetSparsity::new(1e-3, 1e-2, 0.9).unwrap().into(),
            },
            Segment {
                id: 12,
                len: 2000,
                policy: ByteBudget::new(budget).unwrap().into(),
            },
        ];
        let enc: Encoder<Policy, 4> = Encoder::segmented(config(None, warmup), segs).unwrap();
        let mut d = Driver::new(enc);
        let mut abs_updates = vec![0.0f64; 3000];
        for r in 0..40 {
            let u = update(3, r, 3000, 1e-3);
            for (a, v) in abs_updates.iter_mut().zip(&u) {
                *a += v.abs() as f64;
            }
            d.step(&u);
        }
        for (i, m) in d.missing().iter().enumerate() {
            // Two roundings per round (add, debit), each at most half an ulp of the bound.
            let bound = abs_updates[i] + d.decoded[i].abs() + d.residual[i].abs() as f64;
            let tol = 41.0 * bound * 2f64.powi(-23);
            assert!(
                m.abs() <= tol,
                "{warmup:?}: element {i} lost {m} (tol {tol})"
            );
        }
    }
}

#[test]
fn clipping_semantics_and_accounting() {
    // Positive dyadic updates: the residual is never negative, so every clip removes positive
    // mass and the accounts match exactly.
    let n = 500;
    let tau = 1.0 / 256.0;
    let clip = Clipping {
        factor: 2.0,
        every: 3,
    };
    let enc: Encoder = Encoder::new(n, fixed(tau), config(Some(clip), Warmup::None)).unwrap();
    let mut d = Driver::new(enc);
    let mut clipped_rounds = vec![];
    for r in 0..20u64 {
        let (stats, _) = d.step(&dyadic_update(5, r, n, true));
        assert_eq!(stats.index, r);
        let max = d.residual.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(stats.residual_max, Some(max));
        if r > 0 && r % 3 == 0 {
            // Clipped to +-C tau with the tau just used.
            assert!(max <= 2.0 * tau, "round {r}: max {max}");
            if stats.clipped_elements > 0 {
                clipped_rounds.push(r);
            }
        } else {
            assert_eq!(stats.clipped_elements, 0, "round {r}");
            assert_eq!(stats.clipped_mass, 0.0, "round {r}");
        }
    }
    assert!(!clipped_rounds.is_empty());
    // Never lost silently: what is missing is exactly the clipped mass.
    let missing: f64 = d.missing().iter().sum();
    assert!(d.missing().iter().all(|&m| m >= 0.0));
    let c = d.encoder.cumulative();
    assert_eq!(missing, c.clipped_mass);
    assert!(c.clipped_elements > 0);
    assert!(d.missing().iter().filter(|&&m| m > 0.0).count() as u64 <= c.clipped_elements);
}

#[test]
fn clipping_schedule_is_dl4j() {
    let c = Clipping::DL4J;
    assert_eq!((c.factor, c.every), (5.0, 5));
    let applied: Vec<u64> = (0..21).filter(|&i| c.applies(i)).collect();
    assert_eq!(applied, [5, 10, 15, 20]);
    // Validation.
    for bad in [
        Clipping {
            factor: 0.5,
            every: 5,
        },
        Clipping {
            factor: f32::NAN,
            every: 5,
        },
        Clipping {
            factor: 5.0,
            every: 0,
        },
    ] {
        let e =
            Encoder::<Policy>::new(10, fixed(1.0), config(Some(bad), Warmup::None)).unwrap_err();
        assert!(
            matches!(e, Error::Config(ConfigError::InvalidValue { .. })),
            "{e:?}"
        );
    }
    // Default: off.
    assert_eq!(EncoderConfig::default().clipping, None);
    // Residual statistics cost a pass over the residual (a download on a device): only
    // when asked.
    assert!(!EncoderConfig::default().residual_stats);
}

#[test]
fn clipping_uses_each_segments_tau() {
    let segs = [
        Segment {
            id: 0,
            len: 100,
            policy: fixed(0.5),
        },
        Segment {
            id: 1,
            len: 100,
            policy: fixed(0.125),
        },
    ];
    let clip = Clipping {
        factor: 1.0,
        every: 1,
    };
    let enc: Encoder<Policy, 2> =
        Encoder::segmented(config(Some(clip), Warmup::None), segs).unwrap();
    let mut d = Driver::new(enc);
    d.step(&vec![0.0; 200]);
    d.step(&vec![3.0; 200]);
    // After round 1: one quantum sent (3 - tau), then clipped to 1 * tau.
    assert!(d.residual[..100].iter().all(|&v| v == 0.5));
    assert!(d.residual[100..].iter().all(|&v| v == 0.125));
    let s: Vec<_> = d.encoder.segment_stats().copied().collect();
    assert_eq!(s[0].clipped_mass, 100.0 * (2.5 - 0.5));
    assert_eq!(s[1].clipped_mass, 100.0 * (2.875 - 0.125));
}

#[test]
fn dense_warmup() {
    let n = 300;
    let enc: Encoder = Encoder::new(
        n,
        Adaptive::default().into(),
        config(None, Warmup::Dense { rounds: 3 }),
    )
    .unwrap();
    assert_eq!(enc.max_packet_bytes(), wire::dense_message_len(n));
    let mut d = Driver::new(enc);
    for r in 0..3 {
        let u = update(9, r, n, 1e-2);
        let (stats, packet) = d.step(&u);
        assert!(stats.warmup);
        assert_eq!(stats.encoding, Some(Encoding::Dense));
        assert!(stats.tau.is_nan());
        assert_eq!(stats.entries, n as u64);
        assert_eq!(stats.message_bytes, wire::dense_message_len(n));
        // The residual is emptied exactly; the message carries the values.
        assert!(d.residual.iter().all(|&v| v == 0.0));
        let msg = MessageView::parse(&packet).unwrap();
        assert_eq!(msg.dense_values().collect::<Vec<_>>(), u);
    }
    // The policy was not consulted: round 3 is its first call (tau0).
    assert!(d.encoder.policy(0).unwrap().state().tau.is_nan());
    let (stats, _) = d.step(&update(9, 3, n, 1e-2));
    assert!(!stats.warmup);
    assert_eq!(stats.tau, 1e-3);
    assert_ne!(stats.encoding, Some(Encoding::Dense));
    let c = d.encoder.cumulative();
    assert_eq!((c.rounds, c.warmup_rounds, c.dense_messages), (4, 3, 3));
}

#[test]
fn bitmap_warmup_counts_true_density() {
    let n = 4000;
    let enc: Encoder = Encoder::new(
        n,
        Adaptive::default().into(),
        config(None, Warmup::Bitmap { rounds: 2 }),
    )
    .unwrap();
    let mut d = Driver::new(enc);
    for r in 0..2 {
        let (stats, _) = d.step(&update(4, r, n, 1e-4));
        assert_eq!(stats.encoding, Some(Encoding::Bitmap));
        assert!(stats.warmup);
        // The policy sees entries / N, not DL4J's 1/16 for a bitmap round.
        let st = d.encoder.policy(0).unwrap().state();
        assert_eq!(st.sparsity, stats.entries as f64 / n as f64);
    }
    let (stats, _) = d.step(&update(4, 2, n, 1e-4));
    assert!(!stats.warmup);
    assert_eq!(stats.encoding, Some(Encoding::Sparse));
}

#[test]
fn ramp_warmup_follows_the_density_schedule() {
    let n = 10_000;
    let (rounds, start, end) = (5u32, 0.25f64, 0.001f64);
    let enc: Encoder = Encoder::new(
        n,
        Adaptive::default().into(),
        config(None, Warmup::Ramp { rounds, start, end }),
    )
    .unwrap();
    let mut d = Driver::new(enc);
    let q = (end / start).powf(1.0 / (rounds - 1) as f64);
    let mut last_tau = 0.0;
    for r in 0..rounds as u64 {
        let (stats, _) = d.step(&update(11, r, n, 1e-3));
        let want = start * q.powi(r as i32);
        let k = (want * n as f64).ceil() as u64;
        assert!(stats.warmup);
        // (+1: the factor's last bits may tip a ceiling; the last round is exact.)
        let slack = if r + 1 == rounds as u64 { 0 } else { 1 };
        assert!(
            stats.entries <= k + slack,
            "round {r}: {} > {k}",
            stats.entries
        );
        assert!(
            stats.entries as f64 >= 0.99 * k as f64,
            "round {r}: {} << {k}",
            stats.entries
        );
        // The threshold is one the k-th largest magnitude reaches.
        last_tau = stats.tau;
        // The policy adopted it.
        assert_eq!(d.encoder.policy(0).unwrap().state().tau, stats.tau as f64);
    }
    // After the ramp the policy continues from the ramp's last threshold.
    let (stats, _) = d.step(&update(11, rounds as u64, n, 1e-3));
    assert!(!stats.warmup);
    let ratio = stats.tau as f64 / last_tau as f64;
    assert!((ratio - 1.0).abs() < 0.05, "{ratio}");
}

#[test]
fn ramp_round_on_an_empty_residual_sends_nothing() {
    let enc: Encoder = Encoder::new(
        100,
        Adaptive::default().into(),
        config(
            None,
            Warmup::Ramp {
                rounds: 3,
                start: 0.5,
                end: 0.1,
            },
        ),
    )
    .unwrap();
    let mut d = Driver::new(enc);
    let (stats, packet) = d.step(&[0.0; 100]);
    assert_eq!(stats.entries, 0);
    assert_eq!(packet.len(), 48);
    // Nothing was learnt: the policy still has no threshold.
    assert!(d.encoder.policy(0).unwrap().state().tau.is_nan());
    // The next ramp round works from the new residual.
    let (stats, _) = d.step(&update(1, 1, 100, 1.0));
    assert!(stats.entries > 0 && stats.entries <= 23);
    assert_eq!(d.encoder.policy(0).unwrap().state().tau, stats.tau as f64);
}

#[test]
fn warmup_must_fit_a_byte_budget() {
    let policy: Policy = ByteBudget::new(200).unwrap().into();
    let e = Encoder::<Policy>::new(1000, policy, config(None, Warmup::Dense { rounds: 2 }))
        .unwrap_err();
    assert_eq!(
        e,
        Error::Config(ConfigError::WarmupOverBudget {
            segment: 0,
            needed: wire::dense_message_len(1000),
            budget: 200
        })
    );
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        Encoder::<Policy>::new(1000, policy, config(None, Warmup::Bitmap { rounds: 2 })).is_err()
    );
    // A ramp respects the budget (its cap is tightened by the budget's).
    let enc: Encoder = Encoder::new(
        1000,
        policy,
        config(
            None,
            Warmup::Ramp {
                rounds: 3,
                start: 0.5,
                end: 0.1,
            },
        ),
    )
    .unwrap();
    let mut d = Driver::new(enc);
    for r in 0..5 {
        let (stats, _) = d.step(&update(2, r, 1000, 1.0));
        assert!(stats.message_bytes <= 200);
    }
    // Bad ramps.
    for w in [
        Warmup::Ramp {
            rounds: 0,
            start: 0.5,
            end: 0.1,
        },
        Warmup::Ramp {
            rounds: 3,
            start: 0.0,
            end: 0.1,
        },
        Warmup::Ramp {
            rounds: 3,
            start: 0.5,
            end: 1.5,
        },
    ] {
        assert!(matches!(
            Encoder::<Policy>::new(10, fixed(1.0), config(None, w)),
            Err(Error::Config(ConfigError::InvalidValue { .. }))
        ));
    }
}

#[test]
fn statistics_are_consistent() {
    let n = 2000;
    let enc: Encoder = Encoder::new(
        n,
        TargetSparsity::new(1e-3, 0.01, 0.9).unwrap().into(),
        EncoderConfig {
            residual_stats: true,
            ..EncoderConfig::default()
        },
    )
    .unwrap();
    let mut d = Driver::new(enc);
    let mut bytes = 0u64;
    let mut entries = 0u64;
    for r in 0..30 {
        let (s, packet) = d.step(&update(8, r, n, 1e-3));
        assert_eq!(s.message_bytes, packet.len());
        assert_eq!(s.dense_bytes, 4 * n as u64);
        assert_eq!(s.n, n as u64);
        assert_eq!(s.messages, 1);
        assert_eq!(s.density, s.entries as f64 / n as f64);
        let msg = MessageView::parse(&packet).unwrap();
        assert_eq!(msg.count() as u64, s.entries);
        assert_eq!(msg.tau(), s.tau);
        assert_eq!(s.tau, s.tau_max);
        assert_eq!(Some(msg.encoding()), s.encoding);
        assert!(s.candidates >= s.entries);
        let sum_sq: f64 = d.residual.iter().map(|&v| v as f64 * v as f64).sum();
        let l2 = s.residual_l2.expect("residual statistics are on");
        assert!((l2 - sum_sq.sqrt()).abs() <= 1e-12 * sum_sq.sqrt());
        assert_eq!(
            s.residual_max,
            Some(d.residual.iter().fold(0.0f32, |m, v| m.max(v.abs())))
        );
        let seg = d.encoder.segment_stats().next().unwrap();
        assert_eq!(seg.residual_sum_sq, Some(sum_sq));
        assert_eq!(seg.residual_l2, Some(l2));
        assert!((s.compression() - s.dense_bytes as f64 / s.message_bytes as f64).abs() < 1e-12);
        bytes += s.message_bytes as u64;
        entries += s.entries;
        assert_eq!(d.encoder.last_round(), Some(&s));
        let seg = d.encoder.segment_stats().next().unwrap();
        assert_eq!(
            (seg.entries, seg.message_bytes, seg.tau),
            (s.entries, s.message_bytes, s.tau)
        );
    }
    let c = d.encoder.cumulative();
    assert_eq!(c.rounds, 30);
    assert_eq!(c.message_bytes, bytes);
    assert_eq!(c.entries, entries);
    assert_eq!(c.dense_bytes, 30 * 4 * n as u64);
    assert_eq!(c.sparse_messages + c.bitmap_messages + c.dense_messages, 30);
    // Residual statistics can be turned off.
    let enc: Encoder = Encoder::new(
        n,
        fixed(1e-3),
        EncoderConfig {
            residual_stats: false,
            ..EncoderConfig::default()
        },
    )
    .unwrap();
    let mut d = Driver::new(enc);
    let (s, _) = d.step(&update(8, 0, n, 1e-3));
    assert_eq!((s.residual_l2, s.residual_max), (None, None));
    let seg = d.encoder.segment_stats().next().unwrap();
    assert_eq!(
        (seg.residual_sum_sq, seg.residual_l2, seg.residual_max),
        (None, None, None)
    );
}

#[test]
fn segments_one_message_each_in_order() {
    let segs = [
        Segment {
            id: 7,
            len: 100,
            policy: fixed(0.5),
        },
        Segment {
            id: 3,
            len: 50,
            policy: fixed(0.25),
        },
        Segment {
            id: 9,
            len: 40,
            policy: ByteBudget::new(52).unwrap().into(),
        },
    ];
    let enc: Encoder<Policy, 3> = Encoder::segmented(EncoderConfig::default(), segs).unwrap();
    assert_eq!(enc.n(), 190);
    assert!(enc.is_segmented());
    let infos: Vec<_> = enc.segments().map(|s| (s.id, s.offset, s.len)).collect();
    assert_eq!(infos, [(7, 0, 100), (3, 100, 50), (9, 150, 40)]);
    assert_eq!(
        enc.max_packet_bytes(),
        wire::max_message_len(100) + wire::max_message_len(50) + 52
    );
    let mut d = Driver::new(enc);
    let (stats, packet) = d.step(&vec![1.0; 190]);
    assert_eq!(stats.messages, 3);
    assert_eq!(stats.tau, 1e-3);
    assert_eq!(stats.tau_max, 0.5);
    let msgs: Vec<_> = Messages::new(&packet).map(|m| m.unwrap()).collect();
    assert_eq!(msgs.len(), 3);
    for (m, (id, offset, len)) in msgs.iter().zip(infos) {
        let h = m.header();
        assert!(h.is_segment());
        assert_eq!(
            (h.segment, h.offset as usize, h.n as usize),
            (id, offset, len)
        );
        assert_eq!(h.round, 0);
        assert_eq!(h.sender, 7);
    }
    assert_eq!(msgs[0].tau(), 0.5);
    assert_eq!(msgs[1].tau(), 0.25);
    // The budget segment: cap of one entry, message within 52 bytes.
    assert_eq!(msgs[2].count(), 1);
    assert_eq!(msgs[2].as_bytes().len(), 52);
    assert!(msgs[2].header().truncated());
    // Per-segment statistics, in packet order.
    let ids: Vec<u16> = d.encoder.segment_stats().map(|s| s.id).collect();
    assert_eq!(ids, [7, 3, 9]);
}

#[test]
fn unsegmented_messages_are_plain() {
    let enc: Encoder = Encoder::new(64, fixed(0.5), EncoderConfig::default()).unwrap();
    assert!(!enc.is_segmented());
    let mut d = Driver::new(enc);
    let (_, packet) = d.step(&vec![1.0; 64]);
    let m = MessageView::parse(&packet).unwrap();
    assert!(!m.header().is_segment());
    assert_eq!(m.n(), 64);
}

#[test]
fn bad_segment_layouts() {
    let s = |id, len| Segment {
        id,
        len,
        policy: fixed(1.0),
    };
    let cases: Vec<(Vec<Segment<Policy>>, usize)> = vec![
        (vec![], 0),
        (vec![s(1, 10), s(2, 0)], 1),
        (vec![s(1, 10), s(1, 10)], 1),
        (vec![s(1, 1), s(2, 1), s(3, 1)], 2), // capacity S = 2
    ];
    for (segs, index) in cases {
        let e = Encoder::<Policy, 2>::segmented(EncoderConfig::default(), segs).unwrap_err();
        match e {
            Error::Config(ConfigError::BadSegmentLayout { index: i, .. }) => assert_eq!(i, index),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    assert_eq!(
        Encoder::<Policy>::new(0, fixed(1.0), EncoderConfig::default()).unwrap_err(),
        Error::Wire(WireError::EmptyVector)
    );
    assert!(matches!(
        Encoder::<Policy>::new(1 << 31, fixed(1.0), EncoderConfig::default()),
        Err(Error::Wire(WireError::TooManyElements { .. }))
    ));
    assert!(matches!(
        Encoder::<Policy, 0>::new(1, fixed(1.0), EncoderConfig::default()),
        Err(Error::Config(ConfigError::BadSegmentLayout { .. }))
    ));
}

#[test]
fn errors_change_nothing() {
    let segs = [
        Segment {
            id: 0,
            len: 50,
            policy: Policy::from(Adaptive::default()),
        },
        Segment {
            id: 1,
            len: 50,
            policy: Adaptive::default().into(),
        },
    ];
    let enc: Encoder<Policy, 2> = Encoder::segmented(EncoderConfig::default(), segs).unwrap();
    let mut d = Driver::new(enc);
    d.step(&update(1, 0, 100, 1e-3));
    let b = Reference;
    let before_states = d.encoder.policy_states();
    let before_cum = *d.encoder.cumulative();
    // A NaN in the second segment: caught before the first segment commits.
    let mut residual = d.residual.clone();
    residual[0] = 5.0;
    residual[75] = f32::NAN;
    let snapshot = residual.clone();
    let mut out = vec![0u8; d.encoder.max_packet_bytes()];
    let e = d
        .encoder
        .encode(&b, &mut residual, 0, 1, &mut out)
        .unwrap_err();
    assert!(
        matches!(e, Error::Codec(CodecError::NonFinite { index: 75, .. })),
        "{e:?}"
    );
    assert_eq!(residual[0], 5.0);
    assert_eq!(
        residual.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        snapshot.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(d.encoder.policy_states(), before_states);
    assert_eq!(*d.encoder.cumulative(), before_cum);
    // Too small an output buffer.
    let mut small = vec![0u8; d.encoder.max_packet_bytes() - 1];
    let mut r2 = d.residual.clone();
    assert!(matches!(
        d.encoder.encode(&b, &mut r2, 0, 1, &mut small),
        Err(Error::Codec(CodecError::BufferTooSmall { .. }))
    ));
    assert_eq!(r2, d.residual);
    // A residual of another length.
    let mut short = vec![0.0f32; 99];
    let e = d
        .encoder
        .encode(&b, &mut short, 0, 1, &mut out)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SizeMismatch);
    assert_eq!(d.encoder.index(), 1);
    // And an unsegmented encoder with a NaN: the codec's own validation.
    let mut one: Encoder =
        Encoder::new(10, Adaptive::default().into(), EncoderConfig::default()).unwrap();
    let mut r = vec![1.0f32; 10];
    r[3] = f32::INFINITY;
    let mut out = vec![0u8; one.max_packet_bytes()];
    assert!(matches!(
        one.encode(&b, &mut r, 0, 0, &mut out),
        Err(Error::Codec(CodecError::NonFinite { index: 3, .. }))
    ));
    assert!(
        one.policy(0).unwrap().state().tau.is_nan(),
        "policy untouched"
    );
    assert_eq!(one.index(), 0);
}

#[test]
fn party_encoder_seam() {
    fn drive<E: PartyEncoder<Reference>>(
        e: &mut E,
        residual: &mut Vec<f32>,
        round: u64,
    ) -> Vec<u8> {
        let mut out = vec![0u8; e.max_packet_len(residual.len())];
        let len = e
            .encode_round(&Reference, residual, 4, round, &mut out)
            .unwrap();
        out.truncate(len);
        out
    }
    let segs = [
        Segment {
            id: 0,
            len: 30,
            policy: Policy::from(Adaptive::default()),
        },
        Segment {
            id: 1,
            len: 70,
            policy: fixed(0.1),
        },
    ];
    let mut a: Encoder<Policy, 2> = Encoder::segmented(EncoderConfig::default(), segs).unwrap();
    let mut b = a.clone();
    let mut ra = update(6, 0, 100, 0.1);
    let mut rb = ra.clone();
    for round in 0..5 {
        let pa = drive(&mut a, &mut ra, round);
        let stats = b
            .encode(&Reference, &mut rb, 4, round, &mut vec![0u8; 10_000])
            .unwrap();
        assert_eq!(pa.len(), stats.message_bytes);
        assert_eq!(gradcast_core::packet::validate(&pa).unwrap(), 2);
        for m in Messages::new(&pa) {
            assert_eq!(m.unwrap().header().sender, 4);
        }
    }
    assert_eq!(ra, rb);
}

#[test]
fn seeding_from_averaged_workers() {
    let mk = || -> Encoder<Policy, 2> {
        Encoder::segmented(
            EncoderConfig::default(),
            [
                Segment {
                    id: 0,
                    len: 500,
                    policy: Policy::from(Adaptive::default()),
                },
                Segment {
                    id: 1,
                    len: 500,
                    policy: TargetSparsity::default().into(),
                },
            ],
        )
        .unwrap()
    };
    let mut workers: Vec<Driver<Policy, 2>> = (0..3).map(|_| Driver::new(mk())).collect();
    for (w, d) in workers.iter_mut().enumerate() {
        for r in 0..10 {
            d.step(&update(w as u64 + 20, r, 1000, 1e-3 * (w + 1) as f32));
        }
    }
    let avg = Encoder::average_policies(workers.iter().map(|d| &d.encoder)).unwrap();
    assert_eq!(avg.len(), 2);
    for k in 0..2 {
        let taus: Vec<f64> = workers
            .iter()
            .map(|d| d.encoder.policy(k).unwrap().state().tau)
            .collect();
        let mean = taus.iter().sum::<f64>() / 3.0;
        assert!(((avg[k].tau - mean) / mean).abs() < 1e-15);
    }
    let mut fresh = mk();
    fresh.seed_policies(&avg).unwrap();
    assert_eq!(fresh.policy_states(), avg);
    assert!(matches!(
        fresh.seed_policies(&avg[..1]),
        Err(ConfigError::BadSegmentLayout { .. })
    ));
}

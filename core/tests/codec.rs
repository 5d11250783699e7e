//! Properties of the wire format and the reference codec (issue 2).
// A std test binary.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::codec::{self, EncodeParams, EncodingMode, SegmentRef};
use gradcast_core::wire::{self, Encoding, HEADER_LEN, MessageView};
use gradcast_core::{Classify, Error, ErrorKind, dl4j, kat};
use gradcast_core::{CodecError, WireError};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    // PROPTEST_CASES overrides the count (proptest reads it for the default config).
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

/// Residuals as small multiples of 2^-10 around a threshold of 2^-k (all arithmetic exact), or
/// arbitrary finite floats.
fn residual_strategy(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec((-40i32..=40).prop_map(|m| m as f32 / 16.0), 1..max_len),
        prop::collection::vec(
            prop_oneof![
                Just(0.0f32),
                -4.0f32..4.0,
                prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO
            ],
            1..max_len
        ),
    ]
}

/// A residual and a threshold in the regime where the reference's debit `x -+ tau` is exact
/// (so mass conservation holds bit for bit): every element within `[-2 tau, 2 tau]`
/// (Sterbenz's lemma), or a grid of multiples of 2^-4 with a power-of-two threshold.
fn exact_case(max_len: usize) -> impl Strategy<Value = (Vec<f32>, f32)> {
    prop_oneof![
        tau_strategy()
            .prop_filter("room for 2 tau", |t| *t <= f32::MAX / 2.0)
            .prop_flat_map(move |tau| {
                let elem = prop_oneof![
                    Just(tau),
                    Just(-tau),
                    Just(2.0 * tau),
                    Just(f32::from_bits(tau.to_bits().saturating_sub(1))),
                    (-2.0f32..=2.0).prop_map(move |u| u * tau),
                    prop::num::f32::SUBNORMAL | prop::num::f32::ZERO,
                ];
                (prop::collection::vec(elem, 1..max_len), Just(tau))
            }),
        (
            prop::collection::vec((-40i32..=40).prop_map(|m| m as f32 / 16.0), 1..max_len),
            prop_oneof![Just(1.0f32), Just(0.5), Just(0.0625), Just(2.0)],
        ),
    ]
}

fn tau_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(1.0f32),
        Just(0.5f32),
        Just(0.0625f32),
        1e-3f32..3.0,
        prop::num::f32::POSITIVE.prop_filter("finite, > 0", |t| t.is_finite() && *t > 0.0),
    ]
}

fn encode_vec(residual: &mut [f32], params: &EncodeParams) -> Result<Vec<u8>, Error> {
    let mut out =
        vec![0u8; wire::dense_message_len(residual.len()).max(HEADER_LEN + 4 * residual.len())];
    let s = codec::encode(residual, params, &mut out)?;
    out.truncate(s.bytes);
    Ok(out)
}

proptest! {
    #![proptest_config(config())]

    /// Round trip: the message parses, and decoding it adds exactly +-tau where elements were
    /// debited, and mass is conserved bit for bit: fl(decoded + after) == before.
    #[test]
    fn round_trip_and_mass_conservation(
        (before, tau) in exact_case(300), round in any::<u64>(),
        sender in any::<u32>(), cap in prop::option::of(0u32..50),
    ) {
        let mut after = before.clone();
        let params = EncodeParams { sender, round, cap, ..EncodeParams::new(tau) };
        let msg = encode_vec(&mut after, &params).unwrap();
        let view = MessageView::parse(&msg).unwrap();
        prop_assert_eq!(view.header().sender, sender);
        prop_assert_eq!(view.header().round, round);
        prop_assert_eq!(view.tau().to_bits(), tau.to_bits());
        let mut decoded = vec![0.0f32; before.len()];
        codec::decode_add(&view, &mut decoded).unwrap();
        for i in 0..before.len() {
            let sum = decoded[i] + after[i];
            // Mass conservation in f32 arithmetic, bit-exact (signed zeros compare equal).
            prop_assert!(sum == before[i],
                "i={} before={:e} after={:e} decoded={:e} tau={:e}", i, before[i], after[i], decoded[i], tau);
            // One quantum per element per message.
            prop_assert!(decoded[i] == 0.0 || decoded[i].abs() == tau);
            if decoded[i] == 0.0 {
                prop_assert_eq!(after[i].to_bits(), before[i].to_bits());
            }
        }
    }

    /// Outside the exact regime (|x| > 2 tau and x - tau not representable), the debit rounds:
    /// the mass error of an element is at most half an ulp of its new residual, never more,
    /// and elements not sent are untouched bit for bit.
    #[test]
    fn mass_error_is_bounded_for_any_floats(before in residual_strategy(300), tau in tau_strategy()) {
        let mut after = before.clone();
        let msg = encode_vec(&mut after, &EncodeParams::new(tau)).unwrap();
        let view = MessageView::parse(&msg).unwrap();
        let mut decoded = vec![0.0f32; before.len()];
        codec::decode_add(&view, &mut decoded).unwrap();
        for i in 0..before.len() {
            if decoded[i] == 0.0 {
                prop_assert_eq!(after[i].to_bits(), before[i].to_bits());
                continue;
            }
            let err = (decoded[i] as f64 + after[i] as f64) - before[i] as f64;
            let ulp = (f32::from_bits(after[i].abs().to_bits() + 1) - after[i].abs()) as f64;
            prop_assert!(err.abs() <= ulp / 2.0, "i={} err={:e} ulp={:e}", i, err, ulp);
            if before[i].abs() <= 2.0 * tau {
                prop_assert_eq!(err, 0.0);
            }
        }
    }

    /// The threshold is inclusive: with no cap, exactly the elements with |x| >= tau are sent.
    #[test]
    fn inclusive_threshold(before in residual_strategy(200), pick in any::<prop::sample::Index>()) {
        let tau = before[pick.index(before.len())].abs();
        prop_assume!(tau.is_normal());
        let mut after = before.clone();
        let msg = encode_vec(&mut after, &EncodeParams::new(tau)).unwrap();
        let view = MessageView::parse(&msg).unwrap();
        let mut decoded = vec![0.0f32; before.len()];
        codec::decode_add(&view, &mut decoded).unwrap();
        for i in 0..before.len() {
            prop_assert_eq!(decoded[i] != 0.0, before[i].abs() >= tau, "i={}", i);
        }
        prop_assert_eq!(view.count() as usize, codec::count(&before, tau).unwrap());
        // The element exactly at tau is sent, the next float below is not.
        let below = f32::from_bits(tau.to_bits() - 1);
        let mut v = vec![tau, below];
        let m = encode_vec(&mut v, &EncodeParams::new(tau)).unwrap();
        prop_assert_eq!(MessageView::parse(&m).unwrap().count(), 1);
        prop_assert_eq!(v[1].to_bits(), below.to_bits());
    }

    /// The encoding choice: sparse iff 4K <= ceil(N/4); and the message has the exact length.
    #[test]
    fn encoding_choice(before in residual_strategy(400), tau in tau_strategy()) {
        let k = codec::count(&before, tau).unwrap();
        let mut after = before.clone();
        let msg = encode_vec(&mut after, &EncodeParams::new(tau)).unwrap();
        let view = MessageView::parse(&msg).unwrap();
        let n = before.len();
        let want = if 4 * k <= n.div_ceil(4) { Encoding::Sparse } else { Encoding::Bitmap };
        prop_assert_eq!(view.encoding(), want);
        prop_assert_eq!(msg.len(), wire::message_len(want, n, k));
        prop_assert!(msg.len() <= wire::max_message_len(n));
        // Forced modes produce the same update.
        for mode in [EncodingMode::Sparse, EncodingMode::Bitmap] {
            let mut a2 = before.clone();
            let m2 = encode_vec(&mut a2, &EncodeParams { mode, ..EncodeParams::new(tau) }).unwrap();
            let bits_a: Vec<u32> = after.iter().map(|x| x.to_bits()).collect();
            let bits_b: Vec<u32> = a2.iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(bits_a, bits_b);
            let v2 = MessageView::parse(&m2).unwrap();
            let mut d1 = vec![0.0f32; n];
            let mut d2 = vec![0.0f32; n];
            codec::decode_add(&view, &mut d1).unwrap();
            codec::decode_add(&v2, &mut d2).unwrap();
            prop_assert_eq!(d1, d2);
        }
    }

    /// The cap: exactly min(count, cap) entries; the chosen ones are the first met scanning
    /// cyclically from cap_start(round, n); the rest stays in the residual untouched.
    #[test]
    fn cap_is_honoured(before in residual_strategy(300), tau in tau_strategy(), cap in 0u32..40, round in any::<u64>()) {
        let n = before.len();
        let candidates: Vec<usize> = (0..n).filter(|&i| before[i].abs() >= tau).collect();
        let mut after = before.clone();
        let params = EncodeParams { cap: Some(cap), round, ..EncodeParams::new(tau) };
        let msg = encode_vec(&mut after, &params).unwrap();
        let view = MessageView::parse(&msg).unwrap();
        let k = candidates.len().min(cap as usize);
        prop_assert_eq!(view.count() as usize, k);
        prop_assert_eq!(view.header().truncated(), k < candidates.len());
        let start = codec::cap_start(round, n);
        let mut order: Vec<usize> = candidates.iter().copied().filter(|&i| i >= start).collect();
        order.extend(candidates.iter().copied().filter(|&i| i < start));
        let chosen: std::collections::BTreeSet<usize> = order.into_iter().take(k).collect();
        let mut decoded = vec![0.0f32; n];
        codec::decode_add(&view, &mut decoded).unwrap();
        for i in 0..n {
            prop_assert_eq!(decoded[i] != 0.0, chosen.contains(&i), "i={}", i);
            if !chosen.contains(&i) {
                prop_assert_eq!(after[i].to_bits(), before[i].to_bits());
            }
        }
    }

    /// The cap's start offset rotates: over many rounds every region of the vector is served
    /// first, so low indices are not favoured.
    #[test]
    fn cap_start_spreads(n in 4usize..10_000) {
        let mut hits = [0usize; 4];
        for r in 0..400u64 {
            let s = codec::cap_start(r, n);
            prop_assert!(s < n);
            hits[s * 4 / n] += 1;
        }
        for h in hits {
            prop_assert!(h >= 40, "quarter hit {} times of 400: {:?}", h, hits);
        }
    }

    /// Random bytes never panic the parser and never parse as valid unless they are.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = MessageView::parse(&bytes);
        let _ = gradcast_core::packet::validate(&bytes);
        let _ = dl4j::Dl4jView::parse(&bytes);
        let mut out = vec![0u8; 512];
        let _ = dl4j::import(&bytes, 0, 0, &mut out);
    }

    /// Random mutations of a valid message are rejected (or, if the checksum happens to be
    /// re-valid, still decode without panicking), never accepted silently as another message.
    #[test]
    fn mutations_are_rejected(before in residual_strategy(100), tau in tau_strategy(),
                              pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut after = before.clone();
        let mut msg = encode_vec(&mut after, &EncodeParams::new(tau)).unwrap();
        let i = pos.index(msg.len());
        msg[i] ^= xor;
        let r = MessageView::parse(&msg);
        // CRC-32C detects every error burst of up to 32 bits: a single corrupted byte is
        // always caught, by a field check or by the checksum.
        prop_assert!(r.is_err(), "byte {} ^ {:#x} accepted", i, xor);
        let kind = r.unwrap_err().kind();
        prop_assert!(kind == ErrorKind::Malformed || kind == ErrorKind::Checksum);
        // Truncations and extensions are rejected too.
        let mut ok = msg.clone();
        ok[i] ^= xor;
        prop_assert!(MessageView::parse(&ok[..ok.len() - 1]).is_err());
        let mut longer = ok.clone();
        longer.push(0);
        let longer_rejected = matches!(MessageView::parse(&longer), Err(WireError::LengthMismatch { .. }));
        prop_assert!(longer_rejected, "trailing byte accepted");
    }

    /// DL4J export then import gives back the same native message, byte for byte; and DL4J
    /// buffers in arbitrary sparse order import to the sorted native message.
    #[test]
    fn dl4j_round_trips(before in residual_strategy(300), tau in tau_strategy(), sender in any::<u32>(), round in any::<u64>()) {
        let mut after = before.clone();
        let msg = encode_vec(&mut after, &EncodeParams { sender, round, ..EncodeParams::new(tau) }).unwrap();
        let view = MessageView::parse(&msg).unwrap();
        let mut d = vec![0u8; dl4j::export_len(&view).unwrap()];
        let len = dl4j::export(&view, &mut d).unwrap();
        prop_assert_eq!(len, d.len());
        let dv = dl4j::Dl4jView::parse(&d).unwrap();
        prop_assert_eq!(dv.n() as usize, before.len());
        let mut back = vec![0u8; dv.native_len()];
        let blen = dl4j::import(&d, sender, round, &mut back).unwrap();
        prop_assert_eq!(&back[..blen], &msg[..]);
        if view.encoding() == Encoding::Sparse && view.count() > 1 {
            // Reverse the entries (DL4J's CPU encoder has no order) and import again.
            let k = view.count() as usize;
            let mut rev = d.clone();
            for j in 0..k {
                let src = 16 + 4 * (k - 1 - j);
                rev[16 + 4 * j..16 + 4 * j + 4].copy_from_slice(&d[src..src + 4]);
            }
            let mut back2 = vec![0u8; dv.native_len()];
            dl4j::import(&rev, sender, round, &mut back2).unwrap();
            prop_assert_eq!(&back2[..], &msg[..]);
        }
    }

    /// A segment message covers exactly its range and fits only vectors that contain it.
    #[test]
    fn segments((before, tau) in exact_case(200), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let n = before.len();
        let (x, y) = (a.index(n), b.index(n));
        let (lo, hi) = (x.min(y), x.max(y) + 1);
        let mut after = before.clone();
        let seg = SegmentRef { id: 3, offset: lo, len: hi - lo };
        let msg = encode_vec(&mut after, &EncodeParams { segment: Some(seg), ..EncodeParams::new(tau) }).unwrap();
        let view = MessageView::parse(&msg).unwrap();
        prop_assert!(view.header().is_segment());
        prop_assert_eq!(view.header().segment, 3);
        let mut decoded = vec![0.0f32; n];
        codec::decode_add(&view, &mut decoded).unwrap();
        for i in 0..n {
            if i < lo || i >= hi {
                prop_assert_eq!(after[i].to_bits(), before[i].to_bits());
                prop_assert_eq!(decoded[i], 0.0);
            }
            prop_assert!(decoded[i] + after[i] == before[i]);
        }
        let mut short = vec![0.0f32; hi - 1];
        let short_rejected = matches!(codec::decode_add(&view, &mut short), Err(Error::Codec(CodecError::TargetSizeMismatch { .. })));
        prop_assert!(short_rejected, "short target accepted");
    }
}

#[test]
fn known_answer_vectors() {
    let vectors = kat::vectors();
    assert!(vectors.len() >= 4, "FORMAT.md promises at least 4 vectors");
    for v in vectors {
        let mut r = v.residual.clone();
        let mut out = vec![0xA5u8; v.message.len() + 64];
        let s = codec::encode(&mut r, &v.params, &mut out).unwrap();
        assert_eq!(&out[..s.bytes], &v.message[..], "{}: message bytes", v.name);
        let got: Vec<u32> = r.iter().map(|x| x.to_bits()).collect();
        let want: Vec<u32> = v.residual_after.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want, "{}: residual after", v.name);
        let view = MessageView::parse(&v.message).unwrap();
        let mut d = vec![0.0f32; v.residual.len()];
        codec::decode_add(&view, &mut d).unwrap();
        let got: Vec<u32> = d.iter().map(|x| x.to_bits()).collect();
        let want: Vec<u32> = v.decoded.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want, "{}: decoded", v.name);
    }
}

/// Builds a valid sparse message by hand (independently of the encoder) with entries given.
fn hand_sparse(n: u32, entries: &[i32], tau: f32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"GCST");
    m.push(1);
    m.push(0);
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(&n.to_le_bytes());
    m.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    m.extend_from_slice(&tau.to_bits().to_le_bytes());
    m.extend_from_slice(&[0u8; 4]); // sender
    m.extend_from_slice(&[0u8; 8]); // round
    m.extend_from_slice(&[0u8; 8]); // segment, reserved, offset
    m.extend_from_slice(&(4 * entries.len() as u32).to_le_bytes());
    let mut payload = Vec::new();
    for e in entries {
        payload.extend_from_slice(&e.to_le_bytes());
    }
    let sum = wire::checksum(&m, &payload);
    m.extend_from_slice(&sum.to_le_bytes());
    m.extend_from_slice(&payload);
    m
}

/// Re-seals a message after a deliberate field change, so that the field check (not the
/// checksum) must catch it.
fn reseal(mut m: Vec<u8>) -> Vec<u8> {
    let sum = wire::checksum(&m[..44], &m[48..]);
    m[44..48].copy_from_slice(&sum.to_le_bytes());
    m
}

#[test]
fn each_bad_input_has_its_own_error() {
    let good = hand_sparse(10, &[1, -3, 10], 0.5);
    assert!(MessageView::parse(&good).is_ok());
    type Case = (Vec<u8>, fn(&WireError) -> bool);
    let cases: Vec<Case> = vec![
        (good[..20].to_vec(), |e| {
            matches!(
                e,
                WireError::Truncated {
                    needed: 48,
                    got: 20
                }
            )
        }),
        (
            reseal({
                let mut m = good.clone();
                m[0] = b'X';
                m
            }),
            |e| matches!(e, WireError::BadMagic { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[4] = 2;
                m
            }),
            |e| matches!(e, WireError::UnsupportedVersion { found: 2 }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[5] = 9;
                m
            }),
            |e| matches!(e, WireError::UnknownEncoding { found: 9 }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[6] = 0x80;
                m
            }),
            |e| matches!(e, WireError::UnknownFlags { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[34] = 1;
                m
            }),
            |e| matches!(e, WireError::ReservedNotZero { found: 1 }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[8..12].copy_from_slice(&0u32.to_le_bytes());
                m
            }),
            |e| matches!(e, WireError::EmptyVector),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
                m
            }),
            |e| matches!(e, WireError::TooManyElements { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[16..20].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
                m
            }),
            |e| matches!(e, WireError::BadTau { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[16..20].copy_from_slice(&(-1.0f32).to_bits().to_le_bytes());
                m
            }),
            |e| matches!(e, WireError::BadTau { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[16..20].copy_from_slice(&0u32.to_le_bytes());
                m
            }),
            |e| matches!(e, WireError::BadTau { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[36] = 1;
                m
            }),
            |e| matches!(e, WireError::BadSegment { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[12..16].copy_from_slice(&11u32.to_le_bytes());
                m
            }),
            |e| matches!(e, WireError::CountOutOfRange { .. }),
        ),
        (
            reseal({
                let mut m = good.clone();
                m[40] = 16;
                m
            }),
            |e| matches!(e, WireError::PayloadLengthMismatch { .. }),
        ),
        (
            {
                let mut m = good.clone();
                m.pop();
                m
            },
            |e| matches!(e, WireError::LengthMismatch { .. }),
        ),
        (
            {
                let mut m = good.clone();
                m[50] ^= 1;
                m
            },
            |e| matches!(e, WireError::ChecksumMismatch { .. }),
        ),
        (hand_sparse(10, &[1, 0, 10], 0.5), |e| {
            matches!(e, WireError::EntryZero { position: 1 })
        }),
        (hand_sparse(10, &[1, -11], 0.5), |e| {
            matches!(
                e,
                WireError::EntryOutOfRange {
                    position: 1,
                    entry: -11,
                    ..
                }
            )
        }),
        (hand_sparse(10, &[3, -2], 0.5), |e| {
            matches!(e, WireError::EntriesNotAscending { position: 1, .. })
        }),
        (hand_sparse(10, &[3, -3], 0.5), |e| {
            matches!(e, WireError::EntriesNotAscending { position: 1, .. })
        }),
    ];
    for (i, (bytes, check)) in cases.iter().enumerate() {
        let err = MessageView::parse(bytes).expect_err(&format!("case {i} accepted"));
        assert!(check(&err), "case {i}: unexpected {err:?}");
        assert!(!format!("{err}").is_empty());
    }
}

#[test]
fn bitmap_reserved_code_padding_and_count_are_rejected() {
    let mut r = vec![1.0f32, -1.0, 0.0, 1.0, 1.0];
    let msg = encode_vec(
        &mut r,
        &EncodeParams {
            mode: EncodingMode::Bitmap,
            ..EncodeParams::new(1.0)
        },
    )
    .unwrap();
    assert!(MessageView::parse(&msg).is_ok());
    // Element 2 gets the reserved code 0b11.
    let mut m = msg.clone();
    m[48] |= 0b11 << 4;
    assert!(matches!(
        MessageView::parse(&reseal(m)),
        Err(WireError::ReservedBitmapCode { index: 2 })
    ));
    // A code past N (element 5 lives in byte 1, slot 1).
    let mut m = msg.clone();
    m[49] |= 0b01 << 2;
    assert!(matches!(
        MessageView::parse(&reseal(m)),
        Err(WireError::BitmapPaddingSet)
    ));
    // Header count disagrees with the codes.
    let mut m = msg.clone();
    m[12] = 3;
    assert!(matches!(
        MessageView::parse(&reseal(m)),
        Err(WireError::BitmapCountMismatch {
            declared: 3,
            actual: 4
        })
    ));
}

#[test]
fn dense_values_must_be_finite() {
    let mut r = vec![1.0f32, -2.0, 3.0];
    let msg = encode_vec(
        &mut r,
        &EncodeParams {
            mode: EncodingMode::Dense,
            ..EncodeParams::new(1.0)
        },
    )
    .unwrap();
    assert_eq!(r, vec![0.0, 0.0, 0.0]);
    let mut m = msg.clone();
    m[52..56].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert!(matches!(
        MessageView::parse(&reseal(m)),
        Err(WireError::DenseValueNotFinite { index: 1 })
    ));
}

#[test]
fn encode_rejects_bad_input_and_changes_nothing() {
    let original = vec![1.0f32, f32::NAN, -3.0];
    let mut r = original.clone();
    let mut out = vec![0x5Au8; 128];
    let e = codec::encode(&mut r, &EncodeParams::new(0.5), &mut out).unwrap_err();
    assert_eq!(
        e,
        Error::Codec(CodecError::NonFinite {
            index: 1,
            bits: f32::NAN.to_bits()
        })
    );
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert!(r[0] == 1.0 && r[1].is_nan() && r[2] == -3.0);
    assert!(out.iter().all(|&b| b == 0x5A));

    let mut r = vec![1.0f32, f32::NEG_INFINITY];
    assert!(matches!(
        codec::encode(&mut r, &EncodeParams::new(0.5), &mut out),
        Err(Error::Codec(CodecError::NonFinite { index: 1, .. }))
    ));

    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY, -0.0] {
        let mut r = vec![1.0f32; 4];
        let e = codec::encode(&mut r, &EncodeParams::new(bad), &mut out).unwrap_err();
        assert!(
            matches!(e, Error::Wire(WireError::BadTau { .. })),
            "{bad}: {e:?}"
        );
        assert_eq!(r, vec![1.0; 4]);
    }
    let mut empty: Vec<f32> = Vec::new();
    assert_eq!(
        codec::encode(&mut empty, &EncodeParams::new(1.0), &mut out),
        Err(Error::Wire(WireError::EmptyVector))
    );

    let mut r = vec![1.0f32; 100];
    let mut small = vec![0u8; 60];
    let e = codec::encode(&mut r, &EncodeParams::new(1.0), &mut small).unwrap_err();
    assert!(matches!(e, Error::Codec(CodecError::BufferTooSmall { .. })));
    assert_eq!(r, vec![1.0; 100]);

    let mut r = vec![1.0f32; 10];
    let p = EncodeParams {
        segment: Some(SegmentRef {
            id: 0,
            offset: 8,
            len: 5,
        }),
        ..EncodeParams::new(1.0)
    };
    assert!(matches!(
        codec::encode(&mut r, &p, &mut out),
        Err(Error::Codec(CodecError::SegmentOutOfRange { .. }))
    ));
}

#[test]
fn empty_message_is_valid() {
    let mut r = vec![0.1f32, -0.2, 0.0];
    let msg = encode_vec(&mut r, &EncodeParams::new(1.0)).unwrap();
    let v = MessageView::parse(&msg).unwrap();
    assert_eq!(v.count(), 0);
    assert_eq!(v.encoding(), Encoding::Sparse);
    assert_eq!(msg.len(), HEADER_LEN);
    let mut d = vec![0.0f32; 3];
    codec::decode_add(&v, &mut d).unwrap();
    assert_eq!(d, vec![0.0; 3]);
}

#[test]
fn one_quantum_per_message() {
    // DL4J conformance check 4: x = 3.5 tau sends one +tau and leaves 2.5 tau.
    let mut r = vec![3.5f32, -7.0];
    let msg = encode_vec(&mut r, &EncodeParams::new(1.0)).unwrap();
    assert_eq!(r, vec![2.5, -6.0]);
    let v = MessageView::parse(&msg).unwrap();
    let mut d = vec![0.0f32; 2];
    codec::decode_add(&v, &mut d).unwrap();
    assert_eq!(d, vec![1.0, -1.0]);
}

#[test]
fn message_for_another_model_size_is_rejected() {
    let mut r = vec![1.0f32; 16];
    let msg = encode_vec(&mut r, &EncodeParams::new(1.0)).unwrap();
    let v = MessageView::parse(&msg).unwrap();
    let mut d = vec![0.0f32; 17];
    let e = codec::decode_add(&v, &mut d).unwrap_err();
    assert!(matches!(
        e,
        Error::Codec(CodecError::TargetSizeMismatch {
            message_n: 16,
            target_len: 17,
            ..
        })
    ));
    assert_eq!(e.kind(), ErrorKind::SizeMismatch);
    assert!(d.iter().all(|&x| x == 0.0));
}

#[test]
fn dl4j_bitmap_half_code_imports_as_exact_dense() {
    // N = 3, tau = 1: element 0 +tau (M), element 1 -tau/2 (S only), element 2 -tau (M and S).
    let n = 3i32;
    let w4: u32 = 1 | (1 << (16 + 1)) | (1 << 2) | (1 << (2 + 16));
    let words = [n, n, 1.0f32.to_bits() as i32, 1, w4 as i32];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let v = dl4j::Dl4jView::parse(&bytes).unwrap();
    assert!(v.has_half_codes());
    assert_eq!(v.count(), 3);
    let mut out = vec![0u8; v.native_len()];
    let len = dl4j::import(&bytes, 5, 6, &mut out).unwrap();
    let m = MessageView::parse(&out[..len]).unwrap();
    assert_eq!(m.encoding(), Encoding::Dense);
    let mut d = vec![0.0f32; 3];
    codec::decode_add(&m, &mut d).unwrap();
    assert_eq!(d, vec![1.0, -0.5, -1.0]);
    // Dense messages have no DL4J form.
    assert!(matches!(
        dl4j::export_len(&m),
        Err(WireError::Dl4jUnsupportedEncoding { .. })
    ));
}

#[test]
fn dl4j_bad_buffers_are_rejected() {
    let enc = |w: &[i32]| -> Vec<u8> { w.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let t = 1.0f32.to_bits() as i32;
    assert!(matches!(
        dl4j::Dl4jView::parse(&enc(&[1, 4, t, 7, 1])),
        Err(WireError::Dl4jUnknownMode { found: 7 })
    ));
    assert!(matches!(
        dl4j::Dl4jView::parse(&enc(&[2, 4, t, 0, 1])),
        Err(WireError::Dl4jMalformed { .. })
    ));
    assert!(matches!(
        dl4j::Dl4jView::parse(&enc(&[1, 4, t, 0, 0])),
        Err(WireError::EntryZero { .. })
    ));
    assert!(matches!(
        dl4j::Dl4jView::parse(&enc(&[1, 4, t, 0, 5])),
        Err(WireError::EntryOutOfRange { .. })
    ));
    assert!(matches!(
        dl4j::Dl4jView::parse(&enc(&[1, 4, -1, 0, 1])),
        Err(WireError::BadTau { .. })
    ));
    assert!(matches!(
        dl4j::Dl4jView::parse(&[1, 2, 3]),
        Err(WireError::Dl4jMalformed { .. })
    ));
    let mut out = vec![0u8; 256];
    assert!(matches!(
        dl4j::import(&enc(&[2, 4, t, 0, 2, -2]), 0, 0, &mut out),
        Err(Error::Wire(WireError::EntriesNotAscending { .. }))
    ));
    // Bitmap: wrong length, and a bit past N.
    assert!(matches!(
        dl4j::Dl4jView::parse(&enc(&[4, 4, t, 1])),
        Err(WireError::Dl4jMalformed { .. })
    ));
    assert!(matches!(
        dl4j::Dl4jView::parse(&enc(&[4, 4, t, 1, 1 << 5])),
        Err(WireError::BitmapPaddingSet)
    ));
}

#[test]
fn vector_stats_l2_is_accurate() {
    use gradcast_core::backend::slices;
    for v in [
        vec![3.0f32, 4.0],
        vec![1e-20f32; 7],
        vec![1e19f32, -1e19],
        vec![0.0f32; 3],
    ] {
        let s = slices::stats(&v);
        let want = v
            .iter()
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt();
        assert!(
            (s.l2() - want).abs() <= want * 1e-12,
            "{v:?}: {} vs {want}",
            s.l2()
        );
    }
}

/// The bitmap layout, checked against an independent bit-level view (bitvec's `Lsb0` order:
/// element `i` is bits `2i` (+tau) and `2i + 1` (-tau) of the payload).
#[test]
#[cfg_attr(
    miri,
    ignore = "bitvec 1.1 fails Miri's Stacked Borrows model (see codec.rs)"
)]
fn bitmap_layout_matches_a_bitvec_view() {
    use bitvec::prelude::*;
    let runner_cases = config().cases;
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(
            &(residual_strategy(300), tau_strategy()),
            |(before, tau)| {
                let mut after = before.clone();
                let params = EncodeParams {
                    mode: EncodingMode::Bitmap,
                    ..EncodeParams::new(tau)
                };
                let msg = encode_vec(&mut after, &params).unwrap();
                let view = MessageView::parse(&msg).unwrap();
                let bits = view.payload().view_bits::<Lsb0>();
                prop_assert_eq!(bits.len(), 8 * before.len().div_ceil(4));
                for (i, x) in before.iter().enumerate() {
                    let plus = bits[2 * i];
                    let minus = bits[2 * i + 1];
                    prop_assert_eq!(plus, x.abs() >= tau && *x > 0.0, "i={}", i);
                    prop_assert_eq!(minus, x.abs() >= tau && *x < 0.0, "i={}", i);
                }
                prop_assert!(bits[2 * before.len()..].not_any(), "padding bits set");
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e} ({runner_cases} cases)"));
}

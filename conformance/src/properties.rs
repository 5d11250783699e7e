//! The properties: one generic function per property, each running [`DEFAULT_CASES`]
//! (or `PROPTEST_CASES`) cases against the reference.
//!
//! Every function panics with the shrunk counter-example when the backend differs from the
//! reference (or from an independent model of the rule, where one is stated).
//!
//! [`DEFAULT_CASES`]: crate::DEFAULT_CASES

use crate::strategies::{self, Rng, VecSpec, encode_case, length, next_down, next_up, vec_spec};
use crate::{Encoded, bits, check, compare_encode, dev, encode_on, to_device, to_host};
use gradcast_core::backend::Reference;
use gradcast_core::codec::{self, EncodeParams, EncodingMode, SegmentRef, cap_start};
use gradcast_core::wire::{self, Encoding, HEADER_LEN, MessageView};
use gradcast_core::{Backend, Classify, ErrorKind};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// An output buffer length that fits any message of `n` elements in any mode.
fn out_len(n: usize) -> usize {
    wire::dense_message_len(n.max(1))
}

/// Decodes `message` into `target` on the backend and on the reference and compares the
/// results (error kinds, target bits). A message that does not parse is not compared
/// (backends only ever see parsed messages).
fn compare_decode<B: Backend>(b: &B, message: &[u8], target: &[f32]) -> Result<(), TestCaseError> {
    let Ok(msg) = MessageView::parse(message) else {
        return Ok(());
    };
    let mut want = target.to_vec();
    let want_r = Reference.decode_add(&msg, &mut want).map_err(|e| e.kind());
    let mut buf = to_device(b, target)?;
    let got_r = b.decode_add(&msg, &mut buf).map_err(|e| e.kind());
    dev(b.sync())?;
    let got = to_host(b, &buf)?;
    prop_assert_eq!(got_r, want_r, "{}: decode_add result differs", b.name());
    prop_assert!(
        bits(&got) == bits(&want),
        "{}: decode_add differs at element {:?}",
        b.name(),
        bits(&got)
            .iter()
            .zip(bits(&want))
            .position(|(a, w)| *a != w)
    );
    Ok(())
}

/// The element indices a parsed message sends (`+1` or `-1` each), relative to its range.
fn sent(msg: &MessageView<'_>) -> Vec<(usize, i8)> {
    match msg.encoding() {
        Encoding::Sparse => msg
            .sparse_entries()
            .map(|e| (e.unsigned_abs() as usize - 1, if e > 0 { 1 } else { -1 }))
            .collect(),
        Encoding::Bitmap => (0..msg.n() as usize)
            .filter_map(|i| match msg.bitmap_code(i) {
                1 => Some((i, 1)),
                2 => Some((i, -1)),
                _ => None,
            })
            .collect(),
        Encoding::Dense => Vec::new(),
    }
}

/// Property: the message bytes (and the summary) equal the reference's for any vector,
/// threshold, sender, round, cap, mode and segment.
pub fn encode_message_matches_reference<B: Backend>(b: &B) {
    check(
        "encode_message_matches_reference",
        b.name(),
        encode_case(length()),
        |(spec, p)| {
            let x = spec.build();
            let (want, _) = compare_encode(b, &x, &p, out_len(x.len()))?;
            if let Ok(s) = want.result {
                prop_assert_eq!(s.bytes, want.message.len());
                prop_assert!(MessageView::parse(&want.message).is_ok());
            }
            Ok(())
        },
    );
}

/// Property: the residual after encoding is bit-identical to the reference's, on vectors
/// rich in special values (±0, ±tau, next to tau, subnormals, f32::MAX); and every element
/// is either untouched or debited by exactly one quantum.
pub fn encode_residual_matches_reference<B: Backend>(b: &B) {
    let specs = (length(), strategies::tau(), 0.3..1.0f64, any::<u64>()).prop_map(
        |(n, tau, specials, seed)| VecSpec {
            n,
            tau,
            density: 0.3,
            specials,
            seed,
        },
    );
    let case = specs.prop_flat_map(|s| (Just(s), strategies::params(s.n, s.tau)));
    check(
        "encode_residual_matches_reference",
        b.name(),
        case,
        |(spec, p)| {
            let x = spec.build();
            let (_, got) = compare_encode(b, &x, &p, out_len(x.len()))?;
            if let (Ok(s), false) = (got.result, p.mode == EncodingMode::Dense) {
                let mut changed = 0u32;
                for (i, (&before, &after)) in x.iter().zip(&got.residual).enumerate() {
                    let mut d = before;
                    codec::debit(&mut d, p.tau);
                    let ok = after == before.to_bits() || after == d.to_bits();
                    prop_assert!(ok, "element {} neither untouched nor debited once", i);
                    changed += u32::from(after != before.to_bits());
                }
                prop_assert!(changed <= s.entries);
            }
            Ok(())
        },
    );
}

/// Property: decode-add of any valid message (every mode, segments, caps) into a target
/// holding arbitrary finite values equals the reference's, twice in a row.
pub fn decode_add_matches_reference<B: Backend>(b: &B) {
    let case = (encode_case(length()), any::<u64>());
    check(
        "decode_add_matches_reference",
        b.name(),
        case,
        |((spec, p), seed)| {
            let x = spec.build();
            let enc = encode_on(&Reference, &x, &p, out_len(x.len()), &[0])?;
            if enc.result.is_err() {
                return Ok(());
            }
            let target = VecSpec {
                n: x.len(),
                tau: 1.0,
                density: 0.1,
                specials: 0.1,
                seed,
            }
            .build();
            compare_decode(b, &enc.message, &target)?;
            // Twice: the second add starts from the first's result.
            let msg =
                MessageView::parse(&enc.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut once = target.clone();
            Reference
                .decode_add(&msg, &mut once)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            compare_decode(b, &enc.message, &once)
        },
    );
}

/// Property: mass conservation, bit-exact per element: `decoded + residual_after ==
/// residual_before` (decoding into zeros), for every mode and cap.
///
/// The f32 debit `x - tau` is exact, and so the identity holds bit for bit, in the regime
/// generated here: (a) candidates with `tau <= |x| <= 2 tau` (Sterbenz), or (b) values and
/// threshold on one binary grid (`x = m 2^e`, `tau = t 2^e`, `|m|, t < 2^23`). Outside it
/// (e.g. `x = 16777218`, `tau = 1`: `x - tau` rounds to `16777216`) the reference itself
/// loses up to half an ulp of the new residual; that case is documented in the core.
pub fn mass_conservation<B: Backend>(b: &B) {
    let sterbenz = (length(), strategies::tau(), 0.0..1.0f64, any::<u64>()).prop_map(
        |(n, tau, density, seed)| {
            let mut r = Rng::new(seed);
            let t = tau as f64;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    let s = if r.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
                    let v = if r.unit() < density {
                        // In [tau, 2 tau], rounded inwards so that it stays there.
                        let v = (t * (1.0 + r.unit())) as f32;
                        v.clamp(tau, (2.0 * t).min(f32::MAX as f64) as f32)
                    } else {
                        (t * r.unit()) as f32
                    };
                    s * v
                })
                .collect();
            (x, tau)
        },
    );
    let grid = (
        length(),
        -30i32..30,
        1u32..(1 << 12),
        0.0..1.0f64,
        any::<u64>(),
    )
        .prop_map(|(n, e, t, density, seed)| {
            let mut r = Rng::new(seed);
            let q = 2f64.powi(e);
            let tau = (t as f64 * q) as f32;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    let m = if r.unit() < density {
                        t as i64 + r.below((1 << 22) - t as usize) as i64
                    } else {
                        r.below(t as usize) as i64
                    };
                    let s = if r.next_u64() & 1 == 0 { 1 } else { -1 };
                    ((s * m) as f64 * q) as f32
                })
                .collect();
            (x, tau)
        });
    let case = prop_oneof![sterbenz, grid]
        .prop_flat_map(|(x, tau)| {
            let n = x.len();
            (Just(x), strategies::params(n, tau))
        })
        .prop_map(|(x, mut p)| {
            p.segment = None;
            (x, p)
        });
    check("mass_conservation", b.name(), case, |(x, p)| {
        let (_, got) = compare_encode(b, &x, &p, out_len(x.len()))?;
        prop_assert!(got.result.is_ok(), "{:?}", got.result);
        let msg =
            MessageView::parse(&got.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut decoded = to_device(b, &vec![0.0; x.len()])?;
        dev(b.decode_add(&msg, &mut decoded))?;
        let decoded = to_host(b, &decoded)?;
        for i in 0..x.len() {
            let after = f32::from_bits(got.residual[i]);
            prop_assert!(
                decoded[i] + after == x[i],
                "element {}: decoded {} + residual {} != {} (tau {})",
                i,
                decoded[i],
                after,
                x[i],
                p.tau
            );
        }
        Ok(())
    });
}

/// Property: in automatic mode, the encoding is sparse exactly when `4 K <= ceil(N / 4)`
/// (ties to sparse), checked at `K` one below, at and one above the boundary, and the
/// message length is the smaller payload plus the header.
pub fn encoding_switch_boundary<B: Backend>(b: &B) {
    let case = (1usize..=4096, -1i64..=1, strategies::tau(), any::<u64>());
    check(
        "encoding_switch_boundary",
        b.name(),
        case,
        |(n, dk, tau, seed)| {
            let boundary = (n.div_ceil(4) / 4) as i64;
            let k = (boundary + dk).clamp(0, n as i64) as usize;
            let mut r = Rng::new(seed);
            let mut idx: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + r.below(n - i);
                idx.swap(i, j);
            }
            let mut x = vec![0.0f32; n];
            let v = (tau as f64 * 1.5).min(f32::MAX as f64) as f32;
            for &i in &idx[..k] {
                x[i] = if r.next_u64() & 1 == 0 { v } else { -v };
            }
            let (_, got) = compare_encode(b, &x, &EncodeParams::new(tau), out_len(n))?;
            let s = got
                .result
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let sparse = 4 * k <= n.div_ceil(4);
            let want = if sparse {
                Encoding::Sparse
            } else {
                Encoding::Bitmap
            };
            prop_assert_eq!(s.encoding, want, "n {} k {}", n, k);
            prop_assert_eq!(s.entries as usize, k);
            prop_assert_eq!(s.bytes, HEADER_LEN + (4 * k).min(n.div_ceil(4)));
            Ok(())
        },
    );
}

/// Property: with a cap `c`, exactly `min(count, c)` candidates are sent: the first ones met
/// scanning cyclically from `cap_start(round, N)`; the truncated flag is set when some are
/// left; the candidates left out keep their residual bits. Checked against an independent
/// model of the rule, and against the reference.
pub fn cap_selects_cyclically_from_start<B: Backend>(b: &B) {
    let case = (vec_spec(length()), any::<u64>(), 0.0..1.2f64, any::<bool>());
    check(
        "cap_selects_cyclically_from_start",
        b.name(),
        case,
        |(spec, round, cap_frac, bitmap)| {
            let x = spec.build();
            let n = x.len();
            let cands: Vec<usize> = (0..n).filter(|&i| x[i].abs() >= spec.tau).collect();
            let cap = (cands.len() as f64 * cap_frac) as u32;
            let mut p = EncodeParams::new(spec.tau);
            p.cap = Some(cap);
            p.round = round;
            p.mode = if bitmap {
                EncodingMode::Bitmap
            } else {
                EncodingMode::Auto
            };
            let (_, got) = compare_encode(b, &x, &p, out_len(n))?;
            let s = got
                .result
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let take = cands.len().min(cap as usize);
            let start = cap_start(round, n);
            let mut want: Vec<usize> = cands
                .iter()
                .copied()
                .filter(|&i| i >= start)
                .chain(cands.iter().copied().filter(|&i| i < start))
                .take(take)
                .collect();
            want.sort_unstable();
            let msg =
                MessageView::parse(&got.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let sent: Vec<usize> = sent(&msg).into_iter().map(|(i, _)| i).collect();
            prop_assert_eq!(&sent, &want, "start {}", start);
            prop_assert_eq!(s.entries as usize, take);
            prop_assert_eq!(s.truncated, take < cands.len());
            prop_assert_eq!(msg.header().truncated(), take < cands.len());
            for &i in &cands {
                if want.binary_search(&i).is_err() {
                    prop_assert_eq!(got.residual[i], x[i].to_bits(), "left-out candidate {}", i);
                }
            }
            Ok(())
        },
    );
}

/// Property: over consecutive rounds with a truncating cap, each round's message equals the
/// reference's and includes the first candidate at or after that round's start offset.
pub fn cap_rotates_with_round<B: Backend>(b: &B) {
    let case = (vec_spec(65usize..=2048), any::<u64>(), 1u32..8);
    check(
        "cap_rotates_with_round",
        b.name(),
        case,
        |(spec, r0, cap)| {
            let x = spec.build();
            let n = x.len();
            let cands: Vec<usize> = (0..n).filter(|&i| x[i].abs() >= spec.tau).collect();
            for round in r0..r0.saturating_add(6) {
                let mut p = EncodeParams::new(spec.tau);
                p.cap = Some(cap);
                p.round = round;
                let (_, got) = compare_encode(b, &x, &p, out_len(n))?;
                let msg = MessageView::parse(&got.message)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let start = cap_start(round, n);
                if let Some(&first) = cands.iter().find(|&&i| i >= start).or(cands.first()) {
                    prop_assert!(
                        sent(&msg).iter().any(|&(i, _)| i == first),
                        "round {} start {}: first candidate {} not sent",
                        round,
                        start,
                        first
                    );
                }
            }
            Ok(())
        },
    );
}

/// Property: an empty vector (N = 0), an empty segment, or an empty count range give the
/// reference's result (an error of the same kind for encode), residual untouched.
pub fn empty_vector_same_error<B: Backend>(b: &B) {
    let case = (0usize..64, strategies::tau(), any::<u16>(), any::<bool>());
    check(
        "empty_vector_same_error",
        b.name(),
        case,
        |(n, tau, id, whole)| {
            let x = vec![tau; n];
            let mut p = EncodeParams::new(tau);
            if whole {
                let (want, _) = compare_encode(b, &[], &p, 256)?;
                prop_assert!(want.result.is_err());
            }
            p.segment = Some(SegmentRef {
                id,
                offset: n / 2,
                len: 0,
            });
            let (want, got) = compare_encode(b, &x, &p, 256)?;
            prop_assert!(want.result.is_err());
            prop_assert_eq!(got.residual, bits(&x));
            let buf = to_device(b, &x)?;
            let got = b.count(&buf, n / 2..n / 2, tau).map_err(|e| e.kind());
            let want = Reference.count(&x, n / 2..n / 2, tau).map_err(|e| e.kind());
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

/// Property: one-element, tiny and odd lengths (bitmap padding, partial bytes, blocks that
/// do not fill) encode and decode as the reference does.
pub fn small_and_odd_lengths<B: Backend>(b: &B) {
    let lengths = prop_oneof![1usize..=17, (0usize..600).prop_map(|k| 2 * k + 1)];
    check(
        "small_and_odd_lengths",
        b.name(),
        (encode_case(lengths), any::<u64>()),
        |((spec, p), seed)| {
            let x = spec.build();
            let (want, _) = compare_encode(b, &x, &p, out_len(x.len()))?;
            let target = VecSpec {
                n: x.len(),
                tau: 0.5,
                density: 0.5,
                specials: 0.0,
                seed,
            }
            .build();
            compare_decode(b, &want.message, &target)
        },
    );
}

/// Property: large vectors (8K to 64K elements, and now and then up to 2^20) encode and
/// decode as the reference does (chunked and threaded paths).
pub fn large_lengths<B: Backend>(b: &B) {
    let lengths = prop_oneof![15 => 8193usize..=65536, 1 => 65537usize..=(1 << 20)];
    let case = (
        vec_spec(lengths),
        any::<u64>(),
        prop_oneof![Just(None), (0u32..5000).prop_map(Some)],
        any::<bool>(),
    );
    check(
        "large_lengths",
        b.name(),
        case,
        |(spec, round, cap, bitmap)| {
            let x = spec.build();
            let mut p = EncodeParams::new(spec.tau);
            p.round = round;
            p.cap = cap;
            p.mode = if bitmap {
                EncodingMode::Bitmap
            } else {
                EncodingMode::Auto
            };
            let (want, _) = compare_encode(b, &x, &p, wire::max_message_len(x.len()))?;
            compare_decode(b, &want.message, &vec![0.0; x.len()])
        },
    );
}

/// Property: a threshold exactly at an element's magnitude, or one ulp below, selects it; one
/// ulp above does not (`|x| >= tau`, inclusive).
pub fn tau_at_value_edges<B: Backend>(b: &B) {
    let case = (vec_spec(length()), any::<prop::sample::Index>(), 0u8..3);
    check(
        "tau_at_value_edges",
        b.name(),
        case,
        |(spec, pick, which)| {
            let x = spec.build();
            let k = pick.index(x.len());
            let v = x[k].abs();
            if !(v.is_normal() && v < f32::MAX) {
                return Ok(());
            }
            let tau = match which {
                0 => v,
                1 => next_down(v),
                _ => next_up(v),
            };
            let p = EncodeParams::new(tau);
            let (_, got) = compare_encode(b, &x, &p, out_len(x.len()))?;
            let msg =
                MessageView::parse(&got.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let selected = sent(&msg).iter().any(|&(i, _)| i == k);
            prop_assert_eq!(selected, which < 2, "tau {} |x| {}", tau, v);
            Ok(())
        },
    );
}

/// Property: subnormal values with tiny (subnormal) thresholds, and huge values with huge
/// thresholds, encode and decode as the reference does.
pub fn subnormal_and_extreme_tau<B: Backend>(b: &B) {
    let tau = prop_oneof![
        (1u32..0x0080_0000).prop_map(f32::from_bits),
        (0x7E00_0000u32..0x7F80_0000).prop_map(f32::from_bits),
        Just(f32::MAX),
        Just(f32::from_bits(1)),
    ];
    let case = (
        length(),
        tau,
        strategies::density(),
        0.0..0.5f64,
        any::<u64>(),
    )
        .prop_map(|(n, tau, density, specials, seed)| VecSpec {
            n,
            tau,
            density,
            specials,
            seed,
        })
        .prop_flat_map(|s| (Just(s), strategies::params(s.n, s.tau)));
    check("subnormal_and_extreme_tau", b.name(), case, |(spec, p)| {
        let x = spec.build();
        let (want, _) = compare_encode(b, &x, &p, out_len(x.len()))?;
        compare_decode(b, &want.message, &x)
    });
}

/// Property: a threshold that is not finite and strictly positive (0, -0, negative, NaN,
/// infinities) is rejected by encode and count with the reference's error kind, and the
/// residual is untouched.
pub fn bad_tau_same_error<B: Backend>(b: &B) {
    let bad = prop_oneof![
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        (0x8000_0001u32..0xFF80_0000).prop_map(f32::from_bits),
        (0x7F80_0001u32..=0x7FFF_FFFF).prop_map(f32::from_bits),
    ];
    let case =
        (vec_spec(length()), bad).prop_flat_map(|(s, bad)| (Just(s), strategies::params(s.n, bad)));
    check("bad_tau_same_error", b.name(), case, |(spec, p)| {
        let x = spec.build();
        let (want, got) = compare_encode(b, &x, &p, out_len(x.len()))?;
        prop_assert!(want.result.is_err());
        prop_assert_eq!(got.residual, bits(&x));
        let buf = to_device(b, &x)?;
        let got = b.count(&buf, 0..x.len(), p.tau).map_err(|e| e.kind());
        let want = Reference.count(&x, 0..x.len(), p.tau).map_err(|e| e.kind());
        prop_assert_eq!(got, want);
        Ok(())
    });
}

/// Property: NaN or an infinity in the encoded range is rejected with the reference's error
/// kind (`NonFinite`) by encode and count, with the residual untouched; outside the
/// encoded segment it does not matter.
pub fn non_finite_same_error<B: Backend>(b: &B) {
    let bad = prop_oneof![
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        (0x7F80_0001u32..=0x7FFF_FFFF).prop_map(f32::from_bits),
        (0xFF80_0001u32..=0xFFFF_FFFF).prop_map(f32::from_bits),
    ];
    let case = (
        encode_case(length()),
        prop::collection::vec((any::<prop::sample::Index>(), bad), 1..4),
    );
    check(
        "non_finite_same_error",
        b.name(),
        case,
        |((spec, p), bad)| {
            let mut x = spec.build();
            for (i, v) in &bad {
                let i = i.index(x.len());
                x[i] = *v;
            }
            let (want, got) = compare_encode(b, &x, &p, out_len(x.len()))?;
            if want.result.is_err() {
                prop_assert_eq!(&got.residual, &bits(&x), "residual changed on error");
            }
            if p.segment.is_none() {
                prop_assert_eq!(want.result.map(|_| ()), Err(ErrorKind::NonFinite));
            }
            let buf = to_device(b, &x)?;
            let got = b.count(&buf, 0..x.len(), spec.tau).map_err(|e| e.kind());
            let want = Reference
                .count(&x, 0..x.len(), spec.tau)
                .map_err(|e| e.kind());
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

/// Property: an output buffer shorter than the message is rejected with `BufferTooSmall`,
/// as by the reference, with the residual untouched.
pub fn buffer_too_small_same_error<B: Backend>(b: &B) {
    let case = (encode_case(length()), 0.0..1.0f64);
    check(
        "buffer_too_small_same_error",
        b.name(),
        case,
        |((spec, p), frac)| {
            let x = spec.build();
            let full = encode_on(&Reference, &x, &p, out_len(x.len()), &[0])?;
            let Ok(s) = full.result else { return Ok(()) };
            let short = ((s.bytes as f64) * frac) as usize;
            let (want, got) = compare_encode(b, &x, &p, short.min(s.bytes - 1))?;
            prop_assert_eq!(want.result.map(|_| ()), Err(ErrorKind::BufferTooSmall));
            prop_assert_eq!(got.residual, bits(&x));
            Ok(())
        },
    );
}

/// Property: output and device buffers pre-filled with garbage never leak into results: a
/// message written over random bytes equals the reference's written over zeros; `alloc`
/// gives zeros even after a garbage-filled buffer was dropped; decode-add into a buffer set
/// with `fill` equals the reference's.
pub fn garbage_never_leaks<B: Backend>(b: &B) {
    let case = (
        encode_case(length()),
        prop::collection::vec(any::<u8>(), 1..64),
        -1e6f32..1e6,
    );
    check(
        "garbage_never_leaks",
        b.name(),
        case,
        |((spec, p), garbage, g)| {
            let x = spec.build();
            let n = x.len();
            let want = encode_on(&Reference, &x, &p, out_len(n) + 17, &[0])?;
            let got = encode_on(b, &x, &p, out_len(n) + 17, &garbage)?;
            prop_assert_eq!(&got, &want);
            {
                let mut dirty = dev(b.alloc(n))?;
                dev(b.fill(&mut dirty, f32::from_bits(0x7FC0_DEAD)))?;
            }
            let fresh = dev(b.alloc(n))?;
            prop_assert!(
                bits(&to_host(b, &fresh)?).iter().all(|&v| v == 0),
                "alloc not zeroed"
            );
            let Encoded {
                result: Ok(_),
                message,
                ..
            } = want
            else {
                return Ok(());
            };
            let msg =
                MessageView::parse(&message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut buf = dev(b.alloc(n))?;
            dev(b.fill(&mut buf, g))?;
            prop_assert_eq!(bits(&to_host(b, &buf)?), bits(&vec![g; n]));
            dev(b.decode_add(&msg, &mut buf))?;
            let mut target = vec![g; n];
            Reference
                .decode_add(&msg, &mut target)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(bits(&to_host(b, &buf)?), bits(&target));
            Ok(())
        },
    );
}

/// Property: mutated messages (byte flips, truncation, extension, random bytes; re-sealed
/// with a correct checksum half of the time, so that payload validation is reached) are
/// either rejected by the host-side parser, or decoded exactly as the reference decodes
/// them, with the same error kind when they do not fit the target.
pub fn mutated_messages<B: Backend>(b: &B) {
    let mutation = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6);
    let case = (
        encode_case(1usize..=300),
        mutation,
        0u8..4,
        any::<bool>(),
        any::<u64>(),
    );
    check(
        "mutated_messages",
        b.name(),
        case,
        |((spec, p), flips, shape, reseal, seed)| {
            let x = spec.build();
            let enc = encode_on(&Reference, &x, &p, out_len(x.len()), &[0])?;
            let Ok(_) = enc.result else { return Ok(()) };
            let mut m = enc.message;
            let mut r = Rng::new(seed);
            match shape {
                0 => m.truncate(r.below(m.len())),
                1 => m.extend((0..1 + r.below(8)).map(|_| r.next_u64() as u8)),
                2 => {
                    m = (0..r.below(2 * m.len() + 1))
                        .map(|_| r.next_u64() as u8)
                        .collect()
                }
                _ => {}
            }
            for (i, v) in &flips {
                if !m.is_empty() {
                    let i = i.index(m.len());
                    m[i] ^= v;
                }
            }
            if reseal && m.len() >= HEADER_LEN {
                let sum = wire::checksum(&m[..HEADER_LEN - 4], &m[HEADER_LEN..]);
                m[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
            }
            if let Err(e) = MessageView::parse(&m) {
                // Rejected on the host, before any backend: every backend sees the same error.
                let kind = e.kind();
                prop_assert!(
                    matches!(kind, ErrorKind::Malformed | ErrorKind::Checksum),
                    "unexpected kind {:?}",
                    kind
                );
                return Ok(());
            }
            compare_decode(b, &m, &x)
        },
    );
}

/// Property: a valid message applied to a target of another size (a plain message into a
/// longer or shorter vector; a segment past the end) fails with the reference's error kind
/// (`SizeMismatch`) and leaves the target untouched.
pub fn wrong_size_message_same_error<B: Backend>(b: &B) {
    let case = (encode_case(length()), 1usize..64, any::<bool>());
    check(
        "wrong_size_message_same_error",
        b.name(),
        case,
        |((spec, p), delta, longer)| {
            let x = spec.build();
            let enc = encode_on(&Reference, &x, &p, out_len(x.len()), &[0])?;
            let Ok(_) = enc.result else { return Ok(()) };
            let msg =
                MessageView::parse(&enc.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let n = if longer && p.segment.is_none() {
                x.len() + delta
            } else {
                let end = msg
                    .target_range(usize::MAX)
                    .map(|r| r.end)
                    .unwrap_or(x.len());
                end.saturating_sub(delta.min(end))
            };
            let target: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
            let mut want = target.clone();
            let want_r = Reference.decode_add(&msg, &mut want).map_err(|e| e.kind());
            prop_assert_eq!(want_r, Err(ErrorKind::SizeMismatch));
            let mut buf = to_device(b, &target)?;
            let got_r = b.decode_add(&msg, &mut buf).map_err(|e| e.kind());
            prop_assert_eq!(got_r, want_r);
            prop_assert_eq!(bits(&to_host(b, &buf)?), bits(&target));
            Ok(())
        },
    );
}

/// Property: count over any range (valid or not) at any threshold (valid or not), with
/// occasional non-finite values, equals the reference's count or error kind.
pub fn count_matches_reference<B: Backend>(b: &B) {
    let tau = prop_oneof![9 => strategies::tau(), 1 => Just(-1.0f32)];
    let case = (
        vec_spec(length()),
        tau,
        0usize..9000,
        0usize..9000,
        prop::option::weighted(0.1, any::<prop::sample::Index>()),
    );
    check(
        "count_matches_reference",
        b.name(),
        case,
        |(spec, tau, a, z, nan)| {
            let mut x = spec.build();
            if let Some(i) = nan {
                let i = i.index(x.len());
                x[i] = f32::NAN;
            }
            let n = x.len();
            let range = if a.is_multiple_of(5) {
                a..z
            } else {
                (a % (n + 1)).min(z % (n + 1))..(a % (n + 1)).max(z % (n + 1))
            };
            let buf = to_device(b, &x)?;
            let got = b.count(&buf, range.clone(), tau).map_err(|e| e.kind());
            let want = Reference
                .count(&x, range.clone(), tau)
                .map_err(|e| e.kind());
            prop_assert_eq!(got, want, "range {:?}", range);
            Ok(())
        },
    );
}

fn two_vectors() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (
        vec_spec(length()),
        any::<u64>(),
        prop::option::weighted(0.05, 1usize..5),
    )
        .prop_map(|(s, seed, off)| {
            let a = s.build();
            let mut t = s;
            t.seed = seed;
            t.n = s.n + off.unwrap_or(0);
            (a, t.build())
        })
}

/// Property: `add_assign` (residual += update) is bit-identical to the reference, and a
/// length mismatch gives the same error kind.
pub fn add_assign_matches_reference<B: Backend>(b: &B) {
    check(
        "add_assign_matches_reference",
        b.name(),
        two_vectors(),
        |(dst, src)| {
            let mut want = dst.clone();
            let want_r = Reference.add_assign(&mut want, &src).map_err(|e| e.kind());
            let mut d = to_device(b, &dst)?;
            let s = to_device(b, &src)?;
            let got_r = b.add_assign(&mut d, &s).map_err(|e| e.kind());
            prop_assert_eq!(got_r, want_r);
            prop_assert_eq!(bits(&to_host(b, &d)?), bits(&want));
            Ok(())
        },
    );
}

/// Property: `sub_scaled` (params -= scale * update, never fused) is bit-identical to the
/// reference for scale 1 and any other scale.
pub fn sub_scaled_matches_reference<B: Backend>(b: &B) {
    let scale = prop_oneof![
        Just(1.0f32),
        Just(0.0f32),
        Just(-1.0f32),
        -10.0f32..10.0,
        (0x0000_0001u32..0x7F7F_FFFF).prop_map(f32::from_bits),
    ];
    check(
        "sub_scaled_matches_reference",
        b.name(),
        (two_vectors(), scale),
        |((p, u), scale)| {
            let mut want = p.clone();
            let want_r = Reference
                .sub_scaled(&mut want, &u, scale)
                .map_err(|e| e.kind());
            let mut d = to_device(b, &p)?;
            let s = to_device(b, &u)?;
            let got_r = b.sub_scaled(&mut d, &s, scale).map_err(|e| e.kind());
            prop_assert_eq!(got_r, want_r);
            prop_assert_eq!(bits(&to_host(b, &d)?), bits(&want));
            Ok(())
        },
    );
}

/// A range of a vector of `n` elements from two random numbers: usually valid, sometimes
/// out of bounds.
fn pick_range(n: usize, a: usize, z: usize) -> core::ops::Range<usize> {
    if a.is_multiple_of(7) {
        a % (n + 3)..z % (n + 5)
    } else {
        let (a, z) = (a % (n + 1), z % (n + 1));
        a.min(z)..a.max(z)
    }
}

/// Property: `clip` gives the reference's vector (bits) and statistics (f64 mass, exact).
pub fn clip_matches_reference<B: Backend>(b: &B) {
    let limit = prop_oneof![strategies::tau(), Just(0.0f32)];
    let case = (vec_spec(length()), limit, any::<usize>(), any::<usize>());
    check(
        "clip_matches_reference",
        b.name(),
        case,
        |(spec, limit, a, z)| {
            let x = spec.build();
            let range = pick_range(x.len(), a, z);
            let mut want = x.clone();
            let want_r = Reference
                .clip(&mut want, range.clone(), limit)
                .map_err(|e| e.kind());
            let mut buf = to_device(b, &x)?;
            let got_r = b.clip(&mut buf, range, limit).map_err(|e| e.kind());
            prop_assert_eq!(got_r, want_r);
            prop_assert_eq!(bits(&to_host(b, &buf)?), bits(&want));
            Ok(())
        },
    );
}

/// Property: `stats` (f64 sum of squares in index order, max |x|) equals the reference's
/// exactly.
pub fn stats_matches_reference<B: Backend>(b: &B) {
    let case = (vec_spec(length()), any::<usize>(), any::<usize>());
    check("stats_matches_reference", b.name(), case, |(spec, a, z)| {
        let x = spec.build();
        let range = pick_range(x.len(), a, z);
        let want = Reference.stats(&x, range.clone()).map_err(|e| e.kind());
        let buf = to_device(b, &x)?;
        let got = b.stats(&buf, range).map_err(|e| e.kind());
        match (got, want) {
            (Ok(g), Ok(w)) => {
                prop_assert_eq!(g.sum_sq.to_bits(), w.sum_sq.to_bits());
                prop_assert_eq!(g.max_abs.to_bits(), w.max_abs.to_bits());
            }
            (g, w) => prop_assert_eq!(g.map(|_| ()), w.map(|_| ())),
        }
        Ok(())
    });
}

/// Property: a vector cut into segments, each encoded with its own threshold, cap and id,
/// gives the reference's messages and residual; decoding every segment message into one
/// full-length target gives the reference's; a segment past the end gives the same error.
pub fn segments_match_reference<B: Backend>(b: &B) {
    let case = (
        vec_spec(2usize..=4096),
        prop::collection::vec(
            (0.0..1.0f64, 0.25f32..4.0, prop::option::of(0u32..64)),
            1..6,
        ),
        any::<u64>(),
        0usize..4,
    );
    check(
        "segments_match_reference",
        b.name(),
        case,
        |(spec, segs, round, past)| {
            let x = spec.build();
            let n = x.len();
            let mut cuts: Vec<usize> = segs.iter().map(|s| (s.0 * n as f64) as usize).collect();
            cuts.push(0);
            cuts.push(n);
            cuts.sort_unstable();
            cuts.dedup();
            let mut residual_want = x.clone();
            let mut buf = to_device(b, &x)?;
            let mut messages = Vec::new();
            for (k, w) in cuts.windows(2).enumerate() {
                let (tau_scale, cap) = (segs[k % segs.len()].1, segs[k % segs.len()].2);
                let mut p = EncodeParams::new(spec.tau * tau_scale);
                if !(p.tau.is_finite() && p.tau > 0.0) {
                    p.tau = spec.tau;
                }
                p.round = round;
                p.cap = cap;
                p.sender = k as u32;
                p.segment = Some(SegmentRef {
                    id: k as u16,
                    offset: w[0],
                    len: w[1] - w[0],
                });
                let mut out_w = vec![0u8; out_len(n)];
                let mut out_g = vec![0xA5u8; out_len(n)];
                let want = Reference
                    .encode(&mut residual_want, &p, &mut out_w)
                    .map_err(|e| e.kind());
                let got = b.encode(&mut buf, &p, &mut out_g).map_err(|e| e.kind());
                prop_assert_eq!(got, want, "segment {}", k);
                if let Ok(s) = want {
                    prop_assert!(
                        out_g[..s.bytes] == out_w[..s.bytes],
                        "segment {} message differs",
                        k
                    );
                    messages.push(out_w[..s.bytes].to_vec());
                }
            }
            prop_assert_eq!(bits(&to_host(b, &buf)?), bits(&residual_want));
            let mut want = vec![0.0f32; n];
            let mut got = to_device(b, &want)?;
            for m in &messages {
                let msg = MessageView::parse(m).map_err(|e| TestCaseError::fail(e.to_string()))?;
                Reference
                    .decode_add(&msg, &mut want)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                dev(b.decode_add(&msg, &mut got))?;
            }
            prop_assert_eq!(bits(&to_host(b, &got)?), bits(&want));
            // A segment reaching past the end.
            let mut p = EncodeParams::new(spec.tau);
            p.segment = Some(SegmentRef {
                id: 1,
                offset: n / 2,
                len: n - n / 2 + 1 + past,
            });
            let (want, got) = compare_encode(b, &x, &p, out_len(n))?;
            prop_assert_eq!(want.result.map(|_| ()), Err(ErrorKind::SizeMismatch));
            prop_assert_eq!(got.residual, bits(&x));
            Ok(())
        },
    );
}

/// Property: upload then download returns every bit pattern unchanged (NaN payloads,
/// subnormals, -0.0 included); length mismatches give the reference's error kind.
pub fn upload_download_roundtrip<B: Backend>(b: &B) {
    let case = (prop::collection::vec(any::<u32>(), 0..2048), 0usize..3);
    check("upload_download_roundtrip", b.name(), case, |(raw, off)| {
        let x: Vec<f32> = raw.iter().map(|&v| f32::from_bits(v)).collect();
        let buf = to_device(b, &x)?;
        prop_assert_eq!(b.len(&buf), x.len());
        prop_assert_eq!(bits(&to_host(b, &buf)?), raw);
        if off > 0 {
            let mut wrong = dev(b.alloc(x.len() + off))?;
            let got = b.upload(&x, &mut wrong).map_err(|e| e.kind());
            let mut r = vec![0.0f32; x.len() + off];
            let want = Reference.upload(&x, &mut r).map_err(|e| e.kind());
            prop_assert_eq!(got, want);
            let mut host = vec![0.0f32; x.len() + off];
            let got = b.download(&buf, &mut host).map_err(|e| e.kind());
            let want = Reference.download(&x, &mut host).map_err(|e| e.kind());
            prop_assert_eq!(got, want);
        }
        Ok(())
    });
}

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

/// The known-answer vectors of `docs/FORMAT.md` (`conformance/vectors/kat.txt`, generated
/// by an independent implementation): the backend's message bytes, residual after and
/// decoded vector equal the recorded ones, with the output buffer exactly the message's
/// size and pre-filled with garbage. Deterministic (not a proptest).
pub fn known_answer_vectors<B: Backend>(b: &B) {
    let kats = gradcast_core::kat::vectors();
    assert!(
        kats.len() >= 4,
        "expected at least 4 known-answer vectors, found {}",
        kats.len()
    );
    for k in &kats {
        let fail =
            |what: &str| -> ! { panic!("[{}] known-answer vector {}: {what}", b.name(), k.name) };
        let run = || -> Result<(), TestCaseError> {
            let got = encode_on(b, &k.residual, &k.params, k.message.len(), &[0xEE, 0x11])?;
            match got.result {
                Ok(_) => {}
                Err(e) => fail(&format!("encode failed: {e:?}")),
            }
            if got.message != k.message {
                fail("message bytes differ");
            }
            if got.residual != bits(&k.residual_after) {
                fail("residual after encoding differs");
            }
            let msg =
                MessageView::parse(&k.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut t = to_device(b, &vec![0.0; k.residual.len()])?;
            dev(b.decode_add(&msg, &mut t))?;
            if bits(&to_host(b, &t)?) != bits(&k.decoded) {
                fail("decoded vector differs");
            }
            Ok(())
        };
        if let Err(e) = run() {
            fail(&e.to_string());
        }
    }
}

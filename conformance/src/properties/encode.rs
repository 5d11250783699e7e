//! Encoding: message bytes, residual bits and summaries equal the reference's for every
//! vector, threshold, cap, mode and segment; mass conservation; the sparse/bitmap switch; the
//! cap's cyclic selection and its rotation; lengths from 1 to 2^20; thresholds at the value
//! edges and at the extremes of f32; garbage in output and device buffers.

use super::{out_len, sent};
use crate::strategies::{self, Rng, VecSpec, encode_case, length, next_down, next_up, vec_spec};
use crate::{Encoded, bits, check, compare_encode, dev, encode_on, to_device, to_host};
use gradcast_core::backend::Reference;
use gradcast_core::codec::{self, EncodeParams, EncodingMode, SegmentRef, cap_start};
use gradcast_core::wire::{self, Encoding, HEADER_LEN, MessageView};
use gradcast_core::{Backend, Classify, ErrorKind};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::compare_decode;

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

//! Input errors: an empty vector or segment, a bad threshold, NaN or an infinity, an output
//! buffer too small. Each is refused with the reference's error kind, and the residual is left
//! untouched.

use super::out_len;
use crate::strategies::{self, encode_case, length, vec_spec};
use crate::{bits, check, compare_encode, encode_on, to_device};
use gradcast_core::backend::Reference;
use gradcast_core::codec::{EncodeParams, SegmentRef};
use gradcast_core::{Backend, Classify, ErrorKind};
use proptest::prelude::*;

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

//! Vector operations: count, add-assign, the parameter step, clipping, statistics, upload
//! and download. Each gives the reference's bits (or f64 statistics) and error kinds.

use crate::strategies::{self, length, vec_spec};
use crate::{bits, check, dev, to_device, to_host};
use gradcast_core::Backend;
use gradcast_core::backend::Reference;
use gradcast_core::error::Classify;
use proptest::prelude::*;

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

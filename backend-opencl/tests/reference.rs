//! The OpenCL backend against `gradcast_core::backend::Reference`: message bytes equal,
//! residual and vector bits equal, errors equal. Every test prints `SKIP: ...` and returns at
//! once where no OpenCL platform exists.
// A std test binary: core paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::WireError;
use gradcast_core::backend::Reference;
use gradcast_core::codec::{EncodeParams, EncodingMode, SegmentRef};
use gradcast_core::wire::{MessageView, dense_message_len, message_len};
use gradcast_core::{Backend, Classify, Error, ErrorKind};
use gradcast_opencl::{Layout, OpenCl, OpenClError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The device's own layout and the other one (so the GPU layout runs on PoCL too), built once
/// per test binary (building the program costs a second or two on PoCL).
fn backends() -> Vec<&'static OpenCl> {
    static B: OnceLock<Vec<Result<OpenCl, OpenClError>>> = OnceLock::new();
    let all = B.get_or_init(|| {
        let auto = OpenCl::first_device();
        let other = match &auto {
            Ok(b) if b.limits().contiguous => OpenCl::first_device_with_layout(Layout::Strided),
            Ok(_) => OpenCl::first_device_with_layout(Layout::Contiguous),
            Err(e) => Err(e.clone()),
        };
        vec![auto, other]
    });
    let mut out = Vec::new();
    for r in all {
        match r {
            Ok(b) => out.push(b),
            Err(e) if e.is_unavailable() => {
                eprintln!("SKIP: {e}");
                return Vec::new();
            }
            Err(e) => panic!("OpenCL platform present but the backend failed: {e}"),
        }
    }
    out
}

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn to_device(b: &OpenCl, v: &[f32]) -> <OpenCl as Backend>::Buffer {
    let mut buf = b.alloc(v.len()).expect("alloc");
    b.upload(v, &mut buf).expect("upload");
    buf
}

fn from_device(b: &OpenCl, buf: &<OpenCl as Backend>::Buffer) -> Vec<f32> {
    let mut v = vec![0f32; b.len(buf)];
    b.download(buf, &mut v).expect("download");
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A value: often zero, often around the thresholds, sometimes large, with exact ties.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => Just(0.0f32),
        1 => Just(-0.0f32),
        2 => prop::sample::select(vec![0.5f32, -0.5, 0.25, -0.25, 1.0, -1.0, 0.125]),
        4 => -1.0f32..1.0,
        1 => -100.0f32..100.0,
        1 => -1e-6f32..1e-6,
    ]
}

fn vector() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        4 => prop::collection::vec(value(), 1..600),
        2 => prop::collection::vec(value(), 600..9000),
        1 => prop::collection::vec(value(), 9000..40000),
    ]
}

fn tau() -> impl Strategy<Value = f32> {
    prop_oneof![
        prop::sample::select(vec![0.5f32, 0.25, 1.0, 0.125, 1e-3]),
        1e-4f32..2.0,
    ]
}

fn mode() -> impl Strategy<Value = EncodingMode> {
    prop::sample::select(vec![
        EncodingMode::Auto,
        EncodingMode::Auto,
        EncodingMode::Sparse,
        EncodingMode::Bitmap,
        EncodingMode::Dense,
    ])
}

#[derive(Clone, Debug)]
struct Case {
    x: Vec<f32>,
    params: EncodeParams,
}

fn case() -> impl Strategy<Value = Case> {
    (
        vector(),
        tau(),
        mode(),
        any::<u64>(),
        any::<u32>(),
        prop::option::of(0.0f64..1.2),
        prop::option::of((any::<u16>(), 0.0f64..1.0, 0.0f64..1.0)),
    )
        .prop_map(|(x, tau, mode, round, sender, cap, seg)| {
            let n = x.len();
            let segment = seg.map(|(id, a, b)| {
                let offset = ((n as f64) * a) as usize % n;
                let len = 1 + (((n - offset) as f64) * b) as usize % (n - offset);
                SegmentRef { id, offset, len }
            });
            let seg_len = segment.map_or(n, |s| s.len);
            let cap = cap.map(|c| ((seg_len as f64) * c * 0.5) as u32);
            let params = EncodeParams {
                tau,
                sender,
                round,
                cap,
                mode,
                segment,
            };
            Case { x, params }
        })
}

fn out_len(case: &Case) -> usize {
    let n = case.params.segment.map_or(case.x.len(), |s| s.len);
    dense_message_len(n).max(message_len(gradcast_core::wire::Encoding::Sparse, n, n))
}

/// Runs one encode on both backends and compares everything.
fn check_encode(b: &OpenCl, case: &Case, out_size: usize) -> Result<(), TestCaseError> {
    let mut want_res = case.x.clone();
    let mut want_out = vec![0xA5u8; out_size];
    let want = Reference.encode(&mut want_res, &case.params, &mut want_out);

    let mut dev = to_device(b, &case.x);
    let mut got_out = vec![0xA5u8; out_size];
    let got = b.encode(&mut dev, &case.params, &mut got_out);
    let got_res = from_device(b, &dev);

    match (want, got) {
        (Ok(w), Ok(g)) => {
            prop_assert_eq!(w, g);
            prop_assert!(
                want_out[..w.bytes] == got_out[..g.bytes],
                "message bytes differ"
            );
            MessageView::parse(&got_out[..g.bytes])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        (Err(w), Err(g)) => {
            prop_assert_eq!(Some(&w), g.core(), "errors differ: {} vs {}", w, g);
            prop_assert!(got_out.iter().all(|&v| v == 0xA5), "out written on error");
        }
        (w, g) => prop_assert!(false, "reference {:?}, opencl {:?}", w, g),
    }
    prop_assert_eq!(bits(&want_res), bits(&got_res), "residual bits differ");
    Ok(())
}

#[test]
fn encode_matches_reference() {
    for b in backends() {
        encode_matches_reference_on(b);
    }
}

fn encode_matches_reference_on(b: &OpenCl) {
    let mut runner = TestRunner::new(config(96));
    runner
        .run(&case(), |case| {
            let len = out_len(&case);
            check_encode(b, &case, len)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn encode_too_small_buffer_matches_reference() {
    for b in backends() {
        encode_too_small_buffer_matches_reference_on(b);
    }
}

fn encode_too_small_buffer_matches_reference_on(b: &OpenCl) {
    let mut runner = TestRunner::new(config(32));
    runner
        .run(&(case(), 0usize..200), |(case, size)| {
            check_encode(b, &case, size)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn non_finite_reports_first_index_and_leaves_residual() {
    for b in backends() {
        non_finite_reports_first_index_and_leaves_residual_on(b);
    }
}

fn non_finite_reports_first_index_and_leaves_residual_on(b: &OpenCl) {
    let specials = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7FC0_0001),
    ];
    let strat = (
        case(),
        prop::collection::vec((0.0f64..1.0, prop::sample::select(specials)), 1..4),
    );
    let mut runner = TestRunner::new(config(48));
    runner
        .run(&strat, |(mut case, bad)| {
            let n = case.x.len();
            for (pos, v) in bad {
                case.x[((n as f64) * pos) as usize % n] = v;
            }
            let len = out_len(&case);
            check_encode(b, &case, len)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_params_match_reference() {
    for b in backends() {
        bad_params_match_reference_on(b);
    }
}

fn bad_params_match_reference_on(b: &OpenCl) {
    let x = vec![1.0f32, -2.0, 0.5, 0.0];
    for tau in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let case = Case {
            x: x.clone(),
            params: EncodeParams::new(tau),
        };
        check_encode(b, &case, 256).unwrap();
    }
    for (offset, len) in [(0usize, 0usize), (3, 2), (5, 1), (usize::MAX, 2)] {
        let mut params = EncodeParams::new(0.5);
        params.segment = Some(SegmentRef { id: 1, offset, len });
        check_encode(
            b,
            &Case {
                x: x.clone(),
                params,
            },
            256,
        )
        .unwrap();
    }
}

#[test]
fn decode_add_matches_reference() {
    for b in backends() {
        decode_add_matches_reference_on(b);
    }
}

fn decode_add_matches_reference_on(b: &OpenCl) {
    let strat = (case(), prop::collection::vec(value(), 0..64));
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&strat, |(case, target_seed)| {
            let mut res = case.x.clone();
            let mut out = vec![0u8; out_len(&case)];
            let s = match Reference.encode(&mut res, &case.params, &mut out) {
                Ok(s) => s,
                Err(_) => return Ok(()),
            };
            let msg = MessageView::parse(&out[..s.bytes])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // A target of the full length, seeded with arbitrary values.
            let target: Vec<f32> = (0..case.x.len())
                .map(|i| {
                    if target_seed.is_empty() {
                        0.0
                    } else {
                        target_seed[i % target_seed.len()]
                    }
                })
                .collect();
            let mut want = target.clone();
            let w = Reference.decode_add(&msg, &mut want);
            let mut dev = to_device(b, &target);
            let g = b.decode_add(&msg, &mut dev);
            prop_assert_eq!(w.err(), g.err().and_then(|e| e.core().copied()));
            prop_assert_eq!(bits(&want), bits(&from_device(b, &dev)));
            // And a target of the wrong size is refused, unchanged.
            let mut wrong = to_device(b, &vec![1.0f32; case.x.len() + 1]);
            let r = b.decode_add(&msg, &mut wrong);
            if case.params.segment.is_none() {
                prop_assert_eq!(r.err().map(|e| e.kind()), Some(ErrorKind::SizeMismatch));
                prop_assert!(from_device(b, &wrong).iter().all(|&v| v == 1.0));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn vector_ops_match_reference() {
    for b in backends() {
        vector_ops_match_reference_on(b);
    }
}

fn vector_ops_match_reference_on(b: &OpenCl) {
    let strat = (
        prop::collection::vec(value(), 0..5000),
        prop::collection::vec(value(), 0..5000),
        prop_oneof![Just(1.0f32), -3.0f32..3.0, Just(0.1f32)],
        prop_oneof![Just(0.5f32), 0.0f32..2.0, Just(-1.0f32), Just(f32::NAN)],
        (0.0f64..1.0, 0.0f64..1.0),
        tau(),
    );
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&strat, |(a, u, scale, limit, (r0, r1), tau)| {
            let n = a.len().min(u.len());
            let (a, u) = (&a[..n], &u[..n]);
            let lo = ((n as f64) * r0.min(r1)) as usize;
            let hi = ((n as f64) * r0.max(r1)) as usize;
            let r = Reference;
            let (mut ra, ru) = (a.to_vec(), u.to_vec());
            let (mut da, du) = (to_device(b, a), to_device(b, u));

            r.add_assign(&mut ra, &ru).unwrap();
            b.add_assign(&mut da, &du).unwrap();
            prop_assert_eq!(bits(&ra), bits(&from_device(b, &da)), "add_assign");

            r.sub_scaled(&mut ra, &ru, scale).unwrap();
            b.sub_scaled(&mut da, &du, scale).unwrap();
            prop_assert_eq!(bits(&ra), bits(&from_device(b, &da)), "sub_scaled");

            prop_assert_eq!(
                r.count(&ra, lo..hi, tau).ok(),
                b.count(&da, lo..hi, tau).ok(),
                "count"
            );
            prop_assert_eq!(
                r.stats(&ra, lo..hi).unwrap(),
                b.stats(&da, lo..hi).unwrap(),
                "stats"
            );

            let want = r.clip(&mut ra, lo..hi, limit).unwrap();
            let got = b.clip(&mut da, lo..hi, limit).unwrap();
            prop_assert_eq!(want, got, "clip stats");
            prop_assert_eq!(bits(&ra), bits(&from_device(b, &da)), "clip");

            r.fill(&mut ra, scale).unwrap();
            b.fill(&mut da, scale).unwrap();
            prop_assert_eq!(bits(&ra), bits(&from_device(b, &da)), "fill");
            b.sync().unwrap();
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn count_and_size_errors_match_reference() {
    for b in backends() {
        count_and_size_errors_match_reference_on(b);
    }
}

fn count_and_size_errors_match_reference_on(b: &OpenCl) {
    let x = vec![1.0f32, f32::NAN, 0.5, f32::INFINITY, 2.0];
    let d = to_device(b, &x);
    let r = Reference;
    for (range, tau) in [
        (0..5, 0.5f32),
        (2..5, 0.5),
        (2..3, 0.5),
        (0..6, 0.5),
        (0..5, 0.0),
        #[allow(clippy::reversed_empty_ranges)]
        (4..2, 1.0),
    ] {
        let want = r.count(&x, range.clone(), tau);
        let got = b.count(&d, range.clone(), tau);
        assert_eq!(
            want.err(),
            got.as_ref().err().and_then(|e| e.core().copied()),
            "{range:?}"
        );
        if let Ok(c) = got {
            assert_eq!(Some(c), r.count(&x, range, tau).ok());
        }
        assert_eq!(
            b.clip(&mut to_device(b, &x), 3..9, 1.0)
                .err()
                .map(|e| e.kind()),
            Some(ErrorKind::SizeMismatch)
        );
        assert_eq!(
            b.stats(&d, 3..9).err().map(|e| e.kind()),
            Some(ErrorKind::SizeMismatch)
        );
    }
    let mut short = b.alloc(4).unwrap();
    assert_eq!(
        b.add_assign(&mut short, &d).err().map(|e| e.kind()),
        Some(ErrorKind::SizeMismatch)
    );
    assert_eq!(
        b.sub_scaled(&mut short, &d, 0.5).err().map(|e| e.kind()),
        Some(ErrorKind::SizeMismatch)
    );
    assert_eq!(
        b.upload(&x, &mut short).err().map(|e| e.kind()),
        Some(ErrorKind::SizeMismatch)
    );
    let mut host = [0f32; 3];
    assert_eq!(
        b.download(&d, &mut host).err().map(|e| e.kind()),
        Some(ErrorKind::SizeMismatch)
    );
    // Empty vectors are fine everywhere they are fine for the reference.
    let mut e = b.alloc(0).unwrap();
    b.fill(&mut e, 1.0).unwrap();
    assert_eq!(b.count(&e, 0..0, 1.0).unwrap(), 0);
    assert_eq!(b.stats(&e, 0..0).unwrap(), r.stats(&vec![], 0..0).unwrap());
    let mut out = [0u8; 64];
    assert_eq!(
        b.encode(&mut e, &EncodeParams::new(1.0), &mut out)
            .err()
            .and_then(|e| e.core().copied()),
        Some(Error::Wire(WireError::EmptyVector))
    );
}

/// Many rounds of error feedback with a cap: the replicas and residuals stay bit-identical.
#[test]
fn multi_round_replicas_stay_identical() {
    for b in backends() {
        multi_round_replicas_stay_identical_on(b);
    }
}

fn multi_round_replicas_stay_identical_on(b: &OpenCl) {
    let strat = (
        prop::collection::vec(prop::collection::vec(value(), 3000), 1..6),
        tau(),
        1u32..400,
        mode(),
    );
    let mut runner = TestRunner::new(config(12));
    runner
        .run(&strat, |(grads, tau, cap, mode)| {
            let n = 3000;
            let mut r_res = vec![0f32; n];
            let mut r_par = vec![0f32; n];
            let mut d_res = b.alloc(n).unwrap();
            let mut d_par = b.alloc(n).unwrap();
            let mut out_r = vec![0u8; dense_message_len(n)];
            let mut out_d = vec![0u8; dense_message_len(n)];
            for round in 0..12u64 {
                let g = &grads[round as usize % grads.len()];
                let dg = to_device(b, g);
                Reference.add_assign(&mut r_res, g).unwrap();
                b.add_assign(&mut d_res, &dg).unwrap();
                let params = EncodeParams {
                    tau,
                    sender: 3,
                    round,
                    cap: Some(cap),
                    mode,
                    segment: None,
                };
                let sr = Reference.encode(&mut r_res, &params, &mut out_r).unwrap();
                let sd = b.encode(&mut d_res, &params, &mut out_d).unwrap();
                prop_assert_eq!(sr, sd);
                prop_assert!(out_r[..sr.bytes] == out_d[..sd.bytes]);
                let msg = MessageView::parse(&out_d[..sd.bytes]).unwrap();
                let mut r_upd = vec![0f32; n];
                let mut d_upd = b.alloc(n).unwrap();
                Reference.decode_add(&msg, &mut r_upd).unwrap();
                b.decode_add(&msg, &mut d_upd).unwrap();
                Reference.sub_scaled(&mut r_par, &r_upd, 0.1).unwrap();
                b.sub_scaled(&mut d_par, &d_upd, 0.1).unwrap();
            }
            prop_assert_eq!(bits(&r_res), bits(&from_device(b, &d_res)));
            prop_assert_eq!(bits(&r_par), bits(&from_device(b, &d_par)));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Without any platform the constructor fails at once (no 10 s retry, no panic). Runs this
/// test binary again with `OCL_ICD_VENDORS=/nonexistent`.
#[test]
fn no_platform_fails_fast() {
    if std::env::var_os("GRADCAST_OCL_CHILD").is_some() {
        let t = Instant::now();
        let r = OpenCl::first_device();
        let e = r.expect_err("no platform expected under OCL_ICD_VENDORS=/nonexistent");
        assert!(matches!(e, OpenClError::NoPlatform { .. }), "{e}");
        assert!(e.is_unavailable());
        assert_eq!(e.kind(), ErrorKind::Device);
        // A correctness bound (the 10 s retry must not happen), not a speed claim.
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        println!("CHILD-OK");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "no_platform_fails_fast",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GRADCAST_OCL_CHILD", "1")
        .env("OCL_ICD_VENDORS", "/nonexistent")
        .env_remove("OCL_ICD_FILENAMES")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Non-finite values at chosen places: in the segment's last partial quad and earlier in the
/// same work-item's range, at a group's first and last element, in the head of a segment.
#[test]
fn non_finite_positions() {
    for b in backends() {
        for n in [1usize, 3, 5, 23, 4097, 10_001, 70_003] {
            let mut spots = vec![vec![n - 1], vec![0, n - 1], vec![n / 2, n - 1], vec![n / 3]];
            if n > 8 {
                spots.push(vec![n - 6, n - 1]);
                spots.push(vec![n - 5, n - 2]);
            }
            for spot in spots {
                for special in [f32::NAN, f32::NEG_INFINITY] {
                    let mut x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
                    for &i in &spot {
                        x[i] = special;
                    }
                    let mut params = EncodeParams::new(1.0);
                    check_encode(
                        b,
                        &Case {
                            x: x.clone(),
                            params,
                        },
                        8 * n + 64,
                    )
                    .unwrap();
                    if n > 2 {
                        params.segment = Some(SegmentRef {
                            id: 2,
                            offset: 1,
                            len: n - 2,
                        });
                        check_encode(b, &Case { x, params }, 8 * n + 64).unwrap();
                    }
                }
            }
        }
    }
}

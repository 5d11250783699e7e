//! The CPU backend's own quick check against the reference codec, over a grid of
//! configurations (portable, fast with and without SIMD, many small chunks) and inputs that
//! exercise the chunk seams, the cap's split and errors. The full property suite lives in
//! `gradcast-conformance`.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // std-only test

use gradcast_core::Backend;
use gradcast_core::backend::Reference;
use gradcast_core::codec::{EncodeParams, EncodingMode, SegmentRef};
use gradcast_core::wire::{self, MessageView};
use gradcast_core::{Classify, ErrorKind};
use gradcast_cpu::{Cpu, CpuConfig, Simd};

/// Every SIMD path this CPU has (AVX-512 runs only where the CPU has it: a configuration
/// that allows it falls back to AVX2 or plain loops elsewhere), over several chunk counts.
fn configs() -> Vec<Cpu> {
    let mut v = vec![Cpu::portable()];
    #[cfg(feature = "std")]
    for simd in [Simd::None, Simd::Avx2, Simd::Avx512] {
        for threads in [1, 2, 3, 5] {
            v.push(Cpu::new(
                CpuConfig::fast()
                    .with_threads(threads)
                    .with_min_chunk(1)
                    .with_max_simd(simd),
            ));
        }
    }
    v
}

/// `n` values of which about one in `every` reaches 1.0 (`±[1, 2)`), the rest in
/// `(-0.99, 0.99)`; `-0.0` here and there.
fn sparse_data(n: usize, seed: u64, every: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let u = (r >> 40) as f32 / (1u64 << 24) as f32;
            let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
            if (r >> 8).is_multiple_of(every) {
                sign * (1.0 + u)
            } else if (r >> 8) % 97 == 1 {
                -0.0
            } else {
                sign * 0.99 * u
            }
        })
        .collect()
}

/// xorshift64*: deterministic test data.
fn data(n: usize, seed: u64, spread: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let u = (r >> 40) as f32 / (1u64 << 24) as f32;
            let v = (u - 0.5) * spread;
            if r & 0xF == 0 { -0.0 } else { v }
        })
        .collect()
}

fn check(x: &[f32], params: &EncodeParams) {
    let r = Reference;
    let mut want_res = x.to_vec();
    let mut want_out = vec![0xA5u8; wire::dense_message_len(x.len().max(1)) + 64];
    let want = r.encode(&mut want_res, params, &mut want_out);
    for cpu in configs() {
        let mut res = x.to_vec();
        let mut out = vec![0x5Au8; want_out.len()];
        let got = cpu.encode(&mut res, params, &mut out);
        match (&want, &got) {
            (Ok(w), Ok(g)) => {
                assert_eq!(w, g, "{} n={} {params:?}", cpu.name(), x.len());
                assert_eq!(&want_out[..w.bytes], &out[..g.bytes], "{}", cpu.name());
                let msg = MessageView::parse(&out[..g.bytes]).unwrap();
                let mut t1 = data(x.len(), 7, 3.0);
                let mut t2 = t1.clone();
                r.decode_add(&msg, &mut t1).unwrap();
                cpu.decode_add(&msg, &mut t2).unwrap();
                assert_eq!(bits(&t1), bits(&t2), "decode {}", cpu.name());
            }
            (Err(w), Err(g)) => assert_eq!(w.kind(), g.kind(), "{}", cpu.name()),
            _ => panic!("{}: reference {want:?}, cpu {got:?}", cpu.name()),
        }
        assert_eq!(
            bits(&want_res),
            bits(&res),
            "residual {} {params:?}",
            cpu.name()
        );
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn grid_matches_reference() {
    for n in [1usize, 3, 4, 31, 32, 33, 63, 64, 65, 100, 257, 1000, 4099] {
        for (seed, tau) in [(1u64, 0.4f32), (3, 0.49), (4, 0.1)] {
            let x = data(n, seed, 1.0);
            for mode in [
                EncodingMode::Auto,
                EncodingMode::Sparse,
                EncodingMode::Bitmap,
                EncodingMode::Dense,
            ] {
                for cap in [None, Some(0), Some(1), Some(3), Some(n as u32 / 7)] {
                    for round in [0u64, 12345] {
                        let mut p = EncodeParams::new(tau);
                        p.mode = mode;
                        p.cap = cap;
                        p.round = round;
                        p.sender = seed as u32;
                        check(&x, &p);
                    }
                }
            }
            if n > 8 {
                let mut p = EncodeParams::new(tau);
                p.segment = Some(SegmentRef {
                    id: 3,
                    offset: n / 3,
                    len: n / 2,
                });
                check(&x, &p);
            }
        }
    }
}

/// Vectors long enough for the fast path's superblocks (512 elements): sparse enough for its
/// recorded lists, with a dense stretch that makes a chunk give up its list half way, with
/// caps whose split falls inside a superblock, and segments that start inside one.
#[test]
fn superblocks_match_reference() {
    for (n, every) in [(512usize, 10u64), (1537, 100), (5000, 30), (40_000, 100)] {
        let mut x = sparse_data(n, n as u64, every);
        for mode in [EncodingMode::Auto, EncodingMode::Sparse] {
            for cap in [
                None,
                Some(1),
                Some(n as u32 / 300 + 1),
                Some(n as u32 / 100),
            ] {
                let mut p = EncodeParams::new(1.0);
                p.mode = mode;
                p.cap = cap;
                p.round = 77 + n as u64;
                check(&x, &p);
            }
        }
        let mut p = EncodeParams::new(1.0);
        p.segment = Some(SegmentRef {
            id: 1,
            offset: 13,
            len: n - 100,
        });
        check(&x, &p);
        // Every element of the last third a candidate: lists overflow there.
        let third = n - n / 3;
        for v in &mut x[third..] {
            *v = if v.is_sign_negative() { -1.5 } else { 1.5 };
        }
        check(&x, &EncodeParams::new(1.0));
        let mut p = EncodeParams::new(1.0);
        p.mode = EncodingMode::Sparse;
        check(&x, &p);
    }
}

/// The AVX-512 path, on CPUs that have it.
#[cfg(feature = "std")]
#[test]
fn avx512_path_matches_reference() {
    let cpu = Cpu::new(CpuConfig::fast().with_max_simd(Simd::Avx512));
    if cpu.simd() != Simd::Avx512 {
        println!(
            "SKIP: no AVX-512 on this CPU (the fast path uses {})",
            cpu.name()
        );
        return;
    }
    assert_eq!(cpu.name(), "cpu-avx512");
    // `check` runs every configuration, the AVX-512 ones included.
    for (n, every) in [(512usize, 7u64), (4096, 50), (100_003, 1000)] {
        let x = sparse_data(n, 5, every);
        check(&x, &EncodeParams::new(1.0));
        let mut p = EncodeParams::new(1.0);
        p.cap = Some(n as u32 / (2 * every as u32) + 1);
        p.round = 3;
        check(&x, &p);
    }
}

#[cfg(feature = "std")]
#[test]
fn simd_is_what_was_asked_at_most() {
    let none = Cpu::new(CpuConfig::fast().with_max_simd(Simd::None));
    assert_eq!((none.simd(), none.name()), (Simd::None, "cpu-scalar"));
    let avx2 = Cpu::new(CpuConfig::fast().with_max_simd(Simd::Avx2));
    assert!(avx2.simd() <= Simd::Avx2);
    assert_eq!(Cpu::portable().simd(), Simd::None);
    assert_eq!(Cpu::portable().name(), "cpu-portable");
}

#[test]
fn errors_leave_residual_untouched() {
    for (n, every) in [(600usize, 20u64), (5000, 100)] {
        for bad_at in [0, 511, 512, n / 2, n - 1] {
            for bad in [f32::NAN, f32::INFINITY] {
                let mut x = sparse_data(n, 11, every);
                x[bad_at] = bad;
                check(&x, &EncodeParams::new(1.0));
                let mut p = EncodeParams::new(1.0);
                p.cap = Some(3);
                p.round = 5;
                check(&x, &p);
            }
        }
    }
    for n in [5usize, 64, 200] {
        for bad_at in [0, n / 2, n - 1] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut x = data(n, 9, 2.0);
                x[bad_at] = bad;
                check(&x, &EncodeParams::new(0.3));
                let mut p = EncodeParams::new(0.3);
                p.cap = Some(2);
                p.round = 7;
                check(&x, &p);
            }
        }
    }
    let x = data(100, 3, 2.0);
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        check(&x, &EncodeParams::new(tau));
    }
    check(&[], &EncodeParams::new(1.0));
}

#[test]
fn out_too_small_is_reported_and_harmless() {
    let x = data(300, 4, 2.0);
    let want = {
        let mut r = x.clone();
        let mut out = vec![0u8; 16];
        Reference.encode(&mut r, &EncodeParams::new(0.5), &mut out)
    };
    assert_eq!(want.unwrap_err().kind(), ErrorKind::BufferTooSmall);
    for cpu in configs() {
        let mut r = x.clone();
        let mut out = vec![0u8; 16];
        let e = cpu
            .encode(&mut r, &EncodeParams::new(0.5), &mut out)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BufferTooSmall);
        assert_eq!(bits(&r), bits(&x), "{}", cpu.name());
    }
}

//! The CUDA backend against the reference, on a device. Without a CUDA driver every test
//! prints `SKIP: no CUDA driver` and passes; `Cuda::new` must still return an error rather
//! than panic. The generic proptest suite is `gradcast-conformance --features cuda`.

use gradcast_core::CodecError;
use gradcast_core::backend::Reference;
use gradcast_core::codec::{EncodeParams, EncodingMode, SegmentRef};
use gradcast_core::wire::{self, MessageView};
use gradcast_core::{Backend, Classify, Error, ErrorKind};
use gradcast_cuda::{Cuda, CudaError, driver_available};

#[test]
fn new_never_panics_and_classifies_a_missing_driver() {
    match Cuda::new(0) {
        Ok(c) => eprintln!("device: {}", c.name()),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Device, "{e}");
            if !driver_available() {
                assert!(matches!(e, CudaError::NoDriver { .. }), "{e:?}");
            }
            eprintln!("no device: {e}");
        }
    }
    // A device that cannot exist is an error, never a panic.
    assert!(Cuda::new(usize::MAX).is_err());
}

/// The backend, or `None` after printing why the test is skipped.
fn device() -> Option<Cuda> {
    if !driver_available() {
        eprintln!("SKIP: no CUDA driver");
        return None;
    }
    match Cuda::new(0) {
        Ok(c) => Some(c),
        Err(e @ (CudaError::NoDevice { .. } | CudaError::NoDriver { .. })) => {
            eprintln!("SKIP: {e}");
            None
        }
        Err(e) => panic!("CUDA driver present but the backend failed: {e}"),
    }
}

/// xorshift64*: deterministic test data without dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Values around `tau`: many below, some above, exact ±tau, signed zeros, subnormals.
    fn value(&mut self, tau: f32) -> f32 {
        let r = self.next();
        match r % 16 {
            0 => tau,
            1 => -tau,
            2 => 0.0,
            3 => -0.0,
            4 => f32::from_bits(1 + (r >> 40) as u32 % 1000),
            5 | 6 => tau * (1.0 + (r >> 32) as f32 / u32::MAX as f32 * 4.0),
            7 => -tau * (1.0 + (r >> 32) as f32 / u32::MAX as f32 * 4.0),
            _ => tau * ((r >> 32) as f32 / u32::MAX as f32 * 2.0 - 1.0) * 0.999,
        }
    }

    fn vector(&mut self, n: usize, tau: f32, density_per_mille: u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                if self.next() % 1000 < density_per_mille {
                    self.value(tau)
                } else {
                    tau * 0.25 * ((self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                }
            })
            .collect()
    }
}

fn upload(cuda: &Cuda, v: &[f32]) -> gradcast_cuda::CudaBuffer {
    let mut b = cuda.alloc(v.len()).expect("alloc");
    cuda.upload(v, &mut b).expect("upload");
    b
}

fn download(cuda: &Cuda, b: &gradcast_cuda::CudaBuffer) -> Vec<f32> {
    let mut v = vec![0.0; cuda.len(b)];
    cuda.download(b, &mut v).expect("download");
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Encodes with both backends and checks message bytes, summary and residual bits.
fn check_encode(cuda: &Cuda, v: &[f32], params: &EncodeParams, out_len: usize) {
    let mut want_res = v.to_vec();
    let mut want_out = vec![0xA5u8; out_len];
    let want = Reference.encode(&mut want_res, params, &mut want_out);
    let mut buf = upload(cuda, v);
    let mut got_out = vec![0x5Au8; out_len];
    let got = cuda.encode(&mut buf, params, &mut got_out);
    let got_res = download(cuda, &buf);
    let ctx = format!("n={} params={params:?}", v.len());
    match (want, got) {
        (Ok(w), Ok(g)) => {
            assert_eq!(g, w, "summary, {ctx}");
            assert_eq!(&got_out[..g.bytes], &want_out[..w.bytes], "message, {ctx}");
            MessageView::parse(&got_out[..g.bytes]).expect("valid message");
        }
        (Err(w), Err(g)) => {
            assert_eq!(g.to_string(), CudaError::from(w).to_string(), "{ctx}");
            assert_eq!(g.kind(), w.kind());
            assert_eq!(bits(&got_res), bits(v), "residual changed on error, {ctx}");
        }
        (w, g) => panic!("reference {w:?} vs cuda {g:?}, {ctx}"),
    }
    assert_eq!(bits(&got_res), bits(&want_res), "residual, {ctx}");
}

#[test]
fn encode_matches_the_reference() {
    let Some(cuda) = device() else { return };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let tau = 0.125f32;
    for &n in &[
        1usize, 5, 31, 32, 33, 255, 4095, 4096, 4097, 10_000, 65_537, 300_001,
    ] {
        for &density in &[0u64, 1, 30, 400, 1000] {
            let v = rng.vector(n, tau, density);
            let out_len = wire::dense_message_len(n);
            for mode in [
                EncodingMode::Auto,
                EncodingMode::Sparse,
                EncodingMode::Bitmap,
                EncodingMode::Dense,
            ] {
                let mut p = EncodeParams::new(tau);
                p.mode = mode;
                p.sender = 7;
                p.round = rng.next() % 1000;
                check_encode(&cuda, &v, &p, out_len);
                // Capped: a rotating start, both halves of the cyclic scan.
                for cap in [0u32, 1, 3, (n / 7) as u32] {
                    p.cap = Some(cap);
                    check_encode(&cuda, &v, &p, out_len);
                }
                p.cap = None;
                // A segment in the middle.
                if n > 8 {
                    p.segment = Some(SegmentRef {
                        id: 3,
                        offset: n / 3,
                        len: n / 2,
                    });
                    check_encode(&cuda, &v, &p, out_len);
                }
            }
        }
    }
}

#[test]
fn encode_errors_match_and_leave_the_residual() {
    let Some(cuda) = device() else { return };
    let mut rng = Rng(42);
    let n = 20_000;
    let mut v = rng.vector(n, 0.5, 100);
    check_encode(&cuda, &v, &EncodeParams::new(0.0), 1 << 20); // bad tau
    check_encode(&cuda, &v, &EncodeParams::new(0.5), 10); // buffer too small
    let mut p = EncodeParams::new(0.5);
    p.segment = Some(SegmentRef {
        id: 0,
        offset: n - 1,
        len: 2,
    });
    check_encode(&cuda, &v, &p, 1 << 20); // segment out of range
    v[17_001] = f32::INFINITY;
    v[12_345] = f32::NAN;
    v[19_999] = f32::NEG_INFINITY;
    check_encode(&cuda, &v, &EncodeParams::new(0.5), 1 << 20);
    let buf = upload(&cuda, &v);
    match cuda.count(&buf, 0..n, 0.5) {
        Err(CudaError::Core(Error::Codec(CodecError::NonFinite { index, bits }))) => {
            assert_eq!(index, 12_345);
            assert_eq!(bits, f32::NAN.to_bits());
        }
        other => panic!("{other:?}"),
    }
    match cuda.count(&buf, 13_000..n, 0.5) {
        Err(CudaError::Core(Error::Codec(CodecError::NonFinite { index, .. }))) => {
            assert_eq!(index, 17_001)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn count_matches_the_reference() {
    let Some(cuda) = device() else { return };
    let mut rng = Rng(7);
    for &n in &[1usize, 100, 4096, 123_457] {
        let v = rng.vector(n, 1.0, 500);
        let buf = upload(&cuda, &v);
        for range in [0..n, n / 3..n, 0..0, n..n] {
            let want = Reference.count(&v, range.clone(), 1.0).unwrap();
            assert_eq!(cuda.count(&buf, range, 1.0).unwrap(), want);
        }
    }
}

#[test]
fn decode_add_matches_the_reference() {
    let Some(cuda) = device() else { return };
    let mut rng = Rng(99);
    for &n in &[1usize, 7, 4099, 50_000] {
        let v = rng.vector(n, 0.25, 300);
        for mode in [
            EncodingMode::Sparse,
            EncodingMode::Bitmap,
            EncodingMode::Dense,
        ] {
            let mut p = EncodeParams::new(0.25);
            p.mode = mode;
            let mut res = v.clone();
            let mut out = vec![0u8; wire::dense_message_len(n)];
            let s = Reference.encode(&mut res, &p, &mut out).unwrap();
            let msg = MessageView::parse(&out[..s.bytes]).unwrap();
            let base = rng.vector(n, 1.0, 1000);
            let mut want = base.clone();
            Reference.decode_add(&msg, &mut want).unwrap();
            let mut target = upload(&cuda, &base);
            cuda.decode_add(&msg, &mut target).unwrap();
            assert_eq!(
                bits(&download(&cuda, &target)),
                bits(&want),
                "n={n} {mode:?}"
            );
            // A message for another size is rejected and the target untouched.
            let mut wrong = upload(&cuda, &base[..n.saturating_sub(1).max(1)]);
            if n > 1 {
                let e = cuda.decode_add(&msg, &mut wrong).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::SizeMismatch);
            }
        }
    }
}

#[test]
fn vector_ops_match_the_reference() {
    let Some(cuda) = device() else { return };
    let mut rng = Rng(5);
    let n = 70_001;
    let a = rng.vector(n, 3.0, 1000);
    let b = rng.vector(n, 0.7, 1000);

    let (mut ra, rb) = (a.clone(), b.clone());
    let (mut ga, gb) = (upload(&cuda, &a), upload(&cuda, &b));
    Reference.add_assign(&mut ra, &rb).unwrap();
    cuda.add_assign(&mut ga, &gb).unwrap();
    assert_eq!(bits(&download(&cuda, &ga)), bits(&ra), "add_assign");

    for scale in [1.0f32, 0.1, -3.7] {
        Reference.sub_scaled(&mut ra, &rb, scale).unwrap();
        cuda.sub_scaled(&mut ga, &gb, scale).unwrap();
        assert_eq!(bits(&download(&cuda, &ga)), bits(&ra), "sub_scaled {scale}");
    }

    for (range, limit) in [(0..n, 2.0f32), (100..n - 100, 0.5), (0..n, 1e9)] {
        let want = Reference.clip(&mut ra, range.clone(), limit).unwrap();
        let got = cuda.clip(&mut ga, range.clone(), limit).unwrap();
        assert_eq!(got, want, "clip stats");
        assert_eq!(bits(&download(&cuda, &ga)), bits(&ra), "clip values");
        let want = Reference.stats(&ra, range.clone()).unwrap();
        assert_eq!(cuda.stats(&ga, range).unwrap(), want, "stats");
    }

    Reference.fill(&mut ra, -1.5).unwrap();
    cuda.fill(&mut ga, -1.5).unwrap();
    assert_eq!(bits(&download(&cuda, &ga)), bits(&ra), "fill");
    cuda.sync().unwrap();

    let mut short = cuda.alloc(n - 1).unwrap();
    assert_eq!(
        cuda.add_assign(&mut short, &gb).unwrap_err().kind(),
        ErrorKind::SizeMismatch
    );
    let e = cuda.clip(&mut ga, 5..n + 1, 1.0).unwrap_err();
    assert!(matches!(
        e,
        CudaError::Core(Error::Codec(CodecError::SegmentOutOfRange { .. }))
    ));
    // Empty buffers work everywhere.
    let mut empty = cuda.alloc(0).unwrap();
    cuda.upload(&[], &mut empty).unwrap();
    cuda.fill(&mut empty, 1.0).unwrap();
    assert_eq!(cuda.count(&empty, 0..0, 1.0).unwrap(), 0);
}

#[test]
fn the_benchmark_data_has_the_advertised_density() {
    // CPU only: the generator the benchmark and the torch comparison share.
    let n = 1 << 20;
    let v = gradcast_cuda::bench::synthetic(n, 1000, 1e-3);
    let k = gradcast_cuda::bench::expected_candidates(n, 1000);
    let passes = v.iter().filter(|x| x.abs() >= 1e-3).count() as u64;
    assert_eq!(passes, k);
    let density = k as f64 / n as f64;
    assert!((0.0008..0.0012).contains(&density), "density {density}");
}

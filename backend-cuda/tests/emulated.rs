//! The real kernel sources (`kernels/*.cu`), compiled with the host C++ compiler against a
//! small CPU emulation of CUDA (`tests/emu/cuda_shim.h`: one fiber per CUDA thread, block
//! barriers, warp ballots and shuffles) and run without a GPU, against the reference codec.
//!
//! This checks the CUDA code itself (indexing, ballots, scans, the selection, payload layout,
//! rounding) where no GPU is available; `tests/device.rs` repeats the comparison on a device.
//! Without a C++20 compiler (`$CXX`, else `c++`) the test prints `SKIP: ...`.

use gradcast_core::backend::slices;
use gradcast_core::codec::{self, EncodeParams, EncodingMode, Plan};
use gradcast_core::wire::{self, Encoding, HEADER_LEN, MessageView};
use std::path::{Path, PathBuf};
use std::process::Command;

const NO_INDEX: u64 = u64::MAX;

/// Builds the harness, or `None` (after printing why) when there is no C++ compiler.
fn harness(dir: &Path) -> Option<PathBuf> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("SKIP: no C++ compiler ({cxx}) to build the CUDA emulation harness");
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emu/harness.cpp");
    let exe = dir.join("harness");
    let out = Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-ffp-contract=off", "-pthread"])
        .args(["-Wall", "-Wno-unknown-pragmas", "-Werror"])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C++ compiler");
    assert!(
        out.status.success(),
        "the kernels do not compile for the CPU emulation:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

#[derive(Default)]
struct Req(Vec<u8>);

impl Req {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn f32(&mut self, v: f32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn f32s(&mut self, v: &[f32]) -> &mut Self {
        v.iter().for_each(|x| {
            self.f32(*x);
        });
        self
    }
}

struct Resp<'a>(&'a [u8]);

impl Resp<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn run(exe: &Path, dir: &Path, req: &Req) -> Vec<u8> {
    let (i, o) = (dir.join("req.bin"), dir.join("resp.bin"));
    std::fs::write(&i, &req.0).unwrap();
    let out = Command::new(exe)
        .arg(&i)
        .arg(&o)
        .output()
        .expect("run harness");
    assert!(
        out.status.success(),
        "harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&o).unwrap()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn vector(&mut self, n: usize, tau: f32, per_mille: u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let r = self.next();
                if r % 1000 < per_mille {
                    match (r >> 10) % 6 {
                        0 => tau,
                        1 => -tau,
                        2 => tau * 3.5,
                        3 => -tau * (1.0 + self.unit()),
                        _ => tau * (1.0 + 3.0 * self.unit()),
                    }
                } else {
                    match r % 50 {
                        0 => -0.0,
                        1 => f32::from_bits(1 + (r >> 40) as u32 % 1000),
                        _ => tau * (self.unit() - 0.5),
                    }
                }
            })
            .collect()
    }
}

struct EncodeCase {
    x: Vec<f32>,
    params: EncodeParams,
    want_out: Vec<u8>,
    want_res: Vec<f32>,
    want_bytes: usize,
    plan: Plan,
    candidates: u64,
    c_head: usize,
    truncated: bool,
}

fn encode_case(x: Vec<f32>, params: EncodeParams) -> EncodeCase {
    let n = x.len();
    let mut want_res = x.clone();
    let mut want_out = vec![0u8; wire::dense_message_len(n)];
    let s = codec::encode(&mut want_res, &params, &mut want_out).expect("reference encode");
    let tau = params.tau;
    let candidates = codec::count(&x, tau).unwrap();
    let mut c_head = 0;
    let mut truncated = false;
    let plan = Plan::new(&params, n, candidates, want_out.len(), |start| {
        truncated = true;
        c_head = x[..start]
            .iter()
            .filter(|v| codec::passes(**v, tau))
            .count();
        candidates - c_head
    })
    .unwrap();
    EncodeCase {
        x,
        params,
        want_out,
        want_res,
        want_bytes: s.bytes,
        plan,
        candidates: candidates as u64,
        c_head,
        truncated,
    }
}

#[test]
fn the_kernels_match_the_reference_on_the_cpu_emulation() {
    let dir = std::env::temp_dir().join(format!("gradcast-cuda-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(exe) = harness(&dir) else { return };
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let tau = 0.25f32;

    // ---- encode: count, scan, head count, ranked write, debit.
    let mut cases = Vec::new();
    for &n in &[1usize, 33, 4096, 4097, 9001] {
        for &per_mille in &[0u64, 20, 400, 1000] {
            let x = rng.vector(n, tau, per_mille);
            for mode in [EncodingMode::Sparse, EncodingMode::Bitmap] {
                for cap in [None, Some(1u32), Some((n as u32 / 9).max(2))] {
                    let mut p = EncodeParams::new(tau);
                    p.mode = mode;
                    p.cap = cap;
                    p.round = rng.next() % 5000;
                    cases.push(encode_case(x.clone(), p));
                }
            }
        }
    }
    let mut req = Req::default();
    for c in &cases {
        let start = if c.truncated {
            c.plan.start as u32
        } else {
            u32::MAX
        };
        let mode = u32::from(c.plan.encoding == Encoding::Bitmap);
        req.u32(1).u32(c.x.len() as u32).f32(tau).u32(start);
        req.u32(c.plan.take_head as u32)
            .u32(c.c_head as u32)
            .u32(c.plan.take_tail as u32)
            .u32(mode)
            .f32s(&c.x);
    }
    let resp = run(&exe, &dir, &req);
    let mut r = Resp(&resp);
    for c in &cases {
        let n = c.x.len();
        let ctx = format!("n={n} {:?} plan={:?}", c.params, c.plan);
        assert_eq!(r.u64(), NO_INDEX, "first_bad, {ctx}");
        assert_eq!(r.u64(), c.candidates, "total, {ctx}");
        let head = r.u64();
        if c.truncated {
            assert_eq!(head as usize, c.c_head, "head count, {ctx}");
        }
        let want_payload = &c.want_out[HEADER_LEN..c.want_bytes];
        if c.plan.encoding == Encoding::Sparse {
            let got = r.take(4 * (c.plan.take_head + c.plan.take_tail));
            assert_eq!(got, want_payload, "sparse entries, {ctx}");
        } else {
            let got = r.take(4 * n.div_ceil(16));
            assert_eq!(&got[..want_payload.len()], want_payload, "bitmap, {ctx}");
            assert!(
                got[want_payload.len()..].iter().all(|&b| b == 0),
                "bitmap padding, {ctx}"
            );
        }
        let res = r.f32s(n);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&res), bits(&c.want_res), "residual, {ctx}");
    }
    assert!(r.0.is_empty());

    // ---- the scan over several chunks of GC_SCAN_THREADS * 4 tile counts (vectors of more
    // than 2^24 elements, too large to encode through the emulation).
    for tiles in [1usize, 4095, 4096, 4097, 12_345] {
        let counts: Vec<u32> = (0..tiles).map(|_| (rng.next() % 4097) as u32).collect();
        let mut req = Req::default();
        req.u32(4).u32(tiles as u32);
        counts.iter().for_each(|&c| {
            req.u32(c);
        });
        let resp = run(&exe, &dir, &req);
        let mut r = Resp(&resp);
        let offsets: Vec<u32> = r
            .take(4 * tiles)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut run_sum = 0u64;
        for (i, (&o, &c)) in offsets.iter().zip(&counts).enumerate() {
            assert_eq!(o as u64, run_sum, "offset of tile {i} of {tiles}");
            run_sum += c as u64;
        }
        assert_eq!(r.u64(), run_sum, "total of {tiles} tiles");
    }

    // ---- the first non-finite value, and nothing written.
    let mut x = rng.vector(9001, tau, 100);
    x[8000] = f32::NAN;
    x[4100] = f32::NEG_INFINITY;
    x[5000] = f32::INFINITY;
    let mut req = Req::default();
    req.u32(1).u32(9001).f32(tau).u32(u32::MAX);
    req.u32(0).u32(0).u32(5).u32(0).f32s(&x);
    let resp = run(&exe, &dir, &req);
    let mut r = Resp(&resp);
    assert_eq!(r.u64(), 4100);
    r.u64();
    r.u64();
    r.take(20);
    let res = r.f32s(9001);
    assert!(res.iter().zip(&x).all(|(a, b)| a.to_bits() == b.to_bits()));

    // ---- decode-add of sparse, bitmap and dense messages.
    let mut req = Req::default();
    let mut want = Vec::new();
    for &n in &[1usize, 4097, 9001] {
        for mode in [
            EncodingMode::Sparse,
            EncodingMode::Bitmap,
            EncodingMode::Dense,
        ] {
            let mut x = rng.vector(n, tau, 300);
            let mut out = vec![0u8; wire::dense_message_len(n)];
            let mut p = EncodeParams::new(tau);
            p.mode = mode;
            let s = codec::encode(&mut x, &p, &mut out).unwrap();
            let msg = MessageView::parse(&out[..s.bytes]).unwrap();
            let target = rng.vector(n, 1.0, 1000);
            let mut expect = target.clone();
            codec::decode_add(&msg, &mut expect).unwrap();
            want.push(expect);
            let enc = msg.encoding() as u32;
            req.u32(2).u32(n as u32).f32(tau).u32(enc).u32(msg.count());
            req.u32(msg.payload().len() as u32);
            req.0.extend_from_slice(msg.payload());
            req.f32s(&target);
        }
    }
    let resp = run(&exe, &dir, &req);
    let mut r = Resp(&resp);
    for w in &want {
        let got = r.f32s(w.len());
        assert!(
            got.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
            "decode-add, n={}",
            w.len()
        );
    }

    // ---- vector operations.
    let n = 5003;
    let a = rng.vector(n, 3.0, 1000);
    let b = rng.vector(n, 0.7, 1000);
    let ops: [(u32, f32); 7] = [
        (0, -1.5),
        (1, 0.0),
        (2, 1.0),
        (2, 0.1),
        (2, -3.7),
        (3, 2.0),
        (4, 2.0),
    ];
    let mut req = Req::default();
    for (op, s) in ops {
        req.u32(3).u32(op).u32(n as u32).f32(s).f32s(&a).f32s(&b);
    }
    let resp = run(&exe, &dir, &req);
    let mut r = Resp(&resp);
    for (op, s) in ops {
        let got = r.f32s(n);
        let count = r.u64();
        let mut want = a.clone();
        let mut want_count = 0;
        match op {
            0 => want.fill(s),
            1 => want.iter_mut().zip(&b).for_each(|(x, y)| *x += *y),
            2 => slices::sub_scaled(&mut want, &b, s),
            3 => want_count = slices::clip(&mut want.clone(), s).elements,
            _ => {
                slices::clip(&mut want, s);
            }
        }
        assert!(
            got.iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "vector op {op} ({s})"
        );
        assert_eq!(count, want_count, "vector op {op} count");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

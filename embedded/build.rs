//! Build script of the firmware crate.
//!
//! * For the microcontroller (`target_os = "none"`): puts `memory.x` on the linker's search
//!   path and links the binaries with cortex-m-rt's `link.x`.
//! * For every target: writes the data the firmware embeds at build time into `OUT_DIR`:
//!   `reference.bin`, a sequence of messages (every encoding, a cap, segments) for one vector
//!   of N elements, made with the core's codec on the build machine; and `kat.bin`, the
//!   known-answer vectors of `core/vectors/kat.txt` (written by an independent Python
//!   implementation of the format) in the binary layout `src/kat.rs` reads.

use std::path::{Path, PathBuf};
use std::{env, fs};

use gradcast_core::codec::{self, EncodeParams, EncodingMode, SegmentRef};
use gradcast_core::packet::Messages;
use gradcast_core::wire::{self, Encoding};

#[path = "src/stream.rs"]
#[allow(dead_code)] // The build script uses only part of the shared stream module.
mod stream;

use stream::{N, REFERENCE_SEED, SCALE, SplitMix64};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/stream.rs");

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
        println!("cargo:rerun-if-changed=memory.x");
        println!("cargo:rustc-link-search={}", out.display());
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        // Sections start at their memory regions' origins, not at page-aligned offsets.
        println!("cargo:rustc-link-arg-bins=--nmagic");
    }

    write(&out.join("reference.bin"), &reference_messages());

    // The vectors are part of the core crate (`core/vectors/kat.txt`, parsed by the core): a
    // change to them rebuilds this build dependency, and so reruns this script.
    let vectors = gradcast_core::kat::vectors();
    write(&out.join("kat.bin"), &kat_blob(&vectors));
}

fn write(path: &Path, bytes: &[u8]) {
    // Rewrite only on change, so dependants are not rebuilt for nothing.
    if fs::read(path).ok().as_deref() != Some(bytes) {
        fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// What three other workers send to a vector of N elements over four rounds: a dense
/// warm-up message, bitmap and sparse messages, capped (truncated) messages, and segment
/// messages at their offsets, laid end to end.
fn reference_messages() -> Vec<u8> {
    let tau = 2e-3f32;
    let mut out = Vec::new();
    let mut buf = vec![0u8; wire::dense_message_len(N)];
    for sender in 1..=3u32 {
        let mut rng = SplitMix64::new(REFERENCE_SEED ^ u64::from(sender));
        let mut residual = vec![0.0f32; N];
        for round in 0..4u64 {
            for r in residual.iter_mut() {
                *r += rng.update_value(SCALE);
            }
            let base = EncodeParams {
                sender,
                round,
                ..EncodeParams::new(tau)
            };
            let mut plans = Vec::new();
            match sender {
                // A dense warm-up round, then automatic encodings.
                1 if round == 0 => plans.push(EncodeParams {
                    mode: EncodingMode::Dense,
                    ..base
                }),
                1 => plans.push(base),
                // At most 40 entries per message; the last round forced to the bitmap.
                2 => plans.push(EncodeParams {
                    cap: Some(40),
                    mode: if round == 3 {
                        EncodingMode::Bitmap
                    } else {
                        EncodingMode::Auto
                    },
                    ..base
                }),
                // Two segments, each its own message.
                _ => {
                    for (id, offset, len) in [(1u16, 0usize, 1024usize), (2, 1024, N - 1024)] {
                        plans.push(EncodeParams {
                            segment: Some(SegmentRef { id, offset, len }),
                            ..base
                        });
                    }
                }
            }
            for params in plans {
                let s = codec::encode(&mut residual, &params, &mut buf)
                    .unwrap_or_else(|e| panic!("reference message {sender}/{round}: {e}"));
                out.extend_from_slice(&buf[..s.bytes]);
            }
        }
    }
    // The sequence must keep covering what it is meant to cover.
    let mut seen = [false; 5];
    for m in Messages::new(&out) {
        let m = m.expect("a reference message parses");
        let i = match m.encoding() {
            Encoding::Sparse => 0,
            Encoding::Bitmap => 1,
            Encoding::Dense => 2,
        };
        seen[i] = true;
        seen[3] |= m.header().truncated();
        seen[4] |= m.header().is_segment();
    }
    assert!(
        seen.iter().all(|&s| s),
        "the reference messages no longer cover [sparse, bitmap, dense, truncated, segment] \
         messages: {seen:?}"
    );
    out
}

/// The known-answer vectors in the layout of `src/kat.rs`.
fn kat_blob(vectors: &[gradcast_core::kat::Kat]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(vectors.len() as u32).to_le_bytes());
    for k in vectors {
        let n = k.residual.len();
        assert!(
            k.residual_after.len() == n && k.decoded.len() == n,
            "{}: residual, residual_after and decoded differ in length",
            k.name
        );
        assert!(k.name.len() < 256, "{}: name too long", k.name);
        b.push(k.name.len() as u8);
        b.extend_from_slice(k.name.as_bytes());
        b.extend_from_slice(&(n as u32).to_le_bytes());
        let p = &k.params;
        b.extend_from_slice(&p.tau.to_bits().to_le_bytes());
        b.extend_from_slice(&p.sender.to_le_bytes());
        b.extend_from_slice(&p.round.to_le_bytes());
        b.push(p.cap.is_some() as u8);
        b.extend_from_slice(&p.cap.unwrap_or(0).to_le_bytes());
        b.push(match p.mode {
            EncodingMode::Auto => 0,
            EncodingMode::Sparse => 1,
            EncodingMode::Bitmap => 2,
            EncodingMode::Dense => 3,
        });
        let seg = p.segment.unwrap_or(SegmentRef {
            id: 0,
            offset: 0,
            len: 0,
        });
        b.push(p.segment.is_some() as u8);
        b.extend_from_slice(&seg.id.to_le_bytes());
        b.extend_from_slice(&(seg.offset as u32).to_le_bytes());
        b.extend_from_slice(&(seg.len as u32).to_le_bytes());
        b.extend_from_slice(&(k.message.len() as u32).to_le_bytes());
        b.extend_from_slice(&k.message);
        for v in [&k.residual, &k.residual_after, &k.decoded] {
            for x in v.iter() {
                b.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
    }
    b
}

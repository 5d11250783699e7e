//! Writes encoder checkpoints to seed the `checkpoint_restore` fuzz target
//! (`scripts/fuzz.sh` runs it): `cargo run -p gradcast-core --example checkpoint_seed -- DIR`.
//! The shapes match `fuzz/fuzz_targets/checkpoint_restore.rs`.
// A host-only helper program.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::CodecError;
use gradcast_core::backend::{Backend, Reference};
use gradcast_core::encoder::{Adaptive, Encoder, EncoderConfig, Fixed, Policy, Segment};
use gradcast_core::{Classify, Error};

const N: usize = 64;

fn run<const S: usize>(mut enc: Encoder<Policy, S>, path: &std::path::Path) -> Result<(), Error> {
    let b = Reference;
    let mut residual = b.alloc(N)?;
    let mut out = vec![0u8; enc.max_packet_bytes()];
    for round in 0..5u64 {
        for (i, r) in residual.iter_mut().enumerate() {
            *r += ((i as f32 * 0.37 + round as f32).sin()) * 1e-3;
        }
        enc.encode(&b, &mut residual, 0, round, &mut out)?;
    }
    let mut scratch = vec![0.0f32; N];
    let mut ck = vec![0u8; enc.checkpoint_len()];
    let len = enc.save(&b, &residual, &mut scratch, &mut ck)?;
    std::fs::write(path, &ck[..len]).map_err(|_| CodecError::BufferTooSmall {
        needed: len,
        got: 0,
    })?;
    Ok(())
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("checkpoint_seed: cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let plain = Encoder::<Policy, 1>::new(
        N,
        Policy::from(Adaptive::default()),
        EncoderConfig::default(),
    );
    let segmented = Encoder::<Policy, 2>::segmented(
        EncoderConfig::default(),
        [
            Segment {
                id: 1,
                len: 32,
                policy: Policy::from(Fixed::new(0.5).expect("valid")),
            },
            Segment {
                id: 2,
                len: 32,
                policy: Policy::from(Adaptive::default()),
            },
        ],
    );
    let results = [
        plain.and_then(|e| run::<1>(e, &dir.join("plain"))),
        segmented.and_then(|e| run::<2>(e, &dir.join("segmented"))),
    ];
    for r in results {
        if let Err(e) = r {
            eprintln!("checkpoint_seed: {e} ({})", e.kind());
            std::process::exit(1);
        }
    }
}

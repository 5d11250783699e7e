//! Encoder checkpoints (issue 3): save, restore, continue bit-identically; malformed
//! checkpoints are typed errors that change nothing.

mod encoder_common;

use encoder_common::{Driver, update};
use gradcast_core::backend::Reference;
use gradcast_core::encoder::checkpoint::{self, CheckpointView, HEADER_LEN, SEGMENT_RECORD_LEN};
use gradcast_core::encoder::policy::kind;
use gradcast_core::encoder::{
    Adaptive, ByteBudget, Clipping, Encoder, EncoderConfig, Fixed, Policy, Segment, TargetSparsity,
    Warmup,
};
use gradcast_core::{CheckpointError, CodecError, ConfigError};
use gradcast_core::{Classify, Error, ErrorKind};

const N: usize = 3000;

fn config() -> EncoderConfig {
    EncoderConfig {
        clipping: Some(Clipping {
            factor: 3.0,
            every: 4,
        }),
        warmup: Warmup::Ramp {
            rounds: 6,
            start: 0.2,
            end: 0.002,
        },
        residual_stats: true,
    }
}

fn segmented() -> Encoder<Policy, 4> {
    Encoder::segmented(
        config(),
        [
            Segment {
                id: 1,
                len: 1000,
                policy: Policy::from(Adaptive::default()),
            },
            Segment {
                id: 2,
                len: 500,
                policy: TargetSparsity::new(1e-3, 5e-3, 0.95).unwrap().into(),
            },
            Segment {
                id: 3,
                len: 1500,
                policy: ByteBudget::new(48 + 4 * 20).unwrap().into(),
            },
        ],
    )
    .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The update of round `r` (the same in every run).
fn upd(r: u64) -> Vec<f32> {
    update(42, r, N, 1e-3)
}

/// Runs `rounds` rounds uninterrupted and returns every packet and the final driver.
fn uninterrupted(mk: fn() -> Encoder<Policy, 4>, rounds: u64) -> (Vec<Vec<u8>>, Driver<Policy, 4>) {
    let mut d = Driver::new(mk());
    let packets = (0..rounds).map(|r| d.step(&upd(r)).1).collect();
    (packets, d)
}

fn check_continuation(mk: fn() -> Encoder<Policy, 4>, save_at: u64, rounds: u64) {
    let (reference, full) = uninterrupted(mk, rounds);

    let mut first = Driver::new(mk());
    for r in 0..save_at {
        assert_eq!(first.step(&upd(r)).1, reference[r as usize], "round {r}");
    }
    let saved = first
        .encoder
        .save_alloc(&Reference, &first.residual)
        .unwrap();
    assert_eq!(saved.len(), first.encoder.checkpoint_len());
    drop(first);

    // A fresh process: a new encoder (same configuration), a residual full of garbage.
    let mut second = Driver::new(mk());
    second.residual = vec![123.0; N];
    second.round = save_at;
    second
        .encoder
        .restore_alloc(&Reference, &saved, &mut second.residual)
        .unwrap();
    assert_eq!(second.encoder.index(), save_at);
    for r in save_at..rounds {
        let (_, packet) = second.step(&upd(r));
        assert_eq!(
            packet, reference[r as usize],
            "save at {save_at}: round {r} differs"
        );
    }
    assert_eq!(bits(&second.residual), bits(&full.residual));
    assert_eq!(second.encoder.policy_states(), full.encoder.policy_states());
    let (a, b) = (second.encoder.cumulative(), full.encoder.cumulative());
    assert_eq!(a.clipped_mass.to_bits(), b.clipped_mass.to_bits());
    assert_eq!(a, b);
    if save_at < rounds {
        assert_eq!(second.encoder.last_round(), full.encoder.last_round());
        assert!(
            second
                .encoder
                .segment_stats()
                .eq(full.encoder.segment_stats())
        );
    }
}

#[test]
fn continuation_is_bit_identical_over_50_rounds() {
    // Saved in the ramp, right after it, on a clipping round, and late.
    for save_at in [0, 3, 6, 8, 20, 37, 49, 50] {
        check_continuation(segmented, save_at, 50);
    }
}

#[test]
fn continuation_unsegmented() {
    fn mk() -> Encoder<Policy, 4> {
        Encoder::new(
            N,
            Adaptive::default().into(),
            EncoderConfig {
                clipping: Some(Clipping::DL4J),
                warmup: Warmup::Dense { rounds: 2 },
                residual_stats: false,
            },
        )
        .unwrap()
    }
    for save_at in [1, 2, 25] {
        check_continuation(mk, save_at, 50);
    }
}

#[test]
fn checkpoint_view_reports_the_state() {
    let (_, d) = uninterrupted(segmented, 10);
    let bytes = d.encoder.save_alloc(&Reference, &d.residual).unwrap();
    let v = CheckpointView::parse(&bytes).unwrap();
    assert_eq!(v.n(), N as u64);
    assert!(v.is_segmented());
    assert_eq!(v.segment_count(), 3);
    assert_eq!(v.rounds(), 10);
    assert_eq!(v.cumulative(), *d.encoder.cumulative());
    let recs: Vec<_> = v.segments().collect();
    assert_eq!(
        recs.iter()
            .map(|r| (r.id, r.offset, r.len))
            .collect::<Vec<_>>(),
        [(1, 0, 1000), (2, 1000, 500), (3, 1500, 1500)]
    );
    assert_eq!(recs[0].state.kind, kind::ADAPTIVE);
    assert_eq!(recs[2].state.kind, kind::BYTE_BUDGET);
    for (r, s) in recs.iter().zip(d.encoder.policy_states()) {
        assert_eq!(r.state, s);
    }
    assert_eq!(bits(&v.residual().collect::<Vec<_>>()), bits(&d.residual));
    assert_eq!(bytes.len(), checkpoint::checkpoint_len(N, 3));
}

/// Rewrites the checksum after a deliberate edit, so the edit reaches the content checks.
fn reseal(bytes: &mut [u8]) {
    let sum = gradcast_core::wire::checksum(&bytes[..28], &bytes[32..]);
    bytes[28..32].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn malformed_checkpoints_are_rejected_and_change_nothing() {
    let (_, d) = uninterrupted(segmented, 12);
    let good = d.encoder.save_alloc(&Reference, &d.residual).unwrap();

    let mut target = segmented();
    let mut residual = vec![7.0f32; N];
    let try_restore = |target: &mut Encoder<Policy, 4>, residual: &mut Vec<f32>, bytes: &[u8]| {
        let e = target
            .restore_alloc(&Reference, bytes, residual)
            .unwrap_err();
        // Nothing changed.
        assert_eq!(target.index(), 0);
        assert!(target.policy_states().iter().all(|s| s.tau.is_nan()));
        assert!(residual.iter().all(|&v| v == 7.0));
        e
    };

    // Truncated: every prefix.
    for len in 0..good.len() {
        let e = try_restore(&mut target, &mut residual, &good[..len]);
        assert!(
            matches!(e, Error::Checkpoint(CheckpointError::Truncated { .. })),
            "prefix {len}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Malformed);
    }
    // Trailing bytes.
    let mut long = good.clone();
    long.push(0);
    let e = try_restore(&mut target, &mut residual, &long);
    assert_eq!(
        e,
        Error::Checkpoint(CheckpointError::LengthMismatch {
            declared: good.len() as u64,
            actual: good.len() + 1
        })
    );
    // Bad magic: a wire message is not a checkpoint.
    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GCST");
    let e = try_restore(&mut target, &mut residual, &bad);
    assert_eq!(
        e,
        Error::Checkpoint(CheckpointError::BadMagic { found: *b"GCST" })
    );
    assert!(e.to_string().contains("checkpoint"));
    // Another version.
    let mut bad = good.clone();
    bad[4] = 2;
    let e = try_restore(&mut target, &mut residual, &bad);
    assert_eq!(
        e,
        Error::Checkpoint(CheckpointError::UnsupportedVersion { found: 2 })
    );
    assert_eq!(e.kind(), ErrorKind::Malformed);
    // Corrupted: every single-bit flip anywhere is rejected (most by the checksum).
    let mut checksum_errors = 0;
    for i in 0..good.len() {
        for bit in [0, 3, 7] {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            let e = try_restore(&mut target, &mut residual, &bad);
            if let Error::Checkpoint(CheckpointError::ChecksumMismatch { .. }) = e {
                assert_eq!(e.kind(), ErrorKind::Checksum);
                checksum_errors += 1;
            }
        }
    }
    assert!(checksum_errors > 3 * (good.len() - HEADER_LEN));
    // Wrong N: a valid checkpoint of another encoder.
    let mut other: Encoder<Policy, 4> =
        Encoder::new(N + 1, Adaptive::default().into(), EncoderConfig::default()).unwrap();
    let mut r = vec![0.0; N + 1];
    let e = other.restore_alloc(&Reference, &good, &mut r).unwrap_err();
    assert_eq!(
        e,
        Error::Checkpoint(CheckpointError::ShapeMismatch {
            what: "N",
            expected: N as u64 + 1,
            found: N as u64
        })
    );
    assert_eq!(e.kind(), ErrorKind::SizeMismatch);
    // Same N, unsegmented.
    let mut other: Encoder<Policy, 4> =
        Encoder::new(N, Adaptive::default().into(), EncoderConfig::default()).unwrap();
    let e = other
        .restore_alloc(&Reference, &good, &mut vec![0.0; N])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Checkpoint(CheckpointError::ShapeMismatch {
                what: "segmented flag",
                ..
            })
        ),
        "{e:?}"
    );
    // Same N, other segment lengths.
    let mut other: Encoder<Policy, 4> = Encoder::segmented(
        config(),
        [
            Segment {
                id: 1,
                len: 1500,
                policy: Policy::from(Adaptive::default()),
            },
            Segment {
                id: 2,
                len: 1500,
                policy: Adaptive::default().into(),
            },
        ],
    )
    .unwrap();
    let e = other
        .restore_alloc(&Reference, &good, &mut vec![0.0; N])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Checkpoint(CheckpointError::ShapeMismatch {
                what: "segment count",
                ..
            })
        ),
        "{e:?}"
    );
    // Same layout, another policy kind in segment 2.
    let mut other: Encoder<Policy, 4> = Encoder::segmented(
        config(),
        [
            Segment {
                id: 1,
                len: 1000,
                policy: Policy::from(Adaptive::default()),
            },
            Segment {
                id: 2,
                len: 500,
                policy: Fixed::new(1.0).unwrap().into(),
            },
            Segment {
                id: 3,
                len: 1500,
                policy: ByteBudget::new(100).unwrap().into(),
            },
        ],
    )
    .unwrap();
    let e = other
        .restore_alloc(&Reference, &good, &mut vec![0.0; N])
        .unwrap_err();
    assert_eq!(
        e,
        Error::Config(ConfigError::PolicyMismatch {
            expected: kind::FIXED,
            found: kind::TARGET_SPARSITY
        })
    );
    // Another segment id.
    let mut bad = good.clone();
    bad[HEADER_LEN + SEGMENT_RECORD_LEN] = 9;
    reseal(&mut bad);
    let e = try_restore(&mut target, &mut residual, &bad);
    assert!(
        matches!(
            e,
            Error::Checkpoint(CheckpointError::ShapeMismatch {
                what: "segment id",
                expected: 2,
                found: 9
            })
        ),
        "{e:?}"
    );

    // Well sealed but semantically broken: typed content errors.
    let residual_at = good.len() - 4 * N;
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "NaN residual",
            Box::new(move |b| {
                b[residual_at..residual_at + 4].copy_from_slice(&f32::NAN.to_le_bytes())
            }),
        ),
        ("unknown flag", Box::new(|b| b[6] = 0x80)),
        ("reserved header", Box::new(|b| b[26] = 1)),
        ("reserved record", Box::new(|b| b[HEADER_LEN + 5] = 1)),
        ("length field", Box::new(|b| b[8] ^= 4)),
        ("N zero", Box::new(|b| b[16..24].fill(0))),
        ("no segments", Box::new(|b| b[24..26].fill(0))),
        (
            "gap between segments",
            Box::new(|b| b[HEADER_LEN + SEGMENT_RECORD_LEN + 8] = 1),
        ),
        (
            "negative policy tau",
            Box::new(|b| {
                b[HEADER_LEN + 24..HEADER_LEN + 32].copy_from_slice(&(-1.0f64).to_le_bytes())
            }),
        ),
        (
            "policy sparsity > 1",
            Box::new(|b| {
                b[HEADER_LEN + 32..HEADER_LEN + 40].copy_from_slice(&2.0f64.to_le_bytes())
            }),
        ),
        (
            "negative clipped mass",
            Box::new(move |b| {
                let at = HEADER_LEN + 3 * SEGMENT_RECORD_LEN + 88;
                b[at..at + 8].copy_from_slice(&(-1.0f64).to_le_bytes());
            }),
        ),
    ];
    for (what, edit) in &cases {
        let mut bad = good.clone();
        edit(&mut bad);
        reseal(&mut bad);
        let e = try_restore(&mut target, &mut residual, &bad);
        assert!(
            matches!(
                e,
                Error::Checkpoint(CheckpointError::Malformed { .. })
                    | Error::Checkpoint(CheckpointError::ShapeMismatch { .. })
            ),
            "{what}: {e:?}"
        );
        assert!(!e.to_string().is_empty());
    }

    // The good one still restores into the untouched target.
    target
        .restore_alloc(&Reference, &good, &mut residual)
        .unwrap();
    assert_eq!(target.index(), 12);
    assert_eq!(bits(&residual), bits(&d.residual));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = encoder_common::Rng::new(5);
    let mut target = segmented();
    let mut residual = vec![0.0f32; N];
    let (_, d) = uninterrupted(segmented, 3);
    let good = d.encoder.save_alloc(&Reference, &d.residual).unwrap();
    for i in 0..2000 {
        let len = (rng.next_u64() % 300) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && b.len() >= 32 {
            // A valid header prefix, so the fuzz reaches deeper checks.
            b[..32].copy_from_slice(&good[..32]);
        }
        let _ = CheckpointView::parse(&b);
        assert!(target.restore_alloc(&Reference, &b, &mut residual).is_err());
    }
}

#[test]
fn save_errors() {
    let (_, d) = uninterrupted(segmented, 2);
    let enc = &d.encoder;
    let len = enc.checkpoint_len();
    let mut scratch = vec![0.0f32; N];
    let mut out = vec![0u8; len];
    // Output too small.
    let e = enc
        .save(&Reference, &d.residual, &mut scratch, &mut out[..len - 1])
        .unwrap_err();
    assert_eq!(
        e,
        Error::Codec(CodecError::BufferTooSmall {
            needed: len,
            got: len - 1
        })
    );
    // Scratch too small.
    let e = enc
        .save(&Reference, &d.residual, &mut scratch[..N - 1], &mut out)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BufferTooSmall);
    // A residual of another length.
    let e = enc
        .save(&Reference, &vec![0.0; N - 1], &mut scratch, &mut out)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SizeMismatch);
    // A non-finite residual is not saved.
    let mut r = d.residual.clone();
    r[17] = f32::INFINITY;
    let e = enc
        .save(&Reference, &r, &mut scratch, &mut out)
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Codec(CodecError::NonFinite { index: 17, .. })
    ));
    assert!(out.iter().all(|&b| b == 0), "out untouched on error");
    // A larger output buffer is fine; the checkpoint is its prefix.
    let mut big = vec![0u8; len + 10];
    assert_eq!(
        enc.save(&Reference, &d.residual, &mut scratch, &mut big)
            .unwrap(),
        len
    );
    assert!(CheckpointView::parse(&big[..len]).is_ok());
    // Restore with a short scratch.
    let mut fresh = segmented();
    let mut res = vec![0.0; N];
    let e = fresh
        .restore(&Reference, &big[..len], &mut res, &mut scratch[..10])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BufferTooSmall);
    assert_eq!(fresh.index(), 0);
}

//! Encoder checkpoint parsing and restore: never panics; a rejected checkpoint changes
//! neither the encoder nor the residual.
#![no_main]

use gradcast_core::backend::Reference;
use gradcast_core::encoder::checkpoint::CheckpointView;
use gradcast_core::encoder::{Adaptive, Encoder, EncoderConfig, Fixed, Policy, Segment};
use libfuzzer_sys::fuzz_target;

/// The encoder shapes the seeds were written for (see core/examples/checkpoint_seed.rs).
const N: usize = 64;

fn plain() -> Encoder {
    Encoder::new(
        N,
        Policy::from(Adaptive::default()),
        EncoderConfig::default(),
    )
    .unwrap()
}

fn segmented() -> Encoder<Policy, 2> {
    Encoder::segmented(
        EncoderConfig::default(),
        [
            Segment {
                id: 1,
                len: 32,
                policy: Policy::from(Fixed::new(0.5).unwrap()),
            },
            Segment {
                id: 2,
                len: 32,
                policy: Policy::from(Adaptive::default()),
            },
        ],
    )
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Again with the checksum recomputed (CRC-32C is no authentication: anyone can forge
    // it), so the fuzzer reaches the checks behind it.
    if data.len() >= 32 {
        let mut v = data.to_vec();
        let sum = gradcast_core::wire::checksum(&v[..28], &v[32..]);
        v[28..32].copy_from_slice(&sum.to_le_bytes());
        check(&v);
    }
});

fn check(data: &[u8]) {
    if let Ok(view) = CheckpointView::parse(data) {
        assert_eq!(view.as_bytes().len(), data.len());
        assert_eq!(view.residual().len() as u64, view.n());
        assert!(view.residual().all(f32::is_finite));
        let _ = view.segments().count();
    }
    let mut scratch = vec![0.0f32; N];
    let mut enc = plain();
    let before = enc.save_alloc(&Reference, &vec![0.0f32; N]).unwrap();
    let mut residual = vec![0.25f32; N];
    if enc
        .restore(&Reference, data, &mut residual, &mut scratch)
        .is_err()
    {
        assert!(
            residual.iter().all(|x| *x == 0.25),
            "a failed restore changed the residual"
        );
        let after = enc.save_alloc(&Reference, &vec![0.0f32; N]).unwrap();
        assert_eq!(
            before, after,
            "a failed restore changed the encoder's state"
        );
    }
    let mut enc = segmented();
    let before = enc.save_alloc(&Reference, &vec![0.0f32; N]).unwrap();
    let mut residual = vec![0.25f32; N];
    if enc
        .restore(&Reference, data, &mut residual, &mut scratch)
        .is_err()
    {
        assert!(
            residual.iter().all(|x| *x == 0.25),
            "a failed restore changed the residual"
        );
        let after = enc.save_alloc(&Reference, &vec![0.0f32; N]).unwrap();
        assert_eq!(
            before, after,
            "a failed restore changed the encoder's state"
        );
    }
}

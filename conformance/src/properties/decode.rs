//! Decoding: decode-add of any valid message, of mutated and re-sealed messages, and of
//! messages meant for a vector of another size.

use super::{compare_decode, out_len};
use crate::strategies::{Rng, VecSpec, encode_case, length};
use crate::{bits, check, encode_on, to_device, to_host};
use gradcast_core::backend::Reference;
use gradcast_core::wire::{self, HEADER_LEN, MessageView};
use gradcast_core::{Backend, Classify, ErrorKind};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Property: decode-add of any valid message (every mode, segments, caps) into a target
/// holding arbitrary finite values equals the reference's, twice in a row.
pub fn decode_add_matches_reference<B: Backend>(b: &B) {
    let case = (encode_case(length()), any::<u64>());
    check(
        "decode_add_matches_reference",
        b.name(),
        case,
        |((spec, p), seed)| {
            let x = spec.build();
            let enc = encode_on(&Reference, &x, &p, out_len(x.len()), &[0])?;
            if enc.result.is_err() {
                return Ok(());
            }
            let target = VecSpec {
                n: x.len(),
                tau: 1.0,
                density: 0.1,
                specials: 0.1,
                seed,
            }
            .build();
            compare_decode(b, &enc.message, &target)?;
            // Twice: the second add starts from the first's result.
            let msg =
                MessageView::parse(&enc.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut once = target.clone();
            Reference
                .decode_add(&msg, &mut once)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            compare_decode(b, &enc.message, &once)
        },
    );
}

/// Property: mutated messages (byte flips, truncation, extension, random bytes; re-sealed
/// with a correct checksum half of the time, so that payload validation is reached) are
/// either rejected by the host-side parser, or decoded exactly as the reference decodes
/// them, with the same error kind when they do not fit the target.
pub fn mutated_messages<B: Backend>(b: &B) {
    let mutation = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6);
    let case = (
        encode_case(1usize..=300),
        mutation,
        0u8..4,
        any::<bool>(),
        any::<u64>(),
    );
    check(
        "mutated_messages",
        b.name(),
        case,
        |((spec, p), flips, shape, reseal, seed)| {
            let x = spec.build();
            let enc = encode_on(&Reference, &x, &p, out_len(x.len()), &[0])?;
            let Ok(_) = enc.result else { return Ok(()) };
            let mut m = enc.message;
            let mut r = Rng::new(seed);
            match shape {
                0 => m.truncate(r.below(m.len())),
                1 => m.extend((0..1 + r.below(8)).map(|_| r.next_u64() as u8)),
                2 => {
                    m = (0..r.below(2 * m.len() + 1))
                        .map(|_| r.next_u64() as u8)
                        .collect()
                }
                _ => {}
            }
            for (i, v) in &flips {
                if !m.is_empty() {
                    let i = i.index(m.len());
                    m[i] ^= v;
                }
            }
            if reseal && m.len() >= HEADER_LEN {
                let sum = wire::checksum(&m[..HEADER_LEN - 4], &m[HEADER_LEN..]);
                m[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
            }
            if let Err(e) = MessageView::parse(&m) {
                // Rejected on the host, before any backend: every backend sees the same error.
                let kind = e.kind();
                prop_assert!(
                    matches!(kind, ErrorKind::Malformed | ErrorKind::Checksum),
                    "unexpected kind {:?}",
                    kind
                );
                return Ok(());
            }
            compare_decode(b, &m, &x)
        },
    );
}

/// Property: a valid message applied to a target of another size (a plain message into a
/// longer or shorter vector; a segment past the end) fails with the reference's error kind
/// (`SizeMismatch`) and leaves the target untouched.
pub fn wrong_size_message_same_error<B: Backend>(b: &B) {
    let case = (encode_case(length()), 1usize..64, any::<bool>());
    check(
        "wrong_size_message_same_error",
        b.name(),
        case,
        |((spec, p), delta, longer)| {
            let x = spec.build();
            let enc = encode_on(&Reference, &x, &p, out_len(x.len()), &[0])?;
            let Ok(_) = enc.result else { return Ok(()) };
            let msg =
                MessageView::parse(&enc.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let n = if longer && p.segment.is_none() {
                x.len() + delta
            } else {
                let end = msg
                    .target_range(usize::MAX)
                    .map(|r| r.end)
                    .unwrap_or(x.len());
                end.saturating_sub(delta.min(end))
            };
            let target: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
            let mut want = target.clone();
            let want_r = Reference.decode_add(&msg, &mut want).map_err(|e| e.kind());
            prop_assert_eq!(want_r, Err(ErrorKind::SizeMismatch));
            let mut buf = to_device(b, &target)?;
            let got_r = b.decode_add(&msg, &mut buf).map_err(|e| e.kind());
            prop_assert_eq!(got_r, want_r);
            prop_assert_eq!(bits(&to_host(b, &buf)?), bits(&target));
            Ok(())
        },
    );
}

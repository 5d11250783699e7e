//! The policy-driven [`Encoder`](gradcast_core::encoder::Encoder) on the backend: every
//! threshold policy, segments, every warm-up, clipping, residual statistics, and checkpoints
//! saved on one backend and restored on it, each round compared with the same encoder on the
//! reference backend.

use crate::strategies::{EncoderSpec, SpecEncoder, encoder_spec};
use crate::{bits, check_fraction, dev, to_device, to_host};
use gradcast_core::backend::Reference;
use gradcast_core::encoder::RoundStats;
use gradcast_core::{Backend, Classify, ErrorKind};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Segment lengths: mostly small (many segments, thresholds that move), sometimes a few
/// thousand elements (the chunked and work-group paths).
fn segment_len() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![4 => 1usize..=64, 3 => 65usize..=700, 1 => 701usize..=5000]
}

/// One encoder and its residual on one backend.
struct Run<'b, B: Backend> {
    backend: &'b B,
    encoder: SpecEncoder,
    residual: B::Buffer,
    packet: Vec<u8>,
}

/// What one round gave: the statistics (or the error's kind) and the packet.
type Round = (Result<RoundStats, ErrorKind>, Vec<u8>);

impl<'b, B: Backend> Run<'b, B> {
    fn new(backend: &'b B, spec: &EncoderSpec) -> Result<Self, TestCaseError> {
        let encoder = spec.build();
        // Garbage after the packet must never matter: the buffer starts dirty.
        let packet = vec![0xA5; encoder.max_packet_bytes() + 7];
        Ok(Run {
            backend,
            residual: dev(backend.alloc(spec.n()))?,
            encoder,
            packet,
        })
    }

    /// Adds the update and encodes round `round` as `sender`.
    fn round(&mut self, update: &[f32], sender: u32, round: u64) -> Result<Round, TestCaseError> {
        let b = self.backend;
        let u = to_device(b, update)?;
        dev(b.add_assign(&mut self.residual, &u))?;
        let r = self
            .encoder
            .encode(b, &mut self.residual, sender, round, &mut self.packet)
            .map_err(|e| e.kind());
        dev(b.sync())?;
        let bytes = match &r {
            Ok(s) => self.packet[..s.message_bytes].to_vec(),
            Err(_) => Vec::new(),
        };
        Ok((r, bytes))
    }

    fn residual_bits(&self) -> Result<Vec<u32>, TestCaseError> {
        Ok(bits(&to_host(self.backend, &self.residual)?))
    }
}

/// Checks that two runs agree after a round: result, packet bytes, residual bits, and the
/// encoders' per-segment statistics, cumulative statistics and policy states.
fn same_round<B: Backend>(
    what: &str,
    got: (&Run<'_, B>, &Round),
    want: (&Run<'_, Reference>, &Round),
) -> Result<(), TestCaseError> {
    let name = got.0.backend.name();
    prop_assert_eq!(&got.1.0, &want.1.0, "{}: {}: result differs", name, what);
    if got.1.1 != want.1.1 {
        return Err(TestCaseError::fail(format!(
            "{name}: {what}: packet differs ({} vs {} bytes, first difference at byte {:?})",
            got.1.1.len(),
            want.1.1.len(),
            got.1.1.iter().zip(&want.1.1).position(|(a, b)| a != b)
        )));
    }
    let (g, w) = (got.0.residual_bits()?, want.0.residual_bits()?);
    if g != w {
        let i = g.iter().zip(&w).position(|(a, b)| a != b);
        return Err(TestCaseError::fail(format!(
            "{name}: {what}: residual differs first at element {i:?}: got {:?}, want {:?}",
            i.map(|i| f32::from_bits(g[i])),
            i.map(|i| f32::from_bits(w[i])),
        )));
    }
    let (ge, we) = (&got.0.encoder, &want.0.encoder);
    prop_assert!(
        ge.segment_stats().eq(we.segment_stats()),
        "{}: {}: segment statistics differ",
        name,
        what
    );
    prop_assert_eq!(ge.cumulative(), we.cumulative(), "{}: {}", name, what);
    prop_assert_eq!(ge.policy_states(), we.policy_states(), "{}: {}", name, what);
    prop_assert_eq!(ge.index(), we.index());
    Ok(())
}

/// Property: an encoder of any configuration (every threshold policy; unsegmented or up to
/// four segments with their own policies; no, dense, bitmap or ramped warm-up; clipping or
/// not; residual statistics or not) gives, round after round, the same packet bytes,
/// statistics, policy states and residual bits on the backend as on the reference. Rounds
/// whose updates hold few, many or no candidates alternate, so thresholds move and encodings
/// switch. Half of [`DEFAULT_CASES`](crate::DEFAULT_CASES): each case runs up to ten rounds.
pub fn encoder_matches_reference<B: Backend>(b: &B) {
    let case = (
        encoder_spec(segment_len()),
        1u64..=10,
        any::<u32>(),
        0u64..1000,
    );
    check_fraction(
        "encoder_matches_reference",
        b.name(),
        2,
        case,
        |(spec, rounds, sender, first)| {
            let mut got = Run::new(b, &spec)?;
            let mut want = Run::new(&Reference, &spec)?;
            for r in 0..rounds {
                let update = spec.update(0, r);
                let g = got.round(&update, sender, first + r)?;
                let w = want.round(&update, sender, first + r)?;
                same_round(&format!("round {r}"), (&got, &g), (&want, &w))?;
                prop_assert!(w.0.is_ok(), "the reference failed: {:?}", w.0);
            }
            Ok(())
        },
    );
}

/// Property: a checkpoint saved on the backend after some rounds equals the reference's byte
/// for byte; restored on the backend into a fresh encoder and a residual full of garbage, it
/// gives the saved residual back, and the restored encoder continues exactly as the
/// reference's encoder that never stopped: same packets, statistics, policy states and
/// residual bits. A restore into an encoder of another length is refused with the
/// reference's error kind and changes nothing. Half of
/// [`DEFAULT_CASES`](crate::DEFAULT_CASES).
pub fn checkpoint_restore_continues<B: Backend>(b: &B) {
    let case = (
        encoder_spec(segment_len()),
        0u64..=5,
        1u64..=5,
        any::<u32>(),
    );
    check_fraction(
        "checkpoint_restore_continues",
        b.name(),
        2,
        case,
        |(spec, before, after, sender)| {
            let mut got = Run::new(b, &spec)?;
            let mut want = Run::new(&Reference, &spec)?;
            for r in 0..before {
                let update = spec.update(0, r);
                let g = got.round(&update, sender, r)?;
                let w = want.round(&update, sender, r)?;
                same_round(&format!("round {r}"), (&got, &g), (&want, &w))?;
            }
            let saved = dev(got.encoder.save_alloc(b, &got.residual))?;
            let saved_ref = dev(want.encoder.save_alloc(&Reference, &want.residual))?;
            prop_assert!(
                saved == saved_ref,
                "{}: checkpoint bytes differ from the reference's (first at byte {:?})",
                b.name(),
                saved.iter().zip(&saved_ref).position(|(x, y)| x != y)
            );

            // A fresh encoder, and a residual full of garbage that the restore overwrites.
            let mut restored = Run::new(b, &spec)?;
            dev(b.fill(&mut restored.residual, -3.25))?;
            dev(restored
                .encoder
                .restore_alloc(b, &saved, &mut restored.residual))?;
            prop_assert_eq!(restored.residual_bits()?, want.residual_bits()?);
            prop_assert_eq!(restored.encoder.index(), before);

            // Another length: refused, nothing changes.
            let mut other = spec.clone();
            other.lens[0] += 1;
            let mut wrong = Run::new(b, &other)?;
            dev(b.fill(&mut wrong.residual, 0.5))?;
            let mut wrong_ref = Run::new(&Reference, &other)?;
            let e = wrong
                .encoder
                .restore_alloc(b, &saved, &mut wrong.residual)
                .map_err(|e| e.kind());
            let e_ref = wrong_ref
                .encoder
                .restore_alloc(&Reference, &saved, &mut wrong_ref.residual)
                .map_err(|e| e.kind());
            prop_assert_eq!(e, e_ref);
            prop_assert!(e.is_err(), "a checkpoint of another length was accepted");
            prop_assert_eq!(wrong.residual_bits()?, bits(&vec![0.5; other.n()]));
            prop_assert_eq!(wrong.encoder.index(), 0);

            for r in before..before + after {
                let update = spec.update(0, r);
                let g = restored.round(&update, sender, r)?;
                let w = want.round(&update, sender, r)?;
                same_round(
                    &format!("round {r} after a restore at {before}"),
                    (&restored, &g),
                    (&want, &w),
                )?;
            }
            Ok(())
        },
    );
}

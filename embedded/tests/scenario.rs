//! Host properties of what the firmware runs: the slice backend gives the reference backend's
//! results, the scenario covers what it claims, the embedded data is sound, and the
//! known-answer check catches a wrong answer.
// A std test binary: core paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::backend::{Backend, Reference};
use gradcast_core::packet::Messages;
use gradcast_core::wire::Encoding;
use gradcast_core::{Classify, ErrorKind};
use gradcast_embedded::kat::{self, KatFailure};
use gradcast_embedded::{MAX_PACKET, N, REFERENCE, ROUNDS, Run, SliceError, Slices};

/// The scenario on the slice backend and on the core's reference backend: every packet, every
/// round's statistics and the final residual are identical.
#[test]
fn slice_backend_matches_the_reference_backend() {
    let mut storage = vec![0.0f32; N];
    let mut sliced: &mut [f32] = &mut storage;
    let mut reference = vec![0.0f32; N];
    let (mut a, mut b) = (Run::new().unwrap(), Run::new().unwrap());
    let (mut pa, mut pb) = ([0u8; MAX_PACKET], [0u8; MAX_PACKET]);
    for _ in 0..ROUNDS {
        a.add_update(sliced);
        b.add_update(&mut reference);
        let sa = a.encode(&Slices::new(), &mut sliced, &mut pa).unwrap();
        let sb = b.encode(&Reference, &mut reference, &mut pb).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(pa[..sa.message_bytes], pb[..sb.message_bytes]);
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(sliced), bits(&reference));
}

/// The packet bound is the encoder's own, and the run covers warm-up and normal rounds, the
/// bitmap and the sparse encodings, both segments, clipping, and each policy moving its
/// threshold.
#[test]
fn the_scenario_covers_what_it_claims() {
    let mut run = Run::new().unwrap();
    assert_eq!(run.encoder().max_packet_bytes(), MAX_PACKET);
    let mut residual = vec![0.0f32; N];
    let mut out = [0u8; MAX_PACKET];
    let mut seen_segments = std::collections::BTreeSet::new();
    let mut taus = vec![std::collections::BTreeSet::new(); 2];
    for _ in 0..ROUNDS {
        run.add_update(&mut residual);
        let stats = run.encode(&Reference, &mut residual, &mut out).unwrap();
        for (k, m) in Messages::new(&out[..stats.message_bytes]).enumerate() {
            let m = m.unwrap();
            seen_segments.insert(m.header().segment);
            taus[k].insert(m.tau().to_bits());
        }
    }
    let c = run.encoder().cumulative();
    assert_eq!(c.rounds, ROUNDS);
    assert_eq!(c.warmup_rounds, 4);
    assert!(c.bitmap_messages > 0 && c.sparse_messages > 0, "{c:?}");
    assert_eq!(c.sparse_messages + c.bitmap_messages, 2 * ROUNDS);
    assert!(c.clipped_elements > 0 && c.clipped_mass > 0.0, "{c:?}");
    assert_eq!(seen_segments.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    // The policies adapt after the warm-up: many distinct thresholds per segment.
    assert!(taus.iter().all(|t| t.len() > 10), "{taus:?}");
}

/// The reference messages decode into N elements and cover every encoding, a cap and
/// segments; decoding them on the slice backend equals the reference backend.
#[test]
fn reference_messages_cover_every_encoding() {
    let mut encodings = std::collections::BTreeSet::new();
    let (mut truncated, mut segments, mut count) = (false, false, 0);
    let mut reference = vec![0.0f32; N];
    for m in Messages::new(REFERENCE) {
        let m = m.unwrap();
        encodings.insert(m.encoding() as u8);
        truncated |= m.header().truncated();
        segments |= m.header().is_segment();
        Reference.decode_add(&m, &mut reference).unwrap();
        count += 1;
    }
    assert_eq!(
        encodings.into_iter().collect::<Vec<_>>(),
        vec![
            Encoding::Sparse as u8,
            Encoding::Bitmap as u8,
            Encoding::Dense as u8
        ]
    );
    assert!(truncated && segments);
    let mut storage = vec![0.0f32; N];
    let mut sliced: &mut [f32] = &mut storage;
    assert_eq!(
        gradcast_embedded::decode_reference(&Slices::new(), &mut sliced).unwrap(),
        count
    );
    assert_eq!(
        gradcast_embedded::crc32c(sliced),
        gradcast_embedded::crc32c(&reference)
    );
    assert!(reference.iter().any(|&x| x != 0.0));
}

/// The embedded known-answer vectors are those of `kat.txt`, and all pass.
#[test]
fn known_answers_pass_and_match_the_text_file() {
    let text = gradcast_core::kat::vectors();
    let blob: Vec<_> = kat::Vectors::new(kat::BLOB)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(blob.len(), text.len());
    for (b, t) in blob.iter().zip(&text) {
        assert_eq!(b.name, t.name);
        assert_eq!(b.params, t.params);
        assert_eq!(b.message, &t.message[..]);
        assert!(
            b.residual()
                .map(f32::to_bits)
                .eq(t.residual.iter().map(|x| x.to_bits()))
        );
        assert!(
            b.decoded()
                .map(f32::to_bits)
                .eq(t.decoded.iter().map(|x| x.to_bits()))
        );
    }
    let (mut r, mut t, mut out) = (vec![0.0; N], vec![0.0; N], vec![0u8; MAX_PACKET]);
    let checked = kat::check(
        kat::Vectors::new(kat::BLOB).unwrap(),
        &mut r,
        &mut t,
        &mut out,
    );
    assert_eq!(checked, Ok(text.len()));
}

/// The check is not a formality: a flipped message byte, a flipped expected residual bit, a
/// cut-short blob and too little scratch space are each reported.
#[test]
fn known_answer_check_catches_wrong_answers() {
    let (mut r, mut t, mut out) = (vec![0.0; N], vec![0.0; N], vec![0u8; MAX_PACKET]);
    let first = kat::Vectors::new(kat::BLOB)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    // The first vector's message starts right after its fixed fields.
    let message_at = 4 + 1 + first.name.len() + 4 + 4 + 4 + 8 + 1 + 4 + 1 + 1 + 2 + 4 + 4 + 4;
    let mut blob = kat::BLOB.to_vec();
    blob[message_at + 20] ^= 1; // a byte of the header's sender field
    let got = kat::check(kat::Vectors::new(&blob).unwrap(), &mut r, &mut t, &mut out);
    assert_eq!(
        got,
        Err(KatFailure::Mismatch {
            name: first.name,
            what: "message"
        })
    );

    let mut blob = kat::BLOB.to_vec();
    let after_at = message_at + first.message.len() + 4 * first.n();
    blob[after_at] ^= 1; // the lowest bit of the expected residual's first element
    let got = kat::check(kat::Vectors::new(&blob).unwrap(), &mut r, &mut t, &mut out);
    assert_eq!(
        got,
        Err(KatFailure::Mismatch {
            name: first.name,
            what: "residual after encoding"
        })
    );

    let cut = &kat::BLOB[..kat::BLOB.len() - 1];
    let got = kat::check(kat::Vectors::new(cut).unwrap(), &mut r, &mut t, &mut out);
    let last = kat::Vectors::new(kat::BLOB).unwrap().remaining() - 1;
    assert_eq!(got, Err(KatFailure::Malformed { index: last }));
    assert!(kat::Vectors::new(&[1, 0]).is_none());

    let got = kat::check(
        kat::Vectors::new(kat::BLOB).unwrap(),
        &mut r[..2],
        &mut t,
        &mut out,
    );
    assert!(matches!(got, Err(KatFailure::TooLarge { .. })), "{got:?}");
}

/// The slice backend cannot allocate, says so, and classifies it as unsupported.
#[test]
fn slice_backend_refuses_to_allocate() {
    let e = Slices::new().alloc(16).unwrap_err();
    assert_eq!(e, SliceError::NoAllocator { len: 16 });
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("16 elements"), "{e}");
    // Core errors pass through with their own kind.
    let mut short: &mut [f32] = &mut [0.0; 3];
    let e = Slices::new().upload(&[1.0; 4], &mut short).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SizeMismatch);
}

//! The properties: one generic function per property, `fn p<B: Backend>(b: &B)`, grouped
//! by concern. Each runs [`DEFAULT_CASES`] (or `PROPTEST_CASES`) cases, unless it says
//! otherwise, and panics with the shrunk counter-example when the backend differs from the
//! reference backend ([`Reference`]) or from an independent model of the rule, where one is
//! stated.
//!
//! | module | what |
//! |---|---|
//! | [`encode`] | the codec's encode: message bytes, residual bits, mass, the encoding switch, the cap, lengths, extreme thresholds, segments, garbage |
//! | [`errors`] | input errors: empty, bad threshold, non-finite values, short output |
//! | [`decode`] | decode-add of valid, mutated and wrong-size messages |
//! | [`vector`] | count, add-assign, the step, clipping, statistics, upload and download |
//! | [`encoder`] | the policy-driven [`Encoder`](gradcast_core::encoder::Encoder): every policy, segments, warm-up, clipping, checkpoint and restore |
//! | [`round`] | several workers over several rounds, by hand and through the round protocol's accumulator (P = 3, threads) |
//! | [`kat`] | the known-answer vectors of `docs/FORMAT.md` |
//!
//! [`NAMES`] is the list of every property: [`conformance_suite!`](crate::conformance_suite)
//! stamps one `#[test]` per entry, and a test of this crate checks that every property
//! function of these modules is on it.
//!
//! [`DEFAULT_CASES`]: crate::DEFAULT_CASES
//! [`Reference`]: gradcast_core::backend::Reference

pub mod decode;
pub mod encode;
pub mod encoder;
pub mod errors;
pub mod kat;
pub mod round;
pub mod vector;

use crate::{bits, dev, to_device, to_host};
use gradcast_core::backend::Reference;
use gradcast_core::wire::{self, Encoding, MessageView};
use gradcast_core::{Backend, Classify};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The list of properties, the one place their names are written: calls
/// `$crate::$callback! { $args ; module::property, ... }`. Used by
/// [`conformance_suite!`](crate::conformance_suite) and for [`NAMES`].
#[doc(hidden)]
#[macro_export]
macro_rules! __with_properties {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { $($args)* ;
            encode::encode_message_matches_reference,
            encode::encode_residual_matches_reference,
            encode::mass_conservation,
            encode::encoding_switch_boundary,
            encode::cap_selects_cyclically_from_start,
            encode::cap_rotates_with_round,
            encode::small_and_odd_lengths,
            encode::large_lengths,
            encode::tau_at_value_edges,
            encode::subnormal_and_extreme_tau,
            encode::segments_match_reference,
            encode::garbage_never_leaks,
            errors::empty_vector_same_error,
            errors::bad_tau_same_error,
            errors::non_finite_same_error,
            errors::buffer_too_small_same_error,
            decode::decode_add_matches_reference,
            decode::mutated_messages,
            decode::wrong_size_message_same_error,
            vector::count_matches_reference,
            vector::add_assign_matches_reference,
            vector::sub_scaled_matches_reference,
            vector::clip_matches_reference,
            vector::stats_matches_reference,
            vector::upload_download_roundtrip,
            encoder::encoder_matches_reference,
            encoder::checkpoint_restore_continues,
            round::multi_round_replicas_identical,
            round::accumulator_round_matches_reference,
            kat::known_answer_vectors
        }
    };
}

/// Turns the property list into the names' array (see [`NAMES`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __property_names {
    (; $($module:ident :: $name:ident),* $(,)?) => {
        &[$(stringify!($name)),*]
    };
}

/// The name of every property, in the order of the list (the name of its test, and of its
/// failure file under `proptest-regressions/`).
pub const NAMES: &[&str] = crate::__with_properties!(__property_names!());

/// An output buffer length that fits any message of `n` elements in any mode.
fn out_len(n: usize) -> usize {
    wire::dense_message_len(n.max(1))
}

/// Decodes `message` into `target` on the backend and on the reference and compares the
/// results (error kinds, target bits). A message that does not parse is not compared
/// (backends only ever see parsed messages).
fn compare_decode<B: Backend>(b: &B, message: &[u8], target: &[f32]) -> Result<(), TestCaseError> {
    let Ok(msg) = MessageView::parse(message) else {
        return Ok(());
    };
    let mut want = target.to_vec();
    let want_r = Reference.decode_add(&msg, &mut want).map_err(|e| e.kind());
    let mut buf = to_device(b, target)?;
    let got_r = b.decode_add(&msg, &mut buf).map_err(|e| e.kind());
    dev(b.sync())?;
    let got = to_host(b, &buf)?;
    prop_assert_eq!(got_r, want_r, "{}: decode_add result differs", b.name());
    prop_assert!(
        bits(&got) == bits(&want),
        "{}: decode_add differs at element {:?}",
        b.name(),
        bits(&got)
            .iter()
            .zip(bits(&want))
            .position(|(a, w)| *a != w)
    );
    Ok(())
}

/// The element indices a parsed message sends (`+1` or `-1` each), relative to its range.
fn sent(msg: &MessageView<'_>) -> Vec<(usize, i8)> {
    match msg.encoding() {
        Encoding::Sparse => msg
            .sparse_entries()
            .map(|e| (e.unsigned_abs() as usize - 1, if e > 0 { 1 } else { -1 }))
            .collect(),
        Encoding::Bitmap => (0..msg.n() as usize)
            .filter_map(|i| match msg.bitmap_code(i) {
                1 => Some((i, 1)),
                2 => Some((i, -1)),
                _ => None,
            })
            .collect(),
        Encoding::Dense => Vec::new(),
    }
}

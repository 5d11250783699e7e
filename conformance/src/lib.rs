//! # gradcast-conformance
//!
//! One property suite that every [`Backend`] must pass, with the core's reference codec
//! ([`gradcast_core::codec`], [`Reference`]) as the oracle and the known-answer vectors of
//! `docs/FORMAT.md` (`conformance/vectors/kat.txt`) as a check on the oracle itself.
//!
//! The logic lives in generic functions ([`properties`]); [`conformance_suite!`] only stamps
//! one `#[test]` per property for a backend. `tests/conformance.rs` instantiates it once per
//! enabled backend feature (`cpu`, default; `opencl`; `cuda`), so a failing test's name says
//! which backend failed (`cpu::encode_message_matches_reference`).
//!
//! * Cases: [`DEFAULT_CASES`] (256) per property, or `PROPTEST_CASES`.
//! * Failures are persisted to `conformance/proptest-regressions/<property>.txt` and
//!   replayed first on the next run; commit those files.
//! * A backend whose device is absent (feature on, no hardware) makes each test print
//!   `SKIP: <reason>` and return ([`backend_or_skip`]).
//!
//! ```text
//! cargo test -p gradcast-conformance                 # CPU
//! cargo test-cpu | cargo test-opencl | cargo test-cuda   # aliases, .cargo/config.toml
//! PROPTEST_CASES=2000 cargo test -p gradcast-conformance
//! ```
// A std-only test crate: `std::` paths are the natural ones here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod properties;
pub mod strategies;

use gradcast_core::backend::Reference;
use gradcast_core::codec::{EncodeParams, EncodeSummary};
use gradcast_core::{Backend, Classify, ErrorKind};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::fmt::Display;

/// Cases per property when `PROPTEST_CASES` is not set.
pub const DEFAULT_CASES: u32 = 256;

/// The proptest configuration of property `name`: [`DEFAULT_CASES`] or `PROPTEST_CASES`
/// cases, failures persisted to `conformance/proptest-regressions/<name>.txt` (set
/// explicitly: only the `proptest!` macro does that for you).
pub fn config(name: &str) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let path: &'static str = Box::leak(
        format!(
            "{}/proptest-regressions/{name}.txt",
            env!("CARGO_MANIFEST_DIR")
        )
        .into_boxed_str(),
    );
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        source_file: Some(file!()),
        test_name: Some(Box::leak(name.to_owned().into_boxed_str())),
        ..Config::default()
    }
}

/// Runs property `name` of backend `backend` over `strategy`; panics with the shrunk
/// counter-example on failure.
pub fn check<S: proptest::strategy::Strategy>(
    name: &str,
    backend: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(config(name));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("[{backend}] property {name} failed: {e}");
    }
}

/// The backend, or `None` after printing `SKIP: <reason>` when it could not be created
/// because its device, driver or platform is absent. A kernel that fails to compile is a
/// bug, not an absence: that panics.
pub fn backend_or_skip<B, E: Display + Classify>(r: Result<B, E>) -> Option<B> {
    match r {
        Ok(b) => Some(b),
        Err(e) if e.kind() == ErrorKind::KernelCompile => {
            panic!("backend kernels failed to compile: {e}")
        }
        Err(e) => {
            println!("SKIP: no device for this backend ({:?}): {e}", e.kind());
            None
        }
    }
}

/// Turns a backend error where none is expected (allocation, upload, download) into a test
/// failure.
pub fn dev<T, E: Display>(r: Result<T, E>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("unexpected backend error: {e}")))
}

/// The bit patterns of a vector (so that `-0.0`, NaN payloads and subnormals compare
/// exactly).
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// A vector on the backend.
///
/// # Errors
/// A test failure when the backend cannot allocate or upload.
pub fn to_device<B: Backend>(b: &B, x: &[f32]) -> Result<B::Buffer, TestCaseError> {
    let mut buf = dev(b.alloc(x.len()))?;
    dev(b.upload(x, &mut buf))?;
    Ok(buf)
}

/// A backend vector copied to the host.
///
/// # Errors
/// A test failure when the backend cannot download.
pub fn to_host<B: Backend>(b: &B, buf: &B::Buffer) -> Result<Vec<f32>, TestCaseError> {
    let mut host = vec![0.0; b.len(buf)];
    dev(b.download(buf, &mut host))?;
    Ok(host)
}

/// What one encode did: the result (the error reduced to its kind), the message bytes
/// (empty on error), the residual's bits after the call, and the whole output buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// The summary, or the error's kind.
    pub result: Result<EncodeSummary, ErrorKind>,
    /// `out[..summary.bytes]`, empty on error.
    pub message: Vec<u8>,
    /// The residual after the call, as bits.
    pub residual: Vec<u32>,
}

/// Encodes `x` on backend `b` into an output buffer of `out_len` bytes pre-filled with
/// `fill` (garbage that must never leak into the message).
///
/// # Errors
/// A test failure on an unexpected device error.
pub fn encode_on<B: Backend>(
    b: &B,
    x: &[f32],
    params: &EncodeParams,
    out_len: usize,
    fill: &[u8],
) -> Result<Encoded, TestCaseError> {
    let mut buf = to_device(b, x)?;
    let mut out: Vec<u8> = fill.iter().copied().cycle().take(out_len).collect();
    out.resize(out_len, 0);
    let r = b.encode(&mut buf, params, &mut out);
    dev(b.sync())?;
    let residual = bits(&to_host(b, &buf)?);
    Ok(match r {
        Ok(s) => Encoded {
            result: Ok(s),
            message: out.get(..s.bytes).map(<[u8]>::to_vec).unwrap_or_default(),
            residual,
        },
        Err(e) => Encoded {
            result: Err(e.kind()),
            message: Vec::new(),
            residual,
        },
    })
}

/// Encodes with the backend (output pre-filled with garbage) and with the reference
/// (output zeroed) and checks that result, message bytes and residual bits are identical.
/// Returns the reference's and the backend's results.
///
/// # Errors
/// A test failure naming the first difference.
pub fn compare_encode<B: Backend>(
    b: &B,
    x: &[f32],
    params: &EncodeParams,
    out_len: usize,
) -> Result<(Encoded, Encoded), TestCaseError> {
    let want = encode_on(&Reference, x, params, out_len, &[0])?;
    let got = encode_on(
        b,
        x,
        params,
        out_len,
        &[0xA5, 0x5A, 0xFF, 0x7F, 0x80, 0x00, 0xC3],
    )?;
    proptest::prop_assert_eq!(
        &got.result,
        &want.result,
        "{}: result differs (n = {}, {:?})",
        b.name(),
        x.len(),
        params
    );
    proptest::prop_assert!(
        got.message == want.message,
        "{}: message bytes differ (n = {}, {:?}): first difference at byte {:?}",
        b.name(),
        x.len(),
        params,
        got.message
            .iter()
            .zip(&want.message)
            .position(|(a, b)| a != b)
    );
    if got.residual != want.residual {
        let i = got
            .residual
            .iter()
            .zip(&want.residual)
            .position(|(a, b)| a != b);
        return Err(TestCaseError::fail(format!(
            "{}: residual differs (n = {}, {:?}) first at element {i:?}: got {:?}, want {:?}",
            b.name(),
            x.len(),
            params,
            i.map(|i| f32::from_bits(got.residual[i])),
            i.map(|i| f32::from_bits(want.residual[i])),
        )));
    }
    Ok((want, got))
}

/// Stamps one `#[test]` per property for a backend.
///
/// `$make` is an expression of type `Option<B>`: `Some(backend)`, or `None` when the device
/// is absent (use [`backend_or_skip`], which prints the `SKIP:` line).
///
/// ```text
/// mod cpu {
///     gradcast_conformance::conformance_suite!(Some(gradcast_cpu::Cpu::default()));
/// }
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@stamp $make;
            encode_message_matches_reference,
            encode_residual_matches_reference,
            decode_add_matches_reference,
            mass_conservation,
            encoding_switch_boundary,
            cap_selects_cyclically_from_start,
            cap_rotates_with_round,
            empty_vector_same_error,
            small_and_odd_lengths,
            large_lengths,
            tau_at_value_edges,
            subnormal_and_extreme_tau,
            bad_tau_same_error,
            non_finite_same_error,
            buffer_too_small_same_error,
            garbage_never_leaks,
            mutated_messages,
            wrong_size_message_same_error,
            count_matches_reference,
            add_assign_matches_reference,
            sub_scaled_matches_reference,
            clip_matches_reference,
            stats_matches_reference,
            segments_match_reference,
            upload_download_roundtrip,
            multi_round_replicas_identical,
            known_answer_vectors
        );
    };
    (@stamp $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(backend) = $make {
                    $crate::properties::$name(&backend);
                }
            }
        )*
    };
}

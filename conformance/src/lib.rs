//! # gradcast-conformance
//!
//! One property suite that every [`Backend`] must pass, with the core's reference backend
//! ([`Reference`], the codec of [`gradcast_core::codec`]) as the oracle and the known-answer
//! vectors of `docs/FORMAT.md` (`gradcast_core::kat`) as a check on the oracle itself.
//!
//! The logic lives in generic functions ([`properties`], grouped by concern, with one list of
//! their names, [`properties::NAMES`]); [`conformance_suite!`] only stamps one `#[test]` per
//! property for a backend. `tests/conformance.rs` instantiates it once per enabled backend
//! feature (`cpu`, default, in several configurations; `opencl`; `cuda`), so a failing
//! test's name says which backend failed (`opencl::encoder_matches_reference`).
//!
//! * Cases: [`DEFAULT_CASES`] (256) per property, or `PROPTEST_CASES`; properties whose
//!   cases run many rounds take a fraction of that ([`check_fraction`]).
//! * Failures are persisted to `conformance/proptest-regressions/<property>.txt` and
//!   replayed first on the next run; commit those files.
//! * A backend whose device is absent (feature on, no hardware) makes each of its tests print
//!   `SKIP: <reason>` and pass ([`backend_or_skip`]), unless [`REQUIRE_ENV`]
//!   (`GRADCAST_REQUIRE_BACKENDS`) names it: then each of its tests fails. CI sets
//!   `GRADCAST_REQUIRE_BACKENDS=opencl` (PoCL is installed there), so an OpenCL job cannot go
//!   green without an OpenCL device.
//!
//! ```text
//! cargo test -p gradcast-conformance                          # CPU
//! cargo test-cpu | cargo test-opencl | cargo test-cuda        # aliases, .cargo/config.toml
//! GRADCAST_REQUIRE_BACKENDS=opencl cargo test -p gradcast-conformance --features opencl
//! PROPTEST_CASES=2000 cargo test -p gradcast-conformance
//! ```
//!
//! A backend crate uses the suite from its own tests or from this crate's
//! `tests/conformance.rs`:
//!
//! ```
//! // One `#[test]` per property, for the reference backend itself.
//! mod reference {
//!     gradcast_conformance::conformance_suite!(Some(gradcast_core::backend::Reference));
//! }
//! # fn main() {
//! # assert!(gradcast_conformance::properties::NAMES.contains(&"encoder_matches_reference"));
//! # }
//! ```
// A std-only test crate: `std::` paths are the natural ones here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod properties;
pub mod strategies;

use core::ops::Range;
use gradcast_core::backend::{ClipStats, Reference, VectorStats};
use gradcast_core::codec::{EncodeParams, EncodeSummary};
use gradcast_core::wire::MessageView;
use gradcast_core::{Backend, Classify, ErrorKind};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::fmt::Display;

/// Cases per property when `PROPTEST_CASES` is not set.
pub const DEFAULT_CASES: u32 = 256;

/// The number of cases per property: `PROPTEST_CASES`, or [`DEFAULT_CASES`] when it is
/// unset or not a number.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The proptest configuration of property `name`: `cases` cases, failures persisted to
/// `conformance/proptest-regressions/<name>.txt` (set explicitly: only the `proptest!` macro
/// does that for you).
pub fn config(name: &str, cases: u32) -> Config {
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

/// Runs property `name` of backend `backend` over [`cases`] cases of `strategy`; panics with
/// the shrunk counter-example on failure.
pub fn check<S: proptest::strategy::Strategy>(
    name: &str,
    backend: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    check_fraction(name, backend, 1, strategy, test);
}

/// As [`check`], with `1 / divisor` of the cases (at least one): for properties whose
/// single case runs many rounds, so that the suite's time stays in check. `PROPTEST_CASES`
/// scales them alike.
pub fn check_fraction<S: proptest::strategy::Strategy>(
    name: &str,
    backend: &str,
    divisor: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = (cases() / divisor.max(1)).max(1);
    let mut runner = TestRunner::new(config(name, cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("[{backend}] property {name} failed: {e}");
    }
}

/// The environment variable that names the backends which must be present:
/// `GRADCAST_REQUIRE_BACKENDS=opencl` (or several, `opencl,cuda`, separated by commas or
/// spaces; case does not matter). A required backend whose device, driver or platform is
/// absent fails every one of its tests instead of printing `SKIP:` and passing, and a
/// required backend whose cargo feature is off fails [`check_required_compiled`]. Unset or
/// empty: nothing is required (a developer's machine without a GPU still passes).
pub const REQUIRE_ENV: &str = "GRADCAST_REQUIRE_BACKENDS";

/// The backend names [`REQUIRE_ENV`] may hold: the conformance crate's backend features.
pub const BACKENDS: &[&str] = &["cpu", "opencl", "cuda"];

/// The backends [`REQUIRE_ENV`] names, lower-case, in the order given.
///
/// # Errors
/// A message naming an entry that is not one of [`BACKENDS`] (a typo must not silently
/// require nothing).
pub fn required_backends() -> Result<Vec<String>, String> {
    let raw = std::env::var(REQUIRE_ENV).unwrap_or_default();
    parse_required(&raw)
}

/// Parses a [`REQUIRE_ENV`] value (see [`required_backends`]).
///
/// # Errors
/// As [`required_backends`].
pub fn parse_required(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in raw.split(|c: char| c == ',' || c.is_whitespace()) {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || out.contains(&name) {
            continue;
        }
        if !BACKENDS.contains(&name.as_str()) {
            return Err(format!(
                "{REQUIRE_ENV}={raw:?}: unknown backend {name:?} (known: {})",
                BACKENDS.join(", ")
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// Whether [`REQUIRE_ENV`] names `backend`.
///
/// # Panics
/// When [`REQUIRE_ENV`] holds a name that is not a backend ([`required_backends`]).
pub fn is_required(backend: &str) -> bool {
    match required_backends() {
        Ok(names) => names.iter().any(|n| n == backend),
        Err(e) => panic!("{e}"),
    }
}

/// Fails (panics) when [`REQUIRE_ENV`] names a backend that is not in `compiled` (the
/// backend features of this build), or a name that is not a backend: requiring a backend
/// whose tests were not even compiled would otherwise pass.
///
/// # Panics
/// As described.
pub fn check_required_compiled(compiled: &[&str]) {
    let required = required_backends().unwrap_or_else(|e| panic!("{e}"));
    let missing: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| !compiled.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "{REQUIRE_ENV} requires {missing:?}, but this build of the conformance suite has only \
         the backend features {compiled:?}: add `--features {}`",
        missing.join(",")
    );
}

/// The backend `name` (a [`BACKENDS`] entry), or `None` after printing `SKIP: <reason>` when
/// it could not be created because its device, driver or platform is absent.
///
/// # Panics
/// When the backend is absent and [`REQUIRE_ENV`] names it (the test fails instead of
/// skipping); when its kernels fail to compile (a bug, not an absence: that fails always).
pub fn backend_or_skip<B, E: Display + Classify>(name: &str, r: Result<B, E>) -> Option<B> {
    match r {
        Ok(b) => Some(b),
        Err(e) if e.kind() == ErrorKind::KernelCompile => {
            panic!("{name}: backend kernels failed to compile: {e}")
        }
        Err(e) if is_required(name) => panic!(
            "{name}: no device for this backend ({:?}): {e}; {REQUIRE_ENV} requires it, so \
             this is a failure, not a skip",
            e.kind()
        ),
        Err(e) => {
            println!(
                "SKIP: {name}: no device for this backend ({:?}): {e} (set {REQUIRE_ENV}={name} \
                 to make this a failure)",
                e.kind()
            );
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

/// A borrowed backend as a backend: every call forwards to the backend it borrows, the
/// trait's provided methods too (so a backend's own [`Backend::apply_messages`] is the one
/// tested, not the default). The round protocol's
/// [`Accumulator`](gradcast_core::round::Accumulator) owns its backend, and the properties
/// only borrow theirs.
#[derive(Debug)]
pub struct ByRef<'a, B>(pub &'a B);

impl<B: Backend> Backend for ByRef<'_, B> {
    type Buffer = B::Buffer;
    type Error = B::Error;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn alloc(&self, len: usize) -> Result<B::Buffer, B::Error> {
        self.0.alloc(len)
    }

    fn len(&self, buf: &B::Buffer) -> usize {
        self.0.len(buf)
    }

    fn upload(&self, src: &[f32], dst: &mut B::Buffer) -> Result<(), B::Error> {
        self.0.upload(src, dst)
    }

    fn download(&self, src: &B::Buffer, dst: &mut [f32]) -> Result<(), B::Error> {
        self.0.download(src, dst)
    }

    fn fill(&self, buf: &mut B::Buffer, value: f32) -> Result<(), B::Error> {
        self.0.fill(buf, value)
    }

    fn count(&self, x: &B::Buffer, range: Range<usize>, tau: f32) -> Result<u64, B::Error> {
        self.0.count(x, range, tau)
    }

    fn encode(
        &self,
        residual: &mut B::Buffer,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, B::Error> {
        self.0.encode(residual, params, out)
    }

    fn decode_add(&self, msg: &MessageView<'_>, target: &mut B::Buffer) -> Result<(), B::Error> {
        self.0.decode_add(msg, target)
    }

    fn add_assign(&self, dst: &mut B::Buffer, src: &B::Buffer) -> Result<(), B::Error> {
        self.0.add_assign(dst, src)
    }

    fn sub_scaled(
        &self,
        params: &mut B::Buffer,
        update: &B::Buffer,
        scale: f32,
    ) -> Result<(), B::Error> {
        self.0.sub_scaled(params, update, scale)
    }

    fn apply_messages<'m, I>(
        &self,
        msgs: I,
        update: &mut B::Buffer,
        params: &mut B::Buffer,
        scale: f32,
    ) -> Result<(), B::Error>
    where
        I: Iterator<Item = MessageView<'m>> + Clone,
    {
        self.0.apply_messages(msgs, update, params, scale)
    }

    fn clip(
        &self,
        buf: &mut B::Buffer,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, B::Error> {
        self.0.clip(buf, range, limit)
    }

    fn stats(&self, buf: &B::Buffer, range: Range<usize>) -> Result<VectorStats, B::Error> {
        self.0.stats(buf, range)
    }

    fn sync(&self) -> Result<(), B::Error> {
        self.0.sync()
    }
}

/// Stamps one `#[test]` per property of [`properties::NAMES`] for a backend, named after the
/// property.
///
/// `$make` is an expression of type `Option<B>`: `Some(backend)`, or `None` when the device
/// is absent (use [`backend_or_skip`], which prints the `SKIP:` line, or fails when
/// [`REQUIRE_ENV`] names the backend). It is evaluated once per test.
///
/// ```text
/// mod cpu {
///     gradcast_conformance::conformance_suite!(Some(gradcast_cpu::Cpu::default()));
/// }
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::__with_properties!(__stamp_properties!($make));
    };
}

/// Stamps the tests of [`conformance_suite!`] from the property list.
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_properties {
    ($make:expr ; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(backend) = $make {
                    $crate::properties::$module::$name(&backend);
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_backends_parse() {
        assert_eq!(parse_required(""), Ok(vec![]));
        assert_eq!(parse_required(" , "), Ok(vec![]));
        assert_eq!(parse_required("opencl"), Ok(vec!["opencl".to_string()]));
        assert_eq!(
            parse_required("OpenCL, cuda opencl"),
            Ok(vec!["opencl".to_string(), "cuda".to_string()])
        );
        let e = parse_required("opencl,opncl").unwrap_err();
        assert!(e.contains("\"opncl\"") && e.contains(REQUIRE_ENV), "{e}");
    }

    /// Every property function of `src/properties/` (a `pub fn` generic over the backend)
    /// is on the one list, so `conformance_suite!` stamps a test for it; and the list holds
    /// nothing else.
    #[test]
    fn every_property_is_listed() {
        let sources = [
            include_str!("properties/encode.rs"),
            include_str!("properties/errors.rs"),
            include_str!("properties/decode.rs"),
            include_str!("properties/vector.rs"),
            include_str!("properties/encoder.rs"),
            include_str!("properties/round.rs"),
            include_str!("properties/kat.rs"),
        ];
        let mut defined: Vec<&str> = sources
            .iter()
            .flat_map(|s| s.lines())
            .filter_map(|l| l.strip_prefix("pub fn "))
            .filter_map(|rest| rest.split_once('<'))
            .map(|(name, _)| name)
            .collect();
        let mut listed = properties::NAMES.to_vec();
        defined.sort_unstable();
        listed.sort_unstable();
        assert_eq!(defined, listed);
        let mut unique = listed.clone();
        unique.dedup();
        assert_eq!(unique.len(), listed.len(), "a property is listed twice");
    }
}

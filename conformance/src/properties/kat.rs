//! The known-answer vectors of `docs/FORMAT.md`.

use crate::{bits, dev, encode_on, to_device, to_host};
use gradcast_core::Backend;
use gradcast_core::wire::MessageView;
use proptest::test_runner::TestCaseError;

/// The known-answer vectors of `docs/FORMAT.md` (`core/vectors/kat.txt`, generated
/// by an independent implementation): the backend's message bytes, residual after and
/// decoded vector equal the recorded ones, with the output buffer exactly the message's
/// size and pre-filled with garbage. Deterministic (not a proptest).
pub fn known_answer_vectors<B: Backend>(b: &B) {
    let kats = gradcast_core::kat::vectors();
    assert!(
        kats.len() >= 4,
        "expected at least 4 known-answer vectors, found {}",
        kats.len()
    );
    for k in &kats {
        let fail =
            |what: &str| -> ! { panic!("[{}] known-answer vector {}: {what}", b.name(), k.name) };
        let run = || -> Result<(), TestCaseError> {
            let got = encode_on(b, &k.residual, &k.params, k.message.len(), &[0xEE, 0x11])?;
            match got.result {
                Ok(_) => {}
                Err(e) => fail(&format!("encode failed: {e:?}")),
            }
            if got.message != k.message {
                fail("message bytes differ");
            }
            if got.residual != bits(&k.residual_after) {
                fail("residual after encoding differs");
            }
            let msg =
                MessageView::parse(&k.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut t = to_device(b, &vec![0.0; k.residual.len()])?;
            dev(b.decode_add(&msg, &mut t))?;
            if bits(&to_host(b, &t)?) != bits(&k.decoded) {
                fail("decoded vector differs");
            }
            Ok(())
        };
        if let Err(e) = run() {
            fail(&e.to_string());
        }
    }
}

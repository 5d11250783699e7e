//! DL4J buffer import: never panics; an imported message is a valid native message that
//! exports back to an equivalent DL4J buffer.
#![no_main]

use gradcast_core::dl4j;
use gradcast_core::wire::MessageView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(view) = dl4j::Dl4jView::parse(data) else {
        let mut out = [0u8; 256];
        let _ = dl4j::import(data, 0, 0, &mut out);
        return;
    };
    let mut out = vec![0u8; view.native_len()];
    let Ok(len) = dl4j::import(data, 1, 2, &mut out) else {
        return;
    };
    let native = MessageView::parse(&out[..len]).expect("import writes valid messages");
    assert_eq!(native.n(), view.n());
    if let Ok(elen) = dl4j::export_len(&native) {
        let mut back = vec![0u8; elen];
        dl4j::export(&native, &mut back).expect("sized by export_len");
        let again = dl4j::Dl4jView::parse(&back).expect("export writes valid DL4J buffers");
        assert_eq!(again.n(), view.n());
        assert_eq!(again.count(), view.count());
    }
});

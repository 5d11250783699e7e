//! Message and packet parsing: never panics; whatever parses is internally consistent.
#![no_main]

use gradcast_core::packet;
use gradcast_core::wire::{Encoding, HEADER_LEN, MessageView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = MessageView::parse(data) {
        let h = view.header();
        assert_eq!(h.message_len(), data.len());
        assert!(h.n >= 1 && h.count <= h.n);
        match view.encoding() {
            Encoding::Sparse => {
                assert_eq!(view.sparse_entries().len(), h.count as usize);
                let mut prev = 0u32;
                for e in view.sparse_entries() {
                    assert!(e != 0 && e.unsigned_abs() <= h.n && e.unsigned_abs() > prev);
                    prev = e.unsigned_abs();
                }
            }
            Encoding::Bitmap => {
                assert_eq!(data.len() - HEADER_LEN, (h.n as usize).div_ceil(4));
            }
            Encoding::Dense => assert!(view.dense_values().all(f32::is_finite)),
        }
    }
    let _ = packet::validate(data);
});

//! Message and packet parsing: never panics; whatever parses is internally consistent.
#![no_main]

use gradcast_core::packet;
use gradcast_core::wire::{Encoding, HEADER_LEN, MessageView};
use libfuzzer_sys::fuzz_target;

/// The input with its checksum field recomputed: CRC-32C is no authentication (anyone can
/// forge it), so the fuzzer must reach the field and payload checks behind it.
fn resealed(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER_LEN {
        return None;
    }
    let mut v = data.to_vec();
    let sum = gradcast_core::wire::checksum(&v[..44], &v[HEADER_LEN..]);
    v[44..48].copy_from_slice(&sum.to_le_bytes());
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(v) = resealed(data) {
        check(&v);
    }
});

fn check(data: &[u8]) {
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
}

//! decode-add of a parsed message into a target of fuzzer-chosen length: never panics, never
//! writes outside the message's range, and adds exactly one quantum per entry.
#![no_main]

use gradcast_core::codec;
use gradcast_core::wire::MessageView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (len, raw) = input;
    // Recompute the checksum (CRC-32C is no authentication: anyone can forge it), so the
    // fuzzer reaches decoding.
    let mut bytes = raw.to_vec();
    if bytes.len() >= 48 {
        let sum = gradcast_core::wire::checksum(&bytes[..44], &bytes[48..]);
        bytes[44..48].copy_from_slice(&sum.to_le_bytes());
    }
    let Ok(view) = MessageView::parse(&bytes) else {
        return;
    };
    let mut target = vec![0.0f32; len as usize];
    match codec::decode_add(&view, &mut target) {
        Ok(()) => {
            let range = view.target_range(target.len()).expect("decode accepted it");
            for (i, t) in target.iter().enumerate() {
                if !range.contains(&i) {
                    assert_eq!(*t, 0.0, "write outside the message's range at {i}");
                }
            }
            if view.encoding() != gradcast_core::wire::Encoding::Dense {
                let nonzero = target.iter().filter(|t| **t != 0.0).count();
                assert_eq!(nonzero, view.count() as usize);
                assert!(target.iter().all(|t| *t == 0.0 || t.abs() == view.tau()));
            }
        }
        Err(_) => assert!(target.iter().all(|t| *t == 0.0), "a failed decode wrote"),
    }
});

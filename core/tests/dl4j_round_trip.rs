//! What `docs/FORMAT.md` says about the DL4J round trip: the fields DL4J has no place for
//! (sender, round, the `TRUNCATED` flag, the checksum) are dropped, everything else survives;
//! and the `-tau/2` code imports exactly except for a subnormal tau with an odd last bit.

use gradcast_core::codec::{self, EncodeParams};
use gradcast_core::dl4j;
use gradcast_core::wire::{Encoding, MessageView};

fn export(msg: &MessageView<'_>) -> Vec<u8> {
    let mut d = vec![0u8; dl4j::export_len(msg).unwrap()];
    let len = dl4j::export(msg, &mut d).unwrap();
    assert_eq!(len, d.len());
    d
}

fn import(d: &[u8], sender: u32, round: u64) -> Vec<u8> {
    let view = dl4j::Dl4jView::parse(d).unwrap();
    let mut out = vec![0u8; view.native_len()];
    let len = dl4j::import(d, sender, round, &mut out).unwrap();
    out.truncate(len);
    out
}

#[test]
fn round_trip_drops_the_truncated_flag_and_keeps_the_entries() {
    let mut x: Vec<f32> = (0..40)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let params = EncodeParams {
        sender: 2,
        round: 5,
        cap: Some(2),
        ..EncodeParams::new(0.75)
    };
    let mut out = vec![0u8; 256];
    let s = codec::encode(&mut x, &params, &mut out).unwrap();
    let original = MessageView::parse(&out[..s.bytes]).unwrap();
    assert!(original.header().truncated());

    let back = import(&export(&original), 2, 5);
    let back = MessageView::parse(&back).unwrap();
    assert!(!back.header().truncated(), "the flag has no DL4J form");
    assert_eq!(back.header().sender, 2);
    assert_eq!(back.header().round, 5);
    assert_eq!(back.n(), original.n());
    assert_eq!(back.tau().to_bits(), original.tau().to_bits());
    assert_eq!(back.encoding(), Encoding::Sparse);
    assert!(back.sparse_entries().eq(original.sparse_entries()));
    assert_ne!(back.as_bytes(), original.as_bytes());

    // Without the flag, and with the original sender and round: byte-identical.
    let mut y: Vec<f32> = vec![0.0, 2.0, -3.0, 0.5];
    let plain = EncodeParams {
        sender: 9,
        round: 11,
        ..EncodeParams::new(1.0)
    };
    let s = codec::encode(&mut y, &plain, &mut out).unwrap();
    let original = MessageView::parse(&out[..s.bytes]).unwrap();
    assert_eq!(import(&export(&original), 9, 11), original.as_bytes());
    // Other sender and round: they are what import is given.
    let other = import(&export(&original), 1, 2);
    let other = MessageView::parse(&other).unwrap();
    assert_eq!((other.header().sender, other.header().round), (1, 2));
}

/// A DL4J bitmap of N = 2 with element 0 at `-tau/2` (sign bit only) and element 1 at `-tau`.
fn half_code_bitmap(tau: f32) -> Vec<u8> {
    let w4: u32 = (1 << 16) | (1 << 1) | (1 << 17);
    [2i32, 2, tau.to_bits() as i32, 1, w4 as i32]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn decoded(native: &[u8]) -> Vec<f32> {
    let m = MessageView::parse(native).unwrap();
    assert_eq!(m.encoding(), Encoding::Dense);
    let mut v = vec![0.0f32; m.n() as usize];
    codec::decode_add(&m, &mut v).unwrap();
    v
}

#[test]
fn half_code_is_exact_except_for_an_odd_subnormal_tau() {
    // Normal and even subnormal thresholds: -tau/2 exactly.
    for bits in [1.0f32.to_bits(), 0x0000_0002, 0x0000_1000, 0x007F_FFFE] {
        let tau = f32::from_bits(bits);
        let v = decoded(&import(&half_code_bitmap(tau), 0, 0));
        assert_eq!(v[0] as f64, -(tau as f64) / 2.0, "tau bits {bits:#x}");
        assert_eq!(v[1], -tau);
    }
    // Odd subnormal: tau / 2 is not an f32; the nearest (ties to even) is imported.
    for bits in [0x0000_0001u32, 0x0000_0003, 0x007F_FFFF] {
        let tau = f32::from_bits(bits);
        let v = decoded(&import(&half_code_bitmap(tau), 0, 0));
        let exact = -(tau as f64) / 2.0;
        assert_ne!(v[0] as f64, exact, "tau bits {bits:#x}");
        let half_ulp = f32::from_bits(1) as f64 / 2.0;
        assert_eq!((v[0] as f64 - exact).abs(), half_ulp, "tau bits {bits:#x}");
        assert_eq!(v[0].to_bits() & 1, 0, "ties go to even");
    }
}

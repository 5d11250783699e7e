//! Hostile inputs (issue 9): headers that lie about their size allocate nothing, and every
//! malformed message, packet or DL4J buffer gives a typed error without allocating.
//!
//! A counting global allocator measures allocations on this thread around each call.
// A std test binary.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::WireError;
use gradcast_core::codec::{self, EncodeParams};
use gradcast_core::wire::{self, MAX_ELEMENTS, MessageView};
use gradcast_core::{Classify, Error, ErrorKind, dl4j, packet};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result and the number of allocations it made on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    let after = ALLOCATIONS.with(Cell::get);
    (r, after - before)
}

/// A header (valid checksum over a missing payload) that claims `n` elements and `count`
/// entries of `encoding`.
fn lying_header(encoding: u8, n: u32, count: u32) -> Vec<u8> {
    let payload_len = match encoding {
        0 => 4 * count as u64,
        1 => (n as u64).div_ceil(4),
        _ => 4 * n as u64,
    };
    let mut h = Vec::with_capacity(48);
    h.extend_from_slice(b"GCST");
    h.push(1);
    h.push(encoding);
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&n.to_le_bytes());
    h.extend_from_slice(&count.to_le_bytes());
    h.extend_from_slice(&1.0f32.to_bits().to_le_bytes());
    h.extend_from_slice(&[0u8; 4 + 8 + 8]);
    h.extend_from_slice(&(payload_len.min(u32::MAX as u64) as u32).to_le_bytes());
    let sum = wire::checksum(&h, &[]);
    h.extend_from_slice(&sum.to_le_bytes());
    h
}

#[test]
fn a_header_claiming_a_huge_n_allocates_nothing() {
    // The counter sees allocations (so a zero below means something).
    let (v, n) = allocations(|| vec![1u8; 10]);
    assert!(n >= 1 && v.len() == 10);
    for (encoding, n, count) in [
        (0u8, MAX_ELEMENTS, 1_000_000u32),
        (1, MAX_ELEMENTS, 0),
        (2, MAX_ELEMENTS / 4, MAX_ELEMENTS / 4),
    ] {
        let h = lying_header(encoding, n, count);
        let (r, allocs) = allocations(|| MessageView::parse(&h).map(|_| ()));
        let err = r.expect_err("a header without its payload must be rejected");
        assert!(
            matches!(err, WireError::LengthMismatch { actual: 48, .. }),
            "encoding {encoding}: {err:?}"
        );
        assert_eq!(allocs, 0, "parsing allocated");
        let (r, allocs) = allocations(|| packet::validate(&h));
        assert!(
            matches!(r, Err(WireError::Truncated { got: 48, .. })),
            "{r:?}"
        );
        assert_eq!(allocs, 0);
    }
    // Beyond the format's limit: rejected before anything else is read.
    let h = lying_header(0, u32::MAX, 0);
    assert!(matches!(
        MessageView::parse(&h),
        Err(WireError::TooManyElements { .. })
    ));
}

#[test]
fn validation_of_any_message_allocates_nothing() {
    let mut r: Vec<f32> = (0..4096)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let mut out = vec![0u8; wire::max_message_len(r.len())];
    let s = codec::encode(&mut r, &EncodeParams::new(0.5), &mut out).unwrap();
    let msg = &out[..s.bytes];
    let mut target = vec![0.0f32; 4096];
    let ((), allocs) = allocations(|| {
        let v = MessageView::parse(msg).unwrap();
        codec::decode_add(&v, &mut target).unwrap();
    });
    assert_eq!(allocs, 0);
    // Every single-byte corruption is rejected without allocating.
    let mut bad = msg.to_vec();
    for i in 0..bad.len().min(300) {
        bad[i] ^= 0x40;
        let (r, allocs) = allocations(|| MessageView::parse(&bad).map(|_| ()));
        assert!(r.is_err(), "corruption at byte {i} accepted");
        assert_eq!(allocs, 0);
        bad[i] ^= 0x40;
    }
}

#[test]
fn truncated_messages_and_packets_are_typed_errors() {
    let mut r = vec![
        1.0f32, -1.0, 0.25, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    let mut out = vec![0u8; 256];
    let s = codec::encode(&mut r, &EncodeParams::new(1.0), &mut out).unwrap();
    let msg = &out[..s.bytes];
    for cut in 0..msg.len() {
        let e = MessageView::parse(&msg[..cut]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed, "cut {cut}: {e:?}");
        assert!(packet::validate(&msg[..cut]).is_err() || cut == 0);
    }
    // A packet of two messages, the second cut short.
    let mut two = msg.to_vec();
    two.extend_from_slice(&msg[..msg.len() - 3]);
    let mut it = packet::Messages::new(&two);
    assert!(it.next().unwrap().is_ok());
    assert!(matches!(it.next(), Some(Err(WireError::Truncated { .. }))));
    assert!(it.next().is_none(), "the iterator stops after an error");
}

#[test]
fn a_message_for_a_model_of_another_size_is_rejected_everywhere() {
    let mut r = vec![2.0f32; 100];
    let mut out = vec![0u8; 256];
    let s = codec::encode(&mut r, &EncodeParams::new(1.0), &mut out).unwrap();
    let v = MessageView::parse(&out[..s.bytes]).unwrap();
    for len in [0usize, 1, 99, 101, 1000] {
        let mut t = vec![0.0f32; len];
        let e = codec::decode_add(&v, &mut t).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SizeMismatch);
        assert!(t.iter().all(|x| *x == 0.0));
    }
}

#[test]
fn dl4j_buffers_claiming_huge_sizes_are_rejected_cheaply() {
    let enc = |w: &[i32]| -> Vec<u8> { w.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let t = 1.0f32.to_bits() as i32;
    for words in [
        vec![i32::MAX, 5, t, 0],
        vec![1_000_000, i32::MAX, t, 1],
        vec![5, -5, t, 0],
        vec![0, 0, t, 0],
    ] {
        let b = enc(&words);
        let (r, allocs) = allocations(|| dl4j::Dl4jView::parse(&b).map(|_| ()));
        assert!(r.is_err(), "{words:?} accepted");
        assert_eq!(allocs, 0);
    }
}

#[test]
fn dense_messages_past_the_payload_length_field_are_refused_before_commit() {
    use gradcast_core::codec::{EncodingMode, Plan};
    // Planning is enough: a vector of 2^30 elements would need 4 GiB of payload.
    let n = 1usize << 30;
    let params = EncodeParams {
        mode: EncodingMode::Dense,
        ..EncodeParams::new(1.0)
    };
    let e = Plan::new(&params, n, 0, usize::MAX, |_| 0).unwrap_err();
    assert!(
        matches!(e, Error::Wire(WireError::TooManyElements { .. })),
        "{e:?}"
    );
    let sparse = EncodeParams {
        mode: EncodingMode::Sparse,
        ..EncodeParams::new(1.0)
    };
    let e = Plan::new(&sparse, n, n, usize::MAX, |_| 0).unwrap_err();
    assert!(
        matches!(e, Error::Wire(WireError::TooManyElements { .. })),
        "{e:?}"
    );
    // Just below the limit is fine.
    assert!(Plan::new(&params, (1 << 30) - 12, 0, usize::MAX, |_| 0).is_ok());
}

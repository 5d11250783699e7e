//! Encoding on an embedded worker: a residual in a static buffer, a message written into a
//! static buffer, no allocator, no std.
//!
//! Built by CI for `thumbv7em-none-eabihf` (Cortex-M4F/M7F):
//! `cargo build -p gradcast-embedded-example --target thumbv7em-none-eabihf`. It is a library
//! (a crate of its own, so that the core's test-only dependencies are never built for the
//! microcontroller): firmware links it with its own runtime and calls [`encode_step`] once
//! per round. On the host its tests check it against the core's codec.
#![no_std]

use gradcast_core::codec::{self, EncodeParams};
use gradcast_core::wire;
use spin::Mutex;

/// Parameters on the device.
pub const N: usize = 4096;
/// The largest message for N elements: a 48-byte header plus a 2-bit-per-element bitmap.
pub const MAX_MESSAGE: usize = 48 + N.div_ceil(4);

/// The worker's residual, statically allocated.
static RESIDUAL: Mutex<[f32; N]> = Mutex::new([0.0; N]);
/// The outgoing message, statically allocated.
static MESSAGE: Mutex<[u8; MAX_MESSAGE]> = Mutex::new([0; MAX_MESSAGE]);

/// Adds `update` to the residual, encodes it at threshold `tau` into the static message buffer
/// and returns the message length (0 on a bad threshold, non-finite value or wrong length).
pub fn encode_step(update: &[f32], tau: f32, sender: u32, round: u64) -> usize {
    debug_assert_eq!(MAX_MESSAGE, wire::max_message_len(N));
    if update.len() != N {
        return 0;
    }
    let mut residual = RESIDUAL.lock();
    for (r, u) in residual.iter_mut().zip(update) {
        *r += *u;
    }
    let mut out = MESSAGE.lock();
    let params = EncodeParams {
        sender,
        round,
        ..EncodeParams::new(tau)
    };
    match codec::encode(&mut residual[..], &params, &mut out[..]) {
        Ok(summary) => summary.bytes,
        Err(_) => 0,
    }
}

/// Runs `f` on the last message written by [`encode_step`] (for the firmware's radio or bus).
pub fn with_message<R>(len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
    let out = MESSAGE.lock();
    f(&out[..len.min(MAX_MESSAGE)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_valid_message_and_keeps_the_rest() {
        let mut update = [0.0f32; N];
        update[3] = 0.75;
        update[100] = -2.0;
        update[4000] = 0.1;
        let len = encode_step(&update, 0.5, 7, 1);
        assert_eq!(len, 48 + 8, "two sparse entries");
        with_message(len, |m| {
            let v = gradcast_core::wire::MessageView::parse(m).unwrap();
            assert_eq!(v.count(), 2);
            assert_eq!(v.header().sender, 7);
        });
        // A wrong length is refused, and nothing is encoded.
        assert_eq!(encode_step(&update[..10], 0.5, 7, 2), 0);
        // The residual kept what was not sent: element 100 still holds -1.5, sent next round.
        let len = encode_step(&[0.0; N], 0.5, 7, 3);
        with_message(len, |m| {
            let v = gradcast_core::wire::MessageView::parse(m).unwrap();
            assert_eq!(v.count(), 1);
            assert_eq!(v.sparse_entries().next(), Some(-101));
        });
    }
}

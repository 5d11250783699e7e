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
use gradcast_core::{Error, wire};
use spin::Mutex;

/// Parameters on the device.
pub const N: usize = 4096;
/// The largest message for N elements: a 48-byte header plus a 2-bit-per-element bitmap.
pub const MAX_MESSAGE: usize = 48 + N.div_ceil(4);
const _: () = assert!(MAX_MESSAGE == wire::HEADER_LEN + N.div_ceil(4));

/// The worker's residual, statically allocated.
static RESIDUAL: Mutex<[f32; N]> = Mutex::new([0.0; N]);
/// The outgoing message, statically allocated.
static MESSAGE: Mutex<[u8; MAX_MESSAGE]> = Mutex::new([0; MAX_MESSAGE]);

/// Adds `update` to the residual, encodes it at threshold `tau` into the static message buffer
/// and returns the message length.
///
/// Nothing changes on error: the update and the threshold are checked before the residual is
/// touched, so one bad update cannot poison the residual for later rounds.
///
/// # Errors
/// [`Error::TargetSizeMismatch`] for an update of another length, [`Error::NonFinite`] for a
/// NaN or infinite update value, [`Error::BadTau`] for a bad threshold.
pub fn encode_step(update: &[f32], tau: f32, sender: u32, round: u64) -> Result<usize, Error> {
    if update.len() != N {
        return Err(Error::TargetSizeMismatch {
            message_n: N as u32,
            offset: 0,
            target_len: update.len(),
        });
    }
    codec::check_tau(tau)?;
    if let Some((index, v)) = update.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            index,
            bits: v.to_bits(),
        });
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
    // A finite residual plus a finite update can still overflow to infinity; the codec then
    // refuses to encode (NonFinite) and the caller decides (e.g. reset the residual).
    codec::encode(&mut residual[..], &params, &mut out[..]).map(|s| s.bytes)
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
        let len = encode_step(&update, 0.5, 7, 1).unwrap();
        assert_eq!(len, 48 + 8, "two sparse entries");
        with_message(len, |m| {
            let v = gradcast_core::wire::MessageView::parse(m).unwrap();
            assert_eq!(v.count(), 2);
            assert_eq!(v.header().sender, 7);
        });
        // A wrong length, a NaN and a bad threshold are refused, and change nothing.
        assert!(matches!(
            encode_step(&update[..10], 0.5, 7, 2),
            Err(Error::TargetSizeMismatch { .. })
        ));
        let mut poisoned = [0.0f32; N];
        poisoned[9] = f32::NAN;
        assert!(matches!(
            encode_step(&poisoned, 0.5, 7, 2),
            Err(Error::NonFinite { index: 9, .. })
        ));
        assert!(matches!(
            encode_step(&[0.0; N], -1.0, 7, 2),
            Err(Error::BadTau { .. })
        ));
        // The residual kept what was not sent: element 100 still holds -1.5, sent next round.
        let len = encode_step(&[0.0; N], 0.5, 7, 3).unwrap();
        with_message(len, |m| {
            let v = gradcast_core::wire::MessageView::parse(m).unwrap();
            assert_eq!(v.count(), 1);
            assert_eq!(v.sparse_entries().next(), Some(-101));
        });
    }
}

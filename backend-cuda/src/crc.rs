//! CRC-32C of a message with the CPU's CRC instruction where there is one.
//!
//! The header checksum is computed on the host over the payload that came back from the
//! device. At the benchmark's sizes (a 1 MB sparse message for N = 2^28) the core's portable
//! table-driven [`wire::checksum`] (about 2 GB/s) would cost as much as the device work, so on
//! x86-64 with SSE4.2 the same CRC (Castagnoli, reflected, init and final XOR `!0`) is
//! computed with the `crc32` instruction; elsewhere this is [`wire::checksum`]. Both give the
//! same value (tested).

use gradcast_core::wire::{self, Header};

/// The CRC-32C of a header's first 44 bytes followed by a payload: [`wire::checksum`].
pub fn checksum(header_prefix: &[u8], payload: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2, checked just above.
        return unsafe { sse42::checksum(header_prefix, payload) };
    }
    wire::checksum(header_prefix, payload)
}

#[cfg(target_arch = "x86_64")]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};

    fn word(w: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_le_bytes(b)
    }

    /// The raw CRC-32C state after `data` (no initial or final inversion).
    #[target_feature(enable = "sse4.2")]
    fn update(crc: u32, data: &[u8]) -> u32 {
        let mut c = crc as u64;
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            c = _mm_crc32_u64(c, word(w));
        }
        let mut c = c as u32;
        for &b in words.remainder() {
            c = _mm_crc32_u8(c, b);
        }
        c
    }

    /// Payloads shorter than this are done in one chain.
    const SPLIT_MIN: usize = 3 * 4096;

    /// CRC-32C of `a` then `b`. The `crc32` instruction has a latency of three cycles and a
    /// throughput of one per cycle, so a long `b` is cut into three parts whose CRCs run as
    /// three independent chains in one loop, then joined with [`super::combine`].
    #[target_feature(enable = "sse4.2")]
    pub(super) fn checksum(a: &[u8], b: &[u8]) -> u32 {
        let start = update(!0, a);
        if b.len() < SPLIT_MIN {
            return !update(start, b);
        }
        let l = (b.len() / 3) & !7;
        let (p1, rest) = b.split_at(l);
        let (p2, p3) = rest.split_at(l);
        let (mut c1, mut c2, mut c3) = (start as u64, !0u32 as u64, !0u32 as u64);
        for ((w1, w2), w3) in p1
            .chunks_exact(8)
            .zip(p2.chunks_exact(8))
            .zip(p3.chunks_exact(8))
        {
            c1 = _mm_crc32_u64(c1, word(w1));
            c2 = _mm_crc32_u64(c2, word(w2));
            c3 = _mm_crc32_u64(c3, word(w3));
        }
        let c3 = update(c3 as u32, &p3[l..]);
        let joined = super::combine(!(c1 as u32), !(c2 as u32), l as u64);
        super::combine(joined, !c3, p3.len() as u64)
    }
}

/// The CRC-32C of `A ++ B` from `crc(A)`, `crc(B)` and `B`'s length (zlib's `crc32_combine`
/// with the Castagnoli polynomial): appends `len_b` zero bytes to `crc_a` by repeated
/// squaring of the GF(2) shift operator.
fn combine(mut crc_a: u32, crc_b: u32, mut len_b: u64) -> u32 {
    fn times(mat: &[u32; 32], mut vec: u32) -> u32 {
        let mut sum = 0;
        let mut i = 0;
        while vec != 0 {
            if vec & 1 != 0 {
                sum ^= mat[i];
            }
            vec >>= 1;
            i += 1;
        }
        sum
    }
    fn square(dst: &mut [u32; 32], mat: &[u32; 32]) {
        for (n, d) in dst.iter_mut().enumerate() {
            *d = times(mat, mat[n]);
        }
    }
    if len_b == 0 {
        return crc_a;
    }
    // The operator for one zero bit, then two, then four.
    let mut odd = [0u32; 32];
    odd[0] = 0x82F6_3B78;
    for (n, o) in odd.iter_mut().enumerate().skip(1) {
        *o = 1 << (n - 1);
    }
    let mut even = [0u32; 32];
    square(&mut even, &odd);
    square(&mut odd, &even);
    // Apply len_b zero bytes (8 len_b zero bits), one bit of len_b at a time.
    loop {
        square(&mut even, &odd);
        if len_b & 1 != 0 {
            crc_a = times(&even, crc_a);
        }
        len_b >>= 1;
        if len_b == 0 {
            break;
        }
        square(&mut odd, &even);
        if len_b & 1 != 0 {
            crc_a = times(&odd, crc_a);
        }
        len_b >>= 1;
        if len_b == 0 {
            break;
        }
    }
    crc_a ^ crc_b
}

/// [`wire::seal`] with [`checksum`]: writes the header and its CRC-32C in front of a payload
/// already in `out[wire::HEADER_LEN..header.message_len()]`; returns the message length.
/// `out` must hold the message (the caller sized it with `Plan`).
pub(crate) fn seal(out: &mut [u8], header: Header) -> usize {
    wire::seal_with(out, header, checksum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradcast_core::codec::{EncodeParams, EncodingMode, Plan};
    use gradcast_core::wire::HEADER_LEN;

    #[test]
    fn the_fast_crc_is_the_wire_crc() {
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        let data: Vec<u8> = (0..(1 << 20) + 13)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for (a, b) in [
            (0, 0),
            (44, 0),
            (44, 1),
            (44, 7),
            (44, 8),
            (44, 9),
            (44, 1000),
        ] {
            assert_eq!(
                checksum(&data[..a], &data[a..a + b]),
                wire::checksum(&data[..a], &data[a..a + b])
            );
        }
        assert_eq!(
            checksum(&data[..44], &data[44..]),
            wire::checksum(&data[..44], &data[44..])
        );
        for (a, b) in [(&data[..10], &data[10..5000]), (&data[..0], &data[..1])] {
            let whole: Vec<u8> = a.iter().chain(b).copied().collect();
            assert_eq!(
                combine(
                    wire::checksum(&[], a),
                    wire::checksum(&[], b),
                    b.len() as u64
                ),
                wire::checksum(&[], &whole)
            );
        }
        // The CRC-32C check value.
        assert_eq!(checksum(b"", b"123456789"), 0xE306_9283);
    }

    #[test]
    fn seal_is_the_wire_seal() {
        let mut params = EncodeParams::new(0.25);
        params.mode = EncodingMode::Bitmap;
        params.round = 9;
        let plan = Plan::new(&params, 37, 3, 4096, |_| 0).unwrap();
        let mut a = vec![0u8; plan.bytes];
        a[HEADER_LEN..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i as u8) & 0x55);
        let mut b = a.clone();
        let la = seal(&mut a, plan.header(&params, 37));
        let lb = wire::seal(&mut b, plan.header(&params, 37));
        assert_eq!((la, &a), (lb, &b));
    }
}

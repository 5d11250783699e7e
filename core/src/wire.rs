//! Wire format v1: a fixed 48-byte little-endian header, then the payload.
//!
//! The byte-level description, the encoding rule and known-answer vectors live in
//! `docs/FORMAT.md`; this module is its implementation. Parsing is zero-copy: [`MessageView`]
//! borrows the caller's bytes after validating every field, the checksum and every payload
//! entry, so code that holds a `MessageView` never needs to check anything again. Building
//! goes into a caller's `&mut [u8]` (see [`crate::codec::encode`]); [`max_message_len`] and
//! [`message_len`] size such buffers once.
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"GCST"` |
//! | 4 | version (1) |
//! | 5 | encoding: 0 sparse, 1 bitmap, 2 dense f32 |
//! | 6..8 | flags: bit 0 truncated by a cap, bit 1 segment message |
//! | 8..12 | N, the element count of the vector (or segment) |
//! | 12..16 | count: sparse entries, non-zero bitmap codes, or N for dense |
//! | 16..20 | tau, f32 bits |
//! | 20..24 | sender id |
//! | 24..32 | round number |
//! | 32..34 | segment id |
//! | 34..36 | reserved, 0 |
//! | 36..40 | segment offset |
//! | 40..44 | payload length in bytes |
//! | 44..48 | CRC-32C of bytes 0..44 and the payload |

use crate::error::Error;
use crate::error::{CodecError, WireError};

/// The four bytes every message starts with.
pub const MAGIC: [u8; 4] = *b"GCST";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 48;
/// The largest element count a message may describe: sparse entries are signed 32-bit
/// `±(i+1)`, so `i + 1 <= i32::MAX`.
pub const MAX_ELEMENTS: u32 = i32::MAX as u32;

/// Header flag: the sender had more candidates than its cap allowed; the rest stayed in its
/// residual.
pub const FLAG_TRUNCATED: u16 = 1 << 0;
/// Header flag: the message covers a segment (`offset .. offset + N`) of a larger vector.
/// Without it, segment and offset are 0 and N must equal the target's length.
pub const FLAG_SEGMENT: u16 = 1 << 1;
/// Every flag bit version 1 defines.
pub const KNOWN_FLAGS: u16 = FLAG_TRUNCATED | FLAG_SEGMENT;

/// Offset of the checksum field; the checksum covers `bytes[..CHECKSUM_AT]` and the payload.
const CHECKSUM_AT: usize = 44;

/// CRC-32C (Castagnoli, the iSCSI polynomial), slicing-by-16 tables: the `no_std` path.
#[cfg(any(not(feature = "std"), test))]
static CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// The CRC-32C of a header's first 44 bytes followed by a payload.
///
/// Every message (sparse, bitmap, dense) and every checkpoint is checked with it, by every
/// backend (they seal with [`seal`]), so it runs at memory speed where the CPU allows: with
/// feature `std` it is the `crc32c` crate, which picks the CPU's CRC instruction at run time
/// (SSE4.2 `crc32` on x86-64, three independent chains per block to cover the instruction's
/// latency; the ARMv8 CRC extension on aarch64) and falls back to tables elsewhere. Without
/// `std` (no run-time detection) it is the table-driven `crc` crate. Both compute the same
/// function (tested).
pub fn checksum(header_prefix: &[u8], payload: &[u8]) -> u32 {
    #[cfg(feature = "std")]
    {
        crc32c::crc32c_append(crc32c::crc32c(header_prefix), payload)
    }
    #[cfg(not(feature = "std"))]
    {
        let mut d = CRC32C.digest();
        d.update(header_prefix);
        d.update(payload);
        d.finalize()
    }
}

/// How a message's payload represents the transmitted values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// `count` little-endian i32 entries, strictly ascending by index, each `+(i+1)` for `+tau`
    /// at element `i` or `-(i+1)` for `-tau`.
    Sparse = 0,
    /// 2 bits per element, element `i` in byte `i / 4` at bit `2 * (i % 4)`: `00` nothing,
    /// `01` `+tau`, `10` `-tau`, `11` reserved (rejected). Padding bits are 0.
    Bitmap = 1,
    /// N little-endian f32 values, added as they are (warm-up rounds).
    Dense = 2,
}

impl Encoding {
    /// The encoding for a code byte, or [`WireError::UnknownEncoding`].
    pub fn from_code(code: u8) -> Result<Self, WireError> {
        match code {
            0 => Ok(Encoding::Sparse),
            1 => Ok(Encoding::Bitmap),
            2 => Ok(Encoding::Dense),
            found => Err(WireError::UnknownEncoding { found }),
        }
    }

    /// A short lowercase name (`"sparse"`, `"bitmap"`, `"dense"`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Sparse => "sparse",
            Encoding::Bitmap => "bitmap",
            Encoding::Dense => "dense",
        }
    }
}

/// Payload length in bytes of a message with this encoding, N and count.
///
/// Computed in `u64`, so no header value can overflow it.
pub fn payload_len(encoding: Encoding, n: u32, count: u32) -> u64 {
    match encoding {
        Encoding::Sparse => 4 * count as u64,
        Encoding::Bitmap => (n as u64).div_ceil(4),
        Encoding::Dense => 4 * n as u64,
    }
}

/// Exact length in bytes of a message with this encoding, N and count.
///
/// Saturates at `usize::MAX` instead of overflowing (on 32-bit targets).
pub fn message_len(encoding: Encoding, n: usize, count: usize) -> usize {
    HEADER_LEN.saturating_add(match encoding {
        Encoding::Sparse => count.saturating_mul(4),
        Encoding::Bitmap => n.div_ceil(4),
        Encoding::Dense => n.saturating_mul(4),
    })
}

/// The largest payload a header can describe: its length field is a u32.
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// The largest message [`crate::codec::encode`] writes for N elements in automatic or forced
/// sparse-or-bitmap mode, whatever the residual: a buffer of this size never fails with
/// [`CodecError::BufferTooSmall`] (forced sparse mode may need up to `48 + 4 N`; dense mode needs
/// [`dense_message_len`]).
pub fn max_message_len(n: usize) -> usize {
    message_len(Encoding::Bitmap, n, 0)
}

/// The length of a dense (warm-up) message for N elements.
pub fn dense_message_len(n: usize) -> usize {
    message_len(Encoding::Dense, n, n)
}

/// The decoded header of a message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    /// The payload's encoding.
    pub encoding: Encoding,
    /// Flag bits ([`FLAG_TRUNCATED`], [`FLAG_SEGMENT`]).
    pub flags: u16,
    /// Element count of the vector or segment.
    pub n: u32,
    /// Sparse entries, non-zero bitmap codes, or N for dense.
    pub count: u32,
    /// The quantum every sparse or bitmap entry carries.
    pub tau: f32,
    /// The sending worker's global id.
    pub sender: u32,
    /// The round this message belongs to.
    pub round: u64,
    /// The segment id (0 without [`FLAG_SEGMENT`]).
    pub segment: u16,
    /// The segment's first element in the full vector (0 without [`FLAG_SEGMENT`]).
    pub offset: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// CRC-32C over the header's first 44 bytes and the payload.
    pub checksum: u32,
}

impl Header {
    /// Serialises the header (its stored checksum included) into 48 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.encoding as u8;
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.n.to_le_bytes());
        b[12..16].copy_from_slice(&self.count.to_le_bytes());
        b[16..20].copy_from_slice(&self.tau.to_bits().to_le_bytes());
        b[20..24].copy_from_slice(&self.sender.to_le_bytes());
        b[24..32].copy_from_slice(&self.round.to_le_bytes());
        b[32..34].copy_from_slice(&self.segment.to_le_bytes());
        // 34..36 reserved, zero.
        b[36..40].copy_from_slice(&self.offset.to_le_bytes());
        b[40..44].copy_from_slice(&self.payload_len.to_le_bytes());
        b[44..48].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Whether the sender's cap cut the message short.
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TRUNCATED != 0
    }

    /// Whether the message covers a segment of a larger vector.
    pub fn is_segment(&self) -> bool {
        self.flags & FLAG_SEGMENT != 0
    }

    /// Total message length in bytes.
    pub fn message_len(&self) -> usize {
        // Saturating: on a 32-bit target a hostile payload length near 4 GiB must not wrap;
        // no buffer is that long, so the length comparison rejects it.
        HEADER_LEN.saturating_add(self.payload_len as usize)
    }

    /// Parses and validates the 48 header bytes alone (no payload, no checksum check).
    ///
    /// # Errors
    /// Every header-level variant of [`Error`]; see [`MessageView::parse`].
    pub fn parse(bytes: &[u8]) -> Result<Header, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(WireError::BadMagic { found: magic });
        }
        if bytes[4] != VERSION {
            return Err(WireError::UnsupportedVersion { found: bytes[4] });
        }
        let encoding = Encoding::from_code(bytes[5])?;
        let flags = u16_at(6);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(WireError::UnknownFlags { found: flags });
        }
        let reserved = u16_at(34);
        if reserved != 0 {
            return Err(WireError::ReservedNotZero { found: reserved });
        }
        let n = u32_at(8);
        if n == 0 {
            return Err(WireError::EmptyVector);
        }
        if n > MAX_ELEMENTS {
            return Err(WireError::TooManyElements {
                n: n as u64,
                max: MAX_ELEMENTS,
            });
        }
        let count = u32_at(12);
        if count > n {
            return Err(WireError::CountOutOfRange { count, n });
        }
        let tau_bits = u32_at(16);
        check_tau_bits(tau_bits)?;
        let segment = u16_at(32);
        let offset = u32_at(36);
        let seg_flag = flags & FLAG_SEGMENT != 0;
        if (!seg_flag && (segment != 0 || offset != 0))
            || offset as u64 + n as u64 > MAX_ELEMENTS as u64
        {
            return Err(WireError::BadSegment { segment, offset, n });
        }
        if encoding == Encoding::Dense && count != n {
            return Err(WireError::CountOutOfRange { count, n });
        }
        let payload_len = u32_at(40);
        let expected = payload_len_of(encoding, n, count);
        if payload_len as u64 != expected {
            return Err(WireError::PayloadLengthMismatch {
                declared: payload_len,
                expected,
            });
        }
        Ok(Header {
            encoding,
            flags,
            n,
            count,
            tau: f32::from_bits(tau_bits),
            sender: u32_at(20),
            round: u64::from_le_bytes([
                bytes[24], bytes[25], bytes[26], bytes[27], bytes[28], bytes[29], bytes[30],
                bytes[31],
            ]),
            segment,
            offset,
            payload_len,
            checksum: u32_at(44),
        })
    }
}

fn payload_len_of(encoding: Encoding, n: u32, count: u32) -> u64 {
    payload_len(encoding, n, count)
}

/// Checks that f32 bits are a finite, strictly positive threshold.
pub(crate) fn check_tau_bits(bits: u32) -> Result<(), WireError> {
    let t = f32::from_bits(bits);
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(WireError::BadTau { bits })
    }
}

/// A validated, zero-copy view of one message.
///
/// Obtained only through [`MessageView::parse`], which checks every header field, the total
/// length, the checksum and every payload entry; holding one is proof the bytes are valid.
#[derive(Clone, Copy, Debug)]
pub struct MessageView<'a> {
    header: Header,
    bytes: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// Parses and fully validates a message.
    ///
    /// Nothing is allocated and nothing panics whatever the bytes: a header that claims a huge
    /// N is rejected by comparing lengths before any payload is read.
    ///
    /// # Errors
    /// In checking order: [`WireError::Truncated`], [`WireError::BadMagic`],
    /// [`WireError::UnsupportedVersion`], [`WireError::UnknownEncoding`], [`WireError::UnknownFlags`],
    /// [`WireError::ReservedNotZero`], [`WireError::EmptyVector`], [`WireError::TooManyElements`],
    /// [`WireError::CountOutOfRange`], [`WireError::BadTau`], [`WireError::BadSegment`],
    /// [`WireError::PayloadLengthMismatch`], [`WireError::LengthMismatch`],
    /// [`WireError::ChecksumMismatch`], then the payload's: [`WireError::EntryZero`],
    /// [`WireError::EntryOutOfRange`], [`WireError::EntriesNotAscending`],
    /// [`WireError::ReservedBitmapCode`], [`WireError::BitmapPaddingSet`],
    /// [`WireError::BitmapCountMismatch`], [`WireError::DenseValueNotFinite`].
    pub fn parse(bytes: &'a [u8]) -> Result<MessageView<'a>, WireError> {
        let header = Header::parse(bytes)?;
        let declared = header.message_len();
        if bytes.len() != declared {
            return Err(WireError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        let computed = checksum(&bytes[..CHECKSUM_AT], &bytes[HEADER_LEN..]);
        if computed != header.checksum {
            return Err(WireError::ChecksumMismatch {
                stored: header.checksum,
                computed,
            });
        }
        let view = MessageView { header, bytes };
        view.validate_payload()?;
        Ok(view)
    }

    /// A view of bytes that [`MessageView::parse`] accepted, with the header it returned:
    /// how the round protocol hands a packet validated once to every party.
    #[cfg(feature = "alloc")]
    pub(crate) fn from_parsed(header: Header, bytes: &'a [u8]) -> MessageView<'a> {
        MessageView { header, bytes }
    }

    fn validate_payload(&self) -> Result<(), WireError> {
        let n = self.header.n;
        match self.header.encoding {
            Encoding::Sparse => {
                // The common case, valid entries, in one branch-free pass: every `|e|` above
                // the previous one (the first above 0) and the last at most N. Only a bad
                // payload takes the exact walk below, which names the first bad entry.
                let mut last = 0u32;
                let mut bad = false;
                for c in self.payload().chunks_exact(4) {
                    let index = i32::from_le_bytes([c[0], c[1], c[2], c[3]]).unsigned_abs();
                    bad |= index <= last;
                    last = index;
                }
                if !bad && last <= n {
                    return Ok(());
                }
                let mut previous: i32 = 0;
                for (position, entry) in self.sparse_entries().enumerate() {
                    if entry == 0 {
                        return Err(WireError::EntryZero { position });
                    }
                    let index = entry.unsigned_abs();
                    if index > n {
                        return Err(WireError::EntryOutOfRange { position, entry, n });
                    }
                    if position > 0 && index <= previous.unsigned_abs() {
                        return Err(WireError::EntriesNotAscending {
                            position,
                            previous,
                            entry,
                        });
                    }
                    previous = entry;
                }
                Ok(())
            }
            Encoding::Bitmap => {
                let payload = self.payload();
                let mut nonzero: u64 = 0;
                let full = n as usize / 4;
                for (byte_index, &byte) in payload.iter().enumerate() {
                    // Reserved code 0b11 in any of the four slots: both bits of a pair set.
                    let reserved = byte & (byte >> 1) & 0x55;
                    if reserved != 0 {
                        let slot = reserved.trailing_zeros() as usize / 2;
                        let index = byte_index * 4 + slot;
                        if index < n as usize {
                            return Err(WireError::ReservedBitmapCode { index });
                        }
                    }
                    if byte_index >= full {
                        // The last, partial byte: slots at or past N must be 0.
                        let used = n as usize - full * 4;
                        let mask: u8 = if used == 0 {
                            0
                        } else {
                            (1u8 << (2 * used)) - 1
                        };
                        if byte & !mask != 0 {
                            return Err(WireError::BitmapPaddingSet);
                        }
                    }
                    nonzero += ((byte | (byte >> 1)) & 0x55).count_ones() as u64;
                }
                if nonzero != self.header.count as u64 {
                    return Err(WireError::BitmapCountMismatch {
                        declared: self.header.count,
                        actual: nonzero,
                    });
                }
                Ok(())
            }
            Encoding::Dense => {
                for (index, v) in self.dense_values().enumerate() {
                    if !v.is_finite() {
                        return Err(WireError::DenseValueNotFinite { index });
                    }
                }
                Ok(())
            }
        }
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The whole message's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The payload's bytes.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.header.encoding
    }

    /// The element count N.
    pub fn n(&self) -> u32 {
        self.header.n
    }

    /// The threshold carried by each entry.
    pub fn tau(&self) -> f32 {
        self.header.tau
    }

    /// The number of elements the message changes (sparse entries, non-zero bitmap codes, or N
    /// for dense).
    pub fn count(&self) -> u32 {
        self.header.count
    }

    /// The sparse entries, `±(i+1)`, in payload order (empty unless the encoding is sparse).
    pub fn sparse_entries(&self) -> impl ExactSizeIterator<Item = i32> + 'a {
        let payload: &'a [u8] = if self.header.encoding == Encoding::Sparse {
            self.payload()
        } else {
            &[]
        };
        payload
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The 2-bit bitmap code of element `i` (0 nothing, 1 `+tau`, 2 `-tau`); 0 past N or for
    /// other encodings.
    pub fn bitmap_code(&self, i: usize) -> u8 {
        if self.header.encoding != Encoding::Bitmap || i >= self.header.n as usize {
            return 0;
        }
        (self.payload()[i / 4] >> (2 * (i % 4))) & 0b11
    }

    /// The dense values (empty unless the encoding is dense).
    pub fn dense_values(&self) -> impl ExactSizeIterator<Item = f32> + 'a {
        let payload: &'a [u8] = if self.header.encoding == Encoding::Dense {
            self.payload()
        } else {
            &[]
        };
        payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The range of the target vector this message touches, checked against the target's
    /// length: the whole target for a plain message (N must equal the length), or
    /// `offset .. offset + N` for a segment message.
    ///
    /// # Errors
    /// [`CodecError::TargetSizeMismatch`] when the message does not fit.
    pub fn target_range(&self, target_len: usize) -> Result<core::ops::Range<usize>, Error> {
        let h = &self.header;
        let start = h.offset as usize;
        let end = start + h.n as usize;
        let fits = if h.is_segment() {
            end <= target_len
        } else {
            h.n as usize == target_len
        };
        if fits {
            Ok(start..end)
        } else {
            Err(CodecError::TargetSizeMismatch {
                message_n: h.n,
                offset: h.offset,
                target_len,
            }
            .into())
        }
    }
}

/// Writes header fields into `out[..HEADER_LEN]` and the checksum over header and payload
/// (which must already be in `out[HEADER_LEN..HEADER_LEN + payload_len]`).
///
/// `out` must hold at least `HEADER_LEN + header.payload_len` bytes; the codec sizes it.
/// Public so that device backends, which write the payload themselves, finish a message
/// exactly as [`crate::codec::encode`] does (header from [`crate::codec::Plan::header`]).
/// Returns the message length.
///
/// # Panics
/// When `out` is shorter than the message (a sizing bug of the caller: size `out` with
/// [`crate::codec::Plan`], which reports [`CodecError::BufferTooSmall`] instead).
pub fn seal(out: &mut [u8], header: Header) -> usize {
    seal_with(out, header, checksum)
}

/// [`seal`] with another implementation of the same CRC-32C (`crc(header_prefix, payload)`
/// must equal [`checksum`]), for backends with a faster one (a hardware CRC instruction).
///
/// # Panics
/// As [`seal`].
pub fn seal_with(
    out: &mut [u8],
    mut header: Header,
    crc: impl FnOnce(&[u8], &[u8]) -> u32,
) -> usize {
    let total = header.message_len();
    header.checksum = 0;
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    let sum = crc(&out[..CHECKSUM_AT], &out[HEADER_LEN..total]);
    out[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table-driven CRC over `a` then `b`: the `no_std` path, the oracle here.
    fn table(a: &[u8], b: &[u8]) -> u32 {
        let mut d = CRC32C.digest();
        d.update(a);
        d.update(b);
        d.finalize()
    }

    #[test]
    fn checksum_is_crc32c_at_every_length_and_alignment() {
        // The CRC-32C check value.
        assert_eq!(checksum(b"", b"123456789"), 0xE306_9283);
        assert_eq!(checksum(b"1234", b"56789"), 0xE306_9283);
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        let data: alloc::vec::Vec<u8> = (0..(1 << 16) + 77)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        // Short and long payloads (the hardware path switches strategies at a few hundred
        // bytes and a few kilobytes), at every start alignment of a word.
        for len in (0..80).chain([255, 256, 257, 767, 768, 769, 4096, 24_575, 24_576, 24_577]) {
            for start in 44..52 {
                let (a, b) = (&data[..44], &data[start..start + len]);
                assert_eq!(checksum(a, b), table(a, b), "len {len} start {start}");
            }
        }
        assert_eq!(
            checksum(&data[..44], &data[44..]),
            table(&data[..44], &data[44..])
        );
        assert_eq!(checksum(&[], &data), table(&[], &data));
    }
}

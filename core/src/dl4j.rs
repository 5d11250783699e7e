//! Import and export of Deeplearning4j's threshold-encoded int32 layouts, bit-exactly.
//!
//! DL4J messages are arrays of int32 words (little-endian here, as on x86 hosts), with a
//! 4-word header (`docs/DL4J.md`, section 2):
//!
//! | word | sparse ("FLEXIBLE", mode 0) | bitmap (mode 1) |
//! |---|---|---|
//! | 0 | K, the entry count | N |
//! | 1 | N | N |
//! | 2 | tau as f32 bits | tau as f32 bits |
//! | 3 | 0 | 1 |
//!
//! Sparse entries follow as `±(i+1)` (DL4J's CPU encoder writes them in any order; import
//! sorts them). A bitmap has `N / 16 + 1` payload words (integer division); element `i` lives
//! in word `4 + i / 16`, bit `i % 16` (magnitude M) and bit `i % 16 + 16` (sign S): M=1,S=0 is
//! `+tau`, M=1,S=1 is `-tau`, and M=0,S=1 is DL4J's `-tau/2` code.
//!
//! [`import`] turns a DL4J buffer into a native message: sparse to sparse, bitmap to bitmap, and
//! a bitmap that uses the `-tau/2` code to a dense message carrying the exact values (the
//! native bitmap has no half code). [`export`] turns native sparse and bitmap messages into
//! DL4J's layouts; sparse → DL4J → native and bitmap → DL4J → native round trips are
//! byte-identical.

use crate::error::Error;
use crate::error::{CodecError, WireError};
use crate::wire::{self, Encoding, HEADER_LEN, Header, MAX_ELEMENTS, MessageView};

/// DL4J's mode word for sparse ("FLEXIBLE_ENCODING") messages.
pub const MODE_SPARSE: i32 = 0;
/// DL4J's mode word for bitmap messages.
pub const MODE_BITMAP: i32 = 1;
/// DL4J's header length in int32 words.
pub const HEADER_WORDS: usize = 4;

/// Number of int32 words of a DL4J bitmap message for N elements: `N / 16 + 5`.
pub fn bitmap_words(n: usize) -> usize {
    n / 16 + 5
}

/// Number of int32 words of a DL4J sparse message with K entries: `K + 4`.
pub fn sparse_words(k: usize) -> usize {
    k + HEADER_WORDS
}

/// Reads word `i` of a little-endian int32 buffer (caller checked the length).
fn word(bytes: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([
        bytes[4 * i],
        bytes[4 * i + 1],
        bytes[4 * i + 2],
        bytes[4 * i + 3],
    ])
}

fn malformed(reason: &'static str) -> WireError {
    WireError::Dl4jMalformed { reason }
}

/// A validated DL4J buffer (little-endian int32 words).
#[derive(Clone, Copy, Debug)]
pub struct Dl4jView<'a> {
    bytes: &'a [u8],
    mode: i32,
    n: u32,
    tau: f32,
    /// Sparse: K. Bitmap: the number of non-zero codes, half codes included.
    count: u32,
    /// Bitmap: whether any `-tau/2` code occurs.
    has_half: bool,
}

impl<'a> Dl4jView<'a> {
    /// Parses and validates a DL4J buffer: header words, length, entries in `1..=N` (non-zero),
    /// bitmap padding bits clear. Duplicate sparse entries are found by [`import`], which sorts.
    ///
    /// # Errors
    /// [`WireError::Dl4jMalformed`], [`WireError::Dl4jUnknownMode`], [`WireError::BadTau`],
    /// [`WireError::EmptyVector`], [`WireError::TooManyElements`], [`WireError::EntryZero`],
    /// [`WireError::EntryOutOfRange`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if !bytes.len().is_multiple_of(4) {
            return Err(malformed("length is not a whole number of int32 words"));
        }
        let words = bytes.len() / 4;
        if words < HEADER_WORDS {
            return Err(WireError::Truncated {
                needed: 4 * HEADER_WORDS,
                got: bytes.len(),
            });
        }
        let mode = word(bytes, 3);
        let n_word = word(bytes, 1);
        if n_word == 0 {
            return Err(WireError::EmptyVector);
        }
        if n_word < 0 {
            return Err(malformed("element count (word 1) is negative"));
        }
        let n = n_word as u32;
        if n > MAX_ELEMENTS {
            return Err(WireError::TooManyElements {
                n: n as u64,
                max: MAX_ELEMENTS,
            });
        }
        let tau_bits = word(bytes, 2) as u32;
        wire::check_tau_bits(tau_bits)?;
        let tau = f32::from_bits(tau_bits);
        match mode {
            MODE_SPARSE => {
                let k = word(bytes, 0);
                if k < 0 || k as usize != words - HEADER_WORDS {
                    return Err(malformed(
                        "sparse entry count (word 0) does not match the buffer length",
                    ));
                }
                if k as u32 > n {
                    return Err(WireError::CountOutOfRange { count: k as u32, n });
                }
                for position in 0..k as usize {
                    let entry = word(bytes, HEADER_WORDS + position);
                    if entry == 0 {
                        return Err(WireError::EntryZero { position });
                    }
                    if entry.unsigned_abs() > n {
                        return Err(WireError::EntryOutOfRange { position, entry, n });
                    }
                }
                Ok(Dl4jView {
                    bytes,
                    mode,
                    n,
                    tau,
                    count: k as u32,
                    has_half: false,
                })
            }
            MODE_BITMAP => {
                if word(bytes, 0) != n_word {
                    return Err(malformed("bitmap word 0 does not repeat N (word 1)"));
                }
                if words != bitmap_words(n as usize) {
                    return Err(malformed("bitmap length is not N/16 + 5 words"));
                }
                let mut count = 0u32;
                let mut has_half = false;
                for w in 0..words - HEADER_WORDS {
                    let bits = word(bytes, HEADER_WORDS + w) as u32;
                    let first = w * 16;
                    let valid = (n as usize).saturating_sub(first).min(16);
                    let lane_mask: u32 = if valid == 16 {
                        0xFFFF
                    } else {
                        (1u32 << valid) - 1
                    };
                    if bits & !(lane_mask | (lane_mask << 16)) != 0 {
                        return Err(WireError::BitmapPaddingSet);
                    }
                    let m = bits & 0xFFFF;
                    let s = bits >> 16;
                    count += (m | s).count_ones();
                    has_half |= (s & !m) != 0;
                }
                Ok(Dl4jView {
                    bytes,
                    mode,
                    n,
                    tau,
                    count,
                    has_half,
                })
            }
            found => Err(WireError::Dl4jUnknownMode { found }),
        }
    }

    /// DL4J's mode word: [`MODE_SPARSE`] or [`MODE_BITMAP`].
    pub fn mode(&self) -> i32 {
        self.mode
    }

    /// The element count N.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// The threshold.
    pub fn tau(&self) -> f32 {
        self.tau
    }

    /// Entries (sparse) or non-zero codes, half codes included (bitmap).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the bitmap uses DL4J's `-tau/2` code.
    pub fn has_half_codes(&self) -> bool {
        self.has_half
    }

    /// The exact native message length [`import`] writes for this buffer.
    pub fn native_len(&self) -> usize {
        let n = self.n as usize;
        match self.mode {
            MODE_SPARSE => wire::message_len(Encoding::Sparse, n, self.count as usize),
            _ if self.has_half => wire::message_len(Encoding::Dense, n, n),
            _ => wire::message_len(Encoding::Bitmap, n, 0),
        }
    }

    /// The contribution of element `i` of a bitmap buffer: 0, `tau`, `-tau` or `-tau/2`.
    fn bitmap_value(&self, i: usize) -> f32 {
        let bits = word(self.bytes, HEADER_WORDS + i / 16) as u32;
        let m = (bits >> (i % 16)) & 1;
        let s = (bits >> (i % 16 + 16)) & 1;
        match (m, s) {
            (1, 0) => self.tau,
            (1, 1) => -self.tau,
            (0, 1) => -self.tau / 2.0,
            _ => 0.0,
        }
    }
}

/// Converts a DL4J buffer into a native message in `out`, with the given sender and round, and
/// returns its length. Sparse entries are sorted ascending (DL4J's CPU order is arbitrary);
/// a bitmap with `-tau/2` codes becomes a dense message with the exact values.
///
/// # Errors
/// Everything [`Dl4jView::parse`] reports, [`WireError::EntriesNotAscending`] for a duplicate
/// index, and [`CodecError::BufferTooSmall`] when `out` is shorter than
/// [`Dl4jView::native_len`].
pub fn import(bytes: &[u8], sender: u32, round: u64, out: &mut [u8]) -> Result<usize, Error> {
    let view = Dl4jView::parse(bytes)?;
    let len = view.native_len();
    // Compared in u64: on a 32-bit target no usize exceeds the limit.
    if (len - HEADER_LEN) as u64 > wire::MAX_PAYLOAD_LEN as u64 {
        // A half-code bitmap of N >= 2^30 elements has no dense native form.
        return Err(WireError::TooManyElements {
            n: view.n as u64,
            max: (wire::MAX_PAYLOAD_LEN / 4) as u32,
        }
        .into());
    }
    if out.len() < len {
        return Err(CodecError::BufferTooSmall {
            needed: len,
            got: out.len(),
        }
        .into());
    }
    let n = view.n as usize;
    let (encoding, count) = match view.mode {
        MODE_SPARSE => {
            let k = view.count as usize;
            let payload = &mut out[HEADER_LEN..HEADER_LEN + 4 * k];
            payload.copy_from_slice(&bytes[4 * HEADER_WORDS..4 * (HEADER_WORDS + k)]);
            sort_entries(payload);
            let mut previous = 0i32;
            for position in 0..k {
                let entry = word(payload, position);
                if position > 0 && entry.unsigned_abs() <= previous.unsigned_abs() {
                    return Err(WireError::EntriesNotAscending {
                        position,
                        previous,
                        entry,
                    }
                    .into());
                }
                previous = entry;
            }
            (Encoding::Sparse, view.count)
        }
        _ if view.has_half => {
            let payload = &mut out[HEADER_LEN..len];
            for (i, chunk) in payload.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&view.bitmap_value(i).to_le_bytes());
            }
            (Encoding::Dense, view.n)
        }
        _ => {
            let payload = &mut out[HEADER_LEN..len];
            payload.fill(0);
            for i in 0..n {
                let bits = word(bytes, HEADER_WORDS + i / 16) as u32;
                let m = (bits >> (i % 16)) & 1;
                let s = (bits >> (i % 16 + 16)) & 1;
                let code: u8 = match (m, s) {
                    (1, 0) => 0b01,
                    (1, 1) => 0b10,
                    _ => 0,
                };
                payload[i / 4] |= code << (2 * (i % 4));
            }
            (Encoding::Bitmap, view.count)
        }
    };
    let header = Header {
        encoding,
        flags: 0,
        n: view.n,
        count,
        tau: view.tau,
        sender,
        round,
        segment: 0,
        offset: 0,
        payload_len: (len - HEADER_LEN) as u32,
        checksum: 0,
    };
    Ok(wire::seal(out, header))
}

/// In-place heapsort of little-endian i32 entries by `|e|` (no allocation).
fn sort_entries(payload: &mut [u8]) {
    let len = payload.len() / 4;
    let key = |p: &[u8], i: usize| word(p, i).unsigned_abs();
    let swap = |p: &mut [u8], a: usize, b: usize| {
        for j in 0..4 {
            p.swap(4 * a + j, 4 * b + j);
        }
    };
    let sift_down = |p: &mut [u8], mut root: usize, end: usize| {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                break;
            }
            if child + 1 < end && key(p, child + 1) > key(p, child) {
                child += 1;
            }
            if key(p, root) >= key(p, child) {
                break;
            }
            swap(p, root, child);
            root = child;
        }
    };
    // Already sorted (DL4J's CUDA encoder, or our own export): nothing to do.
    if (1..len).all(|i| key(payload, i - 1) <= key(payload, i)) {
        return;
    }
    for start in (0..len / 2).rev() {
        sift_down(payload, start, len);
    }
    for end in (1..len).rev() {
        swap(payload, 0, end);
        sift_down(payload, 0, end);
    }
}

/// The DL4J length in bytes [`export`] writes for a native message.
///
/// # Errors
/// [`WireError::Dl4jUnsupportedEncoding`] for dense and segment messages.
pub fn export_len(msg: &MessageView<'_>) -> Result<usize, WireError> {
    if msg.header().is_segment() {
        return Err(WireError::Dl4jUnsupportedEncoding {
            encoding: msg.encoding() as u8,
        });
    }
    match msg.encoding() {
        Encoding::Sparse => Ok(4 * sparse_words(msg.count() as usize)),
        Encoding::Bitmap => Ok(4 * bitmap_words(msg.n() as usize)),
        Encoding::Dense => Err(WireError::Dl4jUnsupportedEncoding {
            encoding: Encoding::Dense as u8,
        }),
    }
}

/// Writes a native sparse or bitmap message as a DL4J buffer (little-endian int32 words) and
/// returns its length in bytes. Sender, round and checksum have no place in DL4J's layout and
/// are dropped.
///
/// # Errors
/// [`WireError::Dl4jUnsupportedEncoding`] for dense or segment messages,
/// [`CodecError::BufferTooSmall`] when `out` is shorter than [`export_len`].
pub fn export(msg: &MessageView<'_>, out: &mut [u8]) -> Result<usize, Error> {
    let len = export_len(msg)?;
    if out.len() < len {
        return Err(CodecError::BufferTooSmall {
            needed: len,
            got: out.len(),
        }
        .into());
    }
    let out = &mut out[..len];
    let n = msg.n() as i32;
    let put = |out: &mut [u8], i: usize, v: i32| {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    };
    put(out, 1, n);
    put(out, 2, msg.tau().to_bits() as i32);
    match msg.encoding() {
        Encoding::Sparse => {
            put(out, 0, msg.count() as i32);
            put(out, 3, MODE_SPARSE);
            for (k, e) in msg.sparse_entries().enumerate() {
                put(out, HEADER_WORDS + k, e);
            }
        }
        _ => {
            put(out, 0, n);
            put(out, 3, MODE_BITMAP);
            out[4 * HEADER_WORDS..].fill(0);
            for i in 0..msg.n() as usize {
                let bits: u32 = match msg.bitmap_code(i) {
                    0b01 => 1 << (i % 16),
                    0b10 => (1 << (i % 16)) | (1 << (i % 16 + 16)),
                    _ => 0,
                };
                if bits != 0 {
                    let w = HEADER_WORDS + i / 16;
                    let old = word(out, w) as u32;
                    put(out, w, (old | bits) as i32);
                }
            }
        }
    }
    Ok(len)
}

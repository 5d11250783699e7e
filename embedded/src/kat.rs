//! The known-answer vectors of `core/vectors/kat.txt`, embedded at build time, and
//! their check: encode each vector's residual and decode its message with the core's codec,
//! and compare with the answers of the format's independent Python implementation.
//!
//! The build script stores them in a compact binary layout (little-endian; the firmware has
//! no text parser to spare):
//!
//! ```text
//! u32 count, then per vector:
//!   u8 name length, name (UTF-8)          u32 n (element count)
//!   u32 tau bits   u32 sender   u64 round
//!   u8 has cap, u32 cap                   u8 mode (0 auto, 1 sparse, 2 bitmap, 3 dense)
//!   u8 has segment, u16 id, u32 offset, u32 length
//!   u32 message length, message bytes
//!   n f32 residual, n f32 residual after encoding, n f32 decoded (into zeros)
//! ```

use core::fmt;

use gradcast_core::codec::{self, EncodeParams, EncodingMode, SegmentRef};
use gradcast_core::wire::MessageView;

/// The vectors, as the build script wrote them.
pub static BLOB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kat.bin"));

/// One known-answer vector.
#[derive(Clone, Copy, Debug)]
pub struct KatVector<'a> {
    /// The vector's name in `kat.txt`.
    pub name: &'a str,
    /// The encode parameters.
    pub params: EncodeParams,
    /// The expected message.
    pub message: &'a [u8],
    n: usize,
    residual: &'a [u8],
    residual_after: &'a [u8],
    decoded: &'a [u8],
}

/// Little-endian `f32`s of a byte slice (a multiple of 4 long).
fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

impl KatVector<'_> {
    /// The element count.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The residual before encoding.
    pub fn residual(&self) -> impl Iterator<Item = f32> + '_ {
        f32s(self.residual)
    }

    /// The expected residual after encoding.
    pub fn residual_after(&self) -> impl Iterator<Item = f32> + '_ {
        f32s(self.residual_after)
    }

    /// The expected result of decoding the message into a zeroed vector.
    pub fn decoded(&self) -> impl Iterator<Item = f32> + '_ {
        f32s(self.decoded)
    }
}

/// A byte cursor over the blob: every read is bounds-checked and `None` past the end.
#[derive(Clone)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.rest.len() < len {
            return None;
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some(head)
    }

    fn array<const K: usize>(&mut self) -> Option<[u8; K]> {
        self.take(K)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
}

/// The vectors of a blob in the layout above (the firmware's [`BLOB`] by default).
#[derive(Clone, Debug)]
pub struct Vectors<'a> {
    reader: Reader<'a>,
    left: u32,
    index: usize,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader({} bytes left)", self.rest.len())
    }
}

impl<'a> Vectors<'a> {
    /// The vectors of `blob`; `None` when it is too short to hold the count.
    pub fn new(blob: &'a [u8]) -> Option<Self> {
        let mut reader = Reader { rest: blob };
        let left = reader.u32()?;
        Some(Vectors {
            reader,
            left,
            index: 0,
        })
    }

    /// The number of vectors not yet read.
    pub fn remaining(&self) -> usize {
        self.left as usize
    }

    fn read(&mut self) -> Option<KatVector<'a>> {
        let r = &mut self.reader;
        let name_len = r.u8()? as usize;
        let name = core::str::from_utf8(r.take(name_len)?).ok()?;
        let n = r.u32()? as usize;
        let tau = f32::from_bits(r.u32()?);
        let sender = r.u32()?;
        let round = r.u64()?;
        let has_cap = r.u8()? != 0;
        let cap = r.u32()?;
        let mode = match r.u8()? {
            0 => EncodingMode::Auto,
            1 => EncodingMode::Sparse,
            2 => EncodingMode::Bitmap,
            3 => EncodingMode::Dense,
            _ => return None,
        };
        let has_segment = r.u8()? != 0;
        let id = r.u16()?;
        let offset = r.u32()? as usize;
        let len = r.u32()? as usize;
        let message_len = r.u32()? as usize;
        let message = r.take(message_len)?;
        let bytes = n.checked_mul(4)?;
        Some(KatVector {
            name,
            params: EncodeParams {
                tau,
                sender,
                round,
                cap: has_cap.then_some(cap),
                mode,
                segment: has_segment.then_some(SegmentRef { id, offset, len }),
            },
            message,
            n,
            residual: r.take(bytes)?,
            residual_after: r.take(bytes)?,
            decoded: r.take(bytes)?,
        })
    }
}

impl<'a> Iterator for Vectors<'a> {
    /// A vector, or `Err(index)` for a vector the blob cuts short or garbles (the iteration
    /// ends there).
    type Item = Result<KatVector<'a>, usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.index += 1;
        match self.read() {
            Some(v) => Some(Ok(v)),
            None => {
                self.left = 0;
                Some(Err(self.index - 1))
            }
        }
    }
}

/// Why a known-answer check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KatFailure<'a> {
    /// The blob is cut short or garbled at vector `index` (a build problem).
    Malformed {
        /// The vector's position in the blob.
        index: usize,
    },
    /// A vector is larger than the scratch space it was given.
    TooLarge {
        /// The vector's name.
        name: &'a str,
        /// Its element count.
        n: usize,
    },
    /// The codec disagrees with the known answer.
    Mismatch {
        /// The vector's name.
        name: &'a str,
        /// What differs: `"encode failed"`, `"message"`, `"residual after encoding"`,
        /// `"message does not parse"`, `"decode failed"` or `"decoded vector"`.
        what: &'static str,
    },
}

impl fmt::Display for KatFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KatFailure::Malformed { index } => {
                write!(f, "known-answer blob garbled at vector {index}")
            }
            KatFailure::TooLarge { name, n } => {
                write!(
                    f,
                    "known-answer vector {name}: {n} elements exceed the scratch space"
                )
            }
            KatFailure::Mismatch { name, what } => {
                write!(
                    f,
                    "known-answer vector {name}: {what} differs from the known answer"
                )
            }
        }
    }
}

/// Checks every vector of `vectors` with the core's codec: encodes its residual (into
/// `residual`, the message into `out`) and compares message and residual bit for bit, then
/// decodes the expected message into zeros (in `target`) and compares the result. Returns the
/// number of vectors checked.
///
/// # Errors
/// The first failure.
pub fn check<'a>(
    vectors: Vectors<'a>,
    residual: &mut [f32],
    target: &mut [f32],
    out: &mut [u8],
) -> Result<usize, KatFailure<'a>> {
    let mut checked = 0;
    for v in vectors {
        let v = v.map_err(|index| KatFailure::Malformed { index })?;
        let n = v.n();
        let fits = n <= residual.len() && n <= target.len() && v.message.len() <= out.len();
        if !fits {
            return Err(KatFailure::TooLarge { name: v.name, n });
        }
        let mismatch = |what| KatFailure::Mismatch { name: v.name, what };
        let residual = &mut residual[..n];
        for (r, x) in residual.iter_mut().zip(v.residual()) {
            *r = x;
        }
        let summary =
            codec::encode(residual, &v.params, out).map_err(|_| mismatch("encode failed"))?;
        if out[..summary.bytes] != *v.message {
            return Err(mismatch("message"));
        }
        if !same_bits(residual.iter().copied(), v.residual_after()) {
            return Err(mismatch("residual after encoding"));
        }
        let target = &mut target[..n];
        target.fill(0.0);
        let msg = MessageView::parse(v.message).map_err(|_| mismatch("message does not parse"))?;
        codec::decode_add(&msg, target).map_err(|_| mismatch("decode failed"))?;
        if !same_bits(target.iter().copied(), v.decoded()) {
            return Err(mismatch("decoded vector"));
        }
        checked += 1;
    }
    Ok(checked)
}

/// Whether two sequences of floats have the same bit patterns (and lengths).
fn same_bits(a: impl Iterator<Item = f32>, b: impl Iterator<Item = f32>) -> bool {
    a.map(f32::to_bits).eq(b.map(f32::to_bits))
}

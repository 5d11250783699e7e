//! MNIST-format IDX files of unsigned bytes, plain or gzip-compressed (as MNIST and
//! Fashion-MNIST are distributed): parsing and writing, with nothing but `std` and `flate2`.
//!
//! This file is also compiled on its own, by path, into the `cli_idx` fuzz target
//! (`fuzz/fuzz_targets/cli_idx.rs`), so that fuzzing it under a sanitizer does not build the
//! rest of the CLI (candle, plotters): it must not use anything outside `std` and `flate2`
//! (a dependency of the fuzz crate too), nor `crate::`.
//! [`crate::data`] maps [`IdxError`] to its `DataError` with the file's path.

use std::fmt;
use std::io::Read;

/// The most bytes [`parse_idx_file`] unpacks from a gzip file when the data loader reads one:
/// 1 GiB, about twenty times the largest file of MNIST or Fashion-MNIST (47 MB of training
/// images), so that a small crafted file cannot exhaust memory.
pub const MAX_UNPACKED: usize = 1 << 30;

/// An IDX file's dimensions and its unsigned-byte data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Why bytes are not an IDX file of the expected shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdxError {
    /// The bytes are gzip-compressed (IDX files are distributed as `.gz`).
    Compressed,
    /// Not a valid IDX file: what is wrong.
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// gzip data that cannot be unpacked: truncated, corrupt (bad deflate stream, CRC or
    /// length), or unpacking to more than the limit.
    Gzip {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::Compressed => write!(f, "file is gzip-compressed; unpack it first (gunzip)"),
            IdxError::Invalid { reason } => write!(f, "not a valid IDX file: {reason}"),
            IdxError::Gzip { reason } => write!(f, "cannot unpack the gzip data: {reason}"),
        }
    }
}

impl std::error::Error for IdxError {}

/// Parses an IDX file of unsigned bytes (type code `0x08`) with `expect_dims` dimensions.
///
/// Never panics; what it accepts holds exactly the product of its dimensions in data bytes,
/// and [`idx_bytes`] writes it back byte for byte.
///
/// # Errors
/// [`IdxError::Compressed`] for gzip data; [`IdxError::Invalid`] naming the problem: short
/// file, bad magic, another element type, a different number of dimensions, or a length that
/// does not match the dimensions.
pub fn parse_idx(bytes: &[u8], expect_dims: usize) -> Result<Idx, IdxError> {
    let bad = |reason: String| IdxError::Invalid { reason };
    if is_gzip(bytes) {
        return Err(IdxError::Compressed);
    }
    if bytes.len() < 4 {
        return Err(bad(format!(
            "{} bytes, shorter than the 4-byte magic number",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic number starts with {:#04x} {:#04x}, expected 0x00 0x00",
            bytes[0], bytes[1]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type {:#04x}, only unsigned bytes (0x08) are supported",
            bytes[2]
        )));
    }
    let ndims = bytes[3] as usize;
    if ndims != expect_dims {
        return Err(bad(format!("{ndims} dimensions, expected {expect_dims}")));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(format!(
            "{} bytes, shorter than its {header}-byte header",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have != count {
        return Err(bad(format!(
            "dimensions {dims:?} need {count} data bytes, the file has {have}"
        )));
    }
    if count == 0 {
        return Err(bad(format!("dimensions {dims:?} hold no data")));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Whether `bytes` start with the gzip magic number (`1f 8b`).
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Unpacks gzip data (every member, as `gunzip` does), checking each member's CRC-32 and
/// length, into at most `limit` bytes.
///
/// # Errors
/// [`IdxError::Gzip`]: not gzip data, a truncated or corrupt stream, a checksum or length
/// mismatch, or more than `limit` unpacked bytes.
pub fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, IdxError> {
    let gz = |reason: String| IdxError::Gzip { reason };
    if !is_gzip(bytes) {
        return Err(gz("no gzip magic number (1f 8b)".into()));
    }
    let mut out = Vec::new();
    // One byte more than the limit tells "exactly the limit" from "too much".
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(bytes)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => gz("the data end early (truncated file)".into()),
            _ => gz(e.to_string()),
        })?;
    if out.len() > limit {
        return Err(gz(format!("it unpacks to more than {limit} bytes")));
    }
    Ok(out)
}

/// Parses an IDX file as stored: gzip-compressed (unpacked first, into at most `max_unpacked`
/// bytes; [`MAX_UNPACKED`] for data sets) or plain. Plain bytes parse exactly as with
/// [`parse_idx`].
///
/// # Errors
/// [`IdxError::Gzip`] for gzip data that cannot be unpacked; then as [`parse_idx`] (an
/// unpacked file that is gzip again gives [`IdxError::Compressed`]).
pub fn parse_idx_file(
    bytes: &[u8],
    expect_dims: usize,
    max_unpacked: usize,
) -> Result<Idx, IdxError> {
    if is_gzip(bytes) {
        parse_idx(&gunzip(bytes, max_unpacked)?, expect_dims)
    } else {
        parse_idx(bytes, expect_dims)
    }
}

/// Writes an IDX file of unsigned bytes (for tests and for making small IDX sets).
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_errors_say_what_is_wrong() {
        let good = idx_bytes(&[2, 2, 2], &[0; 8]);
        assert_eq!(parse_idx(&good, 3).unwrap().dims, vec![2, 2, 2]);
        let msg = |b: &[u8], d| parse_idx(b, d).unwrap_err().to_string();
        assert!(msg(&good[..2], 3).contains("shorter than the 4-byte magic"));
        assert!(msg(&good[..good.len() - 1], 3).contains("need 8 data bytes, the file has 7"));
        assert!(msg(&good, 1).contains("3 dimensions, expected 1"));
        let mut t = good.clone();
        t[2] = 0x0d;
        assert!(msg(&t, 3).contains("element type 0x0d"));
        t[0] = 7;
        assert!(msg(&t, 3).contains("magic number"));
        assert_eq!(parse_idx(&[0x1f, 0x8b, 8, 0], 3), Err(IdxError::Compressed));
        assert!(msg(&idx_bytes(&[0, 5], &[]), 2).contains("hold no data"));
        let huge = idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(msg(&huge, 3).contains("overflow") || msg(&huge, 3).contains("need"));
    }

    #[test]
    fn accepted_files_round_trip() {
        let b = idx_bytes(&[3, 1, 2], &[1, 2, 3, 4, 5, 6]);
        let i = parse_idx(&b, 3).unwrap();
        assert_eq!(i.data, vec![1, 2, 3, 4, 5, 6]);
        let dims: Vec<u32> = i.dims.iter().map(|&d| d as u32).collect();
        assert_eq!(idx_bytes(&dims, &i.data), b);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzipped_files_round_trip() {
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 37 % 256) as u8).collect();
        let plain = idx_bytes(&[2, 3, 4], &pixels);
        let packed = gzip(&plain);
        assert!(is_gzip(&packed) && !is_gzip(&plain));
        assert_eq!(gunzip(&packed, plain.len()).unwrap(), plain);
        let i = parse_idx_file(&packed, 3, MAX_UNPACKED).unwrap();
        assert_eq!(i, parse_idx(&plain, 3).unwrap());
        assert_eq!(idx_bytes(&[2, 3, 4], &i.data), plain);
        // Plain bytes go through unchanged; gunzip's members are concatenated, as gunzip's.
        assert_eq!(parse_idx_file(&plain, 3, 0).unwrap(), i);
        let two = [gzip(&plain[..10]), gzip(&plain[10..])].concat();
        assert_eq!(parse_idx_file(&two, 3, MAX_UNPACKED).unwrap(), i);
        // The gzip layer does not hide the IDX layer's errors.
        assert!(
            parse_idx_file(&packed, 1, MAX_UNPACKED)
                .unwrap_err()
                .to_string()
                .contains("3 dimensions, expected 1")
        );
    }

    #[test]
    fn bad_gzip_is_a_typed_error() {
        let plain = idx_bytes(&[50, 7, 7], &[9; 50 * 49]);
        let packed = gzip(&plain);
        let err = |b: &[u8], limit| match parse_idx_file(b, 3, limit) {
            Err(IdxError::Gzip { reason }) => reason,
            other => panic!("expected a gzip error, got {other:?}"),
        };
        // Truncated anywhere: in the header, in the deflate stream, in the trailer.
        for cut in [
            2,
            5,
            12,
            packed.len() / 2,
            packed.len() - 8,
            packed.len() - 1,
        ] {
            let r = err(&packed[..cut], MAX_UNPACKED);
            assert!(!r.is_empty(), "cut at {cut}");
        }
        assert!(err(&packed[..packed.len() / 2], MAX_UNPACKED).contains("truncated"));
        // A flipped byte in the CRC-32 of the trailer, then in the deflate stream.
        let mut crc = packed.clone();
        let at = crc.len() - 8;
        crc[at] ^= 0x55;
        err(&crc, MAX_UNPACKED);
        let mut body = packed.clone();
        body[12] ^= 0xff;
        err(&body, MAX_UNPACKED);
        // A wrong length in the trailer (ISIZE).
        let mut len = packed.clone();
        let at = len.len() - 4;
        len[at] ^= 1;
        err(&len, MAX_UNPACKED);
        // The limit: exactly the size passes, one byte less fails with the limit named.
        assert!(parse_idx_file(&packed, 3, plain.len()).is_ok());
        assert!(err(&packed, plain.len() - 1).contains(&format!("{}", plain.len() - 1)));
        assert!(matches!(
            gunzip(&plain, 1 << 20),
            Err(IdxError::Gzip { .. })
        ));
    }
}

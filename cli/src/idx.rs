//! MNIST-format IDX files of unsigned bytes: parsing and writing, with nothing but `std`.
//!
//! This file is also compiled on its own, by path, into the `cli_idx` fuzz target
//! (`fuzz/fuzz_targets/cli_idx.rs`), so that fuzzing it under a sanitizer does not build the
//! rest of the CLI (candle, plotters): it must not use anything outside `std`, nor `crate::`.
//! [`crate::data`] maps [`IdxError`] to its `DataError` with the file's path.

use std::fmt;

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
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::Compressed => write!(f, "file is gzip-compressed; unpack it first (gunzip)"),
            IdxError::Invalid { reason } => write!(f, "not a valid IDX file: {reason}"),
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
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
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
}

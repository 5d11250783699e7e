//! The known-answer vectors of `docs/FORMAT.md`, and a parser for them.
//!
//! The vectors live in `core/vectors/kat.txt` (inside this crate, so that the published crate
//! carries them). They are produced by
//! `scripts/kat.py`, an independent Python implementation of the format written from the
//! specification alone, so they check the Rust codec against something other than itself.
//! The core's tests and the conformance suite (for every backend) check them byte for byte.

use crate::codec::{EncodeParams, EncodingMode, SegmentRef};
use alloc::string::String;
use alloc::vec::Vec;

/// The text of `core/vectors/kat.txt`.
pub const VECTORS: &str = include_str!("../vectors/kat.txt");

/// One known-answer vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Kat {
    /// The vector's name.
    pub name: String,
    /// The encode parameters.
    pub params: EncodeParams,
    /// The residual before encoding.
    pub residual: Vec<f32>,
    /// The expected message bytes.
    pub message: Vec<u8>,
    /// The expected residual after encoding (compare bit patterns).
    pub residual_after: Vec<f32>,
    /// The expected result of decoding the message into a zeroed vector of the residual's
    /// length.
    pub decoded: Vec<f32>,
}

/// Why a vector file could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

fn words_f32(v: &str) -> Option<Vec<f32>> {
    v.split_whitespace()
        .map(|w| u32::from_str_radix(w, 16).ok().map(f32::from_bits))
        .collect()
}

fn hex_bytes(v: &str) -> Option<Vec<u8>> {
    let v = v.trim();
    if !v.len().is_multiple_of(2) {
        return None;
    }
    (0..v.len() / 2)
        .map(|i| u8::from_str_radix(v.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Parses the vector file format (blocks of `key = value` lines separated by blank lines;
/// `#` starts a comment line).
///
/// # Errors
/// A [`ParseError`] naming the line and what is wrong.
pub fn parse(text: &str) -> Result<Vec<Kat>, ParseError> {
    let mut out = Vec::new();
    let mut cur: Option<Kat> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |reason| ParseError { line, reason };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (k, v) = l.split_once('=').ok_or(err("expected key = value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k == "name" {
            if let Some(done) = cur.take() {
                out.push(done);
            }
            cur = Some(Kat {
                name: String::from(v),
                params: EncodeParams::new(1.0),
                residual: Vec::new(),
                message: Vec::new(),
                residual_after: Vec::new(),
                decoded: Vec::new(),
            });
            continue;
        }
        let kat = cur.as_mut().ok_or(err("a key before the first name"))?;
        let p = &mut kat.params;
        match k {
            "tau" => {
                p.tau = f32::from_bits(u32::from_str_radix(v, 16).map_err(|_| err("bad tau"))?)
            }
            "sender" => p.sender = v.parse().map_err(|_| err("bad sender"))?,
            "round" => p.round = v.parse().map_err(|_| err("bad round"))?,
            "cap" => {
                p.cap = if v == "none" {
                    None
                } else {
                    Some(v.parse().map_err(|_| err("bad cap"))?)
                }
            }
            "mode" => {
                p.mode = match v {
                    "auto" => EncodingMode::Auto,
                    "sparse" => EncodingMode::Sparse,
                    "bitmap" => EncodingMode::Bitmap,
                    "dense" => EncodingMode::Dense,
                    _ => return Err(err("bad mode")),
                }
            }
            "segment" => {
                p.segment = if v == "none" {
                    None
                } else {
                    let mut it = v.split_whitespace().map(str::parse::<usize>);
                    let mut next = || it.next().and_then(Result::ok).ok_or(err("bad segment"));
                    let id = next()?;
                    let offset = next()?;
                    let len = next()?;
                    Some(SegmentRef {
                        id: u16::try_from(id).map_err(|_| err("bad segment id"))?,
                        offset,
                        len,
                    })
                }
            }
            "residual" => kat.residual = words_f32(v).ok_or(err("bad residual"))?,
            "message" => kat.message = hex_bytes(v).ok_or(err("bad message hex"))?,
            "residual_after" => {
                kat.residual_after = words_f32(v).ok_or(err("bad residual_after"))?
            }
            "decoded" => kat.decoded = words_f32(v).ok_or(err("bad decoded"))?,
            _ => return Err(err("unknown key")),
        }
    }
    if let Some(done) = cur.take() {
        out.push(done);
    }
    Ok(out)
}

/// The parsed [`VECTORS`].
///
/// # Panics
/// Never for the committed file (a test parses it); a corrupted checkout panics with the
/// line number.
pub fn vectors() -> Vec<Kat> {
    match parse(VECTORS) {
        Ok(v) => v,
        Err(e) => panic!("core/vectors/kat.txt: {e}"),
    }
}

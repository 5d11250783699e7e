//! `gradcast encode | decode | inspect`: raw little-endian f32 files to messages and back, in
//! gradcast's wire format (a file may hold a packet: messages laid end to end) or DL4J's int32
//! layouts (`--format dl4j`).

use crate::error::{CliError, read_file, write_file};
use clap::{Args, ValueEnum};
use gradcast_core::codec::{self, EncodeParams, EncodingMode};
use gradcast_core::packet::Messages;
use gradcast_core::wire::{self, Encoding, MessageView};
use gradcast_core::{Error, dl4j};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Message file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// gradcast wire format v1 (docs/FORMAT.md); a file may hold several messages.
    #[default]
    Native,
    /// Deeplearning4j's threshold-encoded int32 layout (one message per file).
    Dl4j,
}

/// The encoding `encode` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum EncodingArg {
    /// The smaller of sparse and bitmap.
    #[default]
    Auto,
    /// Sparse indices.
    Sparse,
    /// 2-bit bitmap.
    Bitmap,
    /// Every value as f32 (native format only).
    Dense,
}

/// Options of `gradcast encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Raw little-endian f32 input: the residual to encode (4 bytes per element).
    pub input: PathBuf,
    /// The message file to write.
    pub output: PathBuf,
    /// Threshold: every element with |x| >= TAU is sent as +TAU or -TAU and debited by it.
    /// Must be finite and greater than 0.
    #[arg(long)]
    pub tau: f32,
    /// Message format.
    #[arg(long, value_enum, default_value_t = Format::Native)]
    pub format: Format,
    /// Encoding. `auto` writes the smaller of sparse and bitmap.
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    pub encoding: EncodingArg,
    /// Send at most this many entries; the others stay in the residual (the message's
    /// TRUNCATED flag says so). Which ones are sent rotates with --round.
    #[arg(long)]
    pub cap: Option<u32>,
    /// Sender id written in the header (native format only).
    #[arg(long, default_value_t = 0)]
    pub sender: u32,
    /// Round number written in the header (native format only); it also decides where a
    /// --cap starts selecting.
    #[arg(long, default_value_t = 0)]
    pub round: u64,
    /// Also write what stays in the residual after encoding (raw little-endian f32) to this
    /// file.
    #[arg(long)]
    pub residual: Option<PathBuf>,
}

/// Options of `gradcast decode`.
#[derive(Debug, Args)]
#[command(
    after_help = "The output holds 4 bytes per element of the vector the messages \
describe, whatever the message's own size: a valid 48-byte message may describe up to \
2^31 - 1 elements (8 GiB). decode refuses, before allocating anything, a vector longer than \
--max-elements (default 2^24 = 16,777,216 elements, a 64 MiB file); raise it to decode \
larger vectors."
)]
pub struct DecodeArgs {
    /// The message file: one message, or a packet of several laid end to end (native
    /// format), added into one vector. It must hold at least one message: the vector's length
    /// comes from the messages.
    pub input: PathBuf,
    /// The raw little-endian f32 file to write (4 bytes per element).
    pub output: PathBuf,
    /// Message format.
    #[arg(long, value_enum, default_value_t = Format::Native)]
    pub format: Format,
    /// Refuse messages that describe a vector longer than this many elements (the output
    /// takes 4 bytes per element).
    #[arg(long, default_value_t = DEFAULT_MAX_ELEMENTS)]
    pub max_elements: u64,
}

/// The default of `decode --max-elements`: 2^24 f32 values, a 64 MiB output file. A header
/// may claim up to 2^31 - 1 elements whatever the message's size, so the default is what a
/// user decodes without thinking about it; larger vectors take an explicit limit.
pub const DEFAULT_MAX_ELEMENTS: u64 = 1 << 24;

/// Options of `gradcast inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The message file: one message, or a packet of several (native format).
    pub input: PathBuf,
    /// Message format.
    #[arg(long, value_enum, default_value_t = Format::Native)]
    pub format: Format,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads a raw little-endian f32 file.
///
/// # Errors
/// [`CliError::BadFile`] for an empty file or a length that is not a multiple of 4.
pub fn read_f32(path: &Path) -> Result<Vec<f32>, CliError> {
    let bytes = read_file(path)?;
    if bytes.is_empty() {
        return Err(CliError::bad_file(
            path,
            "empty file: expected raw little-endian f32 values",
        ));
    }
    if bytes.len() % 4 != 0 {
        return Err(CliError::bad_file(
            path,
            format!(
                "length {} is not a multiple of 4: expected raw little-endian f32 values",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn in_file(path: &Path, e: impl Into<Error>) -> CliError {
    let e: Error = e.into();
    CliError::bad_file(path, e.to_string())
}

/// Runs `gradcast encode`.
///
/// # Errors
/// Bad input files, bad thresholds, and encodings the format cannot hold.
pub fn encode(a: &EncodeArgs) -> Result<(), CliError> {
    codec::check_tau(a.tau).map_err(|e| CliError::Usage(format!("--tau {}: {e}", a.tau)))?;
    if a.format == Format::Dl4j && a.encoding == EncodingArg::Dense {
        return Err(CliError::Usage(
            "--encoding dense cannot be written in --format dl4j (DL4J has no dense layout)".into(),
        ));
    }
    let mut residual = read_f32(&a.input)?;
    let n = residual.len();
    let params = EncodeParams {
        sender: a.sender,
        round: a.round,
        cap: a.cap,
        mode: match a.encoding {
            EncodingArg::Auto => EncodingMode::Auto,
            EncodingArg::Sparse => EncodingMode::Sparse,
            EncodingArg::Bitmap => EncodingMode::Bitmap,
            EncodingArg::Dense => EncodingMode::Dense,
        },
        ..EncodeParams::new(a.tau)
    };
    let max = wire::dense_message_len(n).max(wire::message_len(Encoding::Sparse, n, n));
    let mut out = vec![0u8; max];
    let s = codec::encode(&mut residual, &params, &mut out).map_err(|e| in_file(&a.input, e))?;
    out.truncate(s.bytes);
    let bytes = match a.format {
        Format::Native => out,
        Format::Dl4j => {
            let msg = MessageView::parse(&out).map_err(|e| CliError::core("encoded message", e))?;
            let mut d =
                vec![0u8; dl4j::export_len(&msg).map_err(|e| CliError::core("DL4J export", e))?];
            let len = dl4j::export(&msg, &mut d).map_err(|e| CliError::core("DL4J export", e))?;
            d.truncate(len);
            d
        }
    };
    write_file(&a.output, &bytes)?;
    if let Some(r) = &a.residual {
        write_file(r, &f32_bytes(&residual))?;
    }
    println!(
        "{}: {} message, {} of {} elements at tau {} ({} candidates{}), {} bytes ({})",
        a.output.display(),
        s.encoding.name(),
        s.entries,
        n,
        a.tau,
        s.candidates,
        if s.truncated {
            ", truncated by the cap"
        } else {
            ""
        },
        bytes.len(),
        versus_f32(bytes.len(), n),
    );
    Ok(())
}

/// How a message of `bytes` compares with the `4 n` bytes of the raw f32 vector: "12.3x
/// smaller than 400 bytes of f32", "1.2x larger than ...", or "as large as ...".
pub fn versus_f32(bytes: usize, n: usize) -> String {
    let raw = 4 * n;
    if bytes < raw {
        format!(
            "{:.1}x smaller than {raw} bytes of f32",
            raw as f64 / bytes as f64
        )
    } else if bytes > raw {
        format!(
            "{:.2}x larger than {raw} bytes of f32",
            bytes as f64 / raw as f64
        )
    } else {
        format!("as large as {raw} bytes of f32")
    }
}

/// The native messages held in a file: the file's own bytes, or DL4J's converted.
fn native_bytes(path: &Path, format: Format) -> Result<Vec<u8>, CliError> {
    let raw = read_file(path)?;
    if raw.is_empty() {
        return Err(CliError::bad_file(
            path,
            "empty file: expected at least one message (the vector's length comes from the \
             messages)",
        ));
    }
    match format {
        Format::Native => Ok(raw),
        Format::Dl4j => {
            let view = dl4j::Dl4jView::parse(&raw).map_err(|e| in_file(path, e))?;
            let mut out = vec![0u8; view.native_len()];
            let len = dl4j::import(&raw, 0, 0, &mut out).map_err(|e| in_file(path, e))?;
            out.truncate(len);
            Ok(out)
        }
    }
}

/// Parses every message of a packet, with the message's position in errors.
fn parse_all<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<MessageView<'a>>, CliError> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    for m in Messages::new(bytes) {
        match m {
            Ok(v) => {
                offset += v.as_bytes().len();
                out.push(v);
            }
            Err(e) => {
                return Err(CliError::bad_file(
                    path,
                    format!("message {} (at byte {offset}): {e}", out.len() + 1),
                ));
            }
        }
    }
    Ok(out)
}

/// The length of the vector a packet's messages cover.
fn vector_len(msgs: &[MessageView<'_>]) -> u64 {
    msgs.iter()
        .map(|m| u64::from(m.header().offset) + u64::from(m.n()))
        .max()
        .unwrap_or(0)
}

/// Runs `gradcast decode`.
///
/// # Errors
/// Bad or inconsistent message files.
pub fn decode(a: &DecodeArgs) -> Result<(), CliError> {
    let bytes = native_bytes(&a.input, a.format)?;
    let msgs = parse_all(&a.input, &bytes)?;
    let n = vector_len(&msgs);
    // The header's N is untrusted: check it before allocating 4 N bytes.
    let n = match usize::try_from(n) {
        Ok(n) if n as u64 <= a.max_elements => n,
        _ => {
            return Err(CliError::bad_file(
                &a.input,
                format!(
                    "the message(s) describe a vector of {n} f32 values ({} bytes to write), \
                     more than --max-elements {}; raise --max-elements to decode it",
                    n.saturating_mul(4),
                    a.max_elements
                ),
            ));
        }
    };
    let mut v = vec![0.0f32; n];
    for (i, m) in msgs.iter().enumerate() {
        codec::decode_add(m, &mut v)
            .map_err(|e| CliError::bad_file(&a.input, format!("message {}: {e}", i + 1)))?;
    }
    write_file(&a.output, &f32_bytes(&v))?;
    println!(
        "{}: {n} f32 values from {} message(s)",
        a.output.display(),
        msgs.len()
    );
    Ok(())
}

/// What `inspect` reports about one message.
#[derive(Debug, Serialize)]
pub struct MessageReport {
    /// Wire format version.
    pub version: u8,
    /// Encoding name.
    pub encoding: &'static str,
    /// Element count N.
    pub n: u32,
    /// Entries K (N for dense).
    pub count: u32,
    /// Threshold.
    pub tau: f32,
    /// Sender id.
    pub sender: u32,
    /// Round.
    pub round: u64,
    /// Whether a cap truncated the message.
    pub truncated: bool,
    /// Segment id and offset, when the message covers a segment.
    pub segment: Option<(u16, u32)>,
    /// Message length in bytes.
    pub bytes: usize,
    /// Payload length in bytes.
    pub payload_bytes: u32,
    /// The stored CRC-32C (verified).
    pub checksum: String,
    /// K / N.
    pub density: f64,
    /// Elements decoded as positive.
    pub positive: u64,
    /// Elements decoded as negative.
    pub negative: u64,
    /// Sum of the decoded values.
    pub sum: f64,
    /// Largest absolute decoded value.
    pub max_abs: f32,
    /// `4 N / bytes`: how much smaller than raw f32.
    pub compression_ratio: f64,
}

/// Statistics of the values a message decodes to, straight from its validated entries (no
/// vector of N is allocated: N may be up to 2^31 - 1 whatever the message's size).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct DecodedStats {
    positive: u64,
    negative: u64,
    sum: f64,
    max_abs: f32,
}

impl DecodedStats {
    fn add(&mut self, x: f32) {
        if x > 0.0 {
            self.positive += 1;
        } else if x < 0.0 {
            self.negative += 1;
        }
        self.sum += x as f64;
        self.max_abs = self.max_abs.max(x.abs());
    }

    fn of(m: &MessageView<'_>) -> Self {
        let mut s = DecodedStats::default();
        let tau = m.tau();
        match m.encoding() {
            // Validated entries are distinct (strictly ascending indices), so each element
            // decodes to exactly +tau or -tau.
            Encoding::Sparse => {
                for e in m.sparse_entries() {
                    s.add(if e > 0 { tau } else { -tau });
                }
            }
            Encoding::Bitmap => {
                for i in 0..m.n() as usize {
                    match m.bitmap_code(i) {
                        0b01 => s.add(tau),
                        0b10 => s.add(-tau),
                        _ => {}
                    }
                }
            }
            Encoding::Dense => {
                for v in m.dense_values() {
                    s.add(v);
                }
            }
        }
        s
    }
}

fn report(m: &MessageView<'_>) -> MessageReport {
    let h = m.header();
    let n = m.n() as usize;
    let DecodedStats {
        positive,
        negative,
        sum,
        max_abs,
    } = DecodedStats::of(m);
    let bytes = m.as_bytes().len();
    MessageReport {
        version: wire::VERSION,
        encoding: m.encoding().name(),
        n: m.n(),
        count: m.count(),
        tau: m.tau(),
        sender: h.sender,
        round: h.round,
        truncated: h.truncated(),
        segment: h.is_segment().then_some((h.segment, h.offset)),
        bytes,
        payload_bytes: h.payload_len,
        checksum: format!("{:#010x}", h.checksum),
        density: m.count() as f64 / n.max(1) as f64,
        positive,
        negative,
        sum,
        max_abs,
        compression_ratio: (4 * n) as f64 / bytes as f64,
    }
}

/// What `inspect --format dl4j` adds about the DL4J buffer.
#[derive(Debug, Serialize)]
struct Dl4jReport {
    mode: &'static str,
    words: usize,
    half_codes: bool,
}

/// Runs `gradcast inspect`.
///
/// # Errors
/// Bad message files, with what is wrong.
pub fn inspect(a: &InspectArgs) -> Result<(), CliError> {
    let dl4j_info = if a.format == Format::Dl4j {
        let raw = read_file(&a.input)?;
        let v = dl4j::Dl4jView::parse(&raw).map_err(|e| in_file(&a.input, e))?;
        Some(Dl4jReport {
            mode: if v.mode() == dl4j::MODE_SPARSE {
                "sparse (FLEXIBLE)"
            } else {
                "bitmap"
            },
            words: raw.len() / 4,
            half_codes: v.has_half_codes(),
        })
    } else {
        None
    };
    let bytes = native_bytes(&a.input, a.format)?;
    let msgs = parse_all(&a.input, &bytes)?;
    let reports: Vec<MessageReport> = msgs.iter().map(report).collect();
    if a.json {
        let v = serde_json::json!({
            "file": a.input.display().to_string(),
            "format": if a.format == Format::Dl4j { "dl4j" } else { "native" },
            "valid": true,
            "dl4j": dl4j_info,
            "messages": reports,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::Train(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "{}: valid, {} message(s), {} bytes",
        a.input.display(),
        reports.len(),
        bytes.len()
    );
    if let Some(d) = &dl4j_info {
        println!(
            "DL4J buffer: mode {}, {} int32 words, -tau/2 codes: {}",
            d.mode,
            d.words,
            if d.half_codes {
                "yes (imported as dense)"
            } else {
                "no"
            }
        );
    }
    for (i, r) in reports.iter().enumerate() {
        println!("message {}:", i + 1);
        println!("  format version   {}", r.version);
        println!("  encoding         {}", r.encoding);
        println!("  elements (N)     {}", r.n);
        println!(
            "  entries (K)      {}  (density {:.4}%)",
            r.count,
            100.0 * r.density
        );
        println!("  tau              {:e}", r.tau);
        println!("  sender / round   {} / {}", r.sender, r.round);
        println!(
            "  truncated by cap {}",
            if r.truncated { "yes" } else { "no" }
        );
        if let Some((id, off)) = r.segment {
            println!("  segment          id {id}, offset {off}");
        }
        println!(
            "  bytes            {} (payload {}, header {})",
            r.bytes,
            r.payload_bytes,
            wire::HEADER_LEN
        );
        println!("  checksum         {} (verified)", r.checksum);
        println!(
            "  decoded          {} positive, {} negative, sum {:.6e}, max |x| {:e}",
            r.positive, r.negative, r.sum, r.max_abs
        );
        println!("  vs raw f32       {}", versus_f32(r.bytes, r.n as usize));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics from the entries equal those of the decoded vector, for every encoding.
    #[test]
    fn stats_from_entries_match_the_decoded_vector() {
        let input: Vec<f32> = (0..103)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) * 0.25)
            .collect();
        for mode in [
            EncodingMode::Sparse,
            EncodingMode::Bitmap,
            EncodingMode::Dense,
        ] {
            let mut residual = input.clone();
            let params = EncodeParams {
                mode,
                ..EncodeParams::new(1.0)
            };
            let n = input.len();
            let mut out = vec![0u8; wire::dense_message_len(n).max(wire::max_message_len(n))];
            let s = codec::encode(&mut residual, &params, &mut out).unwrap();
            let m = MessageView::parse(&out[..s.bytes]).unwrap();
            let mut v = vec![0.0f32; input.len()];
            codec::decode_add(&m, &mut v).unwrap();
            let mut want = DecodedStats::default();
            for &x in &v {
                want.add(x);
            }
            assert_eq!(DecodedStats::of(&m), want, "{mode:?}");
            assert!(want.positive > 0 && want.negative > 0, "{mode:?}");
        }
    }
}

//! Encoder checkpoints: the encoder's state and the residual, as versioned, checksummed bytes.
//!
//! A run that saves with [`Encoder::save`] and later restores with [`Encoder::restore`] (into
//! an encoder built with the same N, segments and policy kinds) continues bit-identically:
//! same thresholds, same messages, same residuals (DL4J drops the residual on every reset:
//! weakness W17 in docs/DL4J.md). Checkpoints are validated like messages: [`CheckpointView::parse`] checks the magic,
//! version, lengths and checksum before reading anything else, and never panics, whatever the
//! bytes.
//!
//! # Layout (version 1, little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"GCEK"` |
//! | 4..6 | version (1) |
//! | 6..8 | flags: bit 0, the encoder is segmented |
//! | 8..16 | total length in bytes |
//! | 16..24 | N |
//! | 24..26 | segment count S (>= 1) |
//! | 26..28 | reserved, 0 |
//! | 28..32 | CRC-32C of bytes 0..28 and of everything after byte 32 |
//! | 32 .. 32+48S | one 48-byte record per segment (below) |
//! | then 96 bytes | cumulative statistics: 11 u64 and one f64 (below) |
//! | then 4N bytes | the residual, N f32 values |
//!
//! Segment record: `0..2` id, `2` policy kind, `3..8` reserved (0), `8..16` offset,
//! `16..24` length, `24..32` policy threshold (f64), `32..40` policy sparsity (f64),
//! `40..48` policy auxiliary value (f64); NaN marks an absent value.
//!
//! Cumulative statistics, in order: rounds, warm-up rounds, entries, candidates, message
//! bytes, dense bytes, sparse messages, bitmap messages, dense messages, truncated messages,
//! clipped elements (u64 each), clipped mass (f64). The round count is the encoder's round
//! index: warm-up and clipping schedules resume from it.

use super::Encoder;
use super::policy::{PolicyState, ThresholdPolicy};
use super::stats::CumulativeStats;
use crate::backend::Backend;
use crate::error::Error;
use crate::error::{CheckpointError, CodecError, ConfigError};
use crate::wire::{self, MAX_ELEMENTS};

/// The four bytes every checkpoint starts with.
pub const MAGIC: [u8; 4] = *b"GCEK";
/// The checkpoint version this build writes and reads.
pub const VERSION: u16 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Length of one segment record.
pub const SEGMENT_RECORD_LEN: usize = 48;
/// Length of the cumulative statistics block.
pub const STATS_LEN: usize = 96;
/// Header flag: the encoder is segmented (its messages carry segment fields).
pub const FLAG_SEGMENTED: u16 = 1;

const CHECKSUM_AT: usize = 28;

/// The length of a checkpoint for N elements and `segments` segments.
pub fn checkpoint_len(n: usize, segments: usize) -> usize {
    HEADER_LEN + SEGMENT_RECORD_LEN * segments + STATS_LEN + 4 * n
}

fn implied_len(n: u64, segments: u64) -> u64 {
    HEADER_LEN as u64 + SEGMENT_RECORD_LEN as u64 * segments + STATS_LEN as u64 + 4 * n
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

fn f64_at(b: &[u8], i: usize) -> f64 {
    f64::from_bits(u64_at(b, i))
}

/// One segment's record in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentRecord {
    /// The segment id.
    pub id: u16,
    /// The segment's first element.
    pub offset: u64,
    /// The segment's element count.
    pub len: u64,
    /// The segment policy's state (its `kind` is the policy kind).
    pub state: PolicyState,
}

/// A validated, zero-copy view of a checkpoint.
///
/// Holding one proves the format-level rules hold: magic, version, flags, lengths, checksum,
/// segments tiling `0..N`, finite statistics and a finite residual. Whether the checkpoint
/// fits a given encoder is [`Encoder::restore`]'s business.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointView<'a> {
    bytes: &'a [u8],
    n: u64,
    segments: u16,
    flags: u16,
}

impl<'a> CheckpointView<'a> {
    /// Parses and validates a checkpoint.
    ///
    /// # Errors
    /// In checking order: [`CheckpointError::Truncated`] (shorter than the header),
    /// [`CheckpointError::BadMagic`], [`CheckpointError::UnsupportedVersion`],
    /// [`CheckpointError::Malformed`] (unknown flags, reserved bytes, N or segment count out of
    /// range, a length field that does not match them), [`CheckpointError::Truncated`] (shorter than
    /// announced), [`CheckpointError::LengthMismatch`] (longer), [`CheckpointError::ChecksumMismatch`],
    /// then [`CheckpointError::Malformed`] for the contents.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CheckpointError> {
        if bytes.len() < HEADER_LEN {
            return Err(CheckpointError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(CheckpointError::BadMagic { found: magic });
        }
        let version = u16_at(bytes, 4);
        if version != VERSION {
            return Err(CheckpointError::UnsupportedVersion { found: version });
        }
        let flags = u16_at(bytes, 6);
        if flags & !FLAG_SEGMENTED != 0 {
            return Err(CheckpointError::Malformed {
                reason: "unknown flag bits set",
            });
        }
        if u16_at(bytes, 26) != 0 {
            return Err(CheckpointError::Malformed {
                reason: "reserved header field is not 0",
            });
        }
        let n = u64_at(bytes, 16);
        if n == 0 || n > MAX_ELEMENTS as u64 {
            return Err(CheckpointError::Malformed {
                reason: "N is 0 or larger than the format addresses",
            });
        }
        let segments = u16_at(bytes, 24);
        if segments == 0 || segments as u64 > n {
            return Err(CheckpointError::Malformed {
                reason: "segment count is 0 or larger than N",
            });
        }
        if flags & FLAG_SEGMENTED == 0 && segments != 1 {
            return Err(CheckpointError::Malformed {
                reason: "an unsegmented encoder has exactly one segment",
            });
        }
        let declared = u64_at(bytes, 8);
        if declared != implied_len(n, segments as u64) {
            return Err(CheckpointError::Malformed {
                reason: "length field does not match N and the segment count",
            });
        }
        if (bytes.len() as u64) < declared {
            return Err(CheckpointError::Truncated {
                needed: declared.min(usize::MAX as u64) as usize,
                got: bytes.len(),
            });
        }
        if bytes.len() as u64 > declared {
            return Err(CheckpointError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        let stored = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
        let computed = wire::checksum(&bytes[..CHECKSUM_AT], &bytes[HEADER_LEN..]);
        if stored != computed {
            return Err(CheckpointError::ChecksumMismatch { stored, computed });
        }
        let view = CheckpointView {
            bytes,
            n,
            segments,
            flags,
        };
        view.validate_contents()?;
        Ok(view)
    }

    fn validate_contents(&self) -> Result<(), CheckpointError> {
        let mut next = 0u64;
        for k in 0..self.segments as usize {
            let at = HEADER_LEN + k * SEGMENT_RECORD_LEN;
            if self.bytes[at + 3..at + 8].iter().any(|&b| b != 0) {
                return Err(CheckpointError::Malformed {
                    reason: "reserved bytes of a segment record are not 0",
                });
            }
            let r = self.segment(k);
            if r.offset != next || r.len == 0 || r.len > self.n - r.offset {
                return Err(CheckpointError::Malformed {
                    reason: "segments do not tile 0..N in order",
                });
            }
            if !self.is_segmented() && r.id != 0 {
                return Err(CheckpointError::Malformed {
                    reason: "an unsegmented encoder's segment id is 0",
                });
            }
            next = r.offset + r.len;
        }
        if next != self.n {
            return Err(CheckpointError::Malformed {
                reason: "segments do not tile 0..N in order",
            });
        }
        let c = self.cumulative();
        if !(c.clipped_mass.is_finite() && c.clipped_mass >= 0.0) {
            return Err(CheckpointError::Malformed {
                reason: "clipped mass is not finite and non-negative",
            });
        }
        if c.warmup_rounds > c.rounds {
            return Err(CheckpointError::Malformed {
                reason: "more warm-up rounds than rounds",
            });
        }
        if self.residual().any(|v| !v.is_finite()) {
            return Err(CheckpointError::Malformed {
                reason: "the residual holds NaN or an infinity",
            });
        }
        Ok(())
    }

    /// The whole checkpoint's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The vector's element count N.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Whether the encoder was segmented.
    pub fn is_segmented(&self) -> bool {
        self.flags & FLAG_SEGMENTED != 0
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments as usize
    }

    /// Segment `k`'s record.
    ///
    /// # Panics
    /// When `k >= self.segment_count()`.
    pub fn segment(&self, k: usize) -> SegmentRecord {
        assert!(k < self.segments as usize, "segment index out of range");
        let b = &self.bytes[HEADER_LEN + k * SEGMENT_RECORD_LEN..][..SEGMENT_RECORD_LEN];
        SegmentRecord {
            id: u16_at(b, 0),
            offset: u64_at(b, 8),
            len: u64_at(b, 16),
            state: PolicyState {
                kind: b[2],
                tau: f64_at(b, 24),
                sparsity: f64_at(b, 32),
                aux: f64_at(b, 40),
            },
        }
    }

    /// Every segment's record, in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = SegmentRecord> + '_ {
        (0..self.segments as usize).map(|k| self.segment(k))
    }

    fn stats_at(&self) -> usize {
        HEADER_LEN + SEGMENT_RECORD_LEN * self.segments as usize
    }

    /// The cumulative statistics (their `rounds` is the encoder's round index).
    pub fn cumulative(&self) -> CumulativeStats {
        let b = &self.bytes[self.stats_at()..][..STATS_LEN];
        let u = |i: usize| u64_at(b, 8 * i);
        CumulativeStats {
            rounds: u(0),
            warmup_rounds: u(1),
            entries: u(2),
            candidates: u(3),
            message_bytes: u(4),
            dense_bytes: u(5),
            sparse_messages: u(6),
            bitmap_messages: u(7),
            dense_messages: u(8),
            truncated_messages: u(9),
            clipped_elements: u(10),
            clipped_mass: f64_at(b, 88),
        }
    }

    /// The encoder's round index when it was saved.
    pub fn rounds(&self) -> u64 {
        self.cumulative().rounds
    }

    /// The residual's values.
    pub fn residual(&self) -> impl ExactSizeIterator<Item = f32> + 'a {
        let at = self.stats_at() + STATS_LEN;
        self.bytes[at..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
}

impl<P: ThresholdPolicy, const S: usize> Encoder<P, S> {
    /// The length of this encoder's checkpoint in bytes.
    pub fn checkpoint_len(&self) -> usize {
        checkpoint_len(self.n, self.segs.len())
    }

    /// Saves the encoder's state and `residual` into `out`, and returns the checkpoint's
    /// length ([`Encoder::checkpoint_len`]). `scratch` (at least N values) receives the
    /// downloaded residual: the core allocates nothing.
    ///
    /// # Errors
    /// [`CodecError::TargetSizeMismatch`] when the residual's length is not N;
    /// [`CodecError::BufferTooSmall`] when `scratch` or `out` is too small; [`CodecError::NonFinite`]
    /// when the residual holds NaN or an infinity (such a state is not worth restoring);
    /// device errors. `out` is written only on success.
    pub fn save<B: Backend>(
        &self,
        backend: &B,
        residual: &B::Buffer,
        scratch: &mut [f32],
        out: &mut [u8],
    ) -> Result<usize, B::Error> {
        let n = self.n;
        let len = backend.len(residual);
        if len != n {
            return Err(Error::Codec(CodecError::TargetSizeMismatch {
                message_n: n as u32,
                offset: 0,
                target_len: len,
            })
            .into());
        }
        if scratch.len() < n {
            return Err(Error::Codec(CodecError::BufferTooSmall {
                needed: n,
                got: scratch.len(),
            })
            .into());
        }
        let total = self.checkpoint_len();
        if out.len() < total {
            return Err(Error::Codec(CodecError::BufferTooSmall {
                needed: total,
                got: out.len(),
            })
            .into());
        }
        let values = &mut scratch[..n];
        backend.download(residual, values)?;
        if let Some((index, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Codec(CodecError::NonFinite {
                index,
                bits: v.to_bits(),
            })
            .into());
        }

        let out = &mut out[..total];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.segmented { FLAG_SEGMENTED } else { 0 };
        out[6..8].copy_from_slice(&flags.to_le_bytes());
        out[8..16].copy_from_slice(&(total as u64).to_le_bytes());
        out[16..24].copy_from_slice(&(n as u64).to_le_bytes());
        out[24..26].copy_from_slice(&(self.segs.len() as u16).to_le_bytes());
        out[26..32].fill(0);
        for (k, s) in self.segs.iter().enumerate() {
            let b = &mut out[HEADER_LEN + k * SEGMENT_RECORD_LEN..][..SEGMENT_RECORD_LEN];
            let st = s.policy.state();
            b[0..2].copy_from_slice(&s.info.id.to_le_bytes());
            b[2] = s.policy.kind();
            b[3..8].fill(0);
            b[8..16].copy_from_slice(&(s.info.offset as u64).to_le_bytes());
            b[16..24].copy_from_slice(&(s.info.len as u64).to_le_bytes());
            b[24..32].copy_from_slice(&st.tau.to_bits().to_le_bytes());
            b[32..40].copy_from_slice(&st.sparsity.to_bits().to_le_bytes());
            b[40..48].copy_from_slice(&st.aux.to_bits().to_le_bytes());
        }
        let at = HEADER_LEN + SEGMENT_RECORD_LEN * self.segs.len();
        let c = &self.cumulative;
        let fields = [
            c.rounds,
            c.warmup_rounds,
            c.entries,
            c.candidates,
            c.message_bytes,
            c.dense_bytes,
            c.sparse_messages,
            c.bitmap_messages,
            c.dense_messages,
            c.truncated_messages,
            c.clipped_elements,
            c.clipped_mass.to_bits(),
        ];
        for (i, f) in fields.iter().enumerate() {
            out[at + 8 * i..at + 8 * i + 8].copy_from_slice(&f.to_le_bytes());
        }
        let at = at + STATS_LEN;
        for (chunk, v) in out[at..].chunks_exact_mut(4).zip(values.iter()) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        let sum = wire::checksum(&out[..CHECKSUM_AT], &out[HEADER_LEN..]);
        out[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        Ok(total)
    }

    /// Restores a checkpoint: validates it ([`CheckpointView::parse`]), checks that it fits
    /// this encoder, then loads the policy states, the round index and the cumulative
    /// statistics, and uploads the saved residual into `residual`. `scratch` (at least N
    /// values) stages the residual on the host. The configuration (warm-up, clipping, policy
    /// parameters) is this encoder's: a checkpoint carries state, not settings.
    ///
    /// # Errors
    /// [`CheckpointView::parse`]'s errors; [`CheckpointError::ShapeMismatch`] when N, the
    /// segmentation, or a segment's id, offset or length differ; [`ConfigError::PolicyMismatch`]
    /// when a segment's policy kind differs; [`CheckpointError::Malformed`] when a policy
    /// rejects its saved state; [`CodecError::TargetSizeMismatch`] when the residual's length is
    /// not N; [`CodecError::BufferTooSmall`] when `scratch` is; device errors. On error the encoder
    /// and (except after a device failure) the residual are unchanged.
    pub fn restore<B: Backend>(
        &mut self,
        backend: &B,
        bytes: &[u8],
        residual: &mut B::Buffer,
        scratch: &mut [f32],
    ) -> Result<(), B::Error> {
        let view = CheckpointView::parse(bytes).map_err(Error::from)?;
        let n = self.n;
        if view.n() != n as u64 {
            return Err(Error::Checkpoint(CheckpointError::ShapeMismatch {
                what: "N",
                expected: n as u64,
                found: view.n(),
            })
            .into());
        }
        if view.is_segmented() != self.segmented {
            return Err(Error::Checkpoint(CheckpointError::ShapeMismatch {
                what: "segmented flag",
                expected: self.segmented as u64,
                found: view.is_segmented() as u64,
            })
            .into());
        }
        if view.segment_count() != self.segs.len() {
            return Err(Error::Checkpoint(CheckpointError::ShapeMismatch {
                what: "segment count",
                expected: self.segs.len() as u64,
                found: view.segment_count() as u64,
            })
            .into());
        }
        let mut policies: heapless::Vec<P, S> = heapless::Vec::new();
        for (s, r) in self.segs.iter().zip(view.segments()) {
            let checks = [
                ("segment id", s.info.id as u64, r.id as u64),
                ("segment offset", s.info.offset as u64, r.offset),
                ("segment length", s.info.len as u64, r.len),
            ];
            for (what, expected, found) in checks {
                if expected != found {
                    return Err(Error::Checkpoint(CheckpointError::ShapeMismatch {
                        what,
                        expected,
                        found,
                    })
                    .into());
                }
            }
            let kind = s.policy.kind();
            if r.state.kind != kind {
                return Err(Error::Config(ConfigError::PolicyMismatch {
                    expected: kind,
                    found: r.state.kind,
                })
                .into());
            }
            let mut p = s.policy.clone();
            p.set_state(&r.state).map_err(|e| match e {
                ConfigError::PolicyMismatch { .. } => Error::Config(e),
                _ => Error::Checkpoint(CheckpointError::Malformed {
                    reason: "a policy state is out of its domain",
                }),
            })?;
            // Cannot fail: at most S segments.
            let _ = policies.push(p);
        }
        let len = backend.len(residual);
        if len != n {
            return Err(Error::Codec(CodecError::TargetSizeMismatch {
                message_n: n as u32,
                offset: 0,
                target_len: len,
            })
            .into());
        }
        if scratch.len() < n {
            return Err(Error::Codec(CodecError::BufferTooSmall {
                needed: n,
                got: scratch.len(),
            })
            .into());
        }
        let values = &mut scratch[..n];
        for (d, v) in values.iter_mut().zip(view.residual()) {
            *d = v;
        }
        backend.upload(values, residual)?;
        for (s, p) in self.segs.iter_mut().zip(policies) {
            s.policy = p;
            s.last = None;
        }
        self.cumulative = view.cumulative();
        self.last = None;
        Ok(())
    }

    /// [`Encoder::save`] into a new vector, with a heap scratch buffer.
    ///
    /// # Errors
    /// As [`Encoder::save`].
    #[cfg(feature = "alloc")]
    pub fn save_alloc<B: Backend>(
        &self,
        backend: &B,
        residual: &B::Buffer,
    ) -> Result<alloc::vec::Vec<u8>, B::Error> {
        let mut scratch = alloc::vec![0.0f32; self.n];
        let mut out = alloc::vec![0u8; self.checkpoint_len()];
        self.save(backend, residual, &mut scratch, &mut out)?;
        Ok(out)
    }

    /// [`Encoder::restore`] with a heap scratch buffer.
    ///
    /// # Errors
    /// As [`Encoder::restore`].
    #[cfg(feature = "alloc")]
    pub fn restore_alloc<B: Backend>(
        &mut self,
        backend: &B,
        bytes: &[u8],
        residual: &mut B::Buffer,
    ) -> Result<(), B::Error> {
        let mut scratch = alloc::vec![0.0f32; self.n];
        self.restore(backend, bytes, residual, &mut scratch)
    }
}

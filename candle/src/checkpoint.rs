//! [`Sharing::save`] and [`Sharing::restore`]: everything gradcast holds, so that a restarted
//! run continues bit-identically.
//!
//! What gradcast holds per local worker is its encoder's state (per segment, i.e. per
//! variable: the policy's threshold state; the round index and cumulative statistics) and
//! its residual, written in the core's checksummed encoder checkpoint format
//! (`gradcast_core::encoder::checkpoint`); plus the step counter, the round number and the
//! layout (variable names, shapes and dtypes), so that a restore into another model is an
//! error naming the variable. The model's parameters and the optimizer's state are not
//! gradcast's: save the parameters with the model's own safetensors file
//! (`VarMap::save`), see the crate README.
//!
//! # Layout (version 1, little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"GCSH"` |
//! | 4..6 | version (1) |
//! | 6 | exchange: 0 gradcast, 1 dense fp32, 2 dense fp16 |
//! | 7 | payload: 0 gradients, 1 updates |
//! | 8..16 | total length in bytes |
//! | 16..24 | steps done |
//! | 24..32 | the next round's number |
//! | 32..36 | local workers P |
//! | 36..40 | global id of the first local worker |
//! | 40..44 | workers of the whole job |
//! | 44..48 | CRC-32C of bytes 0..44 and of everything after byte 48 |
//! | 48..52 | length L of the layout description |
//! | 52..52+L | the layout description (`Layout::describe`) |
//! | then, per local worker (gradcast only) | 8-byte length, then the core's encoder checkpoint (its residual included) |

use crate::error::{Error, Result};
use crate::layout::{Layout, Reader};
use crate::network::Network;
use crate::sharing::{Engine, Payload, Sharing};
use gradcast_core::Backend;
use gradcast_core::round::ResetOptions;
use gradcast_core::wire;
use std::path::Path;

/// The first four bytes of a sharing checkpoint.
pub const MAGIC: [u8; 4] = *b"GCSH";
/// The version this build writes and reads.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 52;
const CRC_AT: usize = 44;

fn bad(why: impl Into<String>) -> Error {
    Error::Checkpoint(why.into())
}

impl<B: Backend, N: Network> Sharing<B, N> {
    fn next_round(&self) -> u64 {
        match &self.engine {
            Engine::Gradcast(g) => g.acc.next_round(),
            Engine::Dense { .. } => self.step,
        }
    }

    /// Everything gradcast holds for this process's workers, as checksummed bytes (see the
    /// [module docs](crate::checkpoint)). Call it between steps.
    ///
    /// # Errors
    /// Backend errors downloading a residual; [`Error::Checkpoint`] when a residual holds a
    /// non-finite value (not worth restoring).
    pub fn save_bytes(&self) -> Result<Vec<u8>> {
        let desc = self.layout.describe();
        let mut out = vec![0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6] = self.config.exchange.code();
        out[7] = match self.config.payload {
            Payload::Gradients => 0,
            Payload::Updates => 1,
        };
        out[16..24].copy_from_slice(&self.step.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_round().to_le_bytes());
        out[32..36].copy_from_slice(&(self.workers as u32).to_le_bytes());
        out[36..40].copy_from_slice(&(self.first_worker as u32).to_le_bytes());
        out[40..44].copy_from_slice(&(self.total_workers as u32).to_le_bytes());
        out[48..52].copy_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&desc);
        if let Engine::Gradcast(g) = &self.engine {
            for w in 0..self.workers {
                let bytes = g
                    .acc
                    .encoder(w)
                    .save_alloc(g.acc.backend(), g.acc.residual(w))
                    .map_err(|e| bad(format!("worker {}: {e}", self.first_worker + w)))?;
                out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        let total = out.len() as u64;
        out[8..16].copy_from_slice(&total.to_le_bytes());
        let crc = wire::checksum(&out[..CRC_AT], &out[CRC_AT + 4..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Restores [`Sharing::save_bytes`]'s bytes: validates them completely (checksum,
    /// configuration, workers, layout by variable name, every encoder checkpoint) before
    /// anything changes, then loads every worker's encoder state and residual, the step
    /// counter and the round number. The next step continues bit-identically.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] saying what does not fit: malformed bytes, another exchange or
    /// payload, other workers (restore each rank's own file), a model whose first
    /// differing variable it names, an encoder checkpoint the core rejects. On error
    /// nothing changes.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() < HEADER_LEN {
            return Err(bad(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if bytes[0..4] != MAGIC {
            return Err(bad("not a gradcast sharing checkpoint (bad magic)"));
        }
        let mut r = Reader { bytes, at: 4 };
        let u16v = u16::from_le_bytes([bytes[4], bytes[5]]);
        if u16v != VERSION {
            return Err(bad(format!("version {u16v}, this build reads {VERSION}")));
        }
        r.at = 8;
        let total = r.u64().unwrap_or(0);
        if total != bytes.len() as u64 {
            return Err(bad(format!(
                "the header says {total} bytes, the checkpoint has {}",
                bytes.len()
            )));
        }
        let stored = u32::from_le_bytes([bytes[44], bytes[45], bytes[46], bytes[47]]);
        let computed = wire::checksum(&bytes[..CRC_AT], &bytes[CRC_AT + 4..]);
        if stored != computed {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            )));
        }
        let step = r.u64().unwrap_or(0);
        let next_round = r.u64().unwrap_or(0);
        let workers = r.u32().unwrap_or(0) as usize;
        let first = r.u32().unwrap_or(0) as usize;
        let total_workers = r.u32().unwrap_or(0) as usize;
        r.at = 48;
        let exchange = match bytes[6] {
            0 => "gradcast",
            1 => "dense-fp32",
            2 => "dense-fp16",
            _ => return Err(bad("unknown exchange code")),
        };
        if exchange != self.config.exchange.name() {
            return Err(bad(format!(
                "saved by a {exchange} exchange; this sharing runs {}",
                self.config.exchange.name()
            )));
        }
        let payload = match bytes[7] {
            0 => Payload::Gradients,
            1 => Payload::Updates,
            _ => return Err(bad("unknown payload code")),
        };
        if payload != self.config.payload {
            return Err(bad(format!(
                "saved with payload {payload:?}; this sharing uses {:?}",
                self.config.payload
            )));
        }
        if (workers, first, total_workers) != (self.workers, self.first_worker, self.total_workers)
        {
            return Err(bad(format!(
                "saved for workers {first}..{} of {total_workers}; this process runs workers \
                 {}..{} of {} (restore each rank's own file)",
                first + workers,
                self.first_worker,
                self.first_worker + self.workers,
                self.total_workers
            )));
        }
        let desc_len = r.u32().unwrap_or(0) as usize;
        let desc = r
            .take(desc_len)
            .ok_or_else(|| bad("the layout description is truncated"))?;
        let saved = Layout::from_description(desc)?;
        if let Some(d) = saved.difference(&self.layout, "the checkpoint", "this sharing") {
            return Err(bad(format!("another model: {d}")));
        }
        let mut encoders = Vec::new();
        if let Engine::Gradcast(g) = &self.engine {
            let backend = g.acc.backend();
            for w in 0..self.workers {
                let len = r
                    .u64()
                    .ok_or_else(|| bad(format!("worker {}: truncated", first + w)))?;
                let part = usize::try_from(len)
                    .ok()
                    .and_then(|l| r.take(l))
                    .ok_or_else(|| bad(format!("worker {}: truncated", first + w)))?;
                let mut enc = g.acc.encoder(w).clone();
                let mut residual = backend
                    .alloc(self.layout.n())
                    .map_err(|e| Error::round(step, e))?;
                enc.restore_alloc(backend, part, &mut residual)
                    .map_err(|e| bad(format!("worker {}: {e}", first + w)))?;
                encoders.push((enc, residual));
            }
        }
        if r.at != bytes.len() {
            return Err(bad("trailing bytes after the last worker"));
        }
        if let Engine::Gradcast(g) = &mut self.engine {
            g.acc
                .reset(ResetOptions {
                    drop_residuals: false,
                    next_round: Some(next_round),
                })
                .map_err(|e| Error::round(step, e))?;
            for (w, (enc, mut residual)) in encoders.into_iter().enumerate() {
                *g.acc.encoder_mut(w) = enc;
                std::mem::swap(g.acc.residual_mut(w), &mut residual);
            }
        }
        self.step = step;
        Ok(())
    }

    /// [`Sharing::save_bytes`] into a file (written whole, then renamed into place, so a
    /// crash never leaves half a checkpoint under `path`).
    ///
    /// # Errors
    /// As [`Sharing::save_bytes`]; [`Error::Io`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.save_bytes()?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(|source| Error::Io {
            action: "write",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            action: "rename into",
            path: path.to_path_buf(),
            source,
        })
    }

    /// [`Sharing::restore_bytes`] from a file.
    ///
    /// # Errors
    /// [`Error::Io`]; as [`Sharing::restore_bytes`].
    pub fn restore(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        self.restore_bytes(&bytes).map_err(|e| match e {
            Error::Checkpoint(m) => bad(format!("{}: {m}", path.display())),
            other => other,
        })
    }
}

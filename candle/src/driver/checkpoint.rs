//! Job checkpoints: everything a [`Job`] needs to continue after the process died, so that
//! the resumed job ends with the same parameters, bit for bit, as one never interrupted.
//!
//! One file per rank and checkpoint, `rank<R>-round<N>.gcjob` in the checkpoint directory
//! (`N` the job's rounds done, twelve digits). [`Job::save_checkpoint`] writes it atomically
//! (a temporary file, `fsync`, rename, `fsync` of the directory), waits until every rank has
//! written its own, and only then deletes the rank's older checkpoints: a kill at any instant
//! leaves at least one complete checkpoint on every rank for a round all ranks hold.
//! [`Job::resume`] loads, on every rank, the newest round for which every rank has a valid
//! file, after checking it completely.
//!
//! # What a checkpoint holds
//!
//! The configuration it was written for (checked on load: any difference is
//! [`Error::CheckpointMismatch`] naming the field), the data order ([`JobState`]: epoch,
//! position, the current order, the generator's state), and per run: its counters
//! ([`RunState`]: rounds, bytes, times, the epoch's partial sums), its epoch records, its
//! [`Sharing`](crate::Sharing)'s checkpoint (every local worker's residual and encoder state,
//! threshold policy included; [`crate::checkpoint`]), and per replica its parameters and its
//! optimizer's state (AdamW: the step count and both moments of every variable; SGD has none).
//!
//! # Layout (version 1, little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"GCJB"` |
//! | 4..6 | version (1) |
//! | 6..8 | zero |
//! | 8..16 | total length in bytes |
//! | 16..20 | CRC-32C of bytes 0..16 and of everything after byte 20 |
//! | 20..24 | the writing rank |
//! | then | the configuration: a count, then per field its name and value (strings) |
//! | then | job state: epoch, next batch, generator state (u64 each), the order (count, u64 each) |
//! | then | a run count, then per run: |
//! | | name; counters (8 u64); epoch sums (loss f64, losses u64, bytes u64, tau f64, density f64, messages u64, 3 encoding counts u64) |
//! | | epoch records (count; per record epoch u64, loss f64, accuracy f64, bytes u64, cumulative u64, tau, density and encodings each a presence byte then the value) |
//! | | the sharing's checkpoint (length u64, bytes) |
//! | | a replica count (u32), then per replica: a variable count (u32), per variable in name order its name, rank (u32), dimensions (u64 each) and f32 values; then the optimizer: 0 (SGD) or 1 (AdamW), and for AdamW the step count (u64) and per variable, in the same order, the first and second moments (f32 values) |
//!
//! Strings are a u32 length and UTF-8 bytes; f32 values are a u64 count and the values.

use super::{EncodingMix, EpochRecord, EpochSums, Job, JobState, RunState, rounds_per_epoch};
use crate::error::{Error, Result};
use crate::layout::Reader;
use crate::network::Network;
use crate::optim::AnyOptimizer;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use gradcast_core::{Backend, wire};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The first four bytes of a job checkpoint.
pub const MAGIC: [u8; 4] = *b"GCJB";
/// The version this build writes and reads.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 24;
const CRC_AT: usize = 16;
const SUFFIX: &str = ".gcjob";

fn bad(why: impl Into<String>) -> Error {
    Error::Checkpoint(why.into())
}

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of rank `rank`'s checkpoint after `round` rounds.
pub fn file_name(rank: usize, round: u64) -> String {
    format!("rank{rank}-round{round:012}{SUFFIX}")
}

/// The round of a file name [`file_name`] wrote for `rank`.
fn parse_name(name: &str, rank: usize) -> Option<u64> {
    let rest = name.strip_prefix(&format!("rank{rank}-round"))?;
    let digits = rest.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `rank`'s checkpoints in `dir`, newest first (none when `dir` does not exist).
fn list(dir: &Path, rank: usize) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        r => r.map_err(io("read directory", dir))?,
    };
    for entry in entries {
        let entry = entry.map_err(io("read directory", dir))?;
        if let Some(round) = entry.file_name().to_str().and_then(|n| parse_name(n, rank)) {
            out.push((round, entry.path()));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, written whole and synced,
/// renamed over `path`, then the directory synced. A crash at any instant leaves either the
/// old `path` (or none) or the new one complete, never a part; a temporary file may remain.
///
/// # Errors
/// [`Error::Io`] naming the file and the action.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("rename into", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// What [`Job::save_checkpoint`] wrote on this rank.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    /// The file.
    pub path: PathBuf,
    /// The job's rounds done.
    pub round: u64,
    /// The file's size.
    pub bytes: u64,
    /// Seconds to serialize it, write it atomically and wait for the other ranks.
    pub seconds: f64,
}

/// What [`Job::resume`] loaded on this rank.
#[derive(Clone, Debug, PartialEq)]
pub struct Resumed {
    /// The file.
    pub path: PathBuf,
    /// The job's rounds done at the checkpoint.
    pub round: u64,
    /// The file's size.
    pub bytes: u64,
    /// Seconds to choose, read, check and load it.
    pub seconds: f64,
}

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.f64(x);
            }
            None => self.u8(0),
        }
    }
    fn f32s(&mut self, t: &Tensor) -> Result<()> {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        self.u64(v.len() as u64);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
        Ok(())
    }
}

/// A bounds-checked reader whose every failure says what was being read.
struct R<'a>(Reader<'a>);

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        self.0
            .take(n)
            .ok_or_else(|| bad(format!("truncated in {what}")))
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        self.0
            .u32()
            .ok_or_else(|| bad(format!("truncated in {what}")))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        self.0
            .u64()
            .ok_or_else(|| bad(format!("truncated in {what}")))
    }
    fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_bits(self.u64(what)?))
    }
    fn usize(&mut self, what: &str) -> Result<usize> {
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| bad(format!("{what}: {v} does not fit this machine")))
    }
    /// A count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
        let n = self.usize(what)?;
        let left = self.0.bytes.len() - self.0.at;
        if n.checked_mul(min_size.max(1)).is_none_or(|b| b > left) {
            return Err(bad(format!(
                "{what}: {n} items cannot fit in the {left} bytes left"
            )));
        }
        Ok(n)
    }
    fn str(&mut self, what: &str) -> Result<String> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what}: not UTF-8")))
    }
    fn opt_f64(&mut self, what: &str) -> Result<Option<f64>> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.f64(what)?)),
            b => Err(bad(format!("{what}: presence byte {b}"))),
        }
    }
    fn f32s(&mut self, what: &str) -> Result<Vec<f32>> {
        let n = self.count(4, what)?;
        let b = self.take(n * 4, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

struct SavedVar {
    name: String,
    dims: Vec<usize>,
    values: Vec<f32>,
}

/// AdamW's state of one replica: the step count and per variable (in the replica's variable
/// order) the first and second moments.
type AdamWSaved = (u64, Vec<(Vec<f32>, Vec<f32>)>);

struct SavedReplica {
    vars: Vec<SavedVar>,
    adamw: Option<AdamWSaved>,
}

struct SavedRun {
    state: RunState,
    records: Vec<EpochRecord>,
    sharing: Vec<u8>,
    replicas: Vec<SavedReplica>,
}

struct Parsed {
    config: Vec<(String, String)>,
    state: JobState,
    runs: Vec<SavedRun>,
}

/// The variables of a `VarMap` in name order.
fn named_vars(vm: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| bad("a replica's VarMap lock is poisoned"))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn crc(bytes: &[u8]) -> u32 {
    wire::checksum(&bytes[..CRC_AT], &bytes[CRC_AT + 4..])
}

/// Checks a job checkpoint's frame (length, magic, version, CRC) and returns the writing rank.
fn check_frame(bytes: &[u8]) -> Result<usize> {
    if bytes.len() < HEADER_LEN {
        return Err(bad(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if bytes[0..4] != MAGIC {
        return Err(bad("not a gradcast job checkpoint (bad magic)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(bad(format!(
            "version {version}, this build reads {VERSION}"
        )));
    }
    let mut total = [0u8; 8];
    total.copy_from_slice(&bytes[8..16]);
    let total = u64::from_le_bytes(total);
    if total != bytes.len() as u64 {
        return Err(bad(format!(
            "the header says {total} bytes, the file has {} (truncated or extended)",
            bytes.len()
        )));
    }
    let stored = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let computed = crc(bytes);
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is damaged"
        )));
    }
    Ok(u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]) as usize)
}

fn parse(bytes: &[u8]) -> Result<Parsed> {
    let mut r = R(Reader {
        bytes,
        at: HEADER_LEN,
    });
    let n = r.count(8, "the configuration")?;
    let mut config = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.str("a configuration field")?;
        let v = r.str("a configuration value")?;
        config.push((k, v));
    }
    let epoch = r.usize("the epoch")?;
    let batch = r.usize("the batch")?;
    let rng = r.u64("the generator state")?;
    let n = r.count(8, "the data order")?;
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        order.push(r.usize("the data order")?);
    }
    let state = JobState {
        epoch,
        batch,
        order,
        rng,
    };
    let n = r.count(8, "the runs")?;
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str("a run's name")?;
        let w = format!("run `{name}`");
        let mut c = [0u64; 8];
        for x in &mut c {
            *x = r.u64(&w)?;
        }
        let epoch = EpochSums {
            loss: r.f64(&w)?,
            losses: r.u64(&w)?,
            bytes: r.u64(&w)?,
            tau: r.f64(&w)?,
            density: r.f64(&w)?,
            messages: r.u64(&w)?,
            encodings: [r.u64(&w)?, r.u64(&w)?, r.u64(&w)?],
        };
        let state = RunState {
            rounds: c[0],
            bytes: c[1],
            train_ns: c[2],
            encode_ns: c[3],
            exchange_ns: c[4],
            decode_ns: c[5],
            forward_ns: c[6],
            backward_ns: c[7],
            epoch,
        };
        let n = r.count(43, &format!("{w}: epoch records"))?;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            records.push(EpochRecord {
                epoch: r.usize(&w)?,
                loss: r.f64(&w)?,
                test_accuracy: r.f64(&w)?,
                bytes: r.u64(&w)?,
                cumulative_bytes: r.u64(&w)?,
                tau: r.opt_f64(&w)?,
                density: r.opt_f64(&w)?,
                encodings: match r.u8(&w)? {
                    0 => None,
                    1 => Some(EncodingMix {
                        sparse: r.u64(&w)?,
                        bitmap: r.u64(&w)?,
                        dense: r.u64(&w)?,
                    }),
                    b => return Err(bad(format!("{w}: presence byte {b}"))),
                },
            });
        }
        let len = r.count(1, &format!("{w}: the sharing checkpoint"))?;
        let sharing = r.take(len, &w)?.to_vec();
        let n = r.u32(&w)? as usize;
        let mut replicas = Vec::with_capacity(n.min(1024));
        for i in 0..n {
            let wr = format!("{w} replica {i}");
            let nv = r.u32(&wr)? as usize;
            let mut vars = Vec::with_capacity(nv.min(1 << 16));
            for _ in 0..nv {
                let name = r.str(&wr)?;
                let wv = format!("{wr} variable `{name}`");
                let rank = r.u32(&wv)? as usize;
                if rank > 8 {
                    return Err(bad(format!("{wv}: {rank} dimensions")));
                }
                let dims = (0..rank)
                    .map(|_| r.usize(&wv))
                    .collect::<Result<Vec<_>>>()?;
                let values = r.f32s(&wv)?;
                if dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(values.len()) {
                    return Err(bad(format!(
                        "{wv}: shape {dims:?} does not hold its {} values",
                        values.len()
                    )));
                }
                vars.push(SavedVar { name, dims, values });
            }
            let adamw = match r.u8(&wr)? {
                0 => None,
                1 => {
                    let steps = r.u64(&wr)?;
                    let mut moments = Vec::with_capacity(vars.len());
                    for v in &vars {
                        let wm = format!("{wr} AdamW moments of `{}`", v.name);
                        let m = r.f32s(&wm)?;
                        let s = r.f32s(&wm)?;
                        if m.len() != v.values.len() || s.len() != v.values.len() {
                            return Err(bad(format!("{wm}: not the variable's size")));
                        }
                        moments.push((m, s));
                    }
                    Some((steps, moments))
                }
                b => return Err(bad(format!("{wr}: unknown optimizer code {b}"))),
            };
            replicas.push(SavedReplica { vars, adamw });
        }
        runs.push(SavedRun {
            state,
            records,
            sharing,
            replicas,
        });
    }
    if r.0.at != bytes.len() {
        return Err(bad("trailing bytes after the last run"));
    }
    Ok(Parsed {
        config,
        state,
        runs,
    })
}

impl<B: Backend, N: Network> Job<'_, B, N> {
    /// The job's rounds done (batches over every epoch).
    pub fn rounds_done(&self) -> u64 {
        let per_epoch = rounds_per_epoch(self.train.len(), self.config.batch);
        self.state.epoch as u64 * per_epoch + self.state.batch as u64
    }

    fn rank_and_ranks(&self) -> (usize, usize) {
        self.runs.first().map_or((0, 1), |r| {
            (r.sharing.network.rank(), r.sharing.network.ranks())
        })
    }

    /// What must be equal between a checkpoint and the job resuming it, field by field.
    fn description(&self) -> Vec<(String, String)> {
        let c = &self.config;
        let (rank, ranks) = self.rank_and_ranks();
        let data_crc = |d: &crate::data::Dataset| {
            let f: Vec<u8> = d.features.iter().flat_map(|x| x.to_le_bytes()).collect();
            format!("{:08x}", wire::checksum(&d.labels, &f))
        };
        let mut d = vec![
            ("ranks", ranks.to_string()),
            ("rank", rank.to_string()),
            ("training samples", self.train.len().to_string()),
            ("training data CRC-32C", data_crc(self.train)),
            ("test samples", self.test.len().to_string()),
            ("test data CRC-32C", data_crc(self.test)),
            ("features", self.train.dim.to_string()),
            ("classes", self.train.classes.to_string()),
            ("model", format!("{:?}", c.model)),
            ("workers", c.workers.to_string()),
            ("batch", c.batch.to_string()),
            ("epochs", c.epochs.to_string()),
            ("seed", c.seed.to_string()),
            ("optimizer", format!("{:?}", c.optimizer)),
            ("compute", format!("{:?}", c.compute)),
            ("replicas", format!("{:?}", c.replicas)),
            ("eval every", c.eval_every.to_string()),
            ("runs", self.runs.len().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<Vec<_>>();
        for (i, run) in self.runs.iter().enumerate() {
            d.push((format!("run {i} name"), run.name.clone()));
            d.push((
                format!("run {i} sharing"),
                format!("{:?}", run.sharing.config),
            ));
        }
        d
    }

    /// This process's checkpoint of the whole job, as bytes (see the [module docs](self)).
    /// Call it between rounds. Not collective.
    ///
    /// # Errors
    /// As [`Sharing::save_bytes`](crate::Sharing::save_bytes); candle errors reading a
    /// tensor; [`Error::Checkpoint`] for a parameter that is not f32.
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let (rank, _) = self.rank_and_ranks();
        let mut w = W(vec![0u8; HEADER_LEN]);
        w.0[0..4].copy_from_slice(&MAGIC);
        w.0[4..6].copy_from_slice(&VERSION.to_le_bytes());
        w.0[20..24].copy_from_slice(&(rank as u32).to_le_bytes());
        let desc = self.description();
        w.u64(desc.len() as u64);
        for (k, v) in &desc {
            w.str(k);
            w.str(v);
        }
        let s = &self.state;
        w.u64(s.epoch as u64);
        w.u64(s.batch as u64);
        w.u64(s.rng);
        w.u64(s.order.len() as u64);
        for &i in &s.order {
            w.u64(i as u64);
        }
        w.u64(self.runs.len() as u64);
        for run in &self.runs {
            w.str(&run.name);
            let s = &run.state;
            for x in [
                s.rounds,
                s.bytes,
                s.train_ns,
                s.encode_ns,
                s.exchange_ns,
                s.decode_ns,
                s.forward_ns,
                s.backward_ns,
            ] {
                w.u64(x);
            }
            let e = &s.epoch;
            w.f64(e.loss);
            w.u64(e.losses);
            w.u64(e.bytes);
            w.f64(e.tau);
            w.f64(e.density);
            w.u64(e.messages);
            e.encodings.iter().for_each(|&x| w.u64(x));
            w.u64(run.records.len() as u64);
            for r in &run.records {
                w.u64(r.epoch as u64);
                w.f64(r.loss);
                w.f64(r.test_accuracy);
                w.u64(r.bytes);
                w.u64(r.cumulative_bytes);
                w.opt_f64(r.tau);
                w.opt_f64(r.density);
                match r.encodings {
                    Some(m) => {
                        w.u8(1);
                        w.u64(m.sparse);
                        w.u64(m.bitmap);
                        w.u64(m.dense);
                    }
                    None => w.u8(0),
                }
            }
            let sharing = run.sharing.save_bytes()?;
            w.u64(sharing.len() as u64);
            w.0.extend_from_slice(&sharing);
            let varmaps: Vec<&VarMap> = run.sharing.varmaps().collect();
            w.u32(varmaps.len() as u32);
            for (vm, opt) in varmaps.iter().zip(&run.optimizers) {
                let vars = named_vars(vm)?;
                w.u32(vars.len() as u32);
                for (name, var) in &vars {
                    if var.dtype() != DType::F32 {
                        return Err(bad(format!(
                            "variable `{name}` is {:?}; job checkpoints hold f32 parameters",
                            var.dtype()
                        )));
                    }
                    w.str(name);
                    let dims = var.dims();
                    w.u32(dims.len() as u32);
                    dims.iter().for_each(|&d| w.u64(d as u64));
                    w.f32s(var.as_tensor())?;
                }
                match opt {
                    AnyOptimizer::Sgd(_) => w.u8(0),
                    AnyOptimizer::AdamW(a) => {
                        w.u8(1);
                        w.u64(a.step_count() as u64);
                        for (name, var) in &vars {
                            let (m, v) = a.moments(var.as_tensor()).ok_or_else(|| {
                                bad(format!("variable `{name}` has no AdamW state"))
                            })?;
                            w.f32s(m.as_tensor())?;
                            w.f32s(v.as_tensor())?;
                        }
                    }
                }
            }
        }
        let mut out = w.0;
        let total = out.len() as u64;
        out[8..16].copy_from_slice(&total.to_le_bytes());
        let c = crc(&out);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&c.to_le_bytes());
        Ok(out)
    }

    /// Checks `bytes` (frame, CRC, the configuration against this job's, every size) and
    /// returns them parsed, changing nothing.
    fn check(&self, bytes: &[u8]) -> Result<Parsed> {
        check_frame(bytes)?;
        let p = parse(bytes)?;
        let mine = self.description();
        for (i, (k, v)) in mine.iter().enumerate() {
            match p.config.get(i) {
                Some((sk, sv)) if sk == k && sv == v => {}
                Some((sk, sv)) if sk == k => {
                    return Err(Error::CheckpointMismatch {
                        field: k.clone(),
                        saved: sv.clone(),
                        current: v.clone(),
                    });
                }
                _ => {
                    return Err(Error::CheckpointMismatch {
                        field: k.clone(),
                        saved: "absent".into(),
                        current: v.clone(),
                    });
                }
            }
        }
        if let Some((k, v)) = p.config.get(mine.len()) {
            return Err(Error::CheckpointMismatch {
                field: k.clone(),
                saved: v.clone(),
                current: "absent".into(),
            });
        }
        let s = &p.state;
        let n = self.train.len();
        let mut seen = vec![false; n];
        for &i in &s.order {
            if i >= n || std::mem::replace(&mut seen[i], true) {
                return Err(bad(
                    "the data order is not a permutation of the training set",
                ));
            }
        }
        if s.order.len() != n {
            return Err(bad(
                "the data order is not a permutation of the training set",
            ));
        }
        let per_epoch = rounds_per_epoch(n, self.config.batch) as usize;
        if s.epoch > self.config.epochs || s.batch >= per_epoch.max(1) {
            return Err(bad(format!(
                "position epoch {} batch {} lies outside {} epochs of {per_epoch} batches",
                s.epoch, s.batch, self.config.epochs
            )));
        }
        for (run, saved) in self.runs.iter().zip(&p.runs) {
            let w = format!("run `{}`", run.name);
            let varmaps: Vec<&VarMap> = run.sharing.varmaps().collect();
            if saved.replicas.len() != varmaps.len() {
                return Err(bad(format!(
                    "{w}: {} replicas in the checkpoint, {} here",
                    saved.replicas.len(),
                    varmaps.len()
                )));
            }
            for (i, (vm, (rep, opt))) in varmaps
                .iter()
                .zip(saved.replicas.iter().zip(&run.optimizers))
                .enumerate()
            {
                let vars = named_vars(vm)?;
                let names = |v: &[SavedVar]| v.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
                if vars.len() != rep.vars.len()
                    || vars.iter().map(|x| &x.0).ne(names(&rep.vars).iter())
                {
                    return Err(bad(format!(
                        "{w} replica {i}: variables {:?} in the checkpoint, {:?} here",
                        names(&rep.vars),
                        vars.iter().map(|x| &x.0).collect::<Vec<_>>()
                    )));
                }
                for ((name, var), sv) in vars.iter().zip(&rep.vars) {
                    if var.dims() != sv.dims.as_slice() {
                        return Err(bad(format!(
                            "{w} replica {i} variable `{name}`: shape {:?} in the checkpoint, \
                             {:?} here",
                            sv.dims,
                            var.dims()
                        )));
                    }
                }
                if matches!(opt, AnyOptimizer::AdamW(_)) != rep.adamw.is_some() {
                    return Err(bad(format!(
                        "{w} replica {i}: the checkpoint's optimizer state is not this \
                         optimizer's"
                    )));
                }
            }
        }
        Ok(p)
    }

    /// Loads [`Job::checkpoint_bytes`]'s bytes: checks everything first (magic, version, size,
    /// CRC, the configuration field by field, the data order, every replica's variables and
    /// shapes, the optimizer), then restores the data order, every run's counters, records,
    /// sharing (residuals, encoder and threshold state), parameters and optimizer state. Not
    /// collective. The next round continues bit-identically.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] saying what is wrong (damaged, truncated, another model);
    /// [`Error::CheckpointMismatch`] naming the first configuration field that differs.
    /// Nothing changes on these errors.
    pub fn restore_checkpoint_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let p = self.check(bytes)?;
        // The sharings check their bytes completely before changing anything; the job's own
        // checks above cover everything else, so a failure below is a candle error.
        for (run, saved) in self.runs.iter_mut().zip(&p.runs) {
            run.sharing.restore_bytes(&saved.sharing)?;
        }
        for (run, saved) in self.runs.iter_mut().zip(p.runs) {
            let varmaps: Vec<VarMap> = run.sharing.varmaps().cloned().collect();
            for ((vm, rep), opt) in varmaps.iter().zip(saved.replicas).zip(&mut run.optimizers) {
                let vars = named_vars(vm)?;
                for ((_, var), sv) in vars.iter().zip(&rep.vars) {
                    let t = Tensor::from_slice(&sv.values, sv.dims.as_slice(), var.device())?;
                    var.set(&t)?;
                }
                if let (AnyOptimizer::AdamW(a), Some((steps, moments))) = (opt, rep.adamw) {
                    for ((_, var), (sv, (m, v))) in vars.iter().zip(rep.vars.iter().zip(moments)) {
                        let (vm_, vv) = a
                            .moments(var.as_tensor())
                            .ok_or_else(|| bad(format!("`{}` has no AdamW state", sv.name)))?;
                        vm_.set(&Tensor::from_vec(m, sv.dims.as_slice(), var.device())?)?;
                        vv.set(&Tensor::from_vec(v, sv.dims.as_slice(), var.device())?)?;
                    }
                    a.set_step_count(steps as usize);
                }
            }
            run.state = saved.state;
            run.records = saved.records;
        }
        self.state = p.state;
        Ok(())
    }

    /// Writes this rank's checkpoint into `dir` (created if missing) atomically, waits until
    /// every rank has written its own, then deletes this rank's older ones. Collective: every
    /// rank calls it after the same round. See the [module docs](self).
    ///
    /// # Errors
    /// As [`Job::checkpoint_bytes`]; [`Error::Io`]; network errors.
    pub fn save_checkpoint(&mut self, dir: impl AsRef<Path>) -> Result<Saved> {
        let t = Instant::now();
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let (rank, _) = self.rank_and_ranks();
        let round = self.rounds_done();
        let bytes = self.checkpoint_bytes()?;
        let path = dir.join(file_name(rank, round));
        write_atomic(&path, &bytes)?;
        // Every rank holds `round` before any deletes an older one.
        if let Some(run) = self.runs.first_mut() {
            run.sharing.network.sum_f64(&mut [0.0])?;
        }
        let mut removed = false;
        for (r, old) in list(dir, rank)? {
            if r != round {
                fs::remove_file(&old).map_err(io("remove", &old))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        Ok(Saved {
            path,
            round,
            bytes: bytes.len() as u64,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Resumes from the newest checkpoint in `dir` that every rank holds valid: each rank finds
    /// its newest file that passes every check, the ranks agree on the oldest of those rounds
    /// (a kill between two ranks' writes leaves some ranks one checkpoint ahead, and they
    /// still hold the previous one), and each loads its file for that round. Collective.
    ///
    /// # Errors
    /// [`Error::NoCheckpoint`] when a rank has no valid checkpoint or lacks the agreed round
    /// (every rank returns it); as [`Job::restore_checkpoint_bytes`] when this rank's newest
    /// file is refused and no older one is valid.
    pub fn resume(&mut self, dir: impl AsRef<Path>) -> Result<Resumed> {
        let t = Instant::now();
        let dir = dir.as_ref();
        let (rank, ranks) = self.rank_and_ranks();
        let files = list(dir, rank)?;
        let mut newest = u64::MAX;
        let mut first_error = None;
        for (round, path) in &files {
            let bytes = fs::read(path).map_err(io("read", path))?;
            match self.check(&bytes) {
                Ok(_) => {
                    newest = *round;
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert((path.clone(), e));
                }
            }
        }
        let mut all = vec![0u8; 8 * ranks];
        match self.runs.first_mut() {
            Some(run) => run
                .sharing
                .network
                .all_gather(&newest.to_le_bytes(), &mut all)?,
            None => all.copy_from_slice(&newest.to_le_bytes()),
        }
        let rounds: Vec<u64> = all
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if newest == u64::MAX {
            return Err(match first_error {
                // A single refused file: say what is wrong with it.
                Some((path, e)) if files.len() == 1 => match e {
                    Error::Checkpoint(m) => bad(format!("{}: {m}", path.display())),
                    other => other,
                },
                Some((path, e)) => Error::NoCheckpoint {
                    dir: dir.to_path_buf(),
                    why: format!(
                        "rank {rank}: none of its {} files is valid; the newest, {}: {e}",
                        files.len(),
                        path.display()
                    ),
                },
                None => Error::NoCheckpoint {
                    dir: dir.to_path_buf(),
                    why: format!("rank {rank} has no file `rank{rank}-round<N>{SUFFIX}`"),
                },
            });
        }
        if let Some(r) = rounds.iter().position(|&x| x == u64::MAX) {
            return Err(Error::NoCheckpoint {
                dir: dir.to_path_buf(),
                why: format!("rank {r} has no valid checkpoint"),
            });
        }
        let round = rounds.iter().copied().min().unwrap_or(newest);
        let path = dir.join(file_name(rank, round));
        let loaded = match fs::read(&path) {
            Ok(bytes) => self
                .restore_checkpoint_bytes(&bytes)
                .map(|()| bytes.len() as u64)
                .map_err(|e| match e {
                    Error::Checkpoint(m) => bad(format!("{}: {m}", path.display())),
                    other => other,
                }),
            Err(_) => Err(Error::NoCheckpoint {
                dir: dir.to_path_buf(),
                why: format!("rank {rank} lacks the round {round} that every rank holds"),
            }),
        };
        // Every rank learns whether every other loaded its file, so none trains alone.
        let mut ok = vec![0u8; ranks];
        if let Some(run) = self.runs.first_mut() {
            run.sharing
                .network
                .all_gather(&[u8::from(loaded.is_ok())], &mut ok)?;
        }
        let bytes = loaded?;
        if let Some(r) = ok.iter().position(|&x| x == 0)
            && ranks > 1
        {
            return Err(Error::NoCheckpoint {
                dir: dir.to_path_buf(),
                why: format!("rank {r} could not load its checkpoint of round {round}"),
            });
        }
        Ok(Resumed {
            path,
            round,
            bytes,
            seconds: t.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse_back() {
        assert_eq!(file_name(3, 42), "rank3-round000000000042.gcjob");
        assert_eq!(parse_name(&file_name(3, 42), 3), Some(42));
        assert_eq!(parse_name(&file_name(3, 42), 1), None);
        assert_eq!(parse_name("rank3-round000000000042.gcjob.tmp", 3), None);
        assert_eq!(parse_name("rank3-round.gcjob", 3), None);
        assert_eq!(parse_name("rank3-round+1.gcjob", 3), None);
    }
}

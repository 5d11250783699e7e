//! The [`Cuda`] backend: device buffers, kernel cache, and the [`Backend`] implementation.

use crate::error::CudaError;
use crate::kernels::{self, BLOCK, Module, SCAN_THREADS, TILE};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use gradcast_core::CodecError;
use gradcast_core::backend::{ClipStats, VectorStats, check_range, check_same_len, slices};
use gradcast_core::codec::{self, EncodeParams, EncodeSummary, Plan};
use gradcast_core::wire::{Encoding, HEADER_LEN, MessageView};
use gradcast_core::{Backend, Error};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// A device-resident f32 vector of the [`Cuda`] backend.
///
/// The device allocation holds at least one element (CUDA cannot allocate zero bytes), so
/// the logical length is kept beside it. A buffer belongs to the [`Cuda`] backend that
/// allocated it (its device and stream); use it only with that backend.
#[derive(Debug)]
pub struct CudaBuffer {
    /// The allocation; `data.len() >= max(len, 1)`.
    data: CudaSlice<f32>,
    /// The number of elements.
    len: usize,
}

impl CudaBuffer {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying cudarc slice (at least one element long, even when empty).
    pub fn as_slice(&self) -> &CudaSlice<f32> {
        &self.data
    }
}

/// Slots of the small u64 scratch array.
const SLOT_FIRST_BAD: usize = 0;
const SLOT_TOTAL: usize = 1;
const SLOT_HEAD: usize = 2;
const SLOT_CLIP: usize = 3;
const SLOTS: usize = 4;
/// "No non-finite value seen" (`GC_NO_INDEX`).
const NO_INDEX: u64 = u64::MAX;
/// Most blocks a grid-stride kernel is launched with.
const MAX_GRID: usize = 65_535;

/// Grow-only device scratch, reused across calls (guarded by a mutex: one encode at a time
/// per backend instance).
#[derive(Debug)]
struct Scratch {
    small: CudaSlice<u64>,
    tile_counts: Option<CudaSlice<u32>>,
    offsets: Option<CudaSlice<u32>>,
    payload: Option<CudaSlice<u32>>,
    message: Option<CudaSlice<u8>>,
}

/// A compiled and loaded kernel file.
#[derive(Debug)]
struct Loaded {
    _module: Arc<CudaModule>,
    functions: Vec<(&'static str, CudaFunction)>,
}

/// The CUDA backend: one device, one stream, kernels compiled with NVRTC on first use.
///
/// Residuals, updates and parameters stay on the device; only messages (and a few counters)
/// cross to the host. Results are bit-identical to the core's reference codec: the kernels are
/// compiled without fast math or FMA contraction, selection follows [`Plan`], and statistics
/// whose value depends on summation order ([`Backend::stats`], the mass of [`Backend::clip`])
/// are computed on the host, after a download, with [`slices`].
///
/// `Cuda` is `Send + Sync`. Every operation is queued on the backend's own stream, so
/// operations from several threads are serialised in the order they are queued; encodes and
/// counts also take a lock on the device scratch buffers. Methods that return data to the
/// host (`encode`, `count`, `download`, `stats`, `clip`) synchronise; the others are
/// asynchronous, and [`Backend::sync`] reports their errors.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    /// Compute capability `(major, minor)`.
    cc: (i32, i32),
    modules: [OnceLock<Loaded>; 4],
    scratch: Mutex<Scratch>,
}

impl core::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cuda")
            .field("name", &self.name)
            .field("ordinal", &self.ctx.ordinal())
            .field("compute_capability", &self.cc)
            .finish_non_exhaustive()
    }
}

/// Whether the CUDA driver library can be loaded (a `dlopen` probe; never panics).
pub fn driver_available() -> bool {
    // SAFETY: the probe only tries to dlopen the library's candidate names; it calls no
    // function of the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn grid_for(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn tiles_for(n: usize, op: &'static str) -> Result<u32, CudaError> {
    u32::try_from(n.div_ceil(TILE)).map_err(|_| CudaError::TooLong { op, len: n })
}

fn tile_grid(tiles: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (tiles.max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn single_block(threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Makes `slot` hold at least `len` elements (never fewer than one).
fn ensure<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    slot: &mut Option<CudaSlice<T>>,
    len: usize,
) -> Result<(), CudaError> {
    let len = len.max(1);
    if slot.as_ref().is_none_or(|s| s.len() < len) {
        *slot = None;
        *slot = Some(
            stream
                .alloc_zeros::<T>(len)
                .map_err(CudaError::driver("alloc scratch"))?,
        );
    }
    Ok(())
}

/// The error for a scratch buffer or view that `ensure` / the length checks guarantee: never
/// returned unless this file has a bug, and then an error rather than a panic.
#[cold]
fn unreachable_scratch() -> CudaError {
    CudaError::WrongResult {
        what: "internal: a scratch buffer was not allocated or is too short".into(),
    }
}

impl Cuda {
    /// Opens device `ordinal`. Never panics: without a driver library this is
    /// [`CudaError::NoDriver`], without NVRTC [`CudaError::NoNvrtc`], and without that device
    /// [`CudaError::NoDevice`].
    ///
    /// # Errors
    /// As above, and [`CudaError::Driver`] when creating the context or stream fails.
    pub fn new(ordinal: usize) -> Result<Cuda, CudaError> {
        if !driver_available() {
            return Err(CudaError::NoDriver {
                reason: "libcuda.so cannot be loaded (no NVIDIA driver on this machine)".into(),
            });
        }
        if !kernels::nvrtc_available() {
            return Err(CudaError::NoNvrtc {
                reason: "libnvrtc.so cannot be loaded".into(),
            });
        }
        // cudarc panics when a driver function is missing from the loaded library (a driver
        // older than the bindings): catch that and report it as an error.
        match catch_unwind(AssertUnwindSafe(|| Self::open(ordinal))) {
            Ok(r) => r,
            Err(p) => Err(CudaError::NoDriver {
                reason: kernels::panic_text(&p),
            }),
        }
    }

    fn open(ordinal: usize) -> Result<Cuda, CudaError> {
        let no_device = |e: cudarc::driver::DriverError| CudaError::NoDevice {
            ordinal,
            reason: format!("{e}"),
        };
        let count = CudaContext::device_count().map_err(no_device)?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice {
                ordinal,
                reason: format!("the driver reports {count} device(s)"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(no_device)?;
        let name = ctx.name().map_err(CudaError::driver("cuDeviceGetName"))?;
        let cc = ctx
            .compute_capability()
            .map_err(CudaError::driver("compute capability"))?;
        let stream = ctx.new_stream().map_err(CudaError::driver("new stream"))?;
        let small = stream
            .alloc_zeros::<u64>(SLOTS)
            .map_err(CudaError::driver("alloc"))?;
        stream.synchronize().map_err(CudaError::driver("sync"))?;
        Ok(Cuda {
            ctx,
            stream,
            name: format!("cuda:{name}"),
            cc,
            modules: Default::default(),
            scratch: Mutex::new(Scratch {
                small,
                tile_counts: None,
                offsets: None,
                payload: None,
                message: None,
            }),
        })
    }

    /// The device's compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The stream every operation of this backend runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Compiles and loads every kernel file now rather than on first use.
    ///
    /// # Errors
    /// [`CudaError::Compile`], [`CudaError::Driver`].
    pub fn warm_up(&self) -> Result<(), CudaError> {
        for m in Module::ALL {
            self.loaded(m)?;
        }
        Ok(())
    }

    /// Copies `src` into `dst` on the device (lengths must match): the yardstick of the
    /// encode benchmark.
    ///
    /// # Errors
    /// [`CodecError::TargetSizeMismatch`] when lengths differ; device errors.
    pub fn copy(&self, src: &CudaBuffer, dst: &mut CudaBuffer) -> Result<(), CudaError> {
        check_same_len(dst.len, src.len)?;
        if src.len == 0 {
            return Ok(());
        }
        self.stream
            .memcpy_dtod(
                &src.data.slice(0..src.len),
                &mut dst.data.slice_mut(0..src.len),
            )
            .map_err(CudaError::driver("memcpy dtod"))
    }

    fn loaded(&self, m: Module) -> Result<&Loaded, CudaError> {
        let cell = &self.modules[m as usize];
        if let Some(l) = cell.get() {
            return Ok(l);
        }
        let l = self.load(m)?;
        Ok(cell.get_or_init(|| l))
    }

    /// Loads a kernel file compiled for this device ([`kernels::device_image`]: compiled once
    /// per process and architecture) and looks up its entry points.
    fn load(&self, m: Module) -> Result<Loaded, CudaError> {
        let file = m.file();
        let ptx = match kernels::device_image(file, self.cc)? {
            kernels::Image::Cubin(bin) => Ptx::from_binary(bin),
            kernels::Image::Ptx(text) => Ptx::from_src(text),
        };
        let module = self
            .ctx
            .load_module(ptx)
            .map_err(CudaError::driver("cuModuleLoadData"))?;
        let mut functions = Vec::with_capacity(file.entries.len());
        for &entry in file.entries {
            let f = module
                .load_function(entry)
                .map_err(CudaError::driver("cuModuleGetFunction"))?;
            functions.push((entry, f));
        }
        Ok(Loaded {
            _module: module,
            functions,
        })
    }

    fn function(&self, m: Module, entry: &'static str) -> Result<&CudaFunction, CudaError> {
        let l = self.loaded(m)?;
        l.functions
            .iter()
            .find(|(name, _)| *name == entry)
            .map(|(_, f)| f)
            .ok_or(CudaError::Compile {
                kernel: m.file().name,
                status: format!("entry point {entry} is not in the kernel table"),
                options: Vec::new(),
                log: String::new(),
            })
    }

    fn scratch(&self) -> MutexGuard<'_, Scratch> {
        // A poisoned lock only means another call panicked mid-way; the scratch holds no
        // invariant beyond its allocations, which stay valid.
        self.scratch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_stream(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(CudaError::driver("stream synchronize"))
    }

    fn read_slots(&self, s: &Scratch) -> Result<[u64; SLOTS], CudaError> {
        let mut host = [0u64; SLOTS];
        self.stream
            .memcpy_dtoh(&s.small, &mut host)
            .map_err(CudaError::driver("memcpy dtoh"))?;
        self.sync_stream()?;
        Ok(host)
    }

    fn reset_slots(&self, s: &mut Scratch) -> Result<(), CudaError> {
        let init = [NO_INDEX, 0, 0, 0];
        self.stream
            .memcpy_htod(&init, &mut s.small)
            .map_err(CudaError::driver("memcpy htod"))
    }

    /// Reads one element (for the bits of a non-finite value).
    fn read_element(&self, buf: &CudaBuffer, i: usize) -> Result<f32, CudaError> {
        let mut v = [0f32; 1];
        self.stream
            .memcpy_dtoh(&buf.data.slice(i..i + 1), &mut v)
            .map_err(CudaError::driver("memcpy dtoh"))?;
        self.sync_stream()?;
        Ok(v[0])
    }

    /// Counts the candidates of `range` per tile, scans the tile counts into `s.offsets`, and
    /// returns the total; reports the first non-finite value (index relative to the buffer).
    fn count_and_scan(
        &self,
        buf: &CudaBuffer,
        range: Range<usize>,
        tau: f32,
        s: &mut Scratch,
    ) -> Result<u64, CudaError> {
        let n = range.len();
        let tiles = tiles_for(n, "count")?;
        ensure(&self.stream, &mut s.tile_counts, tiles as usize)?;
        ensure(&self.stream, &mut s.offsets, tiles as usize)?;
        self.reset_slots(s)?;
        let count_tiles = self.function(Module::Count, "gc_count_tiles")?;
        let scan = self.function(Module::Count, "gc_scan_tiles")?;
        let x = buf.data.slice(range.clone());
        let n64 = n as u64;
        let tile_counts = s.tile_counts.as_mut().ok_or_else(unreachable_scratch)?;
        let offsets = s.offsets.as_mut().ok_or_else(unreachable_scratch)?;
        {
            let mut first_bad = s.small.slice_mut(SLOT_FIRST_BAD..SLOT_FIRST_BAD + 1);
            let mut b = self.stream.launch_builder(count_tiles);
            b.arg(&x)
                .arg(&n64)
                .arg(&tau)
                .arg(&mut *tile_counts)
                .arg(&mut first_bad);
            // SAFETY: gc_count_tiles(const float* x, u64 n, float tau, u32* tile_counts,
            // u64* first_bad): x views exactly n elements; one block per tile (tiles =
            // ceil(n / TILE)) and tile_counts holds >= tiles entries; first_bad is one u64
            // slot set to NO_INDEX by reset_slots.
            unsafe { b.launch(tile_grid(tiles)) }.map_err(CudaError::driver("gc_count_tiles"))?;
        }
        {
            let mut total = s.small.slice_mut(SLOT_TOTAL..SLOT_TOTAL + 1);
            let mut b = self.stream.launch_builder(scan);
            b.arg(&*tile_counts)
                .arg(&tiles)
                .arg(&mut *offsets)
                .arg(&mut total);
            // SAFETY: gc_scan_tiles(const u32* tile_counts, u32 tiles, u32* offsets,
            // u64* total): tile_counts and offsets hold >= tiles entries, total one u64;
            // launched as a single block of SCAN_THREADS threads as the kernel requires.
            unsafe { b.launch(single_block(SCAN_THREADS)) }
                .map_err(CudaError::driver("gc_scan_tiles"))?;
        }
        let slots = self.read_slots(s)?;
        if slots[SLOT_FIRST_BAD] != NO_INDEX {
            let index = range.start + slots[SLOT_FIRST_BAD] as usize;
            let v = self.read_element(buf, index)?;
            return Err(Error::Codec(CodecError::NonFinite {
                index,
                bits: v.to_bits(),
            })
            .into());
        }
        Ok(slots[SLOT_TOTAL])
    }

    /// Candidates of the segment below relative index `start` (uses `s.offsets` from
    /// [`Cuda::count_and_scan`] on the same segment).
    fn head_count(
        &self,
        buf: &CudaBuffer,
        range: Range<usize>,
        start: usize,
        tau: f32,
        s: &mut Scratch,
    ) -> Result<u64, CudaError> {
        let f = self.function(Module::Count, "gc_head_count")?;
        let x = buf.data.slice(range);
        let start64 = start as u64;
        let offsets = s.offsets.as_ref().ok_or_else(unreachable_scratch)?;
        {
            let mut out = s.small.slice_mut(SLOT_HEAD..SLOT_HEAD + 1);
            let mut b = self.stream.launch_builder(f);
            b.arg(&x).arg(&start64).arg(&tau).arg(offsets).arg(&mut out);
            // SAFETY: gc_head_count(const float* x, u64 start, float tau, const u32* offsets,
            // u64* out): x views the segment and start < its length, offsets holds the scan of
            // its tiles (so offsets[start / TILE] exists), out is one u64 slot; launched as a
            // single block of BLOCK threads as the kernel requires.
            unsafe { b.launch(single_block(BLOCK)) }.map_err(CudaError::driver("gc_head_count"))?;
        }
        Ok(self.read_slots(s)?[SLOT_HEAD])
    }

    fn launch_elementwise<'a>(
        &'a self,
        entry: &'static str,
        n: usize,
        build: impl FnOnce(&mut cudarc::driver::LaunchArgs<'a>),
    ) -> Result<(), CudaError> {
        let f = self.function(Module::Vector, entry)?;
        let mut b = self.stream.launch_builder(f);
        build(&mut b);
        // SAFETY: every caller pushes the arguments of the named vector.cu kernel in its
        // declared order, with device views of exactly n elements and n as a u64 (see each
        // call site); the kernels are grid-stride loops, correct for any grid size.
        unsafe { b.launch(grid_for(n)) }.map_err(CudaError::driver(entry))?;
        Ok(())
    }
}

impl Backend for Cuda {
    type Buffer = CudaBuffer;
    type Error = CudaError;

    fn name(&self) -> &str {
        &self.name
    }

    fn alloc(&self, len: usize) -> Result<CudaBuffer, CudaError> {
        let data = self
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(CudaError::driver("alloc"))?;
        Ok(CudaBuffer { data, len })
    }

    fn len(&self, buf: &CudaBuffer) -> usize {
        buf.len
    }

    fn upload(&self, src: &[f32], dst: &mut CudaBuffer) -> Result<(), CudaError> {
        check_same_len(dst.len, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_htod(src, &mut dst.data.slice_mut(0..src.len()))
            .map_err(CudaError::driver("memcpy htod"))?;
        self.sync_stream()
    }

    fn download(&self, src: &CudaBuffer, dst: &mut [f32]) -> Result<(), CudaError> {
        check_same_len(dst.len(), src.len)?;
        if dst.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_dtoh(&src.data.slice(0..src.len), dst)
            .map_err(CudaError::driver("memcpy dtoh"))?;
        self.sync_stream()
    }

    fn fill(&self, buf: &mut CudaBuffer, value: f32) -> Result<(), CudaError> {
        let n = buf.len;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let mut x = buf.data.slice_mut(0..n);
        // gc_fill(float* x, u64 n, float value)
        self.launch_elementwise("gc_fill", n, |b| {
            b.arg(&mut x).arg(&n64).arg(&value);
        })
    }

    fn count(&self, x: &CudaBuffer, range: Range<usize>, tau: f32) -> Result<u64, CudaError> {
        check_range(&range, x.len)?;
        codec::check_tau(tau)?;
        if range.is_empty() {
            return Ok(0);
        }
        let mut s = self.scratch();
        self.count_and_scan(x, range, tau, &mut s)
    }

    fn encode(
        &self,
        residual: &mut CudaBuffer,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, CudaError> {
        codec::check_tau(params.tau)?;
        let range = codec::segment_range(params, residual.len)?;
        let n = range.len();
        let tau = params.tau;
        let mut guard = self.scratch();
        let s: &mut Scratch = &mut guard;
        let candidates = self.count_and_scan(residual, range.clone(), tau, s)? as usize;

        // The plan (cap, cyclic start, encoding, size) is the reference's own arithmetic; the
        // tail count it may ask for is the segment's total minus the head count.
        let mut head: Result<usize, CudaError> = Ok(0);
        let plan = Plan::new(params, n, candidates, out.len(), |start| {
            head = self
                .head_count(residual, range.clone(), start, tau, s)
                .map(|h| h as usize);
            candidates - head.as_ref().map_or(0, |&h| h.min(candidates))
        })?;
        let c_head = head?;

        let payload_len = plan.bytes - HEADER_LEN;
        let n32 = n as u32; // n <= MAX_ELEMENTS < 2^31 (segment_range)
        let (take_head, take_tail) = (plan.take_head as u32, plan.take_tail as u32);
        let c_head32 = c_head as u32;
        match plan.encoding {
            Encoding::Dense => {
                let view = residual.data.slice(range.clone());
                // SAFETY: reinterpreting n f32 as 4 n bytes: same allocation, u8 has no
                // alignment or validity requirement.
                let bytes =
                    unsafe { view.transmute::<u8>(4 * n) }.ok_or_else(unreachable_scratch)?;
                self.stream
                    .memcpy_dtoh(&bytes, &mut out[HEADER_LEN..HEADER_LEN + payload_len])
                    .map_err(CudaError::driver("memcpy dtoh"))?;
                self.sync_stream()?;
                // Every value is finite (checked above), so `x - x` is +0.0 for all of them.
                let n64 = n as u64;
                let zero = 0.0f32;
                let mut x = residual.data.slice_mut(range.clone());
                // gc_fill(float* x, u64 n, float value)
                self.launch_elementwise("gc_fill", n, |b| {
                    b.arg(&mut x).arg(&n64).arg(&zero);
                })?;
            }
            Encoding::Sparse | Encoding::Bitmap if plan.entries == 0 => {
                out[HEADER_LEN..HEADER_LEN + payload_len].fill(0);
            }
            Encoding::Sparse => {
                let tiles = tiles_for(n, "encode")?;
                ensure(&self.stream, &mut s.payload, plan.entries)?;
                let f = self.function(Module::Encode, "gc_encode_sparse")?;
                let offsets = s.offsets.as_ref().ok_or_else(unreachable_scratch)?;
                let payload = s.payload.as_mut().ok_or_else(unreachable_scratch)?;
                {
                    let mut x = residual.data.slice_mut(range.clone());
                    let mut b = self.stream.launch_builder(f);
                    b.arg(&mut x).arg(&n32).arg(&tau).arg(offsets);
                    b.arg(&take_head)
                        .arg(&c_head32)
                        .arg(&take_tail)
                        .arg(&mut *payload);
                    // SAFETY: gc_encode_sparse(float* x, u32 n, float tau, const u32* offsets,
                    // u32 take_head, u32 c_head, u32 take_tail, int* entries): x views the n
                    // elements of the segment; offsets is the scan of its `tiles` tile counts
                    // (count_and_scan on this very segment, nothing changed it since); one
                    // block per tile; the selection writes slots < take_head + take_tail =
                    // plan.entries and the i32 payload holds >= plan.entries entries.
                    unsafe { b.launch(tile_grid(tiles)) }
                        .map_err(CudaError::driver("gc_encode_sparse"))?;
                }
                // SAFETY: the u32 payload buffer reinterpreted as its first 4 K bytes.
                let bytes = unsafe { payload.transmute::<u8>(payload_len) }
                    .ok_or_else(unreachable_scratch)?;
                self.stream
                    .memcpy_dtoh(&bytes, &mut out[HEADER_LEN..HEADER_LEN + payload_len])
                    .map_err(CudaError::driver("memcpy dtoh"))?;
                self.sync_stream()?;
            }
            Encoding::Bitmap => {
                let tiles = tiles_for(n, "encode")?;
                let nwords = n.div_ceil(16);
                let nwords32 = nwords as u32;
                ensure(&self.stream, &mut s.payload, nwords)?;
                let f = self.function(Module::Encode, "gc_encode_bitmap")?;
                let offsets = s.offsets.as_ref().ok_or_else(unreachable_scratch)?;
                let payload = s.payload.as_mut().ok_or_else(unreachable_scratch)?;
                {
                    let mut x = residual.data.slice_mut(range.clone());
                    let mut b = self.stream.launch_builder(f);
                    b.arg(&mut x).arg(&n32).arg(&tau).arg(offsets);
                    b.arg(&take_head).arg(&c_head32).arg(&take_tail);
                    b.arg(&mut *payload).arg(&nwords32);
                    // SAFETY: gc_encode_bitmap(float* x, u32 n, float tau, const u32* offsets,
                    // u32 take_head, u32 c_head, u32 take_tail, u32* words, u32 nwords): x
                    // views the n elements of the segment; offsets is the scan of its tiles;
                    // one block per tile; words holds >= nwords = ceil(n / 16) u32 and the
                    // kernel writes only indices < nwords.
                    unsafe { b.launch(tile_grid(tiles)) }
                        .map_err(CudaError::driver("gc_encode_bitmap"))?;
                }
                // SAFETY: the u32 words reinterpreted as their first ceil(n / 4) bytes
                // (little-endian, as the wire format lays the bitmap out).
                let bytes = unsafe { payload.transmute::<u8>(payload_len) }
                    .ok_or_else(unreachable_scratch)?;
                self.stream
                    .memcpy_dtoh(&bytes, &mut out[HEADER_LEN..HEADER_LEN + payload_len])
                    .map_err(CudaError::driver("memcpy dtoh"))?;
                self.sync_stream()?;
            }
        }
        let header = plan.header(params, n);
        let bytes = gradcast_core::wire::seal(out, header);
        Ok(EncodeSummary {
            encoding: plan.encoding,
            entries: plan.entries as u32,
            candidates: plan.candidates as u64,
            bytes,
            truncated: header.truncated(),
        })
    }

    fn decode_add(&self, msg: &MessageView<'_>, target: &mut CudaBuffer) -> Result<(), CudaError> {
        let range = msg.target_range(target.len)?;
        let n = range.len();
        let n32 = msg.n();
        let count = msg.count();
        let tau = msg.tau();
        if count == 0 {
            return Ok(());
        }
        let payload = msg.payload();
        let mut guard = self.scratch();
        let s: &mut Scratch = &mut guard;
        ensure(&self.stream, &mut s.message, payload.len())?;
        let dev = s.message.as_mut().ok_or_else(unreachable_scratch)?;
        self.stream
            .memcpy_htod(payload, &mut dev.slice_mut(0..payload.len()))
            .map_err(CudaError::driver("memcpy htod"))?;
        let mut t = target.data.slice_mut(range);
        let dev = &*dev;
        match msg.encoding() {
            Encoding::Sparse => {
                let f = self.function(Module::Decode, "gc_decode_sparse")?;
                let mut b = self.stream.launch_builder(f);
                b.arg(&mut t).arg(&n32).arg(dev).arg(&count).arg(&tau);
                // SAFETY: gc_decode_sparse(float* t, u32 n, const int* entries, u32 count,
                // float tau): t views the n target elements; dev holds the 4 * count payload
                // bytes (validated: entries in 1..=n, strictly ascending, so no two threads
                // write one element); the kernel is a grid-stride loop over count.
                unsafe { b.launch(grid_for(count as usize)) }
                    .map_err(CudaError::driver("gc_decode_sparse"))?;
            }
            Encoding::Bitmap => {
                let f = self.function(Module::Decode, "gc_decode_bitmap")?;
                let mut b = self.stream.launch_builder(f);
                b.arg(&mut t).arg(&n32).arg(dev).arg(&tau);
                // SAFETY: gc_decode_bitmap(float* t, u32 n, const u8* bits, float tau): t
                // views the n target elements, dev holds the ceil(n / 4) payload bytes; a
                // grid-stride loop over n.
                unsafe { b.launch(grid_for(n)) }.map_err(CudaError::driver("gc_decode_bitmap"))?;
            }
            Encoding::Dense => {
                let f = self.function(Module::Decode, "gc_decode_dense")?;
                let mut b = self.stream.launch_builder(f);
                b.arg(&mut t).arg(&n32).arg(dev);
                // SAFETY: gc_decode_dense(float* t, u32 n, const float* values): t views the n
                // target elements, dev holds the 4 n payload bytes (a fresh allocation, so
                // aligned for f32); a grid-stride loop over n.
                unsafe { b.launch(grid_for(n)) }.map_err(CudaError::driver("gc_decode_dense"))?;
            }
        }
        Ok(())
    }

    fn add_assign(&self, dst: &mut CudaBuffer, src: &CudaBuffer) -> Result<(), CudaError> {
        check_same_len(dst.len, src.len)?;
        let n = dst.len;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let mut d = dst.data.slice_mut(0..n);
        let s = src.data.slice(0..n);
        // gc_add_assign(float* dst, const float* src, u64 n)
        self.launch_elementwise("gc_add_assign", n, |b| {
            b.arg(&mut d).arg(&s).arg(&n64);
        })
    }

    fn sub_scaled(
        &self,
        params: &mut CudaBuffer,
        update: &CudaBuffer,
        scale: f32,
    ) -> Result<(), CudaError> {
        check_same_len(params.len, update.len)?;
        let n = params.len;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let mut p = params.data.slice_mut(0..n);
        let u = update.data.slice(0..n);
        // gc_sub_scaled(float* params, const float* update, u64 n, float scale)
        self.launch_elementwise("gc_sub_scaled", n, |b| {
            b.arg(&mut p).arg(&u).arg(&n64).arg(&scale);
        })
    }

    fn clip(
        &self,
        buf: &mut CudaBuffer,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, CudaError> {
        check_range(&range, buf.len)?;
        let n = range.len();
        if n == 0 {
            return Ok(ClipStats::default());
        }
        let n64 = n as u64;
        let mut s = self.scratch();
        self.reset_slots(&mut s)?;
        {
            let x = buf.data.slice(range.clone());
            let mut c = s.small.slice_mut(SLOT_CLIP..SLOT_CLIP + 1);
            // gc_clip_count(const float* x, u64 n, float limit, u64* count)
            self.launch_elementwise("gc_clip_count", n, |b| {
                b.arg(&x).arg(&n64).arg(&limit).arg(&mut c);
            })?;
        }
        if self.read_slots(&s)?[SLOT_CLIP] == 0 {
            return Ok(ClipStats::default());
        }
        // The mass is an f64 sum in index order: computed on the host from the values before
        // clipping, so that it is bit-identical to the reference.
        let mut host = vec![0f32; n];
        self.stream
            .memcpy_dtoh(&buf.data.slice(range.clone()), &mut host[..])
            .map_err(CudaError::driver("memcpy dtoh"))?;
        self.sync_stream()?;
        let stats = slices::clip(&mut host, limit);
        let mut x = buf.data.slice_mut(range);
        // gc_clip(float* x, u64 n, float limit)
        self.launch_elementwise("gc_clip", n, |b| {
            b.arg(&mut x).arg(&n64).arg(&limit);
        })?;
        Ok(stats)
    }

    fn stats(&self, buf: &CudaBuffer, range: Range<usize>) -> Result<VectorStats, CudaError> {
        check_range(&range, buf.len)?;
        if range.is_empty() {
            return Ok(VectorStats::default());
        }
        // The sum of squares is an f64 sum in index order: computed on the host after a
        // download, so that it is bit-identical to the reference.
        let mut host = vec![0f32; range.len()];
        self.stream
            .memcpy_dtoh(&buf.data.slice(range), &mut host[..])
            .map_err(CudaError::driver("memcpy dtoh"))?;
        self.sync_stream()?;
        Ok(slices::stats(&host))
    }

    fn sync(&self) -> Result<(), CudaError> {
        self.sync_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_backend_and_its_buffers_cross_threads() {
        assert_send_sync::<Cuda>();
        assert_send_sync::<CudaBuffer>();
    }

    #[test]
    fn launch_geometry_covers_every_element() {
        assert_eq!(tiles_for(1, "t").unwrap(), 1);
        assert_eq!(tiles_for(TILE, "t").unwrap(), 1);
        assert_eq!(tiles_for(TILE + 1, "t").unwrap(), 2);
        let g = grid_for(10 * BLOCK as usize + 1);
        assert_eq!(g.grid_dim.0, 11);
        assert_eq!(grid_for(usize::MAX / 2).grid_dim.0, MAX_GRID as u32);
        assert_eq!(grid_for(0).grid_dim.0, 1);
    }

    #[test]
    fn seal_writes_a_message_the_parser_accepts() {
        let mut params = EncodeParams::new(0.5);
        params.mode = codec::EncodingMode::Sparse;
        let plan = Plan::new(&params, 8, 2, 1024, |_| 0).unwrap();
        let mut out = vec![0u8; plan.bytes];
        out[HEADER_LEN..].copy_from_slice(&[1, 0, 0, 0, 0xF9, 0xFF, 0xFF, 0xFF]); // +1, -7
        let len = gradcast_core::wire::seal(&mut out, plan.header(&params, 8));
        let msg = MessageView::parse(&out[..len]).unwrap();
        assert_eq!(msg.sparse_entries().collect::<Vec<_>>(), vec![1, -7]);
    }
}

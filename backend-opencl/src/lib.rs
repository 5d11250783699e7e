#![doc = include_str!("../README.md")]
// A std-only crate (OpenCL needs the host OS): core/alloc paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod error;

pub mod bench;

pub use error::OpenClError;

use core::ops::Range;
use gradcast_core::backend::{ClipStats, VectorStats, check_range, check_same_len, slices};
use gradcast_core::codec::{
    self, EncodeParams, EncodeSummary, EncodingMode, Plan, cap_start, check_tau, passes,
};
use gradcast_core::wire::{self, Encoding, HEADER_LEN, MAX_ELEMENTS, MessageView};
use gradcast_core::{Backend, Error};
use ocl::enums::{DeviceInfo, DeviceInfoResult, KernelWorkGroupInfo, KernelWorkGroupInfoResult};
use ocl::{Buffer, Context, Device, DeviceType, Kernel, Platform, Program, Queue};
use std::ffi::CString;
use std::sync::{Mutex, MutexGuard};

/// The kernel sources (OpenCL C 1.2), compiled at run time once per [`OpenCl`] (= per
/// context).
pub const KERNELS_SRC: &str = include_str!("../kernels/gradcast.cl");

/// The compiler options every build uses: OpenCL C 1.2 and nothing that relaxes IEEE
/// arithmetic (no `-cl-fast-relaxed-math`, `-cl-mad-enable`, `-cl-denorms-are-zero`, ...).
/// The kernels use no float division or square root, so
/// `-cl-fp32-correctly-rounded-divide-sqrt` is not needed; contraction into fused
/// multiply-adds is switched off in the source with `#pragma OPENCL FP_CONTRACT OFF`.
/// The backend appends `-D GC_CONTIGUOUS=1` for CPU devices and `=0` for others (the memory
/// layout of the order-free loops; see the kernel source).
pub const BUILD_OPTIONS: &str = "-cl-std=CL1.2";

/// The entry points of [`KERNELS_SRC`]; a test checks that each one exists in the source.
pub const KERNEL_NAMES: &[&str] = &[
    "count_groups",
    "encode_select",
    "decode_sparse",
    "decode_bitmap",
    "decode_dense",
    "add_assign",
    "sub_scaled",
    "clip",
    "zero_range",
];

/// Elements per 32-bit bitmap word (`WORD` in the source); the smallest span of a work-item
/// in the group kernels.
const WORD: usize = 16;

/// The largest span (elements per work-item) of the group kernels.
const MAX_SPAN: usize = 1 << 16;

/// Work-groups per compute unit the launches aim at (enough to balance the load, few enough
/// that per-group overhead, large on CPU devices, stays small).
const GROUPS_PER_UNIT: usize = 16;

/// The work-group size the backend prefers when the device allows it.
const PREFERRED_WG: usize = 256;

/// Which kind of device to pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DeviceKind {
    /// Any device.
    #[default]
    Any,
    /// A GPU.
    Gpu,
    /// A CPU device (PoCL's `pthread` device, for instance).
    Cpu,
    /// An accelerator.
    Accelerator,
}

impl DeviceKind {
    fn matches(self, t: DeviceType) -> bool {
        match self {
            DeviceKind::Any => true,
            DeviceKind::Gpu => t.contains(DeviceType::GPU),
            DeviceKind::Cpu => t.contains(DeviceType::CPU),
            DeviceKind::Accelerator => t.contains(DeviceType::ACCELERATOR),
        }
    }
}

/// How the order-free kernel loops lay work-items over memory (see [`Limits::contiguous`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// Contiguous blocks on CPU devices, interleaved elsewhere.
    #[default]
    Auto,
    /// Each work-item takes a contiguous block (best on CPU devices).
    Contiguous,
    /// Neighbouring work-items take neighbouring elements (best on GPUs).
    Strided,
}

/// One OpenCL device as [`list_devices`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceDesc {
    /// Index in the flattened list over all platforms ([`OpenCl::with_index`]).
    pub index: usize,
    /// The platform's name.
    pub platform: String,
    /// The device's name.
    pub name: String,
}

/// Counts the installed OpenCL platforms with one `clGetPlatformIDs` call.
///
/// ocl's own `Platform::list` panics and `get_platform_ids` retries for 10 s when no platform
/// is installed; this probe answers in milliseconds, so callers (and tests) can fail or skip
/// at once.
///
/// # Errors
/// [`OpenClError::NoPlatform`] when the call fails or finds none.
pub fn probe_platforms() -> Result<u32, OpenClError> {
    let mut n: u32 = 0;
    // SAFETY: clGetPlatformIDs with num_entries = 0 and a null platform array only writes the
    // count into `n`, a valid, exclusively borrowed u32.
    let status = unsafe { ocl::core::ffi::clGetPlatformIDs(0, core::ptr::null_mut(), &mut n) };
    if status != 0 || n == 0 {
        return Err(OpenClError::NoPlatform { status });
    }
    Ok(n)
}

/// Every (platform, device) pair, in platform order then device order.
fn all_devices() -> Result<Vec<(Platform, Device)>, OpenClError> {
    probe_platforms()?;
    // The probe found platforms, so ocl's retry loop (taken only on "no platform") never runs.
    let ids = ocl::core::get_platform_ids().map_err(|e| OpenClError::Ocl {
        op: "listing platforms",
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for id in ids {
        let platform = Platform::new(id);
        // A platform without devices (or failing to list them) is skipped, not fatal.
        if let Ok(devices) = Device::list_all(platform) {
            out.extend(devices.into_iter().map(|d| (platform, d)));
        }
    }
    Ok(out)
}

/// Serialises device queries and context creation within the process: PoCL 3.1 initialises
/// its devices lazily on the first context, and a `clGetDeviceInfo` on another thread
/// meanwhile crashed (seen with the conformance suite's parallel tests). Construction is
/// rare, so one lock costs nothing.
fn construction_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lists the OpenCL devices of every platform.
///
/// # Errors
/// [`OpenClError::NoPlatform`] without a platform.
pub fn list_devices() -> Result<Vec<DeviceDesc>, OpenClError> {
    let _serial = construction_lock();
    Ok(all_devices()?
        .into_iter()
        .enumerate()
        .map(|(index, (p, d))| DeviceDesc {
            index,
            platform: p.name().unwrap_or_else(|_| "?".into()),
            name: d.name().unwrap_or_else(|_| "?".into()),
        })
        .collect())
}

/// Device limits the backend sizes its launches by (queried, never assumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `CL_DEVICE_MAX_WORK_GROUP_SIZE`.
    pub max_work_group: usize,
    /// `CL_DEVICE_LOCAL_MEM_SIZE` in bytes.
    pub local_mem: u64,
    /// `CL_DEVICE_MAX_COMPUTE_UNITS`.
    pub compute_units: usize,
    /// Whether the kernels give each work-item contiguous blocks (CPU devices) rather than
    /// interleaving neighbouring work-items (GPUs); built in as `-D GC_CONTIGUOUS`.
    pub contiguous: bool,
    /// The work-group size used: a power of two no larger than the device's and the
    /// kernels' limits (and 256), whose local scratch fits in local memory.
    pub work_group: usize,
}

/// The OpenCL backend: one device, one context, one in-order queue, one program.
///
/// Buffers ([`ClBuffer`]) belong to the instance that allocated them; passing one to another
/// instance is an error reported by the driver, never undefined behaviour on the host.
#[derive(Debug)]
pub struct OpenCl {
    // Fields drop in declaration order: buffers, program and queue before their context.
    scratch: Mutex<Scratch>,
    program: Program,
    queue: Queue,
    context: Context,
    device: Device,
    name: String,
    limits: Limits,
}

/// Grow-only device scratch buffers, reused across calls.
#[derive(Debug, Default)]
struct Scratch {
    counts: Option<Buffer<u32>>,
    bad: Option<Buffer<u32>>,
    item_counts: Option<Buffer<u32>>,
    offsets: Option<Buffer<u32>>,
    payload: Option<Buffer<u32>>,
}

/// A device-resident f32 vector of [`OpenCl`].
#[derive(Debug)]
pub struct ClBuffer {
    /// The device buffer: at least one element (OpenCL has no empty buffers), `len` used.
    buf: Buffer<f32>,
    /// The vector's length.
    len: usize,
}

impl ClBuffer {
    /// The underlying ocl buffer (its length may exceed [`ClBuffer::len`] by one for an
    /// empty vector).
    pub fn as_ocl(&self) -> &Buffer<f32> {
        &self.buf
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `u32` of a length already checked against [`MAX_ELEMENTS`].
fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Ensures a grow-only scratch buffer holds at least `len` elements.
fn ensure<'a>(
    slot: &'a mut Option<Buffer<u32>>,
    queue: &Queue,
    len: usize,
) -> Result<&'a Buffer<u32>, OpenClError> {
    let len = len.max(1);
    let big_enough = slot.as_ref().is_some_and(|b| b.len() >= len);
    if !big_enough {
        // Grow geometrically so that varying sizes do not reallocate every call.
        let cap = slot.as_ref().map_or(len, |b| len.max(b.len() * 2));
        let b = Buffer::<u32>::builder()
            .queue(queue.clone())
            .len(cap)
            .build()
            .map_err(OpenClError::ocl("allocating scratch"))?;
        *slot = Some(b);
    }
    slot.as_ref().ok_or(OpenClError::Ocl {
        op: "allocating scratch",
        message: "no buffer".into(),
    })
}

impl OpenCl {
    /// The first device of the first platform that has one. Fails at once (no retries) with
    /// [`OpenClError::NoPlatform`] when no OpenCL platform is installed.
    ///
    /// # Errors
    /// [`OpenClError::NoPlatform`], [`OpenClError::NoDevice`], [`OpenClError::Build`],
    /// [`OpenClError::Ocl`].
    pub fn first_device() -> Result<OpenCl, OpenClError> {
        OpenCl::first_of_kind(DeviceKind::Any)
    }

    /// The first device of the given kind.
    ///
    /// # Errors
    /// As [`OpenCl::first_device`].
    pub fn first_of_kind(kind: DeviceKind) -> Result<OpenCl, OpenClError> {
        let _serial = construction_lock();
        for (p, d) in all_devices()? {
            let t = match d.info(DeviceInfo::Type) {
                Ok(DeviceInfoResult::Type(t)) => t,
                _ => continue,
            };
            if kind.matches(t) {
                return OpenCl::new_locked(p, d, Layout::Auto);
            }
        }
        Err(OpenClError::NoDevice {
            wanted: format!("{kind:?}"),
        })
    }

    /// The device at `index` of [`list_devices`].
    ///
    /// # Errors
    /// As [`OpenCl::first_device`].
    pub fn with_index(index: usize) -> Result<OpenCl, OpenClError> {
        let _serial = construction_lock();
        match all_devices()?.into_iter().nth(index) {
            Some((p, d)) => OpenCl::new_locked(p, d, Layout::Auto),
            None => Err(OpenClError::NoDevice {
                wanted: format!("device index {index}"),
            }),
        }
    }

    /// Creates a context and a queue on `device` and builds the kernels.
    ///
    /// # Errors
    /// [`OpenClError::Build`] with the build log; [`OpenClError::Ocl`].
    pub fn new(platform: Platform, device: Device) -> Result<OpenCl, OpenClError> {
        OpenCl::with_layout(platform, device, Layout::Auto)
    }

    /// The first device of any kind with a forced [`Layout`] (tests use it to run the GPU
    /// layout on PoCL).
    ///
    /// # Errors
    /// As [`OpenCl::first_device`].
    pub fn first_device_with_layout(layout: Layout) -> Result<OpenCl, OpenClError> {
        let _serial = construction_lock();
        match all_devices()?.into_iter().next() {
            Some((p, d)) => OpenCl::new_locked(p, d, layout),
            None => Err(OpenClError::NoDevice {
                wanted: "any device".into(),
            }),
        }
    }

    /// As [`OpenCl::new`], with a forced [`Layout`].
    ///
    /// # Errors
    /// As [`OpenCl::new`].
    pub fn with_layout(
        platform: Platform,
        device: Device,
        layout: Layout,
    ) -> Result<OpenCl, OpenClError> {
        let _serial = construction_lock();
        OpenCl::new_locked(platform, device, layout)
    }

    fn new_locked(
        platform: Platform,
        device: Device,
        layout: Layout,
    ) -> Result<OpenCl, OpenClError> {
        let little = matches!(
            device.info(DeviceInfo::EndianLittle),
            Ok(DeviceInfoResult::EndianLittle(true))
        );
        let device_name = device.name().unwrap_or_else(|_| "?".into());
        if !little {
            return Err(OpenClError::NoDevice {
                wanted: format!("a little-endian device ({device_name} is not)"),
            });
        }
        // Bit-identical results need IEEE f32 with subnormals and round-to-nearest (a device
        // that flushes subnormals to zero cannot match the reference).
        let fp_ok = match device.info(DeviceInfo::SingleFpConfig) {
            Ok(DeviceInfoResult::SingleFpConfig(c)) => c.contains(
                ocl::flags::DeviceFpConfig::DENORM | ocl::flags::DeviceFpConfig::ROUND_TO_NEAREST,
            ),
            _ => false,
        };
        if !fp_ok {
            return Err(OpenClError::NoDevice {
                wanted: format!(
                    "a device with f32 subnormals and round-to-nearest ({device_name} lacks them)"
                ),
            });
        }
        let context = Context::builder()
            .platform(platform)
            .devices(device)
            .build()
            .map_err(OpenClError::ocl("creating a context"))?;
        let queue =
            Queue::new(&context, device, None).map_err(OpenClError::ocl("creating a queue"))?;
        let contiguous = match layout {
            Layout::Contiguous => true,
            Layout::Strided => false,
            Layout::Auto => matches!(
                device.info(DeviceInfo::Type),
                Ok(DeviceInfoResult::Type(t)) if t.contains(DeviceType::CPU)
            ),
        };
        let options = format!("{BUILD_OPTIONS} -D GC_CONTIGUOUS={}", u8::from(contiguous));
        let program = build_program(&context, device, &device_name, KERNELS_SRC, &options)?;

        let max_work_group = match device.info(DeviceInfo::MaxWorkGroupSize) {
            Ok(DeviceInfoResult::MaxWorkGroupSize(s)) => s,
            _ => 1,
        };
        let local_mem = match device.info(DeviceInfo::LocalMemSize) {
            Ok(DeviceInfoResult::LocalMemSize(s)) => s,
            _ => 0,
        };
        let compute_units = match device.info(DeviceInfo::MaxComputeUnits) {
            Ok(DeviceInfoResult::MaxComputeUnits(c)) => (c as usize).max(1),
            _ => 1,
        };
        let mut wg = PREFERRED_WG.min(max_work_group.max(1));
        if let Ok(DeviceInfoResult::MaxWorkItemSizes(sizes)) =
            device.info(DeviceInfo::MaxWorkItemSizes)
            && let Some(&first) = sizes.first()
        {
            wg = wg.min(first.max(1));
        }
        // Each kernel's own limit (registers, private memory) may be lower; every launch
        // uses the one work-group size.
        for &name in KERNEL_NAMES {
            let k = ocl::core::create_kernel(program.as_core(), name).map_err(|e| {
                OpenClError::Ocl {
                    op: "creating a kernel",
                    message: e.to_string(),
                }
            })?;
            if let Ok(KernelWorkGroupInfoResult::WorkGroupSize(s)) =
                ocl::core::get_kernel_work_group_info(
                    &k,
                    device,
                    KernelWorkGroupInfo::WorkGroupSize,
                )
            {
                wg = wg.min(s.max(1));
            }
        }
        // A power of two (the kernels' reductions need it) whose two u32 local arrays fit.
        wg = 1 << (usize::BITS - 1 - wg.leading_zeros());
        while wg > 1 && (2 * wg * 4) as u64 > local_mem {
            wg /= 2;
        }
        let platform_name = platform.name().unwrap_or_else(|_| "?".into());
        Ok(OpenCl {
            name: format!("opencl:{platform_name}:{device_name}"),
            device,
            context,
            queue,
            program,
            limits: Limits {
                max_work_group,
                local_mem,
                compute_units,
                contiguous,
                work_group: wg,
            },
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// The limits queried from the device and the work-group size chosen.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The context.
    pub fn context(&self) -> &Context {
        &self.context
    }

    fn scratch(&self) -> MutexGuard<'_, Scratch> {
        // Scratch contents never outlive one call, so a poisoned lock is still usable.
        self.scratch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kernel(&self, name: &'static str) -> ocl::builders::KernelBuilder<'_> {
        let mut b = Kernel::builder();
        b.program(&self.program)
            .name(name)
            .queue(self.queue.clone());
        b
    }

    /// The number of work-groups launches aim at.
    fn target_groups(&self) -> usize {
        self.limits.compute_units * GROUPS_PER_UNIT
    }

    /// Global size of the grid-stride element-wise kernels: at most one work-item per
    /// element, at most [`OpenCl::target_groups`] groups, a multiple of the work-group size.
    fn elementwise_global(&self, n: usize) -> usize {
        let wg = self.limits.work_group;
        n.div_ceil(wg).clamp(1, self.target_groups()) * wg
    }

    /// Elements per work-item in the group kernels for a segment of `n`: a power of two in
    /// `16 ..= 65536` giving about [`OpenCl::target_groups`] groups.
    fn span(&self, n: usize) -> usize {
        let per_item = n.div_ceil(self.limits.work_group * self.target_groups());
        per_item.next_power_of_two().clamp(WORD, MAX_SPAN)
    }

    /// Reads `dst.len()` f32 values starting at element `offset`.
    fn read_f32(
        &self,
        buf: &Buffer<f32>,
        offset: usize,
        dst: &mut [f32],
    ) -> Result<(), OpenClError> {
        if dst.is_empty() {
            return Ok(());
        }
        buf.cmd()
            .read(dst)
            .offset(offset)
            .enq()
            .map_err(OpenClError::ocl("reading a buffer"))
    }

    /// Reads `dst.len()` bytes starting at byte `offset` of any buffer (blocking).
    fn read_bytes(
        &self,
        mem: &ocl::core::Mem,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), OpenClError> {
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the read is blocking, so `dst` outlives it; callers pass
        // `offset + dst.len()` within the buffer's size in bytes (OpenCL checks it too and
        // returns CL_INVALID_VALUE otherwise).
        unsafe {
            ocl::core::enqueue_read_buffer::<u8, _, &mut ocl::core::Event, &ocl::core::Event>(
                &self.queue,
                mem,
                true,
                offset,
                dst,
                None,
                None,
            )
        }
        .map_err(|e| OpenClError::Ocl {
            op: "reading a buffer",
            message: e.to_string(),
        })
    }

    /// Writes `src` at byte 0 of any buffer (blocking).
    fn write_bytes(&self, mem: &ocl::core::Mem, src: &[u8]) -> Result<(), OpenClError> {
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the write is blocking, so `src` outlives it; callers size the buffer to at
        // least `src.len()` bytes (OpenCL checks it too).
        unsafe {
            ocl::core::enqueue_write_buffer::<u8, _, &mut ocl::core::Event, &ocl::core::Event>(
                &self.queue,
                mem,
                true,
                0,
                src,
                None,
                None,
            )
        }
        .map_err(|e| OpenClError::Ocl {
            op: "writing a buffer",
            message: e.to_string(),
        })
    }

    /// Pass 1 of count and encode: per-group candidate counts of `x[base .. base + n)` and
    /// the first non-finite element (relative index), if any. `n >= 1`, `n <= MAX_ELEMENTS`.
    fn count_groups(
        &self,
        scratch: &mut Scratch,
        x: &Buffer<f32>,
        base: usize,
        n: usize,
        tau: f32,
    ) -> Result<(Vec<u32>, Option<usize>), OpenClError> {
        let wg = self.limits.work_group;
        let span = self.span(n);
        let groups = n.div_ceil(wg * span);
        let counts = ensure(&mut scratch.counts, &self.queue, groups)?;
        let bad = ensure(&mut scratch.bad, &self.queue, groups)?;
        let items = ensure(&mut scratch.item_counts, &self.queue, groups * wg)?;
        let k = self
            .kernel("count_groups")
            .global_work_size(groups * wg)
            .local_work_size(wg)
            .arg(x)
            .arg(base as u64)
            .arg(u32_of(n))
            .arg(tau)
            .arg(u32_of(span))
            .arg(counts)
            .arg(bad)
            .arg(items)
            .arg_local::<u32>(wg)
            .arg_local::<u32>(wg)
            .build()
            .map_err(OpenClError::ocl("creating count_groups"))?;
        // SAFETY: argument order and types match `count_groups` in kernels/gradcast.cl;
        // `base + n <= x.len()` (checked by the caller); `counts` and `bad` hold at least
        // `groups` words and the kernel writes exactly index `get_group_id(0) < groups`;
        // `item_counts` holds `groups * wg` words, one per work-item; the two local arrays
        // hold `wg` words each, `wg` being the local size.
        unsafe { k.enq() }.map_err(OpenClError::ocl("running count_groups"))?;
        let mut c = vec![0u32; groups];
        let mut b = vec![0u32; groups];
        counts
            .cmd()
            .read(&mut c)
            .enq()
            .map_err(OpenClError::ocl("reading counts"))?;
        bad.cmd()
            .read(&mut b)
            .enq()
            .map_err(OpenClError::ocl("reading counts"))?;
        // Groups are in index order, so the first group with a non-finite value has the
        // smallest index.
        let first_bad = b.iter().find(|&&v| v != u32::MAX).map(|&v| v as usize);
        Ok((c, first_bad))
    }

    /// The [`Error::NonFinite`] for element `index` of `x`.
    fn non_finite(&self, x: &Buffer<f32>, index: usize) -> OpenClError {
        let mut v = [0f32];
        match self.read_f32(x, index, &mut v) {
            Ok(()) => OpenClError::Core(Error::NonFinite {
                index,
                bits: v[0].to_bits(),
            }),
            Err(e) => e,
        }
    }

    /// Candidates at relative index `>= start` of the segment: whole groups from the group
    /// counts; in the contiguous layout whole work-items of the partial group from the count
    /// pass's per-item counts (`items`); the rest by reading its elements (at most one
    /// work-item's span, or one group's chunk in the interleaved layout).
    #[allow(clippy::too_many_arguments)]
    fn tail_candidates(
        &self,
        x: &Buffer<f32>,
        base: usize,
        n: usize,
        tau: f32,
        counts: &[u32],
        items: Option<&Buffer<u32>>,
        start: usize,
    ) -> Result<usize, OpenClError> {
        let wg = self.limits.work_group;
        let span = self.span(n);
        let chunk = wg * span;
        let g0 = start / chunk;
        let mut total: usize = counts.iter().skip(g0 + 1).map(|&c| c as usize).sum();
        let mut end = ((g0 + 1) * chunk).min(n);
        if let (true, Some(items)) = (self.limits.contiguous, items) {
            // Work-item `item0` of group g0 holds `start`; those after it are whole.
            let item0 = (start - g0 * chunk) / span;
            let mut later = vec![0u32; wg - item0 - 1];
            if !later.is_empty() {
                items
                    .cmd()
                    .read(&mut later)
                    .offset(g0 * wg + item0 + 1)
                    .enq()
                    .map_err(OpenClError::ocl("reading item counts"))?;
            }
            total += later.iter().map(|&c| c as usize).sum::<usize>();
            end = (g0 * chunk + (item0 + 1) * span).min(n);
        }
        let mut part = vec![0f32; end.saturating_sub(start)];
        self.read_f32(x, base + start, &mut part)?;
        Ok(total + part.iter().filter(|&&v| passes(v, tau)).count())
    }

    fn check_len(len: usize) -> Result<(), OpenClError> {
        if len > MAX_ELEMENTS as usize {
            return Err(OpenClError::TooLong {
                len,
                max: MAX_ELEMENTS as usize,
            });
        }
        Ok(())
    }
}

/// Builds `source` (normally [`KERNELS_SRC`]) for `device`, with the build log on failure.
fn build_program(
    context: &Context,
    device: Device,
    device_name: &str,
    source: &str,
    options: &str,
) -> Result<Program, OpenClError> {
    let fail = |log: String| OpenClError::Build {
        device: device_name.to_string(),
        options: options.to_string(),
        log,
    };
    let src = CString::new(source).map_err(|e| fail(e.to_string()))?;
    let opts = CString::new(options).map_err(|e| fail(e.to_string()))?;
    let prog =
        ocl::core::create_program_with_source(context, &[src]).map_err(|e| fail(e.to_string()))?;
    if let Err(e) = ocl::core::build_program(&prog, Some(&[device]), &opts, None, None) {
        let log = match ocl::core::get_program_build_info(
            &prog,
            device,
            ocl::enums::ProgramBuildInfo::BuildLog,
        ) {
            Ok(ocl::enums::ProgramBuildInfoResult::BuildLog(log)) if !log.trim().is_empty() => log,
            _ => e.to_string(),
        };
        return Err(fail(log));
    }
    Ok(Program::from(prog))
}

impl Backend for OpenCl {
    type Buffer = ClBuffer;
    type Error = OpenClError;

    fn name(&self) -> &str {
        &self.name
    }

    fn alloc(&self, len: usize) -> Result<ClBuffer, OpenClError> {
        OpenCl::check_len(len)?;
        let buf = Buffer::<f32>::builder()
            .queue(self.queue.clone())
            .len(len.max(1))
            .fill_val(0.0f32)
            .build()
            .map_err(OpenClError::ocl("allocating a buffer"))?;
        Ok(ClBuffer { buf, len })
    }

    fn len(&self, buf: &ClBuffer) -> usize {
        buf.len
    }

    fn upload(&self, src: &[f32], dst: &mut ClBuffer) -> Result<(), OpenClError> {
        check_same_len(dst.len, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        dst.buf
            .cmd()
            .write(src)
            .enq()
            .map_err(OpenClError::ocl("uploading"))
    }

    fn download(&self, src: &ClBuffer, dst: &mut [f32]) -> Result<(), OpenClError> {
        check_same_len(dst.len(), src.len)?;
        self.read_f32(&src.buf, 0, dst)
    }

    fn fill(&self, buf: &mut ClBuffer, value: f32) -> Result<(), OpenClError> {
        buf.buf
            .cmd()
            .fill(value, None)
            .enq()
            .map_err(OpenClError::ocl("filling"))
    }

    fn count(&self, x: &ClBuffer, range: Range<usize>, tau: f32) -> Result<u64, OpenClError> {
        check_range(&range, x.len)?;
        check_tau(tau)?;
        if range.is_empty() {
            return Ok(0);
        }
        let mut scratch = self.scratch();
        let (counts, bad) =
            self.count_groups(&mut scratch, &x.buf, range.start, range.len(), tau)?;
        if let Some(i) = bad {
            return Err(self.non_finite(&x.buf, range.start + i));
        }
        Ok(counts.iter().map(|&c| c as u64).sum())
    }

    fn encode(
        &self,
        residual: &mut ClBuffer,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, OpenClError> {
        let tau = params.tau;
        check_tau(tau)?;
        let range = codec::segment_range(params, residual.len)?;
        let (base, n) = (range.start, range.len());
        let x = &residual.buf;
        let mut scratch = self.scratch();

        // Pass 1: validate and count (nothing is written before the plan is known).
        let (counts, bad) = self.count_groups(&mut scratch, x, base, n, tau)?;
        if let Some(i) = bad {
            return Err(self.non_finite(x, base + i));
        }
        let candidates: usize = counts.iter().map(|&c| c as usize).sum();
        let cap = params.cap.map_or(usize::MAX, |c| c as usize);
        let truncated = params.mode != EncodingMode::Dense && cap < candidates;
        let (start, tail) = if truncated {
            let start = cap_start(params.round, n);
            (
                start,
                self.tail_candidates(
                    x,
                    base,
                    n,
                    tau,
                    &counts,
                    scratch.item_counts.as_ref(),
                    start,
                )?,
            )
        } else {
            (0, candidates)
        };
        let plan = Plan::new(params, n, candidates, out.len(), |_| tail)?;

        // Pass 2: write the payload on the device, debit, and bring the payload home.
        match plan.encoding {
            Encoding::Dense => {
                self.read_bytes(x.as_core(), 4 * base, &mut out[HEADER_LEN..plan.bytes])?;
                let k = self
                    .kernel("zero_range")
                    .global_work_size(self.elementwise_global(n))
                    .local_work_size(self.limits.work_group)
                    .arg(x)
                    .arg(base as u64)
                    .arg(u32_of(n))
                    .build()
                    .map_err(OpenClError::ocl("creating zero_range"))?;
                // SAFETY: argument order and types match `zero_range`; the
                // grid-stride loop writes only x[base + i] for i < n, with
                // base + n <= x.len() (segment_range checked it).
                unsafe { k.enq() }.map_err(OpenClError::ocl("running zero_range"))?;
            }
            Encoding::Sparse | Encoding::Bitmap if plan.entries == 0 => {
                // Nothing selected: an all-zero payload (bitmap) or none (sparse); no debit.
                out[HEADER_LEN..plan.bytes].fill(0);
            }
            Encoding::Sparse | Encoding::Bitmap => {
                let sparse = plan.encoding == Encoding::Sparse;
                let wg = self.limits.work_group;
                let groups = counts.len();
                let mut offsets = Vec::with_capacity(groups);
                let mut acc = 0u32;
                for &c in &counts {
                    offsets.push(acc);
                    acc += c;
                }
                let before_start = candidates - tail;
                let span = self.span(n);
                let words = if sparse {
                    plan.entries
                } else {
                    n.div_ceil(WORD)
                };
                let missing = || OpenClError::Ocl {
                    op: "encoding",
                    message: "group counts missing".into(),
                };
                let counts_buf = scratch.counts.clone().ok_or_else(missing)?;
                let items_buf = scratch.item_counts.clone().ok_or_else(missing)?;
                let off_buf = ensure(&mut scratch.offsets, &self.queue, groups)?;
                off_buf
                    .cmd()
                    .write(&offsets)
                    .enq()
                    .map_err(OpenClError::ocl("uploading offsets"))?;
                let off_buf = off_buf.clone();
                let payload = ensure(&mut scratch.payload, &self.queue, words)?;
                let k = self
                    .kernel("encode_select")
                    .global_work_size(groups * wg)
                    .local_work_size(wg)
                    .arg(x)
                    .arg(base as u64)
                    .arg(u32_of(n))
                    .arg(tau)
                    .arg(u32_of(span))
                    .arg(&counts_buf)
                    .arg(&items_buf)
                    .arg(&off_buf)
                    .arg(u32_of(start))
                    .arg(u32_of(before_start))
                    .arg(u32_of(plan.take_head))
                    .arg(u32_of(before_start + plan.take_tail))
                    .arg(if sparse { 0u32 } else { 1u32 })
                    .arg(payload)
                    .arg_local::<u32>(wg)
                    .build()
                    .map_err(OpenClError::ocl("creating encode_select"))?;
                // SAFETY: argument order and types match `encode_select`; `counts` and
                // `offsets` hold `groups` words, one per work-group, and `item_counts`
                // `groups * wg`, one per work-item (the same n, span and wg as the count
                // pass, which filled them); the kernel reads and debits only
                // x[base + i] for i < n (base + n <= x.len()); it writes payload slots
                // < plan.entries (sparse: a selected candidate's slot is below the number
                // selected) or words < ceil(n / 16) (bitmap), and `payload` holds `words`
                // of them; the local array holds `wg` words, the local size.
                unsafe { k.enq() }.map_err(OpenClError::ocl("running encode_select"))?;
                let payload = payload.clone();
                self.read_bytes(payload.as_core(), 0, &mut out[HEADER_LEN..plan.bytes])?;
            }
        }
        let header = plan.header(params, n);
        let bytes = wire::seal(out, header);
        Ok(EncodeSummary {
            encoding: plan.encoding,
            entries: u32_of(plan.entries),
            candidates: plan.candidates as u64,
            bytes,
            truncated: header.truncated(),
        })
    }

    fn decode_add(&self, msg: &MessageView<'_>, target: &mut ClBuffer) -> Result<(), OpenClError> {
        let range = msg.target_range(target.len)?;
        let (base, n) = (range.start, range.len());
        let tau = msg.tau();
        let payload = msg.payload();
        let wg = self.limits.work_group;
        let mut scratch = self.scratch();
        let (name, items) = match msg.encoding() {
            Encoding::Sparse => ("decode_sparse", msg.count() as usize),
            Encoding::Bitmap => ("decode_bitmap", n),
            Encoding::Dense => ("decode_dense", n),
        };
        if msg.count() == 0 {
            return Ok(());
        }
        let dev = ensure(&mut scratch.payload, &self.queue, payload.len().div_ceil(4))?;
        self.write_bytes(dev.as_core(), payload)?;
        let mut b = self.kernel(name);
        b.global_work_size(self.elementwise_global(items))
            .local_work_size(wg)
            .arg(&target.buf)
            .arg(base as u64);
        match msg.encoding() {
            Encoding::Sparse => b.arg(dev).arg(u32_of(items)).arg(tau),
            Encoding::Bitmap => b.arg(dev).arg(u32_of(n)).arg(tau),
            Encoding::Dense => b.arg(dev).arg(u32_of(n)),
        };
        let k = b
            .build()
            .map_err(OpenClError::ocl("creating a decode kernel"))?;
        // SAFETY: argument order and types match `decode_sparse` / `decode_bitmap` /
        // `decode_dense`; the payload buffer holds the whole validated payload (count
        // entries, ceil(N / 16) words, or N values); the grid-stride loops stop at
        // `items`; every index written is base + i with i < N and base + N <= target.len
        // (target_range checked it); sparse entries are strictly ascending, so no two
        // work-items write one element.
        unsafe { k.enq() }.map_err(OpenClError::ocl("running a decode kernel"))
    }

    fn add_assign(&self, dst: &mut ClBuffer, src: &ClBuffer) -> Result<(), OpenClError> {
        check_same_len(dst.len, src.len)?;
        if dst.len == 0 {
            return Ok(());
        }
        let k = self
            .kernel("add_assign")
            .global_work_size(self.elementwise_global(dst.len))
            .local_work_size(self.limits.work_group)
            .arg(&dst.buf)
            .arg(&src.buf)
            .arg(u32_of(dst.len))
            .build()
            .map_err(OpenClError::ocl("creating add_assign"))?;
        // SAFETY: argument order and types match `add_assign`; both buffers hold `len`
        // elements and the grid-stride loop stops at len.
        unsafe { k.enq() }.map_err(OpenClError::ocl("running add_assign"))
    }

    fn sub_scaled(
        &self,
        params: &mut ClBuffer,
        update: &ClBuffer,
        scale: f32,
    ) -> Result<(), OpenClError> {
        check_same_len(params.len, update.len)?;
        if params.len == 0 {
            return Ok(());
        }
        let k = self
            .kernel("sub_scaled")
            .global_work_size(self.elementwise_global(params.len))
            .local_work_size(self.limits.work_group)
            .arg(&params.buf)
            .arg(&update.buf)
            .arg(u32_of(params.len))
            .arg(scale)
            .arg(u32::from(scale == 1.0))
            .build()
            .map_err(OpenClError::ocl("creating sub_scaled"))?;
        // SAFETY: argument order and types match `sub_scaled`; both buffers hold `len`
        // elements and the grid-stride loop stops at len.
        unsafe { k.enq() }.map_err(OpenClError::ocl("running sub_scaled"))
    }

    /// Clips on the device; the statistics (an f64 sum in index order, which a parallel
    /// reduction cannot reproduce bit for bit) are computed on the host from a copy of the
    /// range read before clipping, with [`slices::clip`].
    fn clip(
        &self,
        buf: &mut ClBuffer,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, OpenClError> {
        check_range(&range, buf.len)?;
        if range.is_empty() {
            return Ok(ClipStats::default());
        }
        let mut host = vec![0f32; range.len()];
        self.read_f32(&buf.buf, range.start, &mut host)?;
        let stats = slices::clip(&mut host, limit);
        if stats.elements == 0 {
            return Ok(stats);
        }
        let k = self
            .kernel("clip")
            .global_work_size(self.elementwise_global(range.len()))
            .local_work_size(self.limits.work_group)
            .arg(&buf.buf)
            .arg(range.start as u64)
            .arg(u32_of(range.len()))
            .arg(limit)
            .build()
            .map_err(OpenClError::ocl("creating clip"))?;
        // SAFETY: argument order and types match `clip`; the grid-stride loop
        // touches only x[start + i] for i < len, and range.end <= buf.len.
        unsafe { k.enq() }.map_err(OpenClError::ocl("running clip"))?;
        Ok(stats)
    }

    /// Computed on the host from a copy of the range with [`slices::stats`]: the reference's
    /// f64 sum in index order cannot be reproduced bit for bit by a parallel reduction.
    fn stats(&self, buf: &ClBuffer, range: Range<usize>) -> Result<VectorStats, OpenClError> {
        check_range(&range, buf.len)?;
        let mut host = vec![0f32; range.len()];
        self.read_f32(&buf.buf, range.start, &mut host)?;
        Ok(slices::stats(&host))
    }

    fn sync(&self) -> Result<(), OpenClError> {
        self.queue
            .finish()
            .map_err(OpenClError::ocl("waiting for the queue"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradcast_core::Classify;

    #[test]
    fn every_kernel_is_listed_and_exists() {
        let defined: Vec<&str> = KERNELS_SRC
            .split("__kernel void ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .collect();
        let mut a = defined.clone();
        let mut b = KERNEL_NAMES.to_vec();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "KERNEL_NAMES and kernels/gradcast.cl disagree");
        assert!(KERNELS_SRC.contains("#pragma OPENCL FP_CONTRACT OFF"));
        for banned in [
            "fast-relaxed",
            "mad-enable",
            "denorms-are-zero",
            "unsafe-math",
        ] {
            assert!(!BUILD_OPTIONS.contains(banned));
        }
    }

    #[test]
    fn build_error_carries_log_and_options() {
        if let Err(e) = probe_platforms() {
            eprintln!("SKIP: {e}");
            return;
        }
        let _serial = construction_lock();
        let Some((platform, device)) = all_devices().ok().and_then(|d| d.into_iter().next()) else {
            eprintln!("SKIP: no OpenCL device");
            return;
        };
        let context = Context::builder()
            .platform(platform)
            .devices(device)
            .build()
            .expect("context");
        let src = "__kernel void broken(__global float* x) { x[0] = undeclared_thing; }";
        let e = build_program(&context, device, "dev", src, "-cl-std=CL1.2 -D X=1")
            .expect_err("must not build");
        match &e {
            OpenClError::Build { options, log, .. } => {
                assert_eq!(options, "-cl-std=CL1.2 -D X=1");
                assert!(log.contains("undeclared_thing"), "log: {log}");
            }
            other => panic!("wrong error {other:?}"),
        }
        assert_eq!(e.kind(), gradcast_core::ErrorKind::KernelCompile);
        assert!(e.to_string().contains("undeclared_thing"));
    }

    #[test]
    fn limits_are_sane() {
        let b = match OpenCl::first_device() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        };
        let l = b.limits();
        assert!(l.work_group.is_power_of_two());
        assert!(l.work_group <= l.max_work_group.max(1));
        assert!((2 * l.work_group * 4) as u64 <= l.local_mem.max(8));
        for n in [
            1usize,
            15,
            16,
            17,
            4096,
            1 << 20,
            1 << 26,
            MAX_ELEMENTS as usize,
        ] {
            let span = b.span(n);
            assert!(span.is_power_of_two() && (WORD..=MAX_SPAN).contains(&span));
            assert!(b.elementwise_global(n) % l.work_group == 0);
        }
    }
}

//! The [`OpenCl`] backend instance: construction (context, queue, program, kernel objects,
//! device checks), the device limits it sizes launches by, and the launch geometry.

use crate::OpenClError;
use crate::buffer::Scratch;
use crate::discovery::{DeviceKind, all_devices, construction_lock};
use crate::program::{BUILD_OPTIONS, KERNELS_SRC, Kernels, build_program};
use gradcast_core::wire::MAX_ELEMENTS;
use ocl::enums::{DeviceInfo, DeviceInfoResult};
use ocl::{Context, Device, DeviceType, Platform, Program, Queue};
use std::sync::Mutex;

/// Elements per 32-bit bitmap word (`WORD` in the source); the smallest span of a work-item
/// in the group kernels.
pub(crate) const WORD: usize = 16;

/// The largest span (elements per work-item) of the group kernels.
pub(crate) const MAX_SPAN: usize = 1 << 16;

/// Work-groups per compute unit the launches aim at (enough to balance the load, few enough
/// that per-group overhead, large on CPU devices, stays small).
const GROUPS_PER_UNIT: usize = 16;

/// The work-group size the backend prefers when the device allows it.
const PREFERRED_WG: usize = 256;

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
/// Buffers ([`ClBuffer`](crate::ClBuffer)) belong to the instance that allocated them; passing one to another
/// instance is an error reported by the driver, never undefined behaviour on the host.
#[derive(Debug)]
pub struct OpenCl {
    // Fields drop in declaration order: buffers, kernel objects, program and queue before
    // their context.
    pub(crate) scratch: Mutex<Scratch>,
    pub(crate) kernels: Kernels,
    /// Held so that the program visibly outlives its kernel objects (OpenCL would keep it
    /// alive for them anyway); launches go through `kernels`.
    _program: Program,
    pub(crate) queue: Queue,
    context: Context,
    device: Device,
    pub(crate) name: String,
    pub(crate) limits: Limits,
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

    /// The device at `index` of [`list_devices`](crate::list_devices).
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
        // The kernel objects, created once for every launch of this instance. Each kernel's
        // own limit (registers, private memory) may be lower than the device's; every launch
        // uses the one work-group size.
        let kernels = Kernels::new(&program)?;
        wg = kernels.work_group_limit(device, wg);
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
            _program: program,
            kernels,
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

    /// The number of work-groups launches aim at.
    pub(crate) fn target_groups(&self) -> usize {
        self.limits.compute_units * GROUPS_PER_UNIT
    }

    /// Global size of the grid-stride element-wise kernels: at most one work-item per
    /// element, at most [`OpenCl::target_groups`] groups, a multiple of the work-group size.
    pub(crate) fn elementwise_global(&self, n: usize) -> usize {
        let wg = self.limits.work_group;
        n.div_ceil(wg).clamp(1, self.target_groups()) * wg
    }

    /// Elements per work-item in the group kernels for a segment of `n`: a power of two in
    /// `16 ..= 65536` giving about [`OpenCl::target_groups`] groups.
    pub(crate) fn span(&self, n: usize) -> usize {
        let per_item = n.div_ceil(self.limits.work_group * self.target_groups());
        per_item.next_power_of_two().clamp(WORD, MAX_SPAN)
    }

    pub(crate) fn check_len(len: usize) -> Result<(), OpenClError> {
        if len > MAX_ELEMENTS as usize {
            return Err(OpenClError::TooLong {
                len,
                max: MAX_ELEMENTS as usize,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

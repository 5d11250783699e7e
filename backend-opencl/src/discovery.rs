//! Finding OpenCL devices: platforms (probed without ocl's panic and retries), the devices
//! of each, the kinds to pick from, and the process-wide lock that serialises device queries
//! and context creation.

use crate::OpenClError;
use ocl::{Device, DeviceType, Platform};
use std::sync::{Mutex, MutexGuard};

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
    pub(crate) fn matches(self, t: DeviceType) -> bool {
        match self {
            DeviceKind::Any => true,
            DeviceKind::Gpu => t.contains(DeviceType::GPU),
            DeviceKind::Cpu => t.contains(DeviceType::CPU),
            DeviceKind::Accelerator => t.contains(DeviceType::ACCELERATOR),
        }
    }
}

/// One OpenCL device as [`list_devices`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceDesc {
    /// Index in the flattened list over all platforms ([`OpenCl::with_index`](crate::OpenCl::with_index)).
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
pub(crate) fn all_devices() -> Result<Vec<(Platform, Device)>, OpenClError> {
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
pub(crate) fn construction_lock() -> MutexGuard<'static, ()> {
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

//! The kernel program: the OpenCL C source, the build options, the entry points with their
//! parameter lists, the build (with the log on failure), and the kernel objects an instance
//! creates once and launches many times.

use crate::OpenClError;
use ocl::{Context, Device, Program};
use std::ffi::CString;

/// The kernel sources (OpenCL C 1.2), compiled at run time once per [`OpenCl`](crate::OpenCl) (= per
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

/// Builds `source` (normally [`KERNELS_SRC`]) for `device`, with the build log on failure.
pub(crate) fn build_program(
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

/// An entry point of [`KERNELS_SRC`] (in the order of [`KERNEL_NAMES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Entry {
    CountGroups,
    EncodeSelect,
    DecodeSparse,
    DecodeBitmap,
    DecodeDense,
    AddAssign,
    SubScaled,
    Clip,
    ZeroRange,
}

/// The kind of one kernel parameter, as the source declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Param {
    /// `__global T*`.
    Buf,
    /// `uint`.
    U32,
    /// `ulong`.
    U64,
    /// `float`.
    F32,
    /// `__local uint*`.
    Local,
}

impl Entry {
    /// Every entry point, in [`KERNEL_NAMES`] order.
    pub(crate) const ALL: [Entry; 9] = [
        Entry::CountGroups,
        Entry::EncodeSelect,
        Entry::DecodeSparse,
        Entry::DecodeBitmap,
        Entry::DecodeDense,
        Entry::AddAssign,
        Entry::SubScaled,
        Entry::Clip,
        Entry::ZeroRange,
    ];

    /// The entry point's name in the source.
    pub(crate) fn name(self) -> &'static str {
        KERNEL_NAMES[self as usize]
    }

    /// The parameter list, as the source declares it (a test compares the two).
    pub(crate) fn params(self) -> &'static [Param] {
        use Param::{Buf, F32, Local, U32, U64};
        match self {
            Entry::CountGroups => &[Buf, U64, U32, F32, U32, Buf, Buf, Buf, Local, Local],
            Entry::EncodeSelect => &[
                Buf, U64, U32, F32, U32, Buf, Buf, Buf, U32, U32, U32, U32, U32, Buf, Local,
            ],
            Entry::DecodeSparse | Entry::DecodeBitmap => &[Buf, U64, Buf, U32, F32],
            Entry::DecodeDense => &[Buf, U64, Buf, U32],
            Entry::AddAssign => &[Buf, Buf, U32],
            Entry::SubScaled => &[Buf, Buf, U32, F32, U32],
            Entry::Clip => &[Buf, U64, U32, F32],
            Entry::ZeroRange => &[Buf, U64, U32],
        }
    }
}

/// One argument of one launch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    /// A device buffer (`__global T*`).
    Buf(&'a ocl::core::Mem),
    /// `uint`.
    U32(u32),
    /// `ulong`.
    U64(u64),
    /// `float`.
    F32(f32),
    /// Local scratch of this many `uint`s (`__local uint*`).
    Local(usize),
}

impl Arg<'_> {
    fn param(&self) -> Param {
        match self {
            Arg::Buf(_) => Param::Buf,
            Arg::U32(_) => Param::U32,
            Arg::U64(_) => Param::U64,
            Arg::F32(_) => Param::F32,
            Arg::Local(_) => Param::Local,
        }
    }
}

/// One kernel object per entry point, created once with the program and reused by every
/// launch: a launch sets all of the entry point's arguments (`clSetKernelArg`) and enqueues
/// it. Creating a kernel object per launch (`clCreateKernel`, plus ocl's argument type
/// queries) cost more than the launch itself on PoCL; see `docs/BENCHMARKS.md`.
///
/// A kernel object's arguments are state shared by whoever launches it, and OpenCL does not
/// make `clSetKernelArg` thread-safe on one object, so setting the arguments and enqueueing
/// happen under one lock. The arguments a launch leaves behind (handles of buffers the caller
/// may drop afterwards) are never used again: every launch sets every argument first, and an
/// enqueued command keeps its own buffers alive until it completes.
#[derive(Debug)]
pub(crate) struct Kernels {
    objects: std::sync::Mutex<Vec<ocl::core::Kernel>>,
}

impl Kernels {
    /// Creates the kernel object of every entry point of `program`.
    ///
    /// # Errors
    /// [`OpenClError::Ocl`] when an entry point is missing from the program.
    pub(crate) fn new(program: &Program) -> Result<Kernels, OpenClError> {
        let objects = Entry::ALL
            .iter()
            .map(|e| {
                ocl::core::create_kernel(program.as_core(), e.name()).map_err(|err| {
                    OpenClError::Ocl {
                        op: "creating a kernel",
                        message: format!("{}: {err}", e.name()),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Kernels {
            objects: std::sync::Mutex::new(objects),
        })
    }

    /// The smallest `CL_KERNEL_WORK_GROUP_SIZE` of the entry points on `device` (registers and
    /// private memory may limit a kernel below the device's limit), or `limit` if smaller.
    pub(crate) fn work_group_limit(&self, device: Device, limit: usize) -> usize {
        use ocl::enums::{KernelWorkGroupInfo, KernelWorkGroupInfoResult};
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects.iter().fold(limit, |wg, k| {
            match ocl::core::get_kernel_work_group_info(
                k,
                device,
                KernelWorkGroupInfo::WorkGroupSize,
            ) {
                Ok(KernelWorkGroupInfoResult::WorkGroupSize(s)) => wg.min(s.max(1)),
                _ => wg,
            }
        })
    }

    /// Launches `entry` over `global` work-items in groups of `local` with `args`, in the
    /// order and of the kinds the source declares ([`Entry::params`]; a mismatch is an
    /// error, nothing is enqueued).
    ///
    /// # Safety
    /// The kernel must stay within the buffers it is given: the caller checks that every
    /// index the entry point computes from these arguments (and from `global`) lies inside
    /// the buffer it reads or writes, and that local arrays hold what the kernel uses (one
    /// element per work-item of a group, for this source).
    pub(crate) unsafe fn launch(
        &self,
        queue: &ocl::Queue,
        entry: Entry,
        global: usize,
        local: usize,
        args: &[Arg<'_>],
    ) -> Result<(), OpenClError> {
        let fail = |what: &str, message: String| OpenClError::Ocl {
            op: "launching a kernel",
            message: format!("{} ({what}): {message}", entry.name()),
        };
        let kinds: Vec<Param> = args.iter().map(Arg::param).collect();
        if kinds != entry.params() {
            return Err(fail(
                "arguments",
                format!("got {kinds:?}, the source declares {:?}", entry.params()),
            ));
        }
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = &objects[entry as usize];
        for (i, a) in args.iter().enumerate() {
            let value = match a {
                Arg::Buf(m) => ocl::core::ArgVal::mem(m),
                Arg::U32(v) => ocl::core::ArgVal::scalar(v),
                Arg::U64(v) => ocl::core::ArgVal::scalar(v),
                Arg::F32(v) => ocl::core::ArgVal::scalar(v),
                Arg::Local(len) => ocl::core::ArgVal::local::<u32>(len),
            };
            ocl::core::set_kernel_arg(kernel, i as u32, value)
                .map_err(|e| fail("setting an argument", e.to_string()))?;
        }
        // SAFETY: every argument of `entry` was just set, with the kinds the source
        // declares; the caller guarantees that the kernel stays within its buffers for this
        // global size; the work sizes are one-dimensional, as every entry point expects.
        unsafe {
            ocl::core::enqueue_kernel::<&mut ocl::core::Event, &ocl::core::Event>(
                queue,
                kernel,
                1,
                None,
                &[global, 1, 1],
                Some([local, 1, 1]),
                None,
                None,
            )
        }
        .map_err(|e| fail("enqueueing", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{all_devices, construction_lock, probe_platforms};
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

    /// The parameter lists of [`Entry::params`] are those of the source, entry by entry.
    #[test]
    fn params_match_the_source() {
        assert_eq!(Entry::ALL.len(), KERNEL_NAMES.len());
        for e in Entry::ALL {
            let start = KERNELS_SRC
                .find(&format!("__kernel void {}(", e.name()))
                .unwrap_or_else(|| panic!("{} not in the source", e.name()));
            let rest = &KERNELS_SRC[start..];
            let list = &rest[rest.find('(').unwrap() + 1..rest.find(')').unwrap()];
            let declared: Vec<Param> = list
                .split(',')
                .map(|p| {
                    let p = p.trim();
                    if p.contains("__local") {
                        Param::Local
                    } else if p.contains('*') {
                        Param::Buf
                    } else if p.starts_with("uint ") {
                        Param::U32
                    } else if p.starts_with("ulong ") {
                        Param::U64
                    } else if p.starts_with("float ") {
                        Param::F32
                    } else {
                        panic!("{}: unexpected parameter {p:?}", e.name())
                    }
                })
                .collect();
            assert_eq!(declared, e.params(), "{}", e.name());
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

    /// A launch whose arguments do not match the entry point's parameters is refused before
    /// anything is set or enqueued.
    #[test]
    fn mismatched_launch_is_refused() {
        let b = match crate::OpenCl::first_device() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        };
        // SAFETY: refused before anything is enqueued (the argument kinds do not match).
        let r = unsafe {
            b.kernels
                .launch(&b.queue, Entry::AddAssign, 1, 1, &[Arg::U32(1)])
        };
        match r {
            Err(OpenClError::Ocl { message, .. }) => {
                assert!(message.contains("add_assign"), "{message}")
            }
            other => panic!("wrong result {other:?}"),
        }
    }
}

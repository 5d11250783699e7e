//! The CUDA C++ kernel sources, their entry points, and the NVRTC compilation every kernel
//! goes through (at run time for the device's architecture, and in the GPU-less tests for
//! `compute_90` / `sm_90`).
//!
//! Sources live in `backend-cuda/kernels/*.cu` and are embedded with `include_str!`, so nothing
//! is read from disk at run time. `common.cuh` is prepended to each file here (NVRTC gets no
//! include directory), followed by a `#line 1` directive so that NVRTC's log names lines of
//! the `.cu` file itself.

use crate::error::CudaError;
use core::ffi::c_char;
use cudarc::nvrtc::{result, sys};
use std::ffi::{CStr, CString};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

/// Threads per block of every kernel (`GC_BLOCK` in `common.cuh`).
pub const BLOCK: u32 = 256;
/// Elements each thread of a tiled kernel handles (`GC_ITEMS` in `common.cuh`).
pub const ITEMS: u32 = 16;
/// Elements per tile, one block of the count and encode kernels each (`GC_TILE`).
pub const TILE: usize = (BLOCK * ITEMS) as usize;
/// Threads of the single-block scan kernel (`GC_SCAN_THREADS` in `count.cu`).
pub const SCAN_THREADS: u32 = 1024;

/// `common.cuh`: definitions shared by every kernel file, prepended to each.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// One kernel file: a module of its own once compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFile {
    /// File name under `backend-cuda/kernels/`.
    pub name: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// The `extern "C" __global__` entry points the Rust side launches.
    pub entries: &'static [&'static str],
}

impl KernelFile {
    /// The text handed to NVRTC: `common.cuh`, then the file, whose lines keep their numbers.
    pub fn full_source(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}\"\n{}", self.name, self.source)
    }
}

/// The kernel modules, indexing [`FILES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    /// `count.cu`: tile counts, their scan, the head count of a capped selection.
    Count = 0,
    /// `encode.cu`: the sparse and bitmap write passes.
    Encode = 1,
    /// `decode.cu`: decode-add of sparse, bitmap and dense messages.
    Decode = 2,
    /// `vector.cu`: fill, add, scaled subtract, clip.
    Vector = 3,
}

impl Module {
    /// Every module, in [`FILES`] order.
    pub const ALL: [Module; 4] = [
        Module::Count,
        Module::Encode,
        Module::Decode,
        Module::Vector,
    ];

    /// The module's file.
    pub fn file(self) -> &'static KernelFile {
        &FILES[self as usize]
    }
}

/// Every kernel file and the entry points Rust launches from it.
pub const FILES: [KernelFile; 4] = [
    KernelFile {
        name: "count.cu",
        source: include_str!("../kernels/count.cu"),
        entries: &["gc_count_tiles", "gc_scan_tiles", "gc_head_count"],
    },
    KernelFile {
        name: "encode.cu",
        source: include_str!("../kernels/encode.cu"),
        entries: &["gc_encode_sparse", "gc_encode_bitmap"],
    },
    KernelFile {
        name: "decode.cu",
        source: include_str!("../kernels/decode.cu"),
        entries: &["gc_decode_sparse", "gc_decode_bitmap", "gc_decode_dense"],
    },
    KernelFile {
        name: "vector.cu",
        source: include_str!("../kernels/vector.cu"),
        entries: &[
            "gc_fill",
            "gc_add_assign",
            "gc_sub_scaled",
            "gc_clip_count",
            "gc_clip",
        ],
    },
];

/// The NVRTC options every kernel is compiled with, for a `--gpu-architecture` such as
/// `compute_90` (PTX) or `sm_90` (cubin).
///
/// No fast math: no fused multiply-add contraction, no flush-to-zero, IEEE division and square
/// root, so that results are bit-identical to the CPU reference.
pub fn options(gpu_arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={gpu_arch}"),
        "--fmad=false".into(),
        "--ftz=false".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--std=c++17".into(),
        "-lineinfo".into(),
    ]
}

/// What NVRTC produced for one kernel file.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// PTX text, when NVRTC provides it (always for `compute_XX`; often for `sm_XX`).
    pub ptx: Option<String>,
    /// The cubin (ELF) for a real architecture (`sm_XX`); `None` for `compute_XX`.
    pub cubin: Option<Vec<u8>>,
    /// The options used.
    pub options: Vec<String>,
}

/// Whether `libnvrtc` can be loaded (a `dlopen` probe; never panics).
pub fn nvrtc_available() -> bool {
    // SAFETY: the probe only tries to dlopen the library's candidate names and drops what it
    // opened; it calls no function of the library.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, `(major, minor)`.
///
/// # Errors
/// [`CudaError::NoNvrtc`] when the library is absent or lacks the function.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    if !nvrtc_available() {
        return Err(no_nvrtc("libnvrtc.so not found"));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion writes two ints through valid pointers to locals.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe {
        sys::nvrtcVersion(&mut major, &mut minor)
    }));
    match r {
        Ok(sys::nvrtcResult::NVRTC_SUCCESS) => Ok((major, minor)),
        Ok(other) => Err(no_nvrtc(&format!("nvrtcVersion returned {other:?}"))),
        Err(p) => Err(no_nvrtc(&panic_text(&p))),
    }
}

fn no_nvrtc(reason: &str) -> CudaError {
    CudaError::NoNvrtc {
        reason: reason.to_owned(),
    }
}

/// The text of a caught panic.
pub(crate) fn panic_text(p: &Box<dyn core::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful nvrtcCreateProgram and is destroyed once.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles one kernel file for `gpu_arch` (`compute_XX` for PTX, `sm_XX` for a cubin) with
/// [`options`]. Never panics: a missing or too old `libnvrtc` is [`CudaError::NoNvrtc`].
///
/// # Errors
/// [`CudaError::Compile`] with NVRTC's log and the options; [`CudaError::NoNvrtc`].
pub fn compile(file: &KernelFile, gpu_arch: &str) -> Result<Compiled, CudaError> {
    if !nvrtc_available() {
        return Err(no_nvrtc("libnvrtc.so not found"));
    }
    let options = options(gpu_arch);
    let src = CString::new(file.full_source()).map_err(|_| CudaError::Compile {
        kernel: file.name,
        status: "source contains a NUL byte".into(),
        options: options.clone(),
        log: String::new(),
    })?;
    let name = CString::new(file.name).unwrap_or_default();
    let r = catch_unwind(AssertUnwindSafe(|| {
        compile_inner(file, &src, &name, &options)
    }));
    match r {
        Ok(r) => r,
        Err(p) => Err(no_nvrtc(&panic_text(&p))),
    }
}

fn compile_inner(
    file: &KernelFile,
    src: &CStr,
    name: &CStr,
    options: &[String],
) -> Result<Compiled, CudaError> {
    let fail = |status: String, log: String| CudaError::Compile {
        kernel: file.name,
        status,
        options: options.to_vec(),
        log,
    };
    let prog = Program(
        result::create_program(src, Some(name))
            .map_err(|e| fail(format!("nvrtcCreateProgram: {e:?}"), String::new()))?,
    );
    // SAFETY: `prog.0` is a live program; the options are plain ASCII without NUL bytes.
    let compiled = unsafe { result::compile_program(prog.0, options) };
    if let Err(e) = compiled {
        // SAFETY: `prog.0` is a live program.
        let log = unsafe { result::get_program_log(prog.0) }
            .map(|l| chars_to_string(&l))
            .unwrap_or_default();
        return Err(fail(format!("{e:?}"), log));
    }
    // SAFETY: `prog.0` compiled successfully. For an `sm_XX` target NVRTC may decline to give
    // PTX; that is not an error here.
    let ptx = unsafe { result::get_ptx(prog.0) }
        .ok()
        .map(|p| chars_to_string(&p))
        .filter(|p| !p.is_empty());
    let cubin = if options
        .iter()
        .any(|o| o.starts_with("--gpu-architecture=sm_"))
    {
        let mut size = 0usize;
        // SAFETY: `prog.0` compiled successfully for a real architecture; `size` is a valid
        // out-pointer.
        let r = unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(fail(format!("nvrtcGetCUBINSize: {r:?}"), String::new()));
        }
        let mut bin = vec![0u8; size];
        // SAFETY: `bin` holds exactly the `size` bytes NVRTC asked for.
        let r = unsafe { sys::nvrtcGetCUBIN(prog.0, bin.as_mut_ptr().cast()) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(fail(format!("nvrtcGetCUBIN: {r:?}"), String::new()));
        }
        Some(bin)
    } else {
        None
    };
    Ok(Compiled {
        ptx,
        cubin,
        options: options.to_vec(),
    })
}

/// A kernel file compiled for one device, ready for `cuModuleLoadData`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// A cubin for the device's own architecture (`sm_XY`): the driver loads it without JIT
    /// compilation, so the driver may be older than NVRTC.
    Cubin(Vec<u8>),
    /// PTX for `compute_XY`, JIT-compiled by the driver: the fallback when this NVRTC cannot
    /// target the real architecture.
    Ptx(String),
}

/// Images compiled so far in this process, by kernel file and compute capability.
type ImageCache = Vec<(&'static str, (i32, i32), Image)>;
static IMAGES: Mutex<ImageCache> = Mutex::new(Vec::new());

fn images() -> std::sync::MutexGuard<'static, ImageCache> {
    // The cache only ever holds complete entries, so a poisoned lock is still consistent.
    IMAGES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The image of `file` for a device of compute capability `cc`: a cubin for `sm_XY`, or PTX
/// for `compute_XY` if NVRTC rejects the real architecture. Compiled on first use and cached
/// for the process, so every backend instance on the same kind of device shares it.
///
/// # Errors
/// [`CudaError::Compile`] (NVRTC's log and options), [`CudaError::NoNvrtc`].
pub fn device_image(file: &KernelFile, cc: (i32, i32)) -> Result<Image, CudaError> {
    if let Some((_, _, image)) = images()
        .iter()
        .find(|(name, c, _)| *name == file.name && *c == cc)
    {
        return Ok(image.clone());
    }
    let (major, minor) = cc;
    let image = match compile(file, &format!("sm_{major}{minor}")) {
        Ok(Compiled {
            cubin: Some(bin), ..
        }) => Image::Cubin(bin),
        Ok(Compiled { ptx: Some(p), .. }) => Image::Ptx(p),
        Ok(_) | Err(CudaError::Compile { .. }) => {
            match compile(file, &format!("compute_{major}{minor}"))? {
                Compiled { ptx: Some(p), .. } => Image::Ptx(p),
                c => {
                    return Err(CudaError::Compile {
                        kernel: file.name,
                        status: "NVRTC returned neither a cubin nor PTX".into(),
                        options: c.options,
                        log: String::new(),
                    });
                }
            }
        }
        Err(e) => return Err(e),
    };
    images().push((file.name, cc, image.clone()));
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_pin_the_numerics() {
        let o = options("sm_90");
        for want in [
            "--gpu-architecture=sm_90",
            "--fmad=false",
            "--ftz=false",
            "--prec-div=true",
            "--prec-sqrt=true",
        ] {
            assert!(o.iter().any(|x| x == want), "missing {want} in {o:?}");
        }
        assert!(!o.iter().any(|x| x.contains("fast-math")));
    }

    #[test]
    fn modules_index_their_files() {
        for m in Module::ALL {
            assert_eq!(FILES[m as usize], *m.file());
        }
    }
}

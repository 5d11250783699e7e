//! Kernel checks that need no GPU.
//!
//! * The kernel table matches the `.cu` files (CPU only).
//! * Every kernel file compiles with NVRTC for `compute_90` (PTX) and `sm_90` (cubin), with
//!   the run-time options, and the PTX assembles with `ptxas -arch=sm_90` when `$PTXAS` names
//!   it. CI provides both (`.ci/run` installs the `nvidia-cuda-nvrtc-cu12` and
//!   `nvidia-cuda-nvcc-cu12` wheels, puts libnvrtc on `LD_LIBRARY_PATH` and sets `PTXAS`);
//!   elsewhere these tests print `SKIP: ...` and pass.

use gradcast_cuda::CudaError;
use gradcast_cuda::kernels::{self, BLOCK, FILES, ITEMS, KernelFile, SCAN_THREADS};
use std::path::{Path, PathBuf};
use std::process::Command;

fn kernel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels")
}

/// Names of every `extern "C" __global__ void [__launch_bounds__(..)] NAME(` in a source.
fn declared_entries(src: &str) -> Vec<String> {
    let marker = "extern \"C\" __global__ void ";
    src.match_indices(marker)
        .map(|(at, _)| {
            let mut rest = src[at + marker.len()..].trim_start();
            if let Some(after) = rest.strip_prefix("__launch_bounds__(") {
                rest = after.split_once(')').map_or("", |(_, r)| r).trim_start();
            }
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_entry_point_named_in_rust_exists_in_the_sources() {
    for file in &FILES {
        let declared = declared_entries(file.source);
        for entry in file.entries {
            assert!(
                declared.iter().any(|d| d == entry),
                "{entry} is launched from Rust but not declared in kernels/{}",
                file.name
            );
        }
        for d in &declared {
            assert!(
                file.entries.contains(&d.as_str()),
                "kernels/{} declares {d}, which is missing from the Rust kernel table",
                file.name
            );
        }
    }
}

#[test]
fn every_kernel_file_is_embedded() {
    let mut on_disk: Vec<String> = std::fs::read_dir(kernel_dir())
        .expect("kernels/ directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut table: Vec<String> = FILES.iter().map(|f| f.name.to_owned()).collect();
    table.sort();
    assert_eq!(on_disk, table, "kernels/*.cu and kernels::FILES differ");
    for f in &FILES {
        let text = std::fs::read_to_string(kernel_dir().join(f.name)).expect("read .cu");
        assert_eq!(text, f.source, "{} is stale in the build", f.name);
    }
}

fn define(src: &str, name: &str) -> Option<u32> {
    src.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("#define") && w.next() == Some(name))
            .then(|| w.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

#[test]
fn launch_geometry_matches_the_kernels() {
    assert_eq!(define(kernels::COMMON, "GC_BLOCK"), Some(BLOCK));
    assert_eq!(define(kernels::COMMON, "GC_ITEMS"), Some(ITEMS));
    let count = kernels::Module::Count.file().source;
    assert_eq!(define(count, "GC_SCAN_THREADS"), Some(SCAN_THREADS));
    assert_eq!(kernels::TILE, (BLOCK * ITEMS) as usize);
    assert_eq!(BLOCK % 32, 0, "whole warps");
}

fn nvrtc_or_skip() -> bool {
    if kernels::nvrtc_available() {
        return true;
    }
    eprintln!(
        "SKIP: libnvrtc not found (CI installs nvidia-cuda-nvrtc-cu12 and puts \
         .../nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH)"
    );
    false
}

#[test]
fn every_kernel_compiles_with_nvrtc_and_assembles_for_sm_90() {
    if !nvrtc_or_skip() {
        return;
    }
    let version = kernels::nvrtc_version().expect("nvrtcVersion");
    eprintln!("NVRTC {}.{}", version.0, version.1);
    let ptxas = std::env::var_os("PTXAS").filter(|p| !p.is_empty());
    if ptxas.is_none() {
        eprintln!(
            "SKIP (ptxas part): PTXAS is not set (CI sets it to the ptxas of \
             nvidia-cuda-nvcc-cu12); NVRTC checks still run"
        );
    }
    let dir = std::env::temp_dir().join(format!("gradcast-cuda-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in &FILES {
        // PTX for the virtual architecture, with the run-time options.
        let c = kernels::compile(file, "compute_90").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.options.iter().any(|o| o == "--fmad=false"));
        let ptx = c.ptx.expect("PTX for compute_90");
        assert!(ptx.contains(".target sm_90"), "{}: {ptx:.200}", file.name);
        for entry in file.entries {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{}: no .entry {entry} in the PTX",
                file.name
            );
        }
        // No fused multiply-add and no flush-to-zero: results stay bit-identical to the
        // reference.
        assert!(
            !ptx.contains("fma.rn.f32"),
            "{}: fused f32 multiply-add",
            file.name
        );
        assert!(
            !ptx.contains(".ftz.f32"),
            "{}: flush-to-zero arithmetic",
            file.name
        );

        // A cubin for the real architecture, as at run time.
        let c = kernels::compile(file, "sm_90").unwrap_or_else(|e| panic!("{e}"));
        let cubin = c.cubin.expect("cubin for sm_90");
        assert_eq!(
            &cubin[..4],
            b"\x7fELF",
            "{}: cubin is not an ELF image",
            file.name
        );

        if let Some(ptxas) = &ptxas {
            let input = dir.join(file.name.replace(".cu", ".ptx"));
            let output = dir.join(file.name.replace(".cu", ".cubin"));
            std::fs::write(&input, &ptx).expect("write PTX");
            let out = Command::new(ptxas)
                .arg("-arch=sm_90")
                .arg("-v")
                .arg("-o")
                .arg(&output)
                .arg(&input)
                .output()
                .unwrap_or_else(|e| panic!("PTXAS={ptxas:?} cannot be run: {e}"));
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "ptxas rejected {}: {}\n{log}",
                file.name,
                out.status
            );
            let bin = std::fs::read(&output).expect("ptxas output");
            assert_eq!(&bin[..4], b"\x7fELF");
            eprintln!("ptxas sm_90 {}: ok\n{log}", file.name);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn device_images_are_cubins_and_cached() {
    if !nvrtc_or_skip() {
        return;
    }
    let file = kernels::Module::Vector.file();
    let a = kernels::device_image(file, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
    match &a {
        kernels::Image::Cubin(bin) => assert_eq!(&bin[..4], b"\x7fELF"),
        other => panic!("expected a cubin for sm_90, got {other:?}"),
    }
    assert_eq!(kernels::device_image(file, (9, 0)).unwrap(), a);
    // An architecture this NVRTC cannot target at all is a compile error with the options.
    match kernels::device_image(file, (1, 0)) {
        Err(CudaError::Compile { options, .. }) => {
            assert!(options.iter().any(|o| o == "--gpu-architecture=compute_10"));
        }
        other => panic!("expected a compile error for compute_10, got {other:?}"),
    }
}

#[test]
fn a_compile_error_carries_the_log_and_the_options() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = KernelFile {
        name: "broken.cu",
        source: "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_fn(); }\n",
        entries: &["broken"],
    };
    match kernels::compile(&broken, "compute_90") {
        Err(e @ CudaError::Compile { .. }) => {
            let CudaError::Compile {
                kernel,
                ref options,
                ref log,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(kernel, "broken.cu");
            assert!(log.contains("undefined_fn"), "log: {log}");
            // The #line directive makes the log point into the .cu file itself.
            assert!(log.contains("broken.cu(1)"), "log: {log}");
            assert!(options.iter().any(|o| o == "--gpu-architecture=compute_90"));
            let text = e.to_string();
            assert!(
                text.contains("undefined_fn") && text.contains("--fmad=false"),
                "{text}"
            );
            assert_eq!(
                gradcast_core::Classify::kind(&e),
                gradcast_core::ErrorKind::KernelCompile
            );
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

//! The conformance suite, instantiated once per enabled backend feature. A failing test's
//! name says which backend failed (`cpu::mass_conservation`).
//!
//! The CPU backend is checked in several configurations, because its output must not depend
//! on any of them: the default fast path (the widest SIMD the CPU has, every thread), the
//! portable path, the fast path cut into many small chunks over 3 threads (chunk seams, the
//! cap's split inside a chunk, the exclusive scan), the fast path's scalar fallback on 2
//! threads, AVX2 on 2 threads where the CPU also has AVX-512, and AVX-512 on 4 threads
//! (the last two print SKIP where they would repeat the default or the CPU lacks them).
// A std-only test binary.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

#[cfg(feature = "cpu")]
mod cpu {
    gradcast_conformance::conformance_suite!(Some(gradcast_cpu::Cpu::default()));
}

#[cfg(feature = "cpu")]
mod cpu_portable {
    gradcast_conformance::conformance_suite!(Some(gradcast_cpu::Cpu::portable()));
}

#[cfg(feature = "cpu")]
mod cpu_chunked {
    use gradcast_cpu::{Cpu, CpuConfig};
    fn backend() -> Cpu {
        Cpu::new(CpuConfig::fast().with_threads(3).with_min_chunk(32))
    }
    gradcast_conformance::conformance_suite!(Some(backend()));
}

#[cfg(feature = "cpu")]
mod cpu_scalar {
    use gradcast_cpu::{Cpu, CpuConfig};
    fn backend() -> Cpu {
        Cpu::new(
            CpuConfig::fast()
                .with_threads(2)
                .with_min_chunk(64)
                .with_simd(false),
        )
    }
    gradcast_conformance::conformance_suite!(Some(backend()));
}

#[cfg(feature = "cpu")]
mod cpu_avx2 {
    use gradcast_cpu::{Cpu, CpuConfig, Simd};
    fn backend() -> Option<Cpu> {
        // The default `cpu` configuration already runs AVX2 where it is the best path.
        let best = Cpu::default().simd();
        let cpu = Cpu::new(
            CpuConfig::fast()
                .with_threads(2)
                .with_min_chunk(512)
                .with_max_simd(Simd::Avx2),
        );
        if cpu.simd() != Simd::Avx2 || best == Simd::Avx2 {
            println!(
                "SKIP: AVX2 below a wider path is not this CPU's case (default uses {best:?})"
            );
            return None;
        }
        Some(cpu)
    }
    gradcast_conformance::conformance_suite!(backend());
}

#[cfg(feature = "cpu")]
mod cpu_avx512 {
    use gradcast_cpu::{Cpu, CpuConfig, Simd};
    fn backend() -> Option<Cpu> {
        let cpu = Cpu::new(
            CpuConfig::fast()
                .with_threads(4)
                .with_min_chunk(512)
                .with_max_simd(Simd::Avx512),
        );
        if cpu.simd() != Simd::Avx512 {
            println!("SKIP: no AVX-512 on this CPU");
            return None;
        }
        Some(cpu)
    }
    gradcast_conformance::conformance_suite!(backend());
}

/// The first OpenCL device (PoCL on CI). Without a platform each test prints `SKIP:`, or
/// fails when `GRADCAST_REQUIRE_BACKENDS` names `opencl` (as CI sets it).
#[cfg(feature = "opencl")]
mod opencl {
    gradcast_conformance::conformance_suite!(gradcast_conformance::backend_or_skip(
        "opencl",
        gradcast_opencl::OpenCl::first_device()
    ));
}

/// CUDA device 0. Without a driver or a GPU (CI has neither) each test prints
/// `SKIP: cuda: ...` and passes; `GRADCAST_REQUIRE_BACKENDS=cuda` turns that into a failure
/// on a machine that must have one.
#[cfg(feature = "cuda")]
mod cuda {
    gradcast_conformance::conformance_suite!(gradcast_conformance::backend_or_skip(
        "cuda",
        gradcast_cuda::Cuda::new(0)
    ));
}

/// The backend features this build of the suite has.
const COMPILED: &[&str] = &[
    #[cfg(feature = "cpu")]
    "cpu",
    #[cfg(feature = "opencl")]
    "opencl",
    #[cfg(feature = "cuda")]
    "cuda",
];

/// A backend that `GRADCAST_REQUIRE_BACKENDS` names must be compiled in: requiring OpenCL in
/// a build without the `opencl` feature would otherwise pass with no OpenCL test at all.
#[test]
fn required_backends_are_compiled_in() {
    gradcast_conformance::check_required_compiled(COMPILED);
}

/// The known-answer vectors also hold for the oracle itself (if this fails, the reference
/// codec, not a backend, disagrees with the independent implementation).
#[test]
fn reference_passes_known_answer_vectors() {
    gradcast_conformance::properties::kat::known_answer_vectors(&gradcast_core::backend::Reference);
}

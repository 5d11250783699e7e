//! The conformance suite, instantiated once per enabled backend feature. A failing test's
//! name says which backend failed (`cpu::mass_conservation`).
//!
//! The CPU backend is checked in several configurations, because its output must not depend
//! on any of them: the default fast path (AVX2 when present, every thread), the portable
//! path, the fast path cut into many small chunks over 3 threads (chunk seams, the cap's
//! split inside a chunk, the exclusive scan), and the fast path's scalar fallback.
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

#[cfg(feature = "opencl")]
mod opencl {
    gradcast_conformance::conformance_suite!(gradcast_conformance::backend_or_skip(
        gradcast_opencl::OpenCl::first_device()
    ));
}

#[cfg(feature = "cuda")]
mod cuda {
    gradcast_conformance::conformance_suite!(gradcast_conformance::backend_or_skip(
        gradcast_cuda::Cuda::new(0)
    ));
}

/// The known-answer vectors also hold for the oracle itself (if this fails, the reference
/// codec, not a backend, disagrees with the independent implementation).
#[test]
fn reference_passes_known_answer_vectors() {
    gradcast_conformance::properties::known_answer_vectors(&gradcast_core::backend::Reference);
}

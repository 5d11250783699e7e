//! `--backend cpu|opencl|cuda`: which compute backends this build has.

use crate::error::CliError;
use core::fmt;
use core::str::FromStr;

/// A backend named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// The CPU backend (always compiled in).
    Cpu,
    /// OpenCL (cargo feature `opencl`).
    OpenCl,
    /// CUDA (cargo feature `cuda`).
    Cuda,
}

/// The backends compiled into this build.
pub fn compiled_in() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    if cfg!(feature = "opencl") {
        v.push("opencl");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

impl FromStr for BackendChoice {
    type Err = CliError;

    fn from_str(s: &str) -> Result<Self, CliError> {
        let choice = match s {
            "cpu" => BackendChoice::Cpu,
            "opencl" => BackendChoice::OpenCl,
            "cuda" => BackendChoice::Cuda,
            other => {
                return Err(CliError::Usage(format!(
                    "--backend {other:?}: unknown backend (this build has: {})",
                    compiled_in().join(", ")
                )));
            }
        };
        if !compiled_in().contains(&s) {
            return Err(CliError::Backend(format!(
                "`{s}` is not compiled into this build (this build has: {}); rebuild with \
                 `--features {s}`, e.g. `cargo run --release -p gradcast-cli --features {s} -- ...`",
                compiled_in().join(", ")
            )));
        }
        Ok(choice)
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Cpu => "cpu",
            BackendChoice::OpenCl => "opencl",
            BackendChoice::Cuda => "cuda",
        })
    }
}

/// The CPU backend gradcast trains on with `--backend cpu`: `gradcast-cpu`'s fast path
/// (AVX2 when the processor has it, threads over chunks for large vectors).
///
/// # Errors
/// None today; kept fallible like the device backends.
pub fn cpu() -> Result<gradcast_cpu::Cpu, CliError> {
    Ok(gradcast_cpu::Cpu::default())
}

/// The first OpenCL device (`--backend opencl`).
///
/// # Errors
/// [`CliError::Backend`] when no OpenCL platform or device is present.
#[cfg(feature = "opencl")]
pub fn opencl() -> Result<gradcast_opencl::OpenCl, CliError> {
    gradcast_opencl::OpenCl::first_device()
        .map_err(|e| CliError::Backend(format!("no usable OpenCL device: {e}")))
}

/// CUDA device 0 (`--backend cuda`).
///
/// # Errors
/// [`CliError::Backend`] when the CUDA driver or a device is missing.
#[cfg(feature = "cuda")]
pub fn cuda() -> Result<gradcast_cuda::Cuda, CliError> {
    if !gradcast_cuda::driver_available() {
        return Err(CliError::Backend(
            "the CUDA driver (libcuda) is not available on this machine".into(),
        ));
    }
    gradcast_cuda::Cuda::new(0).map_err(|e| CliError::Backend(format!("CUDA device 0: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_unknown_names_are_usage_errors() {
        assert_eq!("cpu".parse::<BackendChoice>().unwrap(), BackendChoice::Cpu);
        assert!(matches!(
            "tpu".parse::<BackendChoice>(),
            Err(CliError::Usage(_))
        ));
        if !cfg!(feature = "cuda") {
            let e = "cuda".parse::<BackendChoice>().unwrap_err().to_string();
            assert!(e.contains("not compiled into this build"), "{e}");
        }
    }
}

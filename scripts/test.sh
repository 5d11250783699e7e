#!/usr/bin/env bash
# The test command of the README: every test of the workspace with every backend that can be
# built on this machine, then the loom models of the core's concurrent code.
#
# Prerequisites (what .ci/run installs on a fresh machine):
# - OpenCL backend: the ICD loader and PoCL: `apt-get install ocl-icd-opencl-dev pocl-opencl-icd`
# - MPI transport: Open MPI and libclang: `apt-get install libopenmpi-dev openmpi-bin libclang-dev`
# - CUDA kernel compile checks: NVRTC and ptxas from PyPI, found through LD_LIBRARY_PATH and
#   PTXAS (see .ci/run). There is no GPU in CI: device tests print SKIP lines.
# - The Cortex-M4F firmware under QEMU (embedded/tests/qemu.rs): `apt-get install
#   qemu-system-arm` and `rustup target add thumbv7em-none-eabihf`. GRADCAST_REQUIRE_QEMU=1
#   (set by .ci/run) turns their SKIP into a failure.
# Whatever is missing is skipped with a printed SKIP line, and everything else still runs.
set -euo pipefail
cd "$(dirname "$0")/.."

exclude=()
conformance_features="gradcast-conformance/cuda"
cli_features="gradcast-cli/cuda"
if ldconfig -p 2>/dev/null | grep -q 'libOpenCL\.so '; then
  conformance_features+=",gradcast-conformance/opencl"
  cli_features+=",gradcast-cli/opencl"
else
  echo "SKIP: OpenCL backend (no libOpenCL.so: apt-get install ocl-icd-opencl-dev pocl-opencl-icd)"
  exclude+=(--exclude gradcast-opencl)
fi
if command -v mpicc >/dev/null 2>&1; then
  # gradcast-candle's MPI check (tests/mpi.rs) starts itself under `mpirun -np 2`.
  cli_features+=",gradcast-cli/mpi,gradcast-candle/mpi"
else
  echo "SKIP: MPI transport (no mpicc: apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
  exclude+=(--exclude gradcast-mpi)
fi

# The conformance suite skips a backend whose device is absent, unless
# GRADCAST_REQUIRE_BACKENDS names it (CI requires opencl): say which case applies.
echo "== backends the conformance suite requires: ${GRADCAST_REQUIRE_BACKENDS:-none} (GRADCAST_REQUIRE_BACKENDS)"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "CUDA: a GPU is present, the CUDA conformance tests run on device 0"
elif [[ ",${GRADCAST_REQUIRE_BACKENDS:-}," == *,cuda,* ]]; then
  echo "CUDA: required but no GPU found: the CUDA conformance tests will fail"
else
  echo "SKIP: CUDA conformance tests (no NVIDIA driver or GPU here): each prints SKIP and passes; GRADCAST_REQUIRE_BACKENDS=cuda would make them fail"
fi

if ! command -v qemu-system-arm >/dev/null 2>&1; then
  echo "SKIP: the firmware under QEMU (no qemu-system-arm: apt-get install qemu-system-arm)"
fi

echo "== cargo test --workspace ${exclude[*]} --features $conformance_features,$cli_features"
cargo test --workspace "${exclude[@]}" --features "$conformance_features,$cli_features"

echo "== loom models of the queue and the barrier"
LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg gradcast_loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p gradcast-core --release --test loom

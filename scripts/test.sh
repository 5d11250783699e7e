#!/usr/bin/env bash
# The test command of the README: every test of the workspace, every backend that can be built
# here, and the loom models of the core's concurrent code.
#
# Prerequisites (what .ci/run installs on a fresh machine): for the OpenCL backend, the OpenCL
# ICD loader and PoCL (`apt-get install ocl-icd-opencl-dev pocl-opencl-icd`); for the CUDA
# kernel compile checks, NVRTC and ptxas from PyPI (LD_LIBRARY_PATH and PTXAS, see .ci/run).
# Whatever is missing is skipped with a printed SKIP line, and the rest still runs.
set -euo pipefail
cd "$(dirname "$0")/.."

features="cuda"
if ldconfig -p 2>/dev/null | grep -q 'libOpenCL\.so\b'; then
  features="$features,opencl"
else
  echo "SKIP: OpenCL backend (no libOpenCL.so; apt-get install ocl-icd-opencl-dev pocl-opencl-icd)"
fi

echo "== cargo test --workspace --features $features"
cargo test --workspace --features "$features"

echo "== loom models of the queue and the barrier"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p gradcast-core --release --test loom

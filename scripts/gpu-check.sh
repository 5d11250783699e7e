#!/usr/bin/env bash
# GPU check of the CUDA backend (issue 7): on a machine with an NVIDIA GPU and driver,
#   1. finds NVRTC (libnvrtc.so.12) and puts it on LD_LIBRARY_PATH,
#   2. builds gradcast-cuda (release) and runs its tests, which now run on the device,
#   3. runs the conformance suite with --features cuda,
#   3b. runs the CPU backend's tests, the CPU conformance suite and the CPU encode benchmark on
#      the host CPU (which usually has AVX-512: the only place its compress path runs),
#   4. runs the encode benchmark (N = 2^26..2^28, density 1e-3, as a ratio of a device-to-device
#      copy measured in the same run) and, if torch with CUDA is importable, a torch.nonzero
#      threshold encode of the same data on the same GPU,
#   5. prints a short table (also written to $OUT_DIR/summary.md).
#
# Usage: scripts/gpu-check.sh            (from the repository root)
# Environment:
#   CARGO_FLAGS   extra cargo flags, e.g. --offline on a machine without network
#   BENCH_ITERS   timed iterations per size (default 20)
#   BENCH_LOG2    sizes as log2, comma separated (default 26,27,28)
#   OUT_DIR       where logs and the summary go (default target/gpu-check)
# Exit status: 0 when every step passed, 1 otherwise, 3 when there is no GPU/driver at all.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-target/gpu-check}
BENCH_ITERS=${BENCH_ITERS:-20}
BENCH_LOG2=${BENCH_LOG2:-26,27,28}
CARGO_FLAGS=${CARGO_FLAGS:-}
mkdir -p "$OUT_DIR"

declare -a STEP_NAMES=() STEP_RESULTS=()
record() { STEP_NAMES+=("$1"); STEP_RESULTS+=("$2"); }
# run_step NAME LOGFILE CMD...: runs CMD, logs to LOGFILE, records pass/FAIL with the time.
run_step() {
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*"
  if "$@" >"$log" 2>&1; then
    record "$name" "pass ($((SECONDS - t0)) s)"
  else
    record "$name" "FAIL ($((SECONDS - t0)) s, see $log)"
    tail -n 40 "$log"
  fi
}

# ---- 1. the GPU and the driver
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no NVIDIA GPU or driver on this machine (nvidia-smi fails)"
  exit 3
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
echo "GPU: $GPU_NAME (driver $DRIVER)"

# ---- 2. NVRTC: already loadable, or from a known place (CI's wheel dir, a toolkit, the
# nvidia-cuda-nvrtc-cu12 wheel that torch depends on), or installed from PyPI as a last resort.
have_nvrtc() {
  python3 - <<'PY' 2>/dev/null
import ctypes, sys
for name in ("libnvrtc.so.12", "libnvrtc.so"):
    try:
        ctypes.CDLL(name); sys.exit(0)
    except OSError:
        pass
sys.exit(1)
PY
}
if ! have_nvrtc; then
  for dir in "$PWD/target/cuda-py/nvidia/cuda_nvrtc/lib" /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))' 2>/dev/null); do
    if [ -e "$dir/libnvrtc.so.12" ] || [ -e "$dir/libnvrtc.so" ]; then
      export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
fi
if ! have_nvrtc; then
  echo "NVRTC not found; trying pip (needs network)"
  python3 -m pip install -q --disable-pip-version-check --target "$PWD/target/cuda-py" \
    nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86 || true
  export LD_LIBRARY_PATH="$PWD/target/cuda-py/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if have_nvrtc; then record "NVRTC found" "pass"; else record "NVRTC found" "FAIL (kernels cannot compile)"; fi
if [ -z "${PTXAS:-}" ] && [ -x "$PWD/target/cuda-py/nvidia/cuda_nvcc/bin/ptxas" ]; then
  export PTXAS="$PWD/target/cuda-py/nvidia/cuda_nvcc/bin/ptxas"
fi

# ---- 3. build and test
# shellcheck disable=SC2086
run_step "build (release)" "$OUT_DIR/build.log" \
  cargo build $CARGO_FLAGS --release -p gradcast-cuda --all-targets
# shellcheck disable=SC2086
run_step "gradcast-cuda tests on the GPU" "$OUT_DIR/cuda-tests.log" \
  cargo test $CARGO_FLAGS --release -p gradcast-cuda -- --nocapture
# shellcheck disable=SC2086
run_step "conformance --features cuda" "$OUT_DIR/conformance.log" \
  cargo test $CARGO_FLAGS --release -p gradcast-conformance --features cuda -- --nocapture
# On a GPU machine a skipped device test is a failure: the check must really run.
for log in cuda-tests conformance; do
  if grep -q "SKIP:" "$OUT_DIR/$log.log" 2>/dev/null; then
    record "no skips in $log" "FAIL ($(grep -m1 'SKIP:' "$OUT_DIR/$log.log"))"
  else
    record "no skips in $log" "pass"
  fi
done

# ---- 3b. the CPU backend's SIMD paths on this host's CPU. Device machines usually have
# AVX-512, which the development and CI machines lack, so this is where its compress path
# runs: its tests (SKIP where the CPU has no AVX-512, then recorded as not run), the CPU
# conformance suite (the `cpu_avx512` and `cpu_avx2` modules), and the encode benchmark.
CPU_FLAGS=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
# shellcheck disable=SC2086
run_step "cpu backend tests (host CPU)" "$OUT_DIR/cpu-tests.log" \
  cargo test $CARGO_FLAGS --release -p gradcast-cpu -- --nocapture
# shellcheck disable=SC2086
run_step "conformance, CPU paths (host CPU)" "$OUT_DIR/cpu-conformance.log" \
  cargo test $CARGO_FLAGS --release -p gradcast-conformance -- --nocapture
if [[ " $CPU_FLAGS " == *" avx512f "* ]]; then
  for log in cpu-tests cpu-conformance; do
    if grep -q "SKIP: no AVX-512" "$OUT_DIR/$log.log" 2>/dev/null; then
      record "AVX-512 ran in $log" "FAIL (the CPU has avx512f but the path was skipped)"
    else
      record "AVX-512 ran in $log" "pass"
    fi
  done
else
  record "AVX-512 path" "not run (this host CPU has no avx512f)"
fi
# shellcheck disable=SC2086
GRADCAST_BENCH_REPS=9 run_step "cpu encode benchmark (host CPU)" "$OUT_DIR/cpu-bench.log" \
  cargo bench $CARGO_FLAGS -p gradcast-cpu --bench encode

# ---- 4. benchmarks
# shellcheck disable=SC2086
run_step "encode benchmark" "$OUT_DIR/bench.log" \
  cargo run $CARGO_FLAGS --release -p gradcast-cuda --example bench -- --iters "$BENCH_ITERS" --log2 "$BENCH_LOG2"

TORCH_NOTE=""
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  run_step "torch.nonzero encode" "$OUT_DIR/torch.log" python3 - "$BENCH_ITERS" "$BENCH_LOG2" <<'PY'
# The same data as gradcast_cuda::bench::synthetic (same closed form, same candidate set),
# encoded the DL4J/torch way: nonzero of the threshold mask, signed 1-based indices, debit,
# message copied to the host.
import sys, time, torch
iters = int(sys.argv[1]); sizes = [1 << int(k) for k in sys.argv[2].split(",")]
tau, period = 1e-3, 1000
dev = torch.device("cuda")
def median(f):
    for _ in range(2): f()
    ts = []
    for _ in range(iters):
        torch.cuda.synchronize(); t = time.perf_counter(); f(); torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts) // 2]
for n in sizes:
    i = torch.arange(n, dtype=torch.int64, device=dev)
    h = (i * 2654435761) & 0xFFFFFFFF
    del i
    cand = (h % period) == 0
    mag = tau * (1000 + ((h >> 20) & 7)).to(torch.float32)
    neg = ((h >> 16) & 1) == 1
    small = ((h % 1000).to(torch.float32) / 1000.0 - 0.5) * tau
    x = torch.where(cand, torch.where(neg, -mag, mag), small).to(torch.float32).contiguous()
    k = int(cand.sum())
    del h, cand, mag, neg, small
    def encode():
        idx = torch.nonzero(x.abs() >= tau).squeeze(1)
        v = x[idx]
        s = torch.sign(v)
        entries = (idx + 1).to(torch.int32) * s.to(torch.int32)
        x[idx] = v - s * tau
        return entries.cpu()
    y = torch.empty_like(x)
    t_enc = median(encode)
    t_copy = median(lambda: y.copy_(x))
    print(f"TORCH n={n} candidates={k} encode_ms={t_enc*1e3:.4f} copy_ms={t_copy*1e3:.4f} ratio={t_copy/t_enc:.3f}", flush=True)
    del x, y
    torch.cuda.empty_cache()
PY
else
  TORCH_NOTE="torch with CUDA is not importable on this machine: no torch.nonzero comparison"
  record "torch.nonzero encode" "not run ($TORCH_NOTE)"
fi

# ---- 5. the table
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
{
  echo "GPU: $GPU_NAME, driver $DRIVER, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "| step | result |"
  echo "|---|---|"
  for idx in "${!STEP_NAMES[@]}"; do echo "| ${STEP_NAMES[$idx]} | ${STEP_RESULTS[$idx]} |"; done
  echo
  echo "| N | candidates | gradcast encode ms | d2d copy ms | gradcast encode/copy (target >= 0.6) | torch.nonzero encode ms | torch encode/copy |"
  echo "|---|---|---|---|---|---|---|"
  grep '^BENCH ' "$OUT_DIR/bench.log" 2>/dev/null | while read -r line; do
    n=$(echo "$line" | field n)
    t=$(grep "^TORCH n=$n " "$OUT_DIR/torch.log" 2>/dev/null | head -n 1)
    echo "| 2^$(awk -v n="$n" 'BEGIN { printf "%d", log(n) / log(2) + 0.5 }') | $(echo "$line" | field candidates) | $(echo "$line" | field encode_ms) | $(echo "$line" | field copy_ms) | $(echo "$line" | field ratio) | $( [ -n "$t" ] && echo "$t" | field encode_ms || echo n/a) | $( [ -n "$t" ] && echo "$t" | field ratio || echo n/a) |"
  done
  if [ -n "$TORCH_NOTE" ]; then echo; echo "$TORCH_NOTE"; fi
  echo
  echo "CPU backend on the host CPU ($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads, load $(cut -d' ' -f1-3 /proc/loadavg)):"
  echo
  grep '^|' "$OUT_DIR/cpu-bench.log" 2>/dev/null || echo "(no CPU benchmark output)"
} | tee "$OUT_DIR/summary.md"

for r in "${STEP_RESULTS[@]}"; do
  case $r in FAIL*) exit 1 ;; esac
done
exit 0

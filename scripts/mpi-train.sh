#!/usr/bin/env bash
# The MPI check (issue 10): builds `gradcast` with the `mpi` feature, runs `gradcast train
# --transport mpi` on 4 ranks under mpirun (one worker per rank: the same 4-worker job as the
# in-process default), and fails unless
#   * every rank reports the same gradcast parameter checksum (bit-identical replicas), and
#   * gradcast's final test accuracy is within 1 percentage point of the dense MPI allreduce
#     run of the same model in the same job (the CLI issue's bar).
#
# Needs Open MPI and libclang (apt: libopenmpi-dev openmpi-bin libclang-dev).
# Environment: GRADCAST_MPI_RANKS (default 4), CARGO_TARGET_DIR (default target),
# extra `gradcast train` options as arguments (e.g. `--epochs 20`).
# About 10 s of training on 2 cores after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

ranks="${GRADCAST_MPI_RANKS:-4}"
target="${CARGO_TARGET_DIR:-target}"
for tool in mpirun mpicc; do
    if ! command -v "$tool" >/dev/null; then
        echo "mpi-train: $tool not found; install Open MPI (apt-get install -y libopenmpi-dev openmpi-bin)" >&2
        exit 1
    fi
done

echo "== building gradcast with --features mpi"
cargo build --release -p gradcast-cli --features mpi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
log="$out/train.log"
echo "== mpirun -np $ranks gradcast train --transport mpi"
status=0
timeout 600 mpirun --allow-run-as-root --oversubscribe -np "$ranks" \
    "$target/release/gradcast" train --transport mpi --workers 1 --out "$out/run" "$@" \
    >"$log" 2>&1 || status=$?
cat "$log"
if [ "$status" -ne 0 ]; then
    echo "mpi-train: FAIL: mpirun exited with status $status" >&2
    exit 1
fi

# Every rank prints: rank R/S: checksum gradcast <16 hex> dense <16 hex>
sums="$(sed -n 's/^rank \([0-9]*\)\/[0-9]*: checksum gradcast \([0-9a-f]\{16\}\) .*/\1 \2/p' "$log")"
reported="$(printf '%s\n' "$sums" | grep -c . || true)"
distinct="$(printf '%s\n' "$sums" | awk 'NF { print $2 }' | sort -u | grep -c . || true)"
if [ "$reported" -ne "$ranks" ]; then
    echo "mpi-train: FAIL: $reported of $ranks ranks reported a checksum" >&2
    exit 1
fi
if [ "$distinct" -ne 1 ]; then
    echo "mpi-train: FAIL: the ranks report $distinct different gradcast checksums:" >&2
    printf '%s\n' "$sums" >&2
    exit 1
fi

# summary.json (serde_json, pretty): the top-level "dense" and "gradcast" objects each hold a
# "test_accuracy" field at the first level of indentation inside them.
json="$out/run/summary.json"
if [ ! -s "$json" ]; then
    echo "mpi-train: FAIL: rank 0 wrote no $json" >&2
    exit 1
fi
read -r dense gradcast < <(awk '
    /^  "dense": \{/    { run = "dense" }
    /^  "gradcast": \{/ { run = "gradcast" }
    /^  \}/             { run = "" }
    run != "" && /^    "test_accuracy":/ { gsub(/[",]/, ""); acc[run] = $2 }
    END { print acc["dense"], acc["gradcast"] }' "$json")
if [ -z "${dense:-}" ] || [ -z "${gradcast:-}" ]; then
    echo "mpi-train: FAIL: no dense.test_accuracy / gradcast.test_accuracy in $json" >&2
    exit 1
fi
if ! awk -v d="$dense" -v g="$gradcast" 'BEGIN { gap = 100 * (g - d); if (gap < 0) gap = -gap; exit !(gap <= 1.0) }'; then
    echo "mpi-train: FAIL: gradcast accuracy $gradcast is more than 1 pp from dense $dense" >&2
    exit 1
fi
echo "mpi-train: OK: $ranks ranks, gradcast checksum $(printf '%s\n' "$sums" | awk 'NR == 1 { print $2 }') on every rank; test accuracy dense $dense, gradcast $gradcast (within 1 pp)"

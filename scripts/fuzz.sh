#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30), seeding the corpora from the
# known-answer vectors. Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"; shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
python3 scripts/fuzz_seeds.py fuzz/corpus
cargo run -q -p gradcast-core --example checkpoint_seed -- fuzz/corpus/checkpoint_restore
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  if ! (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048) >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "FAIL: fuzz target $t failed (crash artifacts, if any, in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E '^#[0-9]+ +DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
done

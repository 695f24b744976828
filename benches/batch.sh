#!/usr/bin/env bash
# Batch tokenization, build against build: each binary serves a fresh
# `serve --dev` in turn, `tokenize-batch --batch 1000 --concurrency 4` runs
# DURATION against it (after a 3 s start that creates the tenant's keys), in
# alternating rounds so drift of this noisy VM hits every build alike.
# Prints items/s, p99 and the server's CPU per item (user + system of the
# whole process: request path, writer thread, flushes and compaction).
#
#   benches/batch.sh "BIN_A BIN_B ..." [ROUNDS] [DURATION]
#
# BATCH_PERF=DIR records `perf record -g` of the server for 8 s of each run
# into DIR/perf-batch-ROUND-N.data (N: the binary's position).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bins="$1"; rounds="${2:-2}"; duration="${3:-12s}"
server_work_dir
lift_rate_limits

run() { # round, position, binary
  local dir="$work/$1-$2" perf="" before after json
  start_dev "$3" "$dir"
  "$3" load --dev "$dir" --target "$api" --op tokenize-batch --batch 1000 --concurrency 4 \
    --duration 3s --warmup 0s --json >/dev/null
  before="$(server_cpu "$server")"
  if [ -n "${BATCH_PERF:-}" ]; then
    (sleep 3; perf record -g -p "$server" -o "$BATCH_PERF/perf-batch-$1-$2.data" -- sleep 8 >/dev/null 2>&1) &
    perf=$!
  fi
  json="$("$3" load --dev "$dir" --target "$api" --op tokenize-batch --batch 1000 --concurrency 4 \
    --duration "$duration" --warmup 0s --json)"
  after="$(server_cpu "$server")"
  [ -z "$perf" ] || wait "$perf" || true
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  python3 - "$1" "$2" "$3" "$before" "$after" "$json" <<'PY'
import json, sys
rnd, pos, binary, b, a, r = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), json.loads(sys.argv[6])
items = max(r["items_per_s"] * r["duration_s"], 1)
print(f"round {rnd} bin {pos} {r['items_per_s']:>9.0f} items/s  p99 {r['latency_ms']['p99']:7.2f} ms  "
      f"cpu {(a - b) / items * 1e6:6.2f} µs/item  errors {sum(r['errors'].values())}  {binary}", flush=True)
PY
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $rounds rounds of $duration"
for round in $(seq "$rounds"); do
  pos=0
  for bin in $bins; do
    pos=$((pos + 1))
    run "$round" "$pos" "$bin"
  done
done

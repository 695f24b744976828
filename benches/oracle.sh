#!/usr/bin/env bash
# The oracle guard's cost: one binary serving a fresh `serve --dev` with the
# guard on and with it off ([oracle_guard] enabled = false), in alternating
# rounds so drift of this noisy VM hits both alike. Per round and side:
# tokenize at 64 connections and batch tokenize (1,000 cards a call, 4
# connections), throughput and the server's CPU per request or item. The
# load tool's cards are random (every BIN, length and brand), so the guard
# does all its work — hashing, counting, evicting single-card groups once
# full — and refuses nothing.
#
#   benches/oracle.sh BIN [ROUNDS] [DURATION]     (ORACLE_OPS="tokenize-batch": one operation)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="$1"; rounds="${2:-3}"; duration="${3:-10s}"
server_work_dir
lift_rate_limits

side() { # round, label, enabled
  local dir="$work/$1-$2" before json
  CARDVAULT_ORACLE_GUARD__ENABLED="$3" start_dev "$bin" "$dir"
  for op in ${ORACLE_OPS:-tokenize tokenize-batch}; do
    local args=(--op "$op" --concurrency 64)
    [ "$op" = tokenize-batch ] && args=(--op tokenize-batch --batch 1000 --concurrency 4)
    "$bin" load --dev "$dir" --target "$api" "${args[@]}" --duration 2s --warmup 0s --json >/dev/null
    before="$(server_cpu "$server")"
    json="$("$bin" load --dev "$dir" --target "$api" "${args[@]}" --duration "$duration" --warmup 0s --json)"
    python3 - "$1" "$2 $op" "$before" "$(server_cpu "$server")" "$json" <<'PY'
import json, sys
rnd, label, before, after, r = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5])
rate = r.get("items_per_s") or r["throughput_per_s"]
cpu = (after - before) / max(rate * r["duration_s"], 1) * 1e6
errors = sum(r["errors"].values())
print(f"round {rnd} {label:<24} {rate:9.0f} /s  p99 {r['latency_ms']['p99']:6.2f} ms  cpu {cpu:6.2f} µs/item  errors {errors}", flush=True)
PY
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; $rounds rounds of $duration; guard on vs off"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    side "$round" on true; side "$round" off false
  else
    side "$round" off false; side "$round" on true
  fi
done

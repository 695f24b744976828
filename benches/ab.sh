#!/usr/bin/env bash
# A/B over real mTLS: two cardvault binaries, each serving a fresh
# `serve --dev` in turn, driven by the same load generator (B's), in
# alternating rounds so drift of this noisy VM hits both alike. Prints one
# line per round and side: tokenize and detokenize at 64 connections, with
# the server's CPU per request (utime+stime over warm-up + measurement).
#
#   benches/ab.sh BIN_A BIN_B [ROUNDS] [DURATION]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin_a="$1"; bin_b="$2"; rounds="${3:-3}"; duration="${4:-10s}"
load="$bin_b"
server_work_dir
lift_rate_limits

side() { # label, binary
  local label="$1" bin="$2" dir="$work/$1-$RANDOM"
  RUST_LOG=warn "$bin" serve --dev --data-dir "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
  server=$!
  local api
  api="$(await_api "$dir.out")"
  for op in ${AB_OPS:-tokenize detokenize}; do
    local before json
    before="$(server_cpu "$server")"
    json="$("$load" load --dev "$dir" --target "$api" --duration "$duration" --warmup 2s --json --op "$op" --concurrency 64)"
    python3 - "$label $op" "$before" "$(server_cpu "$server")" "$json" <<'PY'
import json, sys
label, before, after, r = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
l = r["latency_ms"]
cpu = (after - before) / max(r["throughput_per_s"] * (r["duration_s"] + 2), 1) * 1e6
print(f"{label:<14} c=64 {r['throughput_per_s']:9.0f} req/s p50 {l['p50']:6.2f} p99 {l['p99']:6.2f} ms cpu {cpu:6.1f} µs/req errors {sum(r['errors'].values())}")
PY
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; A=$bin_a B=$bin_b; $rounds rounds of $duration"
for round in $(seq "$rounds"); do
  side A "$bin_a"
  side B "$bin_b"
done

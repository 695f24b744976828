#!/usr/bin/env bash
# A/B over real mTLS: two cardvault binaries, each serving a fresh
# `serve --dev` in turn, driven by the same load generator (B's), in
# alternating rounds so drift of this noisy VM hits both alike. Prints one
# line per round and side: tokenize and detokenize at 64 connections.
#
#   benches/ab.sh BIN_A BIN_B [ROUNDS] [DURATION]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin_a="$1"; bin_b="$2"; rounds="${3:-3}"; duration="${4:-10s}"
load="$bin_b"
work="$(mktemp -d)"
server=""
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

side() { # label, binary
  local label="$1" bin="$2" dir="$work/$1-$RANDOM"
  RUST_LOG=warn "$bin" serve --dev --data-dir "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
  server=$!
  local api
  api="$(await_api "$dir.out")"
  for op in ${AB_OPS:-tokenize detokenize}; do
    "$load" load --dev "$dir" --target "$api" --duration "$duration" --warmup 2s --json --op "$op" --concurrency 64 |
      python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_ms']; print(f\"$label $op c=64 {r['throughput_per_s']:9.0f} req/s p50 {l['p50']:6.2f} p99 {l['p99']:6.2f} ms errors {sum(r['errors'].values())}\")"
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; A=$bin_a B=$bin_b; $rounds rounds of $duration"
for round in $(seq "$rounds"); do
  side A "$bin_a"
  side B "$bin_b"
done

#!/usr/bin/env bash
# Tokenize (and detokenize) at 64 connections on the three KEK providers —
# a key file, a SoftHSM2 token (`--kek pkcs11`) and custodian shares
# (`--kek shamir`, unsealed with two shares first) — one binary, fresh
# `serve --dev` directories, in alternating rounds so drift of this noisy VM
# hits all three alike. The KEK is used when a tenant's keys are made or
# unwrapped, never per request; this measures that claim.
#
#   benches/kek.sh BIN [ROUNDS] [DURATION]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="$1"; rounds="${2:-3}"; duration="${3:-10s}"
server_work_dir

side() { # provider
  local kek="$1" dir="$work/$1-$RANDOM"
  RUST_LOG=warn "$bin" serve --dev "$dir" --kek "$kek" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
  server=$!
  local api
  api="$(await_api "$dir.out")"
  if [ "$kek" = shamir ]; then
    for c in custodian-1 custodian-2; do
      "$bin" unseal --dev "$dir" --addr "$api" --share "$dir/custodians/$c.share" >/dev/null
    done
  fi
  for op in ${KEK_OPS:-tokenize detokenize}; do
    "$bin" load --dev "$dir" --target "$api" --duration "$duration" --warmup 2s --json --op "$op" --concurrency 64 |
      python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_ms']; print(f\"$kek $op c=64 {r['throughput_per_s']:9.0f} req/s p50 {l['p50']:6.2f} p99 {l['p99']:6.2f} ms errors {sum(r['errors'].values())}\")"
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; $rounds rounds of $duration"
for round in $(seq "$rounds"); do
  for kek in file pkcs11 shamir; do
    side "$kek"
  done
done

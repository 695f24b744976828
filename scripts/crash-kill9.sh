#!/usr/bin/env bash
# kill -9 under load: start `serve --dev`, tokenize with `cardvault load
# --ack-log` (every acknowledged token is logged), SIGKILL the server at a
# random moment mid-run, restart it, and `cardvault load verify` the ack log
# against the restarted server: every acknowledged token must detokenize to
# its PAN. Repeats ITERATIONS times on the same data directory and prints the
# totals. Exit status 0 only with 0 lost and 0 mismatched.
#
#   scripts/crash-kill9.sh [ITERATIONS] [LOAD_SECONDS]      (CI: 5 3; deep runs: 200 5)
#   CARDVAULT_BIN=target/release/cardvault scripts/crash-kill9.sh 50
set -euo pipefail
source "$(dirname "$0")/lib.sh"
iterations="${1:-5}"
load_seconds="${2:-3}"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cardvault}"
work="$(mktemp -d)"
server=""
trap 'kill -9 "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

start_server() { # sets server, api, ready_ms
  local t0 out="$work/serve-$1.out"
  t0="$(now_ms)"
  RUST_LOG=warn "$bin" serve --dev --data-dir "$work/dev" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$out" 2>>"$work/serve.log" &
  server=$!
  api="$(await_api "$out" 30)" || { cat "$work/serve.log"; exit 1; }
  ready_ms=$(( $(now_ms) - t0 ))
}

verify() { # ack log -> "entries verified lost mismatched errors"
  "$bin" load verify --dev "$work/dev" --target "$api" --ack-log "$1" --json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["entries"], r["verified"], r["lost"], r["mismatched"], r["errors"])' ||
    echo "0 0 0 0 1"
}

acked=0; lost=0; mismatched=0; unreadable=0; ready_total=0; ready_max=0
echo "# kill -9 under load: $iterations iterations, load ${load_seconds}s each, $bin"
start_server 0
for i in $(seq "$iterations"); do
  acks="$work/acks-$i.jsonl"
  "$bin" load --dev "$work/dev" --target "$api" --op tokenize --concurrency 16 \
    --duration "${load_seconds}s" --warmup 0s --ack-log "$acks" --json >/dev/null 2>&1 &
  loader=$!
  # Kill somewhere in the middle of the run.
  sleep "$(python3 -c "import random; print(round(random.uniform(0.3, $load_seconds * 0.8), 2))")"
  kill -9 "$server"; wait "$server" 2>/dev/null || true
  wait "$loader" 2>/dev/null || true
  start_server "$i"
  read -r entries ok l m e <<<"$(verify "$acks")"
  acked=$((acked + entries)); lost=$((lost + l)); mismatched=$((mismatched + m)); unreadable=$((unreadable + e))
  ready_total=$((ready_total + ready_ms)); [ "$ready_ms" -gt "$ready_max" ] && ready_max=$ready_ms
  echo "iteration $i: acknowledged $entries, verified $ok, lost $l, mismatched $m, unreadable $e; restart-to-ready ${ready_ms} ms"
done
kill "$server"; wait "$server" 2>/dev/null || true; server=""
# The audit trail survived the crashes too.
"$bin" audit verify "$work/dev/audit" --dev "$work/dev" | head -1
echo "total: iterations $iterations, acknowledged $acked, lost $lost, mismatched $mismatched, unreadable $unreadable, restart-to-ready avg $((ready_total / iterations)) ms max $ready_max ms"
[ "$lost" -eq 0 ] && [ "$mismatched" -eq 0 ] && [ "$unreadable" -eq 0 ] && [ "$acked" -gt 0 ]

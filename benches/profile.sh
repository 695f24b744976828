#!/usr/bin/env bash
# Where a request's CPU goes: starts a release `serve --dev` in a temp dir,
# tokenizes for 3 s (so reads have entries to find), then runs one load
# operation at 64 connections for 8 s with `perf record -g` attached to the
# server, and prints the server's CPU per request and its samples by thread
# and by symbol.
#
#   cargo build --release && benches/profile.sh [OP] [OUT.data] [LOAD-ARGS...]
#   benches/profile.sh metadata /tmp/meta.data
#   benches/profile.sh tokenize-batch /tmp/batch.data --batch 1000 --concurrency 4
#
# Needs `perf` (Debian: linux-perf). Later: `perf report -i OUT.data`.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/release/cardvault}"
op="${1:-tokenize}"
out="${2:-perf-$op.data}"
shift $(($# < 2 ? $# : 2))
server_work_dir
lift_rate_limits
start_dev "$bin" "$work/dev"
"$bin" load --dev "$work/dev" --target "$api" --duration 3s --op tokenize --concurrency 64 >/dev/null
before="$(server_cpu "$server")"
perf record -F 1999 -g -p "$server" -o "$out" -- sleep 8 2>/dev/null &
recorder=$!
json="$("$bin" load --dev "$work/dev" --target "$api" --duration 8s --json --op "$op" --concurrency 64 "$@")"
after="$(server_cpu "$server")"
wait "$recorder" || true
python3 - "$before" "$after" "$json" <<'PY'
import json, sys
before, after, r = float(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
items = max(r["items_per_s"] * r["duration_s"], 1)
print(f"{r['throughput_per_s']:.0f} req/s, {r['items_per_s']:.0f} items/s; server CPU "
      f"{(after - before) / max(r['throughput_per_s'] * r['duration_s'], 1) * 1e6:.1f} µs/req, "
      f"{(after - before) / items * 1e6:.2f} µs/item (perf attached)")
PY
perf report -i "$out" --no-children -g none --sort comm --stdio 2>/dev/null | grep '%' | head -6
perf report -i "$out" --no-children -g none --sort comm,symbol --stdio 2>/dev/null | grep '%' | head -30 | cut -c1-150

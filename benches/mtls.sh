#!/usr/bin/env bash
# End-to-end figures over real mTLS: starts a release `cardvault serve --dev`
# in a temp dir, drives it with `cardvault load`, and prints one line per run
# with the load report and the server's CPU seconds per 1,000 operations
# (utime+stime from /proc, since the load generator shares the machine).
#
#   cargo build --release && benches/mtls.sh [DURATION] [WARMUP]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/release/cardvault}"
duration="${1:-10s}"
warmup="${2:-2s}"
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
server=""
lift_rate_limits
start_dev "$bin" "$work/dev"
cpu() { server_cpu "$server"; }

run() { # label, load args...
  local label="$1"; shift
  local before after
  before="$(cpu)"
  local json
  json="$("$bin" load --dev "$work/dev" --target "$api" --duration "$duration" --warmup "$warmup" --json "$@")"
  after="$(cpu)"
  python3 - "$label" "$before" "$after" "$json" <<'PY'
import json, sys
label, before, after, report = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
items = max(report["items"], 1)
# CPU spent over warmup + measurement, per 1,000 items of the measured rate.
total_items = report["items_per_s"] * (report["duration_s"] + 0) or 1
l = report["latency_ms"]
errors = sum(report["errors"].values())
print(f"{label:<34} {report['throughput_per_s']:>9.0f} req/s {report['items_per_s']:>9.0f} items/s  "
      f"p50 {l['p50']:7.3f}  p90 {l['p90']:7.3f}  p99 {l['p99']:7.3f}  p99.9 {l['p999']:7.3f}  max {l['max']:8.3f} ms  "
      f"errors {errors}  server_cpu_s {after - before:6.2f}")
print(json.dumps({"label": label, "server_cpu_s": after - before, **report}), file=sys.stderr)
PY
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); duration $duration warmup $warmup"
# The storage ceiling in the same run (server idle): synced batches of 1, 64, 1024 puts.
"$bin" load ceiling --dir "$work/ceiling" --duration 5s | while read -r line; do echo "ceiling $line"; done
for c in 1 16 64 256; do run "tokenize closed c=$c" --op tokenize --concurrency "$c"; done
max="$("$bin" load --dev "$work/dev" --target "$api" --duration "$duration" --warmup "$warmup" --json --op tokenize --concurrency 64 | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_per_s"])')"
for pct in 25 50 75; do
  rate="$(python3 -c "print(round($max * $pct / 100))")"
  run "tokenize open ${pct}% (${rate}/s)" --op tokenize --rate "$rate" --concurrency 256
done
run "tokenize-batch 1000 c=1" --op tokenize-batch --batch 1000 --concurrency 1
run "tokenize-batch 1000 c=4" --op tokenize-batch --batch 1000 --concurrency 4
run "detokenize closed c=1" --op detokenize --concurrency 1
run "detokenize closed c=64" --op detokenize --concurrency 64
run "detokenize-batch 1000 c=4" --op detokenize-batch --batch 1000 --concurrency 4
run "mixed 90/10 closed c=64" --op mixed --mix 0.9 --concurrency 64
# The lightest authenticated request (a read, no sync): what mTLS + HTTP +
# JSON alone allow on this machine, to set the tokenize figures against.
run "metadata closed c=64" --op metadata --concurrency 64

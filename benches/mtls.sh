#!/usr/bin/env bash
# End-to-end figures over real mTLS: starts a release `cardvault serve --dev`
# in a temp dir, drives it with `cardvault load`, and prints one line per run
# with the load report, the server's CPU per request and per item
# (utime+stime from /proc, since the load generator shares the machine) and
# its ratio to the same-run anchor: nginx answering a fixed response over the
# same mTLS (the TLS floor of a request on this machine).
#
#   cargo build --release && benches/mtls.sh [DURATION] [WARMUP]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/release/cardvault}"
duration="${1:-10s}"
warmup="${2:-2s}"
work="$(mktemp -d)"
nginx=""
trap 'kill "$server" $nginx 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
server=""
lift_rate_limits
start_dev "$bin" "$work/dev"

anchor_cpu_us=""
# run LABEL [--against nginx] LOAD-ARGS...: one load run; prints its figures,
# server CPU per request and (once the anchor ran) the ratio to nginx's.
run() {
  local label="$1"; shift
  local target="$api" pid="$server" cpu_of=server_cpu
  if [ "${1:-}" = "--against" ]; then target="$nginx_api"; pid="$nginx"; cpu_of=tree_cpu; shift 2; fi
  local before after json
  before="$($cpu_of "$pid")"
  json="$("$bin" load --dev "$work/dev" --target "$target" --duration "$duration" --warmup "$warmup" --json "$@")"
  after="$($cpu_of "$pid")"
  local line
  line="$(python3 - "$label" "$before" "$after" "$json" "$warmup" "$anchor_cpu_us" <<'PY'
import json, re, sys
label, before, after, report, warmup, anchor = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5], sys.argv[6]
warm = float(re.sub(r"[^0-9.]", "", warmup) or 0)
# CPU over warmup + measurement, per request (per item for batches) of the measured rate.
requests = max(report["throughput_per_s"] * (report["duration_s"] + warm), 1)
items = max(report["items_per_s"] * (report["duration_s"] + warm), 1)
cpu_us = (after - before) / requests * 1e6
item_us = (after - before) / items * 1e6
ratio = f"  ×{cpu_us / float(anchor):4.1f} nginx" if anchor else ""
l = report["latency_ms"]
errors = sum(report["errors"].values())
print(f"{label:<34} {report['throughput_per_s']:>9.0f} req/s {report['items_per_s']:>9.0f} items/s  "
      f"p50 {l['p50']:7.3f}  p99 {l['p99']:7.3f}  p99.9 {l['p999']:7.3f} ms  "
      f"cpu {cpu_us:7.1f} µs/req {item_us:6.1f} µs/item{ratio}  errors {errors}")
print(json.dumps({"label": label, "server_cpu_s": after - before, "cpu_us_per_req": cpu_us, "cpu_us_per_item": item_us, **report}), file=sys.stderr)
PY
)"
  echo "$line"
  if [ -z "$anchor_cpu_us" ]; then
    anchor_cpu_us="$(echo "$line" | sed -n 's/.*cpu *\([0-9.]*\) µs\/req.*/\1/p')"
  fi
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); duration $duration warmup $warmup"
# The TLS floor in the same run: nginx answering a fixed token JSON over the
# same mTLS (its CPU per request is what each vault row is compared with).
start_nginx_anchor "$work/dev" "$work"
run "nginx fixed response c=64" --against nginx --op tokenize --concurrency 64
kill "$nginx"; wait "$nginx" 2>/dev/null || true
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

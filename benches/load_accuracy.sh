#!/usr/bin/env bash
# Does `cardvault load` measure what the vault measures? One `serve --dev`,
# open-loop tokenize at several rates; per rate, the load tool's latency
# (request start to answer) against the vault's own
# cardvault_request_duration_seconds for /v1/tokenize over the same
# requests (its sum and count, scraped before and after: an exact mean),
# and the schedule lag the load tool reports apart.
#
#   benches/load_accuracy.sh BIN ["RATES"] [DURATION]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="$1"; rates="${2:-500 2000 8000}"; duration="${3:-10s}"
server_work_dir
lift_rate_limits
start_dev "$bin" "$work/dev"
server_sum() { # sum count of the tokenize route's successful requests
  curl -s "http://$ops/metrics" | awk '
    /^cardvault_request_duration_seconds_sum\{route="\/v1\/tokenize",outcome="ok"\}/ { s = $2 }
    /^cardvault_request_duration_seconds_count\{route="\/v1\/tokenize",outcome="ok"\}/ { c = $2 }
    END { printf "%s %s\n", s + 0, c + 0 }'
}
# Warm the tenant's keys and the connection pool.
"$bin" load --dev "$work/dev" --target "$api" --op tokenize --concurrency 8 --duration 2s --warmup 0s --json >/dev/null
echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; open-loop tokenize, 16 connections, $duration per rate"
for rate in $rates; do
  before="$(server_sum)"
  json="$("$bin" load --dev "$work/dev" --target "$api" --op tokenize --rate "$rate" --concurrency 16 --duration "$duration" --warmup 0s --json)"
  after="$(server_sum)"
  python3 - "$rate" "$before" "$after" "$json" <<'PY'
import json, sys
rate = sys.argv[1]
s0, c0 = map(float, sys.argv[2].split()); s1, c1 = map(float, sys.argv[3].split())
r = json.loads(sys.argv[4])
server_mean = (s1 - s0) / max(c1 - c0, 1) * 1000
l, g = r["latency_ms"], r["schedule_lag_ms"]
print(f"rate {rate:>5}/s  achieved {r['throughput_per_s']:7.0f}/s  load latency mean {l['mean']:.3f} p50 {l['p50']:.3f} p99 {l['p99']:.3f} ms"
      f"  vault mean {server_mean:.3f} ms  difference {l['mean'] - server_mean:+.3f} ms"
      f"  schedule lag p50 {g['p50']:.3f} p99 {g['p99']:.3f} ms  errors {sum(r['errors'].values())}", flush=True)
PY
done

#!/usr/bin/env bash
# Tokenize latency while a re-encryption job runs (issue 12's target: p99 at
# 50% load during re-encryption <= 2x the p99 without it). One fresh
# `serve --dev`, filled for FILL_SECONDS, its closed-loop tokenize rate
# measured; a data-key rotation gives the job every record to re-seal; then
# open-loop tokenize at half that rate, alternately with the job paused
# (DELETE) and running (POST continues it from its checkpoint), ROUNDS
# times, so the host's drift hits both alike.
#
#   benches/reencrypt.sh BIN [ROUNDS] [DURATION] [FILL_SECONDS]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="$1"; rounds="${2:-3}"; duration="${3:-15s}"; fill="${4:-20s}"
server_work_dir
dir="$work/dev"
RUST_LOG=warn "$bin" serve --dev "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
server=$!
api="$(await_api "$work/out")"
load() { "$bin" load --dev "$dir" --target "$api" --json --op tokenize "$@"; }
load --duration "$fill" --warmup 0s --concurrency 64 >/dev/null
full="$(load --duration 10s --warmup 2s --concurrency 64 | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["throughput_per_s"]))')"
half=$((full / 2))
admin() { curl -sS --cacert "$dir/pki/ca.pem" --cert "$dir/pki/admin.pem" --key "$dir/pki/admin-key.pem" "$@"; }
host="https://localhost:${api##*:}"
echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; closed-loop tokenize $full req/s; open loop at $half req/s for $duration; $rounds rounds"
row() { # label
  load --rate "$half" --concurrency 256 --duration "$duration" --warmup 2s |
    python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_ms']; print(f\"$1 {r['throughput_per_s']:8.0f} req/s p50 {l['p50']:6.2f} p99 {l['p99']:6.2f} p999 {l['p999']:6.2f} ms errors {sum(r['errors'].values())}\")"
}
admin -X POST "$host/v1/admin/keys/default/rotate" >/dev/null
for round in $(seq "$rounds"); do
  row "without"
  admin -X POST "$host/v1/admin/keys/default/reencrypt" >/dev/null
  row "during "
  admin -X DELETE "$host/v1/admin/keys/default/reencrypt" | python3 -c "import json,sys; s=json.load(sys.stdin); print(f\"        job: {s['state']} {s['done']}/{s['total']} at {s['rate_per_s']:.0f}/s\")"
done

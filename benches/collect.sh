#!/usr/bin/env bash
# The hosted card fields under load, against the mTLS API in the same run
# (issue 31). One release binary, a fresh `serve --dev` whose public
# listener's card-testing limits are lifted out of the way (a benchmark
# sends every submit from one address). Per round, side by side:
#   - tokenize: POST /v1/tokenize over mTLS, 64 connections;
#   - collect-submit: POST /collect/v1/sessions/{id}/submit on the public
#     listener, 64 connections, browser headers, into sessions created and
#     framed before the clock starts (`cardvault load --op collect-submit`);
#     target: at least 0.7x tokenize;
#   - the flood: tokenize again while wrk floods the public port (256
#     keep-alive connections fetching frame.js; then 64 connections closing
#     after every request, so every request is a TLS handshake); target:
#     within 20% of tokenize without the flood. On one 2-core box the
#     flooder's own CPU is taken from the vault too, so the same floods are
#     also aimed at a control — nginx, one worker at the public listener's
#     priority (nice 10), serving the same file over TLS 1.3 — and the
#     difference between the two is what the vault's public listener costs
#     the API.
# And once: the frame's bytes (HTML of a real frame + frame.js + frame.css;
# target under 20 KB).
#
#   benches/collect.sh BIN [ROUNDS] [DURATION]     (SESSIONS=N per submit run)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="$1"; rounds="${2:-3}"; duration="${3:-10s}"; sessions="${SESSIONS:-150000}"
command -v wrk >/dev/null || { echo "benches/collect.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
server_work_dir
lift_rate_limits
# Every submit holds a security code (sessions of an hour): room for all of
# a run's codes, as a vault sized for this rate would have.
export CARDVAULT_CVC__MAX_HELD=2000000
dir="$work/dev"

# A first start makes the dev directory; then its [collect] section.
start_dev "$bin" "$dir"
kill "$server"; wait "$server" 2>/dev/null || true; server=""
cat >>"$dir/cardvault.toml" <<'TOML'

[collect]
listen = "127.0.0.1:0"
cert_file = "pki/server.pem"
key_file = "pki/server-key.pem"
allow_loopback_http = true

[collect.limits]
submits_per_ip_per_minute = 4000000000
sessions_per_tenant_per_minute = 4000000000
max_connections_per_ip = 4096
max_connections = 4096
TOML
start_dev "$bin" "$dir"
for _ in $(seq 100); do grep -q '^hosted card fields' "$dir.out" && break; sleep 0.05; done
public="$(sed -n 's/^hosted card fields: \(https:[^ ]*\).*/\1/p' "$dir.out")"

pki="$dir/pki"
session="$(curl -sS --cacert "$pki/ca.pem" --cert "$pki/cart.pem" --key "$pki/cart-key.pem" \
  -H 'content-type: application/json' -d '{"origin":"https://shop.example"}' "$api/v1/collect/sessions" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["session"])')"
bytes() { curl -sS --cacert "$pki/ca.pem" "$public$1" | wc -c; }
html="$(bytes "/collect/v1/frame/$session")"; js="$(bytes /collect/v1/frame.js)"; css="$(bytes /collect/v1/frame.css)"
shop_js="$(bytes /collect/v1/cardvault.js)"
echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; $rounds rounds of $duration"
echo "frame: html $html + frame.js $js + frame.css $css = $((html + js + css)) bytes (target < 20480); cardvault.js $shop_js bytes"

rate="" # the last measured rate
measure() { # label, load args…
  local label="$1"; shift
  local json
  json="$(${LOAD_NICE:+nice -n $LOAD_NICE} "$bin" load --dev "$dir" --target "$api" --concurrency 64 --duration "$duration" --warmup 1s --json "$@")"
  rate="$(python3 -c 'import json, sys; print(round(json.loads(sys.argv[1])["throughput_per_s"]))' "$json")"
  python3 - "$label" "$json" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
errors = sum(r["errors"].values())
print(f"{label:<34} {r['throughput_per_s']:9.0f} /s  p50 {r['latency_ms']['p50']:6.2f} ms  p99 {r['latency_ms']['p99']:6.2f} ms  errors {errors} {dict(r['errors']) if errors else ''}", flush=True)
PY
}

# The control: nginx at the public listener's priority, same file, TLS 1.3.
mkdir -p "$work/nginx/root/collect/v1"
curl -sS --cacert "$pki/ca.pem" "$public/collect/v1/frame.js" >"$work/nginx/root/collect/v1/frame.js"
control_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
{ nginx_conf_head "$work"; cat <<CONF
  server {
    listen 127.0.0.1:$control_port ssl;
    ssl_certificate $pki/server.pem;
    ssl_certificate_key $pki/server-key.pem;
    ssl_protocols TLSv1.3;
    keepalive_requests 10000000;
    root $work/nginx/root;
  }
}
CONF
} >"$work/nginx/nginx.conf"
nice -n 10 "$(command -v nginx || echo /usr/sbin/nginx)" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/error.log" &
control=$!
trap 'kill "$server" "$control" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
control_url="https://localhost:$control_port"

flood() { # label, base URL, wrk args… : tokenize while wrk floods BASE
  local label="$1" base="$2"; shift 2
  wrk "$@" -d "$(( ${duration%s} + 4 ))s" "$base/collect/v1/frame.js" >"$work/wrk.out" 2>&1 &
  local flood_pid=$!
  sleep 1
  measure "$label"
  wait "$flood_pid" || true
  echo "    (flood: $(grep -E 'Requests/sec' "$work/wrk.out" | tr -s ' '))"
}

for round in $(seq "$rounds"); do
  echo "## round $round"
  # Submits bracketed by tokenize before and after (this VM drifts within
  # a minute): the ratio is submits over the two tokenize runs' mean.
  measure "tokenize (mTLS)" --op tokenize; before="$rate"
  measure "collect-submit (public listener)" --op collect-submit --collect "$public" --sessions "$sessions"; submits="$rate"
  measure "tokenize (mTLS), no flood" --op tokenize
  python3 -c 'import sys; b, s, a = map(float, sys.argv[1:]); print(f"  submits / tokenize (bracketed) = {s / ((b + a) / 2):.2f}  (target >= 0.70)")' "$before" "$submits" "$rate"
  flood "tokenize, keep-alive flood → vault" "$public" -t 1 -c 256
  flood "tokenize, keep-alive flood → control" "$control_url" -t 1 -c 256
  flood "tokenize, handshake flood → vault" "$public" -t 1 -c 64 -H "Connection: close"
  flood "tokenize, handshake flood → control" "$control_url" -t 1 -c 64 -H "Connection: close"
done

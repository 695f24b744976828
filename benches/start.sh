#!/usr/bin/env bash
# How long a vault takes to start: milliseconds from exec until the ops
# port first answers /healthz (and what it says), until /readyz answers 200,
# then the key filters' "ready" lines (keys, seconds). Run it on a vault
# you filled (e.g. `load --op tokenize-batch`), alternating builds:
#
#   benches/start.sh BIN DEV_DIR
#
# The vault is stopped again once its filters are ready (at most 60 s).
set -euo pipefail
bin="$1" dir="$2"
source "$(dirname "$0")/../scripts/lib.sh"
port="$(free_port)"
log="$(mktemp)"
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$log"' EXIT
t0="$(now_ms)"
RUST_LOG=warn,cardvault::store=info "$bin" serve --dev --data-dir "$dir" \
  --listen 127.0.0.1:0 --ops-listen "127.0.0.1:$port" >/dev/null 2>"$log" &
pid=$!
health="" first="" ready=""
for _ in $(seq 1 3000); do
  if [ -z "$health" ] && body="$(curl -s -m 1 "http://127.0.0.1:$port/healthz")" && [ -n "$body" ]; then
    health=$(( $(now_ms) - t0 )); first="$body"
  fi
  if [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then
    ready=$(( $(now_ms) - t0 )); break
  fi
  sleep 0.02
done
for _ in $(seq 1 600); do
  [ "$(grep -c 'key filter ready' "$log")" -ge 2 ] && break
  sleep 0.1
done
echo "healthz first answered after ${health:-?} ms: ${first}"
echo "readyz 200 after ${ready:-?} ms"
grep -o 'key filter ready.*' "$log" || echo "key filters not ready within 60 s"

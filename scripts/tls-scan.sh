#!/usr/bin/env bash
# TLS scan: runs sslyze (PyPI) with a client certificate against a local
# `serve --dev` and checks the Mozilla "modern" profile. Prints sslyze's
# verdict; exit status is sslyze's (0 = compliant).
#
#   python3 -m venv /tmp/sslyze && /tmp/sslyze/bin/pip install sslyze
#   SSLYZE=/tmp/sslyze/bin/sslyze scripts/tls-scan.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cardvault}"
sslyze="${SSLYZE:-sslyze}"
command -v "$sslyze" >/dev/null 2>&1 || { echo "tls-scan: SKIPPED (sslyze not installed; see the header)"; exit 0; }
server_work_dir
RUST_LOG=error "$bin" serve --dev --data-dir "$work/dev" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$work/serve.out" 2>&1 &
server=$!
api="$(await_api "$work/serve.out")"
port="${api##*:}"
pki="$work/dev/pki"
"$sslyze" --cert "$pki/payments.pem" --key "$pki/payments-key.pem" \
  --certinfo_ca_file "$pki/ca.pem" --mozilla_config=modern "localhost:$port{127.0.0.1}"

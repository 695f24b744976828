#!/usr/bin/env bash
# Memory leak count for a release build: tokenize and detokenize two canary
# PANs 30 times each over fresh curl connections against `serve --dev`, gcore
# the live server and count the canaries in the core (docs/guarantees.md).
# Needs gcore and curl.
#
#   scripts/leak-core.sh target/release/cardvault
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bin=$1; work=$(mktemp -d)
RUST_LOG=error $bin serve --dev --data-dir $work/dev --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 > $work/out 2>&1 &
pid=$!
api=$(await_api $work/out | sed 's/127.0.0.1/localhost/')
c="curl -sS --cacert $work/dev/pki/ca.pem --cert $work/dev/pki/payments.pem --key $work/dev/pki/payments-key.pem -H content-type:application/json"
for i in $(seq 30); do
  for pan in 4929123456781236 5105105105105100; do
    tok=$($c -d "{\"pan\":\"$pan\"}" $api/v1/tokenize | sed -E 's/.*"token":"([0-9]+)".*/\1/')
    $c -d "{\"token\":\"$tok\"}" $api/v1/detokenize > /dev/null
  done
done
gcore -o $work/core $pid > /dev/null 2>&1
kill $pid; wait $pid 2>/dev/null || true
for pan in 4929123456781236 5105105105105100; do echo -n "$pan: $(grep -a -o $pan $work/core.* | wc -l)  "; done; echo
rm -rf $work

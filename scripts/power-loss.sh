#!/usr/bin/env bash
# Power-loss simulation: the database and audit trail on an ext4 image,
# loop-mounted with periodic writeback off (vm.dirty_writeback_centisecs=0,
# journal commit every 600 s), so only what was fsynced reaches the image
# file. Tokenize under load with an ack log, SIGKILL the server, copy the
# image (the copy holds exactly what reached the "device"), mount the copy,
# start a vault on it and verify the ack log: 0 lost, 0 mismatched.
# Negative control: a file written without fsync on the same mount must be
# missing from the copy — proof that the harness does lose unsynced data.
# Needs root (mount, sysctl); skips with a message otherwise.
#
#   scripts/power-loss.sh [ITERATIONS] [LOAD_SECONDS]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
iterations="${1:-3}"
load_seconds="${2:-3}"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cardvault}"
if [ "$(id -u)" -ne 0 ]; then echo "power-loss: SKIPPED (needs root for loop mounts and sysctl)"; exit 0; fi
command -v mkfs.ext4 >/dev/null 2>&1 || { echo "power-loss: SKIPPED (no mkfs.ext4)"; exit 0; }
if ! (cat /proc/sys/vm/dirty_writeback_centisecs >/proc/sys/vm/dirty_writeback_centisecs) 2>/dev/null; then
  echo "power-loss: SKIPPED (cannot set vm.dirty_writeback_centisecs here)"; exit 0
fi
work="$(mktemp -d)"
server=""
writeback="$(cat /proc/sys/vm/dirty_writeback_centisecs)"
expire="$(cat /proc/sys/vm/dirty_expire_centisecs)"
cleanup() {
  kill -9 "$server" 2>/dev/null || true; wait 2>/dev/null || true
  echo "$writeback" >/proc/sys/vm/dirty_writeback_centisecs
  echo "$expire" >/proc/sys/vm/dirty_expire_centisecs
  umount "$work/live" "$work/after" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The dev PKI, KEK and config on the ordinary disk; only data and audit on the image.
RUST_LOG=error "$bin" serve --dev --data-dir "$work/dev" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >/dev/null 2>&1 &
server=$!
for _ in $(seq 200); do [ -f "$work/dev/cardvault.toml" ] && [ -d "$work/dev/db" ] && break; sleep 0.05; done
sleep 0.5; kill "$server"; wait "$server" 2>/dev/null || true; server=""
rm -rf "$work/dev/db" "$work/dev/audit"

start_on() { # mountpoint -> sets server, api
  local out="$work/serve.out"; : >"$out"
  RUST_LOG=warn CARDVAULT_STORAGE__DATA_DIR="$1/db" CARDVAULT_AUDIT__DIR="$1/audit" CARDVAULT_STORAGE__MIN_FREE_BYTES=1048576 \
    "$bin" serve --config "$work/dev/cardvault.toml" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$out" 2>>"$work/serve.log" &
  server=$!
  api="$(await_api "$out")" || { echo "vault did not start on $1:"; tail -5 "$work/serve.log"; exit 1; }
}

echo 0 >/proc/sys/vm/dirty_writeback_centisecs
echo 360000 >/proc/sys/vm/dirty_expire_centisecs
truncate -s 256M "$work/disk.img"
mkfs.ext4 -q -F "$work/disk.img"
mkdir -p "$work/live" "$work/after"
total=0; lost=0; mismatched=0; control_ok=0
echo "# power loss: $iterations iterations, load ${load_seconds}s, ext4 on loop, writeback off"
for i in $(seq "$iterations"); do
  mount -o loop,commit=600 "$work/disk.img" "$work/live" || { echo "power-loss: SKIPPED (cannot loop-mount here)"; exit 0; }
  start_on "$work/live"
  "$bin" load --dev "$work/dev" --target "$api" --op tokenize --concurrency 16 --duration "${load_seconds}s" \
    --warmup 0s --ack-log "$work/acks-$i.jsonl" --json >/dev/null 2>&1 &
  loader=$!
  sleep "$(python3 -c "print($load_seconds * 0.6)")"
  # The control: written, never synced.
  head -c 4194304 /dev/urandom >"$work/control-$i"
  cp "$work/control-$i" "$work/live/unsynced-$i"
  kill -9 "$server"; wait "$server" 2>/dev/null || true; server=""
  wait "$loader" 2>/dev/null || true
  # "Power loss": what the device holds right now, not what the page cache holds.
  cp --sparse=always "$work/disk.img" "$work/after.img"
  umount "$work/live"
  mount -o loop "$work/after.img" "$work/after"
  if cmp -s "$work/control-$i" "$work/after/unsynced-$i"; then
    control="SURVIVED (the harness is not simulating power loss)"
  else
    control="lost, as it should be"; control_ok=$((control_ok + 1))
  fi
  rm -f "$work/after/unsynced-$i"
  start_on "$work/after"
  read -r entries l m <<<"$("$bin" load verify --dev "$work/dev" --target "$api" --ack-log "$work/acks-$i.jsonl" --json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["entries"], r["lost"] + r["errors"], r["mismatched"])' || echo "0 1 0")"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  umount "$work/after"
  # The next iteration continues on the image that went through the power loss.
  mv "$work/after.img" "$work/disk.img"
  total=$((total + entries)); lost=$((lost + l)); mismatched=$((mismatched + m))
  echo "iteration $i: acknowledged $entries, lost $l, mismatched $m; unsynced control file: $control"
done
echo "total: acknowledged $total, lost $lost, mismatched $mismatched; control lost in $control_ok of $iterations"
[ "$lost" -eq 0 ] && [ "$mismatched" -eq 0 ] && [ "$total" -gt 0 ] && [ "$control_ok" -eq "$iterations" ]

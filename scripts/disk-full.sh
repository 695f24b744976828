#!/usr/bin/env bash
# Disk full: the database on a small tmpfs (reserve 8 MiB via
# storage.min_free_bytes), filled to the last byte while the
# vault runs. Tokenize must answer 503 `unavailable` (not 500, not hang),
# detokenizing acknowledged tokens must keep working, and once space is freed
# tokenization must work again with nothing lost. The audit trail sits on
# another filesystem, as it should in production (a full data disk must not
# also silence the trail — and reveals fail closed if it does).
# Needs root (mount); skips with a message otherwise.
#
#   scripts/disk-full.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cardvault}"
if [ "$(id -u)" -ne 0 ]; then echo "disk-full: SKIPPED (needs root to mount a tmpfs)"; exit 0; fi
work="$(mktemp -d)"
mnt="$work/mnt"
server=""
cleanup() { kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; umount "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$mnt"
mount -t tmpfs -o size=48m,mode=0700 tmpfs "$mnt" || { echo "disk-full: SKIPPED (cannot mount tmpfs here)"; exit 0; }

# The dev setup on the small disk, the audit trail elsewhere.
RUST_LOG=warn CARDVAULT_AUDIT__DIR="$work/audit" CARDVAULT_STORAGE__MIN_FREE_BYTES=8388608 "$bin" serve --dev --data-dir "$mnt/dev" \
  --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.log" &
server=$!
api="$(await_api "$work/serve.out")"
load() { "$bin" load --dev "$mnt/dev" --target "$api" --warmup 0s --json "$@" 2>/dev/null || true; }
errors() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["ops"], json.dumps(r["errors"], sort_keys=True))'; }

load --op tokenize --concurrency 4 --duration 1s --ack-log "$work/before.jsonl" >/dev/null
echo "before: $(wc -l <"$work/before.jsonl") tokens acknowledged"

dd if=/dev/zero of="$mnt/filler" bs=1M status=none 2>/dev/null || true
echo "filled: $(df --output=avail -B1 "$mnt" | tail -1) bytes free"
read -r ok errs <<<"$(load --op tokenize --concurrency 4 --duration 2s --ack-log "$work/during.jsonl" | errors)"
echo "tokenize while full: $ok acknowledged, errors $errs"
"$bin" load verify --dev "$mnt/dev" --target "$api" --ack-log "$work/before.jsonl" | sed 's/^/detokenize while full: /'

rm -f "$mnt/filler"
# Writes resume as soon as the reserve is free again; probe once a second.
start=$(date +%s)
for _ in $(seq 30); do
  probe="$(load --op tokenize --concurrency 1 --duration 1s | errors)"
  [ "${probe#* }" = "{}" ] && break
done
echo "writes recovered $(( $(date +%s) - start )) s after space was freed"
read -r ok2 errs2 <<<"$(load --op tokenize --concurrency 4 --duration 2s --ack-log "$work/after.jsonl" | errors)"
echo "tokenize after freeing space: $ok2 acknowledged, errors $errs2"
cat "$work/before.jsonl" "$work/during.jsonl" "$work/after.jsonl" >"$work/all.jsonl"
"$bin" load verify --dev "$mnt/dev" --target "$api" --ack-log "$work/all.jsonl" | sed 's/^/all acknowledged tokens: /'

python3 - "$errs" "$ok2" "$errs2" <<'PY'
import json, sys
during, ok_after, after = json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
bad = [code for code in during if code != "http_503_unavailable"]
assert during.get("http_503_unavailable", 0) > 0, f"a full disk gave no 503: {during}"
assert not bad, f"a full disk gave other errors than 503 unavailable: {during}"
assert ok_after > 0 and not after, f"tokenize did not recover after space was freed: {ok_after} ok, {after}"
print("disk-full: PASS (503 while full, reads kept working, writes recovered, nothing lost)")
PY

#!/usr/bin/env bash
# A real upgrade -> rollback -> upgrade cycle between two builds on one dev
# vault (docs/upgrade.md): OLD makes tokens under load, NEW takes the data
# over and makes more, OLD is put back and must serve every token both made
# and make its own, NEW again serves all of them; every acknowledged token
# is checked (`load verify`) after each switch and the audit trail is
# verified by both builds at the end. Exit 0 only with 0 lost.
#
#   scripts/upgrade-cycle.sh OLD_BIN NEW_BIN [LOAD_SECONDS]
#
# Not in CI (a fresh machine has one build); docs/STATUS.md and
# docs/BENCHMARKS.md record the runs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
old="$1" new="$2" load_seconds="${3:-3}"
server_work_dir
dir="$work/dev"
acks=()
lost=0

stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

# run BIN STEP: start BIN on the vault, verify every ack log so far, add one.
run() {
  local bin="$1" step="$2" log entries verified l
  start_dev "$bin" "$dir"
  for log in "${acks[@]}"; do
    read -r entries verified l <<<"$("$bin" load verify --dev "$dir" --target "$api" --ack-log "$log" --json |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["entries"], r["verified"], r["lost"] + r["mismatched"] + r["errors"])')"
    lost=$((lost + l))
    echo "$step: $(basename "$log"): $entries acknowledged, $verified verified, $l lost"
  done
  log="$work/acks-$step.jsonl"
  "$bin" load --dev "$dir" --target "$api" --op tokenize --concurrency 8 \
    --duration "${load_seconds}s" --warmup 0s --ack-log "$log" --json >/dev/null
  acks+=("$log")
  echo "$step: $("$bin" version | head -1 | cut -d'(' -f2 | cut -d',' -f1) made $(wc -l <"$log") tokens"
  stop
}

echo "# upgrade cycle: old $("$old" version | head -1)"
echo "#                new $("$new" version | head -1)"
run "$old" "1-old"
run "$new" "2-upgraded"
run "$old" "3-rolled-back"
run "$new" "4-upgraded-again"
for bin in "$old" "$new"; do
  "$bin" audit verify "$dir/audit" --dev "$dir" | head -1
done
echo "total lost: $lost"
[ "$lost" -eq 0 ]

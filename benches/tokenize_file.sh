#!/usr/bin/env bash
# `cardvault tokenize-file` on a generated 1,000,000-row CSV against the
# vault's own batch-tokenize rate, side by side on one dev vault (release
# build), in alternating rounds so drift of this noisy VM hits both alike.
# Both use batches of 1,000 and 4 in flight; each round's CSV holds fresh
# PANs (new tokens, like `load`'s synthetic ones). Prints rows/s, items/s
# and the ratio.
#
#   benches/tokenize_file.sh BIN [ROWS] [ROUNDS] [DURATION]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="$1"; rows="${2:-1000000}"; rounds="${3:-3}"; duration="${4:-20s}"
server_work_dir
RUST_LOG=warn "$bin" serve --dev "$work/vault" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
server=$!
api="$(await_api "$work/serve.out")"
gen() { # round
  python3 - "$work/in-$1.csv" "$rows" "$1" <<'PY'
import sys
path, rows, round_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def luhn(body):
    for d in "0123456789":
        s = body + d
        t = 0
        for i, c in enumerate(reversed(s)):
            n = int(c)
            if i % 2:
                n *= 2
                if n > 9: n -= 9
            t += n
        if t % 10 == 0:
            return s
with open(path, "w") as f:
    f.write("order_id,customer,card,amount,currency\n")
    for i in range(rows):
        f.write(f"{i},customer-{i % 9973},{luhn(f'4{round_}{i:013}')},{(i * 37) % 100000 / 100:.2f},EUR\n")
PY
}
echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; $rows rows; $rounds rounds; load $duration"
for round in $(seq "$rounds"); do
  gen "$round"
  start=$(date +%s.%N)
  "$bin" tokenize-file "$work/in-$round.csv" "$work/out-$round.csv" --format csv --column card \
    --batch 1000 --concurrency 4 --json --dev "$work/vault" --target "$api" >"$work/tf-$round.json"
  end=$(date +%s.%N)
  "$bin" load --dev "$work/vault" --target "$api" --op tokenize-batch --batch 1000 --concurrency 4 \
    --duration "$duration" --warmup 2s --json >"$work/load-$round.json"
  python3 - "$work/tf-$round.json" "$work/load-$round.json" "$start" "$end" "$rows" <<'PY'
import json, sys
tf = json.load(open(sys.argv[1])); load = json.load(open(sys.argv[2]))
wall = float(sys.argv[4]) - float(sys.argv[3]); rows = int(sys.argv[5])
items = load["items_per_s"]
print(f"tokenize-file {rows / wall:9.0f} rows/s (wall {wall:.1f} s, {tf['pans_replaced']} replaced)   "
      f"load tokenize-batch {items:9.0f} items/s   ratio {rows / wall / items:.2f}")
PY
  rm -f "$work/in-$round.csv" "$work/out-$round.csv"
done

#!/usr/bin/env bash
# `cardvault scan` against ripgrep on one generated text corpus (logs,
# CSV and JSON lines with timestamps, request ids, amounts, phone numbers,
# UUIDs and, every ~500 lines, a test card or a token), in alternating
# rounds so drift of this noisy VM hits both alike. Both run on one core
# (`taskset`, `rg -j1`); ripgrep gets the plain PAN regex of the issue
# (no Luhn, no ranges, no tokens). Prints MB/s per core and the ratio.
#
#   benches/scan.sh BIN [SIZE_MIB] [ROUNDS]
set -euo pipefail
bin="$1"; size_mib="${2:-1024}"; rounds="${3:-3}"
work="${SCAN_BENCH_DIR:-$(mktemp -d)}"
# The anchor: Debian's ripgrep, installed if missing (as start_nginx_anchor does).
if ! command -v rg >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ripgrep >/dev/null
fi
corpus="$work/corpus-$size_mib.log"
if [ ! -s "$corpus" ]; then
  python3 - "$work/block.log" <<'PY'
import random, sys, uuid
r = random.Random(7)
cards = ["4111111111111111", "5555 5555 5555 4444", "378282246310005", "6011-0009-9013-9424",
         "3530111333300000", "4000000000000000006"]
tokens = ["4111119270641111", "5555553941024444"]
lines = []
size = 0
while size < 64 << 20:
    ts = 1733140800000 + r.randrange(10**9)
    kind = r.randrange(4)
    if kind == 0:
        line = f'2024-12-02T10:{r.randrange(60):02}:{r.randrange(60):02}.{r.randrange(10**6):06}Z INFO request_id={uuid.UUID(int=r.getrandbits(128))} route=/v1/orders/{r.randrange(10**9)} status=200 took_ms={r.random()*50:.3f}'
    elif kind == 1:
        line = f'{r.randrange(10**7)},{ts},"Customer {r.randrange(10**5)}",+1 555-{r.randrange(1000):03}-{r.randrange(10000):04},{r.randrange(10**5)/100:.2f},EUR'
    elif kind == 2:
        line = '{"order":%d,"ts":%d,"amount":%d,"phone":"+44 20 7946 %04d","session":"%s"}' % (
            r.randrange(10**12), ts, r.randrange(10**6), r.randrange(10**4), uuid.UUID(int=r.getrandbits(128)))
    else:
        line = f'INSERT INTO payments VALUES ({r.randrange(10**8)}, {ts}, {r.randrange(10**6)}, \'ok\');'
    if r.randrange(500) == 0:
        line += f' card={r.choice(cards)}'
    if r.randrange(500) == 0:
        line += f' token={r.choice(tokens)}'
    lines.append(line)
    size += len(line) + 1
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
  : >"$corpus"
  for _ in $(seq $(( (size_mib + 63) / 64 ))); do cat "$work/block.log" >>"$corpus"; done
  truncate -s "${size_mib}M" "$corpus"
fi
bytes=$(stat -c %s "$corpus")
regex='\b(?:\d[ -]?){12,18}\d\b'
run() { # label command...
  local label="$1"; shift
  local start end
  cat "$corpus" >/dev/null # page cache warm for both
  start=$(date +%s.%N)
  taskset -c 0 "$@" >"$work/$label.out" 2>/dev/null || true
  end=$(date +%s.%N)
  python3 -c "b=$bytes; t=$end-$start; print(f'$label {b/t/1e6:8.1f} MB/s per core ({t:.2f} s for {b/1e6:.0f} MB)')"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; $(rg --version | head -1); corpus $bytes bytes; $rounds rounds"
for round in $(seq "$rounds"); do
  run ripgrep rg -j1 --no-filename -c "$regex" "$corpus"
  run cardvault "$bin" scan --json "$corpus"
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
r = json.load(open(f"{work}/cardvault.out"))
s = r["summary"]
print(f"cardvault found {s['pans']} PANs and {s['tokens']} tokens; ripgrep matched {open(f'{work}/ripgrep.out').read().strip()} lines")
PY
[ -n "${SCAN_BENCH_DIR:-}" ] || rm -rf "$work"

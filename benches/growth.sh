#!/usr/bin/env bash
# The cost of a growing vault: tokenize and detokenize at 64 connections on
# an empty vault, then after batch prefills to each checkpoint (default 1 M,
# 5 M and 20 M stored tokens). Prints one line per run with the rate, p99,
# server CPU per request and the on-disk bytes per stored token (SST files
# and WAL apart). Detokenize at a checkpoint uses a sample of tokens spread
# over the whole prefill (`load --ack-every`, `--tokens-from`), not just
# recently made ones.
#
#   cargo build --release && benches/growth.sh [CHECKPOINTS] [DURATION]
#   benches/growth.sh "1000000 5000000 20000000" 10s
#
# GROWTH_DIR picks the disk (default: a temp dir; 20 M tokens need ~10 GB).
# Before each checkpoint's runs the server is let settle (see `settle`).
# Under each run a second line splits the server's CPU per request by thread
# (request workers, writer, compaction, flush, audit).
# GROWTH_PERF=DIR records `perf record -g` of the server for 8 s during each
# measured run into DIR/perf-LABEL-STORED.data.
# GROWTH_ROUNDS=N (default 0): after the last checkpoint, N rounds that each
# measure a fresh empty vault and then the full one, same binary, minutes
# apart at most: the ratio full/empty of one round is the vault's, not the
# host's drift between the first and the last line of a long run.
# GROWTH_BINS="A B" (default: the binary that filled the vault): in each
# round every build in turn serves a fresh empty vault and then the full
# one, restarted by it and let settle (the settle time is its open cost) —
# two builds compared on one full vault, side by side. The store's "key
# filter ready" log lines (keys, seconds, bytes) follow each restart.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/release/cardvault}"
checkpoints="${1:-1000000 5000000 20000000}"
duration="${2:-10s}"
server_work_dir "${GROWTH_DIR:-${TMPDIR:-/tmp}}/growth.XXXXXX"
export SERVER_LOG=warn,cardvault::store=info
lift_rate_limits
start_dev "$bin" "$work/dev"
vault="$work/dev"   # the vault `measure` loads and sizes
full=()             # the full vault's PID, API, ops while a round's empty one serves
trap 'kill "$server" ${full[0]:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
bins="${GROWTH_BINS:-}"
cpu() { server_cpu "$server"; }
# threads: the server's CPU seconds per thread name, "name=seconds ...".
threads() {
  local task
  for task in /proc/"$server"/task/*; do
    printf '%s=%s\n' "$(tr ' ' _ <"$task/comm")" "$(server_cpu "$server/task/${task##*/}")"
  done | awk -F= '{s[$1] += $2} END {for (n in s) printf "%s=%s ", n, s[n]}'
}
# stored: tokens in the vault being served — the tokens its server created
# plus $offset, what the vault held when this server started (a restarted
# full vault's counter starts at 0).
offset=0
stored() { curl -s "http://$ops/metrics" | awk -v o="$offset" '/^cardvault_tokens_created_total/ {v = $2} END {print int(v) + o}'; }
sample="$work/sample.jsonl"

measure() { # label, load args...
  local label="$1"; shift
  local before after json count threads_before threads_after
  count="$(stored)"; count="${count:-0}"
  before="$(cpu)"; threads_before="$(threads)"
  if [ -n "${GROWTH_PERF:-}" ]; then
    (sleep 3; perf record -g -p "$server" -o "$GROWTH_PERF/perf-${label// /-}-$count.data" -- sleep 8 >/dev/null 2>&1) &
  fi
  json="$("$bin" load --dev "$vault" --target "$api" --duration "$duration" --warmup 2s --json --concurrency 64 "$@")"
  after="$(cpu)"; threads_after="$(threads)"
  [ -z "${GROWTH_PERF:-}" ] || wait "$!" 2>/dev/null || true
  rss="$(awk '/^VmRSS/ {print $2 * 1024}' "/proc/$server/status")"
  python3 - "$label" "$count" "$before" "$after" "$json" "$vault/db" "$threads_before" "$threads_after" "$rss" <<'PY'
import json, os, sys
label, count, before, after, report, db = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5]), sys.argv[6]
rss = int(sys.argv[9])
# Where the server's CPU went, by thread: request workers, the writer,
# compaction (rocksdb:low), flushes (rocksdb:high), the audit trail.
parse = lambda text: {n: float(v) for n, v in (p.split("=") for p in text.split())}
t0, t1 = parse(sys.argv[7]), parse(sys.argv[8])
names = {"tokio-rt-worker": "workers", "cardvault-write": "writer", "rocksdb:low": "compaction",
         "rocksdb:high": "flush", "cardvault-audit": "audit"}
split = {}
for n, v in t1.items():
    split[names.get(n, "other")] = split.get(names.get(n, "other"), 0.0) + v - t0.get(n, 0.0)
sst = wal = other = 0
for name in os.listdir(db):
    size = os.path.getsize(os.path.join(db, name))
    if name.endswith(".sst"): sst += size
    elif name.endswith(".log"): wal += size
    else: other += size
# Requests over warmup + measurement ≈ rate × (duration + 2 s warmup).
requests = max(report["throughput_per_s"] * (report["duration_s"] + 2.0), 1)
cpu_us = (after - before) / requests * 1e6
l = report["latency_ms"]
per = lambda b: b / count if count else 0
print(f"{label:<22} stored {count:>10,}  {report['throughput_per_s']:>8.0f} req/s  p99 {l['p99']:7.2f} ms  "
      f"cpu {cpu_us:6.1f} µs/req  sst {per(sst):6.1f} B/token  wal {wal / 2**20:7.1f} MiB  "
      f"rss {rss / 2**20:5.0f} MiB  errors {sum(report['errors'].values())}", flush=True)
print(f"{'':<22} cpu by thread: " + "  ".join(
    f"{k} {split.get(k, 0.0) / requests * 1e6:.1f} µs" for k in ("workers", "writer", "compaction", "flush", "audit", "other")),
    flush=True)
print(json.dumps({"label": label, "stored": count, "server_cpu_us_per_req": cpu_us, "cpu_seconds_by_thread": split, "sst_bytes": sst,
                  "wal_bytes": wal, "other_bytes": other, "rss_bytes": rss, **report}), file=sys.stderr)
PY
}

# settle: after a prefill RocksDB still compacts for a while; wait (at most
# GROWTH_SETTLE_S, default 180 s; 0 measures at once) until the idle server
# uses under 5% of a core, so a checkpoint measures the vault, not the
# compaction debt of the bulk load. Prints how long it took.
settle() {
  local limit="${GROWTH_SETTLE_S:-180}" start=$SECONDS a b
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    a="$(cpu)"; sleep 2; b="$(cpu)"
    python3 -c "import sys; sys.exit(0 if $b - $a < 0.1 else 1)" && break
  done
  echo "# settled after $((SECONDS - start)) s"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $bin; duration $duration"
measure "empty tokenize" --op tokenize
measure "empty detokenize" --op detokenize
for target in $checkpoints; do
  # Prefill through the batch path in rounds until the vault holds `target`.
  while :; do
    have="$(stored)"; have="${have:-0}"
    [ "$have" -ge "$target" ] && break
    # ~65 k tokens/s on this box; aim for the rest, at most 120 s a round.
    secs=$(( (target - have) / 50000 + 1 )); [ "$secs" -gt 120 ] && secs=120
    "$bin" load --dev "$work/dev" --target "$api" --op tokenize-batch --batch 1000 --concurrency 4 \
      --duration "${secs}s" --warmup 0s --json --ack-log "$sample" --ack-every 1000 >/dev/null
  done
  settle
  # Detokenize over a sample of the whole prefill; a checkpoint the empty
  # runs already passed had no prefill, so it detokenizes what load makes.
  over_fill=(); [ -s "$sample" ] && over_fill=(--tokens-from "$sample")
  measure "tokenize" --op tokenize
  measure "detokenize" --op detokenize "${over_fill[@]}"
done

for round in $(seq "${GROWTH_ROUNDS:-0}"); do
  for each in ${bins:-"$bin"}; do
    name=""; [ -z "$bins" ] || name=" $(basename "$each")"
    full=("$server" "$api" "$ops" "$offset")
    start_dev "$each" "$work/empty-$round"
    vault="$work/empty-$round"; offset=0
    measure "round $round$name empty tokenize" --op tokenize
    measure "round $round$name empty detokenize" --op detokenize
    kill "$server"; wait "$server" 2>/dev/null || true; rm -rf "$vault"
    server="${full[0]}"; api="${full[1]}"; ops="${full[2]}"; offset="${full[3]}"; vault="$work/dev"; full=()
    if [ -n "$bins" ]; then
      # The full vault served by this build from a fresh start.
      offset="$(stored)"
      kill "$server"; wait "$server" 2>/dev/null || true
      start_dev "$each" "$work/dev"
      settle
      sed -n 's/.*key filter ready \(.*\)/# key filter ready: \1/p' "$work/dev.err"
    fi
    measure "round $round$name tokenize" --op tokenize
    measure "round $round$name detokenize" --op detokenize "${over_fill[@]}"
  done
done

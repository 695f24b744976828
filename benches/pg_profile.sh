#!/usr/bin/env bash
# Where the PostgreSQL path spends its time (issue 32): a dev vault on a
# local PostgreSQL 15 with pg_stat_statements, `cardvault load` at 64
# connections, `perf record -a -g` for 6 s mid-run. Prints the rate, the
# CPU share of each process (idle included: a path waiting on round trips
# or WAL flushes leaves the CPUs idle) and the statements by total time.
#
#   benches/pg_profile.sh BIN [OP]        (OP: tokenize, the default, or detokenize)
#   perf report -i "${PERF_DATA:-/tmp/pg_profile.data}" …   afterwards, for more
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
lift_rate_limits
bin="$1"; op="${2:-tokenize}"; data="${PERF_DATA:-/tmp/pg_profile.data}"
command -v perf >/dev/null || { echo "benches/pg_profile.sh needs perf" >&2; exit 1; }
postgres_work_dir
start_postgres "$work" "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
psql_() { as_pg /usr/lib/postgresql/15/bin/psql -X -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres "$@"; }
psql_ -qc "CREATE EXTENSION pg_stat_statements"
dir="$work/vault"
mkdir -p "$dir"
CARDVAULT_STORAGE__BACKEND=postgres CARDVAULT_STORAGE__URL="$pg_url" RUST_LOG=warn \
  "$bin" serve --dev "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
server=$!
api="$(await_api "$dir.out")"
# Tokens for detokenize, and warm caches; then a clean slate of statistics.
"$bin" load --dev "$dir" --target "$api" --op tokenize --concurrency 64 --duration 3s --warmup 0s --json >/dev/null
psql_ -qc "SELECT pg_stat_statements_reset()" >/dev/null
"$bin" load --dev "$dir" --target "$api" --op "$op" --concurrency 64 --duration 12s --warmup 1s --json >"$work/load.json" &
load=$!
sleep 4
postmaster="$(head -1 "$work/pg/postmaster.pid")"
vault_cpu0="$(server_cpu "$server")"; pg_cpu0="$(tree_cpu "$postmaster")"
perf record -F 999 -a -g -o "$data" -- sleep 6 >/dev/null 2>&1
vault_cpu1="$(server_cpu "$server")"; pg_cpu1="$(tree_cpu "$postmaster")"
wait "$load"
echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; $op"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("rate %.0f/s, p99 %.2f ms" % (r["throughput_per_s"], r["latency_ms"]["p99"]))' "$work/load.json"
# CPU per operation over the 6 s of the profile (the rate as measured
# over the whole run): the vault process, and PostgreSQL's postmaster
# with its backends.
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["throughput_per_s"]; n=6*r; print("CPU per %s: vault %.1f us, PostgreSQL %.1f us" % (sys.argv[2], (float(sys.argv[4])-float(sys.argv[3]))/n*1e6, (float(sys.argv[6])-float(sys.argv[5]))/n*1e6))' \
  "$work/load.json" "$op" "$vault_cpu0" "$vault_cpu1" "$pg_cpu0" "$pg_cpu1"
echo "CPU by process (swapper = idle):"
perf report -i "$data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -6
psql_ -c "SELECT calls, round(total_exec_time::numeric, 0) AS ms, round(mean_exec_time::numeric, 3) AS mean_ms, rows,
  left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10"

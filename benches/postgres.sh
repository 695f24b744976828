#!/usr/bin/env bash
# Tokenize and detokenize at 64 connections on the embedded RocksDB store
# and on PostgreSQL 15 (a local server started here: fsync and
# synchronous_commit on, as in production), one binary, fresh `serve --dev`
# directories, alternating rounds so drift of this noisy VM hits both.
#
#   benches/postgres.sh BIN [ROUNDS] [DURATION]
#
# PG_OPS picks the runs (default "tokenize detokenize"); "tokenize-batch"
# runs batches of 1,000 at 4 connections and prints items/s.
# PG_SYNC=patroni puts the PostgreSQL side on two Patroni members with
# synchronous_mode instead (etcd, streaming replication: every commit
# waits for the standby), reached through the multi-host URL.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
lift_rate_limits
bin="$1"; rounds="${2:-2}"; duration="${3:-10s}"
pgbin=/usr/lib/postgresql/15/bin
postgres_work_dir
if [ "${PG_SYNC:-}" = patroni ]; then
  mkdir -p "$work/patroni"; chmod 755 "$work"
  trap 'kill "$server" 2>/dev/null || true; stop_patroni_pair "$work/patroni"; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  start_patroni_pair "$work/patroni" 10 1 4 || { echo "no Patroni leader and synchronous standby" >&2; exit 1; }
  port="${pg_port[$(member_with Leader)]}"
  url="host=127.0.0.1,127.0.0.1 port=${pg_port[pg1]},${pg_port[pg2]} user=postgres dbname=postgres sslmode=disable target_session_attrs=read-write"
else
  start_postgres "$work"
  port="$pg_port"; url="$pg_url"
fi

side() { # rocksdb|postgres round
  local backend="$1" dir="$work/$1-$2"
  mkdir -p "$dir"
  if [ "$backend" = postgres ]; then
    PGOPTIONS="--client-min-messages=warning" as_pg "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc \
      "DROP TABLE IF EXISTS cardvault_tokens, cardvault_fingerprints, cardvault_keys, cardvault_counters, cardvault_checkpoints, cardvault_collect_sessions, cardvault_migration, cardvault_schema" >/dev/null
    CARDVAULT_STORAGE__BACKEND=postgres CARDVAULT_STORAGE__URL="$url" RUST_LOG=warn \
      "$bin" serve --dev "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
  else
    RUST_LOG=warn "$bin" serve --dev "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
  fi
  server=$!
  local api
  api="$(await_api "$dir.out")"
  local shape
  for op in ${PG_OPS:-tokenize detokenize}; do
    if [ "$op" = tokenize-batch ]; then shape="--batch 1000 --concurrency 4"; else shape="--concurrency 64"; fi
    # shellcheck disable=SC2086
    "$bin" load --dev "$dir" --target "$api" --duration "$duration" --warmup 2s --json --op "$op" $shape |
      python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_ms']; print(f\"$backend $op ${shape//--/} {r['throughput_per_s']:9.0f} req/s {r['items_per_s']:9.0f} items/s p50 {l['p50']:6.2f} p99 {l['p99']:6.2f} ms errors {sum(r['errors'].values())}\")"
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; $bin; PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')${PG_SYNC:+ under Patroni, a synchronous standby}; $rounds rounds of $duration"
for round in $(seq "$rounds"); do
  side rocksdb "$round"
  side postgres "$round"
done

#!/usr/bin/env bash
# A checkout through a database failover (issue 32): etcd, two Patroni
# members managing PostgreSQL 15 (streaming replication, synchronous_mode)
# and two vault nodes on the multi-host URL with
# target_session_attrs=read-write, all on loopback in a temporary directory
# and all as an unprivileged user (as root: the `postgres` user). Each
# fault runs under `cardvault load --ack-log` on both nodes at once:
#   1. the primary's postmaster killed (kill -9) — its Patroni fails over
#      at once (master_start_timeout 0: safe in synchronous mode, nothing
#      acknowledged is only on the dead server) and promotes the standby;
#      then the whole primary member killed (its Patroni too: the machine
#      gone) — the standby takes over when the leader key expires (ttl);
#   2. a planned switchover (`patronictl switchover`);
#   3. the database restarted (both members stopped, then started);
#   4. the standby stopped (synchronous_mode drops to one copy; see
#      docs/failover.md for what an acknowledgement then means);
#   5. a vault node killed — the other keeps serving; then a commit that
#      cannot complete (synchronous_mode_strict with the standby gone):
#      `/readyz` answers 503 "commit_stalled" and 200 again by itself;
#   6. bad settings at start: unreachable hosts, a wrong password, only a
#      read-only server — a clear error, the password nowhere.
# After each fault: only 503s while it lasted (never a 500), 0 acknowledged
# tokens lost on either node, each logged PAN still has its one token, and
# the longest time without a success. At the end: `audit verify` on both
# nodes' trails, no PAN in `pg_dump` or the database directories.
#
#   scripts/failover.sh [LOAD_SECONDS]       (CI: 20; FAILOVER_DEFAULTS=1
#   for Patroni's default ttl 30 / loop_wait 10 / retry_timeout 10, with a
#   load of 50 s — the script's own are ttl 10 / loop_wait 1 /
#   retry_timeout 4)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${CARDVAULT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cardvault}"
load_seconds="${1:-$([ -n "${FAILOVER_DEFAULTS:-}" ] && echo 50 || echo 20)}"

# PostgreSQL refuses to run as root: as root, run the whole script as the
# `postgres` user from a staging directory it can read.
if [ "$(id -u)" -eq 0 ]; then
  stage="$(mktemp -d)"
  cp "$bin" "$stage/cardvault"
  cp "$here/failover.sh" "$here/lib.sh" "$stage/"
  chown -R postgres: "$stage"
  chmod 755 "$stage"
  status=0
  runuser -u postgres -- env CARDVAULT_BIN="$stage/cardvault" FAILOVER_DEFAULTS="${FAILOVER_DEFAULTS:-}" \
    bash "$stage/failover.sh" "$load_seconds" || status=$?
  rm -rf "$stage"
  exit "$status"
fi

source "$here/lib.sh"
for tool in patroni patronictl etcd; do
  command -v "$tool" >/dev/null || { echo "failover.sh needs $tool (apt-get install patroni etcd-server)" >&2; exit 1; }
done
pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/postgres" ] || { echo "failover.sh needs PostgreSQL 15 (apt-get install postgresql)" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  stop_patroni_pair "$work"
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { # the message, and the tails of the logs (the vault logs no card data)
  echo "FAIL: $*" >&2
  for f in "$work"/A.log "$work"/B.log "$work"/pg1.log "$work"/pg2.log; do
    [ -f "$f" ] && { echo "--- $(basename "$f")" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}

if [ -n "${FAILOVER_DEFAULTS:-}" ]; then ttl=30 loop_wait=10 retry_timeout=10; else ttl=10 loop_wait=1 retry_timeout=4; fi
# The database password: a canary that must appear nowhere.
password="pw-canary-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"

# --- etcd and two Patroni members (scripts/lib.sh) -----------------------
start_patroni_pair "$work" "$ttl" "$loop_wait" "$retry_timeout" || fail "the cluster did not reach a leader and a synchronous standby"
leader="$(member_with Leader)"
psql_() { "$pgbin/psql" -X -q -h 127.0.0.1 -p "${pg_port[$1]}" -U postgres -d postgres -v ON_ERROR_STOP=1 "${@:2}"; }
psql_ "$leader" -c "CREATE ROLE cardvault LOGIN PASSWORD '$password'" -c "CREATE DATABASE cardvault OWNER cardvault"
echo "# failover: $(date -u +%FT%TZ), $(nproc) cores, Patroni $(patroni --version | awk '{print $2}'), ttl $ttl loop_wait $loop_wait retry_timeout $retry_timeout; load ${load_seconds}s per fault"

# --- two vault nodes ------------------------------------------------------
url_for() { echo "host=127.0.0.1,127.0.0.1 port=$1 user=cardvault password=$2 dbname=cardvault sslmode=disable target_session_attrs=read-write"; }
good_url="$(url_for "${pg_port[pg1]},${pg_port[pg2]}" "$password")"
# Verification detokenizes and tokenizes every acknowledged PAN again in
# batches: the dev rate limits would refuse part of them.
lift_rate_limits
declare -A node_pid node_api node_ops
start_node() { # name
  local n="$1"
  CARDVAULT_STORAGE__BACKEND=postgres CARDVAULT_STORAGE__URL="$good_url" RUST_LOG=info \
    "$bin" serve --dev --data-dir "$work/$n" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 \
    >"$work/$n.out" 2>>"$work/$n.log" &
  node_pid[$n]=$!; pids+=($!)
  node_api[$n]="$(await_api "$work/$n.out" 60)" || { cat "$work/$n.log" >&2; fail "vault node $n did not start"; }
  node_ops[$n]="$(sed -n 's/.*ops http:\/\/\([^ ]*\).*/\1/p' "$work/$n.out")"
}
start_node A
mkdir -p "$work/B" && cp -a "$work/A/pki" "$work/A/kek.key" "$work/A/cardvault.toml" "$work/B/"
start_node B

readyz() { curl -s -o /dev/null -w '%{http_code}' "http://${node_ops[$1]}/readyz" || echo 000; }
readyz_state() { curl -s "http://${node_ops[$1]}/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["storage"])' 2>/dev/null || echo "?"; }
await_readyz() { # node code seconds
  local deadline=$(( $(now_ms) + $3 * 1000 ))
  while [ "$(now_ms)" -lt "$deadline" ]; do [ "$(readyz "$1")" = "$2" ] && return 0; sleep 0.2; done
  return 1
}

# --- one fault under load -------------------------------------------------
declare -A gap_ms
fault_no=0; total_acked=0
load_on() { # node, ack log, seed
  "$bin" load --dev "$work/$1" --target "${node_api[$1]}" --op tokenize --concurrency 8 \
    --duration "${load_seconds}s" --warmup 0s --seed "$3" --ack-log "$2" --json >"$2.report" 2>/dev/null
}
check_report() { # label report (only 503s or lost connections to a killed node)
  python3 - "$1" "$2" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
bad = {k: v for k, v in r["errors"].items() if not (k.startswith("http_503") or k.startswith("connect") or k.startswith("connection"))}
print(f"  {label}: {r['ops']} acknowledged, errors {dict(r['errors']) or 0}, longest gap without a success {r['longest_gap_ms']:.0f} ms")
if bad:
    sys.exit(f"FAIL: {label}: answers other than 503: {bad}")
PY
}
verify_on() { # node ack-log -> fails unless 0 lost, 0 mismatched, 0 second tokens
  "$bin" load verify --dev "$work/$1" --target "${node_api[$1]}" --ack-log "$2" --retokenize --json >"$2.verify-$1" 2>&1 || true
  python3 - "$1" "$2.verify-$1" <<'PY' || fail "acknowledged tokens lost or changed on node $1"
import json, sys
node, path = sys.argv[1], sys.argv[2]
text = open(path).read()
try:
    r = json.loads(text.splitlines()[0])
except (ValueError, IndexError):
    sys.exit(f"verify on {node}: {text.strip()}")
print(f"  verified on {node}: {r['verified']}/{r['entries']}, lost {r['lost']}, mismatched {r['mismatched']}, "
      f"unreadable {r['errors']} {r['error_codes'] or ''}, another token {r['second_tokens']}")
sys.exit(0 if r["entries"] == r["verified"] and r["second_tokens"] == 0 else 1)
PY
}
# fault NAME ACTION [NODES]: load on NODES (default "A B") while ACTION runs
# 3 s in; then the checks. The longest gap lands in gap_ms[NAME].
fault() {
  local name="$1" action="$2" nodes="${3:-A B}" n loads=()
  fault_no=$((fault_no + 1))
  echo "## fault $fault_no: $name"
  for n in $nodes; do load_on "$n" "$work/acks-$fault_no-$n.jsonl" "$fault_no$RANDOM" & loads+=($!); done
  sleep 3
  "$action"
  for n in "${loads[@]}"; do wait "$n" || true; done
  local worst=0 g
  for n in $nodes; do
    check_report "node $n" "$work/acks-$fault_no-$n.jsonl.report" || exit 1
    kill -0 "${node_pid[$n]}" 2>/dev/null || continue   # a killed node's own load
    g="$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["longest_gap_ms"]))' "$work/acks-$fault_no-$n.jsonl.report")"
    # A gap that reaches the end of the window is not a recovery.
    [ "$g" -lt $(( (load_seconds - 4) * 1000 )) ] || [ "$name" = "vault node B killed" ] ||
      fail "$name: node $n did not serve again within the load window (gap $g ms)"
    [ "$g" -gt "$worst" ] && worst="$g"
  done
  gap_ms[$name]="$worst"
  for n in A B; do
    kill -0 "${node_pid[$n]}" 2>/dev/null || continue
    await_readyz "$n" 200 120 || fail "node $n's /readyz did not turn 200 after the fault"
  done
  verify_fault "$fault_no" "$nodes"
}
# verify_fault NO NODES: fault NO's ack logs (of NODES' loads) on every
# live node.
verify_fault() {
  local n v
  for n in $2; do
    for v in A B; do
      kill -0 "${node_pid[$v]}" 2>/dev/null && verify_on "$v" "$work/acks-$1-$n.jsonl"
    done
    total_acked=$((total_acked + $(wc -l <"$work/acks-$1-$n.jsonl")))
  done
}

kill_postmaster() {
  local victim; victim="$(member_with Leader)"
  echo "  kill -9 of $victim's postmaster at $(date -u +%T.%3N)"
  kill -9 "$(postmaster_of "$victim")"
}
kill_primary_member() {
  local victim; victim="$(member_with Leader)"
  echo "  kill -9 of $victim (its Patroni and postmaster) at $(date -u +%T.%3N)"
  kill -9 "${patroni_pid[$victim]}" "$(postmaster_of "$victim")"
  killed_member="$victim"
}
switchover() {
  local from to; from="$(member_with Leader)"; to="$(member_with 'Sync Standby')"
  echo "  patronictl switchover $from -> $to at $(date -u +%T.%3N)"
  patronictl_ switchover --leader "$from" --candidate "$to" --force >/dev/null
}
restart_database() {
  echo "  both members stopped at $(date -u +%T.%3N)"
  kill -TERM "${patroni_pid[pg1]}" "${patroni_pid[pg2]}"
  local m; for m in pg1 pg2; do while kill -0 "${patroni_pid[$m]}" 2>/dev/null; do sleep 0.2; done; done
  await_readyz A 503 10 || fail "node A's /readyz answered $(readyz A) with the database down"
  echo "  /readyz with the database down: A $(readyz A) $(readyz_state A), B $(readyz B) $(readyz_state B)"
  sleep 2
  start_member pg1; start_member pg2
  echo "  both members started at $(date -u +%T.%3N)"
}
stop_standby() {
  local standby; standby="$(member_with 'Sync Standby')"
  echo "  the standby $standby stopped at $(date -u +%T.%3N)"
  kill -TERM "${patroni_pid[$standby]}"
  while kill -0 "${patroni_pid[$standby]}" 2>/dev/null; do sleep 0.2; done
  stopped_member="$standby"
}
kill_node_b() {
  echo "  kill -9 of vault node B at $(date -u +%T.%3N)"
  kill -9 "${node_pid[B]}"
}

fault "primary postmaster killed" kill_postmaster
await_cluster 180 || fail "no leader and synchronous standby again"   # its Patroni brings it back as a standby
fault "primary member killed" kill_primary_member
start_member "$killed_member"     # back as a standby (pg_rewind)
await_cluster 180 || fail "no leader and synchronous standby again"
fault "switchover" switchover
await_cluster 180 || fail "no leader and synchronous standby again"
fault "database restarted" restart_database
await_cluster 180 || fail "no leader and synchronous standby again"
fault "standby stopped" stop_standby
start_member "$stopped_member"
await_cluster 180 || fail "no leader and synchronous standby again"
fault "vault node B killed" kill_node_b
start_node B
for n in A B; do verify_on B "$work/acks-$fault_no-$n.jsonl"; done

# --- a commit that cannot complete: /readyz 503, then 200 by itself -------
echo "## a stalled commit (synchronous_mode_strict, the standby gone)"
patronictl_ edit-config -s synchronous_mode_strict=true --force >/dev/null
sleep $((loop_wait + 1))
stop_standby
t0="$(now_ms)"
await_readyz A 503 30 || fail "node A's /readyz stayed $(readyz A) while no commit could complete"
await_readyz B 503 30 || fail "node B's /readyz stayed $(readyz B) while no commit could complete"
echo "  /readyz 503 on both nodes after $(( $(now_ms) - t0 )) ms: A $(readyz_state A), B $(readyz_state B)"
start_member "$stopped_member"
t0="$(now_ms)"
await_readyz A 200 120 || fail "node A's /readyz did not turn 200 again once commits completed"
await_readyz B 200 30 || fail "node B's /readyz did not turn 200 again"
echo "  /readyz 200 again $(( $(now_ms) - t0 )) ms after the standby was started"
patronictl_ edit-config -s synchronous_mode_strict=false --force >/dev/null
await_cluster 180 || fail "no leader and synchronous standby again"

# --- bad settings at start --------------------------------------------------
echo "## bad settings at start"
bad_start() { # label url
  local out="$work/bad.out" status=0
  mkdir -p "$work/bad" && cp -a "$work/A/pki" "$work/A/kek.key" "$work/A/cardvault.toml" "$work/bad/" 2>/dev/null || true
  CARDVAULT_STORAGE__BACKEND=postgres CARDVAULT_STORAGE__URL="$2" CARDVAULT_STORAGE__COMMIT_BOUND_MS=2000 RUST_LOG=info \
    timeout 60 "$bin" serve --dev --data-dir "$work/bad" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$out" 2>&1 || status=$?
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ] || fail "$1: serve did not refuse to start (status $status)"
  ! grep -q "$password" "$out" || fail "$1: the password is in the output"
  echo "  $1: exit $status — $(grep -m1 -iE 'error|refus|cannot' "$out" | cut -c1-160)"
}
dead="$(free_port)"
bad_start "unreachable hosts" "$(url_for "$dead,$dead" "$password")"
bad_start "wrong password" "$(url_for "${pg_port[pg1]},${pg_port[pg2]}" "wrong-$password")"
bad_start "read-only server only" "$(url_for "${pg_port[$(member_with 'Sync Standby')]}" "$password")"

# --- the trails, and no PAN at rest ---------------------------------------------
kill -TERM "${node_pid[A]}" "${node_pid[B]}"; wait "${node_pid[A]}" "${node_pid[B]}" 2>/dev/null || true
for n in A B; do
  "$bin" audit verify "$work/$n/audit" --dev "$work/$n" >"$work/audit-$n.out" 2>&1 || { cat "$work/audit-$n.out" >&2; fail "audit verify failed on node $n"; }
  echo "audit verify $n: $(head -1 "$work/audit-$n.out")"
done
! grep -rq "$password" "$work"/A.* "$work"/B.* "$work/A/audit" "$work/B/audit" || fail "the password is in a node's log or trail"
python3 -c 'import json,sys; [print(json.loads(l)["pan"]) for f in sys.argv[1:] for l in open(f) if l.strip()]' "$work"/acks-*.jsonl | shuf -n 2000 --random-source=<(yes) >"$work/pans.txt"
"$pgbin/pg_dump" -h 127.0.0.1 -p "${pg_port[$(member_with Leader)]}" -U postgres cardvault >"$work/dump.sql"
! grep -qF -f "$work/pans.txt" "$work/dump.sql" || fail "a PAN is in pg_dump's output"
! grep -rqF -f "$work/pans.txt" "$work/pg1" "$work/pg2" || fail "a PAN is in a database directory"
echo "no PAN of 2000 sampled in pg_dump ($(wc -c <"$work/dump.sql") bytes) or the database directories"

echo "total: $total_acked acknowledged tokens checked on both nodes, 0 lost"
for name in "primary postmaster killed" "primary member killed" "switchover" "database restarted" "standby stopped" "vault node B killed"; do
  echo "  longest gap without a success, $name: ${gap_ms[$name]} ms"
done

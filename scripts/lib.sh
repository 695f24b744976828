# Shared by the scripts in scripts/ and benches/ (source it; not run alone).

# await_api FILE [SECONDS]: waits until the `cardvault serve` stdout captured
# in FILE says it is serving, then prints the API URL (https://HOST:PORT).
# After SECONDS (default 20) it prints FILE to stderr and fails.
await_api() {
  local out="$1" deadline=$((SECONDS + ${2:-20}))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if grep -q '^cardvault is serving' "$out" 2>/dev/null; then
      sed -n 's/^cardvault is serving: API \(https:[^ ]*\).*/\1/p' "$out"
      return 0
    fi
    sleep 0.05
  done
  echo "cardvault did not report serving within ${2:-20} s:" >&2
  cat "$out" >&2
  return 1
}

# lift_rate_limits: benchmarks measure the vault, so the per-principal rate
# limits (default 50 k detokenized items/s) are raised out of the way.
lift_rate_limits() {
  export CARDVAULT_LIMITS__TOKENIZE_RATE__PER_SECOND=10000000 CARDVAULT_LIMITS__TOKENIZE_RATE__BURST=20000000
  export CARDVAULT_LIMITS__DETOKENIZE_RATE__PER_SECOND=10000000 CARDVAULT_LIMITS__DETOKENIZE_RATE__BURST=20000000
  export CARDVAULT_LIMITS__METADATA_RATE__PER_SECOND=10000000 CARDVAULT_LIMITS__METADATA_RATE__BURST=20000000
  export CARDVAULT_ALERTS__METADATA_BURST__MAX=100000000000
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# now_ms: the wall clock in milliseconds.
now_ms() { date +%s%3N; }

# server_work_dir [TEMPLATE]: makes the temp dir $work (`mktemp -d
# [TEMPLATE]`) and, on exit, stops the server in $server (if any) and
# removes $work. Start servers into $server so they are stopped.
server_work_dir() {
  work="$(mktemp -d "$@")"
  server=""
  trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# start_dev BIN DIR: starts `BIN serve --dev --data-dir DIR` on ports the OS
# picks (stdout in DIR.out, stderr in DIR.err); sets $server (its PID),
# $api (https://HOST:PORT) and $ops (HOST:PORT). Logs at $SERVER_LOG
# (default warn).
start_dev() {
  local bin="$1" dir="$2"
  RUST_LOG="${SERVER_LOG:-warn}" "$bin" serve --dev --data-dir "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
  server=$!
  api="$(await_api "$dir.out")"
  ops="$(sed -n 's/.*ops http:\/\/\([^ ]*\).*/\1/p' "$dir.out")"
}

# server_cpu PID: user + system CPU seconds the process has used so far.
server_cpu() {
  awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"
}

# nginx_conf_head WORK_DIR: the top of a one-worker nginx config under
# WORK_DIR/nginx (pid, logs and temp paths there), up to the open `http {`;
# the caller adds its `server` blocks and the closing brace.
nginx_conf_head() {
  local work="$1"
  cat <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
CONF
}

# start_nginx_anchor DEV_DIR WORK_DIR: the TLS floor a request is measured
# against — nginx (Debian's, installed if missing) on 127.0.0.1 with the dev
# PKI, a required client certificate, TLS 1.3 only, one worker, answering
# every request with a fixed token JSON. Sets $nginx (PID) and $nginx_api.
start_nginx_anchor() {
  local dev="$1" work="$2" port
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx >/dev/null
    $sudo systemctl stop nginx 2>/dev/null || true
  fi
  port="$(free_port)"
  mkdir -p "$work/nginx"
  { nginx_conf_head "$work"; cat <<CONF
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $dev/pki/server.pem;
    ssl_certificate_key $dev/pki/server-key.pem;
    ssl_client_certificate $dev/pki/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    location / {
      default_type application/json;
      return 200 '{"token":"4111118014801111","bin":"411111","last4":"1111","brand":"visa"}';
    }
  }
}
CONF
  } >"$work/nginx/nginx.conf"
  "$(command -v nginx || echo /usr/sbin/nginx)" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/error.log" &
  nginx=$!
  nginx_api="https://127.0.0.1:$port"
  local deadline=$((SECONDS + 10))
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { cat "$work/nginx/error.log" >&2; return 1; }
    sleep 0.1
  done
}

# tree_cpu PID: CPU seconds of PID and its children (nginx master + worker).
tree_cpu() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1"); do
    total="$(python3 -c "print($total + $(server_cpu "$p"))")"
  done
  echo "$total"
}

# as_pg CMD…: runs CMD as the `postgres` user when root (PostgreSQL refuses
# root), else as is.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# start_postgres DIR [SERVER_OPTIONS]: a fresh PostgreSQL 15 in DIR/pg
# (fsync and synchronous_commit on) on a free loopback port, its socket in
# DIR (given to `postgres` when root); sets $pg_port and $pg_url (trust,
# sslmode=disable). Stop it with stop_postgres DIR.
start_postgres() {
  local dir="$1" options="${2:-}" pgbin=/usr/lib/postgresql/15/bin
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  as_pg "$pgbin/initdb" -D "$dir/pg" --auth=trust --username=postgres >/dev/null
  pg_port="$(free_port)"
  as_pg "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
    -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=100 $options" start >/dev/null
  pg_url="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres sslmode=disable"
}

# stop_postgres DIR: stops what start_postgres DIR started (if anything).
stop_postgres() {
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$1/pg" -m immediate -w stop >/dev/null 2>&1 || true
}

# postgres_work_dir: server_work_dir for a script that also runs
# start_postgres "$work": on exit the server in $server, then PostgreSQL,
# then $work.
postgres_work_dir() {
  work="$(mktemp -d)"
  server=""
  trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; stop_postgres "$work"; rm -rf "$work"' EXIT
}

# start_patroni_pair DIR TTL LOOP_WAIT RETRY_TIMEOUT: etcd and two Patroni
# members (PostgreSQL 15, streaming replication, synchronous_mode,
# master_start_timeout 0, pg_rewind; trust on loopback, scram for the
# `cardvault` role) in DIR — as the `postgres` user when root — and waits
# for a leader and a synchronous standby (status 1 if none comes). Sets
# pg_port[pg1|pg2], patroni_pid[…] and appends what it starts to pids;
# defines start_member, patronictl_, members, member_with, postmaster_of and
# await_cluster. stop_patroni_pair DIR stops everything it started.
start_patroni_pair() {
  patroni_dir="$1"
  local ttl="$2" loop_wait="$3" retry_timeout="$4" m etcd_peer
  local pgbin=/usr/lib/postgresql/15/bin
  [ "$(id -u)" -eq 0 ] && chown postgres: "$patroni_dir"
  declare -gA pg_port rest_port patroni_pid
  declare -ga pids
  etcd_client="$(free_port)"; etcd_peer="$(free_port)"
  exec_as_pg etcd --name e1 --data-dir "$patroni_dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "e1=http://127.0.0.1:$etcd_peer" >"$patroni_dir/etcd.log" 2>&1 &
  pids+=($!)
  for m in pg1 pg2; do
    pg_port[$m]="$(free_port)"; rest_port[$m]="$(free_port)"
    cat >"$patroni_dir/$m.yml" <<YAML
scope: cardvault
namespace: /failover/
name: $m
log: {level: WARNING}
restapi: {listen: "127.0.0.1:${rest_port[$m]}", connect_address: "127.0.0.1:${rest_port[$m]}"}
etcd3: {hosts: "127.0.0.1:$etcd_client"}
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop_wait
    retry_timeout: $retry_timeout
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    master_start_timeout: 0
    postgresql:
      use_pg_rewind: true
      parameters: {wal_log_hints: "on", max_wal_senders: 10, max_replication_slots: 10, hot_standby: "on"}
  initdb: [{encoding: UTF8}, {auth: trust}]
postgresql:
  pg_hba:
    - host all cardvault 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
    - local all all trust
  listen: "127.0.0.1:${pg_port[$m]}"
  connect_address: "127.0.0.1:${pg_port[$m]}"
  data_dir: $patroni_dir/$m
  bin_dir: $pgbin
  pgpass: $patroni_dir/$m.pgpass
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: replicator, password: replicator}
    rewind: {username: postgres, password: postgres}
  parameters: {unix_socket_directories: "$patroni_dir"}
YAML
    [ "$(id -u)" -eq 0 ] && chown postgres: "$patroni_dir/$m.yml"
  done
  start_member pg1
  for _ in $(seq 240); do [ -n "$(member_with Leader)" ] && break; sleep 0.5; done
  start_member pg2
  await_cluster 180
}
start_member() { exec_as_pg patroni "$patroni_dir/$1.yml" >>"$patroni_dir/$1.log" 2>&1 & patroni_pid[$1]=$!; pids+=($!); }
# exec_as_pg CMD…: as_pg that replaces the shell, so `exec_as_pg CMD &`
# leaves $! the command's own pid (signals reach it, not a subshell).
exec_as_pg() { if [ "$(id -u)" -eq 0 ]; then exec runuser -u postgres -- "$@"; else exec "$@"; fi; }
patronictl_() { as_pg patronictl -c "$patroni_dir/pg1.yml" "$@" 2>/dev/null; }
members() { patronictl_ list -f json || echo '[]'; }
# The member with the given role (Leader, "Sync Standby", Replica), if any.
member_with() { members | python3 -c 'import json,sys; r=[m["Member"] for m in json.load(sys.stdin) if m["Role"]==sys.argv[1] and m["State"] in ("running","streaming")]; print(r[0] if r else "")' "$1"; }
postmaster_of() { head -1 "$patroni_dir/$1/postmaster.pid"; }
# await_cluster SECONDS: until one leader runs and one synchronous standby
# streams (status 1, the members and their logs printed, if not).
await_cluster() {
  local deadline=$(( $(now_ms) + ${1:-120} * 1000 ))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    [ -n "$(member_with Leader)" ] && [ -n "$(member_with 'Sync Standby')" ] && return 0
    sleep 0.5
  done
  members >&2; tail -n 20 "$patroni_dir"/pg*.log >&2
  return 1
}
stop_patroni_pair() {
  local d
  pkill -9 -f "patroni $1/pg[12].yml" 2>/dev/null || true
  pkill -9 -f "etcd --name e1 --data-dir $1/etcd" 2>/dev/null || true
  # Patroni's postmasters outlive a killed Patroni: stop them by their data directory.
  for d in "$1"/pg1 "$1"/pg2; do
    [ -f "$d/postmaster.pid" ] && kill -9 "$(head -1 "$d/postmaster.pid")" 2>/dev/null || true
  done
}

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
}

# start_dev BIN DIR: starts `BIN serve --dev --data-dir DIR` on ports the OS
# picks (stdout in DIR.out, stderr in DIR.err); sets $server (its PID),
# $api (https://HOST:PORT) and $ops (HOST:PORT).
start_dev() {
  local bin="$1" dir="$2"
  RUST_LOG=warn "$bin" serve --dev --data-dir "$dir" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 >"$dir.out" 2>"$dir.err" &
  server=$!
  api="$(await_api "$dir.out")"
  ops="$(sed -n 's/.*ops http:\/\/\([^ ]*\).*/\1/p' "$dir.out")"
}

# server_cpu PID: user + system CPU seconds the process has used so far.
server_cpu() {
  awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"
}

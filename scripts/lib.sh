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

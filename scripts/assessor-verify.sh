#!/usr/bin/env bash
# Verifies a cardvault evidence bundle and/or an audit trail against its
# signed checkpoints WITHOUT cardvault: only openssl, jq, xxd and coreutils
# (docs/evidence.md walks through the same steps by hand).
#
#   scripts/assessor-verify.sh --pubkey evidence.pub [--bundle DIR]
#                              [--trail AUDIT_DIR --checkpoints FILE|DIR]
#
# The public key must be the one pinned when the vault made it: compare
# its fingerprint (printed first) with the one recorded then. Exit 0 when
# everything checks, 1 naming the first failure, 64 on usage errors.
set -euo pipefail

pubkey="" bundle="" trail="" checkpoints=""
while (($#)); do
  case "$1" in
    --pubkey) pubkey="$2"; shift 2 ;;
    --bundle) bundle="$2"; shift 2 ;;
    --trail) trail="$2"; shift 2 ;;
    --checkpoints) checkpoints="$2"; shift 2 ;;
    *) echo "usage: $0 --pubkey PEM [--bundle DIR] [--trail DIR --checkpoints FILE|DIR]" >&2; exit 64 ;;
  esac
done
[ -n "$pubkey" ] || { echo "--pubkey is required" >&2; exit 64; }
if [ -n "$trail" ] && [ -z "$checkpoints" ]; then
  echo "--trail needs --checkpoints" >&2; exit 64
fi
for tool in openssl jq xxd sha256sum; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 64; }
done
fail() { echo "FAIL: $*" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The pinned key: its fingerprint and its 32 raw bytes (hex).
fingerprint="$(openssl pkey -pubin -in "$pubkey" -outform DER | sha256sum | cut -d' ' -f1)"
raw="$(openssl pkey -pubin -in "$pubkey" -outform DER | tail -c 32 | xxd -p -c 64)"
echo "pinned key: fingerprint $fingerprint"

# Verifies the Ed25519 signature (hex, $2) of the exact bytes in file $1.
verify_sig() {
  xxd -r -p <<<"$2" >"$work/sig"
  openssl pkeyutl -verify -pubin -inkey "$pubkey" -rawin -in "$1" -sigfile "$work/sig" >/dev/null 2>&1
}

if [ -n "$bundle" ]; then
  # 2. The manifest's signature, over its exact text.
  jq -j .manifest "$bundle/signature.json" >"$work/manifest.json"
  verify_sig "$work/manifest.json" "$(jq -r .signature "$bundle/signature.json")" \
    || fail "the bundle's manifest is not signed by the pinned key"
  [ "$(jq -r .public_key "$work/manifest.json")" = "$raw" ] \
    || fail "the manifest names another public key"
  # 3. Every file against the manifest, and no file it does not name.
  (cd "$bundle" && jq -r '.files | to_entries[] | "\(.value.sha256)  \(.key)"' "$work/manifest.json" \
    | sha256sum --quiet -c -) || fail "a bundle file was changed or is missing"
  listed="$(jq -r '.files | keys[]' "$work/manifest.json" | sort)"
  present="$(cd "$bundle" && ls -A | grep -vx signature.json | sort)"
  [ "$listed" = "$present" ] || fail "the bundle holds files the manifest does not name"
  echo "bundle: signed by the pinned key, $(jq '.files | length' "$work/manifest.json") files intact, made $(jq -r .created "$work/manifest.json")"
fi

if [ -n "$trail" ]; then
  # 4. Every checkpoint signed by the pinned key.
  if [ -d "$checkpoints" ]; then
    cat "$checkpoints"/checkpoints*.jsonl >"$work/checkpoints.jsonl"
  else
    cp "$checkpoints" "$work/checkpoints.jsonl"
  fi
  : >"$work/signed.jsonl"
  n=0
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    n=$((n + 1))
    jq -j .signed <<<"$line" >"$work/checkpoint"
    [ "$(jq -r .key "$work/checkpoint")" = "$fingerprint" ] \
      || fail "checkpoint $n is signed by another key (after an evidence-key rotation, check each key's part with that key)"
    verify_sig "$work/checkpoint" "$(jq -r .signature <<<"$line")" \
      || fail "checkpoint $n: the signature does not verify"
    cat "$work/checkpoint" >>"$work/signed.jsonl"
    echo >>"$work/signed.jsonl"
  done <"$work/checkpoints.jsonl"
  [ "$n" -gt 0 ] || fail "no checkpoints"
  # 5. The trail: sequence numbers 1, 2, 3, … without a gap.
  cat "$trail"/audit-*.jsonl >"$work/trail.jsonl"
  jq -r .seq "$work/trail.jsonl" | awk 'NR != $1 { print "gap: line " NR " has seq " $1; bad = 1; exit } END { exit bad }' \
    || fail "entries are missing or out of order"
  last="$(wc -l <"$work/trail.jsonl")"
  # 6. Each checkpointed entry is in the trail with the checkpointed MAC,
  # and the trail reaches the newest checkpoint.
  while IFS= read -r checkpoint; do
    seq="$(jq -r .seq <<<"$checkpoint")"
    mac="$(jq -r .mac <<<"$checkpoint")"
    [ "$seq" -le "$last" ] \
      || fail "the trail ends at seq $last, but a checkpoint signed at $(jq -r .ts <<<"$checkpoint") proves it reached seq $seq (cut, or rolled back)"
    [ "$(sed -n "${seq}p" "$work/trail.jsonl" | jq -r .mac)" = "$mac" ] \
      || fail "seq $seq is not the entry its checkpoint names (rewritten, or rolled back and continued)"
  done <"$work/signed.jsonl"
  echo "trail: $last entries, no gap; $n checkpoints signed by the pinned key, each entry they name present, the newest at seq $(jq -s 'map(.seq) | max' "$work/signed.jsonl")"
fi
echo "all checks passed"

#!/usr/bin/env bash
# Header cost of public-key recipients (a benchmark command, not a test): encrypts and decrypts a
# directory of N small files with --recursive, once with a symmetric key file only and once with three
# public-key recipients (X25519, RSA-4096, ML-KEM-768+X25519), then those plus an Ed25519 signature
# (decrypting with --signed-by), and prints files/s and the ratios.
# Usage: scripts/bench-headers.sh [--files N] [--size BYTES] [--dir DIR]
set -euo pipefail
export LC_ALL=C
files=10000 size=1024 dir=/dev/shm/coffer-bench-headers
while (($#)); do
  case "$1" in
    --files) files=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) echo "bench-headers.sh: unknown option $1" >&2; exit 64 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
coffer=$repo/.build/release/coffer
[[ -x $coffer ]] || (cd "$repo" && swift build -c release 2>&1 | tail -n 1)
rm -rf "$dir" && mkdir -p "$dir/keys"
trap 'rm -rf "$dir"' EXIT
"$coffer" keygen --symmetric -o "$dir/keys/sym.key" 2>/dev/null
for t in x25519 rsa-4096 pq; do "$coffer" keygen --type "$t" -o "$dir/keys/$t" 2>/dev/null; done

make_tree() {
  rm -rf "$dir/tree" && mkdir -p "$dir/tree"
  head -c $((files * size)) /dev/urandom | split -a 5 -d -b "$size" - "$dir/tree/f"
}
seconds() { local start=$EPOCHREALTIME; "$@" >/dev/null 2>&1; awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

run() {  # label, encrypt options..., --, decrypt options...
  local label=$1; shift
  local enc=() dec=()
  while [[ $1 != -- ]]; do enc+=("$1"); shift; done; shift; dec=("$@")
  make_tree
  local e d
  e=$(seconds "$coffer" encrypt -q "${enc[@]}" --recursive --remove-original "$dir/tree")
  local header
  header=$("$coffer" inspect --json "$dir/tree/f00000.cof" | awk -F': ' '/header_bytes/ { gsub(",", "", $2); print $2 }')
  d=$(seconds "$coffer" decrypt -q "${dec[@]}" --recursive --remove-original "$dir/tree")
  [[ -f $dir/tree/f00000 && ! -f $dir/tree/f00000.cof ]] || { echo "bench-headers.sh: $label: the round trip failed" >&2; exit 1; }
  awk -v l="$label" -v n="$files" -v e="$e" -v d="$d" -v h="$header" \
    'BEGIN { printf "%-44s header %5d B   encrypt %8.0f files/s (%.2f s)   decrypt %8.0f files/s (%.2f s)\n", l, h, n / e, e, n / d, d }'
  echo "$e $d" > "$dir/last"
}

echo "$files files of $size bytes in $dir, $(nproc) cores, coffer --recursive --remove-original"
run "key file only" --key-file "$dir/keys/sym.key" -- --key-file "$dir/keys/sym.key"
read -r e0 d0 < "$dir/last"
run "x25519 + rsa-4096 + pq recipients (open: rsa)" -r "$dir/keys/x25519.pub" -r "$dir/keys/rsa-4096.pub" -r "$dir/keys/pq.pub" \
  -- -i "$dir/keys/rsa-4096.key"
read -r e1 d1 < "$dir/last"
"$coffer" keygen --type ed25519 -o "$dir/keys/signer" 2>/dev/null
run "the three recipients + --sign ed25519" -r "$dir/keys/x25519.pub" -r "$dir/keys/rsa-4096.pub" -r "$dir/keys/pq.pub" \
  --sign "$dir/keys/signer.key" -- -i "$dir/keys/rsa-4096.key" --signed-by "$dir/keys/signer.pub"
read -r e2 d2 < "$dir/last"
awk -v e0="$e0" -v d0="$d0" -v e1="$e1" -v d1="$d1" \
  'BEGIN { printf "three public-key recipients cost: encrypt x%.2f, decrypt x%.2f the wall time of a key file\n", e1 / e0, d1 / d0 }'
awk -v e0="$e0" -v d0="$d0" -v e2="$e2" -v d2="$d2" \
  'BEGIN { printf "with a signature as well:         encrypt x%.2f, decrypt x%.2f the wall time of a key file\n", e2 / e0, d2 / d0 }'

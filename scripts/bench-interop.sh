#!/usr/bin/env bash
# Throughput of the formats Coffer shares with other tools (docs/PERFORMANCE.md, "age and xbcrypt
# throughput"): reading an age file made by `age` (coffer decrypt against age -d), writing an age file
# (coffer encrypt --format age against age), and decrypting an XtraBackup .xbcrypt file made by
# scripts/make_xbcrypt.py. A measurement, not a test.
#
# The machine is shared and its load moves, so the runs are paired: every round runs each command once,
# coffer and age alternating (the order flips every round), and the figures are the best of --runs
# rounds, with the ratio of the bests and the median of the per-round ratios beside it. With
# --baseline BIN, a second coffer binary (an older build) runs in the same rounds, for before/after.
set -euo pipefail
export LC_ALL=C # decimal points in awk/printf and $EPOCHREALTIME

usage() {
  cat <<'EOF'
usage: scripts/bench-interop.sh [--size MiB] [--dir DIR] [--runs N] [--threads T] [--coffer BIN]
                                [--baseline BIN] [--only age|xbcrypt] [--markdown]
  --size MiB      input size (default 1024)
  --dir DIR       where the input and the ciphertexts live (default /dev/shm/coffer-bench: RAM)
  --runs N        rounds; each figure is the best of N (default 7)
  --threads T     coffer's --threads (default 2)
  --coffer BIN    the coffer binary to measure (default .build/release/coffer, built when missing)
  --baseline BIN  another coffer binary measured in the same rounds (e.g. a build from before a change)
  --only WHAT     only the age rows, or only the xbcrypt rows
  --markdown      also print the results as a Markdown table on stdout (progress goes to stderr)
EOF
}

size_mib=1024 dir=/dev/shm/coffer-bench runs=7 threads=2 coffer="" baseline="" only="" markdown=0
while (($#)); do
  case "$1" in
    --size) size_mib=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --coffer) coffer=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --markdown) markdown=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-interop.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
  esac
done
[[ $size_mib =~ ^[1-9][0-9]*$ && $runs =~ ^[1-9][0-9]*$ && $threads =~ ^[1-9][0-9]*$ ]] ||
  { echo "bench-interop.sh: --size, --runs and --threads take positive integers" >&2; exit 64; }
[[ -z $only || $only == age || $only == xbcrypt ]] || { echo "bench-interop.sh: --only age|xbcrypt" >&2; exit 64; }
exec 3>&1
((markdown)) && exec 1>&2

repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $coffer ]]; then
  coffer=$repo/.build/release/coffer
  if [[ ! -x $coffer ]]; then
    echo "building $coffer (swift build -c release --product coffer)"
    (cd "$repo" && swift build -c release --product coffer 2>&1 | tail -n 3)
  fi
fi
[[ -x $coffer ]] || { echo "bench-interop.sh: no coffer binary at $coffer" >&2; exit 1; }
[[ -z $baseline || -x $baseline ]] || { echo "bench-interop.sh: no baseline binary at $baseline" >&2; exit 1; }
if ! command -v age >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  (apt-get install -y -qq age || (apt-get update -qq && apt-get install -y -qq age)) >/dev/null 2>&1 || true
fi
do_age=0 do_xb=0
[[ $only == xbcrypt ]] || { command -v age >/dev/null && command -v age-keygen >/dev/null && do_age=1; } ||
  echo "age: not installed (apt-get install age); the age rows are skipped"
[[ $only == age ]] || { python3 -c 'import cryptography' 2>/dev/null && do_xb=1; } ||
  echo "xbcrypt: python3 'cryptography' is missing; the xbcrypt rows are skipped"

mkdir -p "$dir"
input=$dir/input-${size_mib}MiB.bin
bytes=$((size_mib * 1048576))
if [[ ! -f $input || $(stat -c %s "$input") -ne $bytes ]]; then
  echo "generating $input ($size_mib MiB of random bytes)"
  head -c "$bytes" /dev/urandom > "$input.tmp" && mv "$input.tmp" "$input"
fi
work=$(mktemp -d "$dir/interop-XXXXXX")
trap 'rm -rf "$work" "$input.tmp"' EXIT
trap 'exit 130' INT TERM

# The commands, by name. Each writes to /dev/null; the ciphertexts are made once, by the peer tools.
declare -A cmd
names=()
add() { names+=("$1"); cmd[$1]=$2; }
if ((do_age)); then
  age-keygen -o "$work/age.key" 2>/dev/null
  recipient=$(age-keygen -y "$work/age.key")
  age -r "$recipient" -o "$work/c.age" "$input"
  add "age -d" "age -d -i '$work/age.key' '$work/c.age'"
  add "coffer decrypt (age file)" "'$coffer' decrypt -q --threads $threads -i '$work/age.key' '$work/c.age'"
  [[ -z $baseline ]] || add "baseline decrypt (age file)" "'$baseline' decrypt -q --threads $threads -i '$work/age.key' '$work/c.age'"
  add "age -r" "age -r '$recipient' '$input'"
  add "coffer encrypt --format age" "'$coffer' encrypt -q --format age --threads $threads -r '$recipient' '$input'"
  [[ -z $baseline ]] || add "baseline encrypt --format age" "'$baseline' encrypt -q --format age --threads $threads -r '$recipient' '$input'"
fi
if ((do_xb)); then
  xb_key=xbcrypt-benchmark-key-aes-256-ok
  python3 "$repo/scripts/make_xbcrypt.py" "$input" "$work/c.xbcrypt" "$xb_key"
  add "coffer decrypt (.xbcrypt)" "XBCRYPT_ENCRYPTION_KEY=$xb_key '$coffer' decrypt -q --threads $threads '$work/c.xbcrypt'"
  [[ -z $baseline ]] || add "baseline decrypt (.xbcrypt)" "XBCRYPT_ENCRYPTION_KEY=$xb_key '$baseline' decrypt -q --threads $threads '$work/c.xbcrypt'"
fi
((${#names[@]})) || { echo "bench-interop.sh: nothing to measure" >&2; exit 1; }

# run_once NAME: wall seconds of one run (to /dev/null), and CPU seconds (user + system) beside it.
run_once() {
  local t0 t1
  t0=$EPOCHREALTIME
  /usr/bin/time -f "%U %S" -o "$work/time.out" bash -c "${cmd[$1]} > /dev/null" ||
    { echo "bench-interop.sh: failed: ${cmd[$1]}" >&2; exit 1; }
  t1=$EPOCHREALTIME
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  cpu=$(tail -n 1 "$work/time.out" | awk '{ printf "%.2f", $1 + $2 }')
}

declare -A best best_cpu walls
echo "bench-interop: $size_mib MiB in $dir, coffer --threads $threads, $runs rounds, $(nproc) cores ($(date -u +%FT%TZ))"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for name in "${names[@]}"; do run_once "$name"; done  # warm-up: the page cache and the binaries
for ((r = 1; r <= runs; r++)); do
  order=("${names[@]}")
  if ((r % 2 == 0)); then  # every other round backwards, so that no command always follows the same one
    order=(); for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[$i]}"); done
  fi
  for name in "${order[@]}"; do
    run_once "$name"
    walls[$name]+="$wall "
    if [[ -z ${best[$name]:-} ]] || awk -v a="$wall" -v b="${best[$name]}" 'BEGIN { exit !(a < b) }'; then
      best[$name]=$wall best_cpu[$name]=$cpu
    fi
  done
  echo "round $r: load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? b / s / 1e6 : 0) }'; }
# paired NAME PEER: the median over the rounds of PEER's wall / NAME's wall (a throughput ratio).
paired() {
  local -a a b; read -ra a <<<"${walls[$1]}"; read -ra b <<<"${walls[$2]}"
  local i out=""
  for i in "${!a[@]}"; do out+="$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { printf "%.4f", y / x }') "; done
  printf '%s\n' $out | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

echo
printf '%-36s %9s %9s %10s\n' "best of $runs (to /dev/null)" "wall s" "MB/s" "CPU s"
md=()
for name in "${names[@]}"; do
  printf '%-36s %9s %9s %10s\n' "$name" "${best[$name]}" "$(mbps "${best[$name]}")" "${best_cpu[$name]}"
  md+=("| $name | ${best[$name]} s | $(mbps "${best[$name]}") | ${best_cpu[$name]} s |")
done
echo
results=()
result() { printf '%-60s %s\n' "$1" "$2"; results+=("| $1 | $2 |"); }
for who in coffer baseline; do
  [[ $who == coffer || -n $baseline ]] || continue
  if ((do_age)); then
    d="$who decrypt (age file)" e="$who encrypt --format age"
    result "$who / age -d, reading an age file (target >= 2.5)" \
      "x$(ratio "${best[$d]}" "${best["age -d"]}") best, x$(paired "$d" "age -d") paired median"
    result "$who / age, writing an age file (target >= 2)" \
      "x$(ratio "${best[$e]}" "${best["age -r"]}") best, x$(paired "$e" "age -r") paired median"
  fi
  if ((do_xb)); then
    x="$who decrypt (.xbcrypt)"
    result "$who .xbcrypt decryption, MB/s (target >= 2000)" "$(mbps "${best[$x]}")"
  fi
done
if [[ -n $baseline ]]; then
  for what in "decrypt (age file)" "encrypt --format age" "decrypt (.xbcrypt)"; do
    [[ -n ${best["coffer $what"]:-} ]] || continue
    result "coffer / baseline, $what" "x$(ratio "${best["coffer $what"]}" "${best["baseline $what"]}") best, x$(paired "coffer $what" "baseline $what") paired median"
  done
fi

if ((markdown)); then
  {
    echo "bench-interop, $(date -u '+%F %H:%M') UTC: $size_mib MiB random input in \`$dir\`, coffer \`--threads $threads\`,"
    echo "best of $runs alternating rounds; MB/s = 10^6 bytes/s of plaintext; CPU = user + system of the best run."
    echo
    echo "| command (to /dev/null) | wall | MB/s | CPU |"
    echo "|---|---|---|---|"
    printf '%s\n' "${md[@]}"
    echo
    echo "| ratio | measured |"
    echo "|---|---|"
    printf '%s\n' "${results[@]}"
  } >&3
fi

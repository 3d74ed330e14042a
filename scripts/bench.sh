#!/usr/bin/env bash
# Coffer benchmark: a command, not a test. Measures `coffer encrypt|decrypt` on a generated file and,
# in the same run, this machine's limits (cp, cat, a pipe, `openssl speed`) and the peer (`age`),
# and prints the figures as MB/s (10^6 bytes/s), peak RSS, and ratios against those references.
# Each figure is the median of --runs runs after one warm-up run.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench.sh [--size MiB] [--dir DIR] [--runs N] [--threads "1 2"] [--chunk-sizes "64K 1M"]
                        [--rss-check] [--quick] [--keep]
  --size MiB        input size (default 1024)
  --dir DIR         where the input and outputs live (default /dev/shm/coffer-bench: RAM, so the disk
                    is out of the picture)
  --runs N          counted runs per figure, median reported (default 3)
  --threads LIST    thread counts for the /dev/null runs (default: 1 .. nproc)
  --chunk-sizes L   chunk sizes to compare (default "1M")
  --rss-check       also encrypt a 4 GiB input and report peak RSS (target: at most 64 MiB)
  --quick           --size 256 --runs 1
  --keep            keep the ciphertexts
EOF
}

size_mib=1024 dir=/dev/shm/coffer-bench runs=3 threads_list="" chunk_sizes="1M" rss_check=0 keep=0
while (($#)); do
  case "$1" in
    --size) size_mib=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --threads) threads_list=$2; shift 2 ;;
    --chunk-sizes) chunk_sizes=$2; shift 2 ;;
    --rss-check) rss_check=1; shift ;;
    --quick) size_mib=256 runs=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
  esac
done
cores=$(nproc)
[[ -n $threads_list ]] || threads_list=$(seq -s ' ' 1 "$cores")
max_threads=${threads_list##* }

repo=$(cd "$(dirname "$0")/.." && pwd)
coffer=$repo/.build/release/coffer
if [[ ! -x $coffer ]]; then (cd "$repo" && swift build -c release 2>&1 | tail -n 1); fi
# Peers and tools, installed only when missing and possible (root with apt-get).
if ! command -v age >/dev/null || [[ ! -x /usr/bin/time ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq age time || (apt-get update -qq && apt-get install -y -qq age time)) >/dev/null 2>&1 || true
  fi
fi
[[ -x /usr/bin/time ]] || { echo "bench.sh: /usr/bin/time (package 'time') is needed" >&2; exit 1; }

mkdir -p "$dir"
input=$dir/input-${size_mib}MiB.bin
bytes=$((size_mib * 1048576))
if [[ ! -f $input || $(stat -c %s "$input") -ne $bytes ]]; then
  echo "generating $input ($size_mib MiB of random bytes)"
  head -c "$bytes" /dev/urandom > "$input"
fi
work=$(mktemp -d "$dir/run-XXXXXX")
cleanup() { ((keep)) || rm -rf "$work"; }
trap cleanup EXIT
"$coffer" keygen --symmetric -o "$work/bench.key" 2>/dev/null

# run_once CMD: runs `bash -c CMD` under /usr/bin/time; prints "wall_seconds peak_rss_kib".
run_once() {
  /usr/bin/time -f "%e %M" -o "$work/time.out" bash -c "$1" || { echo "bench.sh: failed: $1" >&2; exit 1; }
  cat "$work/time.out"
}

# measure CMD [PREPARE]: one warm-up, then --runs counted runs (PREPARE before each); prints the
# median wall seconds and the largest peak RSS (KiB) seen. RSS is of the largest process in CMD.
measure() {
  local cmd=$1 prepare=${2:-true} walls=() rss=0 w r
  eval "$prepare"; run_once "$cmd" >/dev/null
  for ((i = 0; i < runs; i++)); do
    eval "$prepare"
    read -r w r < <(run_once "$cmd")
    walls+=("$w")
    ((r > rss)) && rss=$r
  done
  printf '%s %s\n' "$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" "$rss"
}

mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? b / s / 1e6 : 0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
row() { printf '%-58s wall %7.3f s  %7s MB/s  RSS %5s MiB%s\n' "$1" "$2" "$(mbps "$2")" "$(mib "$3")" "${4:-}"; }

echo "Coffer benchmark: $size_mib MiB input in $dir, $cores cores, median of $runs runs ($(date -u +%FT%TZ))"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== Limits of this machine, measured now"
read -r cp_wall cp_rss < <(measure "cp '$input' '$work/copy'" "rm -f '$work/copy'")
row "cp (write a new file: the file->file limit)" "$cp_wall" "$cp_rss"
rm -f "$work/copy"
read -r cat_wall cat_rss < <(measure "cat '$input' > /dev/null")
row "cat > /dev/null (read limit)" "$cat_wall" "$cat_rss"
read -r pipe_wall pipe_rss < <(measure "cat '$input' | cat > /dev/null")
row "cat | cat > /dev/null (pipe limit)" "$pipe_wall" "$pipe_rss"
openssl_mbps=$(openssl speed -elapsed -seconds 2 -bytes 1048576 -evp aes-256-gcm 2>/dev/null | awk '/^AES-256-GCM/ {sub(/k$/, "", $NF); printf "%.0f", $NF / 1000}')
printf '%-58s %s MB/s\n' "openssl speed -evp aes-256-gcm, 1 MiB blocks, 1 core" "${openssl_mbps:-?}"

declare -A enc_null dec_null
echo
echo "== coffer, file -> /dev/null"
for chunk in $chunk_sizes; do
  "$coffer" encrypt -q --key-file "$work/bench.key" --chunk-size "$chunk" -o "$work/c-$chunk.cof" "$input"
  for t in $threads_list; do
    read -r w r < <(measure "'$coffer' encrypt -q --threads $t --chunk-size $chunk --key-file '$work/bench.key' '$input' > /dev/null")
    enc_null[$chunk,$t]=$w
    row "encrypt  threads=$t chunk=$chunk" "$w" "$r" "   x$(ratio "$cat_wall" "$w") of cat's speed"
    read -r w r < <(measure "'$coffer' decrypt -q --threads $t --key-file '$work/bench.key' '$work/c-$chunk.cof' > /dev/null")
    dec_null[$chunk,$t]=$w
    row "decrypt  threads=$t chunk=$chunk" "$w" "$r" "   x$(ratio "$cat_wall" "$w") of cat's speed"
  done
done
default_chunk=1M
[[ " $chunk_sizes " == *" 1M "* ]] || default_chunk=${chunk_sizes%% *}

echo
echo "== coffer at the allocator's defaults (COFFER_MALLOC_DEFAULTS=1), threads=$max_threads chunk=$default_chunk"
read -r w r < <(measure "COFFER_MALLOC_DEFAULTS=1 '$coffer' encrypt -q --threads $max_threads --chunk-size $default_chunk --key-file '$work/bench.key' '$input' > /dev/null")
row "encrypt, glibc malloc defaults" "$w" "$r" "   x$(ratio "$w" "${enc_null[$default_chunk,$max_threads]}") the tuned time"

echo
echo "== coffer, file -> file and through pipes (threads=$max_threads chunk=$default_chunk)"
read -r enc_file r < <(measure "'$coffer' encrypt -q --threads $max_threads --key-file '$work/bench.key' -o '$work/out.cof' '$input'" "rm -f '$work/out.cof'")
row "encrypt file -> file" "$enc_file" "$r" "   x$(ratio "$enc_file" "$cp_wall") cp's time"
read -r dec_file r < <(measure "'$coffer' decrypt -q --threads $max_threads --key-file '$work/bench.key' -o '$work/out.bin' '$work/c-$default_chunk.cof'" "rm -f '$work/out.bin'")
row "decrypt file -> file" "$dec_file" "$r" "   x$(ratio "$dec_file" "$cp_wall") cp's time"
rm -f "$work/out.cof" "$work/out.bin"
read -r w r < <(measure "cat '$input' | '$coffer' encrypt -q --threads $max_threads --key-file '$work/bench.key' | cat > /dev/null")
row "cat | encrypt | cat > /dev/null" "$w" "$r" "   x$(ratio "$w" "$pipe_wall") the bare pipe's time"

age_enc="" age_dec=""
echo
if command -v age >/dev/null; then
  echo "== age $(age --version 2>/dev/null), same input"
  age-keygen -o "$work/age.key" 2>/dev/null
  recipient=$(age-keygen -y "$work/age.key")
  age -r "$recipient" -o "$work/c.age" "$input"
  read -r age_enc r < <(measure "age -r '$recipient' '$input' > /dev/null")
  row "age encrypt -> /dev/null" "$age_enc" "$r"
  read -r age_dec r < <(measure "age -d -i '$work/age.key' '$work/c.age' > /dev/null")
  row "age decrypt -> /dev/null" "$age_dec" "$r"
else
  echo "age: not installed (apt-get install age); skipped"
fi

xb_wall=""
echo
if python3 -c 'import cryptography' 2>/dev/null; then
  echo "== XtraBackup .xbcrypt (XBCRYP03, 64 KiB chunks, AES-256-CTR + SHA-256 per chunk) made by scripts/make_xbcrypt.py"
  xb_key=xbcrypt-benchmark-key-aes-256-ok
  python3 "$repo/scripts/make_xbcrypt.py" "$input" "$work/c.xbcrypt" "$xb_key"
  for t in 1 "$max_threads"; do
    read -r xb_wall r < <(measure "XBCRYPT_ENCRYPTION_KEY=$xb_key '$coffer' decrypt -q --threads $t '$work/c.xbcrypt' > /dev/null")
    row "coffer decrypt .xbcrypt -> /dev/null threads=$t" "$xb_wall" "$r"
  done
else
  echo "xbcrypt: python3 'cryptography' is missing (pip install cryptography); skipped"
fi

rss_4g=""
if ((rss_check)); then
  echo
  echo "== peak RSS on a 4 GiB input"
  big=$dir/input-4096MiB.bin
  [[ -f $big && $(stat -c %s "$big") -eq 4294967296 ]] || head -c 4294967296 /dev/urandom > "$big"
  read -r w rss_4g < <(run_once "'$coffer' encrypt -q --key-file '$work/bench.key' '$big' > /dev/null")
  printf '%-58s wall %7.3f s  %7s MB/s  RSS %5s MiB\n' "encrypt 4 GiB -> /dev/null" "$w" \
    "$(awk -v s="$w" 'BEGIN { printf "%.0f", 4294967296 / s / 1e6 }')" "$(mib "$rss_4g")"
fi

echo
echo "== Ratios (targets from issue 2)"
e=${enc_null[$default_chunk,$max_threads]} d=${dec_null[$default_chunk,$max_threads]}
printf '%-66s %s\n' "file -> file encrypt / cp wall (target <= 1.2)" "$(ratio "$enc_file" "$cp_wall")"
printf '%-66s %s\n' "file -> file decrypt / cp wall (target <= 1.2)" "$(ratio "$dec_file" "$cp_wall")"
printf '%-66s %s\n' "encrypt -> /dev/null, $max_threads threads, MB/s (target >= 8000)" "$(mbps "$e")"
printf '%-66s %s\n' "decrypt -> /dev/null, $max_threads threads, MB/s (target >= 8000)" "$(mbps "$d")"
printf '%-66s %s\n' "  the same runs against cat > /dev/null's read speed" "x$(ratio "$cat_wall" "$e") / x$(ratio "$cat_wall" "$d")"
if [[ -n ${enc_null[$default_chunk,1]:-} ]]; then
  printf '%-66s %s\n' "encrypt 1 thread MB/s vs openssl speed aes-256-gcm 1 core" "$(mbps "${enc_null[$default_chunk,1]}") vs ${openssl_mbps:-?} (x$(ratio "$(mbps "${enc_null[$default_chunk,1]}")" "${openssl_mbps:-0}"))"
fi
if [[ -n $age_enc ]]; then
  printf '%-66s %s\n' "coffer vs age throughput, encrypt (target >= 3)" "x$(ratio "$age_enc" "$e")"
  printf '%-66s %s\n' "coffer vs age throughput, decrypt (target >= 3)" "x$(ratio "$age_dec" "$d")"
fi
[[ -z $xb_wall ]] || printf '%-66s %s\n' "decrypt .xbcrypt, $max_threads threads, MB/s" "$(mbps "$xb_wall")"
[[ -z $rss_4g ]] || printf '%-66s %s\n' "peak RSS encrypting 4 GiB, MiB (target <= 64)" "$(mib "$rss_4g")"

#!/usr/bin/env bash
# Coffer benchmark: a command, not a test. Measures `coffer encrypt|decrypt` on a generated file and,
# in the same run, this machine's limits (cp, cat, a pipe, `openssl speed`) and the peer (`age`, also
# on its own files: `coffer decrypt` of a file `age` made, against `age -d`),
# and prints the figures as MB/s (10^6 bytes/s), peak RSS, and ratios against those references.
# Each figure is the median of --runs runs after one warm-up run. Absolute numbers on a shared 2-core
# VM move with the neighbours (see ../shared/PERF-ANCHORS.md, "Noise"): the ratios, taken in the same
# run, are the figures to compare. For the age and .xbcrypt rows alone, in paired alternating rounds with
# the best of N (and a before/after comparison of two builds), see scripts/bench-interop.sh.
set -euo pipefail
export LC_ALL=C # decimal points in awk/printf and $EPOCHREALTIME

usage() {
  cat <<'EOF'
usage: scripts/bench.sh [--size MiB] [--dir DIR] [--runs N] [--threads "1 2"] [--chunk-sizes "64K 1M"]
                        [--rss-check] [--quick] [--keep] [--markdown]
  --size MiB        input size (default 1024)
  --dir DIR         where the input and outputs live (default /dev/shm/coffer-bench: RAM, so the disk
                    is out of the picture)
  --runs N          counted runs per figure, median reported (default 3)
  --threads LIST    thread counts for the /dev/null runs (default: 1 .. nproc); the largest is used
                    for the file -> file, pipe and age comparisons
  --chunk-sizes L   chunk sizes to compare (default "1M")
  --rss-check       also encrypt a 4 GiB input and report peak RSS (target: at most 64 MiB); makes
                    DIR/input-4096MiB.bin once (needs 4 GiB free in DIR)
  --quick           --size 256 --runs 1 (explicit --size/--runs still win)
  --keep            keep the ciphertexts and outputs (DIR/run-*); the random input is always kept
  --markdown        print the results as Markdown tables on stdout (for docs/PERFORMANCE.md); the
                    plain-text progress then goes to stderr
EOF
}

size_mib="" dir=/dev/shm/coffer-bench runs="" threads_list="" chunk_sizes="1M" rss_check=0 keep=0
quick=0 markdown=0
while (($#)); do
  case "$1" in
    --size) size_mib=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --threads) threads_list=$2; shift 2 ;;
    --chunk-sizes) chunk_sizes=$2; shift 2 ;;
    --rss-check) rss_check=1; shift ;;
    --quick) quick=1; shift ;;
    --keep) keep=1; shift ;;
    --markdown) markdown=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
  esac
done
if ((quick)); then : "${size_mib:=256}" "${runs:=1}"; fi
: "${size_mib:=1024}" "${runs:=3}"
[[ $size_mib =~ ^[1-9][0-9]*$ && $runs =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --size and --runs take positive integers" >&2; exit 64; }
cores=$(nproc)
[[ -n $threads_list ]] || threads_list=$(seq -s ' ' 1 "$cores")
max_threads=$(printf '%s\n' $threads_list | sort -n | tail -n 1)
# The comparisons (file -> file, pipes, age, ratios) use 1M when it is among --chunk-sizes (the default).
default_chunk=1M
[[ " $chunk_sizes " == *" 1M "* ]] || default_chunk=${chunk_sizes%% *}

# With --markdown, stdout carries only the Markdown; everything human-readable goes to stderr.
exec 3>&1
((markdown)) && exec 1>&2

repo=$(cd "$(dirname "$0")/.." && pwd)
coffer=$repo/.build/release/coffer
if [[ ! -x $coffer ]]; then
  echo "building $coffer (swift build -c release)"
  (cd "$repo" && swift build -c release 2>&1 | tail -n 3)
  [[ -x $coffer ]] || { echo "bench.sh: the release build did not produce $coffer" >&2; exit 1; }
fi
# Peers and tools, installed only when missing and possible (root with apt-get).
if ! command -v age >/dev/null || [[ ! -x /usr/bin/time ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq age time || (apt-get update -qq && apt-get install -y -qq age time)) >/dev/null 2>&1 || true
  fi
fi
[[ -x /usr/bin/time ]] || { echo "bench.sh: /usr/bin/time (package 'time') is needed" >&2; exit 1; }

mkdir -p "$dir"
# free_mib: MiB available in $dir. Everything lives in RAM by default, so running out is easy.
free_mib() { df -Pk "$dir" | awk 'NR == 2 { printf "%d", $4 / 1024 }'; }
input=$dir/input-${size_mib}MiB.bin
bytes=$((size_mib * 1048576))
# Outputs alive at once: one ciphertext per chunk size, the cp copy or a file -> file output, and the
# age and xbcrypt ciphertexts: about (chunk sizes + 3) x the input.
n_chunks=$(wc -w <<<"$chunk_sizes")
need=$(( (n_chunks + 3) * size_mib ))
[[ -f $input && $(stat -c %s "$input") -eq $bytes ]] || need=$((need + size_mib))
if (( $(free_mib) < need )); then
  echo "bench.sh: about $need MiB needed in $dir, $(free_mib) MiB free; use --size or --dir" >&2
  exit 1
fi
if [[ ! -f $input || $(stat -c %s "$input") -ne $bytes ]]; then
  echo "generating $input ($size_mib MiB of random bytes: incompressible, like ciphertext)"
  head -c "$bytes" /dev/urandom > "$input.tmp" && mv "$input.tmp" "$input"
fi
work=$(mktemp -d "$dir/run-XXXXXX")
cleanup() {
  if ((keep)); then echo "kept the outputs in $work"; else rm -rf "$work"; fi
  rm -f "$input.tmp" "$dir/input-4096MiB.bin.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$coffer" keygen --symmetric -o "$work/bench.key" 2>/dev/null

# median X...: the middle value (the mean of the two middle ones for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# run_once CMD: runs `bash -c CMD` once; sets `wall` (seconds) and `rss` (peak RSS in KiB of the
# largest process in CMD, from the kernel's accounting via /usr/bin/time %M). Wall comes from
# $EPOCHREALTIME rather than time's %e, whose 10 ms steps are 15 % of a 256 MiB /dev/null run; it
# includes ~3 ms for starting time and bash, the same for every command (time's %e included bash too).
run_once() {
  local t0 t1
  t0=$EPOCHREALTIME
  /usr/bin/time -f "%M" -o "$work/time.out" bash -c "$1" || { echo "bench.sh: failed: $1" >&2; exit 1; }
  t1=$EPOCHREALTIME
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  rss=$(tail -n 1 "$work/time.out")
}

# measure CMD [PREPARE]: one warm-up, then --runs counted runs (PREPARE before each, untimed: e.g.
# removing the previous output so every run writes a fresh file); sets `wall` to the median wall
# seconds and `rss` to the largest peak RSS seen (KiB).
measure() {
  local cmd=$1 prepare=${2:-true} walls=() max_rss=0 i
  eval "$prepare"; run_once "$cmd"
  for ((i = 0; i < runs; i++)); do
    eval "$prepare"
    run_once "$cmd"
    walls+=("$wall")
    ((rss > max_rss)) && max_rss=$rss
  done
  wall=$(median "${walls[@]}") rss=$max_rss
}

mbps() { awk -v b="${2:-$bytes}" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? b / s / 1e6 : 0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

# md TEXT: TEXT made safe for a Markdown table cell (GitHub splits cells on "|", even in `code`).
md() { printf '%s' "${1//|/\\|}"; }
# row LABEL WALL RSS_KIB [NOTE] [BYTES]: one result line, kept for the Markdown table as well.
md_rows=()
row() {
  local m; m=$(mbps "$2" "${5:-$bytes}")
  printf '%-58s wall %7.3f s  %7s MB/s  RSS %5s MiB%s\n' "$1" "$2" "$m" "$(mib "$3")" "${4:+   ($4)}"
  md_rows+=("| \`$(md "$1")\` | $2 s | $m | $(mib "$3") MiB | ${4:-} |")
}
# section TITLE: a heading in the text output (and a spacer row in the Markdown table).
section() { echo; echo "== $1"; md_rows+=("| **$1** | | | | |"); }
# result LABEL VALUE [TARGET]: one line of the Ratios section.
md_ratios=()
result() {
  printf '%-74s %s\n' "$1${3:+ (target $3)}" "$2"
  md_ratios+=("| $(md "$1") | $2 | ${3:-} |")
}

echo "Coffer benchmark: $size_mib MiB input in $dir, $cores cores, median of $runs runs ($(date -u +%FT%TZ))"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
section "Limits of this machine, measured now"
measure "cp '$input' '$work/copy'" "rm -f '$work/copy'"
cp_wall=$wall
row "cp (write a new file: the file->file limit)" "$wall" "$rss"
rm -f "$work/copy"
measure "cat '$input' > /dev/null"
cat_wall=$wall
row "cat > /dev/null (read limit)" "$wall" "$rss"
measure "cat '$input' | cat > /dev/null"
pipe_wall=$wall
row "cat | cat > /dev/null (pipe limit)" "$wall" "$rss"
# openssl prints "AES-256-GCM  4034422.11k" on its last line: thousands of bytes per second.
openssl_mbps=$(openssl speed -elapsed -seconds 2 -bytes 1048576 -evp aes-256-gcm 2>/dev/null | tail -n 1 |
  awk '/^AES-256-GCM/ { sub(/k$/, "", $NF); printf "%.0f", $NF / 1000 }') || true
printf '%-58s %s MB/s\n' "openssl speed -evp aes-256-gcm, 1 MiB blocks, 1 core" "${openssl_mbps:-?}"
md_rows+=("| \`openssl speed -evp aes-256-gcm\`, 1 MiB blocks, 1 core | | ${openssl_mbps:-?} | | in-cache, no I/O |")

declare -A enc_null dec_null
coffer_rss=0
section "coffer, file -> /dev/null"
for chunk in $chunk_sizes; do
  # One ciphertext per chunk size, made once: decrypt reads the chunk size from the header.
  "$coffer" encrypt -q --key-file "$work/bench.key" --chunk-size "$chunk" -o "$work/c-$chunk.cof" "$input"
  for t in $threads_list; do
    measure "'$coffer' encrypt -q --threads $t --chunk-size $chunk --key-file '$work/bench.key' '$input' > /dev/null"
    enc_null[$chunk,$t]=$wall; ((rss > coffer_rss)) && coffer_rss=$rss
    row "encrypt  threads=$t chunk=$chunk -> /dev/null" "$wall" "$rss" "x$(ratio "$cat_wall" "$wall") of cat's read speed"
    measure "'$coffer' decrypt -q --threads $t --key-file '$work/bench.key' '$work/c-$chunk.cof' > /dev/null"
    dec_null[$chunk,$t]=$wall; ((rss > coffer_rss)) && coffer_rss=$rss
    row "decrypt  threads=$t chunk=$chunk -> /dev/null" "$wall" "$rss" "x$(ratio "$cat_wall" "$wall") of cat's read speed"
  done
done
enc_max=${enc_null[$default_chunk,$max_threads]} dec_max=${dec_null[$default_chunk,$max_threads]}
ct=$work/c-$default_chunk.cof

# Why: coffer tunes glibc malloc at startup (PERF-ANCHORS.md 3b); this row shows what that buys.
section "coffer at the allocator's defaults (COFFER_MALLOC_DEFAULTS=1), threads=$max_threads chunk=$default_chunk"
measure "COFFER_MALLOC_DEFAULTS=1 '$coffer' encrypt -q --threads $max_threads --chunk-size $default_chunk --key-file '$work/bench.key' '$input' > /dev/null"
row "encrypt, glibc malloc defaults -> /dev/null" "$wall" "$rss" "x$(ratio "$wall" "$enc_max") the tuned time"

section "coffer, file -> file and through pipes (threads=$max_threads chunk=$default_chunk)"
# The output is removed before each run: writing a fresh file is what costs (page faults), as for cp.
measure "'$coffer' encrypt -q --threads $max_threads --chunk-size $default_chunk --key-file '$work/bench.key' -o '$work/out.cof' '$input'" "rm -f '$work/out.cof'"
enc_file=$wall; ((rss > coffer_rss)) && coffer_rss=$rss
row "encrypt file -> file" "$wall" "$rss" "x$(ratio "$wall" "$cp_wall") cp's time"
rm -f "$work/out.cof"
measure "'$coffer' decrypt -q --threads $max_threads --key-file '$work/bench.key' -o '$work/out.bin' '$ct'" "rm -f '$work/out.bin'"
dec_file=$wall; ((rss > coffer_rss)) && coffer_rss=$rss
row "decrypt file -> file" "$wall" "$rss" "x$(ratio "$wall" "$cp_wall") cp's time"
rm -f "$work/out.bin"
# Through pipes nothing can beat the bare pipe (~1 GB/s here): these rows show coffer is not the limit.
measure "cat '$input' | '$coffer' encrypt -q --threads $max_threads --chunk-size $default_chunk --key-file '$work/bench.key' > /dev/null"
row "cat | encrypt > /dev/null" "$wall" "$rss" "x$(ratio "$wall" "$pipe_wall") the bare pipe's time"
measure "cat '$ct' | '$coffer' decrypt -q --threads $max_threads --key-file '$work/bench.key' > /dev/null"
row "cat | decrypt > /dev/null" "$wall" "$rss" "x$(ratio "$wall" "$pipe_wall") the bare pipe's time"
measure "cat '$input' | '$coffer' encrypt -q --threads $max_threads --chunk-size $default_chunk --key-file '$work/bench.key' | cat > /dev/null"
row "cat | encrypt | cat > /dev/null" "$wall" "$rss" "x$(ratio "$wall" "$pipe_wall") the bare pipe's time"

# Producer signatures (issue 3): the cost of --sign against the same unsigned runs above.
section "coffer --sign ed25519 (threads=$max_threads chunk=$default_chunk)"
"$coffer" keygen --type ed25519 -o "$work/signer" 2>/dev/null
# openssl's SHA-256 uses the CPU's SHA extensions, as swift-crypto's does (coreutils' sha256sum does not).
measure "openssl dgst -sha256 '$input' > /dev/null"
row "openssl dgst -sha256 (one core: what chunk-sha256 hashing costs)" "$wall" "$rss"
declare -A sign_null sign_file
for digest in chunk-sha256 chunk-tags; do
  sign=(--sign "'$work/signer.key'" --signature-digest "$digest")
  measure "'$coffer' encrypt -q --threads $max_threads --chunk-size $default_chunk --key-file '$work/bench.key' ${sign[*]} '$input' > /dev/null"
  sign_null[$digest]=$wall
  row "encrypt --sign, $digest -> /dev/null" "$wall" "$rss" "x$(ratio "$wall" "$enc_max") the unsigned time"
  measure "'$coffer' encrypt -q --threads $max_threads --chunk-size $default_chunk --key-file '$work/bench.key' ${sign[*]} -o '$work/s-$digest.cof' '$input'" "rm -f '$work/s-$digest.cof'"
  sign_file[$digest]=$wall
  row "encrypt --sign, $digest file -> file" "$wall" "$rss" "x$(ratio "$wall" "$enc_file") the unsigned time"
  measure "'$coffer' decrypt -q --threads $max_threads --key-file '$work/bench.key' --signed-by '$work/signer.pub' '$work/s-$digest.cof' > /dev/null"
  row "decrypt --signed-by, $digest -> /dev/null" "$wall" "$rss" "x$(ratio "$wall" "$dec_max") the unsigned time"
  measure "'$coffer' verify -q --threads $max_threads --signed-by '$work/signer.pub' '$work/s-$digest.cof'"
  row "verify --signed-by, no key (hash only), $digest" "$wall" "$rss"
done
rm -f "$work"/s-*.cof

age_enc="" age_dec="" coffer_age_enc=""
declare -A coffer_age_dec
if command -v age >/dev/null && command -v age-keygen >/dev/null; then
  section "age $(age --version 2>/dev/null), same input"
  age-keygen -o "$work/age.key" 2>/dev/null
  recipient=$(age-keygen -y "$work/age.key")
  age -r "$recipient" -o "$work/c.age" "$input"
  measure "age -r '$recipient' '$input' > /dev/null"
  age_enc=$wall
  row "age encrypt -> /dev/null" "$wall" "$rss"
  measure "age -d -i '$work/age.key' '$work/c.age' > /dev/null"
  age_dec=$wall
  row "age decrypt -> /dev/null" "$wall" "$rss"
  # The same age file (made by age) read by coffer, and an age file written by coffer: what a user
  # of age gains by switching tools without changing format (ChaCha20-Poly1305, 64 KiB chunks).
  for t in 1 "$max_threads"; do
    measure "'$coffer' decrypt -q --threads $t -i '$work/age.key' '$work/c.age' > /dev/null"
    coffer_age_dec[$t]=$wall; ((rss > coffer_rss)) && coffer_rss=$rss
    row "coffer decrypt age file threads=$t -> /dev/null" "$wall" "$rss" "x$(ratio "$age_dec" "$wall") age -d's speed"
  done
  measure "'$coffer' encrypt -q --format age --threads $max_threads -r '$recipient' '$input' > /dev/null"
  coffer_age_enc=$wall; ((rss > coffer_rss)) && coffer_rss=$rss
  row "coffer encrypt --format age threads=$max_threads -> /dev/null" "$wall" "$rss" "x$(ratio "$age_enc" "$wall") age's speed"
  rm -f "$work/c.age"
else
  echo; echo "age: not installed (apt-get install age); skipped"
fi

xb_wall=""
if python3 -c 'import cryptography' 2>/dev/null; then
  section "XtraBackup .xbcrypt (XBCRYP03, 64 KiB chunks, AES-256-CTR + SHA-256) made by scripts/make_xbcrypt.py"
  xb_key=xbcrypt-benchmark-key-aes-256-ok
  python3 "$repo/scripts/make_xbcrypt.py" "$input" "$work/c.xbcrypt" "$xb_key"
  for t in 1 "$max_threads"; do
    measure "XBCRYPT_ENCRYPTION_KEY=$xb_key '$coffer' decrypt -q --threads $t '$work/c.xbcrypt' > /dev/null"
    xb_wall=$wall
    row "coffer decrypt .xbcrypt threads=$t -> /dev/null" "$wall" "$rss"
  done
else
  echo; echo "xbcrypt: python3 'cryptography' is missing (pip install cryptography); skipped"
fi

rss_4g=""
if ((rss_check)); then
  section "peak RSS on a 4 GiB input (one run)"
  big=$dir/input-4096MiB.bin
  if [[ ! -f $big || $(stat -c %s "$big") -ne 4294967296 ]]; then
    if (( $(free_mib) < 4096 + 256 )); then
      echo "bench.sh: --rss-check needs 4 GiB free in $dir ($(free_mib) MiB free); skipped" >&2
      big=""
    else
      echo "generating $big (4 GiB of random bytes, written out: no sparse holes)"
      head -c 4294967296 /dev/urandom > "$big.tmp" && mv "$big.tmp" "$big"
    fi
  fi
  if [[ -n $big ]]; then
    run_once "'$coffer' encrypt -q --key-file '$work/bench.key' '$big' > /dev/null"
    rss_4g=$rss
    row "encrypt 4 GiB threads=$cores -> /dev/null" "$wall" "$rss" "" 4294967296
  fi
fi

echo
echo "== Ratios (targets from issue 2; threads=$max_threads chunk=$default_chunk)"
result "file -> file encrypt wall / cp wall" "$(ratio "$enc_file" "$cp_wall")" "<= 1.2"
result "file -> file decrypt wall / cp wall" "$(ratio "$dec_file" "$cp_wall")" "<= 1.2"
result "encrypt -> /dev/null, $max_threads threads, MB/s" "$(mbps "$enc_max")" ">= 8000"
result "decrypt -> /dev/null, $max_threads threads, MB/s" "$(mbps "$dec_max")" ">= 8000"
for digest in chunk-sha256 chunk-tags; do
  result "--sign $digest: file -> file throughput, signed / unsigned" "$(ratio "$enc_file" "${sign_file[$digest]}")" ">= 0.90"
  result "--sign $digest: -> /dev/null throughput, signed / unsigned" "$(ratio "$enc_max" "${sign_null[$digest]}")" ">= 0.90"
done
result "  the same runs against cat > /dev/null's read speed" "x$(ratio "$cat_wall" "$enc_max") / x$(ratio "$cat_wall" "$dec_max")"
if [[ -n $age_enc ]]; then
  result "coffer / age throughput, encrypt" "x$(ratio "$age_enc" "$enc_max")" ">= 3"
  result "coffer / age throughput, decrypt" "x$(ratio "$age_dec" "$dec_max")" ">= 3"
  result "decrypt the $size_mib MiB age file made by age: coffer ($max_threads threads) / age -d" "x$(ratio "$age_dec" "${coffer_age_dec[$max_threads]}") ($(mbps "${coffer_age_dec[$max_threads]}") vs $(mbps "$age_dec") MB/s)"
  result "  the same with 1 thread" "x$(ratio "$age_dec" "${coffer_age_dec[1]}") ($(mbps "${coffer_age_dec[1]}") MB/s)"
  result "write an age file: coffer --format age / age, throughput" "x$(ratio "$age_enc" "$coffer_age_enc")"
fi
if [[ -n ${enc_null[$default_chunk,1]:-} ]]; then
  e1=$(mbps "${enc_null[$default_chunk,1]}")
  result "encrypt 1 thread MB/s vs openssl speed aes-256-gcm 1 core (reference)" "$e1 vs ${openssl_mbps:-?} (x$(ratio "$e1" "${openssl_mbps:-0}"))"
else
  result "openssl speed aes-256-gcm 1 core, MB/s (reference)" "${openssl_mbps:-?}"
fi
[[ -z $xb_wall ]] || result "decrypt .xbcrypt, $max_threads threads, MB/s" "$(mbps "$xb_wall")"
result "peak RSS of the coffer runs above ($size_mib MiB input), MiB" "$(mib "$coffer_rss")" "<= 64"
[[ -z $rss_4g ]] || result "peak RSS encrypting 4 GiB, MiB" "$(mib "$rss_4g")" "<= 64"

if ((markdown)); then
  {
    echo "Coffer benchmark, $(date -u '+%F %H:%M') UTC: $size_mib MiB random input in \`$dir\`, $cores cores,"
    echo "median of $runs runs after a warm-up; MB/s = 10^6 bytes/s of plaintext; load average $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| what | wall | MB/s | peak RSS | note |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${md_rows[@]}"
    echo
    echo "| ratio (threads=$max_threads, chunk=$default_chunk) | measured | target |"
    echo "|---|---|---|"
    printf '%s\n' "${md_ratios[@]}"
  } >&3
fi

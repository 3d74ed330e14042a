#!/usr/bin/env bash
# Builds (cached) and runs the libFuzzer targets of Fuzz/ (docs/FUZZING.md).
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer options…]    one target, or `all` for every target
#   scripts/fuzz.sh --list                                  the target names
#   scripts/fuzz.sh --build                                 build only
#   scripts/fuzz.sh --seeds TARGET DIR                      write a target's seeds into DIR
#
# Each run starts from a fresh corpus in a temporary directory: the seeds (test vectors, copied at
# run time, and Fuzz/Seeds/TARGET) plus whatever the fuzzer adds; it is deleted afterwards unless
# COFFER_FUZZ_KEEP=1. A crash, a sanitizer report, a timeout or an out-of-memory makes the script
# exit non-zero and keeps the input in .build-fuzz/crashes/ (COFFER_FUZZ_ARTIFACTS to change).
# Prints one line per target: executions, coverage, corpus size.
#
# Environment: COFFER_FUZZ_JOBS (targets run at once with `all`, default 1), COFFER_SHARED
# (the shared vectors, default ../shared beside the repository), COFFER_FUZZ_NICE (default 19).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

targets=(header slots cofferfile signature age xbcrypt keyfile keyuri)
scratch="$repo/.build-fuzz"
configuration=release
fuzzers="$scratch/fuzzers"
artifacts="${COFFER_FUZZ_ARTIFACTS:-$scratch/crashes}"
shared="${COFFER_SHARED:-$repo/../shared}"
jobs="${COFFER_FUZZ_JOBS:-1}"
nice_level="${COFFER_FUZZ_NICE:-19}"

usage() { echo "usage: scripts/fuzz.sh TARGET|all SECONDS [libFuzzer options…] | --list | --build | --seeds TARGET DIR" >&2; exit 2; }

# Largest input per target: whole files for the readers of whole files, headers otherwise.
max_len() {
  case "$1" in
    cofferfile|xbcrypt|age) echo 20000 ;;
    slots) echo 12000 ;;
    keyfile) echo 6000 ;;
    *) echo 4096 ;;
  esac
}

# The Coffer modules and Fuzz/Sources, instrumented (coverage for libFuzzer, AddressSanitizer), as
# one shared library; then one small driver per target. SwiftPM and the timestamps below make a
# second build a no-op.
build() {
  command -v swift >/dev/null || { echo "fuzz.sh: swift is not on PATH" >&2; exit 1; }
  mkdir -p "$scratch"
  nice -n "$nice_level" swift build --package-path Fuzz --scratch-path "$scratch" -c "$configuration" \
    -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table \
    >"$scratch/fuzz-build.log" 2>&1 || { cat "$scratch/fuzz-build.log" >&2; echo "fuzz.sh: building Fuzz/ failed" >&2; exit 1; }
  local products="$scratch/$configuration"
  local library="$products/libCofferFuzzTargets.so"
  [[ -f "$library" ]] || { echo "fuzz.sh: $library was not built" >&2; exit 1; }
  local modules="$products/Modules"
  [[ -d "$modules" ]] || modules="$products"
  mkdir -p "$fuzzers"
  # Importing the targets' module loads the C modules below it: point the compiler at their maps.
  local maps=() map
  while IFS= read -r map; do maps+=(-Xcc "-fmodule-map-file=$map"); done < <(
    find "$products/" -maxdepth 2 -name module.modulemap; find "$scratch/checkouts" -name module.modulemap
    find Sources -name module.modulemap)  # system libraries: CZstd, CZlib
  local name
  for name in "${targets[@]}"; do
    local fuzzer="$fuzzers/fuzz-$name"
    if [[ -x "$fuzzer" && "$fuzzer" -nt "$library" && "$fuzzer" -nt Fuzz/Driver/Driver.swift ]]; then continue; fi
    printf 'let fuzzTargetName = "%s"\n' "$name" >"$fuzzers/name-$name.swift"
    nice -n "$nice_level" swiftc -O -parse-as-library -sanitize=fuzzer,address -module-name FuzzDriver \
      -I "$modules" "${maps[@]}" -L "$products" -lCofferFuzzTargets -Xlinker -rpath -Xlinker "$products" \
      Fuzz/Driver/Driver.swift "$fuzzers/name-$name.swift" -o "$fuzzer" 2>"$fuzzers/link-$name.log" ||
      { grep -v 'Cannot export local symbol' "$fuzzers/link-$name.log" >&2; echo "fuzz.sh: linking fuzz-$name failed" >&2; exit 1; }
  done
}

# Seeds for one target into directory $2, from the vectors (read-only; copied) and Fuzz/Seeds.
seed() {
  local name=$1 dir=$2
  mkdir -p "$dir"
  [[ -d "Fuzz/Seeds/$name" ]] && cp Fuzz/Seeds/"$name"/* "$dir"/ 2>/dev/null || true
  python3 - "$name" "$dir" "$repo/Tests/CofferFormatTests/Vectors" "$shared/vectors" <<'PY'
import os, sys, zlib
name, out, cof_dir, shared = sys.argv[1:5]
n = 0
def put(data, label):
    global n
    n += 1
    with open(os.path.join(out, f"seed-{n:03d}-{label}"), "wb") as f:
        f.write(data)
def files(d, suffix=""):
    if not os.path.isdir(d): return []
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(suffix)]
def header_end(data):
    # Through the line feed of the MAC line ("--- ..."), for a v1 header.
    i = data.find(b"\n---")
    return -1 if i < 0 else data.find(b"\n", i + 1) + 1
cof = [(os.path.basename(p), open(p, "rb").read()) for p in files(cof_dir, ".cof")]
v1 = [(b, d) for b, d in cof if d.startswith(b"coffer/v1\n")]
v2 = [(b, d) for b, d in cof if d.startswith(b"coffer/v2 ")]
def age_vectors():
    for p in files(os.path.join(shared, "age")):
        raw = open(p, "rb").read()
        head, sep, body = raw.partition(b"\n\n")
        if not sep: continue
        if b"compressed: zlib" in head:
            try: body = zlib.decompress(body)
            except zlib.error: continue
        yield os.path.basename(p), b"armored: yes" in head, body
if name == "header":
    # Whole headers, and (input starting with "-> ") the stanza lines of Coffer and age headers.
    for b, d in v1: put(d[:header_end(d)], b)
    for b, d in v1:
        h = d[:header_end(d)]
        put(h[h.find(b"\n-> ") + 1:h.find(b"\n---") + 1], b)
    for b, armored, d in age_vectors():
        if not armored and d.startswith(b"age-encryption.org/v1\n") and b"\n---" in d:
            put(d[d.find(b"\n") + 1:d.find(b"\n---") + 1], b)
elif name == "slots":
    for b, d in v2:
        lead = d[:d.find(b"\n") + 1]
        size = int(lead.split()[1])
        put(d[:len(lead) + 2 * size + 16], b)
        for i in range(2):
            s = d[len(lead) + i * size:len(lead) + (i + 1) * size]
            if any(s): put(s, f"{b}-slot{i}")
elif name == "cofferfile":
    for b, d in cof: put(d, b)
elif name == "signature":
    for b, d in v2:
        if b.startswith("v2_signed_ed25519"):
            put(bytes([0x00]) + d[-144:], b + "-sha256")
            put(bytes([0x10]) + d[-144:], b + "-tags")
elif name == "age":
    for b, armored, d in age_vectors():
        if len(d) <= 20000: put(d, b)
elif name == "xbcrypt":
    for p in files(os.path.join(shared, "xbcrypt"), ".xbcrypt"):
        b = os.path.basename(p)
        if os.path.getsize(p) and os.path.getsize(p) <= 70000 and (b.startswith("aes256") or "len1." in b):
            put(open(p, "rb").read(), b)
print(n)
PY
}

run_one() {
  local name=$1 seconds=$2; shift 2
  local fuzzer="$fuzzers/fuzz-$name" work
  work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-fuzz-$name.XXXXXX")
  local seeds
  seed "$name" "$work/corpus" >/dev/null
  seeds=$(find "$work/corpus" -type f | wc -l)
  mkdir -p "$artifacts"
  local status=0
  # detect_leaks=0: Swift's runtime keeps metadata caches and the targets' fixed keys for the
  # life of the process, which LeakSanitizer reports; a leak is not what these targets look for.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}" nice -n "$nice_level" "$fuzzer" \
    -max_total_time="$seconds" -max_len="$(max_len "$name")" -timeout=20 -rss_limit_mb=3072 \
    -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$artifacts/$name-" "$@" \
    "$work/corpus" >"$work/log" 2>&1 || status=$?
  local execs cov ft corpus
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -n1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$work/log" | tail -n1 | cut -d' ' -f2)
  corpus=$(grep -o 'corp: [0-9]*' "$work/log" | tail -n1 | cut -d' ' -f2)
  if ((status != 0)); then
    echo "fuzz $name: FAILED (exit $status) after ${execs:-?} executions; input kept in $artifacts/:"
    grep -E 'ERROR: |Fatal error|fuzz invariant|SUMMARY|artifact_prefix|Test unit written' "$work/log" | head -n 12 | sed 's/^/  /'
    cp "$work/log" "$artifacts/$name.log"
    echo "  full log: $artifacts/$name.log"
  else
    echo "fuzz $name: OK, ${execs:-?} executions in ${seconds} s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corpus:-?} (seeds $seeds)"
  fi
  if [[ "${COFFER_FUZZ_KEEP:-0}" == 1 ]]; then echo "  corpus and log kept in $work"; else rm -rf "$work"; fi
  return "$status"
}

[[ $# -ge 1 ]] || usage
case "$1" in
  --list) printf '%s\n' "${targets[@]}"; exit 0 ;;
  --build) build; exit 0 ;;
  --seeds) [[ $# -eq 3 ]] || usage; seed "$2" "$3" >/dev/null; exit 0 ;;
esac
[[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage
target=$1 seconds=$2; shift 2
if [[ "$target" != all ]] && [[ ! " ${targets[*]} " == *" $target "* ]]; then
  echo "fuzz.sh: no target '$target'; targets: ${targets[*]} all" >&2; exit 2
fi
build
if [[ "$target" != all ]]; then run_one "$target" "$seconds" "$@"; exit; fi

# Every target, COFFER_FUZZ_JOBS at a time; each prints its line when it ends.
failed=0
pids=()
names=()
for name in "${targets[@]}"; do
  while ((${#pids[@]} >= jobs)); do
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}"); names=("${names[@]:1}")
  done
  run_one "$name" "$seconds" "$@" &
  pids+=($!); names+=("$name")
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if ((failed)); then echo "fuzz: a target failed; inputs kept in $artifacts"; exit 1; fi
echo "fuzz: ${#targets[@]} targets ran ${seconds} s each without a crash"

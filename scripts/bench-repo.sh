#!/usr/bin/env bash
# Repository benchmark of issue 12, item 9 (a measurement command, not a test): Coffer against
# restic and borg on the same data, in the same run, alternating.
#
# Data (in /dev/shm, so the disk is out of the picture; made once and reused, see --data):
#   TREE/d000..d099    10,000 small files    (../shared/tools/gen_tree.py TREE 7)
#   TREE/dump.sql      1 GiB SQL dump        (gen_sqldump.py dump.sql 1073741824 7)
#   TREE/random.bin    512 MiB random bytes
# then mutate_tree.py apply for the incremental (100 small files rewritten in place, 10 MB of SQL
# appended to the dump; reverted at the end of each run).
#
# Per run, each phase runs every tool once, the tools' order rotating from run to run:
#   full backup, incremental backup, full restore, restore of one (small) file to stdout,
#   listing the snapshot's files, check --read-data; with wall time, peak RSS of the process
#   (/usr/bin/time), load average, and the repository's size after each backup.
# Tools: Coffer (release build, key file), restic (default settings: repository v2, compression
# auto), borg (--compression zstd,3, repokey encryption). Passwords of restic and borg come from
# their environment variables (benchmark only). Prints the figures, medians over the runs, and the
# paired ratios Coffer/restic and Coffer/borg (median of the per-run ratios) next to the targets.
#
#   bash scripts/bench-repo.sh [--runs N] [--size DUMP_BYTES] [--random BYTES] [--quick]
#        [--tools "coffer restic borg"] [--baseline BIN] [--coffer BIN] [--data DIR] [--s3]
#
#   --quick         128 MiB dump, 64 MiB random, 1 run (a smoke run; the figures are not the targets')
#   --size N        dump size in bytes (default 1073741824); --random N: random file size (536870912)
#   --runs N        runs (default 3)
#   --tools LIST    which tools (default "coffer restic borg")
#   --baseline BIN  also run this coffer binary as tool "base" (same phases: before/after a change)
#   --coffer BIN    the coffer binary (default: swift build -c release)
#   --data DIR      where the generated data lives (default /dev/shm/coffer-bench-repo-data-SIZE-RANDOM;
#                   kept for the next run: remove it yourself)
#   --s3            afterwards, run scripts/bench-s3.sh (when it exists) with the same options
#   --perf PHASE    record `perf record -g` of Coffer's PHASE (full|incr|restore|check) into the
#                   work directory's perf-PHASE.data (one run)
#   --rss-check     issue 12's memory target on its own: Coffer only, one run, plus a `backup --stdin`
#                   of the dump; exits 1 unless every Coffer process peaked at <= 64 MiB RSS
#                   (combine with --quick for a short run, --coffer BIN for a given build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

runs=3 dump_size=1073741824 random_size=536870912 tools="coffer restic borg" baseline="" coffer="" data="" s3=0 perf="" rss_check=0
all_args=("$@")
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --size) dump_size=$2; shift 2 ;;
    --random) random_size=$2; shift 2 ;;
    --quick) dump_size=134217728 random_size=67108864 runs=1; shift ;;
    --tools) tools=$2; shift 2 ;;
    --baseline) baseline=$(realpath "$2"); shift 2 ;;
    --coffer) coffer=$(realpath "$2"); shift 2 ;;
    --data) data=$2; shift 2 ;;
    --s3) s3=1; shift ;;
    --perf) perf=$2; shift 2 ;;
    --rss-check) rss_check=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done
((rss_check)) && { tools=coffer runs=1 baseline=""; }
[[ -n $baseline ]] && tools="$tools base"

tools_dir="$root/../shared/tools"
[[ -d $tools_dir ]] || tools_dir=/work/shared/tools

# restic, borg, zstd and GNU time, from Debian when missing (as scripts/test.sh installs packages).
missing=()
for pair in restic:restic borg:borgbackup zstd:zstd /usr/bin/time:time; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }
  else
    echo "missing: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2; exit 1
  fi
fi

if [[ -z $coffer ]]; then
  swift build -c release --product coffer 2>&1 | tail -n 1
  coffer="$(swift build -c release --show-bin-path)/coffer"
fi

# ---- data
data=${data:-/dev/shm/coffer-bench-repo-data-$dump_size-$random_size}
tree=$data/tree state=$data/state
if [[ ! -f $data/complete ]]; then
  echo "== making the data in $data"
  rm -rf "$data"; mkdir -p "$tree" "$state"
  python3 "$tools_dir/gen_tree.py" "$tree" 7 >/dev/null
  python3 "$tools_dir/gen_sqldump.py" "$tree/dump.sql" "$dump_size" 7
  head -c "$random_size" /dev/urandom > "$tree/random.bin"
  python3 "$tools_dir/gen_sqldump.py" "$state/append.sql" 10000000 8
  touch "$data/complete"
fi
[[ -f $state/mutate.json ]] && python3 "$tools_dir/mutate_tree.py" revert "$tree" "$state" >/dev/null

work=$(mktemp -d /dev/shm/coffer-bench-repo.XXXXXX)
cleanup() {
  [[ -f $state/mutate.json ]] && python3 "$tools_dir/mutate_tree.py" revert "$tree" "$state" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export RESTIC_PASSWORD=coffer-bench BORG_PASSPHRASE=coffer-bench   # benchmark only
export RESTIC_CACHE_DIR=$work/restic-cache BORG_BASE_DIR=$work/borg-base
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_CHECK_I_KNOW_WHAT_I_AM_DOING=YES
"$coffer" keygen --symmetric -o "$work/coffer.key" >/dev/null 2>&1
onefile_rel=$(cd "$tree" && ls d042 | head -n 1); onefile_rel=d042/$onefile_rel
onefile=$tree/$onefile_rel
results=$work/results.tsv
: > "$results"

repo_of() { echo "$work/repo-$1"; }
bin_of() { if [[ $1 == base ]]; then echo "$baseline"; else echo "$coffer"; fi; }

# The command of phase $2 for tool $1 (run inside $work).
command_of() {
  local tool=$1 phase=$2 repo; repo=$(repo_of "$tool")
  case $tool in
    coffer|base)
      local b k; b=$(bin_of "$tool"); k="--repo $repo --key-file $work/coffer.key"
      case $phase in
        init) echo "$b init $k" ;;
        full|incr) echo "$b backup $k --quiet $tree" ;;
        restore) echo "$b restore $k latest --target $work/restore-$tool" ;;
        onefile) echo "$b dump $k latest $onefile" ;;
        ls) echo "$b ls $k latest" ;;
        check) echo "$b check $k --read-data" ;;
        stdin) echo "$b backup $k --quiet --stdin --stdin-name dump.sql" ;;   # stdin: the dump (measure)
      esac ;;
    restic)
      local c="restic -q --repo $repo"
      case $phase in
        init) echo "$c init --repository-version 2" ;;
        full|incr) echo "$c backup $tree" ;;
        restore) echo "$c restore latest --target $work/restore-$tool" ;;
        onefile) echo "$c dump latest $onefile" ;;
        ls) echo "$c ls latest" ;;
        check) echo "$c check --read-data" ;;
      esac ;;
    borg)
      case $phase in
        init) echo "borg init -e repokey $repo" ;;
        full) echo "borg create --compression zstd,3 $repo::full $tree" ;;
        incr) echo "borg create --compression zstd,3 $repo::incr $tree" ;;
        restore) echo "borg extract $repo::incr" ;;   # run in the target directory
        onefile) echo "borg extract --stdout $repo::incr ${tree#/}/$onefile_rel" ;;
        ls) echo "borg list $repo::incr" ;;
        check) echo "borg check --verify-data $repo" ;;
      esac ;;
  esac
}

# Runs phase $2 of tool $1 in run $3 and appends "run tool phase wall_s rss_kib load1" to results.
measure() {
  local tool=$1 phase=$2 run=$3 dir=$work cmd out=/dev/null in=/dev/null
  cmd=$(command_of "$tool" "$phase")
  if [[ $phase == restore ]]; then
    rm -rf "$work/restore-$tool"; mkdir -p "$work/restore-$tool"
    [[ $tool == borg ]] && dir=$work/restore-$tool
  fi
  [[ $phase == onefile ]] && out=$work/onefile-$tool
  [[ $phase == stdin ]] && in=$tree/dump.sql
  local load t0 t1 rss prefix=""
  load=$(cut -d' ' -f1 /proc/loadavg)
  if [[ -n $perf && $phase == "$perf" && ($tool == coffer) && $run == 1 ]]; then
    prefix="perf record -g -o $work/perf-$phase.data --"
  fi
  t0=$(date +%s%N)
  if ! (cd "$dir" && /usr/bin/time -f "%M %U %S" -o "$work/rss" $prefix $cmd < "$in" > "$out" 2> "$work/stderr"); then
    echo "FAILED ($tool $phase): $cmd" >&2; cat "$work/stderr" >&2; exit 1
  fi
  t1=$(date +%s%N)
  local wall cpu
  read -r rss cpu < <(tail -n 1 "$work/rss" | awk '{ printf "%d %.2f\n", $1, $2 + $3 }')
  wall=$(awk "BEGIN { printf \"%.3f\", ($t1 - $t0) / 1e9 }")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$tool" "$phase" "$wall" "$rss" "$load" "$cpu" >> "$results"
  printf '   %-7s %-8s %8s s  cpu %6s s  %7s MiB  (load %s)\n' "$tool" "$phase" "$wall" "$cpu" \
    "$(awk "BEGIN { printf \"%.1f\", $rss / 1024 }")" "$load"
  if [[ $phase == onefile ]]; then cmp -s "$out" "$onefile" || { echo "FAILED: $tool restored $onefile_rel wrongly" >&2; exit 1; }; fi
  if [[ $phase == restore ]]; then
    local restored=$work/restore-$tool$tree
    [[ $tool == borg ]] && restored=$work/restore-$tool/${tree#/}
    cmp -s "$restored/dump.sql" "$tree/dump.sql" && cmp -s "$restored/$onefile_rel" "$onefile" ||
      { echo "FAILED: $tool's restore differs from the tree" >&2; exit 1; }
    rm -rf "$work/restore-$tool"
  fi
}

repo_size() { du -sb "$(repo_of "$1")" | cut -f1; }

# The new content of the incremental, and its zstd -3 size (each file compressed on its own).
new_content() {
  python3 - "$state/mutate.json" "$state/append.sql" <<'PY'
import json, subprocess, sys
files = json.load(open(sys.argv[1]))["files"] + [sys.argv[2]]
raw = comp = 0
for f in files:
    data = open(f, "rb").read()
    raw += len(data)
    comp += len(subprocess.run(["zstd", "-3", "-c", "-q"], input=data, capture_output=True, check=True).stdout)
print(raw, comp)
PY
}

read -r -a tool_list <<< "$tools"
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== data: dump.sql $(stat -c %s "$tree/dump.sql") B, random.bin $(stat -c %s "$tree/random.bin") B, 10,000 small files ($(du -sb --exclude=dump.sql --exclude=random.bin "$tree" | cut -f1) B); one file: $onefile_rel"
echo "== coffer: $coffer; restic $(restic version | cut -d' ' -f2); $(borg --version)"
new_raw="" new_zstd=""
for ((run = 1; run <= runs; run++)); do
  # Rotate the order each run, so that no tool always runs first (or right after another).
  order=()
  for ((i = 0; i < ${#tool_list[@]}; i++)); do order+=("${tool_list[(i + run - 1) % ${#tool_list[@]}]}"); done
  echo "== run $run/$runs, order: ${order[*]}"
  for tool in "${order[@]}"; do
    rm -rf "$(repo_of "$tool")" "$work/restic-cache" "$work/borg-base"
    (cd "$work" && $(command_of "$tool" init) > /dev/null 2>&1) || { echo "FAILED: $tool init" >&2; exit 1; }
  done
  for tool in "${order[@]}"; do
    measure "$tool" full "$run"
    printf '%s\t%s\tsize_full\t%s\t0\t0\t0\n' "$run" "$tool" "$(repo_size "$tool")" >> "$results"
  done
  python3 "$tools_dir/mutate_tree.py" apply "$tree" "$state" >/dev/null
  [[ -n $new_raw ]] || read -r new_raw new_zstd < <(new_content)
  for tool in "${order[@]}"; do
    measure "$tool" incr "$run"
    printf '%s\t%s\tsize_incr\t%s\t0\t0\t0\n' "$run" "$tool" "$(repo_size "$tool")" >> "$results"
  done
  for phase in restore onefile ls check; do
    for tool in "${order[@]}"; do measure "$tool" "$phase" "$run"; done
  done
  ((rss_check)) && measure coffer stdin "$run"
  python3 "$tools_dir/mutate_tree.py" revert "$tree" "$state" >/dev/null
  for tool in "${order[@]}"; do rm -rf "$(repo_of "$tool")"; done
done

python3 - "$results" "$tools" "$new_raw" "$new_zstd" <<'PY'
import statistics, sys
from collections import defaultdict
path, tools, new_raw, new_zstd = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4])
rows = defaultdict(dict)          # (tool, phase) -> {run: (value, rss, load)}
for line in open(path):
    run, tool, phase, value, rss, load, cpu = line.split("\t")
    rows[(tool, phase)][int(run)] = (float(value), int(rss), float(load), float(cpu))
med = statistics.median
phases = ["full", "incr", "restore", "onefile", "ls", "check"]
names = {"full": "full backup", "incr": "incremental", "restore": "full restore", "onefile": "one file",
         "ls": "listing", "check": "check --read-data"}
print("\n== medians over %d run(s): wall s (min-max), user+sys CPU s, peak RSS MiB (max), load average (min-max)" %
      len(rows[(tools[0], "full")]))
print("| phase | " + " | ".join(tools) + " |")
print("|---|" + "---|" * len(tools))
for p in phases:
    cells = []
    for t in tools:
        r = rows[(t, p)].values()
        w = [v[0] for v in r]; m = [v[1] / 1024 for v in r]; l = [v[2] for v in r]; u = [v[3] for v in r]
        cells.append("%.3f (%.3f-%.3f), cpu %.2f, %.0f MiB, load %.1f-%.1f" % (med(w), min(w), max(w), med(u), max(m), min(l), max(l)))
    print("| %s | %s |" % (names[p], " | ".join(cells)))
def added(t):
    return [rows[(t, "size_incr")][r][0] - rows[(t, "size_full")][r][0] for r in rows[(t, "size_full")]]
print("| repository after full backup, MB | " + " | ".join("%.1f" % (med(v[0] for v in rows[(t, "size_full")].values()) / 1e6) for t in tools) + " |")
print("| added by the incremental, MB | " + " | ".join("%.2f" % (med(added(t)) / 1e6) for t in tools) + " |")
print("\nnew content of the incremental: %.2f MB raw, %.2f MB as zstd -3 (each file on its own)" % (new_raw / 1e6, new_zstd / 1e6))

def ratios(a, b, p, k=0):
    ra, rb = rows[(a, p)], rows[(b, p)]
    return [ra[r][k] / rb[r][k] for r in ra if r in rb and rb[r][k] > 0]
if "coffer" in tools:
    targets = {"full": 0.45, "incr": 0.5, "restore": 0.6, "check": 0.55}
    for peer in [t for t in tools if t != "coffer"]:
        print("\n== paired ratios coffer/%s: wall (median of the per-run ratios, min-max), and user+sys CPU" % peer)
        for p in phases:
            rs = ratios("coffer", peer, p)
            cs = ratios("coffer", peer, p, 3) or [float("nan")]
            target = targets.get(p) if peer == "restic" else None
            verdict = "" if target is None else ("  target <= %.2f: %s" % (target, "MET" if med(rs) <= target else "missed"))
            print("  %-18s %.3f (%.3f-%.3f)  cpu %.3f%s" % (names[p], med(rs), min(rs), max(rs), med(cs), verdict))
    c = rows
    print("\n== absolute targets (coffer)")
    for p, limit in (("onefile", 0.3), ("ls", 0.3)):
        w = med(v[0] for v in c[("coffer", p)].values())
        print("  %-18s %.3f s   target <= %.1f s: %s" % (names[p], w, limit, "MET" if w <= limit else "missed"))
    rss = max(v[1] for p in phases for v in c[("coffer", p)].values()) / 1024
    print("  %-18s %.1f MiB  target <= 64 MiB: %s" % ("peak RSS (any phase)", rss, "MET" if rss <= 64 else "missed"))
    a = med(added("coffer"))
    print("  %-18s %.2f MB = %.2fx the zstd -3 size of the new content; target <= 1.25x: %s" %
          ("incremental adds", a / 1e6, a / new_zstd, "MET" if a <= 1.25 * new_zstd else "missed"))
PY
echo "== raw figures: run tool phase wall_s|bytes rss_kib load1 cpu_s"
cat "$results"

if ((s3)); then
  if [[ -x scripts/bench-s3.sh || -f scripts/bench-s3.sh ]]; then
    s3_args=()
    for a in "${all_args[@]}"; do [[ $a == --s3 ]] || s3_args+=("$a"); done
    bash scripts/bench-s3.sh "${s3_args[@]}"
  else
    echo "== --s3: scripts/bench-s3.sh does not exist (yet): skipped"
  fi
fi

if ((rss_check)); then
  peak=$(awk -F'\t' '$2 == "coffer" && $3 !~ /^size_/ { if ($5 > m) m = $5 } END { print m + 0 }' "$results")
  echo "== --rss-check: peak RSS of any coffer command $((peak / 1024)) MiB ($peak KiB), target <= 64 MiB (load $(cut -d' ' -f1-3 /proc/loadavg))"
  ((peak <= 64 * 1024)) || { echo "== --rss-check: FAILED" >&2; exit 1; }
fi

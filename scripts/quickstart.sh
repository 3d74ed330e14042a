#!/usr/bin/env bash
# The main job end to end, on an embedded default: build coffer, generate a key file, encrypt a
# sample backup directory in place (like `xtrabackup --encrypt`), verify every file, decrypt it
# back, and compare with the original. Also streams a dump through encrypt | decrypt.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building coffer (release)"
swift build -c release --product coffer 2>&1 | tail -n 1
coffer=$PWD/.build/release/coffer

work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-quickstart-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "== making a sample backup directory in $work/sample"
mkdir -p sample/mysql sample/shop
python3 - <<'PY'
import os, random
random.seed(42)
rows = []
for i in range(200_000):
    rows.append(f"({i},'customer{i % 997}@example.org','2026-11-{1 + i % 28:02d}',{random.randint(1, 99999) / 100})")
with open("sample/shop/orders.sql", "w") as f:
    for start in range(0, len(rows), 200):
        f.write("INSERT INTO orders VALUES " + ",".join(rows[start:start + 200]) + ";\n")
with open("sample/ibdata1", "wb") as f:
    f.write(os.urandom(24 << 20))
with open("sample/mysql/user.ibd", "wb") as f:
    f.write(os.urandom(65536))
open("sample/mysql/empty.frm", "wb").close()
with open("sample/xtrabackup_checkpoints", "w") as f:
    f.write("backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 1626007\n")
PY
du -sh sample | sed 's/^/   /'

echo "== generating a key file, and a signing key pair for the producer"
"$coffer" keygen --symmetric -o backup.key
"$coffer" keygen --type ed25519 -o producer

echo "== encrypting and signing the directory in place (NAME -> NAME.cof, originals removed once verified)"
cp -a sample backup
"$coffer" encrypt --recursive --remove-original --key-file backup.key --sign producer.key backup
find backup -type f | sort | sed 's/^/   /'

echo "== inspecting one file (no key needed)"
"$coffer" inspect backup/shop/orders.sql.cof | sed 's/^/   /'

echo "== verifying every encrypted file and its signature"
"$coffer" verify --recursive --key-file backup.key --signed-by producer.pub backup
echo "== checking a signature without any decryption key (what a storage host can do)"
"$coffer" verify --signed-by producer.pub backup/ibdata1.cof

echo "== decrypting the directory in place"
"$coffer" decrypt --recursive --remove-original --key-file backup.key backup

echo "== comparing with the original"
diff -r sample backup
echo "   identical"

echo "== streaming: cat dump | coffer encrypt | coffer decrypt"
cat sample/shop/orders.sql | "$coffer" encrypt -q --key-file backup.key | "$coffer" decrypt -q --key-file backup.key | cmp - sample/shop/orders.sql
echo "   identical"

echo "== random access: 100 bytes at offset 1000000"
"$coffer" encrypt -q --key-file backup.key -o orders.sql.cof sample/shop/orders.sql
"$coffer" decrypt -q --key-file backup.key --offset 1000000 --length 100 orders.sql.cof | cmp - <(tail -c +1000001 sample/shop/orders.sql | head -c 100)
echo "   identical"

echo "== repository: init, back up the sample twice (the second reads nothing unchanged), list, restore, check, compare"
export COFFER_REPOSITORY=$work/repo
"$coffer" init --key-file backup.key
"$coffer" backup --key-file backup.key --tag quickstart sample
"$coffer" backup --key-file backup.key --tag quickstart sample
"$coffer" snapshots --key-file backup.key | sed 's/^/   /'
"$coffer" ls --key-file backup.key latest "$work/sample/shop" | sed 's/^/   /'
"$coffer" restore --key-file backup.key latest --target restored
"$coffer" check --key-file backup.key
diff -r sample "restored$work/sample"
echo "   identical"
"$coffer" dump --key-file backup.key latest "$work/sample/shop/orders.sql" | cmp - sample/shop/orders.sql
echo "   dump identical"
unset COFFER_REPOSITORY

echo "quickstart: OK"

#!/usr/bin/env python3
"""Writes an XtraBackup .xbcrypt file (XBCRYP03 chunks) from a plaintext file, for benchmarks.

The layout follows ../shared/vectors/xbcrypt/README.md (checked by Coffer's tests against the 36
files made by Percona's xbcrypt): per chunk, little-endian header fields, a random IV used as the
first AES-CTR counter block, and the payload AES-CTR(plaintext || SHA-256(plaintext)).
usage: make_xbcrypt.py PLAINTEXT OUTPUT KEY [CHUNK_SIZE]   (KEY: 16, 24 or 32 characters)
"""
import hashlib
import os
import struct
import sys
import zlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def main() -> None:
    source, target, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    chunk_size = int(sys.argv[4]) if len(sys.argv) > 4 else 65536
    if len(key) not in (16, 24, 32):
        sys.exit("make_xbcrypt.py: the key must be 16, 24 or 32 bytes")
    with open(source, "rb") as plain, open(target, "wb") as out:
        while chunk := plain.read(chunk_size):
            iv = os.urandom(16)
            encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
            payload = encryptor.update(chunk + hashlib.sha256(chunk).digest()) + encryptor.finalize()
            header = b"XBCRYP03" + struct.pack("<QQQI", 0, len(chunk) + 32, len(payload), zlib.crc32(payload))
            out.write(header + struct.pack("<Q", 16) + iv + payload)


if __name__ == "__main__":
    main()

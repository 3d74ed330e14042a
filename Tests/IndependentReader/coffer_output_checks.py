"""Files written by the built `coffer` binary, opened by the independent reader.

The byte-exact vectors cannot cover the randomized constructions (public-key stanzas, ML-DSA
signatures) nor the command line's choices (version 2 slot sizes, object names of a run), so
this makes such files in a temporary directory with keys generated here, in Python, and opens
them with the reader. The keys are given to `coffer` in the documented encodings (age's bech32
recipients, PEM), so a file that opens proves that both sides follow docs/FORMAT.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import coffer_reader as cr
import vector_checks as vc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519

mldsa = cr._mldsa

# Bech32 (BIP 173), as age encodes its recipients: an encoding, not a cryptographic primitive.
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values):
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            check ^= generator[i] if (top >> i) & 1 else 0
    return check


def bech32_encode(hrp: str, data: bytes) -> str:
    acc, bits, words = 0, 0, []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            words.append((acc >> bits) & 31)
    if bits:
        words.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _polymod(expanded + words + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words + checksum)


def _write(path: str, content: bytes, mode: int = 0o600) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return path


def run(results: vc.Results, coffer: str) -> None:
    if not os.access(coffer, os.X_OK):
        results.failed += 1
        print(f"FAIL files written by the coffer binary: {coffer} is not an executable")
        return
    work = tempfile.mkdtemp(prefix="coffer-pyreader-")
    try:
        _run(results, coffer, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(results: vc.Results, coffer: str, work: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COFFER_", "AWS_", "VAULT_"))}

    def coffer_run(*args: str) -> None:
        done = subprocess.run([coffer, *args[:1], "--quiet", *args[1:]], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"coffer {' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr.decode(errors='replace').strip()[:400]}")

    # Keys, generated here.
    symmetric = os.urandom(32)
    key_file = _write(os.path.join(work, "sym.key"), f"COFFER-SYMMETRIC-KEY-V1:{symmetric.hex()}\n".encode())
    # Non-ASCII, with one precomposed (NFC) and one decomposed (NFD) letter: the reader uses the
    # UTF-8 bytes as given, so a writer that normalized either way would not match.
    passphrase = "p\u00e4ssw\u006f\u0308rd \u2603"
    pass_file = _write(os.path.join(work, "pass.txt"), passphrase.encode() + b"\n")
    x_private = x25519.X25519PrivateKey.generate()
    x_recipient = bech32_encode("age", x_private.public_key().public_bytes_raw())
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pub = _write(os.path.join(work, "rsa.pub"), rsa_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    identities = {"key file": cr.KeyFileIdentity(symmetric), "passphrase": cr.PassphraseIdentity(passphrase),
                  "X25519": cr.X25519Identity(x_private), "rsa-oaep": cr.RSAIdentity(rsa_private)}
    recipients = ["-r", x_recipient, "-r", rsa_pub]
    if cr._mlkem is not None:
        seed = os.urandom(32)
        identities["mlkem768x25519"] = cr.XWingIdentity(seed)
        recipients += ["-r", bech32_encode("age1pq", identities["mlkem768x25519"].public)]
    else:
        results.skip("mlkem768x25519 stanzas", "this cryptography build has no ML-KEM-768")
    ed_private = ed25519.Ed25519PrivateKey.generate()
    ed_key = _write(os.path.join(work, "ed.key"), ed_private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ed_signer = cr.Signer("ed25519", ed_private.public_key().public_bytes_raw())

    plaintext = os.urandom(1 << 20) + b"tail of the second chunk\n"   # two chunks at the default 1 MiB
    source = _write(os.path.join(work, "plain.bin"), plaintext)

    def check_file(label, path, expect_types, signer=None, digest=None, version=2, cipher="aes-256-gcm"):
        data = open(path, "rb").read()
        parsed = cr.parse_file(data)
        header = parsed.headers[0]
        types = [s.type for s in header.stanzas]
        assert types == expect_types, f"stanzas {types}"
        assert parsed.version == version and header.cipher == cipher, (parsed.version, header.cipher)
        if digest:
            assert header.signed == (signer.algorithm, digest), header.signed
        opened_by = []
        names = {"keyfile": "key file", "scrypt": "passphrase"}
        for stanza_type in expect_types:
            name = names.get(stanza_type, stanza_type)
            opened = cr.decrypt(data, [identities[name]], [signer] if signer else None)
            assert opened.plaintext == plaintext, f"{name}: plaintext differs"
            assert opened.warnings == [], opened.warnings
            opened_by.append(name)
        if signer:
            cr.verify_only(data, [signer])
        # A stanza with a matching KEYID whose body was altered is an error, not "no match";
        # and a few flips and truncations of the whole file are rejected.
        every = [identities[names.get(t, t)] for t in expect_types]
        mac = data.index(b"\n--- ") + 10   # inside the used slot's MAC (slot 2 is empty padding)
        stanza = data.index(b"\n-> ") + 8   # inside the first stanza line
        end = len(data) - cr.trailer_size(header.signed)   # a trailer's second slot is empty
        for i in sorted({0, 5, stanza, mac, len(data) // 3, parsed.payload_start - 1,
                         parsed.payload_start, parsed.payload_start + 100, end - 1, end, end + 20}):
            if i >= len(data):
                continue
            try:
                vc.expect_rejected(vc.flip(data, i), every, [signer] if signer else None)
                vc.expect_rejected(data[:i], every, [signer] if signer else None)
            except AssertionError as e:
                raise AssertionError(f"damage at byte {i} of {len(data)}: {e}")
        return ", ".join(opened_by) + (f"; {signer.algorithm} {digest} verified" if signer else "")

    def all_stanzas():
        out = os.path.join(work, "all.cof")
        coffer_run("encrypt", "--key-file", key_file, "--passphrase-file", pass_file, "--work-factor", "10",
                   *recipients, "--sign", ed_key, "-o", out, source)
        types = ["keyfile", "scrypt", "X25519", "rsa-oaep"] + (["mlkem768x25519"] if cr._mlkem else [])
        data = open(out, "rb").read()
        found = sorted(s.type for s in cr.parse_file(data).headers[0].stanzas)
        assert found == sorted(types), f"stanzas {found}"
        return check_file("all", out, [s.type for s in cr.parse_file(data).headers[0].stanzas], ed_signer,
                          "chunk-sha256")
    results.check("coffer encrypt, every local stanza type and an Ed25519 signature", all_stanzas)

    def chacha_small_chunks():
        out = os.path.join(work, "chacha.cof")
        coffer_run("encrypt", "--cipher", "chacha20-poly1305", "--chunk-size", "4K", "-r", x_recipient,
                   "-o", out, source)
        data = open(out, "rb").read()
        assert cr.parse_file(data).headers[0].chunk_size == 4096
        return check_file("chacha", out, ["X25519"], cipher="chacha20-poly1305")
    results.check("coffer encrypt --cipher chacha20-poly1305 --chunk-size 4K", chacha_small_chunks)

    def age_spelling():
        # FORMAT.md: a reader MUST accept public-key stanzas without the KEYID argument (age's
        # spelling). Drop it from the X25519 stanza of a file coffer wrote, re-MAC the slot with the
        # file key, and open the result with this reader and with coffer.
        data = open(os.path.join(work, "chacha.cof"), "rb").read()
        opened = cr.decrypt(data, [identities["X25519"]])
        parsed = cr.parse_file(data)
        header = parsed.headers[0]
        lead = data[:data.index(b"\n") + 1]
        size = int(lead[10:-1])
        slot = data[len(lead):len(lead) + size]
        line_start = slot.index(b"\n-> X25519 ") + 1
        line_end = slot.index(b"\n", line_start)
        line = slot[line_start:line_end]
        assert len(line.split(b" ")) == 4, line   # "->", type, SHARE, KEYID
        text = slot[:slot.index(b"\n--- ") + 4].replace(line, line.rsplit(b" ", 1)[0])
        mac_key = cr.hkdf(cr.object_key(opened.file_key, header.object_name), b"", b"coffer/v1 header")
        new_slot = text + b" " + cr.b64encode(cr.hmac_sha256(mac_key, lead + text)) + b"\n"
        rewritten = lead + new_slot + bytes(size - len(new_slot)) + data[len(lead) + size:]
        assert cr.decrypt(rewritten, [identities["X25519"]]).plaintext == plaintext
        path = _write(os.path.join(work, "age-spelling.cof"), rewritten)
        identity = _write(os.path.join(work, "x25519.key"),
                          bech32_encode("age-secret-key-", x_private.private_bytes_raw()).upper().encode() + b"\n")
        out = os.path.join(work, "age-spelling.out")
        coffer_run("decrypt", "-i", identity, "-o", out, path)
        assert open(out, "rb").read() == plaintext, "coffer's plaintext differs"
        return "this reader and coffer decrypt both open it"
    results.check("an X25519 stanza without KEYID (age's spelling) opens", age_spelling)

    if mldsa is None:
        results.skip("ML-DSA-65 signatures", "this cryptography build has no ML-DSA")
    else:
        def mldsa_tags():
            private = mldsa.MLDSA65PrivateKey.generate()
            key = _write(os.path.join(work, "mldsa.key"), private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            signer = cr.Signer("ml-dsa-65", private.public_key().public_bytes_raw())
            out = os.path.join(work, "mldsa.cof")
            coffer_run("encrypt", "--key-file", key_file, "--sign", key, "--signature-digest", "chunk-tags",
                       "-o", out, source)
            return check_file("mldsa", out, ["keyfile"], signer, "chunk-tags")
        results.check("coffer encrypt --sign ML-DSA-65 --signature-digest chunk-tags", mldsa_tags)

    def recursive_run():
        tree = os.path.join(work, "tree")
        os.makedirs(os.path.join(tree, "shop"))
        files = {"a.txt": b"first file\n", "shop/orders.ibd": os.urandom(5000)}
        for rel, content in files.items():
            _write(os.path.join(tree, rel), content)
        coffer_run("encrypt", "--recursive", "--key-file", key_file, tree)
        keys = set()
        for rel, content in files.items():
            data = open(os.path.join(tree, rel + ".cof"), "rb").read()
            opened = cr.decrypt(data, [identities["key file"]])
            assert opened.plaintext == content, rel
            header = cr.parse_file(data).headers[0]
            assert header.object_name == rel.encode(), f"object name {header.object_name!r} for {rel}"
            keys.add(opened.file_key)
        assert len(keys) == 1, "the files of one run do not share a file key"
        return "object names are the relative paths; one file key"
    results.check("coffer encrypt --recursive: object names and a shared file key", recursive_run)


def differential(results: vc.Results, coffer: str, directory: str) -> None:
    """The reader's verdict and coffer's agree on damaged copies of a signed vector."""
    name = "v2_signed_ed25519_chunk_sha256.cof"
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        results.skip("coffer and the reader agree on damaged files", f"{name} not present")
        return
    work = tempfile.mkdtemp(prefix="coffer-pyreader-")
    try:
        data = open(path, "rb").read()
        key = _write(os.path.join(work, "k.key"), f"COFFER-SYMMETRIC-KEY-V1:{vc.K.hex()}\n".encode())
        public = ed25519.Ed25519PrivateKey.from_private_bytes(vc.ED25519_SEED).public_key()
        pub = _write(os.path.join(work, "ed.pub"), public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
        signer = cr.Signer("ed25519", vc.ED25519_PUBLIC)
        identity = cr.KeyFileIdentity(vc.K)
        parsed = cr.parse_file(data)
        start, end = parsed.payload_start, len(data) - 144
        good = data[end:end + 72]
        bad = good[:8] + bytes(64)
        variants = {"intact": data,
                    "flipped MAC": vc.flip(data, data.index(b"\n--- ") + 10),
                    "flipped stanza body": vc.flip(data, data.index(b"\n-> keyfile") + 70),
                    "flipped nonce": vc.flip(data, start - 5),
                    "flipped chunk 0": vc.flip(data, start + 10),
                    "flipped final tag": vc.flip(data, end - 1),
                    "flipped signature": vc.flip(data, end + 20),
                    "garbage in the empty trailer slot": vc.flip(data, len(data) - 1),
                    "bad signature + good": data[:end] + bad + good,
                    "good + bad signature": data[:end] + good + bad,
                    "bad signature only": data[:end] + bad + bytes(72),
                    "no trailer": data[:end],
                    "cut at a chunk boundary": data[:start + 4112] + data[end:],
                    "one byte short": data[:-1],
                    "one byte more": data + b"\0"}

        def agree():
            disagreements = []
            for label, variant in variants.items():
                file = _write(os.path.join(work, "v.cof"), variant)
                try:
                    cr.decrypt(variant, [identity], [signer])
                    reader = True
                except cr.CofferError:
                    reader = False
                try:
                    cr.verify_only(variant, [signer])
                    reader_verify = True
                except cr.CofferError:
                    reader_verify = False
                out = os.path.join(work, "v.out")
                if os.path.exists(out):
                    os.unlink(out)
                env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
                dec = subprocess.run([coffer, "decrypt", "--quiet", "--key-file", key, "--signed-by", pub,
                                      "-o", out, file], env=env, capture_output=True, timeout=60).returncode == 0
                ver = subprocess.run([coffer, "verify", "--signed-by", pub, file], env=env,
                                     capture_output=True, timeout=60).returncode == 0
                if (reader, reader_verify) != (dec, ver):
                    disagreements.append(f"{label}: reader decrypt/verify {reader}/{reader_verify}, "
                                         f"coffer {dec}/{ver}")
            assert not disagreements, "; ".join(disagreements)
            return f"{len(variants)} variants, decrypt --signed-by and verify --signed-by"
        results.check("coffer and the reader agree on damaged copies of a signed vector", agree)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stanza_differential(results: vc.Results, coffer: str, directory: str) -> None:
    """Malformed stanzas, re-MACed here so that only the stanza is wrong: the reader and coffer
    agree on which are errors and which are skipped (a stanza's rules apply only to a reader holding
    a key of its type)."""
    v1 = os.path.join(directory, "keyfile_and_passphrase_object.cof")
    if not os.path.exists(v1):
        results.skip("coffer and the reader agree on malformed stanzas", "vector not present")
        return
    work = tempfile.mkdtemp(prefix="coffer-pyreader-")
    try:
        data = open(v1, "rb").read()
        mac = data.index(b"\n--- ") + 4
        text, rest = data[:mac], data[data.index(b"\n", mac) + 1:]
        mac_key = cr.hkdf(cr.object_key(vc.FILE_KEY, b"db/ibdata1"), b"", b"coffer/v1 header")
        salt = cr.b64encode(vc.KEYFILE_SALT)
        variants = {"keyfile stanza with 3 arguments": text.replace(salt + b"\n", salt + b" extra\n"),
                    "keyfile body altered": text.replace(b"\nI6nU", b"\nI7nU"),
                    "scrypt stanza with 3 arguments": text.replace(b" 10\n", b" 10 extra\n"),
                    "unknown stanza type added": text.replace(b"-> scrypt", b"-> future-kind a b\nAAAA\n-> scrypt")}
        key = _write(os.path.join(work, "k.key"), f"COFFER-SYMMETRIC-KEY-V1:{vc.K.hex()}\n".encode())
        pass_file = _write(os.path.join(work, "p.txt"), vc.PASS_A.encode() + b"\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}

        def agree():
            rows, disagreements = 0, []
            for label, bad in variants.items():
                assert bad != text, f"{label}: the edit did not apply"
                variant = bad + b" " + cr.b64encode(cr.hmac_sha256(mac_key, bad)) + b"\n" + rest
                path = _write(os.path.join(work, "v.cof"), variant)
                for key_label, identity, args in (("key file", cr.KeyFileIdentity(vc.K), ["--key-file", key]),
                                                  ("passphrase", cr.PassphraseIdentity(vc.PASS_A),
                                                   ["--passphrase-file", pass_file])):
                    try:
                        cr.decrypt(variant, [identity])
                        reader = True
                    except cr.CofferError:
                        reader = False
                    done = subprocess.run([coffer, "decrypt", "--quiet", *args, "-o", "-", path], env=env,
                                          capture_output=True, timeout=60)
                    rows += 1
                    if reader != (done.returncode == 0):
                        disagreements.append(f"{label} with the {key_label}: reader {reader}, coffer "
                                             f"exit {done.returncode}")
            assert not disagreements, "; ".join(disagreements)
            return f"{rows} cases"
        results.check("coffer and the reader agree on malformed stanzas", agree)
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Checks of the test vectors and of the Coffer binary's output with the independent reader.

The expectations below are FORMAT.md's ("Test vectors"): the fixed key, file key, salts and nonce,
and a description of each plaintext, from which the plaintext is rebuilt here, so that neither the
plaintext nor its hash comes from the code under test. NAME.cof.txt (written by that code) is
checked against them too.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import traceback

import coffer_reader as cr
from cryptography.hazmat.primitives.asymmetric import ed25519

# FORMAT.md, "Test vectors": fixed values.
K = bytes.fromhex("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
K_ID = "0f0f4c16b42daa38"
FILE_KEY = bytes.fromhex("404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f")
KEYFILE_SALT = bytes([0xA1]) * 16
SCRYPT_SALT, SCRYPT_LOG2N = bytes([0xB2]) * 16, 10
PAYLOAD_NONCE = bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf")
ED25519_SEED = bytes.fromhex("606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f")
ED25519_PUBLIC = bytes.fromhex("174553b456dddfc6908ecab1c101fe6ab21e2baa0617795b7d43a63482993fd5")
ED25519_ID = "7d47330f2dba6f1c"
PASS_A, PASS_B = "coffer test vector", "correct horse battery staple"


def pattern(n: int, factor: int) -> bytes:
    return bytes((factor * i) % 256 for i in range(n))


# name: (version, slot size, slot index, generation, cipher, chunk size, object, stanza types,
#        passphrase, plaintext, signed digest)
VECTORS = {
    "keyfile_aes_hello.cof": (1, None, None, None, "aes-256-gcm", 4096, b"", ["keyfile"], None,
                              b"Hello, Coffer!\n", None),
    "keyfile_aes_empty.cof": (1, None, None, None, "aes-256-gcm", 4096, b"", ["keyfile"], None, b"", None),
    "keyfile_aes_exact_two_chunks.cof": (1, None, None, None, "aes-256-gcm", 4096, b"", ["keyfile"], None,
                                         b"x" * 8192, None),
    "keyfile_chacha_three_chunks_and_one_byte.cof": (1, None, None, None, "chacha20-poly1305", 4096, b"",
                                                     ["keyfile"], None, pattern(12289, 7), None),
    "keyfile_and_passphrase_object.cof": (1, None, None, None, "aes-256-gcm", 4096, b"db/ibdata1",
                                          ["keyfile", "scrypt"], PASS_A, b"-- PostgreSQL database dump\n", None),
    "passphrase_only_chacha.cof": (1, None, None, None, "chacha20-poly1305", 16384, b"", ["scrypt"], PASS_B,
                                   bytes(20000), None),
    "v2_keyfile_aes_hello.cof": (2, 1024, 1, 1, "aes-256-gcm", 4096, b"", ["keyfile"], None,
                                 b"Hello, Coffer!\n", None),
    "v2_rewrapped_slot2_generation7.cof": (2, 2048, 2, 7, "chacha20-poly1305", 4096, b"db/ibdata1",
                                           ["keyfile", "scrypt"], PASS_A, pattern(5000, 13), None),
    "v2_keyfile_and_kms_stanzas.cof": (2, 2048, 2, 1, "aes-256-gcm", 4096, b"base/16384/2619",
                                       ["keyfile", "aws-kms", "vault-transit"], None,
                                       b"KMS stanzas beside a key file\n", None),
    "v2_signed_ed25519_chunk_sha256.cof": (2, 1024, 1, 1, "aes-256-gcm", 4096, b"db/base.sql", ["keyfile"], None,
                                           pattern(9000, 31), "chunk-sha256"),
    "v2_signed_ed25519_chunk_tags.cof": (2, 1024, 1, 1, "chacha20-poly1305", 4096, b"", ["keyfile"], None,
                                         b"signed, tags only\n", "chunk-tags"),
}


class Results:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def check(self, name: str, fn) -> None:
        try:
            detail = fn()
        except AssertionError as e:
            self.failed += 1
            print(f"FAIL {name}: {e}")
        except Exception as e:  # an unexpected exception is a failure, with its trace
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok   {name}" + (f" ({detail})" if detail else ""))

    def skip(self, name: str, reason: str) -> None:
        self.skipped += 1
        print(f"SKIP {name}: {reason}")


def read_manifest(path: str) -> tuple[int, str, bytes | None]:
    text = open(path, encoding="utf-8").read()
    m = re.search(r"plaintext (\d+) bytes  sha256 ([0-9a-f]{64})", text)
    assert m, f"{path}: no 'plaintext N bytes  sha256 HEX' line"
    s = re.search(r"signed by ed25519 public key ([0-9a-f]{64})", text)
    return int(m.group(1)), m.group(2), bytes.fromhex(s.group(1)) if s else None


def expect_rejected(data: bytes, identities, signers=None, allowed=None) -> str:
    """Asserts that the reader rejects `data`; returns the error class name."""
    try:
        opened = cr.decrypt(data, identities, signers)
    except cr.CofferError as e:
        if allowed and not isinstance(e, allowed):
            raise AssertionError(f"rejected as {type(e).__name__} ({e}), expected one of "
                                 f"{[a.__name__ for a in allowed]}")
        return type(e).__name__
    raise AssertionError(f"accepted ({len(opened.plaintext)} bytes of plaintext)")


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1:]


def layout(data: bytes, identities) -> dict:
    """Offsets of a file's parts, found with the reader's own parser (used to aim the damage)."""
    parsed = cr.parse_file(data)
    opened = cr.decrypt(data, identities)
    header = [h for h in parsed.headers if h.generation == opened.generation][0]
    tsize = cr.trailer_size(header.signed)
    size = None
    if parsed.version == 2:
        size = int(data[10:data.index(b"\n")])
    return dict(parsed=parsed, header=header, payload_start=parsed.payload_start,
                nonce_start=parsed.payload_start - 16, trailer_size=tsize, slot_size=size,
                payload_end=len(data) - tsize, sealed=header.chunk_size + 16, chunks=opened.chunks)


# --------------------------------------------------------------------------------------------
# An independent writer of the deterministic vectors: rebuilds each file from FORMAT.md's fixed
# values and compares it byte for byte (proves the document fixes every byte a writer makes).

def rebuild(data: bytes, spec, identities) -> bytes:
    version, slot_size, slot_index, generation, cipher, chunk_size, obj, types, passphrase, plaintext, digest = spec
    parsed = cr.parse_file(data)
    header = parsed.headers[0]
    lines = [b"cipher " + cipher.encode(), b"chunk-size %d" % chunk_size]
    if obj:
        lines.append(b"object " + cr.b64encode(obj))
    if digest:
        lines.append(b"signed ed25519 " + digest.encode())
    params = list(lines)
    for stanza in header.stanzas:
        if stanza.type == "keyfile":
            wrap = cr.hkdf(K, KEYFILE_SALT, b"coffer/v1 keyfile")
            args = [K_ID.encode(), cr.b64encode(KEYFILE_SALT)]
            body = cr.ChaCha20Poly1305(wrap).encrypt(bytes(12), FILE_KEY, None)
        elif stanza.type == "scrypt":
            wrap = cr.Scrypt(salt=b"coffer/v1 scrypt" + SCRYPT_SALT, length=32, n=1 << SCRYPT_LOG2N, r=8,
                             p=1).derive(passphrase.encode())
            args = [cr.b64encode(SCRYPT_SALT), b"%d" % SCRYPT_LOG2N]
            body = cr.ChaCha20Poly1305(wrap).encrypt(bytes(12), FILE_KEY, None)
        else:  # KMS stanzas: their arguments are not fixed by FORMAT.md; the bodies are
            args = stanza.args
            body = {"aws-kms": bytes([0xE1]) * 96, "vault-transit": bytes([0xE2]) * 92}[stanza.type]
            wrap_id = args[2] if stanza.type == "aws-kms" else args[4]
            expected = (bytes(range(0xD0, 0xE0)) if stanza.type == "aws-kms" else bytes(range(0xF0, 0x100))).hex()
            assert wrap_id.decode() == expected, f"{stanza.type} WRAP_ID {wrap_id!r}, FORMAT.md says {expected}"
        lines.append(b"-> " + b" ".join([stanza.type.encode()] + list(args)))
        text = cr.b64encode(body)
        lines += [text[i:i + 64] for i in range(0, len(text) - len(text) % 64, 64)] + [text[len(text) - len(text) % 64:]]
    okey = cr.object_key(FILE_KEY, obj)
    mac_key = cr.hkdf(okey, b"", b"coffer/v1 header")
    if version == 1:
        text = b"coffer/v1\n" + b"".join(line + b"\n" for line in lines) + b"---"
        head = text + b" " + cr.b64encode(cr.hmac_sha256(mac_key, text)) + b"\n"
    else:
        lead = b"coffer/v2 %d\n" % slot_size
        text = b"generation %d\n" % generation + b"".join(line + b"\n" for line in lines) + b"---"
        slot = text + b" " + cr.b64encode(cr.hmac_sha256(mac_key, lead + text)) + b"\n"
        slot += bytes(slot_size - len(slot))
        head = lead + (slot + bytes(slot_size) if slot_index == 1 else bytes(slot_size) + slot)
    aead = cr.aead_for(cipher, cr.hkdf(okey, PAYLOAD_NONCE, b"coffer/v1 payload " + cipher.encode()))
    pieces = [plaintext[i:i + chunk_size] for i in range(0, len(plaintext), chunk_size)] or [b""]
    payload = b"".join(aead.encrypt(i.to_bytes(11, "big") + (b"\x01" if i == len(pieces) - 1 else b"\x00"),
                                    piece, None) for i, piece in enumerate(pieces))
    out = head + PAYLOAD_NONCE + payload
    if digest:
        fake = cr.HeaderText(cipher, chunk_size, obj, ("ed25519", digest), params, [], b"", b"")
        key_id = bytes.fromhex(ED25519_ID)
        message = cr.signed_message(fake, key_id, PAYLOAD_NONCE, len(plaintext), len(pieces),
                                    cr.payload_digest(payload, chunk_size, len(pieces), digest))
        signature = ed25519.Ed25519PrivateKey.from_private_bytes(ED25519_SEED).sign(message)
        out += key_id + signature + bytes(72)
    return out


# --------------------------------------------------------------------------------------------

def check_vector(results: Results, directory: str, name: str) -> None:
    path = os.path.join(directory, name)
    data = open(path, "rb").read()
    manifest_path = path + ".txt"
    if not os.path.exists(manifest_path):
        results.check(f"{name}: has a .txt manifest", lambda: (_ for _ in ()).throw(AssertionError("missing")))
        return
    length, sha, signer_public = read_manifest(manifest_path)
    spec = VECTORS.get(name)
    signers = [cr.Signer("ed25519", signer_public)] if signer_public else None

    if spec is None:
        # A vector FORMAT.md does not describe (yet): open it with every key FORMAT.md lists and
        # compare with its manifest only; say that the description check is skipped.
        results.skip(f"{name}: plaintext from FORMAT.md's description",
                     "not in the reader's table of FORMAT.md's vectors (add it to VECTORS)")

        def unknown():
            opened = cr.decrypt(data, [cr.KeyFileIdentity(K), cr.PassphraseIdentity(PASS_A),
                                       cr.PassphraseIdentity(PASS_B)], signers)
            assert len(opened.plaintext) == length and hashlib.sha256(opened.plaintext).hexdigest() == sha
            return f"{opened.identity}, manifest hash matches"
        results.check(f"{name}: opens to its manifest's plaintext", unknown)
        return

    version, slot_size, slot_index, generation, cipher, chunk_size, obj, types, passphrase, plaintext, digest = spec
    identities = [("key file", cr.KeyFileIdentity(K))]
    if passphrase:
        identities.append(("passphrase", cr.PassphraseIdentity(passphrase)))
    if "keyfile" not in types:
        identities = identities[1:]
    if signers is None and digest:
        signers = []

    def manifest():
        assert len(plaintext) == length, f"manifest says {length} bytes, FORMAT.md's description {len(plaintext)}"
        assert hashlib.sha256(plaintext).hexdigest() == sha, "manifest hash differs from FORMAT.md's plaintext"
        if digest:
            assert signer_public == ED25519_PUBLIC, "manifest names another signer"
        return "length and SHA-256 match FORMAT.md's description"
    results.check(f"{name}: manifest", manifest)

    for label, identity in identities:
        def opens(identity=identity):
            opened = cr.decrypt(data, [identity], signers or None)
            assert opened.plaintext == plaintext, "plaintext differs from FORMAT.md's description"
            assert opened.file_key == FILE_KEY, "file key differs from FORMAT.md's"
            assert opened.version == version and opened.generation == generation
            assert opened.warnings == [], f"warnings: {opened.warnings}"
            parsed = cr.parse_file(data)
            header = parsed.headers[0]
            assert parsed.payload_nonce == PAYLOAD_NONCE
            assert (header.cipher, header.chunk_size, header.object_name) == (cipher, chunk_size, obj)
            assert [s.type for s in header.stanzas] == types, [s.type for s in header.stanzas]
            expected_chunks = max(1, -(-len(plaintext) // chunk_size))
            assert opened.chunks == expected_chunks
            assert len(data) - parsed.payload_start - cr.trailer_size(header.signed) == \
                len(plaintext) + 16 * expected_chunks, "payload length is not L + 16·max(1, ⌈L/C⌉)"
            if version == 2:
                lead = b"coffer/v2 %d\n" % slot_size
                assert data.startswith(lead)
                start = len(lead) + (slot_index - 1) * slot_size
                assert data[start:start + 11] == b"generation ", f"text not in slot {slot_index}"
                other = len(lead) + (2 - slot_index) * slot_size
                assert data[other:other + slot_size] == bytes(slot_size), "the other slot is not empty"
            if digest:
                assert opened.signature == f"ed25519 {digest} by {ED25519_ID}", opened.signature
            return f"{label}: {len(plaintext)} bytes, {opened.chunks} chunk(s)" + (
                f", signature {digest} verified" if digest else "")
        results.check(f"{name}: opens with the {label} alone", opens)

    every = [identity for _, identity in identities]

    def byte_exact():
        rebuilt = rebuild(data, spec, every)
        if rebuilt != data:
            first = next((i for i, (a, b) in enumerate(zip(rebuilt, data)) if a != b), min(len(rebuilt), len(data)))
            raise AssertionError(f"rebuilt file differs at byte {first} (lengths {len(rebuilt)}, {len(data)})")
        return f"{len(data)} bytes rebuilt from FORMAT.md's values"
    results.check(f"{name}: byte-exact from FORMAT.md's values", byte_exact)

    if digest:
        def signature_only():
            assert cr.verify_only(data, [cr.Signer("ed25519", ED25519_PUBLIC)]).startswith("ed25519")
            other = cr.Signer("ed25519", ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw())
            expect = expect_rejected(data, every, [other], (cr.SignerNotAccepted,))
            return f"verifies without a key; another signer: {expect}"
        results.check(f"{name}: signature without decryption", signature_only)
    else:
        def unsigned():
            signer = cr.Signer("ed25519", ED25519_PUBLIC)
            return expect_rejected(data, every, [signer], (cr.SignerNotAccepted,))
        results.check(f"{name}: refused when a signer is required", unsigned)

    negative_checks(results, name, data, every, signers or None)


def negative_checks(results: Results, name: str, data: bytes, identities, signers) -> None:
    where = layout(data, identities)
    header = where["header"]
    start, nonce_start, end = where["payload_start"], where["nonce_start"], where["payload_end"]
    sealed, chunks, tsize, slot_size = where["sealed"], where["chunks"], where["trailer_size"], where["slot_size"]
    sig = ((cr.SignatureFailed, cr.SignerNotAccepted) if signers else ())

    # Header: every byte of the header text (v1: version line through the MAC line's LF; v2: the
    # lead and the used slot's text), and samples of the padding after the text.
    if slot_size is None:
        text_ranges = [range(0, nonce_start)]
        padding, empty_slot = [], []
    else:
        lead = data.index(b"\n") + 1
        used = [i for i in (0, 1) if data[lead + i * slot_size:lead + (i + 1) * slot_size] != bytes(slot_size)]
        assert len(used) == 1
        slot_start = lead + used[0] * slot_size
        text_end = data.index(b"\n", data.index(b"\n--- ", slot_start) + 1) + 1
        text_ranges = [range(0, lead), range(slot_start, text_end)]
        padding = [text_end, (text_end + slot_start + slot_size) // 2, slot_start + slot_size - 1]
        other = lead + (1 - used[0]) * slot_size
        empty_slot = [other, other + 1, other + slot_size // 2, other + slot_size - 1]
    mac_line = data.index(b"\n--- ", text_ranges[-1].start) + 1
    mac_range = range(mac_line + 4, mac_line + 47)

    def header_flips():
        classes = {}
        for r in text_ranges:
            for i in r:
                if i in mac_range:
                    continue
                for mask in (0x01, 0x80):
                    kind = expect_rejected(flip(data, i, mask), identities, signers)
                    classes[kind] = classes.get(kind, 0) + 1
        return f"{sum(classes.values())} flips rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
    results.check(f"{name}: every header byte flipped is rejected", header_flips)

    def mac_flips():
        for i in mac_range:
            expect_rejected(flip(data, i), identities, signers, (cr.HeaderAuthFailed, cr.MalformedHeader))
        return f"{len(mac_range)} MAC characters"
    results.check(f"{name}: a flipped MAC is rejected", mac_flips)

    if padding:
        def padding_flips():
            for i in padding:
                expect_rejected(flip(data, i), identities, signers, (cr.MalformedHeader,))
            return f"{len(padding)} positions"
        results.check(f"{name}: non-zero bytes after the slot text are rejected", padding_flips)

        def empty_slot_flips():
            # FORMAT.md: a non-empty slot that does not parse is set aside (and reported) as long
            # as the other slot parses, so these open, with a warning.
            for i in empty_slot:
                opened = cr.decrypt(flip(data, i), identities, signers)
                assert opened.warnings and "damaged" in opened.warnings[0], "damaged slot not reported"
            return f"{len(empty_slot)} positions open with a 'damaged slot' warning"
        results.check(f"{name}: garbage in the empty slot is set aside and reported", empty_slot_flips)

    def nonce_flips():
        for i in range(nonce_start, start):
            expect_rejected(flip(data, i), identities, signers, (cr.ChunkAuthFailed,) + sig)
        return "16 nonce bytes"
    results.check(f"{name}: a flipped payload nonce is rejected", nonce_flips)

    def chunk_flips():
        n = 0
        for c in range(chunks):
            lo, hi = start + c * sealed, min(start + (c + 1) * sealed, end)
            for i in sorted({lo, (lo + hi) // 2, hi - 17, hi - 16, hi - 1} & set(range(lo, hi))):
                expect_rejected(flip(data, i), identities, signers, (cr.ChunkAuthFailed,) + sig)
                n += 1
        return f"{n} flips over {chunks} chunk(s), ciphertext and tag"
    results.check(f"{name}: a flipped chunk byte is rejected", chunk_flips)

    if tsize:
        def trailer_flips():
            half = tsize // 2
            for i in range(end, end + half):
                expect_rejected(flip(data, i), identities, signers, sig)
            # The empty slot: a non-empty slot by a key that is not accepted is ignored.
            for i in (end + half, end + half + 8, len(data) - 1):
                cr.decrypt(flip(data, i), identities, signers)
            return f"{half} bytes of the used slot rejected; the empty slot's garbage ignored"
        results.check(f"{name}: a flipped signature trailer is rejected", trailer_flips)

        def trailer_slot_rules():
            half = tsize // 2
            good = data[end:end + half]
            bad = good[:8] + bytes(half - 8)      # the accepted key id, a signature that fails
            other = bytes([1]) * half             # another key id
            accept = {"good + accepted key id with a bad signature": good + bad,
                      "bad signature + good": bad + good, "good + another key id": good + other,
                      "another key id + good": other + good}
            for label, trailer in accept.items():
                cr.decrypt(data[:end] + trailer, identities, signers)
            expect_rejected(data[:end] + bad + bytes(half), identities, signers, (cr.SignatureFailed,))
            expect_rejected(data[:end] + other + bytes(half), identities, signers, (cr.SignerNotAccepted,))
            expect_rejected(data[:end] + bytes(tsize), identities, signers, (cr.SignerNotAccepted,))
            return "one verifying slot by an accepted signer suffices; others are ignored"
        results.check(f"{name}: trailer slot rules", trailer_slot_rules)

        def signature_only_flips():
            # Without a decryption key, the signature alone must catch what its digest covers.
            digest = header.signed[1]
            for c in range(chunks):
                lo, hi = start + c * sealed, min(start + (c + 1) * sealed, end)
                positions = [hi - 1] + ([lo] if digest == "chunk-sha256" else [])
                for i in positions:
                    try:
                        cr.verify_only(flip(data, i), signers)
                    except (cr.SignatureFailed, cr.SignerNotAccepted):
                        continue
                    raise AssertionError(f"verify without key accepted a flip at {i}")
            for i in range(nonce_start, start):
                try:
                    cr.verify_only(flip(data, i), signers)
                except (cr.SignatureFailed, cr.SignerNotAccepted):
                    continue
                raise AssertionError("verify without key accepted a flipped nonce")
            return f"digest {digest}: flips the digest covers are caught without decrypting"
        results.check(f"{name}: signature-only check catches payload flips", signature_only_flips)

    def truncation_classes(p: int):
        """What FORMAT.md's table says a file cut to p bytes is."""
        if p < nonce_start:
            return None   # inside the header: malformed, not a Coffer file, ...
        if p < start:
            return (cr.Truncated,)   # missing or short payload nonce
        payload = p - tsize - start
        if payload <= 0:
            return (cr.Truncated,)
        k = payload % sealed
        impossible = k in range(1, 16) or (k == 16 and payload > sealed)
        if impossible:
            return (cr.Truncated,)   # a length no plaintext produces
        if signers:
            return (cr.SignatureFailed, cr.SignerNotAccepted)
        return (cr.Truncated,) if k == 0 else (cr.ChunkAuthFailed,)   # final chunk missing / cut mid-chunk

    def truncations():
        points = set(range(0, min(len(data), 64)))
        points |= {nonce_start - 1, nonce_start, nonce_start + 8, start - 1, start, start + 1, start + 15, start + 16}
        for c in range(1, chunks + 1):
            b = start + c * sealed
            points |= {b - 1, b, b + 1, b + 15, b + 16, b + 17}
        points |= set(range(max(0, len(data) - 200), len(data)))
        if tsize:
            points |= {end - 1, end, end + 1, end + tsize // 2, len(data) - tsize // 2}
        points = sorted(p for p in points if 0 <= p < len(data))
        classes = {}
        for p in points:
            kind = expect_rejected(data[:p], identities, signers, truncation_classes(p))
            classes[kind] = classes.get(kind, 0) + 1
        return f"{len(points)} lengths rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
    results.check(f"{name}: truncations are rejected", truncations)

    def extensions():
        for extra in (b"\x00", bytes(16), bytes(sealed), os.urandom(sealed + 16)):
            expect_rejected(data + extra, identities, signers)
        return "1, 16, C+16 and C+32 bytes appended"
    results.check(f"{name}: trailing data is rejected", extensions)

    if chunks > 1:
        def reorder():
            pieces = [data[start + i * sealed:min(start + (i + 1) * sealed, end)] for i in range(chunks)]
            head, tail = data[:start], data[end:]
            variants = [pieces[1:2] + pieces[:1] + pieces[2:],   # first two swapped
                        pieces[:1] + pieces,                      # first duplicated
                        pieces[1:],                               # first removed
                        pieces[:-2] + pieces[-1:]]                # second-to-last removed
            for v in variants:
                expect_rejected(head + b"".join(v) + tail, identities, signers)
            return "swapped, duplicated, removed chunks"
        results.check(f"{name}: reordered chunks are rejected", reorder)


def refusal_checks(results: Results, directory: str) -> None:
    path = os.path.join(directory, "passphrase_only_chacha.cof")
    if not os.path.exists(path):
        results.skip("scrypt work factor 23 refused", "passphrase_only_chacha.cof not present")
        return
    data = open(path, "rb").read()

    def high_work_factor():
        needle = cr.b64encode(SCRYPT_SALT) + b" 10\n"
        assert needle in data
        start = time.monotonic()
        expect_rejected(data.replace(needle, cr.b64encode(SCRYPT_SALT) + b" 23\n"),
                        [cr.PassphraseIdentity(PASS_B)], None, (cr.Refused,))
        assert time.monotonic() - start < 1, "scrypt ran before the refusal"
        for bad in (b" 010\n", b" +9\n", b" 0x10\n"):
            expect_rejected(data.replace(needle, cr.b64encode(SCRYPT_SALT) + bad),
                            [cr.PassphraseIdentity(PASS_B)], None, (cr.MalformedStanza,))
        return "23 refused before scrypt; 010, +9, 0x10 malformed"
    results.check("passphrase_only_chacha.cof: scrypt work factor checks", high_work_factor)

    def stanza_count():
        hello = open(os.path.join(directory, "keyfile_aes_hello.cof"), "rb").read()
        mac = hello.index(b"\n--- ") + 1
        for extra, expected in ((127, cr.HeaderAuthFailed), (128, cr.MalformedHeader)):
            damaged = hello[:mac] + b"-> unknown-type\n\n" * extra + hello[mac:]
            expect_rejected(damaged, [cr.KeyFileIdentity(K)], None, (expected,))
        return "128 stanzas parse (then the MAC fails); 129 are too many"
    results.check("stanzas per header are limited to 128", stanza_count)

    def kms_stanzas():
        # The KMS stanzas of this vector cannot be unwrapped without the key services: say so, and
        # check their grammar and FORMAT.md's fixed values, and how the grammar rules apply.
        kms = open(os.path.join(directory, "v2_keyfile_and_kms_stanzas.cof"), "rb").read()
        header = cr.parse_file(kms).headers[0]
        for stanza in header.stanzas:
            cr.KMSGrammarIdentity().unwrap(stanza)
        expect_rejected(kms, [cr.KMSGrammarIdentity()], None, (cr.NoMatchingKey,))
        lead = kms[:kms.index(b"\n") + 1]
        size = int(lead[10:-1])
        slot = kms[len(lead) + size:len(lead) + 2 * size]
        text = slot[:slot.index(b"\n--- ") + 4]
        mac_key = cr.hkdf(cr.object_key(FILE_KEY, b"base/16384/2619"), b"", b"coffer/v1 header")
        wrap_id = bytes(range(0xD0, 0xE0)).hex().encode()
        for label, bad in (("upper-case WRAP_ID", text.replace(wrap_id, wrap_id.upper())),
                           ("extra arguments", text.replace(wrap_id, wrap_id + b" x y")),
                           ("KEY_ARN not an ARN", text.replace(b" arn:", b" nra:"))):
            new = bad + b" " + cr.b64encode(cr.hmac_sha256(mac_key, lead + bad)) + b"\n"
            variant = kms[:len(lead) + size] + new + bytes(size - len(new)) + kms[len(lead) + 2 * size:]
            try:
                cr.KMSGrammarIdentity().unwrap([s for s in cr.parse_file(variant).headers[0].stanzas
                                                if s.type == "aws-kms"][0])
                raise AssertionError(f"{label}: KMS grammar accepted")
            except cr.MalformedStanza:
                pass
            # A reader without KMS keys skips KMS stanzas (coffer decrypt --key-file does too).
            assert cr.decrypt(variant, [cr.KeyFileIdentity(K)]).plaintext == b"KMS stanzas beside a key file\n"
        return "grammar and WRAP_IDs checked; malformed ones are errors only for a reader that tries them"
    results.check("v2_keyfile_and_kms_stanzas.cof: KMS stanza grammar", kms_stanzas)
    results.skip("aws-kms and vault-transit unwrapping", "needs the key services (the CLI tests run them)")

    def wrong_keys():
        expect_rejected(data, [cr.PassphraseIdentity("wrong")], None, (cr.NoMatchingKey,))
        hello = open(os.path.join(directory, "keyfile_aes_hello.cof"), "rb").read()
        expect_rejected(hello, [cr.KeyFileIdentity(bytes(32))], None, (cr.NoMatchingKey,))
        return "wrong passphrase, wrong key file: no matching key"
    results.check("wrong keys find no match", wrong_keys)


def _slot(lead: bytes, slot_size: int, generation: int, params: list[bytes], stanzas: list[bytes],
          mac_key: bytes, spoil_mac: bool = False) -> bytes:
    text = b"generation %d\n" % generation + b"".join(line + b"\n" for line in params + stanzas) + b"---"
    mac = cr.hmac_sha256(mac_key, lead + text)
    if spoil_mac:
        mac = bytes([mac[0] ^ 1]) + mac[1:]
    slot = text + b" " + cr.b64encode(mac) + b"\n"
    return slot + bytes(slot_size - len(slot))


def slot_checks(results: Results, directory: str) -> None:
    """FORMAT.md's rules for two valid v2 slots, on v2_rewrapped_slot2_generation7.cof with a
    slot 1 written here (the file key and object name are FORMAT.md's fixed values)."""
    name = "v2_rewrapped_slot2_generation7.cof"
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        results.skip("two-slot rules", f"{name} not present")
        return
    data = open(path, "rb").read()
    lead = data[:data.index(b"\n") + 1]
    size = int(lead[10:-1])
    slot2 = data[len(lead) + size:len(lead) + 2 * size]
    rest = data[len(lead) + 2 * size:]
    params = [b"cipher chacha20-poly1305", b"chunk-size 4096", b"object " + cr.b64encode(b"db/ibdata1")]
    mac_key = cr.hkdf(cr.object_key(FILE_KEY, b"db/ibdata1"), b"", b"coffer/v1 header")
    key_file, passphrase = cr.KeyFileIdentity(K), cr.PassphraseIdentity(PASS_A)
    scrypt_text = [line for line in slot2.split(b"\n") if line.startswith(b"-> scrypt ")][0]
    scrypt_body = slot2.split(scrypt_text + b"\n")[1].split(b"\n")[0]
    assert len(scrypt_body) == 64   # 48 bytes: a full line, then the empty final line
    only_passphrase = [scrypt_text, scrypt_body, b""]

    def with_slot1(slot1: bytes) -> bytes:
        return lead + slot1 + slot2 + rest

    def newest_first():
        newer = with_slot1(_slot(lead, size, 8, params, only_passphrase, mac_key))
        opened = cr.decrypt(newer, [passphrase])
        assert opened.generation == 8 and opened.plaintext == pattern(5000, 13), opened.generation
        assert opened.warnings == [], opened.warnings
        opened = cr.decrypt(newer, [key_file])   # generation 8 has no keyfile stanza: falls back to 7
        assert opened.generation == 7 and opened.plaintext == pattern(5000, 13), opened.generation
        return "generation 8 tried first; 7 when no key opens 8"
    results.check(f"{name}: the newest valid slot first, then the other", newest_first)

    def bad_mac_falls_back():
        spoiled = with_slot1(_slot(lead, size, 8, params, only_passphrase, mac_key, spoil_mac=True))
        opened = cr.decrypt(spoiled, [passphrase])
        assert opened.generation == 7, opened.generation
        return "a slot whose MAC fails gives way to the other"
    results.check(f"{name}: a newer slot with a bad MAC falls back", bad_mac_falls_back)

    def same_generation():
        twin = with_slot1(_slot(lead, size, 7, params, only_passphrase, mac_key))
        expect_rejected(twin, [passphrase], None, (cr.MalformedHeader,))
        return "two slots with generation 7: malformed"
    results.check(f"{name}: two slots with one generation are rejected", same_generation)

    def damaged_newer():
        slot1 = bytearray(_slot(lead, size, 8, params, only_passphrase, mac_key))
        slot1[-1] = 0x41   # text, then a non-zero byte in its padding: damaged, set aside, reported
        opened = cr.decrypt(with_slot1(bytes(slot1)), [passphrase])
        assert opened.generation == 7 and opened.warnings and "damaged" in opened.warnings[0]
        return "damaged slot 1 set aside with a warning"
    results.check(f"{name}: a damaged newer slot is set aside and reported", damaged_newer)

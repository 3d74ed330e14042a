#!/usr/bin/env python3
"""An independent reader of the Coffer file format (versions 1 and 2).

Written from docs/FORMAT.md alone, without the Swift sources, so that the test suite's vectors
and the Coffer binary's output are checked against the document rather than against the code
that made them. Primitives come from the `cryptography` package and the standard library
(hashlib, hmac); this file only composes them as FORMAT.md says.

Usage:
  coffer_reader.py --check-vectors DIR [--coffer BIN]
      Opens every NAME.cof under DIR with the keys FORMAT.md lists for the vectors, compares the
      plaintext with the one FORMAT.md describes and with the SHA-256 in NAME.cof.txt, verifies
      signature trailers, and checks that damaged and truncated copies are rejected. With
      --coffer, also checks files that the built `coffer` binary writes (public-key stanzas,
      signatures) into a temporary directory. Ends with the line "N passed, N failed".
  coffer_reader.py decrypt FILE (--key-hex HEX | --passphrase-env VAR) [--signed-by-hex HEX]
      Writes the plaintext to standard output.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sys
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt



def _post_quantum(module: str, key_class: str):
    """The module when this cryptography build has the algorithm (48 or later, with a backend
    that implements it), else None: the checks then report a skip with the reason."""
    try:
        imported = __import__(f"cryptography.hazmat.primitives.asymmetric.{module}", fromlist=[key_class])
        getattr(imported, key_class).generate()
        return imported
    except Exception:
        return None


_mlkem = _post_quantum("mlkem", "MLKEM768PrivateKey")
_mldsa = _post_quantum("mldsa", "MLDSA65PrivateKey")


# --------------------------------------------------------------------------------------------
# Errors: one class per row of FORMAT.md's "What a reader must reject".

class CofferError(Exception):
    kind = "error"


class NotCoffer(CofferError):
    kind = "not a Coffer file"


class UnsupportedVersion(CofferError):
    kind = "unsupported version"


class MalformedHeader(CofferError):
    kind = "malformed header"


class NoMatchingKey(CofferError):
    kind = "no matching key"


class MalformedStanza(CofferError):
    kind = "malformed stanza"


class HeaderAuthFailed(CofferError):
    kind = "header authentication failed"


class Truncated(CofferError):
    kind = "truncated"


class ChunkAuthFailed(CofferError):
    kind = "chunk authentication failed"


class TrailingData(CofferError):
    kind = "trailing data"


class SignerNotAccepted(CofferError):
    kind = "signer not accepted"


class SignatureFailed(CofferError):
    kind = "signature check failed"


class Refused(CofferError):
    kind = "refused"


# --------------------------------------------------------------------------------------------
# Conventions

B64_ALPHABET = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
HEADER_LIMIT = 262_144
MAX_STANZAS = 128
CIPHERS = ("aes-256-gcm", "chacha20-poly1305")


def b64decode_strict(text: bytes, what: str, error=MalformedHeader) -> bytes:
    """RFC 4648 §4, no padding, canonical only (FORMAT.md, Conventions)."""
    if any(c not in B64_ALPHABET for c in text):
        raise error(f"{what}: not unpadded base64")
    if len(text) % 4 == 1:
        raise error(f"{what}: impossible base64 length")
    raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    if base64.b64encode(raw).rstrip(b"=") != text:
        raise error(f"{what}: non-canonical base64")
    return raw


def b64encode(raw: bytes) -> bytes:
    return base64.b64encode(raw).rstrip(b"=")


def parse_decimal(text: bytes, what: str, error=MalformedHeader) -> int:
    if not re.fullmatch(rb"0|[1-9][0-9]*", text):
        raise error(f"{what}: not a canonical decimal: {text!r}")
    return int(text)


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    # "salt: empty" is a zero-length salt; HMAC pads it to the block size like the RFC's default.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def chacha_open(key: bytes, body: bytes) -> bytes:
    return ChaCha20Poly1305(key).decrypt(bytes(12), body, None)


def public_key_id(kind: str, public: bytes) -> str:
    return hashlib.sha256(b"coffer/v1 public key id\x00" + kind.encode() + b"\x00" + public).digest()[:8].hex()


# --------------------------------------------------------------------------------------------
# Identities: each knows which stanza types it opens and how.

class Identity:
    label = "identity"

    def unwrap(self, stanza: "Stanza") -> bytes | None:
        """The file key, None when this stanza is not for this identity, or raises."""
        raise NotImplementedError


class KeyFileIdentity(Identity):
    def __init__(self, key: bytes):
        assert len(key) == 32
        self.key = key
        self.key_id = hmac_sha256(key, b"coffer/v1 key id")[:8].hex()
        self.label = f"key file {self.key_id}"

    def unwrap(self, stanza):
        if stanza.type != "keyfile":
            return None
        if len(stanza.args) != 2 or len(stanza.body) != 48:
            raise MalformedStanza("keyfile stanza: needs KEYID SALT and a 48-byte body")
        key_id, salt_text = stanza.args
        if not re.fullmatch(rb"[0-9a-f]{16}", key_id):
            raise MalformedStanza("keyfile stanza: KEYID is not 16 lower-case hex digits")
        salt = b64decode_strict(salt_text, "keyfile salt", MalformedStanza)
        if len(salt) != 16:
            raise MalformedStanza("keyfile stanza: salt is not 16 bytes")
        if key_id.decode() != self.key_id:
            return None
        try:
            return chacha_open(hkdf(self.key, salt, b"coffer/v1 keyfile"), stanza.body)
        except InvalidTag:
            raise MalformedStanza("keyfile stanza: key id matches but the body does not authenticate")


class PassphraseIdentity(Identity):
    def __init__(self, passphrase: str):
        self.passphrase = passphrase.encode("utf-8")
        self.label = "passphrase"

    def unwrap(self, stanza):
        if stanza.type != "scrypt":
            return None
        if len(stanza.args) != 2 or len(stanza.body) != 48:
            raise MalformedStanza("scrypt stanza: needs SALT LOG2N and a 48-byte body")
        salt = b64decode_strict(stanza.args[0], "scrypt salt", MalformedStanza)
        if len(salt) != 16:
            raise MalformedStanza("scrypt stanza: salt is not 16 bytes")
        log2n = parse_decimal(stanza.args[1], "scrypt work factor", MalformedStanza)
        if log2n > 22:
            raise Refused(f"scrypt work factor {log2n} above 22")
        if log2n < 1:
            raise MalformedStanza("scrypt work factor below 1")
        wrap = Scrypt(salt=b"coffer/v1 scrypt" + salt, length=32, n=1 << log2n, r=8, p=1).derive(self.passphrase)
        try:
            return chacha_open(wrap, stanza.body)
        except InvalidTag:
            return None  # a wrong passphrase and an altered stanza are both "no match"


class X25519Identity(Identity):
    def __init__(self, private: x25519.X25519PrivateKey):
        self.private = private
        self.public = private.public_key().public_bytes_raw()
        self.key_id = public_key_id("X25519", self.public)
        self.label = f"X25519 {self.key_id}"

    def unwrap(self, stanza):
        if stanza.type != "X25519":
            return None
        if len(stanza.args) not in (1, 2) or len(stanza.body) != 48:
            raise MalformedStanza("X25519 stanza: needs SHARE [KEYID] and a 48-byte body")
        if len(stanza.args) == 2 and stanza.args[1].decode() != self.key_id:
            return None
        share = b64decode_strict(stanza.args[0], "X25519 share", MalformedStanza)
        if len(share) != 32:
            raise MalformedStanza("X25519 share is not 32 bytes")
        shared = self.private.exchange(x25519.X25519PublicKey.from_public_bytes(share))
        if shared == bytes(32):  # cryptography already refuses this; FORMAT.md requires it
            raise MalformedStanza("X25519 shared secret is all zero")
        wrap = hkdf(shared, share + self.public, b"age-encryption.org/v1/X25519")
        try:
            return chacha_open(wrap, stanza.body)
        except InvalidTag:
            if len(stanza.args) == 2:
                raise MalformedStanza("X25519 stanza: key id matches but the body does not authenticate")
            return None


class RSAIdentity(Identity):
    def __init__(self, private: rsa.RSAPrivateKey):
        if private.key_size < 2048:
            raise Refused("RSA keys under 2048 bits are refused")
        self.private = private
        spki = private.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = public_key_id("rsa-oaep", spki)
        self.label = f"rsa-oaep {self.key_id}"

    def unwrap(self, stanza):
        if stanza.type != "rsa-oaep":
            return None
        if len(stanza.args) not in (0, 1):
            raise MalformedStanza("rsa-oaep stanza: needs [KEYID]")
        if stanza.args and stanza.args[0].decode() != self.key_id:
            return None
        if len(stanza.body) != self.private.key_size // 8:
            raise MalformedStanza("rsa-oaep body is not the modulus size")
        try:
            key = self.private.decrypt(stanza.body, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                                  algorithm=hashes.SHA256(), label=None))
        except ValueError:
            if stanza.args:
                raise MalformedStanza("rsa-oaep stanza: key id matches but OAEP fails")
            return None
        if len(key) != 32:
            raise MalformedStanza("rsa-oaep stanza: the unwrapped file key is not 32 bytes")
        return key


# X-Wing (draft-connolly-cfrg-xwing-kem) and HPKE base mode (RFC 9180), composed from ML-KEM-768,
# X25519, SHAKE256, SHA3-256, HKDF-SHA256 and ChaCha20-Poly1305.
XWING_LABEL = b"\\.//^\\"
HPKE_SUITE = b"HPKE" + (0x647A).to_bytes(2, "big") + (0x0001).to_bytes(2, "big") + (0x0003).to_bytes(2, "big")


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac_sha256(salt, b"HPKE-v1" + HPKE_SUITE + label + ikm)  # HKDF-Extract


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    full = length.to_bytes(2, "big") + b"HPKE-v1" + HPKE_SUITE + label + info
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=full).derive(prk)


class XWingIdentity(Identity):
    def __init__(self, seed: bytes):
        if _mlkem is None:
            raise NotImplementedError("this cryptography build has no ML-KEM-768")
        assert len(seed) == 32
        expanded = hashlib.shake_256(seed).digest(96)
        self.mlkem = _mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self.x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[64:96])
        self.pk_x = self.x25519.public_key().public_bytes_raw()
        self.public = self.mlkem.public_key().public_bytes_raw() + self.pk_x
        assert len(self.public) == 1216
        self.key_id = public_key_id("mlkem768x25519", self.public)
        self.label = f"mlkem768x25519 {self.key_id}"

    def unwrap(self, stanza):
        if stanza.type != "mlkem768x25519":
            return None
        if len(stanza.args) not in (1, 2) or len(stanza.body) != 48:
            raise MalformedStanza("mlkem768x25519 stanza: needs ENC [KEYID] and a 48-byte body")
        if len(stanza.args) == 2 and stanza.args[1].decode() != self.key_id:
            return None
        enc = b64decode_strict(stanza.args[0], "mlkem768x25519 ENC", MalformedStanza)
        if len(enc) != 1120:
            raise MalformedStanza("mlkem768x25519 ENC is not 1,120 bytes")
        ct_m, ct_x = enc[:1088], enc[1088:]
        ss_m = self.mlkem.decapsulate(ct_m)
        ss_x = self.x25519.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        shared = hashlib.sha3_256(ss_m + ss_x + ct_x + self.pk_x + XWING_LABEL).digest()
        info = b"age-encryption.org/mlkem768x25519"
        context = (b"\x00" + _labeled_extract(b"", b"psk_id_hash", b"")
                   + _labeled_extract(b"", b"info_hash", info))
        secret = _labeled_extract(shared, b"secret", b"")
        key = _labeled_expand(secret, b"key", context, 32)
        nonce = _labeled_expand(secret, b"base_nonce", context, 12)
        try:
            return ChaCha20Poly1305(key).decrypt(nonce, stanza.body, b"")
        except InvalidTag:
            if len(stanza.args) == 2:
                raise MalformedStanza("mlkem768x25519 stanza: key id matches but HPKE open fails")
            return None


# --------------------------------------------------------------------------------------------
# Header parsing

@dataclass
class Stanza:
    type: str
    args: list[bytes]
    body: bytes


@dataclass
class HeaderText:
    """One parsed header: v1's whole header or one v2 slot's text."""
    cipher: str
    chunk_size: int
    object_name: bytes
    signed: tuple[str, str] | None
    param_lines: list[bytes]          # cipher, chunk-size, [object], [signed], each without LF
    stanzas: list[Stanza]
    mac: bytes
    mac_message: bytes
    generation: int | None = None


KMS_TYPES = ("aws-kms", "vault-transit")


def _check_kms_stanza(stanza: Stanza) -> None:
    """Grammar of KMS stanzas (FORMAT.md, KMS stanzas). They cannot be opened without the service."""
    n = len(stanza.args)
    if stanza.type == "aws-kms":
        if n not in (3, 4):
            raise MalformedStanza("aws-kms: wrong argument count")
        wrap_id, arn = stanza.args[2], stanza.args[1]
        if not arn.startswith(b"arn:"):
            raise MalformedStanza("aws-kms: KEY_ARN is not an ARN")
    else:
        if n not in (5, 6):
            raise MalformedStanza("vault-transit: wrong argument count")
        wrap_id = stanza.args[4]
        parse_decimal(stanza.args[3], "vault-transit VERSION", MalformedStanza)
        if stanza.args[3] == b"0":
            raise MalformedStanza("vault-transit: VERSION 0")
    if not re.fullmatch(rb"[0-9a-f]{32}", wrap_id):
        raise MalformedStanza(f"{stanza.type}: WRAP_ID is not 32 lower-case hex digits")
    if not stanza.body:
        raise MalformedStanza(f"{stanza.type}: empty body")


def parse_header_lines(text: bytes, first_lines: int, allow_signed: bool) -> tuple[HeaderText, int]:
    """Parses parameter lines, stanzas and the MAC line from `text`, which starts right after
    the version line (v1) or the lead line (v2, starting at "generation"). Returns the header and
    the length consumed (through the MAC line's LF)."""
    pos = 0

    def next_line() -> bytes:
        nonlocal pos
        end = text.find(b"\n", pos)
        if end < 0:
            raise MalformedHeader("header ends without LF (or without a MAC line)")
        line = text[pos:end]
        for c in line:
            if c == 0x0D:
                raise MalformedHeader("CR in header")
            if c < 0x20 or c > 0x7E:
                raise MalformedHeader(f"non-printable byte {c:#04x} in header")
        pos = end + 1
        return line

    generation = None
    if first_lines:  # v2: "generation G"
        line = next_line()
        if not line.startswith(b"generation "):
            raise MalformedHeader("slot text does not start with a generation line")
        generation = parse_decimal(line[len(b"generation "):], "generation")
        if generation < 1:
            raise MalformedHeader("generation 0")

    params = []
    line = next_line()
    if not line.startswith(b"cipher "):
        raise MalformedHeader("expected a cipher line")
    cipher = line[7:].decode()
    if cipher not in CIPHERS:
        raise MalformedHeader(f"unknown cipher {cipher!r}")
    params.append(line)
    line = next_line()
    if not line.startswith(b"chunk-size "):
        raise MalformedHeader("expected a chunk-size line")
    chunk_size = parse_decimal(line[11:], "chunk-size")
    if not 4096 <= chunk_size <= 16_777_216:
        raise MalformedHeader("chunk-size out of range")
    params.append(line)
    line = next_line()
    object_name = b""
    if line.startswith(b"object "):
        object_name = b64decode_strict(line[7:], "object name")
        if not 1 <= len(object_name) <= 4096:
            raise MalformedHeader("object name length out of range")
        params.append(line)
        line = next_line()
    signed = None
    if line.startswith(b"signed "):
        if not allow_signed:
            raise MalformedHeader("a version-1 header cannot carry a signed line")
        parts = line.split(b" ")
        if len(parts) != 3 or parts[1] not in (b"ed25519", b"ml-dsa-65") or \
                parts[2] not in (b"chunk-sha256", b"chunk-tags"):
            raise MalformedHeader(f"bad signed line {line!r}")
        signed = (parts[1].decode(), parts[2].decode())
        params.append(line)
        line = next_line()

    stanzas = []
    while line.startswith(b"-> ") or line == b"->":
        args = line[3:].split(b" ")
        if line == b"->" or any(a == b"" for a in args):
            raise MalformedHeader("empty stanza argument")
        body_text = b""
        while True:
            body_line = next_line()
            if any(c not in B64_ALPHABET for c in body_line):
                raise MalformedHeader("stanza body line is not base64 (missing final body line?)")
            body_text += body_line
            if len(body_line) > 64:
                raise MalformedHeader("stanza body line longer than 64 characters")
            if len(body_line) < 64:
                break
        stanza = Stanza(args[0].decode(), args[1:], b64decode_strict(body_text, "stanza body"))
        stanzas.append(stanza)
        if len(stanzas) > MAX_STANZAS:
            raise MalformedHeader("too many stanzas")
        line = next_line()
    if not stanzas:
        raise MalformedHeader("no stanza (or an unknown parameter line, or parameters out of order)")
    if not line.startswith(b"--- "):
        raise MalformedHeader(f"expected the MAC line, found {line[:20]!r}")
    mac_text = line[4:]
    if len(mac_text) != 43:
        raise MalformedHeader("MAC is not 43 base64 characters")
    mac = b64decode_strict(mac_text, "MAC")
    mac_end = pos - 1 - 44  # index just after "---"
    header = HeaderText(cipher, chunk_size, object_name, signed, params, stanzas, mac,
                        mac_message=text[:mac_end], generation=generation)
    return header, pos


class KMSGrammarIdentity(Identity):
    """Stands for a reader with KMS access: it checks a KMS stanza's grammar (a malformed one is an
    error) but cannot unwrap it here, so it never opens one. A reader without KMS keys skips KMS
    stanzas like any stanza it has no key for."""
    label = "KMS grammar"

    def unwrap(self, stanza):
        if stanza.type in KMS_TYPES:
            _check_kms_stanza(stanza)
        return None


@dataclass
class ParsedFile:
    version: int
    headers: list[HeaderText]          # v2: valid slots, highest generation first
    mac_prefix: bytes                  # v1: b"coffer/v1\n"... (the MAC message starts with it); v2: the lead
    payload_nonce: bytes
    payload_start: int
    warnings: list[str] = field(default_factory=list)


def parse_file(data: bytes) -> ParsedFile:
    first_end = data.find(b"\n", 0, 300)
    first = data[:first_end] if first_end >= 0 else data[:300]
    if first == b"coffer/v1":
        if first_end > HEADER_LIMIT:
            raise MalformedHeader("header too large")
        body = data[first_end + 1:HEADER_LIMIT]
        try:
            header, used = parse_header_lines(body, 0, allow_signed=False)
        except MalformedHeader as e:
            if len(data) < HEADER_LIMIT and b"\n--- " not in data:
                raise MalformedHeader(f"header incomplete: {e}")
            raise
        header.mac_message = b"coffer/v1\n" + header.mac_message
        payload_start = first_end + 1 + used
        nonce = data[payload_start:payload_start + 16]
        if len(nonce) < 16:
            raise Truncated("missing or short payload nonce")
        return ParsedFile(1, [header], b"", nonce, payload_start + 16)
    if first.startswith(b"coffer/v2 "):
        size = parse_decimal(first[10:], "v2 slot size")
        if not 512 <= size <= 262_144:
            raise MalformedHeader("v2 slot size out of range")
        lead = data[:first_end + 1]
        slots_start = len(lead)
        if len(data) < slots_start + 2 * size:
            raise Truncated("file shorter than its two header slots")
        valid, warnings = [], []
        for index in (0, 1):
            slot = data[slots_start + index * size:slots_start + (index + 1) * size]
            if slot == bytes(size):
                continue
            try:
                header, used = parse_header_lines(slot, 1, allow_signed=True)
                if slot[used:] != bytes(size - used):
                    raise MalformedHeader("bytes other than zeros after the slot's text")
            except MalformedHeader as e:
                warnings.append(f"slot {index + 1} damaged: {e}")
                continue
            header.mac_message = lead + header.mac_message
            valid.append(header)
        if not valid:
            raise MalformedHeader("both header slots empty or damaged: " + "; ".join(warnings))
        if len(valid) == 2 and valid[0].generation == valid[1].generation:
            raise MalformedHeader("two slots with the same generation")
        valid.sort(key=lambda h: -h.generation)
        payload_start = slots_start + 2 * size
        nonce = data[payload_start:payload_start + 16]
        if len(nonce) < 16:
            raise Truncated("missing or short payload nonce")
        return ParsedFile(2, valid, lead, nonce, payload_start + 16, warnings)
    if first.startswith(b"coffer/"):
        raise UnsupportedVersion(f"unsupported version {first[:40]!r}")
    raise NotCoffer("not a Coffer file")


# --------------------------------------------------------------------------------------------
# Key schedule, MAC, payload

def object_key(file_key: bytes, object_name: bytes) -> bytes:
    return hkdf(file_key, b"", b"coffer/v1 object\x00" + object_name)


def open_header(header: HeaderText, identities: list[Identity]) -> tuple[bytes, bytes, str]:
    """Finds a stanza an identity opens and verifies the MAC. Returns (file key, object key,
    identity label)."""
    attempts = []
    for stanza in header.stanzas:
        for identity in identities:
            file_key = identity.unwrap(stanza)
            if file_key is None:
                continue
            if len(file_key) != 32:
                raise MalformedStanza("unwrapped file key is not 32 bytes")
            okey = object_key(file_key, header.object_name)
            mac = hmac_sha256(hkdf(okey, b"", b"coffer/v1 header"), header.mac_message)
            if not hmac.compare_digest(mac, header.mac):
                raise HeaderAuthFailed("header MAC mismatch")
            return file_key, okey, identity.label
        attempts.append(stanza.type)
    raise NoMatchingKey(f"no stanza opens with the keys given (stanzas: {', '.join(attempts)})")


def aead_for(cipher: str, key: bytes):
    return AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)


def chunk_layout(payload_len: int, chunk_size: int) -> tuple[int, int]:
    """(number of chunks, plaintext length) for a payload of this length, or raises."""
    sealed = chunk_size + 16
    if payload_len == 0:
        raise Truncated("no payload")
    count = -(-payload_len // sealed)
    last = payload_len - (count - 1) * sealed
    if last < 16:
        raise Truncated(f"impossible payload length {payload_len} (final piece of {last} bytes)")
    if last == 16 and count > 1:
        raise Truncated(f"impossible payload length {payload_len} (empty final chunk after others)")
    return count, payload_len - 16 * count


def trailer_size(signed: tuple[str, str] | None) -> int:
    if signed is None:
        return 0
    return 2 * (8 + (64 if signed[0] == "ed25519" else 3309))


def payload_digest(payload: bytes, chunk_size: int, count: int, digest: str) -> bytes:
    sealed = chunk_size + 16
    outer = hashlib.sha256()
    for i in range(count):
        chunk = payload[i * sealed:(i + 1) * sealed]
        outer.update(hashlib.sha256(chunk).digest() if digest == "chunk-sha256" else chunk[-16:])
    return outer.digest()


@dataclass
class Signer:
    algorithm: str       # "ed25519" or "ml-dsa-65"
    public: bytes

    @property
    def key_id(self) -> bytes:
        return bytes.fromhex(public_key_id(self.algorithm, self.public))

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            if self.algorithm == "ed25519":
                ed25519.Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
            else:
                if _mldsa is None:
                    raise NotImplementedError("this cryptography build has no ML-DSA-65")
                _mldsa.MLDSA65PublicKey.from_public_bytes(self.public).verify(signature, message)
            return True
        except InvalidSignature:
            return False


def signed_message(header: HeaderText, key_id: bytes, nonce: bytes, plaintext_len: int, chunks: int,
                   digest: bytes) -> bytes:
    lines = [b"coffer/v2 signature", b"signer " + key_id.hex().encode()] + header.param_lines + [
        b"nonce " + b64encode(nonce), b"plaintext-length %d" % plaintext_len, b"chunks %d" % chunks,
        b"digest " + b64encode(digest)]
    return b"".join(line + b"\n" for line in lines)


def check_signature(data: bytes, parsed: ParsedFile, header: HeaderText, signers: list[Signer]) -> str:
    """Checks the trailer against the accepted signers (any one); returns a description."""
    if header.signed is None:
        raise SignerNotAccepted("the file is unsigned")
    algorithm, digest_name = header.signed
    size = trailer_size(header.signed)
    slot_size = size // 2
    payload_end = len(data) - size
    if payload_end < parsed.payload_start:
        raise Truncated("file shorter than its signature trailer")
    payload = data[parsed.payload_start:payload_end]
    count, plaintext_len = chunk_layout(len(payload), header.chunk_size)
    digest = payload_digest(payload, header.chunk_size, count, digest_name)
    trailer = data[payload_end:]
    failed = []
    for index in (0, 1):
        slot = trailer[index * slot_size:(index + 1) * slot_size]
        key_id, signature = slot[:8], slot[8:]
        # Only slots by an accepted signer count; an empty slot, or one by any other key id
        # (trailer slots are authenticated by nothing but their own signature), is ignored.
        # One slot by an accepted signer that verifies is enough (an interrupted re-signing may
        # leave a torn slot beside a good one).
        for signer in signers:
            if signer.algorithm != algorithm or signer.key_id != key_id:
                continue
            message = signed_message(header, key_id, parsed.payload_nonce, plaintext_len, count, digest)
            if signer.verify(signature, message):
                return f"{algorithm} {digest_name} by {key_id.hex()}"
            failed.append(f"slot {index + 1} by {key_id.hex()}")
    if failed:
        raise SignatureFailed(f"no signature verifies ({', '.join(failed)})")
    raise SignerNotAccepted("no trailer slot by an accepted signer")


@dataclass
class Opened:
    file_key: bytes
    plaintext: bytes
    chunks: int
    identity: str
    version: int
    generation: int | None
    signature: str | None
    warnings: list[str]


def decrypt(data: bytes, identities: list[Identity], signers: list[Signer] | None = None) -> Opened:
    """Opens a whole file (a regular file: its length is known). `signers`: accepted signers, any
    one required when given."""
    parsed = parse_file(data)
    last_error: CofferError | None = None
    for header in parsed.headers:
        try:
            file_key, okey, label = open_header(header, identities)
        except (NoMatchingKey, HeaderAuthFailed) as e:
            # v2: "if no key opens it or its MAC fails, the other valid slot"
            last_error = e
            continue
        break
    else:
        raise last_error
    if len(parsed.headers) == 2 and parsed.version == 2 and header is parsed.headers[1]:
        parsed.warnings.append("the newest slot did not open; using the older one")

    signature = None
    if signers:
        signature = check_signature(data, parsed, header, signers)
    payload_end = len(data) - trailer_size(header.signed)
    if payload_end < parsed.payload_start:
        raise Truncated("payload shorter than the signature trailer")
    payload = data[parsed.payload_start:payload_end]
    count, plaintext_len = chunk_layout(len(payload), header.chunk_size)

    payload_key = hkdf(okey, parsed.payload_nonce, b"coffer/v1 payload " + header.cipher.encode())
    aead = aead_for(header.cipher, payload_key)
    sealed = header.chunk_size + 16
    out = []
    for i in range(count):
        chunk = payload[i * sealed:(i + 1) * sealed]
        final = i == count - 1
        nonce = i.to_bytes(11, "big") + (b"\x01" if final else b"\x00")
        try:
            out.append(aead.decrypt(nonce, chunk, None))
        except InvalidTag:
            if final and len(chunk) == sealed:
                try:
                    aead.decrypt(nonce[:11] + b"\x00", chunk, None)
                    raise Truncated(f"file cut at a chunk boundary (chunk {i} is not final)")
                except InvalidTag:
                    pass
            raise ChunkAuthFailed(f"chunk {i} does not authenticate")
    plaintext = b"".join(out)
    assert len(plaintext) == plaintext_len
    return Opened(file_key, plaintext, count, label, parsed.version, header.generation, signature, parsed.warnings)


def verify_only(data: bytes, signers: list[Signer]) -> str:
    """`coffer verify --signed-by`: checks a signature without any decryption key. Each valid
    slot's parameters are unauthenticated here (no file key); the signature covers them."""
    parsed = parse_file(data)
    errors = []
    for header in parsed.headers:
        try:
            return check_signature(data, parsed, header, signers)
        except CofferError as e:
            errors.append(e)
    raise errors[0]


# --------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-vectors", metavar="DIR")
    parser.add_argument("--coffer", metavar="BIN", help="a built coffer binary: also check files it writes")
    parser.add_argument("command", nargs="?", choices=["decrypt"])
    parser.add_argument("file", nargs="?")
    parser.add_argument("--key-hex", help="a 32-byte key file key, as hex")
    parser.add_argument("--passphrase-env", metavar="VAR", help="read the passphrase from this variable")
    parser.add_argument("--signed-by-hex", metavar="HEX", help="require an Ed25519 signature by this key")
    args = parser.parse_args(argv)
    if args.check_vectors:
        import time
        import vector_checks
        started = time.monotonic()
        results = vector_checks.Results()
        names = sorted(n for n in os.listdir(args.check_vectors) if n.endswith(".cof"))
        if not names:
            print(f"no .cof files in {args.check_vectors}")
            results.failed += 1
        steps = [(name, vector_checks.check_vector, (results, args.check_vectors, name)) for name in names]
        steps += [("scrypt refusals", vector_checks.refusal_checks, (results, args.check_vectors)),
                  ("two-slot rules", vector_checks.slot_checks, (results, args.check_vectors))]
        if args.coffer:
            import coffer_output_checks
            steps.append(("files written by coffer", coffer_output_checks.run, (results, args.coffer)))
            steps.append(("coffer and the reader agree", coffer_output_checks.differential,
                          (results, args.coffer, args.check_vectors)))
            steps.append(("stanza rules agree", coffer_output_checks.stanza_differential,
                          (results, args.coffer, args.check_vectors)))
        for label, step, step_args in steps:
            try:
                step(*step_args)
            except Exception as e:  # a check that cannot even start is a failure, not a crash
                import traceback
                traceback.print_exc()
                results.failed += 1
                print(f"FAIL {label}: {type(e).__name__}: {e}")
        if not args.coffer:
            results.skip("files written by the coffer binary", "no --coffer BIN given")
        print(f"independent reader: {time.monotonic() - started:.1f} s, {results.skipped} skipped")
        print(f"{results.passed} passed, {results.failed} failed")
        return 1 if results.failed else 0
    if args.command == "decrypt" and args.file:
        identities = []
        if args.key_hex:
            identities.append(KeyFileIdentity(bytes.fromhex(args.key_hex)))
        if args.passphrase_env:
            identities.append(PassphraseIdentity(os.environ[args.passphrase_env]))
        signers = [Signer("ed25519", bytes.fromhex(args.signed_by_hex))] if args.signed_by_hex else None
        try:
            opened = decrypt(open(args.file, "rb").read(), identities, signers)
        except CofferError as e:
            print(f"coffer_reader: {e.kind}: {e}", file=sys.stderr)
            return 2
        for warning in opened.warnings:
            print(f"coffer_reader: warning: {warning}", file=sys.stderr)
        sys.stdout.buffer.write(opened.plaintext)
        return 0
    parser.print_help()
    return 64


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1:]))

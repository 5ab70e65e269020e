"""Ed25519 signatures over feed records and version statements (:mod:`bastion.feeds`); the audit
log signs its checkpoints with the same keys (:mod:`bastion.audit_keys`), so they live outside
both.

Each signature covers a domain tag and the canonical bytes (``b"bastion-feed/v1 record\\n" +
record``), so a signed record can never be replayed as a version statement or the other way
round. Public keys are exchanged out of band as base64 (or hex) of the 32 raw bytes, and named by
their fingerprint: SHA-256 of those bytes, in hex.

Pure: no database or web imports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

RECORD_TAG = b"bastion-feed/v1 record\n"
VERSION_TAG = b"bastion-feed/v1 version\n"
KEY_BYTES = 32
SIGNATURE_BYTES = 64


class KeyFormatError(ValueError):
    """A public key or signature is not valid base64 or hex of the right length."""


class BadSignature(ValueError):
    """A signature does not verify under the pinned key."""


def _decode(text: str, size: int, what: str) -> bytes:
    text = str(text).strip()
    if len(text) == 2 * size:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != size:
        raise KeyFormatError(f"{what} must be base64 or hex of exactly {size} bytes")
    return raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def fingerprint(public_raw: bytes) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what people compare over the phone."""
    return hashlib.sha256(public_raw).hexdigest()


class SigningKey:
    """A publisher's Ed25519 private key. Its repr never shows the key."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = VerifyKey(key.public_key())

    def __repr__(self) -> str:
        return f"SigningKey(fingerprint={self.public.fingerprint})"

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, raw: bytes) -> SigningKey:
        if len(raw) != KEY_BYTES:
            raise KeyFormatError(f"an Ed25519 private key is {KEY_BYTES} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def raw(self) -> bytes:
        """The 32 private bytes, for sealing at rest; never log or print them."""
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign_record(self, record: bytes) -> str:
        return b64(self._key.sign(RECORD_TAG + record))

    def sign_statement(self, statement: bytes) -> str:
        return b64(self._key.sign(VERSION_TAG + statement))


class VerifyKey:
    """A publisher's public key, as a subscriber pins it."""

    __slots__ = ("_key", "raw")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def __repr__(self) -> str:
        return f"VerifyKey(fingerprint={self.fingerprint})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    @classmethod
    def from_text(cls, text: str) -> VerifyKey:
        """From base64 or hex of the 32 raw bytes (``bastion feed key`` prints base64)."""
        return cls(Ed25519PublicKey.from_public_bytes(_decode(text, KEY_BYTES, "public key")))

    @property
    def text(self) -> str:
        return b64(self.raw)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)

    def _verify(self, tag: bytes, data: bytes, signature: str) -> None:
        try:
            sig = _decode(signature, SIGNATURE_BYTES, "signature")
        except KeyFormatError:
            raise BadSignature("signature is not base64 of 64 bytes") from None
        try:
            self._key.verify(sig, tag + data)
        except InvalidSignature:
            raise BadSignature("signature does not verify under the publisher's key") from None

    def verify_record(self, record: bytes, signature: str) -> None:
        """Return if ``signature`` is the publisher's over ``record``, else raise BadSignature."""
        self._verify(RECORD_TAG, record, signature)

    def verify_statement(self, statement: bytes, signature: str) -> None:
        self._verify(VERSION_TAG, statement, signature)

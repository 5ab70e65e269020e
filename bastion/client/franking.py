"""Committing message franking: reports of end-to-end encrypted messages that can be verified.

Sender: picks a fresh 32-byte franking key ``k_f``, computes the commitment
``c = HMAC-SHA256(k_f, message)``, and puts ``message`` and ``k_f`` inside the end-to-end
encrypted payload (:func:`frank`). ``c`` travels in the clear beside the ciphertext, and the
platform (Bastion's ``POST /v1/franking/tags``) binds it to sender, recipient and time with a tag
only the platform can make.

Recipient: decrypts, then checks ``c`` against the message and key it got (:func:`receive`) and
*drops the message if the check fails*. That check is what makes franking committing: a sender
cannot deliver anything the recipient will display but cannot report, whatever encryption the
E2EE layer uses. A non-committing AEAD such as AES-GCM lets one ciphertext open to different
plaintexts under different keys ("invisible salamanders", Dodis et al. 2018); the commitment
over the plaintext defeats that, and :class:`CommittingAead` gives apps an E2EE layer that is
committing on its own too (AES-256-GCM plus a key commitment checked before decryption).

Report: the recipient reveals message, ``k_f``, ``c`` and the platform's tag; the platform
recomputes both (``bastion.psi.franking.verify_report``). It learns this message and nothing about
any other: each message has its own ``k_f``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.client.group import RandomBytes

FRANKING_KEY_BYTES = 32
COMMITMENT_BYTES = 32
_PAYLOAD_MAGIC = b"BFR1"


class FrankingError(ValueError):
    """A franked payload whose commitment does not verify: the recipient must not display it."""


def commit(franking_key: bytes, message: bytes) -> bytes:
    """``HMAC-SHA256(k_f, message)``. The key length is fixed because HMAC pads short keys with
    zeros and hashes long ones, which would let two different keys give the same commitment."""
    if not isinstance(franking_key, bytes) or len(franking_key) != FRANKING_KEY_BYTES:
        raise FrankingError(f"a franking key is {FRANKING_KEY_BYTES} bytes")
    return hmac.new(franking_key, message, hashlib.sha256).digest()


def verify_commitment(franking_key: bytes, message: bytes, commitment: bytes) -> bool:
    try:
        return hmac.compare_digest(commit(franking_key, message), commitment)
    except FrankingError:
        return False


@dataclass(frozen=True)
class Franked:
    """``payload`` goes inside the E2EE ciphertext; ``commitment`` beside it, in the clear."""

    payload: bytes
    commitment: bytes
    franking_key: bytes


def frank(message: bytes, random_bytes: RandomBytes = os.urandom) -> Franked:
    key = random_bytes(FRANKING_KEY_BYTES)
    payload = _PAYLOAD_MAGIC + key + struct.pack(">Q", len(message)) + message
    return Franked(payload, commit(key, message), key)


def receive(payload: bytes, commitment: bytes) -> tuple[bytes, bytes]:
    """(message, franking key) from a decrypted payload, after checking the commitment.

    Raises :class:`FrankingError` when it does not verify: such a message could not be reported,
    so the recipient's app must drop it rather than show it."""
    head = len(_PAYLOAD_MAGIC) + FRANKING_KEY_BYTES + 8
    if len(payload) < head or payload[:4] != _PAYLOAD_MAGIC:
        raise FrankingError("not a franked payload")
    key = payload[4 : 4 + FRANKING_KEY_BYTES]
    (length,) = struct.unpack_from(">Q", payload, 4 + FRANKING_KEY_BYTES)
    message = payload[head:]
    if len(message) != length:
        raise FrankingError("franked payload is truncated or padded")
    if not verify_commitment(key, message, commitment):
        raise FrankingError("the message does not match its franking commitment; drop it")
    return message, key


class CommittingAead:
    """AES-256-GCM with a key commitment: ``nonce (12) | commitment (32) | ciphertext + tag``.

    The commitment ``HMAC-SHA256(key, label || nonce)`` is checked before decryption, so a
    ciphertext opens under one key only (plain AES-GCM can be made to open under two)."""

    NONCE = 12
    COMMIT = 32

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise ValueError("a CommittingAead key is 32 bytes")
        self._enc = hmac.new(key, b"bastion-cae/v1/enc", hashlib.sha256).digest()
        self._mac = key

    def _commitment(self, nonce: bytes) -> bytes:
        return hmac.new(self._mac, b"bastion-cae/v1/commit" + nonce, hashlib.sha256).digest()

    def encrypt(
        self, plaintext: bytes, aad: bytes | None = None, random_bytes: RandomBytes = os.urandom
    ) -> bytes:
        nonce = random_bytes(self.NONCE)
        return nonce + self._commitment(nonce) + AESGCM(self._enc).encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes | None = None) -> bytes:
        """The plaintext; raises :class:`FrankingError` for the wrong key or any alteration."""
        if len(blob) < self.NONCE + self.COMMIT + 16:
            raise FrankingError("ciphertext too short")
        nonce, com = blob[: self.NONCE], blob[self.NONCE : self.NONCE + self.COMMIT]
        if not hmac.compare_digest(com, self._commitment(nonce)):
            raise FrankingError("ciphertext is not committed to this key")
        try:
            return AESGCM(self._enc).decrypt(nonce, blob[self.NONCE + self.COMMIT :], aad)
        except InvalidTag:
            raise FrankingError("ciphertext does not decrypt") from None

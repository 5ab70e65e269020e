"""ristretto255 group operations (libsodium through ``rbcl``), hashing to the group, and the KDF
and AEAD every layer of a voucher uses.

``rbcl``'s public wrappers re-check argument types in Python on every call, which costs about as
much as the cheap operations themselves; the hot paths here call the same libsodium functions
through its ctypes handle after checking lengths once. Every function that decodes a point
refuses a non-canonical or invalid encoding (libsodium returns -1), so hostile input raises
:class:`InvalidPoint`, never a wrong answer.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
from collections.abc import Callable

import rbcl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

POINT_BYTES = 32
SCALAR_BYTES = 32
KEY_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12
ZERO_NONCE = bytes(NONCE_BYTES)
#: Every hash and KDF input starts with a label under this prefix (domain separation).
DOMAIN = b"bastion-psi-v1/"

RandomBytes = Callable[[int], bytes]

_lib = getattr(rbcl, "_sodium", None)
if not isinstance(_lib, ctypes.CDLL):  # pragma: no cover - rbcl's layout changed
    _lib = None


class InvalidPoint(ValueError):
    """Bytes that are not the canonical encoding of a ristretto255 group element (or an operation
    whose result would be the identity)."""


def _check(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise InvalidPoint(f"{what} must be {size} bytes")


def scalar_from_bytes(wide: bytes) -> bytes:
    """A uniformly distributed scalar from 64 uniformly random bytes (reduced mod the order)."""
    if len(wide) != 64:
        raise ValueError("a scalar is reduced from 64 bytes")
    if _lib is None:  # pragma: no cover
        return bytes(rbcl.crypto_core_ristretto255_scalar_reduce(wide))
    out = ctypes.create_string_buffer(SCALAR_BYTES)
    _lib.crypto_core_ristretto255_scalar_reduce(out, wide)
    return out.raw


def random_scalar(random_bytes: RandomBytes) -> bytes:
    """A non-zero scalar from ``random_bytes`` (so tests can make every run reproducible)."""
    while True:
        s = scalar_from_bytes(random_bytes(64))
        if any(s):
            return s


def mul(scalar: bytes, point: bytes) -> bytes:
    """``scalar · point``; raises :class:`InvalidPoint` for a bad encoding or identity result."""
    _check(point, POINT_BYTES, "a point")
    if _lib is None:  # pragma: no cover
        try:
            return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, point))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidPoint(str(exc)) from None
    out = ctypes.create_string_buffer(POINT_BYTES)
    if _lib.crypto_scalarmult_ristretto255(out, scalar, point) != 0:
        raise InvalidPoint("not a valid ristretto255 point (or the product is the identity)")
    return out.raw


def mul_base(scalar: bytes) -> bytes:
    """``scalar · G`` for the standard generator G."""
    if _lib is None:  # pragma: no cover
        return bytes(rbcl.crypto_scalarmult_ristretto255_base(scalar))
    out = ctypes.create_string_buffer(POINT_BYTES)
    if _lib.crypto_scalarmult_ristretto255_base(out, scalar) != 0:
        raise InvalidPoint("the scalar is zero")
    return out.raw


def add(p: bytes, q: bytes) -> bytes:
    _check(p, POINT_BYTES, "a point")
    _check(q, POINT_BYTES, "a point")
    if _lib is None:  # pragma: no cover
        return bytes(rbcl.crypto_core_ristretto255_add(p, q))
    out = ctypes.create_string_buffer(POINT_BYTES)
    if _lib.crypto_core_ristretto255_add(out, p, q) != 0:
        raise InvalidPoint("not a valid ristretto255 point")
    return out.raw


def is_valid_point(p: bytes) -> bool:
    if not isinstance(p, bytes) or len(p) != POINT_BYTES:
        return False
    if _lib is None:  # pragma: no cover
        return bool(rbcl.crypto_core_ristretto255_is_valid_point(p)) and any(p)
    return _lib.crypto_core_ristretto255_is_valid_point(p) == 1 and any(p)


def point_from_hash(digest64: bytes) -> bytes:
    """The Elligator-based map of 64 uniform bytes to a group element (no known discrete log)."""
    if len(digest64) != 64:
        raise ValueError("from_hash takes 64 bytes")
    if _lib is None:  # pragma: no cover
        return bytes(rbcl.crypto_core_ristretto255_from_hash(digest64))
    out = ctypes.create_string_buffer(POINT_BYTES)
    _lib.crypto_core_ristretto255_from_hash(out, digest64)
    return out.raw


def hash_to_group(key: bytes) -> bytes:
    """H(key): SHA-512 of a domain-separated key, mapped into ristretto255."""
    return point_from_hash(hashlib.sha512(DOMAIN + b"h2g\x00" + key).digest())


def random_point(random_bytes: RandomBytes) -> bytes:
    """A uniformly random group element, as ``r · G`` for a random scalar r."""
    return mul_base(random_scalar(random_bytes))


def kdf(label: bytes, *parts: bytes) -> bytes:
    """SHA-256 over a label and length-prefixed parts: a 32-byte key that binds every part."""
    h = hashlib.sha256(DOMAIN + label + b"\x00")
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def prf(key: bytes, label: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 PRF with the same framing as :func:`kdf`."""
    h = hmac.new(key, DOMAIN + label + b"\x00", hashlib.sha256)
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def seal(
    key: bytes, plaintext: bytes, aad: bytes | None = None, nonce: bytes = ZERO_NONCE
) -> bytes:
    """ChaCha20-Poly1305. The zero nonce is only ever used with single-use keys."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_sealed(
    key: bytes, ciphertext: bytes, aad: bytes | None = None, nonce: bytes = ZERO_NONCE
) -> bytes | None:
    """The plaintext, or None when the key is wrong or anything was altered."""
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        return None

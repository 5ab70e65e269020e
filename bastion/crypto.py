"""Envelope encryption for data Bastion keeps at rest (review media now, evidence later).

Each sealed blob has its own random 256-bit data key. The data key encrypts the payload with
AES-256-GCM and is itself wrapped (AES-256-GCM) under the master key, so rotating the master key
means re-wrapping 60-byte keys, not re-encrypting media. The caller's ``aad`` (e.g. the case and
item ids) is authenticated with the payload: a blob copied onto another row does not open there.

Blob layout, version 1 (all lengths in bytes)::

    magic "BSE" (3) | version 0x01 (1) | master key id (8)
    | wrap nonce (12) | wrapped data key (32 + 16 tag)
    | data nonce (12) | ciphertext (len(plaintext)) + tag (16)

The header (magic, version, key id) is authenticated as part of both AADs, so no byte of the blob
can change without :func:`unseal` refusing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
MAGIC = b"BSE"
VERSION = 1
_KEY_ID_BYTES = 8
_NONCE = 12
_TAG = 16
_HEADER = len(MAGIC) + 1 + _KEY_ID_BYTES
_WRAPPED = KEY_BYTES + _TAG
#: Smallest valid blob: header, both nonces, the wrapped key and an empty payload's tag.
OVERHEAD = _HEADER + _NONCE + _WRAPPED + _NONCE + _TAG
#: AES-GCM in ``cryptography`` takes at most 2**31 - 1 bytes at once.
MAX_PLAINTEXT = 2**31 - 1 - _TAG
_WRAP_CONTEXT = b"bastion/data-key/v1"


class CryptoError(Exception):
    """Base for errors here; messages never contain key material."""


class MasterKeyError(CryptoError, ValueError):
    """The master key setting or key file is missing, malformed or not private."""


class UnsealError(CryptoError):
    """A blob does not open: damaged, tampered with, sealed for other ``aad``, or under another
    master key. Deliberately vague about which, except for a wrong key or unknown version."""


class MasterKey:
    """The 32-byte master key. Its repr never shows the key."""

    __slots__ = ("_aead", "_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise MasterKeyError(f"a master key is exactly {KEY_BYTES} bytes")
        self._key = bytes(key)
        self._aead = AESGCM(self._key)
        #: Public fingerprint, stored in each blob to tell "wrong key" from "damaged blob".
        self.key_id = hashlib.sha256(b"bastion/key-id\x00" + self._key).digest()[:_KEY_ID_BYTES]

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id.hex()})"

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_base64(cls, text: str) -> MasterKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError("secret_key is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise MasterKeyError(
                f"secret_key must be base64 of exactly {KEY_BYTES} bytes, got {len(raw)} bytes "
                "(make one with: openssl rand -base64 32)"
            )
        return cls(raw)

    @classmethod
    def load(cls, settings: Any) -> MasterKey:
        """The key from ``settings.secret_key`` (base64) if set, else from
        ``settings.secret_key_file``, which is created (mode 0600, 32 random bytes, parent
        directories 0700) when missing. An existing file must hold exactly 32 bytes (or their
        base64) and be readable by its owner only; anything else is refused rather than used."""
        text = getattr(settings, "secret_key", None)
        if text:
            return cls.from_base64(str(text))
        if not getattr(settings, "secret_key_file", None):
            # Settings.in_data_dir fills it in; never fall back to a file named after None.
            raise MasterKeyError("no master key: set secret_key or secret_key_file")
        path = Path(str(settings.secret_key_file)).expanduser()
        if not path.exists() and not path.is_symlink():
            _create_key_file(path)
        return cls(_read_key_file(path))


def _create_key_file(path: Path) -> None:
    create_private_file(path, secrets.token_bytes(KEY_BYTES), "master key")


def create_private_file(path: Path, data: bytes, what: str) -> bool:
    """Write ``data`` to a new private file atomically: a 0600 temporary file linked into place
    (parent directories made 0700), so a reader never sees a half-written key and two processes
    starting together end up with one. False when another process created it first (its file is
    kept). Used for every key Bastion keeps in a file (master key, audit keys)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:  # another process won: use its key
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise MasterKeyError(
            f"cannot create {what} file {str(path)!r}: {exc.strerror or exc}"
        ) from None


def replace_private_file(path: Path, data: bytes, what: str) -> None:
    """Overwrite a private file atomically (0600 temporary file renamed over it): readers see
    the old contents or the new, never a mix. The caller serialises writers."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MasterKeyError(
            f"cannot write {what} file {str(path)!r}: {exc.strerror or exc}"
        ) from None


def read_private_file(path: Path, what: str) -> bytes:
    """The bytes of a key file that is a regular file readable by its owner only; anything else
    is refused (MasterKeyError naming the file and the fix) rather than used."""
    try:
        st = path.stat()
    except OSError as exc:
        raise MasterKeyError(
            f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise MasterKeyError(f"{what} file {str(path)!r} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise MasterKeyError(
            f"{what} file {str(path)!r} is readable or writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MasterKeyError(
            f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}"
        ) from None


def _read_key_file(path: Path) -> bytes:
    data = read_private_file(path, "master key")
    if len(data) == KEY_BYTES:
        return data
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == KEY_BYTES:
        return raw
    raise MasterKeyError(
        f"master key file {str(path)!r} holds {len(data)} bytes; it must hold exactly "
        f"{KEY_BYTES} raw bytes or their base64"
    )


def seal(master: MasterKey, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` under a fresh data key wrapped by ``master``; ``aad`` must be given
    again, byte for byte, to :func:`unseal`."""
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        raise TypeError("plaintext must be bytes")
    if len(plaintext) > MAX_PLAINTEXT:
        raise CryptoError(f"cannot seal more than {MAX_PLAINTEXT} bytes at once")
    header = MAGIC + bytes([VERSION]) + master.key_id
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce, data_nonce = os.urandom(_NONCE), os.urandom(_NONCE)
    wrapped = master._aead.encrypt(wrap_nonce, data_key, header + _WRAP_CONTEXT)
    body = AESGCM(data_key).encrypt(data_nonce, bytes(plaintext), _data_aad(header, aad))
    return b"".join((header, wrap_nonce, wrapped, data_nonce, body))


def unseal(master: MasterKey, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of a :func:`seal` blob, or :class:`UnsealError`."""
    blob = bytes(blob)
    if len(blob) < OVERHEAD or blob[: len(MAGIC)] != MAGIC:
        raise UnsealError("not a sealed blob (bad header or too short)")
    version = blob[len(MAGIC)]
    if version != VERSION:
        raise UnsealError(f"sealed blob has unknown format version {version}")
    header = blob[:_HEADER]
    if header[len(MAGIC) + 1 :] != master.key_id:
        raise UnsealError(
            f"sealed under another master key (key id {header[4:].hex()}, this key "
            f"{master.key_id.hex()}), or damaged"
        )
    pos = _HEADER
    wrap_nonce, pos = blob[pos : pos + _NONCE], pos + _NONCE
    wrapped, pos = blob[pos : pos + _WRAPPED], pos + _WRAPPED
    data_nonce, pos = blob[pos : pos + _NONCE], pos + _NONCE
    try:
        data_key = master._aead.decrypt(wrap_nonce, wrapped, header + _WRAP_CONTEXT)
        return AESGCM(data_key).decrypt(data_nonce, blob[pos:], _data_aad(header, aad))
    except InvalidTag:
        raise UnsealError("sealed blob failed authentication: damaged, or wrong aad") from None


def _data_aad(header: bytes, aad: bytes) -> bytes:
    if not isinstance(aad, bytes | bytearray):
        raise TypeError("aad must be bytes")
    return header + bytes(aad)

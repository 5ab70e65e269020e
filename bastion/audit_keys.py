"""Keys for the audit log, kept outside the database (docs/audit.md).

The audit chain (``bastion.store.audit``) links each record to the one before with HMAC-SHA256
under an *audit key*. The keys live in a keyring file beside, but apart from, the master key and
never in the database: whoever can write the database but not read this file cannot recompute
the chain after editing a record. Keyring file (JSON, mode 0600)::

    {"format": "bastion-audit-keys/1",
     "keys": [{"id": "<16 hex>", "secret": "<base64 of 32 bytes>", "created": "<time>"}, ...],
     "legacy": null | {"last_id": 42, "last_hash": "<hex>", "marked": "<time>"}}

``keys`` holds every key the log was ever chained under, oldest first: a rotation appends one
and the old ones stay, so records chained under them still verify. ``legacy`` is written once,
when the file is created for a database whose log already held records chained with the old
unkeyed hash: exactly records 1..last_id, ending in last_hash, are accepted unkeyed. It lives
here rather than in the database so that nobody can rewrite keyed records as "legacy" ones.

The checkpoint key is a second file: an Ed25519 private key (32 raw bytes, mode 0600) that signs
checkpoints of the chain's head (:func:`sign_checkpoint`). An operator keeps the checkpoints and
the public key somewhere else; a chain rewritten before a checkpoint, even by someone holding the
audit key, no longer contains the checkpoint's head.

Pure file and crypto code: no database imports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.crypto import (
    CryptoError,
    MasterKeyError,
    create_private_file,
    read_private_file,
    replace_private_file,
)
from bastion.signing import KeyFormatError, SigningKey, VerifyKey

KEYRING_FORMAT = "bastion-audit-keys/1"
CHECKPOINT_FORMAT = "bastion-audit-checkpoint/1"
SECRET_BYTES = 32
#: Signatures cover this tag and the canonical checkpoint, so no other Bastion signature (feed
#: records, version statements) can pass for a checkpoint.
_CHECKPOINT_TAG = b"bastion-audit-checkpoint/v1\n"
_HASH_HEX = 64
_MAX_FILE = 1 << 20


class AuditKeyError(CryptoError):
    """An audit key file is missing where it must exist, unreadable, malformed or not private.
    Messages never contain key material."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or whose signature does not verify."""


def key_id_of(secret: bytes) -> str:
    """Public name of an audit key, stored in each record chained under it."""
    return hashlib.sha256(b"bastion/audit-key-id\x00" + secret).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class AuditKey:
    key_id: str
    secret: bytes = field(repr=False)
    created: str


@dataclass(frozen=True, slots=True)
class LegacyMark:
    """The unkeyed records a database held when its keyring was created."""

    last_id: int
    last_hash: str
    marked: str


@dataclass(frozen=True, slots=True)
class AuditKeyring:
    """The audit keys in one file, oldest first; the newest starts a fresh log's chain."""

    path: Path
    keys: tuple[AuditKey, ...]
    legacy: LegacyMark | None

    @property
    def newest(self) -> AuditKey:
        return self.keys[-1]

    def secret(self, key_id: str | None) -> bytes | None:
        return next((k.secret for k in self.keys if k.key_id == key_id), None)

    def position(self, key_id: str | None) -> int | None:
        """Where ``key_id`` stands in rotation order (0 = oldest), or None if unknown."""
        return next((i for i, k in enumerate(self.keys) if k.key_id == key_id), None)

    # -- files -------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | Path) -> AuditKeyring | None:
        """The keyring at ``path``, or None when there is no file (nothing keyed yet)."""
        path = Path(path).expanduser()
        if not path.exists() and not path.is_symlink():
            return None
        try:
            raw = read_private_file(path, "audit key")
        except MasterKeyError as exc:
            raise AuditKeyError(str(exc)) from None
        return cls._parse(path, raw)

    @classmethod
    def create(cls, path: str | Path, legacy: tuple[int, str] | None) -> AuditKeyring:
        """A new keyring with one fresh key, marking ``legacy`` (last id and hash of the records
        already chained without a key) as accepted. When another process created the file
        first, its keyring is returned instead, legacy mark and all."""
        path = Path(path).expanduser()
        mark = None
        if legacy is not None and legacy[0] > 0:
            mark = LegacyMark(int(legacy[0]), str(legacy[1]), _now())
        ring = cls(path, (_new_key(),), mark)
        try:
            create_private_file(path, ring._dump(), "audit key")
        except MasterKeyError as exc:
            raise AuditKeyError(str(exc)) from None
        found = cls.read(path)
        if found is None:  # pragma: no cover - removed between link and read
            raise AuditKeyError(f"audit key file {str(path)!r} vanished while being created")
        return found

    def rotate(self) -> tuple[AuditKeyring, AuditKey]:
        """Append a fresh key to the file (old keys stay) and return the keyring as now saved
        with the new key. Concurrent rotations are serialised on a lock file."""
        with _locked(self.path):
            current = AuditKeyring.read(self.path)
            if current is None:
                raise AuditKeyError(f"audit key file {str(self.path)!r} disappeared")
            key = _new_key()
            ring = AuditKeyring(self.path, (*current.keys, key), current.legacy)
            try:
                replace_private_file(self.path, ring._dump(), "audit key")
            except MasterKeyError as exc:
                raise AuditKeyError(str(exc)) from None
        return ring, key

    def _dump(self) -> bytes:
        doc = {
            "format": KEYRING_FORMAT,
            "note": "Bastion audit keys: keep private and apart from the database and its backups",
            "keys": [
                {"id": k.key_id, "secret": _b64(k.secret), "created": k.created} for k in self.keys
            ],
            "legacy": None
            if self.legacy is None
            else {
                "last_id": self.legacy.last_id,
                "last_hash": self.legacy.last_hash,
                "marked": self.legacy.marked,
            },
        }
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")

    @classmethod
    def _parse(cls, path: Path, raw: bytes) -> AuditKeyring:
        def bad(why: str) -> AuditKeyError:
            return AuditKeyError(f"audit key file {str(path)!r} is not a Bastion keyring: {why}")

        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad("not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != KEYRING_FORMAT:
            raise bad(f"format is not {KEYRING_FORMAT!r}")
        entries = doc.get("keys")
        if not isinstance(entries, list) or not entries:
            raise bad("it lists no keys")
        keys = []
        for n, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                raise bad(f"key {n} is not an object")
            secret = _unb64(entry.get("secret"))
            if secret is None or len(secret) != SECRET_BYTES:
                raise bad(f"key {n}'s secret is not base64 of {SECRET_BYTES} bytes")
            if entry.get("id") != key_id_of(secret):
                raise bad(f"key {n}'s id does not match its secret")
            keys.append(AuditKey(key_id_of(secret), secret, str(entry.get("created", ""))))
        if len({k.key_id for k in keys}) != len(keys):
            raise bad("a key is listed twice")
        legacy = doc.get("legacy")
        mark = None
        if legacy is not None:
            last_id, last_hash = (legacy or {}).get("last_id"), (legacy or {}).get("last_hash")
            if (
                not isinstance(legacy, dict)
                or not isinstance(last_id, int)
                or isinstance(last_id, bool)
                or last_id < 1
                or not _is_hash(last_hash)
            ):
                raise bad("its legacy mark is not a record id and hash")
            mark = LegacyMark(last_id, last_hash, str(legacy.get("marked", "")))
        return cls(path, tuple(keys), mark)


def _new_key() -> AuditKey:
    secret = secrets.token_bytes(SECRET_BYTES)
    return AuditKey(key_id_of(secret), secret, _now())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` (the file itself is replaced, so it cannot be the
    lock)."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: rotations must not overlap
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- checkpoints -------------------------------------------------------------------------------


class CheckpointKey:
    """The Ed25519 key that signs checkpoints. Its repr never shows the key."""

    __slots__ = ("_key", "public")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise AuditKeyError("a checkpoint signing key is 32 raw bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(raw)
        self.public = SigningKey.from_raw(raw).public

    def __repr__(self) -> str:
        return f"CheckpointKey(fingerprint={self.public.fingerprint})"

    @classmethod
    def read(cls, path: str | Path) -> CheckpointKey | None:
        path = Path(path).expanduser()
        if not path.exists() and not path.is_symlink():
            return None
        try:
            raw = read_private_file(path, "checkpoint signing key")
        except MasterKeyError as exc:
            raise AuditKeyError(str(exc)) from None
        if len(raw) != 32:
            raise AuditKeyError(
                f"checkpoint signing key file {str(path)!r} holds {len(raw)} bytes, not 32"
            )
        return cls(raw)

    @classmethod
    def load_or_create(cls, path: str | Path) -> CheckpointKey:
        path = Path(path).expanduser()
        found = cls.read(path)
        if found is not None:
            return found
        try:
            create_private_file(path, SigningKey.generate().raw(), "checkpoint signing key")
        except MasterKeyError as exc:
            raise AuditKeyError(str(exc)) from None
        created = cls.read(path)
        assert created is not None
        return created

    def sign(self, data: bytes) -> str:
        return _b64(self._key.sign(_CHECKPOINT_TAG + data))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The head of the chain at one moment: record ``record_id`` had chain hash ``hash`` and
    was chained under ``key_id`` (None: unkeyed); ``at`` is when the checkpoint was taken."""

    record_id: int
    hash: str
    key_id: str | None
    at: str


def _signed_part(cp: Checkpoint) -> bytes:
    body = {
        "format": CHECKPOINT_FORMAT,
        "record_id": cp.record_id,
        "hash": cp.hash,
        "key_id": cp.key_id,
        "at": cp.at,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_checkpoint(cp: Checkpoint, key: CheckpointKey) -> dict[str, Any]:
    """The checkpoint as a JSON document carrying its signature and the signer's public key."""
    return {
        "format": CHECKPOINT_FORMAT,
        "record_id": cp.record_id,
        "hash": cp.hash,
        "key_id": cp.key_id,
        "at": cp.at,
        "public_key": key.public.text,
        "signature": key.sign(_signed_part(cp)),
    }


def read_checkpoint(text: str | bytes, trusted: VerifyKey) -> Checkpoint:
    """The checkpoint in ``text`` if it is well formed and signed by ``trusted`` (pinned by the
    operator, never taken from the document), else CheckpointError saying why."""
    if len(text) > _MAX_FILE:
        raise CheckpointError("not a checkpoint: too large")
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError("not a checkpoint: not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a checkpoint: format is not {CHECKPOINT_FORMAT!r}")
    rid, digest, key_id, at = (doc.get(k) for k in ("record_id", "hash", "key_id", "at"))
    if not isinstance(rid, int) or isinstance(rid, bool) or rid < 0:
        raise CheckpointError("not a checkpoint: record_id is not a whole number >= 0")
    if not _is_hash(digest):
        raise CheckpointError("not a checkpoint: hash is not 64 hex digits")
    if key_id is not None and not isinstance(key_id, str):
        raise CheckpointError("not a checkpoint: key_id is not text")
    if not isinstance(at, str):
        raise CheckpointError("not a checkpoint: at is not a time")
    cp = Checkpoint(rid, digest, key_id, at)
    signature = _unb64(doc.get("signature"))
    if signature is None or len(signature) != 64:
        raise CheckpointError("checkpoint signature is not base64 of 64 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(trusted.raw).verify(
            signature, _CHECKPOINT_TAG + _signed_part(cp)
        )
    except InvalidSignature:
        raise CheckpointError(
            f"checkpoint signature does not verify under the trusted key "
            f"(fingerprint {trusted.fingerprint[:16]}): forged, altered, or signed by another key"
        ) from None
    return cp


def checkpoint_problem(cp: Checkpoint, stored_hash: str | None) -> str | None:
    """None when the log still holds the checkpoint's head (``stored_hash`` is the chain hash
    its record ``cp.record_id`` has now, None if it is gone), else what happened. A chain hash
    covers every record before it, so a match vouches for the whole history up to there."""
    if cp.record_id == 0:
        return None if cp.hash == "0" * _HASH_HEX else "an empty log's checkpoint has a hash"
    if stored_hash is None:
        return (
            f"record {cp.record_id}, the head when the checkpoint was taken ({cp.at}), is no "
            "longer in the log: the log was cut back, or rewritten with fewer records"
        )
    if stored_hash != cp.hash:
        return (
            f"record {cp.record_id} no longer has the chain hash it had when the checkpoint was "
            f"taken ({cp.at}): the log was rewritten at or before record {cp.record_id}"
        )
    return None


def public_key(text: str) -> VerifyKey:
    """A checkpoint public key from base64 or hex (``bastion audit public-key`` prints it)."""
    try:
        return VerifyKey.from_text(text)
    except (KeyFormatError, ValueError) as exc:
        raise CheckpointError(f"public key: {exc}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_hash(value: object) -> TypeGuard[str]:
    return (
        isinstance(value, str)
        and len(value) == _HASH_HEX
        and all(c in "0123456789abcdef" for c in value)
    )

"""Identity sharing groups: each group's HMAC key, sealed under the master key at rest.

The key is what makes a shared list of identity digests safe to hold, so it is treated like every
other secret Bastion keeps: never stored in plaintext (AES-256-GCM under the master key, with the
group's name as associated data, :mod:`bastion.crypto`), never logged, shown only to an audited
export (to hand to a partner joining the group), and compared between partners by its public
``key_id`` alone.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from bastion.crypto import MasterKey, seal, unseal
from bastion.identity.model import (
    KEY_BYTES,
    Identifier,
    IdentifierError,
    hash_identifier,
    key_id,
)
from bastion.identity.rows import IdentityGroupRow
from bastion.store.audit import append_audit
from bastion.store.engine import Database
from bastion.store.errors import InvalidInput, StoreError

groups_t = IdentityGroupRow.__table__
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
#: How long a process keeps the unsealed keys before reading the table again (another replica
#: may have created or removed a group).
KEYS_TTL = 10.0


class GroupExists(StoreError):
    """A sharing group of that name exists already."""


class GroupNotFound(StoreError):
    """No sharing group of that name."""


@dataclass(frozen=True, slots=True)
class IdentityGroup:
    name: str
    key_id: str
    created_at: datetime
    created_by: str


def group_name(name: str) -> str:
    text = str(name).strip().lower()
    if not 1 <= len(text) <= 64 or not set(text) <= _NAME_CHARS or not text[0].isalnum():
        raise InvalidInput(
            "a group name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return text


def parse_key(text: str) -> bytes:
    """A group key as its members exchange it: base64 of 32 random bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the group key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise InvalidInput(f"the group key must be base64 of exactly {KEY_BYTES} bytes")
    return raw


def _aad(name: str) -> bytes:
    return f"identity-group:{name}".encode()


class IdentityGroups:
    """The groups over one database; keys unsealed on demand and kept in memory briefly."""

    def __init__(self, db: Database, master_key: MasterKey) -> None:
        self._db = db
        self._master = master_key
        self._keys: dict[str, bytes] | None = None
        self._keys_at = float("-inf")
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        *,
        key: bytes | None = None,
        actor: str,
        remote_addr: str | None = None,
    ) -> IdentityGroup:
        """A new group with a fresh random key, or with ``key`` (joining a group another member
        made). Audited (``identity.group.create``, with the key's public id only)."""
        name = group_name(name)
        raw = secrets.token_bytes(KEY_BYTES) if key is None else key
        if len(raw) != KEY_BYTES:
            raise InvalidInput(f"a group key is exactly {KEY_BYTES} bytes")
        kid = key_id(raw)
        now = datetime.now().astimezone()
        try:
            with self._db.begin_write() as conn:
                conn.execute(
                    insert(groups_t).values(
                        name=name,
                        sealed_key=seal(self._master, raw, _aad(name)),
                        key_id=kid,
                        created_at=now,
                        created_by=actor[:255],
                    )
                )
                append_audit(
                    conn,
                    actor=actor,
                    action="identity.group.create",
                    target=f"identity-group:{name}",
                    detail={"key_id": kid, "imported": key is not None},
                    remote_addr=remote_addr,
                )
        except IntegrityError:
            raise GroupExists(f"identity group {name!r} already exists") from None
        self._keys = None
        return self.get(name)

    def get(self, name: str) -> IdentityGroup:
        name = group_name(name)
        with self._db.engine.connect() as conn:
            row = conn.execute(select(groups_t).where(groups_t.c.name == name)).first()
        if row is None:
            raise GroupNotFound(f"no identity group named {name!r}")
        return IdentityGroup(row.name, row.key_id, row.created_at, row.created_by)

    def list(self) -> list[IdentityGroup]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(select(groups_t).order_by(groups_t.c.name)).all()
        return [IdentityGroup(r.name, r.key_id, r.created_at, r.created_by) for r in rows]

    def export_key(self, name: str, *, actor: str, remote_addr: str | None = None) -> str:
        """The group key as base64, to hand to a partner joining the group out of band.
        Audited (``identity.group.key.export``) before it is returned."""
        name = group_name(name)
        self._db.record_audit(
            actor=actor,
            action="identity.group.key.export",
            target=f"identity-group:{name}",
            detail=None,
            remote_addr=remote_addr,
        )
        return base64.b64encode(self._key(name)).decode("ascii")

    def remove(self, name: str, *, actor: str, remote_addr: str | None = None) -> None:
        """Forget a group's key (its digests in banks then match nothing). Audited."""
        name = group_name(name)
        with self._db.begin_write() as conn:
            gone = conn.execute(delete(groups_t).where(groups_t.c.name == name)).rowcount
            if not gone:
                raise GroupNotFound(f"no identity group named {name!r}")
            append_audit(
                conn,
                actor=actor,
                action="identity.group.delete",
                target=f"identity-group:{name}",
                detail=None,
                remote_addr=remote_addr,
            )
        self._keys = None

    def keys(self) -> dict[str, bytes]:
        """Every group's key, unsealed (kept in memory for :data:`KEYS_TTL` seconds)."""
        with self._lock:
            if self._keys is None or time.monotonic() - self._keys_at > KEYS_TTL:
                with self._db.engine.connect() as conn:
                    rows = conn.execute(select(groups_t.c.name, groups_t.c.sealed_key)).all()
                self._keys = {
                    r.name: unseal(self._master, r.sealed_key, _aad(r.name)) for r in rows
                }
                self._keys_at = time.monotonic()
            return self._keys

    def _key(self, name: str) -> bytes:
        key = self.keys().get(name)
        if key is None:
            self._keys = None  # perhaps made by another replica just now
            key = self.keys().get(name)
        if key is None:
            raise GroupNotFound(f"no identity group named {name!r}")
        return key

    def hash(
        self, name: str, identifiers: Iterable[Identifier]
    ) -> builtins.list[str | IdentifierError]:
        """Each identifier's keyed hash under group ``name``, or the error that stopped it."""
        key = self._key(group_name(name))
        out: builtins.list[str | IdentifierError] = []
        for ident in identifiers:
            try:
                out.append(hash_identifier(key, ident))
            except IdentifierError as exc:
                out.append(exc)
        return out

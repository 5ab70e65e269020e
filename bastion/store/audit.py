"""The audit log: :class:`AuditLog` (the store's append, read, check and key-rotation methods)
and :func:`append_audit`, which a domain store calls inside its own transaction so the event
and the change it records commit together."""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    cast,
    func,
    insert,
    or_,
    select,
    update,
)

from bastion.audit_keys import AuditKeyError, AuditKeyring
from bastion.store.audit_chain import (
    AUDIT_ROTATE_ACTION,
    AuditCheck,
    AuditEvent,
    ChainWalk,
    audit_hash,
    remember_audit_keys,
    to_audit,
)
from bastion.store.bulk import json_doc, paging, short_text, utcnow
from bastion.store.errors import (
    AuditKeyUnavailable,
    InvalidInput,
)
from bastion.store.tables import audit_head_t, audit_t

#: Engine execution option naming the Store whose audit keys chain appends on its connections.
_AUDIT_STORE = "bastion_audit_store"


_ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")


class AuditLog:
    """The audit methods of the store (a base of
    :class:`~bastion.store.engine.Database`, which calls :meth:`_init_audit`)."""

    engine: Engine

    def _init_audit(self) -> None:
        self._audit_key_file: Path | None = None
        self._audit_ring: AuditKeyring | None = None
        self._audit_lock = threading.Lock()
        # Appends made by domain stores get only a Connection: it finds this store (and so the
        # audit keys) through the engine's options. Weak, so the engine does not keep us alive.
        self.engine.update_execution_options(**{_AUDIT_STORE: weakref.ref(self)})

    @property
    def data_dir(self) -> Path:
        raise NotImplementedError

    def use_audit_key_file(self, path: str | Path) -> None:
        """Chain and verify this store's audit log with the keyring at ``path`` (from the
        settings' ``audit_key_file``). Unset, the store finds it as the CLI does: from
        ``Settings.load()`` placed in :attr:`data_dir`."""
        with self._audit_lock:
            self._audit_key_file = Path(path).expanduser()
            self._audit_ring = None

    def use_settings_audit_keys(self, settings: Any) -> None:
        """Take the audit key file from the settings a server starts with when they place it
        (``audit_key_file``, or ``secret_key_file`` or ``key_dir`` it defaults to) and this
        store has not settled on one yet. Otherwise the store finds it from the environment as
        the CLI does, which gives the same default."""
        chosen = getattr(settings, "audit_key_file", None)
        if chosen is None and any(
            getattr(settings, name, None) for name in ("secret_key_file", "key_dir")
        ):
            chosen = settings.in_data_dir(self.data_dir).audit_key_file
        with self._audit_lock:
            if chosen and self._audit_key_file is None:
                self._audit_key_file = Path(str(chosen)).expanduser()

    @property
    def audit_key_file(self) -> Path:
        with self._audit_lock:
            if self._audit_key_file is None:
                from bastion.config import ConfigError, Settings

                try:
                    found = Settings.load().in_data_dir(self.data_dir).audit_key_file
                except ConfigError as exc:
                    raise AuditKeyUnavailable(f"cannot locate the audit key file: {exc}") from None
                self._audit_key_file = Path(str(found)).expanduser()
            return self._audit_key_file

    def read_audit_keyring(self) -> AuditKeyring | None:
        """The audit keyring as now on disk (None: no file, so nothing can be keyed yet)."""
        try:
            ring = AuditKeyring.read(self.audit_key_file)
        except AuditKeyError as exc:
            raise AuditKeyUnavailable(str(exc)) from None
        if ring is not None:
            remember_audit_keys(ring)
        return ring

    def _keyring_for_append(
        self, head_key: str | None, last_id: int, last_hash: str
    ) -> AuditKeyring:
        """The keyring to chain the next record with, given the head as the appender locked it.

        Created on first use (mode 0600), marking the records already chained without a key as
        legacy. Re-read when the head names a key this process has not seen (rotated by another
        process). Refused when the head names a key the file lacks, or when the log holds
        unkeyed records the file does not accept: those were written or rewritten without the
        key, and chaining after them would vouch for them."""
        path = self.audit_key_file
        with self._audit_lock:
            ring = self._audit_ring
            if ring is None or (head_key is not None and ring.secret(head_key) is None):
                try:
                    ring = AuditKeyring.read(path)
                    if ring is None:
                        if head_key is not None:
                            raise AuditKeyUnavailable(
                                f"the audit log is chained under audit key {head_key}, but the "
                                f"audit key file {str(path)!r} does not exist: restore it (a "
                                "new key cannot continue the chain)"
                            )
                        ring = AuditKeyring.create(path, (last_id, last_hash))
                except AuditKeyError as exc:
                    raise AuditKeyUnavailable(str(exc)) from None
                remember_audit_keys(ring)
                self._audit_ring = ring
        if head_key is not None:
            if ring.secret(head_key) is None:
                raise AuditKeyUnavailable(
                    f"the audit log is chained under audit key {head_key}, which the audit key "
                    f"file {str(path)!r} does not hold: copy the current keyring here"
                )
        elif last_id > 0 and (
            ring.legacy is None
            or (ring.legacy.last_id, ring.legacy.last_hash) != (last_id, last_hash)
        ):
            raise AuditKeyUnavailable(
                f"the audit log holds {last_id} record(s) chained without a key that the audit "
                f"key file {str(path)!r} does not accept: they were written after the upgrade "
                "without the key, or this key file belongs to another database (run "
                "`bastion audit verify`)"
            )
        return ring

    def record_audit(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
        remote_addr: str | None = None,
    ) -> int:
        """Append an audit event and return its id.

        Each row stores ``prev_hash`` (the row before's hash), the id of the audit key it is
        chained under, and ``hash = HMAC-SHA256(key, prev_hash + canonical JSON of the row)``
        (:func:`audit_hash`), so editing, inserting or deleting a row breaks the chain
        (:meth:`check_audit_chain`), and nobody without the key, which is kept in a file outside
        the database, can recompute it. A holder of the key could; signed checkpoints of the
        head, kept elsewhere, catch that (``bastion audit checkpoint``). Appends are serialised
        on the ``audit_head`` row; a transaction that also bumps the store revision must bump
        it first.
        """
        values = audit_values(actor, action, target, detail, remote_addr)
        with self.engine.begin() as conn:
            return append_audit_values(conn, values)

    def rotate_audit_key(
        self, *, actor: str, remote_addr: str | None = None
    ) -> tuple[str | None, str]:
        """Start a new audit key epoch: add a fresh key to the keyring (old keys stay, so their
        records still verify) and append an ``audit.rotate-key`` record, the first chained
        under the new key. Returns (old key id or None, new key id)."""
        values = audit_values(actor, AUDIT_ROTATE_ACTION, "", None, remote_addr)
        with self.engine.begin() as conn:
            event = _append_event(conn, values, rotate=True)
        assert event.key_id is not None
        return event.detail.get("from"), event.key_id

    def audit_head(self) -> tuple[int, str, str | None]:
        """The head as the log says it ends: last record id, its hash and its key id."""
        with self.engine.connect() as conn:
            head = conn.execute(select(audit_head_t).where(audit_head_t.c.id == 1)).one()
        return int(head.last_id), str(head.last_hash), head.key_id

    def audit_record_hash(self, record_id: int) -> str | None:
        """The stored chain hash of record ``record_id`` (None: no such record)."""
        with self.engine.connect() as conn:
            found = conn.execute(select(audit_t.c.hash).where(audit_t.c.id == record_id)).first()
        return None if found is None else str(found[0])

    def iter_audit(self, *, since_id: int = 0, limit: int = 1000) -> list[AuditEvent]:
        """Up to ``limit`` events with ids above ``since_id``, oldest first."""
        since_id, limit = paging(since_id, limit, 10_000)
        stmt = select(audit_t).where(audit_t.c.id > since_id).order_by(audit_t.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [to_audit(r) for r in conn.execute(stmt)]

    def verify_audit_chain(self) -> int | None:
        """None when the log is intact, else the id of the first row that was changed, inserted
        or removed (for rows cut off the end, the first missing id). :meth:`check_audit_chain`
        says what happened."""
        check = self.check_audit_chain()
        if check.ok:
            return None
        if check.kind == "head":  # the record after the last one is what went missing
            return check.head_id + 1 if check.record_id is None else check.record_id + 1
        return check.record_id if check.record_id is not None else check.checked + 1

    def check_audit_chain(self) -> AuditCheck:
        """Walk the whole log in id order, in one snapshot, and say where and how it breaks.

        Ids come from the head row without gaps, each row's hash covers its own id and fields
        and its ``prev_hash`` names the row before, so: a row whose fields do not hash to its
        hash was edited (or, when they hash right under another id, moved); a gap in the ids is
        deleted rows; a row that hashes right but does not name its predecessor follows a
        replaced or inserted row; a log shorter than the head was cut off at the end; rows
        beyond the head were not appended through the log. A forger who rewrites every later
        row and the head is not caught here: that needs the head hash kept somewhere else.

        Keyed records are checked with their key from the audit key file (a key it lacks is a
        problem); unkeyed records only where the file accepts them, as the legacy records the
        log held when it was upgraded (all of them while there is no file yet). The key may only
        change at an ``audit.rotate-key`` record, to a key newer in the file.
        """
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if not sqlite:  # one snapshot: rows appended meanwhile are neither judged nor extra
                conn.execution_options(isolation_level="REPEATABLE READ")
            head = conn.execute(select(audit_head_t).where(audit_head_t.c.id == 1)).one()
            head_id, head_hash = int(head.last_id), str(head.last_hash)
            # Read after the snapshot began: a key rotated meanwhile is on disk before its record
            # commits, so every key the snapshot can name is in the file.
            try:
                ring = self.read_audit_keyring()
            except AuditKeyUnavailable as exc:
                return AuditCheck(
                    ok=False,
                    checked=0,
                    head_id=head_id,
                    head_hash=head_hash,
                    problem=f"cannot check the keyed records: {exc}",
                    kind="key",
                )
            # Read the columns SQLite could hold anything in as text, so a mangled row is
            # reported as edited rather than stopping the check with a decoding error.
            at_col = cast(audit_t.c.at, Text).label("at") if sqlite else audit_t.c.at
            stmt = (
                select(*(c for c in audit_t.c if c.name not in ("at", "detail")))
                .add_columns(at_col, cast(audit_t.c.detail, Text).label("detail"))
                .where(audit_t.c.id <= head_id)
                .order_by(audit_t.c.id)
            )
            walk = ChainWalk(head_id, head_hash, ring, head.key_id, str(self.audit_key_file))
            for row in conn.execution_options(yield_per=5000).execute(stmt):
                found = walk.step(row)
                if found is not None:
                    return found
            found = walk.finish()
            if found is not None:
                return found
            extra = conn.execute(
                select(func.count(), func.min(audit_t.c.id)).where(audit_t.c.id > head_id)
            ).one()
        if extra[0]:
            return walk.fail(
                "extra",
                int(extra[1]),
                f"{extra[0]} record(s) from id {extra[1]} lie beyond the head (record "
                f"{head_id}): they were added to the table, not appended through the log",
            )
        return AuditCheck(
            ok=True,
            checked=walk.checked,
            head_id=head_id,
            head_hash=head_hash,
            legacy=walk.legacy,
            key_id=walk.key,
        )

    def recent_audit(
        self, limit: int = 50, *, action: str | None = None, before_id: int | None = None
    ) -> list[AuditEvent]:
        """Up to ``limit`` events, newest first. ``action`` keeps that action and the ones under
        it (``login`` or ``login.`` keeps ``login.success``, ``login.failure``...); pass the
        last id seen as ``before_id`` to page back."""
        _, limit = paging(0, limit, 10_000)
        stmt = select(audit_t).order_by(audit_t.c.id.desc()).limit(limit)
        if action is not None:
            prefix = short_text("action", action, 64, empty=False).strip().rstrip(".")
            stmt = stmt.where(
                or_(
                    audit_t.c.action == prefix,
                    audit_t.c.action.startswith(prefix + ".", autoescape=True),
                )
            )
        if before_id is not None:
            start, _ = paging(before_id, 1, 1)
            stmt = stmt.where(audit_t.c.id < start)
        with self.engine.connect() as conn:
            return [to_audit(r) for r in conn.execute(stmt)]


def audit_values(
    actor: object, action: object, target: object, detail: object, remote_addr: object
) -> dict[str, Any]:
    action = short_text("action", action, 64, empty=False)
    if not _ACTION_RE.match(action):
        raise InvalidInput(
            f"invalid audit action {action!r}: use dotted lowercase words like 'bank.create'"
        )
    return {
        "actor": short_text("actor", actor, 255, empty=False),
        "action": action,
        "target": short_text("target", target, 2000),
        "detail": json_doc("detail", {} if detail is None else detail, dict, 65_536),
        "remote_addr": None if remote_addr is None else short_text("remote_addr", remote_addr, 64),
    }


def maybe_audit(
    actor: str | None,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
    remote_addr: str | None,
) -> dict[str, Any] | None:
    """The audit event a change made by ``actor`` records (None without an actor), validated
    before the change starts so bad input fails it cleanly."""
    if actor is None:
        return None
    return audit_values(actor, action, target[:2000], detail, remote_addr)


def append_if(conn: Connection, audit: dict[str, Any] | None) -> None:
    if audit is not None:
        append_audit_values(conn, audit)


def append_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> int:
    """Append an audit event inside the caller's transaction, so the event and the change it
    records commit or roll back together. A transaction that also bumps the store revision must
    bump it before calling this (lock order: ``store_state``, then ``audit_head``)."""
    return append_audit_values(conn, audit_values(actor, action, target, detail, remote_addr))


def append_audit_values(conn: Connection, values: dict[str, Any]) -> int:
    return _append_event(conn, values).id


def _append_event(conn: Connection, values: dict[str, Any], *, rotate: bool = False) -> AuditEvent:
    """Append one event inside ``conn``'s transaction, chained under the key the head names (the
    keyring's newest for the first keyed record). Bumping the head first takes its lock, so the
    id, the previous hash and the key are read and replaced by one appender at a time. With
    ``rotate``, a new key is added to the keyring and the event, chained under it, records the
    change."""
    last_id, prev, head_key = conn.execute(
        update(audit_head_t)
        .where(audit_head_t.c.id == 1)
        .values(last_id=audit_head_t.c.last_id + 1)
        .returning(audit_head_t.c.last_id, audit_head_t.c.last_hash, audit_head_t.c.key_id)
    ).one()
    store = _audit_store(conn)
    ring = store._keyring_for_append(head_key, last_id - 1, prev)
    key_id = head_key or ring.newest.key_id
    if rotate:
        try:
            ring, new = ring.rotate()
        except AuditKeyError as exc:
            raise AuditKeyUnavailable(str(exc)) from None
        remember_audit_keys(ring)
        with store._audit_lock:
            store._audit_ring = ring
        values = {**values, "target": new.key_id, "detail": {"from": head_key, "to": new.key_id}}
        key_id = new.key_id
    event = AuditEvent(id=last_id, at=utcnow(), prev_hash=prev, hash="", key_id=key_id, **values)
    event = replace(event, hash=audit_hash(event, ring.secret(key_id)))
    conn.execute(
        insert(audit_t).values(
            id=event.id,
            at=event.at,
            prev_hash=prev,
            hash=event.hash,
            key_id=key_id,
            **values,
        )
    )
    conn.execute(
        update(audit_head_t)
        .where(audit_head_t.c.id == 1)
        .values(last_hash=event.hash, key_id=key_id)
    )
    return event


def _audit_store(conn: Connection) -> AuditLog:
    ref = conn.get_execution_options().get(_AUDIT_STORE)
    store = ref() if ref is not None else None
    if store is None:
        raise AuditKeyUnavailable(
            "cannot append to the audit log on a connection not opened through a Store: the "
            "Store holds the audit key"
        )
    return store

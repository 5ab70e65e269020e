"""API keys in the database: :class:`KeyOps`, the key half of :class:`bastion.db.Store`
(create, list, revoke, verify a presented token and note its use)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import (
    IntegrityError,
    SQLAlchemyError,
)

from bastion.accounts.rows import ApiKeyRow, UserRow
from bastion.banks.model import (
    utcnow,
)
from bastion.keys import (
    ApiKey,
    format_token,
    hash_secret,
    key_user,
    new_key_id,
    new_salt,
    new_secret,
    parse_scopes,
    parse_token,
    validate_key_name,
    verify_secret,
)
from bastion.store.audit import append_audit_values, audit_values
from bastion.store.engine import SQLITE_BUSY_MS, Database
from bastion.store.errors import (
    InvalidInput,
    KeyExists,
    KeyNotFound,
    StoreError,
)

keys_t = ApiKeyRow.__table__

#: How long a ``last_used_at`` update may wait for a lock before it is skipped.
_TOUCH_WAIT_MS = 100


#: ``last_used_at`` is only as precise as this, to save a write per request.
KEY_TOUCH_INTERVAL = timedelta(minutes=1)


def _key_name(name: str) -> str:
    try:
        return validate_key_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _check_key_user(conn: Connection, name: str) -> int:
    """The id of the console user a key is bound to, who must exist and be enabled."""
    users_t = UserRow.__table__
    row = conn.execute(
        select(users_t.c.id, users_t.c.disabled).where(users_t.c.name == name)
    ).first()
    if row is None:
        raise InvalidInput(f"no console user named {name!r} to bind the key to")
    if row.disabled:
        raise InvalidInput(f"console user {name!r} is disabled; a key cannot act as them")
    return int(row.id)


def _key_select() -> Any:
    """Keys with the name of the console user each is bound to (``user_name``, or NULL)."""
    users_t = UserRow.__table__
    return select(keys_t, users_t.c.name.label("user_name")).select_from(
        keys_t.outerjoin(users_t, users_t.c.id == keys_t.c.user_id)
    )


def _find_key(conn: Connection, name: str) -> Row[Any] | None:
    if not isinstance(name, str):
        return None
    return conn.execute(_key_select().where(keys_t.c.name == name.lower())).first()


def _to_key(r: Row[Any]) -> ApiKey:
    return ApiKey(
        id=r.id,
        key_id=r.key_id,
        name=r.name,
        scopes=frozenset(r.scopes or ()),
        created_at=r.created_at,
        last_used_at=r.last_used_at,
        revoked_at=r.revoked_at,
        expires_at=r.expires_at,
        user=r.user_name,
        created_by=r.created_by,
    )


class KeyOps(Database):
    """API keys (a part of :class:`bastion.db.Store`)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # key pk -> earliest time this process tries to update its last_used_at again.
        self._touch_after: dict[int, datetime] = {}

    def create_api_key(
        self,
        name: str,
        scopes: str | Iterable[str],
        *,
        expires_at: datetime | None = None,
        actor: str | None = None,
        remote_addr: str | None = None,
        user: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns it and its token, which is never stored and cannot be shown
        again. With ``actor``, a ``key.create`` audit event is written in the same transaction,
        and the actor is kept as the key's ``created_by``.

        ``user`` binds the key to that console user (it acts as them on ``/v1/cases``): the
        user must exist and be enabled now, checked in the same transaction. Callers decide who
        may bind (the user themself in the console, an operator on the host); the store only
        refuses a name ``<user>@<label>`` on a key not bound to that user, so a name never
        claims a user the key does not act as."""
        name = _key_name(name)
        named = key_user(name)
        bound = user.lower() if isinstance(user, str) else None
        if user is not None and not bound:
            raise InvalidInput("user must be a console user's name")
        if named is not None and named != bound:
            raise InvalidInput(
                f"a key named {name!r} must be bound to the console user {named!r}: only "
                f"{named!r} (the console's My API keys page) or an operator on the host "
                f"(`bastion key create {name}`) may create it"
            )
        try:
            scope_set = parse_scopes(scopes)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        now = utcnow()
        if expires_at is not None:
            if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
                raise InvalidInput("expires_at must be a timezone-aware datetime")
            if expires_at <= now:
                raise InvalidInput(f"expires_at {expires_at.isoformat()} is in the past")
        for _attempt in range(5):
            key_id, secret, salt = new_key_id(), new_secret(), new_salt()
            audit = None
            if actor is not None:
                detail = {
                    "key_id": key_id,
                    "scopes": sorted(scope_set),
                    "expires_at": expires_at.isoformat() if expires_at else None,
                }
                if bound is not None:
                    detail["user"] = bound
                audit = audit_values(actor, "key.create", name, detail, remote_addr)
            try:
                with self.engine.begin() as conn:
                    if _find_key(conn, name) is not None:
                        raise KeyExists(f"an API key named {name!r} already exists")
                    user_id = _check_key_user(conn, bound) if bound is not None else None
                    conn.execute(
                        insert(keys_t).values(
                            key_id=key_id,
                            name=name,
                            salt=salt,
                            secret_hash=hash_secret(secret, salt),
                            scopes=sorted(scope_set),
                            created_at=now,
                            expires_at=expires_at,
                            user_id=user_id,
                            created_by=actor,
                        )
                    )
                    if audit is not None:
                        append_audit_values(conn, audit)
            except IntegrityError:
                with self.engine.connect() as conn:
                    if _find_key(conn, name) is not None:
                        raise KeyExists(f"an API key named {name!r} already exists") from None
                continue  # a key_id collision: draw again
            return self.get_api_key(name), format_token(key_id, secret)
        raise StoreError("could not allocate a unique key id")  # pragma: no cover

    def get_api_key(self, name: str) -> ApiKey:
        with self.engine.connect() as conn:
            row = _find_key(conn, name)
        if row is None:
            raise KeyNotFound(f"no API key named {name!r}")
        return _to_key(row)

    def list_api_keys(self, *, user: str | None = None) -> list[ApiKey]:
        """Every key by name (with ``user``, those bound to that console user), revoked and
        expired ones included; no secret material."""
        stmt = _key_select().order_by(keys_t.c.name)
        if user is not None:
            stmt = stmt.where(UserRow.__table__.c.name == user)
        with self.engine.connect() as conn:
            return [_to_key(r) for r in conn.execute(stmt)]

    def revoke_api_key(
        self, name: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> ApiKey:
        """Revoke a key for good, keeping its row for the record. Revoking twice keeps the first
        time. With ``actor``, a ``key.revoke`` audit event is written in the same transaction."""
        with self.engine.begin() as conn:
            row = _find_key(conn, name)
            if row is None:
                raise KeyNotFound(f"no API key named {name!r}")
            if row.revoked_at is None:
                conn.execute(
                    update(keys_t).where(keys_t.c.id == row.id).values(revoked_at=utcnow())
                )
            if actor is not None:
                detail = {"key_id": row.key_id, "already_revoked": row.revoked_at is not None}
                append_audit_values(
                    conn, audit_values(actor, "key.revoke", row.name, detail, remote_addr)
                )
        return self.get_api_key(row.name)

    def verify_api_key(self, token: object) -> ApiKey | None:
        """The key a bearer token belongs to, or None if the token is malformed, unknown, wrong,
        revoked or expired. Costs one indexed read; ``last_used_at`` is written at most once a
        minute per key, and that write gives up quickly rather than queue behind a bulk import."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self.engine.connect() as conn:
            row = conn.execute(_key_select().where(keys_t.c.key_id == key_id)).first()
        if row is None:
            verify_secret(secret, None, None)
            return None
        if not verify_secret(secret, row.salt, row.secret_hash):
            return None
        key = _to_key(row)
        now = utcnow()
        if not key.is_active(now):
            return None
        if (key.last_used_at is None or now - key.last_used_at >= KEY_TOUCH_INTERVAL) and (
            self._touch_after.get(key.id, now) <= now
        ):
            self._touch_after[key.id] = now + KEY_TOUCH_INTERVAL
            if self._touch_key(key, now):
                key = replace(key, last_used_at=now)
        return key

    def _touch_key(self, key: ApiKey, now: datetime) -> bool:
        """Best effort: a busy database skips the update rather than stalling the request. The
        same transaction records ``key.use`` in the audit log, so key use is audited at the
        granularity of ``KEY_TOUCH_INTERVAL`` without a write per request."""
        pk = key.id
        stmt = (
            update(keys_t)
            .where(
                keys_t.c.id == pk,
                or_(
                    keys_t.c.last_used_at.is_(None),
                    keys_t.c.last_used_at <= now - KEY_TOUCH_INTERVAL,
                ),
            )
            .values(last_used_at=now)
        )
        try:
            with self.engine.connect() as conn:
                sqlite = conn.dialect.name == "sqlite"
                raw = conn.connection.dbapi_connection
                if sqlite and raw is not None:
                    raw.execute(f"PRAGMA busy_timeout={_TOUCH_WAIT_MS}")
                try:
                    with conn.begin():
                        if not sqlite:
                            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_TOUCH_WAIT_MS}ms'")
                        if conn.execute(stmt).rowcount == 0:
                            return False
                        append_audit_values(
                            conn,
                            audit_values(f"key:{key.name}", "key.use", key.key_id, None, None),
                        )
                        return True
                finally:
                    if sqlite and raw is not None:
                        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        except SQLAlchemyError:
            return False

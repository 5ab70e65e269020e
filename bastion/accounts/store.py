"""Console users, logins, sessions and exposure counters in the store.

Every change is audited in the same transaction as the change itself. Times come from the ``now``
callable so expiry and lockout can be tested without waiting.

Logins are throttled per client address, never per account (a per-name lock let anyone lock
any user out): an address may fail THROTTLE_FREE_FAILURES times within THROTTLE_WINDOW, then must
wait before each further attempt, longer after every failure (``bastion.accounts.throttle_until``).
The wait is checked before the (slow, 64 MiB) password hash runs, and an attempt is counted as a
failure *before* its check, so parallel guesses cannot outrun the count; a success from the
address clears it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from math import isfinite
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Integer, String, delete, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bastion.accounts.model import (
    ADMIN,
    DEFAULT_QUEUES,
    SESSION_TOUCH_INTERVAL,
    THROTTLE_KEEP,
    THROTTLE_WINDOW,
    LoginFailed,
    LoginLocked,
    LoginThrottled,
    PasswordHasher,
    Session,
    User,
    check_password,
    default_hasher,
    new_csrf_token,
    new_session_token,
    throttle_key,
    throttle_until,
    token_digest,
    user_actor,
    validate_queues,
    validate_role,
    validate_user_name,
    well_formed_token,
)
from bastion.accounts.rows import ExposureRow, LoginThrottleRow, UserRow, UserSessionRow
from bastion.banks.model import utcnow
from bastion.store.audit import append_audit
from bastion.store.errors import InvalidInput, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from bastion.db import Store

users_t = UserRow.__table__
sessions_t = UserSessionRow.__table__
throttle_t = LoginThrottleRow.__table__
exposure_t = ExposureRow.__table__

#: Audit actor for login attempts: nobody is logged in yet.
ANONYMOUS = "anonymous"
#: Longest absolute session the store accepts, whatever the settings say.
MAX_SESSION_HOURS = 24 * 31

__all__ = [
    "AccountStore",
    "LoginFailed",
    "LoginLocked",
    "LoginThrottled",
    "Session",
    "User",
    "UserExists",
    "UserNotFound",
    "record_exposure_in",
]


class UserNotFound(StoreError):
    pass


class UserExists(StoreError):
    pass


class AccountStore:
    """Users, logins, sessions and exposure counters on top of a :class:`~bastion.db.Store`.

    ``hasher`` defaults to the process-wide argon2id hasher; ``now`` (returning an aware UTC
    datetime) is the clock for every time written or compared here.
    """

    def __init__(
        self,
        store: Store,
        *,
        hasher: PasswordHasher | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.hasher = hasher or default_hasher()
        self._now = now

    # -- plumbing ----------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.store.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"database error: {_first_line(exc)}") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.store.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"database error: {_first_line(exc)}") from None

    def _clock(self) -> datetime:
        now = self._now()
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise TypeError("the clock must return an aware datetime")
        return now.astimezone(UTC)

    # -- users -------------------------------------------------------------------------------------

    def create_user(
        self,
        name: str,
        role: str,
        password: str,
        queues: Iterable[str] = DEFAULT_QUEUES,
        *,
        actor: str,
        remote_addr: str | None = None,
    ) -> User:
        """Create a user; ``user.create`` is audited (role and queues, never the password)."""
        name = _valid(validate_user_name, name)
        role = _valid(validate_role, role)
        queue_list = _valid(validate_queues, queues)
        password = _valid_password(password, name)
        password_hash = self.hasher.hash(password)
        now = self._clock()
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(users_t).values(
                        name=name,
                        role=role,
                        queues=list(queue_list),
                        password_hash=password_hash,
                        disabled=False,
                        created_at=now,
                        updated_at=now,
                        password_changed_at=now,
                        last_login_at=None,
                    )
                )
                detail = {"role": role, "queues": list(queue_list)}
                append_audit(
                    conn,
                    actor=actor,
                    action="user.create",
                    target=name,
                    detail=detail,
                    remote_addr=remote_addr,
                )
        except IntegrityError:
            raise UserExists(f"a user named {name!r} already exists") from None
        return self.get_user(name)

    def get_user(self, name: str) -> User:
        with self._read() as conn:
            row = _find_user(conn, name)
        if row is None:
            raise UserNotFound(f"no user named {_shown_name(name)!r}")
        return _to_user(row)

    def list_users(self) -> list[User]:
        """Every user by name, disabled ones included."""
        with self._read() as conn:
            rows = conn.execute(select(users_t).order_by(users_t.c.name))
            return [_to_user(r) for r in rows]

    def set_password(
        self, name: str, password: str, *, actor: str, remote_addr: str | None = None
    ) -> User:
        """Set a new password and end the user's sessions (a changed password must lock out
        whoever knew the old one). Audited as ``user.password``."""
        key = _valid(validate_user_name, name)
        password_hash = self.hasher.hash(_valid_password(password, key))
        now = self._clock()
        with self._tx() as conn:
            row = _lock_user(conn, key, now)
            conn.execute(
                update(users_t)
                .where(users_t.c.id == row.id)
                .values(password_hash=password_hash, password_changed_at=now)
            )
            ended = _end_sessions(conn, row.id)
            append_audit(
                conn,
                actor=actor,
                action="user.password",
                target=row.name,
                detail={"sessions_ended": ended},
                remote_addr=remote_addr,
            )
        return self.get_user(key)

    def set_role(self, name: str, role: str, *, actor: str, remote_addr: str | None = None) -> User:
        """Change a user's role (in force at their next request). The last active admin cannot
        be demoted."""
        role = _valid(validate_role, role)
        now = self._clock()
        with self._tx() as conn:
            row = _lock_user(conn, name, now)
            if row.role == ADMIN and role != ADMIN and not row.disabled:
                _keep_an_admin(conn, row, "change the role of")
            conn.execute(update(users_t).where(users_t.c.id == row.id).values(role=role))
            append_audit(
                conn,
                actor=actor,
                action="user.role",
                target=row.name,
                detail={"from": row.role, "to": role},
                remote_addr=remote_addr,
            )
        return self.get_user(row.name)

    def set_queues(
        self, name: str, queues: Iterable[str], *, actor: str, remote_addr: str | None = None
    ) -> User:
        """Replace the queues a reviewer works (other roles' access does not depend on them)."""
        queue_list = list(_valid(validate_queues, queues))
        now = self._clock()
        with self._tx() as conn:
            row = _lock_user(conn, name, now)
            conn.execute(update(users_t).where(users_t.c.id == row.id).values(queues=queue_list))
            append_audit(
                conn,
                actor=actor,
                action="user.queues",
                target=row.name,
                detail={"from": list(row.queues or ()), "to": queue_list},
                remote_addr=remote_addr,
            )
        return self.get_user(row.name)

    def set_disabled(
        self, name: str, disabled: bool, *, actor: str, remote_addr: str | None = None
    ) -> User:
        """Disable (ending every session at once) or re-enable a user. Audited as
        ``user.disable`` / ``user.enable``. The last active admin cannot be disabled."""
        if not isinstance(disabled, bool):
            raise InvalidInput(f"disabled must be True or False, not {disabled!r}")
        now = self._clock()
        with self._tx() as conn:
            row = _lock_user(conn, name, now)
            if disabled and row.role == ADMIN and not row.disabled:
                _keep_an_admin(conn, row, "disable")
            conn.execute(update(users_t).where(users_t.c.id == row.id).values(disabled=disabled))
            ended = _end_sessions(conn, row.id) if disabled else 0
            detail: dict[str, Any] = {"already": bool(row.disabled) == disabled}
            if disabled:
                detail["sessions_ended"] = ended
            append_audit(
                conn,
                actor=actor,
                action="user.disable" if disabled else "user.enable",
                target=row.name,
                detail=detail,
                remote_addr=remote_addr,
            )
        return self.get_user(row.name)

    def throttled(self) -> dict[str, datetime]:
        """Client addresses (IPv6: their /64) that must wait before their next login attempt,
        and until when."""
        now = self._clock()
        with self._read() as conn:
            rows = conn.execute(
                select(throttle_t.c.address, throttle_t.c.wait_until)
                .where(throttle_t.c.wait_until > now)
                .order_by(throttle_t.c.address)
            )
            return {r.address: r.wait_until for r in rows}

    def unthrottle(self, address: str, *, actor: str, remote_addr: str | None = None) -> bool:
        """Forget an address's failed logins (it may try again at once); True if it had to
        wait. Audited as ``login.unthrottle``."""
        key = throttle_key(address)
        now = self._clock()
        with self._tx() as conn:
            until = conn.execute(
                delete(throttle_t)
                .where(throttle_t.c.address == key)
                .returning(throttle_t.c.wait_until)
            ).scalar()
            waiting = until is not None and until > now
            append_audit(
                conn,
                actor=actor,
                action="login.unthrottle",
                target=key,
                detail={"was_waiting": waiting},
                remote_addr=remote_addr,
            )
        return waiting

    # -- logins ------------------------------------------------------------------------------------

    def authenticate(self, name: str, password: str, *, remote_addr: str | None = None) -> User:
        """The user ``name`` if ``password`` is theirs and they are enabled; otherwise
        :class:`LoginFailed` with one message whatever the reason (the audit log records the
        reason), or :class:`LoginThrottled`, before any password is hashed, while the client
        address (``remote_addr``) must wait after too many failures. Unknown names cost a
        password check too, so timing does not tell them apart. A hash made with older argon2
        parameters is replaced on success."""
        now = self._clock()
        address = throttle_key(remote_addr)
        self._admit(address, now)
        try:
            key = validate_user_name(name)
        except ValueError:
            self.hasher.verify(None, password)
            self._fail(address, _shown_name(name), "invalid_name", now, remote_addr)
            raise LoginFailed() from None
        with self._read() as conn:
            row = _find_user(conn, key)
        ok = self.hasher.verify(row.password_hash if row is not None else None, password)
        if row is None:
            reason = "unknown_user"
        elif not ok:
            reason = "wrong_password"
        elif row.disabled:
            reason = "disabled"
        else:
            new_hash = None
            if self.hasher.needs_rehash(row.password_hash):
                new_hash = self.hasher.hash(password)
            user = self._login(row, new_hash, address, now, remote_addr)
            if user is not None:
                return user
            reason = "changed_meanwhile"  # password changed or user disabled during the check
        self._fail(address, key, reason, now, remote_addr)
        raise LoginFailed()

    def _admit(self, address: str, now: datetime) -> None:
        """Let this attempt from ``address`` go on to a password check, counting it as a failure
        until it proves otherwise; :class:`LoginThrottled` if the address must wait. A waiting
        address is refused on a plain read, so a flood of refused attempts writes nothing."""
        with self._read() as conn:
            until = conn.execute(
                select(throttle_t.c.wait_until).where(throttle_t.c.address == address)
            ).scalar()
        if until is not None and until > now:
            raise LoginThrottled(until)
        with self._tx() as conn:
            row = _throttle(conn, address, now)
            failures = _recent(row.failures, now)
            until = throttle_until(failures)
            if until is not None and until > now:  # another attempt got in first
                raise LoginThrottled(until)
            failures = [*failures, now][-THROTTLE_KEEP:]
            conn.execute(
                update(throttle_t)
                .where(throttle_t.c.address == address)
                .values(
                    failures=[f.isoformat() for f in failures],
                    wait_until=throttle_until(failures),
                    updated_at=now,
                )
            )

    def _login(
        self,
        row: Row[Any],
        new_hash: str | None,
        address: str,
        now: datetime,
        remote_addr: str | None,
    ) -> User | None:
        with self._tx() as conn:
            values: dict[str, Any] = {"last_login_at": now}
            if new_hash is not None:
                values["password_hash"] = new_hash
            done = conn.execute(
                update(users_t)
                .where(
                    users_t.c.id == row.id,
                    users_t.c.password_hash == row.password_hash,
                    users_t.c.disabled.is_(False),
                )
                .values(**values)
            ).rowcount
            if not done:
                return None
            conn.execute(delete(throttle_t).where(throttle_t.c.address == address))
            append_audit(
                conn,
                actor=user_actor(row.name),
                action="login.success",
                target=row.name,
                detail={"rehashed": new_hash is not None},
                remote_addr=remote_addr,
            )
        return self.get_user(row.name)

    def _fail(
        self, address: str, target: str, reason: str, now: datetime, remote_addr: str | None
    ) -> None:
        """Record a failed login (already counted by :meth:`_admit`); when it makes the address
        wait, that is recorded too (``login.throttled``)."""
        with self._tx() as conn:
            failures = _recent(_throttle(conn, address, now).failures, now)
            append_audit(
                conn,
                actor=ANONYMOUS,
                action="login.failure",
                target=target,
                detail={"reason": reason, "failures": len(failures)},
                remote_addr=remote_addr,
            )
            until = throttle_until(failures)
            if until is not None and until > now:
                append_audit(
                    conn,
                    actor=ANONYMOUS,
                    action="login.throttled",
                    target=address,
                    detail={"until": until.isoformat(), "failures": len(failures)},
                    remote_addr=remote_addr,
                )

    # -- sessions ----------------------------------------------------------------------------------

    def create_session(
        self,
        user: User,
        *,
        remote_addr: str | None = None,
        hours: float,
        idle_minutes: float,
    ) -> tuple[str, str]:
        """A new session for ``user``: ``(token, csrf_token)``. Only the token's SHA-256 is
        stored. It ends ``hours`` from now at the latest, or after ``idle_minutes`` unused.
        Raises LoginFailed if the user has been disabled (or removed) since logging in. The
        user's own dead sessions are deleted on the way, so the table stays small even if
        :meth:`cleanup_expired` never runs."""
        hours = _positive("hours", hours, MAX_SESSION_HOURS)
        idle_minutes = _positive("idle_minutes", idle_minutes, MAX_SESSION_HOURS * 60)
        idle = timedelta(minutes=idle_minutes)
        if remote_addr is not None and (not isinstance(remote_addr, str) or len(remote_addr) > 64):
            raise InvalidInput("remote_addr must be text of at most 64 characters")
        now = self._clock()
        token, csrf = new_session_token(), new_csrf_token()
        with self._tx() as conn:
            conn.execute(  # a write first: see _lock_user
                delete(sessions_t).where(
                    sessions_t.c.user_id == user.id,
                    or_(sessions_t.c.expires_at <= now, sessions_t.c.idle_until <= now),
                )
            )
            enabled = conn.execute(
                select(users_t.c.id).where(users_t.c.id == user.id, users_t.c.disabled.is_(False))
            ).first()
            if enabled is None:
                raise LoginFailed()
            conn.execute(
                insert(sessions_t).values(
                    token_hash=token_digest(token),
                    user_id=user.id,
                    csrf_token=csrf,
                    created_at=now,
                    last_seen_at=now,
                    idle_seconds=round(idle.total_seconds()),
                    idle_until=now + idle,
                    expires_at=now + timedelta(hours=hours),
                    remote_addr=remote_addr,
                )
            )
        return token, csrf

    def get_session(self, token: object) -> Session | None:
        """The live session for ``token``, or None (unknown, expired, idle too long, or its
        user disabled). Use moves the idle expiry forward, written at most once a minute."""
        if not well_formed_token(token):
            return None
        now = self._clock()
        with self._read() as conn:
            row = conn.execute(
                select(
                    sessions_t.c.id.label("session_id"),
                    sessions_t.c.csrf_token,
                    sessions_t.c.created_at.label("session_created_at"),
                    sessions_t.c.last_seen_at,
                    sessions_t.c.idle_seconds,
                    sessions_t.c.idle_until,
                    sessions_t.c.expires_at,
                    *_USER_COLUMNS,
                )
                .join(users_t, users_t.c.id == sessions_t.c.user_id)
                .where(sessions_t.c.token_hash == token_digest(token))
            ).first()
        if row is None or row.disabled or now >= row.expires_at or now >= row.idle_until:
            return None
        last_seen, idle_until = row.last_seen_at, row.idle_until
        if now - last_seen >= SESSION_TOUCH_INTERVAL:
            idle_until = now + timedelta(seconds=row.idle_seconds)
            if self._touch_session(row.session_id, now, idle_until):
                last_seen = now
            else:
                idle_until = row.idle_until
        return Session(
            id=row.session_id,
            user=_to_user(row),
            csrf_token=row.csrf_token,
            expires_at=row.expires_at,
            created_at=row.session_created_at,
            last_seen_at=last_seen,
            idle_expires_at=min(idle_until, row.expires_at),
        )

    def _touch_session(self, session_id: int, now: datetime, idle_until: datetime) -> bool:
        """Best effort: a busy database skips the write rather than fail the page. The
        conditions keep an expired session from being revived by a late write."""
        try:
            with self.store.engine.begin() as conn:
                return bool(
                    conn.execute(
                        update(sessions_t)
                        .where(
                            sessions_t.c.id == session_id,
                            sessions_t.c.last_seen_at <= now - SESSION_TOUCH_INTERVAL,
                            sessions_t.c.idle_until > now,
                            sessions_t.c.expires_at > now,
                        )
                        .values(last_seen_at=now, idle_until=idle_until)
                    ).rowcount
                )
        except SQLAlchemyError:
            return False

    def end_session(self, token: object, *, remote_addr: str | None = None) -> bool:
        """Log out: delete the session; ``logout`` is audited. False if there was none."""
        if not well_formed_token(token):
            return False
        with self._tx() as conn:
            row = conn.execute(
                select(sessions_t.c.id, users_t.c.name)
                .join(users_t, users_t.c.id == sessions_t.c.user_id)
                .where(sessions_t.c.token_hash == token_digest(token))
            ).first()
            if row is None:
                return False
            if not conn.execute(delete(sessions_t).where(sessions_t.c.id == row.id)).rowcount:
                return False  # ended by someone else meanwhile
            append_audit(
                conn,
                actor=user_actor(row.name),
                action="logout",
                target=row.name,
                detail={"session": row.id},
                remote_addr=remote_addr,
            )
        return True

    def end_user_sessions(self, name: str, *, actor: str, remote_addr: str | None = None) -> int:
        """End every session of ``name`` (audited as ``session.end``); how many there were."""
        now = self._clock()
        with self._tx() as conn:
            row = _lock_user(conn, name, now)
            ended = _end_sessions(conn, row.id)
            append_audit(
                conn,
                actor=actor,
                action="session.end",
                target=row.name,
                detail={"sessions_ended": ended},
                remote_addr=remote_addr,
            )
        return ended

    def cleanup_expired(self) -> int:
        """Delete expired and idle sessions, and login counts that no longer matter; returns the
        number of sessions deleted. Expired sessions are refused anyway: this only saves space,
        so a scheduler may run it whenever it likes."""
        now = self._clock()
        with self._tx() as conn:
            ended = conn.execute(
                delete(sessions_t).where(
                    or_(sessions_t.c.expires_at <= now, sessions_t.c.idle_until <= now)
                )
            ).rowcount
            conn.execute(
                delete(throttle_t).where(
                    throttle_t.c.updated_at <= now - THROTTLE_WINDOW,
                    or_(throttle_t.c.wait_until.is_(None), throttle_t.c.wait_until <= now),
                )
            )
        return int(ended)

    # -- exposure ----------------------------------------------------------------------------------

    def record_exposure(self, user_name: str) -> int:
        """Count one more item revealed by ``user_name`` today (UTC); today's count after it."""
        day = _day(self._clock())
        with self._tx() as conn:
            return record_exposure_in(conn, user_name, day=day)

    def record_exposure_in(self, conn: Connection, user_name: str) -> int:
        """:meth:`record_exposure` inside the caller's transaction (e.g. the reveal's)."""
        return record_exposure_in(conn, user_name, day=_day(self._clock()))

    def exposure_today(self, user_name: str) -> int:
        """Items ``user_name`` revealed today (UTC)."""
        day = _day(self._clock())
        with self._read() as conn:
            user = _find_user(conn, user_name)
            if user is None:
                raise UserNotFound(f"no user named {_shown_name(user_name)!r}")
            count = conn.execute(
                select(exposure_t.c.count).where(
                    exposure_t.c.user_id == user.id, exposure_t.c.day == day
                )
            ).scalar()
        return int(count or 0)


def record_exposure_in(conn: Connection, user_name: str, *, day: str) -> int:
    """Add one reveal to ``user_name``'s count for ``day`` (ISO date) inside the caller's
    transaction, so the count commits with the reveal it counts; returns the new count."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    key = _user_key(user_name)
    if key is None:
        raise UserNotFound(f"no user named {_shown_name(user_name)!r}")
    source = select(users_t.c.id, literal(day, String(10)), literal(1, Integer())).where(
        users_t.c.name == key
    )
    stmt = (
        dialect_insert(exposure_t)
        .from_select(["user_id", "day", "count"], source)
        .on_conflict_do_update(
            index_elements=["user_id", "day"], set_={"count": exposure_t.c.count + 1}
        )
        .returning(exposure_t.c.count)
    )
    count = conn.execute(stmt).scalar()
    if count is None:
        raise UserNotFound(f"no user named {_shown_name(user_name)!r}")
    return int(count)


# -- helpers -----------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _valid(check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _valid_password(password: object, name: str) -> str:
    try:
        return check_password(password, name=name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _positive(what: str, value: object, most: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not isfinite(value)
        or not 0 < value <= most
    ):
        raise InvalidInput(f"{what} must be a number above 0 and at most {most:g}, not {value!r}")
    return float(value)


def _shown_name(name: object) -> str:
    """A login name as the audit log and messages may show it: at most 64 characters of
    storable text, whatever was typed."""
    if not isinstance(name, str):
        return f"<{type(name).__name__}>"
    text = name[:64].replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")


def _user_key(name: object) -> str | None:
    try:
        return validate_user_name(name)
    except ValueError:
        return None


def _find_user(conn: Connection, name: object) -> Row[Any] | None:
    key = _user_key(name)
    if key is None:
        return None
    return conn.execute(select(users_t).where(users_t.c.name == key)).first()


def _lock_user(conn: Connection, name: object, now: datetime) -> Row[Any]:
    """The user's row, write-locked for the rest of the transaction. A write comes first so
    SQLite takes its write lock before anything is read (a read-then-write transaction can fail
    outright when another writer commits in between)."""
    key = _user_key(name)
    row = None
    if key is not None:
        row = conn.execute(
            update(users_t)
            .where(users_t.c.name == key)
            .values(updated_at=now)
            .returning(*users_t.c)
        ).first()
    if row is None:
        raise UserNotFound(f"no user named {_shown_name(name)!r}")
    return row


def _keep_an_admin(conn: Connection, row: Row[Any], doing: str) -> None:
    """Refuse to leave no active admin. Locking every active admin row first serialises two
    admins demoting each other at once."""
    admins = conn.execute(
        select(users_t.c.id)
        .where(users_t.c.role == ADMIN, users_t.c.disabled.is_(False))
        .order_by(users_t.c.id)
        .with_for_update()
    ).all()
    if not any(a.id != row.id for a in admins):
        raise InvalidInput(
            f"cannot {doing} {row.name!r}: it is the last active admin (create or enable "
            "another admin first)"
        )


def _end_sessions(conn: Connection, user_id: int) -> int:
    return int(conn.execute(delete(sessions_t).where(sessions_t.c.user_id == user_id)).rowcount)


def _throttle(conn: Connection, address: str, now: datetime) -> Row[Any]:
    """The address's throttle row, created if missing and write-locked (insert first: see
    :func:`_lock_user`)."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        dialect_insert(throttle_t)
        .values(address=address, failures=[], wait_until=None, updated_at=now)
        .on_conflict_do_nothing(index_elements=["address"])
    )
    return conn.execute(
        select(throttle_t).where(throttle_t.c.address == address).with_for_update()
    ).one()


def _recent(stored: object, now: datetime) -> list[datetime]:
    """The failure times still inside the window (unreadable entries count as now: a mangled row
    must not free an address)."""
    out = []
    for item in stored if isinstance(stored, list) else []:
        try:
            at = datetime.fromisoformat(item)
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
        except (TypeError, ValueError):
            at = now
        if at > now - THROTTLE_WINDOW:  # later than now too: another replica's clock runs ahead
            out.append(at)
    return sorted(out)


def _day(now: datetime) -> str:
    return now.astimezone(UTC).date().isoformat()


_USER_COLUMNS = tuple(
    users_t.c[name]
    for name in ("id", "name", "role", "queues", "disabled", "created_at", "last_login_at")
)


def _to_user(r: Row[Any]) -> User:
    return User(
        id=r.id,
        name=r.name,
        role=r.role,
        queues=tuple(r.queues or ()),
        disabled=bool(r.disabled),
        created_at=r.created_at,
        last_login_at=r.last_login_at,
    )

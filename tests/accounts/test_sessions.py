"""Sessions: only the token's SHA-256 stored, absolute and idle expiry, last-seen written at
most once a minute, void for disabled users, ended on logout, password change and disable."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bastion.accounts.model import LoginFailed, User
from bastion.accounts.store import AccountStore, sessions_t, users_t
from bastion.db import Store
from bastion.store import InvalidInput
from tests.fixtures.clock import Clock

from .conftest import PASSWORD, START


@pytest.fixture
def user(accounts: AccountStore) -> User:
    accounts.create_user("boss", "admin", PASSWORD, actor="cli:a")
    accounts.create_user("rae", "reviewer", PASSWORD, ["urgent"], actor="cli:a")
    return accounts.authenticate("rae", PASSWORD)


def _open(accounts: AccountStore, user: User, **kw: float) -> tuple[str, str]:
    return accounts.create_session(
        user,
        remote_addr="192.0.2.1",
        hours=kw.get("hours", 12),
        idle_minutes=kw.get("idle_minutes", 60),
    )


def _rows(store: Store) -> list[dict[str, object]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(sessions_t))]


def test_only_the_token_hash_is_stored(accounts: AccountStore, store: Store, user: User) -> None:
    token, csrf = _open(accounts, user)
    assert len(token) == 43 and len(csrf) == 43 and token != csrf
    [row] = _rows(store)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in [str(v) for v in row.values()]
    assert row["remote_addr"] == "192.0.2.1"
    session = accounts.get_session(token)
    assert session is not None
    assert (session.user.name, session.user.role, session.user.queues) == (
        "rae",
        "reviewer",
        ("urgent",),
    )
    assert session.csrf_token == csrf and session.csrf_ok(csrf) and not session.csrf_ok(token)
    assert session.expires_at == START + timedelta(hours=12)
    assert session.idle_expires_at == START + timedelta(minutes=60)
    # Knowing the stored hash does not help: it is not a token.
    assert accounts.get_session(str(row["token_hash"])) is None


def test_malformed_and_unknown_tokens(accounts: AccountStore, user: User) -> None:
    _open(accounts, user)
    for bad in [None, 12, "", "short", "x" * 500, "ä" * 43, "A" * 43]:
        assert accounts.get_session(bad) is None
        assert accounts.end_session(bad) is False


def test_absolute_expiry_holds_however_busy(
    accounts: AccountStore, clock: Clock, user: User
) -> None:
    token, _ = _open(accounts, user, hours=2, idle_minutes=60)
    for _ in range(3):
        clock.advance(minutes=39)
        assert accounts.get_session(token) is not None
    clock.advance(minutes=2)  # 1h59 in
    session = accounts.get_session(token)
    assert session is not None and session.idle_expires_at == session.expires_at
    clock.advance(minutes=1)
    assert accounts.get_session(token) is None


def test_idle_expiry_moves_with_use(accounts: AccountStore, clock: Clock, user: User) -> None:
    token, _ = _open(accounts, user, idle_minutes=30)
    clock.advance(minutes=29)
    assert accounts.get_session(token) is not None
    clock.advance(minutes=29)
    session = accounts.get_session(token)
    assert session is not None and session.idle_expires_at == clock.at + timedelta(minutes=30)
    clock.advance(minutes=30)
    assert accounts.get_session(token) is None
    clock.advance(minutes=1)
    assert accounts.get_session(token) is None  # a lapsed session stays lapsed


def test_last_seen_is_written_at_most_once_a_minute(
    accounts: AccountStore, store: Store, clock: Clock, user: User
) -> None:
    token, _ = _open(accounts, user)
    clock.advance(seconds=59)
    assert accounts.get_session(token) is not None
    assert _rows(store)[0]["last_seen_at"] == START
    clock.advance(seconds=1)
    assert accounts.get_session(token).last_seen_at == clock.at  # type: ignore[union-attr]
    [row] = _rows(store)
    assert row["last_seen_at"] == clock.at
    assert row["idle_until"] == clock.at + timedelta(minutes=60)
    clock.advance(seconds=30)
    accounts.get_session(token)
    assert _rows(store)[0]["last_seen_at"] == START + timedelta(minutes=1)


def test_a_disabled_user_has_no_session(accounts: AccountStore, store: Store, user: User) -> None:
    token, _ = _open(accounts, user)
    # Disabled behind the store's back: the lookup itself refuses the session.
    with store.engine.begin() as conn:
        conn.execute(update(users_t).where(users_t.c.name == "rae").values(disabled=True))
    assert accounts.get_session(token) is None
    with pytest.raises(LoginFailed):
        _open(accounts, user)
    with store.engine.begin() as conn:
        conn.execute(update(users_t).where(users_t.c.name == "rae").values(disabled=False))
    assert accounts.get_session(token) is not None
    # Disabled properly: the sessions are gone for good.
    accounts.set_disabled("rae", True, actor="user:boss")
    assert _rows(store) == []
    accounts.set_disabled("rae", False, actor="user:boss")
    assert accounts.get_session(token) is None
    disable = [e for e in store.iter_audit() if e.action == "user.disable"]
    assert disable[0].detail == {"already": False, "sessions_ended": 1}


def test_role_changes_apply_to_live_sessions(accounts: AccountStore, user: User) -> None:
    token, _ = _open(accounts, user)
    accounts.set_role("rae", "auditor", actor="user:boss")
    assert accounts.get_session(token).user.role == "auditor"  # type: ignore[union-attr]


def test_logout(accounts: AccountStore, store: Store, user: User) -> None:
    token, _ = _open(accounts, user)
    other, _ = _open(accounts, user)
    assert accounts.end_session(token, remote_addr="192.0.2.1") is True
    assert accounts.get_session(token) is None
    assert accounts.get_session(other) is not None
    assert accounts.end_session(token) is False
    [event] = [e for e in store.iter_audit() if e.action == "logout"]
    assert (event.actor, event.target, event.remote_addr) == ("user:rae", "rae", "192.0.2.1")


def test_ending_a_user_s_sessions(accounts: AccountStore, store: Store, user: User) -> None:
    mine = [_open(accounts, user)[0] for _ in range(3)]
    boss = accounts.get_user("boss")
    theirs, _ = _open(accounts, boss)
    assert accounts.end_user_sessions("rae", actor="user:boss") == 3
    assert all(accounts.get_session(t) is None for t in mine)
    assert accounts.get_session(theirs) is not None
    [event] = [e for e in store.iter_audit() if e.action == "session.end"]
    assert (event.actor, event.target, event.detail) == ("user:boss", "rae", {"sessions_ended": 3})


def test_a_new_password_ends_sessions(accounts: AccountStore, user: User) -> None:
    token, _ = _open(accounts, user)
    accounts.set_password("rae", "another long passphrase", actor="user:rae")
    assert accounts.get_session(token) is None


def test_cleanup_removes_only_dead_sessions(
    accounts: AccountStore, store: Store, clock: Clock, user: User
) -> None:
    short, _ = _open(accounts, user, hours=1)
    idle, _ = _open(accounts, user, idle_minutes=10)
    live, _ = _open(accounts, user)
    clock.advance(minutes=9)
    accounts.get_session(live)
    clock.advance(minutes=2)  # idle one lapsed
    assert accounts.cleanup_expired() == 1
    clock.advance(minutes=50)  # the one-hour one lapsed; live was idle 52 minutes
    assert accounts.cleanup_expired() == 1
    assert accounts.get_session(short) is None and accounts.get_session(idle) is None
    assert accounts.get_session(live) is not None
    assert len(_rows(store)) == 1


def test_a_new_session_clears_the_user_s_dead_ones(
    accounts: AccountStore, store: Store, clock: Clock, user: User
) -> None:
    _open(accounts, user, idle_minutes=10)
    boss = accounts.get_user("boss")
    _open(accounts, boss, idle_minutes=10)
    clock.advance(minutes=10)
    live, _ = _open(accounts, user)
    assert sorted(r["user_id"] for r in _rows(store)) == sorted([boss.id, user.id])
    assert accounts.get_session(live) is not None


def test_bad_session_limits_are_refused(accounts: AccountStore, store: Store, user: User) -> None:
    for kw in [{"hours": 0}, {"hours": -1}, {"hours": float("inf")}, {"idle_minutes": 0}]:
        with pytest.raises(InvalidInput, match="must be a number above 0"):
            _open(accounts, user, **kw)
    with pytest.raises(InvalidInput, match="hours must be"):
        accounts.create_session(user, hours="12", idle_minutes=60)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="at most 744"):
        _open(accounts, user, hours=10_000)
    assert _rows(store) == []

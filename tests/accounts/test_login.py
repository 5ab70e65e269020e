"""Logins: one answer for every failure, a dummy hash check for unknown names, lockout after
five failures in fifteen minutes (for unknown names too), rehash on parameter change."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from bastion.accounts import LOGIN_FAILED_MESSAGE, LoginFailed, LoginLocked
from bastion.store import Store
from bastion.store.accounts import AccountStore, throttle_t, users_t

from .conftest import PASSWORD, START, Clock, CountingHasher, Database


def _fail(accounts: AccountStore, name: str, password: str = "wrong password!") -> Exception:
    with pytest.raises(LoginFailed) as info:
        accounts.authenticate(name, password, remote_addr="198.51.100.4")
    return info.value


def _logins(store: Store) -> list[tuple[str, str, str, dict[str, object], str | None]]:
    return [
        (e.actor, e.action, e.target, e.detail, e.remote_addr)
        for e in store.iter_audit()
        if e.action.startswith("login.")
    ]


def test_success_is_recorded(accounts: AccountStore, store: Store, clock: Clock) -> None:
    accounts.create_user("ivy", "reviewer", PASSWORD, actor="cli:a")
    clock.advance(hours=1)
    user = accounts.authenticate("IVY", PASSWORD, remote_addr="203.0.113.9")
    assert (user.name, user.last_login_at) == ("ivy", START.replace(hour=10))
    assert _logins(store) == [
        ("user:ivy", "login.success", "ivy", {"rehashed": False}, "203.0.113.9")
    ]


def test_unknown_name_and_wrong_password_look_alike(
    accounts: AccountStore, store: Store, hasher: CountingHasher
) -> None:
    accounts.create_user("jo", "reviewer", PASSWORD, actor="cli:a")
    before = hasher.verifications
    wrong = _fail(accounts, "jo")
    unknown = _fail(accounts, "nobody-here")
    assert type(wrong) is type(unknown) is LoginFailed
    assert str(wrong) == str(unknown) == LOGIN_FAILED_MESSAGE
    # The unknown name cost an argon2 verification too (of a dummy hash).
    assert hasher.verifications - before == 2
    assert [(a, t, d["reason"], r) for _, a, t, d, r in _logins(store)] == [
        ("login.failure", "jo", "wrong_password", "198.51.100.4"),
        ("login.failure", "nobody-here", "unknown_user", "198.51.100.4"),
    ]


def test_disabled_users_cannot_log_in(accounts: AccountStore, store: Store) -> None:
    accounts.create_user("boss", "admin", PASSWORD, actor="cli:a")
    accounts.create_user("kit", "reviewer", PASSWORD, actor="cli:a")
    accounts.set_disabled("kit", True, actor="user:boss")
    assert str(_fail(accounts, "kit", PASSWORD)) == LOGIN_FAILED_MESSAGE
    assert _logins(store)[-1][3] == {"reason": "disabled", "failures": 1}
    accounts.set_disabled("kit", False, actor="user:boss")
    assert accounts.authenticate("kit", PASSWORD).name == "kit"


def test_invalid_names_fail_alike_and_are_recorded_safely(
    accounts: AccountStore, store: Store, hasher: CountingHasher
) -> None:
    for name in ["not a name", "x" * 5000, "nul\x00byte", "\ud800", 42]:
        assert str(_fail(accounts, name)) == LOGIN_FAILED_MESSAGE  # type: ignore[arg-type]
    assert hasher.verifications == 5
    targets = [t for _, _, t, _, _ in _logins(store)]
    assert targets == ["not a name", "x" * 64, "nulbyte", "?", "<int>"]
    with store.engine.connect() as conn:
        assert conn.execute(select(throttle_t)).all() == []  # no rows for impossible names


def test_five_failures_lock_the_name_for_fifteen_minutes(
    accounts: AccountStore, store: Store, clock: Clock, hasher: CountingHasher
) -> None:
    accounts.create_user("lee", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(4):
        assert type(_fail(accounts, "lee")) is LoginFailed
        clock.advance(minutes=2)
    fifth = _fail(accounts, "lee")
    assert isinstance(fifth, LoginLocked)
    locked_at = clock.at
    assert fifth.until == locked_at.replace(minute=locked_at.minute + 15)
    assert accounts.locked_names() == {"lee": fifth.until}
    # While locked, even the right password is refused, and not even checked.
    checks = hasher.verifications
    clock.advance(minutes=14, seconds=59)
    still = _fail(accounts, "lee", PASSWORD)
    assert isinstance(still, LoginLocked) and still.until == fifth.until
    assert hasher.verifications == checks
    clock.advance(seconds=1)
    assert accounts.authenticate("lee", PASSWORD).name == "lee"
    actions = [(a, d.get("reason")) for _, a, _, d, _ in _logins(store)]
    assert actions == [("login.failure", "wrong_password")] * 5 + [
        ("login.locked", None),
        ("login.failure", "locked"),
        ("login.success", None),
    ]
    locked_event = _logins(store)[5]
    assert locked_event[3] == {"until": fifth.until.isoformat(), "failures": 5}
    assert locked_event[4] == "198.51.100.4"


def test_failures_spread_wider_than_the_window_do_not_lock(
    accounts: AccountStore, clock: Clock
) -> None:
    accounts.create_user("max", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(12):
        assert type(_fail(accounts, "max")) is LoginFailed
        clock.advance(minutes=4)  # never five within fifteen minutes
    assert accounts.authenticate("max", PASSWORD).name == "max"


def test_a_success_clears_the_count(accounts: AccountStore) -> None:
    accounts.create_user("ned", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(4):
        _fail(accounts, "ned")
    accounts.authenticate("ned", PASSWORD)
    for _ in range(4):
        assert type(_fail(accounts, "ned")) is LoginFailed
    assert isinstance(_fail(accounts, "ned"), LoginLocked)


def test_unknown_names_lock_the_same_way(accounts: AccountStore, store: Store) -> None:
    for _ in range(4):
        assert type(_fail(accounts, "ghost")) is LoginFailed
    assert isinstance(_fail(accounts, "ghost"), LoginLocked)
    assert isinstance(_fail(accounts, "ghost"), LoginLocked)
    assert [a for _, a, _, _, _ in _logins(store)][-2:] == ["login.locked", "login.failure"]


def test_unlock(accounts: AccountStore, store: Store) -> None:
    accounts.create_user("ola", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(5):
        _fail(accounts, "ola")
    assert accounts.unlock("ola", actor="cli:a") is True
    assert accounts.locked_names() == {}
    assert accounts.authenticate("ola", PASSWORD).name == "ola"
    assert accounts.unlock("ola", actor="cli:a") is False
    assert [(e.action, e.detail) for e in store.iter_audit() if e.action == "user.unlock"] == [
        ("user.unlock", {"was_locked": True}),
        ("user.unlock", {"was_locked": False}),
    ]


def test_a_hash_with_old_parameters_is_replaced_at_login(
    store: Store, clock: Clock, accounts: AccountStore
) -> None:
    accounts.create_user("pat", "reviewer", PASSWORD, actor="cli:a")
    stronger = AccountStore(store, hasher=CountingHasher(time_cost=2, memory_cost=16), now=clock)

    def stored() -> str:
        with store.engine.connect() as conn:
            return conn.execute(select(users_t.c.password_hash)).scalar_one()

    assert stored().startswith("$argon2id$v=19$m=8,t=1,p=1$")
    stronger.authenticate("pat", PASSWORD)
    assert stored().startswith("$argon2id$v=19$m=16,t=2,p=1$")
    stronger.authenticate("pat", PASSWORD)
    assert [d for _, a, _, d, _ in _logins(store) if a == "login.success"] == [
        {"rehashed": True},
        {"rehashed": False},
    ]
    # A wrong password never rewrites the hash.
    before = stored()
    _fail(accounts, "pat")
    assert stored() == before


def test_parallel_guesses_cannot_outrun_the_lock(db: Database, clock: Clock) -> None:
    stores = [db.open() for _ in range(6)]
    hasher = CountingHasher()
    AccountStore(stores[0], hasher=hasher, now=clock).create_user(
        "quinn", "reviewer", PASSWORD, actor="cli:a"
    )
    outcomes: list[BaseException] = []
    lock = threading.Lock()

    def guess(s: Store, n: int) -> None:
        accounts = AccountStore(s, hasher=hasher, now=clock)
        for i in range(3):
            try:
                accounts.authenticate("quinn", f"guess number {n}-{i}")
            except BaseException as exc:
                with lock:
                    outcomes.append(exc)

    checks = hasher.verifications
    threads = [threading.Thread(target=guess, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 18 and all(isinstance(o, LoginFailed) for o in outcomes)
    # However the 18 guesses interleaved, only five passwords were ever checked.
    assert hasher.verifications - checks == 5
    # Four plain failures; the fifth locked the name, and the other thirteen found it locked.
    assert sum(type(o) is LoginFailed for o in outcomes) == 4
    assert "quinn" in AccountStore(stores[0], hasher=hasher, now=clock).locked_names()
    assert stores[0].verify_audit_chain() is None

"""Logins: one answer for every failure, a dummy hash check for unknown names, a throttle per
client address that refuses before any password is hashed (never a lock on the account), rehash
on parameter change."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from bastion.accounts.model import (
    LOGIN_FAILED_MESSAGE,
    LoginFailed,
    LoginThrottled,
    throttle_key,
    throttle_until,
)
from bastion.accounts.store import AccountStore, throttle_t, users_t
from bastion.db import Store
from tests.fixtures.clock import Clock

from .conftest import PASSWORD, START, CountingHasher, Database

ATTACKER = "198.51.100.4"
USER_ADDRESS = "203.0.113.9"


def _fail(
    accounts: AccountStore,
    name: str,
    password: str = "wrong password!",
    address: str | None = ATTACKER,
) -> Exception:
    with pytest.raises(LoginFailed) as info:
        accounts.authenticate(name, password, remote_addr=address)
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
    accounts: AccountStore, store: Store, hasher: CountingHasher, clock: Clock
) -> None:
    for name in ["not a name", "x" * 5000, "nul\x00byte", "\ud800", 42]:
        assert str(_fail(accounts, name)) == LOGIN_FAILED_MESSAGE  # type: ignore[arg-type]
        clock.advance(minutes=20)  # past any wait: each name is really checked
    assert hasher.verifications == 5
    targets = [t for _, a, t, _, _ in _logins(store) if a == "login.failure"]
    assert targets == ["not a name", "x" * 64, "nulbyte", "?", "<int>"]
    with store.engine.connect() as conn:
        rows = conn.execute(select(throttle_t.c.address)).all()
    assert rows == [(ATTACKER,)]  # counted against the address, whatever the name


def test_an_attackers_failures_never_lock_the_user_out_from_elsewhere(
    accounts: AccountStore, store: Store, clock: Clock
) -> None:
    """Issue 12, finding 14: failures used to lock the *name* for 15 minutes, so anyone could
    lock any user out. Now they hold back only the address they come from."""
    accounts.create_user("lee", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(5):
        assert type(_fail(accounts, "lee")) is LoginFailed
    throttled = _fail(accounts, "lee", PASSWORD)  # even the right password, from there
    assert isinstance(throttled, LoginThrottled)
    assert set(accounts.throttled()) == {ATTACKER}
    # The real user, from their own address, at once and while the attack goes on.
    assert accounts.authenticate("lee", PASSWORD, remote_addr=USER_ADDRESS).name == "lee"
    for _ in range(20):
        clock.advance(seconds=20)
        _fail(accounts, "lee")
        assert accounts.authenticate("lee", PASSWORD, remote_addr=USER_ADDRESS).name == "lee"
    assert set(accounts.throttled()) == {ATTACKER}
    assert store.verify_audit_chain() is None


def test_a_waiting_address_is_refused_before_any_password_is_hashed(
    accounts: AccountStore, store: Store, clock: Clock, hasher: CountingHasher
) -> None:
    accounts.create_user("max", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(5):
        _fail(accounts, "max")
    assert hasher.verifications == 5
    last = clock.at
    # Five failures: wait 15 s; then twice as long after each further failure, at most 15 min.
    for wait in (15, 30, 60, 120, 240, 480, 900, 900):
        refused = _fail(accounts, "max", PASSWORD)
        assert isinstance(refused, LoginThrottled) and refused.until == last + timedelta(
            seconds=wait
        )
        assert refused.retry_after(clock.at) == wait
        clock.advance(seconds=wait - 1)
        assert isinstance(_fail(accounts, "nobody-at-all", PASSWORD), LoginThrottled)
        checked = hasher.verifications
        clock.advance(seconds=1)
        assert type(_fail(accounts, "max")) is LoginFailed
        assert hasher.verifications == checked + 1
        last = clock.at
    assert accounts.throttled() == {ATTACKER: last + timedelta(minutes=15)}
    actions = [(a, t) for _, a, t, _, _ in _logins(store)]
    assert actions[:5] == [("login.failure", "max")] * 5
    assert actions[5] == ("login.throttled", ATTACKER)
    throttled = [d for _, a, _, d, _ in _logins(store) if a == "login.throttled"]
    assert throttled[0] == {"until": (START + timedelta(seconds=15)).isoformat(), "failures": 5}


def test_failures_age_out_and_a_success_clears_the_count(
    accounts: AccountStore, clock: Clock
) -> None:
    accounts.create_user("ned", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(12):
        assert type(_fail(accounts, "ned")) is LoginFailed
        clock.advance(minutes=16)  # never five within the hour
    clock.advance(hours=1)
    for _ in range(4):
        _fail(accounts, "ned")
    accounts.authenticate("ned", PASSWORD, remote_addr=ATTACKER)
    for _ in range(5):
        assert type(_fail(accounts, "ned")) is LoginFailed
    assert isinstance(_fail(accounts, "ned"), LoginThrottled)


def test_unknown_names_count_for_the_address_the_same_way(accounts: AccountStore) -> None:
    for n in range(5):
        assert type(_fail(accounts, f"ghost-{n}")) is LoginFailed
    assert isinstance(_fail(accounts, "ghost-5"), LoginThrottled)
    assert str(_fail(accounts, "someone", address="192.0.2.1")) == LOGIN_FAILED_MESSAGE


def test_addresses_are_counted_by_ipv4_address_and_ipv6_64(accounts: AccountStore) -> None:
    assert throttle_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert throttle_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert throttle_key("testclient") == "testclient" and throttle_key(None) == "unknown"
    assert throttle_key("x" * 100) == "x" * 64
    for n in range(5):  # five hosts of one /64 are one client
        _fail(accounts, "ivy", address=f"2001:db8:1:2::{n + 1}")
    assert isinstance(_fail(accounts, "ivy", address="2001:db8:1:2:ffff::9"), LoginThrottled)
    assert type(_fail(accounts, "ivy", address="2001:db8:1:3::1")) is LoginFailed
    assert type(_fail(accounts, "ivy", address="198.51.100.5")) is LoginFailed


def test_throttle_delays() -> None:
    at = [START + timedelta(seconds=i) for i in range(40)]
    assert throttle_until(at[:4]) is None
    assert throttle_until(at[:5]) == at[4] + timedelta(seconds=15)
    assert throttle_until(reversed(at[:7])) == at[6] + timedelta(seconds=60)
    assert throttle_until(at) == at[-1] + timedelta(minutes=15)


def test_unthrottle(accounts: AccountStore, store: Store) -> None:
    accounts.create_user("ola", "reviewer", PASSWORD, actor="cli:a")
    for _ in range(5):
        _fail(accounts, "ola")
    assert accounts.unthrottle(ATTACKER, actor="cli:a") is True
    assert accounts.throttled() == {}
    assert accounts.authenticate("ola", PASSWORD, remote_addr=ATTACKER).name == "ola"
    assert accounts.unthrottle(ATTACKER, actor="cli:a") is False
    assert [
        (e.action, e.target, e.detail) for e in store.iter_audit() if e.action == "login.unthrottle"
    ] == [
        ("login.unthrottle", ATTACKER, {"was_waiting": True}),
        ("login.unthrottle", ATTACKER, {"was_waiting": False}),
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


def test_parallel_guesses_cannot_outrun_the_throttle(db: Database, clock: Clock) -> None:
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
                accounts.authenticate("quinn", f"guess number {n}-{i}", remote_addr=ATTACKER)
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
    assert sum(type(o) is LoginFailed for o in outcomes) == 5
    assert sum(isinstance(o, LoginThrottled) for o in outcomes) == 13
    assert ATTACKER in AccountStore(stores[0], hasher=hasher, now=clock).throttled()
    assert stores[0].verify_audit_chain() is None

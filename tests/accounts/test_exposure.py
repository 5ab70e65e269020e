"""Exposure counters: reveals per user per UTC day, counted in the caller's transaction when
asked, exact under concurrent reveals."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bastion.accounts.store import AccountStore, UserNotFound, record_exposure_in
from bastion.db import Store
from tests.fixtures.clock import Clock

from .conftest import PASSWORD, CountingHasher, Database


@pytest.fixture
def two(accounts: AccountStore) -> AccountStore:
    accounts.create_user("sam", "reviewer", PASSWORD, actor="cli:a")
    accounts.create_user("tia", "reviewer", PASSWORD, actor="cli:a")
    return accounts


def test_counts_per_user_per_day(two: AccountStore, clock: Clock) -> None:
    assert two.exposure_today("sam") == 0
    assert [two.record_exposure("sam") for _ in range(3)] == [1, 2, 3]
    assert two.record_exposure("TIA") == 1
    assert (two.exposure_today("sam"), two.exposure_today("tia")) == (3, 1)
    clock.at = datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert two.record_exposure("sam") == 4
    clock.advance(seconds=1)  # midnight UTC: a new day
    assert two.exposure_today("sam") == 0
    assert two.record_exposure("sam") == 1
    clock.advance(days=-1)
    assert two.exposure_today("sam") == 4


def test_the_day_is_the_utc_day(store: Store, hasher: CountingHasher) -> None:
    tokyo = timezone(timedelta(hours=9))
    local = Clock(datetime(2025, 3, 2, 8, 0, tzinfo=tokyo))  # 23:00 UTC on 1 March
    accounts = AccountStore(store, hasher=hasher, now=local)
    accounts.create_user("uma", "reviewer", PASSWORD, actor="cli:a")
    accounts.record_exposure("uma")
    at_utc = AccountStore(store, hasher=hasher, now=lambda: datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    assert at_utc.exposure_today("uma") == 1


def test_counted_inside_the_caller_s_transaction(two: AccountStore, store: Store) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), store.engine.begin() as conn:
        assert record_exposure_in(conn, "sam", day="2025-03-01") == 1
        raise Abort
    assert two.exposure_today("sam") == 0
    with store.engine.begin() as conn:
        assert record_exposure_in(conn, "sam", day="2025-03-01") == 1
    assert two.exposure_today("sam") == 1
    with pytest.raises(UserNotFound), store.engine.begin() as conn:
        record_exposure_in(conn, "ghost", day="2025-03-01")


def test_concurrent_reveals_are_all_counted(db: Database, clock: Clock) -> None:
    stores = [db.open() for _ in range(4)]
    AccountStore(stores[0], hasher=CountingHasher(), now=clock).create_user(
        "val", "reviewer", PASSWORD, actor="cli:a"
    )
    seen: list[int] = []
    errors: list[BaseException] = []

    def reveal(s: Store) -> None:
        accounts = AccountStore(s, now=clock)
        try:
            for _ in range(10):
                seen.append(accounts.record_exposure("val"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reveal, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(seen) == list(range(1, 41))  # each reveal got its own count
    assert AccountStore(stores[0], now=clock).exposure_today("val") == 40

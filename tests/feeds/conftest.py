"""Feed fixtures: a store on SQLite and on PostgreSQL, with a master key and a feed store."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from bastion.banks.model import NewEntry
from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.exchanges.store import ExchangeStore
from bastion.feeds.store import FeedStore
from bastion.signals.base import SignalType
from tests.feeds.loopback import Publisher
from tests.fixtures.stores import BACKENDS, open_store


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def feeds(store: Store, master: MasterKey) -> FeedStore:
    return FeedStore(store, master)


def pdq_entries(n: int, **kw: object) -> list[NewEntry]:
    """Synthetic PDQ values (random hex, no image behind them)."""
    return [NewEntry(SignalType.PDQ, secrets.token_hex(32), **kw) for _ in range(n)]  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def stores(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Store]]:
    """Opens one store per Bastion (publishers and subscriber), all on the same backend."""
    monkeypatch.chdir(tmp_path)
    opened: list[AbstractContextManager[Store]] = []

    def make(name: str) -> Store:
        folder = tmp_path / name
        folder.mkdir()
        cm = open_store(request.param, folder)
        opened.append(cm)
        return cm.__enter__()

    yield make
    for cm in reversed(opened):
        cm.__exit__(None, None, None)


@pytest.fixture
def publisher(stores: Callable[[str], Store]) -> Iterator[Publisher]:
    pub = Publisher(stores("pub"), "Org A")
    yield pub
    pub.stop()


@pytest.fixture
def sub(stores: Callable[[str], Store]) -> Store:
    return stores("sub")


def exchanges(store: Store) -> ExchangeStore:
    return ExchangeStore(store, MasterKey.generate(), Settings(exchange_backoff_seconds=0.1))


def subscribe(xs: ExchangeStore, pub: Publisher, name: str = "from-a", **kw: Any) -> None:
    url = kw.pop("url", None)
    config = {**pub.config(url), **kw.pop("config", {})}
    xs.add(name, "bastion", config=config, credentials={"api_key": pub.token}, **kw)

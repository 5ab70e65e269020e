"""The engine's bulk apply paths on SQLite and PostgreSQL: entries written by a page (COPY /
executemany of ready-made tuples, canonical entries taking the no-validation path) are stored
exactly as the ordinary path stores them; a re-sync of an unchanged snapshot writes no entry; the
sweep leaves the planner settings as it found them; a long sync refreshes PostgreSQL's
statistics. Synthetic hashes only."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.banks.model import NewEntry, normalize_entry
from bastion.config import Settings
from bastion.db import Store
from bastion.exchanges import engine
from bastion.exchanges.base import Upsert
from bastion.exchanges.store import ExchangeStore
from bastion.signals.base import SignalType
from tests.exchanges.scripted import SCRIPTS, Script, Step, entry, md5, pdq
from tests.fixtures.stores import open_store

T0 = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
STORED = (
    "signal_type, value, value_hash, quality, url_match, source, list_name, external_id, "
    "added_at, labels, enabled, disabled_reason, metadata"
)


@pytest.fixture
def script(request: pytest.FixtureRequest) -> Iterator[Script]:
    name = f"bulk-{request.node.name}"
    SCRIPTS[name] = s = Script()
    s.name = name  # type: ignore[attr-defined]
    yield s
    SCRIPTS.pop(name, None)


def _xs(store: Store) -> ExchangeStore:
    return ExchangeStore(store, None, Settings(), clock=lambda: T0)


def _rows(store: Store, bank: str) -> list[tuple[object, ...]]:
    """The stored columns as the database returns them (text for SQLite's dates and JSON)."""
    with store.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                f"SELECT {', '.join('e.' + c.strip() for c in STORED.split(','))}, e.created_at "
                "FROM bank_entries e JOIN banks b "
                f"ON b.id = e.bank_id WHERE b.name = '{bank}' ORDER BY e.value"
            )
        ]


def _canonical(e: NewEntry) -> NewEntry:
    good = normalize_entry(e)
    assert good.canonical
    return good


def test_page_rows_are_stored_as_the_store_stores_them(store: Store, script: Script) -> None:
    """Canonical and raw entries through the engine, and the same entries through
    ``Store.add_entries``, give byte-identical rows (bar the store's own creation time)."""
    entries = [
        entry(md5("a"), labels=["csam", "ncmec:A1"], metadata={"status": "x", "n": 1}),
        entry(pdq("p"), SignalType.PDQ, quality=87, labels=["test"]),
        entry(md5("b"), added_at=None, labels=[]),
        entry("https://example.com/p/", SignalType.URL, url_match="prefix", labels=["test"]),
    ]
    script.steps = [
        Step(
            items=[
                Upsert("k1", (_canonical(entries[0]), entries[1])),
                Upsert("k2", (_canonical(entries[2]),)),  # the one-canonical-entry path
                Upsert("k3", (entries[3],)),
            ]
        )
    ]
    xs = _xs(store)
    xs.add("ex1", "scripted", config={"script": script.name})
    result = xs.sync("ex1")
    assert (result.added, result.poisoned, result.error) == (4, 0, None)

    store.create_bank("plain")
    keys = ["k1", "k1", "k2", "k3"]
    report = store.add_entries(
        "plain",
        [NewEntry(**{**vars_of(e), "external_id": k}) for e, k in zip(entries, keys, strict=True)],
    )
    assert report.added == 4
    engine_rows, plain_rows = _rows(store, "ex1"), _rows(store, "plain")
    without_b = [r[:-1] for i, r in enumerate(engine_rows) if r[1] != md5("b")]
    plain_without_b = [r[:-1] for r in plain_rows if r[1] != md5("b")]
    assert without_b == plain_without_b
    # An entry without a date gets the page's time, as its creation time.
    (b_row,) = [r for r in engine_rows if r[1] == md5("b")]
    assert b_row[8] == b_row[-1]
    got = {e.value: e for e in store.iter_entries(banks=["ex1"], enabled_only=False)}
    assert got[md5("b")].added_at == T0 and got[md5("b")].external_id == "k2"
    assert got[md5("a")].metadata == {"status": "x", "n": 1}
    assert got[normalize_entry(entries[3]).value].url_match == "prefix"


def vars_of(e: NewEntry) -> dict[str, Any]:
    return {f.name: getattr(e, f.name) for f in dataclasses.fields(e) if f.init}


def test_unchanged_snapshot_resync_writes_no_entry(store: Store, script: Script) -> None:
    items = [
        Upsert(f"k{i}", (_canonical(entry(md5(i), labels=["test"], metadata={"i": i})),))
        for i in range(30)
    ]
    script.steps = [
        Step(items=items[:15], snapshot="s"),
        Step(items=items[15:], snapshot="s", snapshot_complete=True),
    ]
    xs = _xs(store)
    xs.add("ex1", "scripted", config={"script": script.name})
    assert xs.sync("ex1").added == 30
    before = _rows(store, "ex1")
    with store.engine.connect() as conn:
        revisions = conn.exec_driver_sql("SELECT max(revision) FROM bank_entries").scalar()
    rev = store.current_revision()
    xs.update("ex1", checkpoint=None)  # read the same listing again, as a new snapshot
    script.steps[0].snapshot = script.steps[1].snapshot = "s2"
    again = xs.sync("ex1")
    assert (again.pages, again.added, again.updated, again.disabled, again.error) == (
        2,
        0,
        0,
        0,
        None,
    )
    assert _rows(store, "ex1") == before
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT max(revision) FROM bank_entries").scalar() == revisions
        assert conn.exec_driver_sql("SELECT count(*) FROM exchange_seen").scalar() == 0
    changes, _ = store.changes_since(rev)
    assert changes == []


def test_sweep_restores_the_planner_settings(store: Store, script: Script) -> None:
    seen: list[str | None] = []

    class Probe(ExchangeStore):
        def _in_page_transaction(self, conn: sa.Connection) -> None:
            if conn.dialect.name == "postgresql":
                seen.append(conn.exec_driver_sql("SHOW enable_nestloop").scalar())
            else:
                seen.append(None)

    script.steps = [
        Step(items=[Upsert("k1", (entry(md5(1)),)), Upsert("k2", (entry(md5(2)),))], snapshot="a"),
        Step(items=[Upsert("k1", (entry(md5(1)),))], snapshot="a", snapshot_complete=True),
    ]
    xs = Probe(store, None, Settings(), clock=lambda: T0)
    xs.add("ex1", "scripted", config={"script": script.name})
    result = xs.sync("ex1")
    assert (result.added, result.disabled) == (2, 0)  # k2 was seen in the first page
    expected = "on" if store.engine.dialect.name == "postgresql" else None
    assert seen == [expected, expected]


def test_removed_keys_by_snapshot_are_disabled_in_bulk(store: Store, script: Script) -> None:
    """More gone keys than one chunk of ids: all disabled, each counted once."""
    n = engine.CHUNK + 5
    first = [Upsert(f"k{i}", (entry(md5(i)),)) for i in range(n)]
    script.steps = [
        Step(items=first, snapshot="s1", snapshot_complete=True),
        Step(items=first[:3], snapshot="s2", snapshot_complete=True),
    ]
    xs = _xs(store)
    xs.add("ex1", "scripted", config={"script": script.name})
    result = xs.sync("ex1")
    assert (result.added, result.disabled) == (n, n - 3)
    on = {e.external_id for e in store.iter_entries(banks=["ex1"], enabled_only=True)}
    assert on == {"k0", "k1", "k2"}
    off = [e for e in store.iter_entries(banks=["ex1"], enabled_only=False) if not e.enabled]
    assert len(off) == n - 3
    assert {e.disabled_reason for e in off} == {"upstream: not in the list any more"}


@pytest.mark.postgres
def test_a_long_sync_refreshes_postgres_statistics(
    tmp_path: Path, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "ANALYZE_MIN", 50)
    script.steps = [
        Step(items=[Upsert(f"k{p}-{i}", (entry(md5(f"{p}-{i}")),)) for i in range(60)])
        for p in range(2)
    ]
    with open_store("postgres", tmp_path) as store:
        xs = _xs(store)
        xs.add("ex1", "scripted", config={"script": script.name})
        assert xs.sync("ex1").added == 120
        with store.engine.connect() as conn:
            tuples = conn.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE oid = 'bank_entries'::regclass"
            ).scalar()
        assert tuples >= 60  # analyzed after the first page at least (never analyzed: -1)

"""The exchange engine (``bastion.exchanges.engine``) on SQLite and PostgreSQL, driven by a
scripted exchange (a real ``Exchange`` subclass yielding prepared pages of synthetic hashes):
pages applied in one transaction each, upserts in place, removals and the re-enable rules,
poisoned items and pages, backoff, permanent errors, snapshots (with a crash midway), vouching,
attestations, sealed credentials, leases and the live index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.exchanges.base import (
    Attestation,
    PermanentError,
    Poisoned,
    PoisonedPage,
    Removal,
    TransientError,
    Upsert,
)
from bastion.exchanges.engine import ExchangeLoop
from bastion.exchanges.model import SyncProgress
from bastion.exchanges.registry import ExchangeBusy, ExchangeExists, ExchangeNotFound
from bastion.exchanges.store import ExchangeStore
from bastion.index.live import LiveIndex
from bastion.signals.base import Signal, SignalType
from bastion.store import InvalidInput
from tests.exchanges.scripted import SCRIPTS, Script, Step, entry, md5, pdq, state_root
from tests.fixtures.clock import Clock

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    exchange_backoff_seconds=60.0,
    exchange_backoff_max_seconds=3600.0,
    exchange_lease_seconds=300.0,
    exchange_poison_attempts=3,
)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def xs(store: Store, clock: Clock) -> ExchangeStore:
    return ExchangeStore(store, MasterKey.generate(), SETTINGS, clock=clock)


@pytest.fixture
def script(request: pytest.FixtureRequest) -> Iterator[Script]:
    name = f"t-{request.node.name}"
    SCRIPTS[name] = s = Script()
    s.name = name  # type: ignore[attr-defined]
    yield s
    SCRIPTS.pop(name, None)


def _add(xs: ExchangeStore, script: Script, name: str = "ex1", **kw: object) -> None:
    xs.add(name, "scripted", config={"script": script.name}, labels=["test"], **kw)  # type: ignore[attr-defined,arg-type]


def _entries(store: Store, bank: str = "ex1") -> dict[str, object]:
    """value -> entry, every entry of the bank."""
    return {e.value: e for e in store.iter_entries(banks=[bank], enabled_only=False)}


def _audit(store: Store, action: str) -> list[dict]:
    return [e.detail for e in store.iter_audit(limit=10_000) if e.action == action]


# -- managing --------------------------------------------------------------------------------


def test_add_creates_the_bank_and_refuses_duplicates_and_bad_input(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    info = xs.add(
        "NCMEC-test", "scripted", config={"script": script.name}, labels=["csam"], interval=120
    )
    assert (info.name, info.kind, info.bank, info.state) == (
        "ncmec-test",
        "scripted",
        "ncmec-test",
        "idle",
    )
    assert info.interval_seconds == 120 and info.on_delete == "disable" and info.next_sync_at == T0
    bank = store.get_bank("ncmec-test")
    assert bank.source == "exchange:ncmec-test" and bank.labels == ["csam"]
    assert [i.name for i in xs.list()] == ["ncmec-test"]
    with pytest.raises(ExchangeExists):
        xs.add("ncmec-test", "scripted", config={"script": script.name})
    with pytest.raises(ExchangeExists, match="already fed by exchange"):
        xs.add("other", "scripted", bank="ncmec-test", config={"script": script.name})
    with pytest.raises(InvalidInput, match="unknown exchange type"):
        xs.add("x", "no-such-kind")
    with pytest.raises(InvalidInput, match="page_size"):
        xs.add("x", "scripted", config={"page_size": "many"})
    with pytest.raises(InvalidInput, match="bogus"):
        xs.add("x", "scripted", config={"bogus": 1})
    with pytest.raises(InvalidInput, match="token"):
        xs.add("x", "scripted", credentials={"password": "p"})
    for bad in (
        {"interval": 0},
        {"on_delete": "shred"},
        {"min_vouchers": 0},
        {"vouch_group": "a b"},
    ):
        with pytest.raises(InvalidInput):
            xs.add("x", "scripted", **bad)  # type: ignore[arg-type]
    with pytest.raises(ExchangeNotFound):
        xs.get("x")
    assert [i.name for i in xs.list()] == ["ncmec-test"]  # nothing half-made
    # An existing bank may be adopted.
    store.create_bank("mine")
    assert xs.add("ex2", "scripted", bank="mine", config={"script": script.name}).bank == "mine"
    assert [d["kind"] for d in _audit(store, "exchange.add")] == ["scripted", "scripted"]

    updated = xs.update("ex2", interval=30, enabled=False, actor="user:ann")
    assert updated.interval_seconds == 30 and not updated.enabled and updated.next_sync_at is None
    with pytest.raises(InvalidInput, match="cannot update"):
        xs.update("ex2", kind="other")
    xs.remove("ex2", actor="user:ann")
    assert store.get_bank("mine").name == "mine"  # the bank stays
    assert [e.action for e in store.iter_audit() if e.action.startswith("exchange.")] == [
        "exchange.add",
        "exchange.add",
        "exchange.update",
        "exchange.remove",
    ]


def test_sync_applies_pages_and_an_upsert_updates_in_place(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    a, b, p = md5("a"), md5("b"), pdq("p")
    script.steps = [
        Step(
            items=[
                Upsert(
                    "k1",
                    (entry(a, labels=["csam", "ncmec:A1"]), entry(p, SignalType.PDQ, quality=90)),
                ),
                Upsert("k2", (entry(b),)),
            ]
        ),
    ]
    _add(xs, script)
    rev0 = store.current_revision()
    seen: list[SyncProgress] = []
    result = xs.sync("ex1", progress=seen.append)
    assert (result.pages, result.added, result.complete, result.error) == (1, 3, True, None)
    assert result.checkpoint == {"i": 1} and xs.get("ex1").checkpoint == {"i": 1}
    assert [(s.pages, s.done, s.total) for s in seen] == [(1, 1, 1)]
    got = _entries(store)
    assert got[a].external_id == "k1" and got[a].labels == ["csam", "ncmec:A1"]
    assert got[p].external_id == "k1" and got[p].quality == 90 and got[b].external_id == "k2"
    assert store.current_revision() > rev0
    ids = {v: e.id for v, e in got.items()}

    # The next version of k1 changes a's labels and drops the PDQ; k2 is unchanged.
    script.steps.append(
        Step(
            items=[
                Upsert("k1", (entry(a, labels=["csam"], metadata={"status": "v2"}),)),
                Upsert("k2", (entry(b),)),
            ]
        )
    )
    result = xs.sync("ex1")
    assert (result.pages, result.added, result.updated, result.disabled) == (1, 0, 1, 1)
    got = _entries(store)
    assert got[a].id == ids[a] and got[a].labels == ["csam"] and got[a].metadata == {"status": "v2"}
    assert not got[p].enabled and got[p].disabled_reason.startswith("upstream:")
    assert got[b].id == ids[b] and got[b].revision < got[a].revision  # untouched: not rewritten
    assert script.fetched == [0, 1]  # each page fetched once: the checkpoint resumed after page 0
    info = xs.get("ex1")
    assert info.totals == {"added": 3, "updated": 1, "removed": 0, "disabled": 1, "poisoned": 0}
    assert info.state == "idle" and info.failures == 0 and info.last_success_at == T0
    assert info.next_sync_at == T0 + timedelta(seconds=60)
    runs = xs.runs("ex1")
    assert [(r.state, r.pages, r.added) for r in runs] == [("ok", 1, 0), ("ok", 1, 3)]
    assert [d["added"] for d in _audit(store, "exchange.sync")] == [3, 0]


def test_removal_disables_and_an_upsert_reenables_only_upstream_disabled_entries(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    a, b = md5("a"), md5("b")
    script.steps = [
        Step(items=[Upsert("k1", (entry(a),)), Upsert("k2", (entry(b),))]),
        Step(items=[Removal("k1", "withdrawn"), Removal("k2"), Removal("never-held")]),
    ]
    _add(xs, script)
    xs.sync("ex1", max_pages=1)
    # A reviewer found b not abusive: disabled here, not upstream.
    store.disable_entry("ex1", "k2", "not abusive (case 7, ann): benign")
    result = xs.sync("ex1")
    assert result.disabled == 1  # k1; k2 was already disabled here
    got = _entries(store)
    assert not got[a].enabled and got[a].disabled_reason == "upstream: withdrawn"
    # Still disabled for the reviewer's reason; the withdrawal is noted beside it.
    assert not got[b].enabled
    assert got[b].disabled_reason == (
        "upstream+local: deleted upstream | was: not abusive (case 7, ann): benign"
    )
    script.steps.append(Step(items=[Upsert("k1", (entry(a),)), Upsert("k2", (entry(b),))]))
    result = xs.sync("ex1")
    got = _entries(store)
    assert got[a].enabled and got[a].disabled_reason == ""
    assert not got[b].enabled and got[b].disabled_reason == "not abusive (case 7, ann): benign"
    assert result.updated == 2


def test_remove_mode_deletes_with_tombstones_the_index_follows(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    a, b = md5("a"), md5("b")
    script.steps = [
        Step(items=[Upsert("k1", (entry(a),)), Upsert("k2", (entry(b),))]),
        Step(items=[Removal("k1")]),
    ]
    _add(xs, script, on_delete="remove")
    index = LiveIndex(store)
    index.load()
    xs.sync("ex1", max_pages=1)
    index.refresh()
    with index.read() as m:
        assert {
            x.entry_id for x in m.match([Signal(SignalType.MD5, a), Signal(SignalType.MD5, b)])
        } == {e.id for e in _entries(store).values()}
    rev = store.current_revision()
    result = xs.sync("ex1")
    assert result.removed == 1
    assert set(_entries(store)) == {b}
    changes, _ = store.changes_since(rev)
    assert [(c.value, c.removed) for c in changes] == [(a, True)]
    index.refresh()
    with index.read() as m:
        assert m.match([Signal(SignalType.MD5, a)]) == []
        assert len(m.match([Signal(SignalType.MD5, b)])) == 1
    assert xs.get("ex1").totals["removed"] == 1


def test_poisoned_items_are_recorded_and_the_rest_of_the_page_applies(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    a, b, c = md5("a"), md5("b"), md5("c")
    script.steps = [
        Step(items=[Upsert("k1", (entry(a), entry(b)))]),
        Step(
            items=[
                Poisoned("record 17 has no hash", key="k17", raw='{"id": 17}'),
                Upsert("k1", (entry("not-hex"), entry(a))),  # b is kept: k1 was malformed
                Upsert("", (entry(c),)),
                Upsert("k3", (entry(c),)),
            ]
        ),
    ]
    _add(xs, script)
    result = xs.sync("ex1")
    assert (result.pages, result.added, result.poisoned, result.error) == (2, 3, 3, None)
    got = _entries(store)
    assert got[a].enabled and got[b].enabled and got[c].external_id == "k3"
    errors = xs.errors("ex1")
    assert {(e.kind, e.key) for e in errors} == {
        ("poisoned_item", "k17"),
        ("poisoned_item", "k1"),
        ("poisoned_item", None),
    }
    assert all(e.checkpoint == {"i": 2} for e in errors)
    (bad,) = [e for e in errors if e.key == "k1"]
    assert "md5 value must be 32 hexadecimal" in bad.error
    (raw,) = [e for e in errors if e.key == "k17"]
    assert raw.raw == '{"id": 17}'
    assert xs.get("ex1").totals["poisoned"] == 3


@pytest.mark.parametrize("skip", [True, False])
def test_a_poisoned_page_is_skipped_after_n_attempts_or_stalls(
    xs: ExchangeStore, store: Store, script: Script, clock: Clock, skip: bool
) -> None:
    script.steps = [
        Step(items=[Upsert("k1", (entry(md5(1)),))]),
        Step(raises=PoisonedPage("not JSON", skip_to={"i": 2} if skip else None, raw="<html>")),
        Step(items=[Upsert("k3", (entry(md5(3)),))]),
    ]
    _add(xs, script)
    for attempt in (1, 2):
        result = xs.sync("ex1")
        info = xs.get("ex1")
        assert result.error and "not JSON" in result.error
        assert (
            info.state == "error"
            and info.checkpoint == {"i": 1}
            and info.poison_attempts == attempt
        )
        assert info.next_sync_at is not None and info.next_sync_at > clock.now
        clock.advance(7200)
    result = xs.sync("ex1")
    info = xs.get("ex1")
    if skip:
        assert result.error is None and result.skipped_pages == 1 and result.complete
        assert info.state == "idle" and info.checkpoint == {"i": 3} and info.poison_attempts == 0
        assert set(_entries(store)) == {md5(1), md5(3)}
        assert _audit(store, "exchange.page.skipped")[0]["attempts"] == 3
    else:
        assert info.state == "stalled" and info.checkpoint == {"i": 1}
        assert set(_entries(store)) == {md5(1)}
    pages = [e for e in xs.errors("ex1") if e.kind == "poisoned_page"]
    assert len(pages) == 3 and all(e.checkpoint == {"i": 1} and e.raw == "<html>" for e in pages)
    assert script.fetched.count(0) == 1  # page 0 was applied once, never fetched again


def test_transient_errors_back_off_honouring_retry_after(
    xs: ExchangeStore, script: Script, clock: Clock
) -> None:
    script.steps = [
        Step(raises=TransientError("HTTP 429", retry_after=900), times=1),
        Step(raises=TransientError("HTTP 503"), times=1),
        Step(items=[Upsert("k1", (entry(md5(1)),))]),
    ]
    _add(xs, script)
    result = xs.sync("ex1")
    info = xs.get("ex1")
    assert result.error == "HTTP 429" and info.state == "error" and info.failures == 1
    assert info.next_sync_at == T0 + timedelta(seconds=900)
    assert xs.run_due("w1") == []  # not due yet
    clock.advance(900)
    (result,) = xs.run_due("w1")
    info = xs.get("ex1")
    assert result.error == "HTTP 503" and info.failures == 2 and info.checkpoint == {"i": 1}
    # Second failure: 60 * 2 = 120 s, less up to 25 % jitter.
    wait = (info.next_sync_at - clock.now).total_seconds()  # type: ignore[operator]
    assert 90 <= wait <= 120
    clock.advance(wait)
    (result,) = xs.run_due("w1")
    info = xs.get("ex1")
    assert (
        result.error is None and result.added == 1 and info.failures == 0 and info.state == "idle"
    )
    assert [e.kind for e in xs.errors("ex1")] == ["transient", "transient"]


def test_a_permanent_error_waits_for_a_person(
    xs: ExchangeStore, script: Script, clock: Clock
) -> None:
    script.steps = [Step(raises=PermanentError("HTTP 401: credentials rejected"), times=1)]
    _add(xs, script)
    result = xs.sync("ex1")
    info = xs.get("ex1")
    assert info.state == "error" and info.last_error == "HTTP 401: credentials rejected"
    assert result.error == info.last_error
    assert info.next_sync_at == T0 + timedelta(seconds=3600)  # the longest backoff
    xs.set_credentials("ex1", {"token": "new-token"})
    info = xs.get("ex1")
    assert info.next_sync_at == clock.now and info.state == "idle" and info.has_credentials
    assert xs.sync("ex1").error is None


def test_unexpected_exceptions_are_transient_and_messages_are_bounded(
    xs: ExchangeStore, script: Script
) -> None:
    script.steps = [Step(raises=KeyError("x" * 5000), times=1)]
    _add(xs, script)
    result = xs.sync("ex1")
    assert (
        result.error is not None
        and result.error.startswith("KeyError")
        and len(result.error) <= 2000
    )
    assert xs.get("ex1").state == "error"


class Crash(Exception):
    pass


def test_snapshot_sweeps_unseen_keys_and_survives_a_crash_midway(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    old = [Upsert(f"k{i}", (entry(md5(i)),)) for i in range(6)]
    script.steps = [Step(items=old, snapshot="s1", snapshot_complete=True)]
    _add(xs, script)
    xs.sync("ex1")
    store.disable_entry("ex1", "k5", "admin: hold")  # disabled here; still upstream-absent below
    # The new listing (3 pages): k0, k1 kept, k2 changed, k3..k5 gone, k6 new.
    script.steps += [
        Step(items=[Upsert("k0", (entry(md5(0)),)), Upsert("k1", (entry(md5(1)),))], snapshot="s2"),
        Step(items=[Upsert("k2", (entry(md5("2b")),))], snapshot="s2"),
        Step(items=[Upsert("k6", (entry(md5(6)),))], snapshot="s2", snapshot_complete=True),
    ]
    calls = {"n": 0}

    def crash_on_second_page(conn: sa.Connection) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash("power cut inside the page's transaction")

    xs._in_page_transaction = crash_on_second_page  # type: ignore[method-assign]
    result = xs.sync("ex1")
    assert result.error and "Crash" in result.error
    assert xs.get("ex1").checkpoint == {"i": 2}  # page 1 committed, page 2 rolled back
    assert md5("2b") not in _entries(store)
    del xs._in_page_transaction
    result = xs.sync("ex1")
    assert result.error is None and result.pages == 2
    got = _entries(store)
    enabled = {e.external_id for e in got.values() if e.enabled}
    assert enabled == {"k0", "k1", "k2", "k6"}
    assert got[md5(2)].disabled_reason.startswith("upstream:")  # k2's old value was dropped
    for i in (3, 4):
        assert got[md5(i)].disabled_reason == "upstream: not in the list any more"
    assert got[md5(5)].disabled_reason == "admin: hold"  # local reason kept
    assert script.fetched == [0, 1, 2, 2, 3]  # page 2 fetched again after the crash, once applied
    assert sum(r.pages for r in xs.runs("ex1")) == 4  # each page committed exactly once
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM exchange_seen")).scalar() == 0


def test_vouching_needs_k_of_n_exchanges_of_the_group(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    v1, v2 = md5("v1"), md5("v2")
    other = Script(steps=[Step(items=[Upsert("b1", (entry(v1),))])])
    SCRIPTS["other-vouch"] = other
    try:
        script.steps = [Step(items=[Upsert("a1", (entry(v1),)), Upsert("a2", (entry(v2),))])]
        _add(xs, script, name="ex-a", vouch_group="g", min_vouchers=2)
        xs.add(
            "ex-b", "scripted", config={"script": "other-vouch"}, vouch_group="g", min_vouchers=2
        )
        xs.sync("ex-a")
        a = _entries(store, "ex-a")
        assert not a[v1].enabled and a[v1].disabled_reason == "upstream: awaiting vouchers (1 of 2)"
        index = LiveIndex(store)
        index.load()
        assert index.size() == 0
        xs.sync("ex-b")
        a, b = _entries(store, "ex-a"), _entries(store, "ex-b")
        assert a[v1].enabled and b[v1].enabled and not a[v2].enabled
        index.refresh()
        assert index.size() == 2
        # b withdraws v1: a's copy waits for a second voucher again.
        other.steps.append(Step(items=[Removal("b1", "withdrawn")]))
        xs.sync("ex-b")
        a, b = _entries(store, "ex-a"), _entries(store, "ex-b")
        assert not a[v1].enabled and a[v1].disabled_reason.startswith("upstream: awaiting vouchers")
        assert b[v1].disabled_reason == "upstream: withdrawn"
        # Lowering a's threshold enables what it holds alone.
        xs.update("ex-a", min_vouchers=1)
        assert all(e.enabled for e in _entries(store, "ex-a").values())
        xs.update("ex-a", min_vouchers=2)
        assert not any(e.enabled for e in _entries(store, "ex-a").values())
        xs.update("ex-a", vouch_group=None)  # leaving the group
        assert all(e.enabled for e in _entries(store, "ex-a").values())
    finally:
        SCRIPTS.pop("other-vouch", None)


def test_attestations_are_checked_and_mismatches_audited(
    xs: ExchangeStore, store: Store, script: Script
) -> None:
    a, b = md5("a"), md5("b")
    upstream = [
        type("E", (), {"external_id": "k1", "signal_type": "md5", "value": a, "enabled": True})(),
        type("E", (), {"external_id": "k2", "signal_type": "md5", "value": b, "enabled": True})(),
    ]
    root = state_root(upstream)
    script.steps = [
        Step(
            items=[Upsert("k1", (entry(a),)), Upsert("k2", (entry(b),))],
            attestation=Attestation(1, root, 2),
        ),
        Step(items=[], attestation=Attestation(2, "f" * 64, 3)),
    ]
    _add(xs, script)
    xs.sync("ex1")
    second, first = xs.attestations("ex1")
    assert (first.version, first.agrees, first.computed, first.count) == (1, True, root, 2)
    assert (second.version, second.agrees, second.root) == (2, False, "f" * 64)
    (mismatch,) = _audit(store, "exchange.attestation.mismatch")
    assert mismatch["version"] == 2 and mismatch["computed"] == root


def test_credentials_are_sealed_never_stored_or_audited_in_plaintext(
    xs: ExchangeStore, store: Store, script: Script, tmp_path: Path
) -> None:
    secret = "tok-PLAINTEXT-6c1f0e9a"
    script.steps = [Step(items=[Upsert("k1", (entry(md5(1)),))])]
    _add(xs, script, credentials={"token": secret})
    xs.set_credentials("ex1", {"token": secret + "-2"})
    assert xs.sync("ex1").error is None
    assert script.credentials_seen == [secret + "-2"]
    info = xs.get("ex1")
    assert info.has_credentials and secret not in repr(info)
    assert secret not in repr(xs.open("ex1").credentials)
    if store.engine.dialect.name == "sqlite":
        store.engine.dispose()
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("bastion.db*"))
        assert b"exchange:ex1" in raw  # the file is readable as bytes...
    else:
        with store.engine.connect() as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                )
            ]
            raw = "\n".join(
                str(row[0])
                for t in tables
                for row in conn.execute(sa.text(f'SELECT t::text FROM "{t}" t'))
            ).encode()
        assert b"exchange:ex1" in raw
    assert secret.encode() not in raw  # ...and holds no credential in plaintext
    # Another exchange's name as AAD does not open the blob: a copied row does not work.
    with store.engine.connect() as conn:
        blob = conn.execute(
            sa.text("SELECT credentials FROM exchanges WHERE name = 'ex1'")
        ).scalar()
    _add(xs, script, name="ex2")
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE exchanges SET credentials = :b WHERE name = 'ex2'"), {"b": blob}
        )
    with pytest.raises(InvalidInput, match="do not open"):
        xs.open("ex2")


def test_without_a_master_key_only_credential_free_exchanges_work(
    store: Store, script: Script, clock: Clock
) -> None:
    keyed = ExchangeStore(store, MasterKey.generate(), SETTINGS, clock=clock)
    script.steps = [Step(items=[Upsert("k1", (entry(md5(1)),))])]
    _add(keyed, script, name="with-creds", credentials={"token": "t"})
    keyless = ExchangeStore(store, None, SETTINGS, clock=clock)
    _add(keyless, script, name="plain")
    with pytest.raises(InvalidInput, match="no master key"):
        _add(keyless, script, name="x", credentials={"token": "t"})
    results = {r.exchange: r for r in keyless.run_due("w")}
    assert results["plain"].error is None and results["plain"].added == 1
    assert "no master key" in (results["with-creds"].error or "")
    assert keyless.get("with-creds").state == "error"


def test_the_lease_keeps_one_sync_per_exchange_and_a_lost_lease_commits_nothing(
    xs: ExchangeStore, store: Store, script: Script, clock: Clock
) -> None:
    script.steps = [Step(items=[Upsert(f"k{i}", (entry(md5(i)),))]) for i in range(3)]
    _add(xs, script)
    outcomes: list[str] = []

    def during_first_sync(p: SyncProgress) -> None:
        if p.pages == 1:
            with pytest.raises(ExchangeBusy):
                xs.sync("ex1", worker_id="w2")
            assert xs.run_due("w2") == []  # the scheduler skips it too
            assert xs.get("ex1").state == "syncing" and xs.get("ex1").lease_holder == "w1"
            # w1 stalls past its lease; w2 takes over and finishes the list.
            clock.advance(301)
            taken = xs.sync("ex1", worker_id="w2")
            outcomes.append(f"w2:{taken.pages}:{taken.error}")

    result = xs.sync("ex1", worker_id="w1", progress=during_first_sync)
    assert outcomes == ["w2:2:None"]
    assert result.pages == 1 and result.error and "lease lost" in result.error
    assert xs.get("ex1").checkpoint == {"i": 3} and xs.get("ex1").lease_holder is None
    assert len(_entries(store)) == 3
    assert sum(r.pages for r in xs.runs("ex1")) == 3  # w1's second page was never committed
    runs = {r.worker_id: r.state for r in xs.runs("ex1")}
    assert runs == {"w1": "interrupted", "w2": "ok"}


def test_stop_and_max_pages_end_a_run_early_and_it_is_due_again(
    xs: ExchangeStore, script: Script, clock: Clock
) -> None:
    script.steps = [Step(items=[Upsert(f"k{i}", (entry(md5(i)),))]) for i in range(4)]
    _add(xs, script)
    result = xs.sync("ex1", max_pages=2)
    assert (result.pages, result.complete) == (2, False)
    assert xs.get("ex1").next_sync_at == clock.now and xs.runs("ex1")[0].state == "partial"
    loop = ExchangeLoop(replace_settings(xs, exchange_page_limit=1), worker_id="loop")
    assert [r.pages for r in loop.run_once()] == [1]
    assert loop.run_once() == []  # not polled again before exchange_poll_seconds
    assert xs.get("ex1").checkpoint == {"i": 3}
    loop._next = float("-inf")
    assert [(r.pages, r.complete) for r in loop.run_once()] == [(1, False)]
    loop._next = float("-inf")
    assert [(r.pages, r.complete) for r in loop.run_once()] == [(0, True)]
    assert xs.get("ex1").next_sync_at == clock.now + timedelta(seconds=60)


def replace_settings(xs: ExchangeStore, **changes: object) -> ExchangeStore:
    return ExchangeStore(
        xs.store, xs.master_key, replace(xs.settings, **changes), clock=xs.clock, rng=xs.rng
    )


def test_request_sync_and_disable(
    xs: ExchangeStore, store: Store, script: Script, clock: Clock
) -> None:
    script.steps = [Step(items=[Upsert("k1", (entry(md5(1)),))])]
    _add(xs, script)
    xs.sync("ex1")
    assert xs.run_due("w") == []
    assert xs.request_sync("ex1", actor="key:ops").next_sync_at == clock.now
    assert [r.exchange for r in xs.run_due("w")] == ["ex1"]
    xs.update("ex1", enabled=False)
    xs.request_sync("ex1")
    assert xs.run_due("w") == []  # disabled exchanges are not scheduled
    assert _audit(store, "exchange.sync.request") == [{}, {}]
    xs.update("ex1", enabled=True, checkpoint=None)
    info = xs.get("ex1")
    assert info.checkpoint is None and info.next_sync_at == clock.now


def test_worker_once_syncs_due_exchanges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: Script
) -> None:
    from typer.testing import CliRunner

    from bastion.cli import app

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    script.steps = [Step(items=[Upsert("k1", (entry(md5(1)),))])]
    with Store.open(url) as s:
        _add(ExchangeStore(s, None, SETTINGS), script)
    result = CliRunner().invoke(app, ["worker", "--db", url, "--once"])
    assert result.exit_code == 0, result.output
    assert "exchanges synced: 1 (0 failed)" in result.output
    with Store.open(url) as s:
        assert [e.value for e in s.iter_entries(banks=["ex1"])] == [md5(1)]

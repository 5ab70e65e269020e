"""VoucherStore on SQLite and PostgreSQL: tables, submissions, openings, rate limit, reports."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from bastion.banks.model import NewEntry
from bastion.client import Account, Client, PData, Voucher, commit, frank
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.psi import Report, ReportRejected
from bastion.psi.media import reencode_derivative
from bastion.psi.records import OpenedAccount
from bastion.psi.rows import FrankingReportRow, VoucherShareRow
from bastion.psi.store import VoucherStore
from bastion.signals.base import SignalType

from .conftest import voucher_settings
from .helpers import LAB_BOUNDS, T0, random_hashes, seeded

BANK = random_hashes(50, seed=300)
OUTSIDE = random_hashes(50, seed=301)


def _verify(pdq: str) -> list[dict[str, Any]]:
    value = int(pdq, 16)
    return [
        {"bank": "known", "entry": i, "distance": bin(value ^ int(h, 16)).count("1")}
        for i, h in enumerate(BANK)
        if bin(value ^ int(h, 16)).count("1") <= 31
    ]


def _up(*vouchers: Voucher) -> list[tuple[str, bytes]]:
    """Vouchers as the platform submits them: beside the sender it authenticated."""
    return [(v.account, v.data) for v in vouchers]


def _jpeg(seed: int) -> bytes:
    """A small benign derivative (a synthetic gradient), as a client would send it."""
    ramp = np.add.outer(np.arange(48), np.arange(64)) * 2 + seed * 7
    pixels = np.stack([ramp, ramp[::-1], np.full_like(ramp, 40 * seed)], axis=2) % 256
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buf, "JPEG", quality=70)
    return buf.getvalue()


def _vstore(store: Store, tmp_path: Path, **settings: object) -> VoucherStore:
    store.create_bank("known")
    store.add_entries("known", [NewEntry(SignalType.PDQ, h) for h in BANK])
    return VoucherStore(
        store, MasterKey.generate(), voucher_settings(tmp_path, **settings), clock=lambda: T0
    )


def _client(vs: VoucherStore, account: str = "alice", seed: int = 0) -> Client:
    info = vs.current_table()
    assert info is not None
    pdata = PData.from_bytes(vs.table_blob(info.id), expected_root=info.root, bounds=LAB_BOUNDS)
    return Client(
        pdata, account, Account(bytes([seed]) * 32), random_bytes=seeded(seed), clock=lambda: T0
    )


def _count(store: Store, table: Any) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _audit(store: Store, action: str) -> list[Any]:
    return [e for e in store.iter_audit() if e.action == action]


def test_build_publishes_a_table_clients_can_verify(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path, voucher_keep_tables=2)
    assert vs.current_table() is None
    first = vs.build_table(actor="key:admin")
    assert first.stats["entries"] == 50 and first.stats["keys"] == 50  # compact: one key each
    pdata = PData.from_bytes(vs.table_blob(first.id), expected_root=first.root, bounds=LAB_BOUNDS)
    assert pdata.params.threshold == 3 and first.size == len(pdata.blob)
    (event,) = _audit(db_store, "pdata.build")
    assert event.target == f"pdata:{first.root}" and event.detail["entries"] == 50
    old_client = _client(vs)
    second = vs.build_table(actor="key:admin")
    assert second.root != first.root  # a fresh secret per table
    assert vs.current_table().root == second.root
    vs.submit(_up(old_client.voucher_for_hash(BANK[0], "m")), actor="k", verify=_verify)
    vs.build_table(actor="key:admin")  # keeps 2: the first is retired with its secret
    (refused,) = vs.submit(
        _up(old_client.voucher_for_hash(BANK[0], "m")), actor="k", verify=_verify
    ).results
    assert refused.status == 422 and "unknown or retired" in refused.detail


def test_threshold_opening_is_durable_returned_and_handed_to_the_hook(
    db_store: Store, tmp_path: Path
) -> None:
    vs = _vstore(db_store, tmp_path)
    vs.build_table(actor="key:admin")
    handed: list[OpenedAccount] = []
    vs.on_open = handed.append
    alice = _client(vs)
    for i, h in enumerate(OUTSIDE[:10]):
        result = vs.submit(
            _up(alice.voucher_for_hash(h, f"innocent-{i}")), actor="k", verify=_verify
        )
        assert result.opened == ()
    assert _count(db_store, VoucherShareRow.__table__) == 0  # non-matching: nothing kept
    for i in range(2):
        result = vs.submit(
            _up(alice.voucher_for_hash(BANK[i], f"bank-{i}", media=_jpeg(i))),
            actor="k",
            verify=_verify,
        )
        assert result.opened == ()
    assert vs.openings() == [] and handed == []
    result = vs.submit(
        _up(
            alice.voucher_for_hash(BANK[2], "bank-2", media=_jpeg(2)),
            alice.voucher_for_hash(OUTSIDE[20], "innocent-20"),
        ),
        actor="key:platform",
        verify=_verify,
    )
    (opened,) = result.opened
    assert opened.first and opened.account == "alice" and opened.verified == 3
    assert sorted(i.item_id for i in opened.items) == ["bank-0", "bank-1", "bank-2"]
    # Derivatives are stored as JPEGs the server made (docs/e2ee.md), from what was sent.
    assert {i.item_id: i.media for i in opened.items}["bank-1"] == reencode_derivative(_jpeg(1))
    assert {i.media_type for i in opened.items} == {"image/jpeg"}
    assert {i.pdq for i in opened.items} == set(BANK[:3])
    assert handed == [opened]
    listed = vs.openings(account="alice")
    assert sorted(i.item_id for i in listed) == ["bank-0", "bank-1", "bank-2"]
    assert all(i.media == b"" for i in listed)  # listings never carry media
    assert vs.opened_media(listed[0].id)[1] == {i.id: i.media for i in opened.items}[listed[0].id]
    assert vs.pending_openings() == []  # handed off
    (event,) = _audit(db_store, "voucher.open")
    assert event.target == "account:alice" and event.detail["items"] == 3
    assert event.detail["threshold_crossed"] is True
    # Later matches of an opened account open at once; innocent ones never do.
    later = vs.submit(_up(alice.voucher_for_hash(BANK[3], "bank-3")), actor="k", verify=_verify)
    assert [i.item_id for i in later.opened[0].items] == ["bank-3"]
    assert not later.opened[0].first
    (group,) = vs.groups("alice")
    assert group.state == "opened" and group.real == 4 and group.verified == 4


def test_real_items_that_fail_the_bank_recheck_do_not_open(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    vs.build_table(actor="key:admin")
    alice = _client(vs)
    disputed = {BANK[1]}

    def verify(pdq: str) -> list[dict[str, Any]]:
        return [] if pdq in disputed else _verify(pdq)

    for i in range(3):
        result = vs.submit(_up(alice.voucher_for_hash(BANK[i], f"b{i}")), actor="k", verify=verify)
        assert result.opened == ()
    # Three shares decode, but only two pass the re-check: the key is not kept, and the item
    # that failed is discarded with its sealed parts destroyed.
    (group,) = vs.groups("alice")
    assert group.state == "collecting" and group.discarded == 1 and group.verified == 0
    result = vs.submit(_up(alice.voucher_for_hash(BANK[4], "b4")), actor="k", verify=verify)
    assert sorted(i.item_id for i in result.opened[0].items) == ["b0", "b2", "b4"]


def test_a_failing_hook_leaves_items_pending_for_a_retry(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    vs.build_table(actor="key:admin")

    def broken(_: OpenedAccount) -> None:
        raise RuntimeError("review system down")

    vs.on_open = broken
    alice = _client(vs)
    items = _up(
        *(alice.voucher_for_hash(h, f"b{i}", media=_jpeg(7)) for i, h in enumerate(BANK[:3]))
    )
    result = vs.submit(items, actor="k", verify=_verify)
    assert len(result.opened[0].items) == 3  # still returned, and stored
    (pending,) = vs.pending_openings()
    assert sorted(i.item_id for i in pending.items) == ["b0", "b1", "b2"]
    assert all(i.media == reencode_derivative(_jpeg(7)) for i in pending.items)
    taken: list[OpenedAccount] = []
    vs.on_open = taken.append
    assert vs.retry_handoffs() == 3
    assert vs.pending_openings() == [] and len(taken[0].items) == 3


def test_rate_limit_counts_and_refuses_only_the_accounts_vouchers(
    db_store: Store, tmp_path: Path
) -> None:
    vs = _vstore(db_store, tmp_path, voucher_rate_per_hour=5)
    vs.build_table(actor="key:admin")
    alice, bob = _client(vs, "alice", 1), _client(vs, "bob", 2)
    vs.submit(
        _up(*(alice.voucher_for_hash(h, "m") for h in OUTSIDE[:4])), actor="k", verify=_verify
    )
    result = vs.submit(
        _up(
            alice.voucher_for_hash(BANK[0], "m"),
            alice.voucher_for_hash(BANK[1], "m"),
            bob.voucher_for_hash(BANK[2], "m"),
        ),
        actor="k",
        verify=_verify,
    )
    # Alice has room for one more this hour; her second is refused, bob's is not affected.
    assert [r.status for r in result.results] == [202, 429, 202]
    refused = result.results[1]
    assert refused.error == "rate_limited" and "alice" in refused.detail
    assert 0 < refused.retry_after <= 3600
    assert _count(db_store, VoucherShareRow.__table__) == 2  # the two accepted matches
    (hour,) = vs.counts("alice")
    assert (hour.accepted, hour.rejected) == (5, 1)
    assert [(h.accepted, h.rejected) for h in vs.counts("bob")] == [(1, 0)]
    (event,) = _audit(db_store, "voucher.rate_limited")
    assert event.target == "account:alice" and event.detail["vouchers"] == 1
    vs.submit(_up(bob.voucher_for_hash(BANK[3], "m")), actor="k", verify=_verify)  # bob is fine
    assert [(h.accepted, h.rejected) for h in vs.counts("bob")] == [(2, 0)]


def test_a_bad_voucher_is_refused_alone(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    vs.build_table(actor="key:admin")
    alice, bob = _client(vs), _client(vs, "bob", 5)
    good = alice.voucher_for_hash(BANK[0], "m").data
    result = vs.submit(
        [("alice", good[:-3]), ("bob", bob.voucher_for_hash(BANK[1], "m").data)],
        actor="k",
        verify=_verify,
    )
    bad, fine = result.results
    assert (bad.index, bad.status, bad.error) == (0, 422, "invalid") and "expected" in bad.detail
    assert fine.status == 202
    stale = Client(alice.pdata, "alice", alice.account, clock=lambda: T0 - 100 * 86400)
    (old,) = vs.submit(_up(stale.voucher_for_hash(BANK[0], "m")), actor="k", verify=_verify).results
    assert old.status == 422 and "epoch" in old.detail
    (named,) = vs.submit([("", good)], actor="k", verify=_verify).results
    assert named.status == 422 and "stated account" in named.detail
    assert _count(db_store, VoucherShareRow.__table__) == 1  # bob's only
    assert vs.counts("alice") == []  # refused vouchers are not counted against alice


def test_franking_reports_are_verified_stored_and_audited(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    reports = []
    vs.on_report = reports.append
    franked = frank(b"hello there", seeded(1))
    tag, ts = vs.tag(franked.commitment, "sender-1", "recipient-2")
    assert ts == int(T0)
    genuine = Report(
        b"hello there", franked.franking_key, franked.commitment, tag, "sender-1", "recipient-2", ts
    )
    stored = vs.report(genuine, reporter="recipient-2", actor="key:platform")
    assert stored.message_size == 11 and reports == [stored]
    assert _audit(db_store, "franking.report")[0].target == f"franking-report:{stored.id}"
    # The platform key persists: a second store over the same database verifies old tags.
    again = VoucherStore(db_store, vs.master_key, vs.settings, clock=lambda: T0)
    assert again.tag(franked.commitment, "sender-1", "recipient-2")[0] == tag
    altered = Report(
        b"hello thera", franked.franking_key, franked.commitment, tag, "sender-1", "recipient-2", ts
    )
    with pytest.raises(ReportRejected, match="do not match the commitment"):
        vs.report(altered, reporter="recipient-2", actor="k")
    other_sender = Report(
        b"hello there", franked.franking_key, franked.commitment, tag, "sender-9", "recipient-2", ts
    )
    with pytest.raises(ReportRejected, match="tag does not verify"):
        vs.report(other_sender, reporter="recipient-2", actor="k")
    with pytest.raises(ReportRejected, match="recipient"):
        vs.report(genuine, reporter="someone-else", actor="k")
    assert len(_audit(db_store, "franking.reject")) == 3
    assert commit(franked.franking_key, b"hello there") == franked.commitment
    with db_store.engine.connect() as conn:
        sealed = conn.execute(select(FrankingReportRow.__table__.c.sealed_message)).scalar_one()
    assert b"hello there" not in sealed  # the reported message is kept sealed


def test_concurrent_batches_open_an_account_once(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    vs.build_table(actor="key:admin")
    alice = _client(vs)
    blobs = [_up(alice.voucher_for_hash(BANK[i], f"b{i}")) for i in range(6)]
    errors: list[BaseException] = []
    results = []

    def send(blob: list[tuple[str, bytes]]) -> None:
        try:
            results.append(vs.submit(blob, actor="k", verify=_verify))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(b,)) for b in blobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    opened = [i.item_id for r in results for a in r.opened for i in a.items]
    assert sorted(opened) == [f"b{i}" for i in range(6)]  # each item opened exactly once
    crossings = [e for e in _audit(db_store, "voucher.open") if e.detail["threshold_crossed"]]
    assert len(crossings) == 1
    (group,) = vs.groups("alice")
    assert group.verified == 6 and group.state == "opened"

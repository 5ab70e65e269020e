"""Back-scan findings into review: through the policy and case machinery of /v1/scan, once per
content and matched entries, at the set rate per queue, highest priority first; ``dry_run``
opens nothing. Then re-matching when banks grow: a bank entry added later by an exchange sync
opens one retroactive case labelled with its bank revision, and a disputed entry opens none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bastion.backscan.dataset import Dataset
from bastion.backscan.engine import RunOptions
from bastion.backscan.intake import drain, enqueue
from bastion.backscan.loop import RematchLoop
from bastion.backscan.rematch import rematch
from bastion.backscan.run import Request, execute, plan
from bastion.backscan.store import BackscanStore
from bastion.config import Settings
from bastion.db import Store
from bastion.exchanges.store import ExchangeStore
from bastion.index.matcher import Matcher
from bastion.review.rows import CaseItemRow
from bastion.runtime import Runtime, build_runtime
from bastion.signals import SignalType, hash_file
from tests.backscan.conftest import bank_with, make_archive
from tests.fixtures.stores import Database

POLICY = """
version: 1
queues:
  default: {description: first review}
  senior: {senior: true, description: escalations}
rules:
  - name: urgent-bank
    when: {banks: [urgent]}
    verdict: review
    priority: high
  - name: any-match
    when: {matched: true}
    verdict: review
    priority: low
otherwise:
  verdict: allow
"""


def runtime(store: Store, tmp_path: Path, per_hour: int) -> Runtime:
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = Settings(
        secret_key_file=str(tmp_path / "keys" / "master.key"),
        policy_file=str(tmp_path / "policy.yaml"),
        backscan_cases_per_hour=per_hour,
    )
    return build_runtime(settings, store)


def backscan(store: Store, root: Path, out: Path) -> Dataset:
    """A back-scan in this process (one worker), as the command runs it."""
    ds = Dataset(out)
    req = Request(source=str(root), out=out, run=RunOptions(workers=1), shard_size=4)
    plan(ds, req)
    revision = store.current_revision()
    matcher = Matcher.from_entries(store.iter_index_entries())
    summary = execute(ds, req, matcher, revision)
    BackscanStore(store).register_dataset(
        str(out.resolve()), summary["source"], summary["total"]["objects"], revision
    )
    return ds


def matched(ds: Dataset) -> list[dict[str, Any]]:
    return [r for b in ds.iter_rows() for r in b.to_pylist() if r["matched"]]


def items(store: Store) -> list[dict[str, Any]]:
    t = CaseItemRow.__table__
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def test_findings_open_at_the_rate_highest_priority_first_and_only_once(
    db: Database, tmp_path: Path
) -> None:
    store = db.open()
    files = make_archive(tmp_path / "archive", 6, bad=False)
    bank_with(store, files[1], bank="plain")
    bank_with(store, files[4], bank="urgent")
    rt = runtime(store, tmp_path, per_hour=1)
    ds = backscan(store, tmp_path / "archive", tmp_path / "out")
    rows = matched(ds)
    assert len(rows) == 2

    dry = enqueue(rt, rows, origin="backscan", label="t", dry_run=True)
    assert dry["would"] == {"review/default/high": 1, "review/default/low": 1}
    assert BackscanStore(store).findings() == [] and items(store) == []

    first = enqueue(rt, rows, origin="backscan", label="t", dry_run=False)
    assert (first["added"], first["known"]) == (2, 0)
    assert drain(rt) == {"default": 1}  # one case per hour in this queue
    (opened,) = items(store)
    assert opened["content_id"] == str(files[4].resolve())  # the high-priority one first
    assert opened["rule"] == "urgent-bank" and opened["source"] == "backscan"
    (backlog,) = BackscanStore(store).backlog(1)
    assert (backlog.pending, backlog.opened_last_hour, backlog.eta_hours) == (1, 1, 1.0)

    again = enqueue(rt, rows, origin="backscan", label="t", dry_run=False)  # a rerun
    assert (again["added"], again["known"]) == (0, 2)
    assert drain(rt) == {} and len(items(store)) == 1  # the hour's room is used

    assert drain(rt, per_hour=10) == {"default": 1}  # the operator raised the rate
    assert [i["rule"] for i in items(store)] == ["urgent-bank", "any-match"]
    assert drain(rt, per_hour=10) == {}
    assert all(f["state"] == "opened" and f["case_id"] for f in BackscanStore(store).findings())


def test_a_bank_grown_by_an_exchange_sync_opens_one_retroactive_case(
    db: Database, tmp_path: Path
) -> None:
    store = db.open()
    files = make_archive(tmp_path / "archive", 8, bad=False)
    store.create_bank("old", description="demo data", is_demo=True)
    rt = runtime(store, tmp_path, per_hour=100)
    ds = backscan(store, tmp_path / "archive", tmp_path / "out")
    assert matched(ds) == []  # nothing matched at the time of the scan

    md5s = [hash_file(f).get(SignalType.MD5).value for f in (files[2], files[5])]  # type: ignore[union-attr]
    (tmp_path / "list.txt").write_text("".join(f"md5 {v}\n" for v in md5s))
    xs = ExchangeStore(store, rt.master_key, rt.settings)
    xs.add("partner", "list", config={"source": str(tmp_path / "list.txt"), "labels": ["demo"]})
    xs.sync("partner")
    synced = {e.value: e for e in store.iter_entries(banks=["partner"])}
    assert set(synced) == set(md5s)
    # A reviewer found files[5]'s entry not abusive: it is disputed (disabled) before re-matching.
    store.disable_entry("partner", synced[md5s[1]].id, "not abusive (dispute)")
    entry = synced[md5s[0]]
    revision_of_entry = max(c.revision for c in store.changes_since(0)[0] if c.entry_id == entry.id)

    loop = RematchLoop(rt, every=60)
    done = loop.run_once()  # the worker's pass
    assert done.rematched is not None and done.rematched.matched == 1
    assert done.opened == {"default": 1}
    (item,) = items(store)
    assert item["content_id"] == str(files[2].resolve()) and item["source"] == "rematch"
    assert f"retroactive match (bank revision {revision_of_entry})" in item["reason"]
    (m,) = item["matches"]
    assert (m["entry"], m["retroactive"], m["bank_revision"]) == (entry.id, True, revision_of_entry)

    # Once matched up to the banks' revision, the next pass finds nothing new; a hand-run
    # re-match from the start finds the same finding and opens nothing.
    assert loop.run_once().rematched is None
    again = rematch(rt, 0)
    assert again.matched == 1 and again.review["known"] == 1 and again.review["added"] == 0
    assert drain(rt) == {} and len(items(store)) == 1


def test_rematch_dry_run_opens_nothing_and_moves_no_revision(db: Database, tmp_path: Path) -> None:
    store = db.open()
    files = make_archive(tmp_path / "archive", 4, bad=False)
    rt = runtime(store, tmp_path, per_hour=100)
    backscan(store, tmp_path / "archive", tmp_path / "out")
    bank_with(store, files[1], bank="later")
    report = rematch(rt, dry_run=True)
    assert report.matched == 1 and report.review["would"] == {"review/default/low": 1}
    assert BackscanStore(store).findings() == []
    assert (
        min(d.matched_revision for d in BackscanStore(store).datasets()) < store.current_revision()
    )

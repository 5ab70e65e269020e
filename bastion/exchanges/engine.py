"""The exchange sync engine: the worker's loop, sync runs and the page applier.

A sync claims the exchange with a lease, asks it for pages after the stored checkpoint, and
applies each page in one bank write transaction (``Store.write``): entries, the checkpoint,
poisoned records, snapshot marks, vouching and counters commit or roll back together, so a crash
loses nothing and repeats nothing. The lease is checked again inside every page's transaction,
so a worker that lost it (it stalled past ``lease_until`` and another took over) cannot commit a
page.

Bank writes bump the store revision and the bank version like any other bank write, so live
indexes pick the changes up through ``Store.changes_page`` without a rebuild; removals leave
tombstones.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError

from bastion.banks.model import NewEntry, normalize_entry
from bastion.banks.sql import copy_rows, entries_t, executemany_rows, tombstone, touch_bank
from bastion.exchanges.base import (
    Checkpoint,
    Exchange,
    ExchangeError,
    OnDelete,
    Page,
    PermanentError,
    Poisoned,
    PoisonedPage,
    Removal,
    TransientError,
    Upsert,
)
from bastion.exchanges.model import (
    AWAITING,
    CHUNK,
    MAX_CHECKPOINT,
    MAX_KEY,
    MAX_RAW,
    TOTALS,
    UPSTREAM,
    WITHDRAWN_LOCAL,
    ExchangeErrorRecord,
    SyncProgress,
    SyncResult,
    SyncRun,
    chunks,
    clip,
    local_reason,
    upstream_disabled,
    withdrawn_local,
)
from bastion.exchanges.registry import (
    ExchangeBusy,
    ExchangeNotFound,
    database_errors,
    good_key,
    new_id,
)
from bastion.exchanges.rows import err_t, ex_t, runs_t, seen_t
from bastion.store.audit import append_audit
from bastion.store.bulk import json_doc
from bastion.store.errors import InvalidInput, StoreError

if TYPE_CHECKING:
    from bastion.db import Store
    from bastion.exchanges.store import ExchangeStore

log = logging.getLogger("bastion.exchanges")

#: Entry columns an upsert sets from the partner's record (in place, keeping the entry id).
_KEPT = ("source", "list_name", "external_id", "labels", "metadata", "quality")
_STATE_COLUMNS = ("added_at", "enabled", "disabled_reason")


class _LeaseLost(Exception):
    """The lease ran out and another worker took the exchange: stop without committing."""


@dataclass(slots=True)
class _Counts:
    added: int = 0
    updated: int = 0
    removed: int = 0
    disabled: int = 0
    poisoned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in TOTALS}


@dataclass(slots=True)
class _Plan:
    """A page reduced to its final effect per key, validated outside the transaction."""

    #: key -> entry rows (:func:`_page_row` tuples) the key holds from now on.
    upserts: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    #: Keys with a bad entry: their good entries are applied, nothing of theirs is dropped.
    partial: set[str] = field(default_factory=set)
    removals: dict[str, str] = field(default_factory=dict)
    #: (key, error, raw) per poisoned item or bad entry.
    poisoned: list[tuple[str | None, str, str]] = field(default_factory=list)
    #: Keys the page delivered (for a snapshot's seen set; poisoned keys too, so a malformed
    #: record never deletes what we hold for it).
    seen: set[str] = field(default_factory=set)


# -- the bulk apply path ---------------------------------------------------------------------
#: A page's entry as a tuple (:func:`_page_row`): a fraction of a dict's cost per row, and what
#: the bulk writes hand to the driver.
_ST, _VALUE, _VH, _QUALITY, _UM, _SOURCE, _LIST, _KEY, _ADDED, _LABELS, _META = range(11)
#: PostgreSQL takes a chunk as one array parameter (``= ANY``), so chunks can be large.
PG_CHUNK = 50_000
#: Rows a sync adds before it refreshes PostgreSQL's statistics (see :class:`_Statistics`).
ANALYZE_MIN = 50_000
#: What an upsert compares with a stored entry; JSON columns as text, decoded only when needed.
_OLD_COLUMNS = (
    entries_t.c.id,
    entries_t.c.signal_type,
    entries_t.c.value_hash,
    entries_t.c.url_match,
    entries_t.c.external_id,
    entries_t.c.enabled,
    entries_t.c.disabled_reason,
    entries_t.c.source,
    entries_t.c.list_name,
    entries_t.c.added_at,
    cast(entries_t.c.labels, Text).label("labels"),
    cast(entries_t.c.metadata, Text).label("metadata"),
    entries_t.c.quality,
    entries_t.c.bank_id,
)


def _page_row(e: NewEntry, key: str) -> tuple[Any, ...]:
    """A canonical entry of record ``key`` as stored (``added_at`` None: keep a stored entry's
    date, a new one gets the page's time)."""
    value = e.value
    return (
        e.signal_type.value,
        value,
        hashlib.sha256(value.encode("utf-8")).hexdigest(),
        e.quality,
        e.url_match or "",
        e.source,
        e.list_name,
        key,
        e.added_at,
        e.labels,
        e.metadata,
    )


def _one_of(column: Any, values: Sequence[Any], pg: bool, kind: Any = String) -> Any:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``: one parameter, one cached
    statement, instead of thousands of placeholders to render and parse per query."""
    if pg:
        return column == any_(bindparam(None, builtins.list(values), type_=ARRAY(kind)))
    return column.in_(values)


@contextmanager
def _no_nested_loops(conn: Connection) -> Iterator[None]:
    """PostgreSQL: plan the next statements without nested loops (hash or merge joins)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    before = conn.exec_driver_sql("SHOW enable_nestloop").scalar()
    conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"SET LOCAL enable_nestloop = {'off' if before == 'off' else 'on'}")


def _stored(r: tuple[Any, ...]) -> tuple[Any, ...]:
    """A :func:`_page_row` as the store's bulk writers take it (``_entry_row`` order): a new
    entry is enabled, with no disabled reason."""
    return (*r[:_META], True, "", r[_META])


class _Statistics:
    """Keeps PostgreSQL's planner statistics for the entries table current during a long sync.

    A page's reads are index lookups only while the planner knows how big the bank is. Right
    after a bulk load it does not (autovacuum analyzes a minute later at best, or never under
    load) and reads the whole bank for every page instead: quadratic over a 10M-entry list.
    So a sync that has added half the table (at least ``ANALYZE_MIN`` rows) since the
    last look analyzes it, in its own short transaction between pages."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.on = store.engine.dialect.name == "postgresql"
        self.base = 0
        self.rows = self._estimate() if self.on else 0.0

    def _estimate(self) -> float:
        try:
            with self.store.engine.connect() as conn:
                n = conn.exec_driver_sql(
                    f"SELECT reltuples FROM pg_class WHERE oid = '{entries_t.name}'::regclass"
                ).scalar()
            return max(0.0, float(n or 0))
        except SQLAlchemyError:
            self.on = False
            return 0.0

    def grew(self, added: int) -> None:
        if not self.on or added - self.base < max(ANALYZE_MIN, 0.5 * self.rows):
            return
        self.base = added
        try:
            with self.store.begin_write() as conn:
                conn.exec_driver_sql(f"ANALYZE {entries_t.name}")
        except SQLAlchemyError:
            log.debug("could not analyze %s", entries_t.name, exc_info=True)
        self.rows = self._estimate()


class PageApplier:
    """Applies one page of an exchange in one transaction: its entries in bulk, the snapshot's
    seen marks and sweep, poisoned records, vouching, the checkpoint and the counters."""

    def __init__(self, xs: ExchangeStore) -> None:
        self.xs = xs

    def plan(self, page: Page) -> _Plan:
        """Validate and reduce a page outside the transaction: the last item per key wins, a
        bad entry becomes a poisoned record (its key's other entries still apply)."""
        plan = _Plan()
        final: dict[str, Upsert | Removal] = {}
        for item in page.items:
            if isinstance(item, Poisoned):
                key = item.key if isinstance(item.key, str) and good_key(item.key) else None
                plan.poisoned.append((key, clip(item.error), clip(item.raw, MAX_RAW)))
                if key is not None:
                    plan.seen.add(key)
                continue
            if not isinstance(item, Upsert | Removal):
                plan.poisoned.append((None, f"not a page item: {type(item).__name__}", ""))
                continue
            key = item.key
            if not isinstance(key, str) or not good_key(key):
                plan.poisoned.append(
                    (None, f"invalid record key (1-{MAX_KEY} characters)", clip(key, 200))
                )
                continue
            final.pop(key, None)  # re-insert: dict order is the order of each key's last item
            final[key] = item
            plan.seen.add(key)
        for key, item in final.items():
            if isinstance(item, Removal):
                plan.removals[key] = clip(f"{UPSTREAM} {item.reason or 'deleted upstream'}", 500)
                continue
            entries = item.entries if isinstance(item.entries, tuple | list) else ()
            if not isinstance(item.entries, tuple | list):
                plan.poisoned.append((key, "record entries are not a list", ""))
                plan.partial.add(key)
            if len(entries) == 1 and type(entries[0]) is NewEntry and entries[0].canonical:
                # The common case (a list line, one hash per record): nothing to validate.
                plan.upserts[key] = [_page_row(entries[0], key)]
                continue
            rows: dict[tuple[str, str, str], tuple[Any, ...]] = {}
            for n, entry in enumerate(entries, 1):
                try:
                    if not isinstance(entry, NewEntry):
                        raise ValueError(f"not a NewEntry but {type(entry).__name__}")
                    row = _page_row(normalize_entry(entry), key)
                except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as e:
                    plan.poisoned.append((key, clip(f"entry {n}: {e}"), clip(entry, MAX_RAW)))
                    plan.partial.add(key)
                    continue
                rows[(row[_ST], row[_VH], row[_UM])] = row
            plan.upserts[key] = list(rows.values())
        return plan

    def apply(
        self, row: Row[Any], page: Page, worker_id: str, run_id: int, result: SyncResult
    ) -> None:
        """One page, one transaction."""
        try:
            checkpoint = json_doc("checkpoint", page.checkpoint, dict, MAX_CHECKPOINT)
        except InvalidInput as exc:
            raise PermanentError(f"the exchange gave an unusable checkpoint: {exc}") from None
        snapshot = page.snapshot
        if snapshot is not None and (not isinstance(snapshot, str) or not good_key(snapshot)):
            raise PermanentError("the exchange gave an invalid snapshot id")
        plan = self.plan(page)
        counts = _Counts(poisoned=len(plan.poisoned))
        mode = OnDelete(row.on_delete)
        with database_errors(), self.xs.store.write() as (conn, rev):
            now = self.xs.clock()
            xrow = conn.execute(
                update(ex_t)
                .where(ex_t.c.id == row.id, ex_t.c.lease_holder == worker_id)
                .values(lease_until=now + self.xs.lease)
                .returning(ex_t.c.totals, ex_t.c.vouch_group, ex_t.c.on_delete, ex_t.c.bank_id)
            ).first()
            if xrow is None:
                raise _LeaseLost()
            mode = OnDelete(xrow.on_delete)
            bank_id = int(xrow.bank_id)
            touched = self._apply_entries(conn, rev, bank_id, plan, mode, counts, now)
            if snapshot is not None and plan.seen:
                self._mark_seen(conn, row.id, snapshot, plan.seen)
            if page.snapshot_complete and snapshot is not None:
                touched |= self._sweep(conn, rev, row.id, bank_id, snapshot, mode, counts, now)
            if touched and xrow.vouch_group:
                self.xs.vouching.revouch(conn, rev, xrow.vouch_group, touched)
            if touched:
                touch_bank(conn, bank_id)
            if plan.poisoned:
                conn.execute(
                    insert(err_t),
                    [
                        {
                            "exchange_id": row.id,
                            "at": now,
                            "kind": "poisoned_item",
                            "checkpoint": checkpoint,
                            "key": key,
                            "error": error,
                            "raw": raw,
                        }
                        for key, error, raw in plan.poisoned
                    ],
                )
            totals = {k: int((xrow.totals or {}).get(k, 0)) for k in TOTALS}
            for k, v in counts.as_dict().items():
                totals[k] += v
            conn.execute(
                update(ex_t)
                .where(ex_t.c.id == row.id)
                .values(checkpoint=checkpoint, poison_attempts=0, totals=totals, updated_at=now)
            )
            conn.execute(
                update(runs_t)
                .where(runs_t.c.id == run_id)
                .values(
                    pages=runs_t.c.pages + 1,
                    added=runs_t.c.added + counts.added,
                    updated=runs_t.c.updated + counts.updated,
                    removed=runs_t.c.removed + counts.removed,
                    disabled=runs_t.c.disabled + counts.disabled,
                    poisoned=runs_t.c.poisoned + counts.poisoned,
                    checkpoint=checkpoint,
                )
            )
            self.xs._in_page_transaction(conn)
        result.pages += 1
        for k, v in counts.as_dict().items():
            setattr(result, k, getattr(result, k) + v)
        result.checkpoint = checkpoint

    def _apply_entries(
        self,
        conn: Connection,
        rev: int,
        bank_id: int,
        plan: _Plan,
        mode: OnDelete,
        counts: _Counts,
        now: datetime,
    ) -> set[str]:
        """Write the plan's upserts and removals in bulk; returns the value hashes touched.

        Two indexed reads find what the bank holds of the page (by key, by value); new values
        then go in as one bulk insert of ready-made tuples (COPY on PostgreSQL, one
        ``executemany`` on SQLite), changed ones as one ``executemany`` update, and unchanged
        ones are left alone (a re-sync of an unchanged list writes no entry)."""
        desired: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        for rows in plan.upserts.values():
            for r in rows:
                desired[(r[_ST], r[_VH], r[_UM])] = r  # a later key takes over a shared value
        keys = [*plan.upserts, *plan.removals]
        if not keys:
            return set()
        pg = conn.dialect.name == "postgresql"
        size = PG_CHUNK if pg else CHUNK
        existing: dict[int, Any] = {}
        for chunk in chunks(keys, size):
            for r in conn.execute(
                select(*_OLD_COLUMNS).where(
                    entries_t.c.bank_id == bank_id, _one_of(entries_t.c.external_id, chunk, pg)
                )
            ).all():
                existing[r[0]] = r
        by_vkey = {(r[1], r[2], r[3] or ""): r for r in existing.values()}
        # Values held under other keys (or none): only those not found by key can be there.
        # By value_hash alone, other banks' rows dropped here: with ``bank_id`` in the query
        # SQLite walks the whole bank through the unique index instead (quadratic in a load).
        hashes = sorted({vk[1] for vk in desired if vk not in by_vkey})
        for chunk in chunks(hashes, size):
            for r in conn.execute(
                select(*_OLD_COLUMNS).where(_one_of(entries_t.c.value_hash, chunk, pg))
            ).all():
                if r[13] == bank_id and r[0] not in existing:
                    existing[r[0]] = r
                    by_vkey[(r[1], r[2], r[3] or "")] = r
        touched: set[str] = set()
        inserts: list[tuple[Any, ...]] = []
        updates: list[dict[str, Any]] = []
        decoded: dict[str | None, Any] = {}

        def same_json(text: str | None, value: Any) -> bool:
            if text not in decoded:
                decoded[text] = None if text is None else json.loads(text)
            return bool(decoded[text] == value)

        for vk, r in desired.items():
            old = by_vkey.get(vk)
            if old is None:
                inserts.append(r)
                touched.add(vk[1])
                continue
            ext, was_on, was_why, source, list_name, added, labels, meta, q = old[4:13]
            enabled, reason = bool(was_on), was_why or ""
            if upstream_disabled(enabled, reason):
                enabled, reason = True, ""
            elif reason.startswith(WITHDRAWN_LOCAL):  # listed again: the local decision stands
                reason = local_reason(reason)
            added_at = r[_ADDED] or added
            if (
                (r[_SOURCE], r[_LIST], r[_KEY], r[_QUALITY], added_at, enabled, reason)
                == (source, list_name, ext, q, added, was_on, was_why)
                and same_json(labels, r[_LABELS])
                and same_json(meta, r[_META])
            ):
                continue
            updates.append(
                {
                    "b_id": old.id,
                    "b_source": r[_SOURCE],
                    "b_list_name": r[_LIST],
                    "b_external_id": r[_KEY],
                    "b_labels": r[_LABELS],
                    "b_metadata": r[_META],
                    "b_quality": r[_QUALITY],
                    "b_added_at": added_at,
                    "b_enabled": enabled,
                    "b_disabled_reason": reason,
                }
            )
            touched.add(vk[1])
        if inserts:
            # The reads above showed none of these is in the bank, and the revision lock keeps
            # other writers out until commit: a plain insert (no ON CONFLICT) suffices.
            write = copy_rows if pg else executemany_rows
            write(conn, bank_id, rev, map(_stored, inserts), now=now, skip_duplicates=False)
            counts.added += len(inserts)
        if updates:
            conn.execute(
                update(entries_t)
                .where(entries_t.c.id == bindparam("b_id"))
                .values(
                    {
                        **{c: bindparam(f"b_{c}") for c in (*_KEPT, *_STATE_COLUMNS)},
                        "revision": rev,
                        "updated_at": now,
                    }
                ),
                updates,
            )
            counts.updated += len(updates)
        # Entries of the page's keys that the page no longer holds: dropped signals, removals.
        gone: dict[str, list[Any]] = {}
        for r in existing.values():
            if (r.signal_type, r.value_hash, r.url_match or "") in desired:
                continue
            ext = r.external_id
            if ext in plan.removals:
                gone.setdefault(plan.removals[ext], []).append(r)
            elif ext in plan.upserts and ext not in plan.partial:
                gone.setdefault(f"{UPSTREAM} dropped from record {ext}"[:500], []).append(r)
        for reason, rows in gone.items():
            touched |= self._retire(conn, rev, rows, reason, mode, counts, now)
        return touched

    def _retire(
        self,
        conn: Connection,
        rev: int,
        rows: Iterable[Any],
        reason: str,
        mode: OnDelete,
        counts: _Counts,
        now: datetime,
    ) -> set[str]:
        """Disable (with an upstream reason) or remove entries the partner no longer holds.
        Entries disabled here stay as they are when disabling; removing removes them all.
        ``rows`` need ``id``, ``value_hash``, ``enabled`` and ``disabled_reason``."""
        rows = builtins.list(rows)
        pg = conn.dialect.name == "postgresql"
        size = PG_CHUNK if pg else CHUNK
        if mode is OnDelete.REMOVE:
            ids = [r.id for r in rows]
            for chunk in chunks(ids, size):
                tombstone(conn, _one_of(entries_t.c.id, chunk, pg, BigInteger), rev)
                conn.execute(
                    delete(entries_t).where(_one_of(entries_t.c.id, chunk, pg, BigInteger))
                )
            counts.removed += len(ids)
            return {r.value_hash for r in rows}
        doomed = [
            r
            for r in rows
            if r.enabled
            or (upstream_disabled(False, r.disabled_reason) and r.disabled_reason != reason)
        ]
        for chunk in chunks([r.id for r in doomed], size):
            conn.execute(
                update(entries_t)
                .where(_one_of(entries_t.c.id, chunk, pg, BigInteger))
                .values(enabled=False, disabled_reason=reason, revision=rev, updated_at=now)
            )
        # Disabled here before the partner withdrew them: keep the local reason, and note the
        # withdrawal so they stop vouching and are not taken for entries the partner still holds.
        local = [
            r
            for r in rows
            if not r.enabled
            and not (r.disabled_reason or "").startswith((UPSTREAM, WITHDRAWN_LOCAL))
        ]
        for r in local:
            conn.execute(
                update(entries_t)
                .where(entries_t.c.id == r.id)
                .values(
                    disabled_reason=withdrawn_local(reason, r.disabled_reason or ""),
                    revision=rev,
                    updated_at=now,
                )
            )
        counts.disabled += sum(1 for r in doomed if r.enabled)
        return {r.value_hash for r in doomed} | {r.value_hash for r in local}

    def _mark_seen(self, conn: Connection, xid: int, snapshot: str, keys: set[str]) -> None:
        """Record the page's keys as seen in ``snapshot``: one statement, existing marks of this
        snapshot left untouched (no dead rows on PostgreSQL)."""
        upsert = (
            "ON CONFLICT (exchange_id, key) DO UPDATE SET snapshot = excluded.snapshot "
            f"WHERE {seen_t.name}.snapshot <> excluded.snapshot"
        )
        if conn.dialect.name == "postgresql":
            for chunk in chunks(sorted(keys), PG_CHUNK):
                conn.exec_driver_sql(
                    f"INSERT INTO {seen_t.name} (exchange_id, key, snapshot) "
                    "SELECT %(xid)s, k, %(snapshot)s FROM json_array_elements_text(%(keys)s::json) "
                    "AS k " + upsert,
                    # JSON text: exact for any key, and far cheaper to send than an array
                    {"xid": xid, "snapshot": snapshot, "keys": json.dumps(builtins.list(chunk))},
                )
        else:
            conn.exec_driver_sql(
                f"INSERT INTO {seen_t.name} (exchange_id, key, snapshot) VALUES (?, ?, ?) "
                + upsert,
                [(xid, k, snapshot) for k in sorted(keys)],
            )

    def _sweep(
        self,
        conn: Connection,
        rev: int,
        xid: int,
        bank_id: int,
        snapshot: str,
        mode: OnDelete,
        counts: _Counts,
        now: datetime,
    ) -> set[str]:
        """The snapshot is complete: every keyed entry it did not deliver is gone upstream.

        One anti-join finds them (on PostgreSQL without nested loops: right after a first
        load the planner has no statistics for the seen marks and would otherwise compare
        every entry with every mark, hours for a 10M-entry list); they are then disabled or
        removed by id, like any other retired entry."""
        unseen = and_(
            entries_t.c.bank_id == bank_id,
            entries_t.c.external_id.is_not(None),
            ~exists().where(
                seen_t.c.exchange_id == xid,
                seen_t.c.key == entries_t.c.external_id,
                seen_t.c.snapshot == snapshot,
            ),
        )
        cols = (
            entries_t.c.id,
            entries_t.c.value_hash,
            entries_t.c.enabled,
            entries_t.c.disabled_reason,
        )
        if mode is OnDelete.REMOVE:
            stmt = select(*cols).where(unseen)
        else:
            stmt = select(*cols).where(
                unseen,
                or_(
                    entries_t.c.enabled.is_(True),
                    entries_t.c.disabled_reason.startswith(AWAITING, autoescape=True),
                ),
            )
        with _no_nested_loops(conn):
            rows = conn.execute(stmt).all()
        reason = f"{UPSTREAM} not in the list any more"
        touched: set[str] = set()
        if rows:
            if mode is OnDelete.REMOVE:
                touched = self._retire(conn, rev, rows, reason, mode, counts, now)
            else:
                # Unlike a removal, the sweep also takes over entries held back for vouchers.
                pg = conn.dialect.name == "postgresql"
                for chunk in chunks([r.id for r in rows], PG_CHUNK if pg else CHUNK):
                    conn.execute(
                        update(entries_t)
                        .where(_one_of(entries_t.c.id, chunk, pg, BigInteger))
                        .values(enabled=False, disabled_reason=reason, revision=rev, updated_at=now)
                    )
                counts.disabled += sum(1 for r in rows if r.enabled)
                touched = {r.value_hash for r in rows}
        conn.execute(delete(seen_t).where(seen_t.c.exchange_id == xid))
        return touched


class SyncEngine:
    """Sync runs of an :class:`ExchangeStore`: leases, the page loop, run outcomes (done,
    failed, an unreadable page) and the schedule of due exchanges."""

    def __init__(self, xs: ExchangeStore) -> None:
        self.xs = xs

    def _claim(self, conn: Connection, row: Row[Any], worker_id: str, now: datetime) -> bool:
        res = conn.execute(
            update(ex_t)
            .where(
                ex_t.c.id == row.id,
                or_(
                    ex_t.c.lease_holder.is_(None),
                    ex_t.c.lease_until.is_(None),
                    ex_t.c.lease_until < now,
                ),
            )
            .values(lease_holder=worker_id, lease_until=now + self.xs.lease, state="syncing")
        )
        return res.rowcount == 1

    def sync(
        self,
        name: str,
        *,
        exchange: Exchange | None = None,
        worker_id: str = "cli",
        stop: threading.Event | None = None,
        max_pages: int | None = None,
        progress: Callable[[SyncProgress], None] | None = None,
    ) -> SyncResult:
        """Fetch and apply pages after the stored checkpoint until the exchange has no more,
        ``max_pages`` were applied or ``stop`` is set. Raises :class:`ExchangeBusy` when another
        worker holds the lease; every other failure is recorded on the exchange (state, backoff,
        error rows) and returned in ``SyncResult.error``."""
        if not isinstance(worker_id, str) or not 0 < len(worker_id) <= 128:
            raise InvalidInput("worker_id must be 1-128 characters")
        now = self.xs.clock()
        with database_errors(), self.xs.store.begin_write() as conn:
            row = self.xs.registry.row(conn, name)
            if not self._claim(conn, row, worker_id, now):
                raise ExchangeBusy(
                    f"exchange {row.name!r} is being synced by {row.lease_holder} (lease until "
                    f"{row.lease_until.isoformat() if row.lease_until else '?'})"
                )
            # A run left "running" belonged to a worker that died: its lease was taken over.
            conn.execute(
                update(runs_t)
                .where(runs_t.c.exchange_id == row.id, runs_t.c.state == "running")
                .values(state="interrupted", finished_at=now)
            )
            run_id = new_id(
                conn.execute(
                    insert(runs_t).values(
                        exchange_id=row.id,
                        worker_id=worker_id,
                        state="running",
                        started_at=now,
                        pages=0,
                        added=0,
                        updated=0,
                        removed=0,
                        disabled=0,
                        poisoned=0,
                        skipped_pages=0,
                        checkpoint=row.checkpoint,
                    )
                )
            )
        result = SyncResult(exchange=row.name, checkpoint=row.checkpoint)
        owned = exchange is None
        try:
            if exchange is None:
                exchange = self.xs.registry.open_row(row)
            self._run(row, exchange, worker_id, run_id, result, stop, max_pages, progress)
        except _LeaseLost:
            result.error = "lease lost: another worker took the exchange over"
            log.warning("exchange %s: %s", row.name, result.error)
            return result
        except BaseException as exc:
            # Anything unexpected (including a bad stored config): recorded, then re-raised only
            # if it is not an ordinary error, so the worker loop keeps going.
            self._failed(row, worker_id, run_id, result, exc)
            if not isinstance(exc, Exception):
                raise
            return result
        finally:
            if owned and exchange is not None:
                try:
                    exchange.close()
                except Exception:  # pragma: no cover - closing is best effort
                    log.debug("exchange %s: close failed", row.name, exc_info=True)
        return result

    def _run(
        self,
        row: Row[Any],
        exchange: Exchange,
        worker_id: str,
        run_id: int,
        result: SyncResult,
        stop: threading.Event | None,
        max_pages: int | None,
        progress: Callable[[SyncProgress], None] | None,
    ) -> None:
        checkpoint = row.checkpoint
        stopped = False
        stats = _Statistics(self.xs.store)
        while True:
            pages = exchange.fetch(dict(checkpoint) if checkpoint is not None else None)
            try:
                for page in pages:
                    if not isinstance(page, Page):
                        raise PermanentError(
                            f"exchange yielded {type(page).__name__}, not a Page (a bug in the "
                            f"{row.kind} connector)"
                        )
                    self.xs.applier.apply(row, page, worker_id, run_id, result)
                    stats.grew(result.added)
                    checkpoint = result.checkpoint
                    if page.attestation is not None:
                        self.xs.attesting.attest(row, exchange, page.attestation)
                    if progress is not None:
                        done, total = page.progress if page.progress else (None, None)
                        progress(
                            SyncProgress(
                                exchange=row.name,
                                pages=result.pages,
                                added=result.added,
                                updated=result.updated,
                                removed=result.removed,
                                disabled=result.disabled,
                                poisoned=result.poisoned,
                                done=done,
                                total=total,
                                checkpoint=checkpoint,
                            )
                        )
                    if (max_pages is not None and result.pages >= max_pages) or (
                        stop is not None and stop.is_set()
                    ):
                        stopped = True
                        break
            except PoisonedPage as exc:
                if self._poisoned_page(row, exc, worker_id, run_id, result, checkpoint):
                    checkpoint = result.checkpoint
                    continue  # skipped past it: fetch again from the new checkpoint
                return
            finally:
                close = getattr(pages, "close", None)
                if close is not None:
                    close()
            break
        result.complete = not stopped
        self._finished(row, worker_id, run_id, result)

    # -- run outcomes --------------------------------------------------------------------------

    def _release(
        self,
        conn: Connection,
        row: Row[Any],
        worker_id: str,
        values: dict[str, Any],
    ) -> bool:
        res = conn.execute(
            update(ex_t)
            .where(ex_t.c.id == row.id, ex_t.c.lease_holder == worker_id)
            .values(lease_holder=None, lease_until=None, **values)
        )
        return res.rowcount == 1

    def _finish_run(
        self, conn: Connection, run_id: int, state: str, result: SyncResult, now: datetime
    ) -> None:
        conn.execute(
            update(runs_t)
            .where(runs_t.c.id == run_id)
            .values(
                state=state,
                finished_at=now,
                error=result.error,
                skipped_pages=result.skipped_pages,
            )
        )

    def _finished(self, row: Row[Any], worker_id: str, run_id: int, result: SyncResult) -> None:
        now = self.xs.clock()
        with database_errors(), self.xs.store.begin_write() as conn:
            current = conn.execute(
                select(ex_t.c.interval_seconds, ex_t.c.enabled).where(ex_t.c.id == row.id)
            ).first()
            interval = float(current.interval_seconds) if current else float(row.interval_seconds)
            enabled = bool(current.enabled) if current else False
            due = now + timedelta(seconds=interval) if result.complete else now
            values = {
                "state": "idle",
                "failures": 0,
                "last_error": None,
                "last_sync_at": now,
                "last_success_at": now,
                "next_sync_at": due if enabled else None,
            }
            if not self._release(conn, row, worker_id, values):
                return
            self._finish_run(conn, run_id, "ok" if result.complete else "partial", result, now)
            append_audit(
                conn,
                actor="system",
                action="exchange.sync",
                target=row.name,
                detail={"worker": worker_id, "complete": result.complete, **result.counts()},
            )

    def _poisoned_page(
        self,
        row: Row[Any],
        exc: PoisonedPage,
        worker_id: str,
        run_id: int,
        result: SyncResult,
        checkpoint: Checkpoint | None,
    ) -> bool:
        """Record an unreadable page. After ``exchange_poison_attempts`` in a row at one
        checkpoint, commit ``skip_to`` and return True (go on), or mark the exchange stalled."""
        now = self.xs.clock()
        message = clip(f"unreadable page: {exc}")
        skip_to = None
        if exc.skip_to is not None:
            try:
                skip_to = json_doc("checkpoint", exc.skip_to, dict, MAX_CHECKPOINT)
            except InvalidInput:
                skip_to = None
        with database_errors(), self.xs.store.begin_write() as conn:
            xrow = conn.execute(
                update(ex_t)
                .where(ex_t.c.id == row.id, ex_t.c.lease_holder == worker_id)
                .values(poison_attempts=ex_t.c.poison_attempts + 1)
                .returning(ex_t.c.poison_attempts, ex_t.c.totals)
            ).first()
            if xrow is None:
                raise _LeaseLost()
            conn.execute(
                insert(err_t).values(
                    exchange_id=row.id,
                    at=now,
                    kind="poisoned_page",
                    checkpoint=checkpoint,
                    key=None,
                    error=message,
                    raw=clip(exc.raw, MAX_RAW),
                )
            )
            attempts = int(xrow.poison_attempts)
            if attempts >= self.xs.poison_attempts and skip_to is not None:
                conn.execute(
                    update(ex_t)
                    .where(ex_t.c.id == row.id)
                    .values(checkpoint=skip_to, poison_attempts=0, updated_at=now)
                )
                conn.execute(
                    update(runs_t)
                    .where(runs_t.c.id == run_id)
                    .values(skipped_pages=runs_t.c.skipped_pages + 1, checkpoint=skip_to)
                )
                append_audit(
                    conn,
                    actor="system",
                    action="exchange.page.skipped",
                    target=row.name,
                    detail={"attempts": attempts, "error": message[:500]},
                )
                result.skipped_pages += 1
                result.checkpoint = skip_to
                log.warning("exchange %s: skipped an unreadable page: %s", row.name, message)
                return True
            stalled = attempts >= self.xs.poison_attempts
            delay = self.xs.backoff.delay(attempts, self.xs.rng)
            result.error = message
            self._release(
                conn,
                row,
                worker_id,
                {
                    "state": "stalled" if stalled else "error",
                    "failures": ex_t.c.failures + 1,
                    "last_error": message,
                    "last_sync_at": now,
                    "next_sync_at": now + timedelta(seconds=delay),
                },
            )
            self._finish_run(conn, run_id, "error", result, now)
            append_audit(
                conn,
                actor="system",
                action="exchange.sync",
                target=row.name,
                detail={"worker": worker_id, "error": message[:500], **result.counts()},
            )
        return False

    def _failed(
        self, row: Row[Any], worker_id: str, run_id: int, result: SyncResult, exc: BaseException
    ) -> None:
        """Record a failed run: transient errors back off (honouring the partner's
        Retry-After), permanent ones wait for a person (retried at the longest backoff)."""
        now = self.xs.clock()
        if isinstance(exc, TransientError):
            kind, text = "transient", str(exc)
        elif isinstance(exc, PermanentError | InvalidInput):
            kind, text = "permanent", str(exc)
        elif isinstance(exc, ExchangeError):
            kind, text = "transient", str(exc)
        elif isinstance(exc, Exception):
            # Unexpected errors are treated as transient; the type helps, the message may not
            # be safe to store (it could quote a response), so only its first line is kept.
            kind = "transient"
            text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            log.warning("exchange %s: sync failed", row.name, exc_info=exc)
        else:
            kind, text = "transient", f"interrupted ({type(exc).__name__})"
        message = clip(text or type(exc).__name__)
        result.error = message
        try:
            with database_errors(), self.xs.store.begin_write() as conn:
                failures = (
                    int(
                        conn.execute(select(ex_t.c.failures).where(ex_t.c.id == row.id)).scalar()
                        or 0
                    )
                    + 1
                )
                if kind == "permanent":
                    delay = self.xs.backoff.cap
                else:
                    delay = self.xs.backoff.delay(failures, self.xs.rng)
                    retry_after = getattr(exc, "retry_after", None)
                    if isinstance(retry_after, int | float) and retry_after > 0:
                        delay = max(delay, min(float(retry_after), 7 * 86400.0))
                if not self._release(
                    conn,
                    row,
                    worker_id,
                    {
                        "state": "error",
                        "failures": failures,
                        "last_error": message,
                        "last_sync_at": now,
                        "next_sync_at": now + timedelta(seconds=delay),
                    },
                ):
                    return
                conn.execute(
                    insert(err_t).values(
                        exchange_id=row.id,
                        at=now,
                        kind=kind,
                        checkpoint=result.checkpoint,
                        key=None,
                        error=message,
                        raw="",
                    )
                )
                self._finish_run(conn, run_id, "error", result, now)
                append_audit(
                    conn,
                    actor="system",
                    action="exchange.sync",
                    target=row.name,
                    detail={"worker": worker_id, "error": message[:500], **result.counts()},
                )
        except StoreError:
            log.warning("exchange %s: could not record the failure", row.name, exc_info=True)

    # -- the schedule --------------------------------------------------------------------------

    def run_due(
        self, worker_id: str, *, stop: threading.Event | None = None
    ) -> builtins.list[SyncResult]:
        """Sync every enabled exchange whose ``next_sync_at`` has come and whose lease is free
        (one run each, at most ``exchange_page_limit`` pages)."""
        now = self.xs.clock()
        with database_errors(), self.xs.store.engine.connect() as conn:
            names = builtins.list(
                conn.execute(
                    select(ex_t.c.name)
                    .where(
                        ex_t.c.enabled.is_(True),
                        ex_t.c.next_sync_at <= now,
                        or_(ex_t.c.lease_until.is_(None), ex_t.c.lease_until < now),
                    )
                    .order_by(ex_t.c.next_sync_at)
                ).scalars()
            )
        out = []
        for name in names:
            if stop is not None and stop.is_set():
                break
            try:
                out.append(
                    self.sync(
                        name, worker_id=worker_id, stop=stop, max_pages=self.xs.page_limit or None
                    )
                )
            except (ExchangeBusy, ExchangeNotFound):
                continue
        return out

    def errors(self, name: str, *, limit: int = 50) -> builtins.list[ExchangeErrorRecord]:
        _, rows = self.xs.registry.latest(name, err_t, limit)
        return [
            ExchangeErrorRecord(r.id, r.at, r.kind, r.checkpoint, r.key, r.error, r.raw)
            for r in rows
        ]

    def runs(self, name: str, *, limit: int = 20) -> builtins.list[SyncRun]:
        _, rows = self.xs.registry.latest(name, runs_t, limit)
        return [
            SyncRun(
                id=r.id,
                worker_id=r.worker_id,
                state=r.state,
                started_at=r.started_at,
                finished_at=r.finished_at,
                pages=r.pages,
                added=r.added,
                updated=r.updated,
                removed=r.removed,
                disabled=r.disabled,
                poisoned=r.poisoned,
                skipped_pages=r.skipped_pages,
                error=r.error,
                checkpoint=r.checkpoint,
            )
            for r in rows
        ]


class ExchangeLoop:
    """The worker's exchange thread: syncs due exchanges, then sends due feedback, every
    ``exchange_poll_seconds``. :meth:`run_once` is one pass (``--once`` and tests)."""

    def __init__(
        self,
        exchanges: ExchangeStore,
        *,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exchanges = exchanges
        self.worker_id = worker_id
        self.every = max(0.1, float(exchanges.settings.exchange_poll_seconds))
        self._clock = clock
        self._next = float("-inf")
        self.stop_event = threading.Event()
        self.synced = 0
        self.feedback: dict[str, int] = {}

    def stop(self) -> None:
        self.stop_event.set()

    def run_once(self) -> list[SyncResult]:
        now = self._clock()
        if now < self._next:
            return []
        self._next = now + self.every
        results = self.exchanges.run_due(self.worker_id, stop=self.stop_event)
        self.synced += len(results)
        for r in results:
            if r.error:
                log.warning("exchange %s: %s", r.exchange, r.error)
            elif r.pages:
                log.info(
                    "exchange %s: %d page(s), +%d ~%d -%d off %d, %d poisoned",
                    r.exchange,
                    r.pages,
                    r.added,
                    r.updated,
                    r.removed,
                    r.disabled,
                    r.poisoned,
                )
        sent = self.exchanges.send_due_feedback(self.worker_id)
        for k, v in sent.items():
            self.feedback[k] = self.feedback.get(k, 0) + v
        return results

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except StoreError as exc:
                log.warning("exchanges: database unavailable: %s", exc)
            except Exception:
                log.exception("exchanges: unexpected error")
            self.stop_event.wait(min(1.0, self.every))

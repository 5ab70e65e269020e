"""Vouchers in the store: published pdata tables, matched shares, threshold openings, the hourly
rate limit, and verified franking reports. The protocol itself is :mod:`bastion.psi` (pure);
this module keeps its state durable and every opening audited.

Accepting and processing. ``POST /v1/vouchers`` only checks each voucher (its form, its table,
its epoch, and that its header names the sender the platform states) and queues it
(:meth:`VoucherStore.accept`); the worker opens queued vouchers later
(:meth:`VoucherStore.process_queue`), so the platform's answer, and its timing, never depend on
whether a voucher matched.

What is stored, and why no more: a voucher that matches nothing is deleted from the queue once
processed (it would let a later table be tried against it). A matched voucher is stored as the
server received it (share, detection row, two parts sealed under the account key the server
does not have). Secrets are sealed with the master key: each table's scalar, the franking key,
an account key once its account opened, opened derivatives and reported messages.

Opening. When an account's epoch has t real shares a key can be rebuilt (the cryptographic gate:
t projection hits). Each item's PDQ hash is then re-checked against the live bank (``verify``);
the key is kept, and anything opened, only if the verified items cover t distinct pictures.
Otherwise the key is forgotten and the items that failed the re-check are discarded with their
sealed parts destroyed, so that vouchers forged in an account's name, or false positives, never
lock its key nor stay decryptable. On opening, the verified items' ids and derivatives
(re-encoded to JPEG here) go into ``voucher_items`` and are handed to
:attr:`VoucherStore.on_open` (the review system: review only, never an automatic action) after
the transaction commits; a failed hand-off stays pending (:meth:`VoucherStore.pending_openings`)
so nothing is lost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from bastion.client.field import DHF_BYTES, P_DHF, P_SHARE, SHARE_BYTES, from_bytes, to_bytes
from bastion.client.franking import FRANKING_KEY_BYTES
from bastion.client.pdata import MODES, Params, PDataError
from bastion.client.voucher import (
    VoucherError,
    check_account,
    open_part_a,
    open_part_b,
    parse_header,
    parse_voucher,
)
from bastion.crypto import MasterKey, seal, unseal
from bastion.psi import (
    Report,
    ReportRejected,
    Row,
    ServerSecret,
    Undecodable,
    build_pdata,
    dependencies,
    distinct_images,
    open_parsed,
    platform_tag,
    reconstruct,
    verify_report,
)
from bastion.psi.media import MEDIA_TYPE, reencode_derivative
from bastion.psi.rows import (
    FrankingReportRow,
    PsiBuildRow,
    PsiSecretRow,
    PsiTableRow,
    VoucherCountRow,
    VoucherGroupRow,
    VoucherItemRow,
    VoucherQueueRow,
    VoucherShareRow,
)
from bastion.store.models import EntryRow
from bastion.store.store import InvalidInput, Store, StoreError, StoreUnavailable, append_audit

log = logging.getLogger("bastion.vouchers")

tables_t = PsiTableRow.__table__
builds_t = PsiBuildRow.__table__
secrets_t = PsiSecretRow.__table__
counts_t = VoucherCountRow.__table__
groups_t = VoucherGroupRow.__table__
shares_t = VoucherShareRow.__table__
items_t = VoucherItemRow.__table__
queue_t = VoucherQueueRow.__table__
entries_t = EntryRow.__table__
reports_t = FrankingReportRow.__table__

#: pdq hex -> bank entries within the verify distance (``Match.as_dict`` shapes); [] = none.
Verify = Callable[[str], list[dict[str, Any]]]
#: Detection is linear algebra over the distinct matched shares; beyond this many it is not
#: attempted (an honest client never gets near it: t real + at most s synthetic are needed).
MAX_DETECT_ROWS = 2000
MAX_MESSAGE = 16 * 2**20


class NoTable(StoreError):
    """No pdata table has been built yet."""


class LeaseLost(StoreError):
    """A build job's lease passed to another worker; this worker's table was not published."""


#: Build job states: recorded, claimed by a worker, published, given up.
PENDING, BUILDING, DONE, FAILED = "pending", "building", "done", "failed"
#: A job whose worker vanished this many times (lease expired mid-build) is failed, not retried.
MAX_BUILD_ATTEMPTS = 3


def params_from_settings(settings: Any) -> Params:
    """Protocol parameters from the ``voucher_*`` settings (validated by :class:`Params`)."""
    mode = str(settings.voucher_mode).lower()
    if mode not in MODES:
        raise PDataError(f"voucher_mode must be one of {', '.join(MODES)}, not {mode!r}")
    locality: dict[str, int] = {}
    if mode != "exact":
        if int(settings.voucher_probes) > 0:
            locality["probes"] = int(settings.voucher_probes)
        if int(settings.voucher_max_flips) >= 0:
            locality["max_flips"] = int(settings.voucher_max_flips)
    if mode == "near":
        locality["chunks"] = int(settings.voucher_chunks)
    if mode == "compact":
        locality["key_bits"] = int(settings.voucher_key_bits)
    return Params.for_mode(
        mode,
        **locality,
        min_quality=int(settings.voucher_min_quality),
        threshold=int(settings.voucher_threshold),
        dhf_dim=int(settings.voucher_max_synthetic),
        synthetic_ppm=round(float(settings.voucher_synthetic_rate) * 1_000_000),
        epoch_seconds=round(float(settings.voucher_epoch_days) * 86400),
        ad_bytes=int(settings.voucher_ad_bytes),
    )


@dataclass(frozen=True)
class TableInfo:
    id: int
    root: str
    created_at: datetime
    params: dict[str, Any]
    stats: dict[str, Any]
    banks: list[str] | None
    size: int


@dataclass(frozen=True)
class BuildJob:
    """A pdata build request and where it is; ``table_id``/``root`` once done."""

    id: int
    state: str
    banks: list[str] | None
    params: dict[str, int]
    requested_by: str
    requested_at: datetime
    remote_addr: str | None
    attempts: int
    lease_owner: str | None
    lease_until: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress: float
    table_id: int | None
    root: str | None
    error: str | None


def _job(row: Any) -> BuildJob:
    return BuildJob(
        row.id,
        row.state,
        row.banks,
        dict(row.params),
        row.requested_by,
        row.requested_at,
        row.remote_addr,
        row.attempts,
        row.lease_owner,
        row.lease_until,
        row.started_at,
        row.finished_at,
        float(row.progress),
        row.table_id,
        row.root,
        row.error,
    )


@dataclass(frozen=True)
class OpenedItem:
    """An item revealed by a threshold crossing. ``media`` (the derivative) is filled when it is
    handed out by :meth:`VoucherStore.submit` and the hook, never in listings."""

    id: int
    account: str
    epoch: int
    item_id: str
    pdq: str
    quality: int
    matches: list[dict[str, Any]]
    media_type: str
    media_size: int
    media_sha256: str
    opened_at: datetime
    media: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class OpenedAccount:
    """What one submit opened for one account's epoch. ``first``: this submit crossed the
    threshold (else these items joined an account opened before)."""

    account: str
    epoch: int
    items: tuple[OpenedItem, ...]
    first: bool
    real: int
    synthetic: int
    verified: int
    #: Distinct bank pictures the verified items covered when the threshold was crossed.
    images: int = 0


@dataclass(frozen=True)
class ItemResult:
    """What became of voucher ``index`` of a batch: 202 queued; 422 refused (``error``
    ``invalid``: malformed, unknown table, stale epoch; ``account_mismatch``: sealed for another
    account than its sender); 429 refused, its account is over the hourly limit
    (``retry_after`` seconds). Never whether it matched: that is not known yet."""

    index: int
    status: int
    error: str | None = None
    detail: str | None = None
    retry_after: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202


@dataclass(frozen=True)
class ProcessResult:
    """One step of the worker: how many queued vouchers it processed, and what opened."""

    processed: int
    opened: tuple[OpenedAccount, ...]


@dataclass(frozen=True)
class SubmitResult:
    accepted: int
    opened: tuple[OpenedAccount, ...]
    results: tuple[ItemResult, ...] = ()


@dataclass(frozen=True)
class HourCount:
    hour: datetime
    accepted: int
    rejected: int


@dataclass(frozen=True)
class GroupInfo:
    account: str
    epoch: int
    state: str
    shares: int
    real: int
    synthetic: int
    verified: int
    opened_at: datetime | None
    note: str
    discarded: int = 0


@dataclass(frozen=True)
class FrankingReport:
    id: int
    at: datetime
    reporter: str
    sender: str
    recipient: str
    sent_at: datetime
    commitment: str
    message_size: int
    message_sha256: str
    context: dict[str, Any]
    message: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class _Table:
    id: int
    root: bytes
    params: Params
    scalar: bytes
    banks: tuple[str, ...] | None


def _now() -> datetime:
    return datetime.now(UTC)


def _insert(conn: Connection, table: Any) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


class VoucherStore:
    """Durable state of the voucher protocol; wraps :class:`Store`. Thread-safe."""

    def __init__(
        self,
        store: Store,
        master_key: MasterKey,
        settings: Any,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.engine = store.engine
        self.master_key = master_key
        self.settings = settings
        self.clock = clock
        #: Called with every :class:`OpenedAccount` after its transaction commits (wire the
        #: review system here). Items stay pending until it returns without raising.
        self.on_open: Callable[[OpenedAccount], None] | None = None
        #: Called with every verified :class:`FrankingReport` after it is stored.
        self.on_report: Callable[[FrankingReport], None] | None = None
        self._tables: dict[bytes, _Table | None] = {}
        self._lock = threading.Lock()
        self._franking_key: bytes | None = None
        self._blob: tuple[int, bytes] | None = None

    @property
    def params(self) -> Params:
        return params_from_settings(self.settings)

    # -- pdata -----------------------------------------------------------------------------

    def build_table(
        self,
        *,
        actor: str,
        banks: Sequence[str] | None = None,
        remote_addr: str | None = None,
        params: Params | None = None,
        job: tuple[int, str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> TableInfo:
        """Build and publish a new table from the enabled PDQ entries of ``banks`` (default: the
        ``voucher_banks`` setting, or every enabled bank), with a fresh secret. Older tables
        beyond ``voucher_keep_tables`` are deleted with their secrets. Slow for large banks:
        the API records a job instead (:meth:`request_build`) and a worker calls this through
        :meth:`run_build`, passing ``job`` (id, lease owner) so the table is published in the
        same transaction that marks the job done, and only while the lease is still its own."""
        params = self.params if params is None else params
        if banks is None:
            banks = list(self.settings.voucher_banks) or None
        for name in banks or ():
            self.store.get_bank(name)  # BankNotFound: never publish an empty table by typo
        entries = self.store.iter_entries(banks=banks, signal_types=["pdq"])
        hexes = [e.value for e in entries]
        secret = ServerSecret.generate()
        label = "bastion banks: " + (",".join(sorted(b.lower() for b in banks)) if banks else "*")
        pdata, stats = build_pdata(
            hexes,
            params,
            secret,
            label=label[:1000],
            load=self.settings.voucher_cuckoo_load,
            progress=progress,
        )
        now = _now()
        stats_doc = {
            "entries": stats.entries,
            "keys": stats.keys,
            "dropped_near": stats.dropped_near,
            "buckets": stats.n_buckets,
            "load": round(stats.load, 4),
            "seconds": round(stats.seconds, 3),
            "bytes": stats.blob_bytes,
        }
        params_doc = _params_doc(params)
        with self.store.begin_write() as conn:
            table_id = conn.execute(
                insert(tables_t)
                .values(
                    root=pdata.root,
                    created_at=now,
                    params=params_doc,
                    stats=stats_doc,
                    banks=[b.lower() for b in banks] if banks else None,
                    blob=pdata.blob,
                    sealed_secret=seal(
                        self.master_key, secret.to_bytes(), f"psi-table:{pdata.root}".encode()
                    ),
                )
                .returning(tables_t.c.id)
            ).scalar_one()
            if job is not None:
                done = conn.execute(
                    update(builds_t)
                    .where(
                        builds_t.c.id == job[0],
                        builds_t.c.state == BUILDING,
                        builds_t.c.lease_owner == job[1],
                    )
                    .values(
                        state=DONE,
                        table_id=table_id,
                        root=pdata.root,
                        finished_at=now,
                        progress=1.0,
                        lease_until=None,
                        error=None,
                    )
                )
                if done.rowcount != 1:  # rolls the table back: another worker owns the job
                    raise LeaseLost(f"pdata build {job[0]}: lease lost; table not published")
            keep = max(1, int(self.settings.voucher_keep_tables))
            old = conn.execute(
                select(tables_t.c.id).order_by(tables_t.c.id.desc()).offset(keep)
            ).scalars()
            retired = list(old)
            if retired:
                conn.execute(delete(tables_t).where(tables_t.c.id.in_(retired)))
            append_audit(
                conn,
                actor=actor,
                action="pdata.build",
                target=f"pdata:{pdata.root}",
                detail={
                    **stats_doc,
                    "retired": len(retired),
                    "banks": banks or "*",
                    "mode": params.mode_name,
                    **({"job": job[0]} if job else {}),
                },
                remote_addr=remote_addr,
            )
        with self._lock:
            self._tables.clear()
        return TableInfo(
            table_id,
            pdata.root,
            now,
            params_doc,
            stats_doc,
            list(banks) if banks else None,
            len(pdata.blob),
        )

    def current_table(self) -> TableInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*[c for c in tables_t.c if c.name not in ("blob", "sealed_secret")])
                .add_columns(func.length(tables_t.c.blob).label("size"))
                .order_by(tables_t.c.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return TableInfo(
            row.id,
            row.root,
            row.created_at,
            dict(row.params),
            dict(row.stats),
            row.banks,
            int(row.size),
        )

    def table_blob(self, table_id: int) -> bytes:
        """A table's bytes; the last one asked for stays in memory (clients fetch it often)."""
        cached = self._blob
        if cached is not None and cached[0] == table_id:
            return cached[1]
        with self.engine.connect() as conn:
            blob = conn.execute(
                select(tables_t.c.blob).where(tables_t.c.id == table_id)
            ).scalar_one_or_none()
        if blob is None:
            raise NoTable("that pdata table was retired; fetch the current one")
        self._blob = (table_id, bytes(blob))
        return self._blob[1]

    def _table(self, root: bytes, conn: Connection | None = None) -> _Table | None:
        """A table by root (cached); ``conn``: read it in that transaction."""
        with self._lock:
            if root in self._tables:
                return self._tables[root]
        query = select(
            tables_t.c.id, tables_t.c.params, tables_t.c.banks, tables_t.c.sealed_secret
        ).where(tables_t.c.root == root.hex())
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.engine.connect() as own:
                row = own.execute(query).first()
        table = None
        if row is not None:
            secret = ServerSecret.from_bytes(
                unseal(self.master_key, row.sealed_secret, f"psi-table:{root.hex()}".encode())
            )
            params = Params(**{k: int(v) for k, v in dict(row.params).items()})
            banks = tuple(row.banks) if row.banks else None
            table = _Table(row.id, root, params, secret.scalar, banks)
        with self._lock:
            if len(self._tables) > 64:
                self._tables.clear()
            self._tables[root] = table
        return table

    def banks_for(self, root: bytes) -> tuple[str, ...] | None:
        """The banks a table was built from (None: all), for the verify callback."""
        table = self._table(root)
        return table.banks if table else None

    # -- background builds -------------------------------------------------------------------

    def request_build(
        self, *, actor: str, banks: Sequence[str] | None = None, remote_addr: str | None = None
    ) -> BuildJob:
        """Record a build for a worker (``bastion worker``) to run; the current table keeps
        being served meanwhile. Checks now what would fail later: the banks exist
        (BankNotFound), the settings make valid parameters (PDataError), which are frozen into
        the job so the table is built with what was asked for."""
        params = self.params
        if banks is None:
            banks = list(self.settings.voucher_banks) or None
        for name in banks or ():
            self.store.get_bank(name)
        with self.store.begin_write() as conn:
            job_id = conn.execute(
                insert(builds_t)
                .values(
                    state=PENDING,
                    banks=[b.lower() for b in banks] if banks else None,
                    params=_params_doc(params),
                    requested_by=actor[:255],
                    requested_at=_now(),
                    remote_addr=remote_addr,
                    attempts=0,
                    progress=0.0,
                )
                .returning(builds_t.c.id)
            ).scalar_one()
            append_audit(
                conn,
                actor=actor,
                action="pdata.request",
                target=f"pdata-build:{job_id}",
                detail={"banks": list(banks) if banks else "*", "mode": params.mode_name},
                remote_addr=remote_addr,
            )
        job = self.get_build(job_id)
        assert job is not None
        return job

    def get_build(self, job_id: int) -> BuildJob | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(builds_t).where(builds_t.c.id == job_id)).first()
        return None if row is None else _job(row)

    def list_builds(self, limit: int = 20) -> list[BuildJob]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(builds_t).order_by(builds_t.c.id.desc()).limit(limit))
            return [_job(r) for r in rows]

    def _lease_seconds(self) -> float:
        return max(10.0, float(self.settings.voucher_build_lease_seconds))

    def claim_build(self, owner: str, *, job_id: int | None = None) -> BuildJob | None:
        """Take the oldest pending build (or one whose worker's lease ran out) for ``owner``.

        A compare-and-set update: of two workers racing for a job, the second one's WHERE no
        longer matches once the first has committed, on SQLite and PostgreSQL alike, so a job
        is never built twice at once. A job abandoned :data:`MAX_BUILD_ATTEMPTS` times (its
        worker died each time: out of memory, say) is failed rather than tried again."""
        now = _now()
        lease_until = datetime.fromtimestamp(now.timestamp() + self._lease_seconds(), UTC)
        claimable = (builds_t.c.state == PENDING) | (
            (builds_t.c.state == BUILDING) & (builds_t.c.lease_until < now)
        )
        with self.store.begin_write() as conn:
            query = select(builds_t.c.id, builds_t.c.attempts).where(claimable)
            if job_id is not None:
                query = query.where(builds_t.c.id == job_id)
            for candidate in conn.execute(query.order_by(builds_t.c.id).limit(10)).all():
                where = (builds_t.c.id == candidate.id) & claimable
                if candidate.attempts >= MAX_BUILD_ATTEMPTS:
                    conn.execute(
                        update(builds_t)
                        .where(where)
                        .values(
                            state=FAILED,
                            finished_at=now,
                            lease_until=None,
                            error=f"abandoned by its worker {candidate.attempts} times",
                        )
                    )
                    continue
                claimed = conn.execute(
                    update(builds_t)
                    .where(where)
                    .values(
                        state=BUILDING,
                        lease_owner=owner[:255],
                        lease_until=lease_until,
                        attempts=builds_t.c.attempts + 1,
                        started_at=now,
                        progress=0.0,
                    )
                )
                if claimed.rowcount == 1:
                    row = conn.execute(select(builds_t).where(builds_t.c.id == candidate.id)).one()
                    return _job(row)
        return None

    def renew_build(self, job_id: int, owner: str, progress: float) -> None:
        """Extend the lease and record progress; :class:`LeaseLost` if the job is no longer
        this worker's (it then stops: another worker is building it)."""
        until = datetime.fromtimestamp(time.time() + self._lease_seconds(), UTC)
        with self.store.begin_write() as conn:
            renewed = conn.execute(
                update(builds_t)
                .where(
                    builds_t.c.id == job_id,
                    builds_t.c.state == BUILDING,
                    builds_t.c.lease_owner == owner,
                )
                .values(lease_until=until, progress=round(min(1.0, max(0.0, progress)), 4))
            )
        if renewed.rowcount != 1:
            raise LeaseLost(f"pdata build {job_id}: lease lost")

    def run_build(
        self,
        job: BuildJob,
        owner: str,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> BuildJob:
        """Build and publish a claimed job; mark it failed (audited) if the build fails. The
        lease is renewed as slots fill, at most every third of the lease."""
        every = self._lease_seconds() / 3
        last = [time.monotonic()]

        def on_progress(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            if time.monotonic() - last[0] >= every:
                last[0] = time.monotonic()
                self.renew_build(job.id, owner, done / total if total else 1.0)

        try:
            params = Params(**{k: int(v) for k, v in job.params.items()})
            self.build_table(
                actor=job.requested_by,
                banks=job.banks,
                remote_addr=job.remote_addr,
                params=params,
                job=(job.id, owner),
                progress=on_progress,
            )
        except LeaseLost:
            log.warning("pdata build %d: lease lost to another worker; stopped", job.id)
        except Exception as exc:
            log.exception("pdata build %d failed", job.id)
            with self.store.begin_write() as conn:
                failed = conn.execute(
                    update(builds_t)
                    .where(
                        builds_t.c.id == job.id,
                        builds_t.c.state == BUILDING,
                        builds_t.c.lease_owner == owner,
                    )
                    .values(
                        state=FAILED, finished_at=_now(), lease_until=None, error=str(exc)[:2000]
                    )
                )
                if failed.rowcount == 1:
                    append_audit(
                        conn,
                        actor=job.requested_by,
                        action="pdata.build_failed",
                        target=f"pdata-build:{job.id}",
                        detail={"error": str(exc)[:500]},
                        remote_addr=job.remote_addr,
                    )
        done = self.get_build(job.id)
        assert done is not None
        return done

    def build_pending_once(self, owner: str) -> BuildJob | None:
        """Claim and run one pending build (the worker's periodic step); None if none waits."""
        job = self.claim_build(owner)
        return None if job is None else self.run_build(job, owner)

    # -- vouchers --------------------------------------------------------------------------

    def accept(
        self,
        items: Sequence[tuple[str, bytes]],
        *,
        actor: str,
        remote_addr: str | None = None,
    ) -> list[ItemResult]:
        """Queue vouchers for the worker (:meth:`process_queue`), each beside the account the
        platform authenticated as its sender. Nothing is opened here, so nothing about the
        answer (status, body or time) depends on whether a voucher matched.

        Each voucher is judged on its own, so one sender cannot get another's vouchers refused:
        a malformed voucher, one made against an unknown table or outside the current epoch, or
        one whose header names another account than its stated sender is refused (422, and a
        mismatch is audited); vouchers of an account over its hourly limit are refused (429),
        counted and audited, and the rest of the batch is queued."""
        now = self.clock()
        hour = int(now // 3600)
        results: list[ItemResult | None] = [None] * len(items)
        valid: dict[str, list[int]] = {}
        mismatched: Counter[tuple[str, str]] = Counter()
        for index, (account, blob) in enumerate(items):
            refused = self._check(account, blob, now)
            if refused is None:
                valid.setdefault(account, []).append(index)
                continue
            error, detail, named = refused
            results[index] = ItemResult(index, 422, error, detail)
            if named is not None:
                mismatched[(account, named)] += 1
        limit = int(self.settings.voucher_rate_per_hour)
        retry = max(1, 3600 - int(now) % 3600)
        when = _now()
        try:
            with self.store.begin_write() as conn:
                for account, indexes in sorted(valid.items()):
                    total = self._count(conn, account, hour, accepted=len(indexes))
                    over = min(len(indexes), max(0, total - limit)) if limit else 0
                    if over:
                        self._count(conn, account, hour, accepted=-over, rejected=over)
                        for i in indexes[len(indexes) - over :]:
                            results[i] = ItemResult(
                                i,
                                429,
                                "rate_limited",
                                f"account {account!r} is over its limit of {limit} vouchers "
                                f"per hour; retry in {retry} s",
                                retry,
                            )
                        indexes = indexes[: len(indexes) - over]
                        append_audit(
                            conn,
                            actor=actor,
                            action="voucher.rate_limited",
                            target=f"account:{account}",
                            detail={"vouchers": over, "limit": limit},
                            remote_addr=remote_addr,
                        )
                    if indexes:
                        conn.execute(
                            insert(queue_t),
                            [
                                {
                                    "account": account,
                                    "received_at": when,
                                    "blob": items[i][1],
                                    "actor": actor[:255],
                                    "remote_addr": remote_addr,
                                }
                                for i in indexes
                            ],
                        )
                    for i in indexes:
                        results[i] = ItemResult(i, 202)
                for (stated, named), n in sorted(mismatched.items()):
                    append_audit(
                        conn,
                        actor=actor,
                        action="voucher.account_mismatch",
                        target=f"account:{stated}",
                        detail={"names": named, "vouchers": n},
                        remote_addr=remote_addr,
                    )
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot store vouchers: {type(exc).__name__}") from exc
        return [r for r in results if r is not None]

    def _check(self, account: str, blob: bytes, now: float) -> tuple[str, str, str | None] | None:
        """Why a voucher is refused (error code, detail, the account its header names if that
        is the reason), or None. The same work for every well-formed voucher: no opening."""
        try:
            check_account(account)
        except VoucherError as exc:
            return "invalid", f"stated account: {exc}", None
        try:
            header = parse_header(blob)
        except VoucherError as exc:
            return "invalid", str(exc), None
        if header.account != account:
            return (
                "account_mismatch",
                f"the voucher is sealed for account {header.account!r}, not for its sender "
                f"{account!r}",
                header.account,
            )
        table = self._table(header.root)
        if table is None:
            return "invalid", "made against an unknown or retired pdata table", None
        current_epoch = int(now // table.params.epoch_seconds)
        if abs(header.epoch - current_epoch) > 1:
            return (
                "invalid",
                f"epoch {header.epoch} is not current (server epoch {current_epoch})",
                None,
            )
        try:
            parse_voucher(blob, table.params)
        except VoucherError as exc:
            return "invalid", str(exc), None
        return None

    def queued(self, account: str | None = None) -> int:
        """Vouchers accepted and not yet processed (for one account, or all)."""
        stmt = select(func.count()).select_from(queue_t)
        if account is not None:
            stmt = stmt.where(queue_t.c.account == account)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def process_queue(self, verify: Verify, *, limit: int = 200) -> ProcessResult:
        """The worker's step: open up to ``limit`` queued vouchers, oldest first, keep the shares
        of those that matched, move their groups forward and delete them from the queue, all in
        one transaction; then hand what opened to ``on_open``. Several workers may run it at
        once (PostgreSQL: each skips rows another has locked; SQLite: one writer at a time)."""
        try:
            with self.store.begin_write() as conn:
                stmt = select(queue_t).order_by(queue_t.c.id).limit(max(1, limit))
                if conn.dialect.name == "postgresql":
                    stmt = stmt.with_for_update(skip_locked=True)
                rows = conn.execute(stmt).all()
                if not rows:
                    return ProcessResult(0, ())
                matched = []
                for r in rows:
                    try:
                        header = parse_header(r.blob)
                        table = self._table(header.root, conn)
                        if table is None or header.account != r.account:
                            continue  # its table was retired meanwhile: it can never open
                        parsed = parse_voucher(r.blob, table.params)
                        inner = open_parsed(parsed, table.scalar, table.params)
                    except VoucherError:
                        continue
                    if inner is not None:
                        matched.append((table, header, inner, r))
                conn.execute(delete(queue_t).where(queue_t.c.id.in_([r.id for r in rows])))
                opened = self._store_shares(conn, matched, verify)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot process vouchers: {type(exc).__name__}") from exc
        self._hand_off(opened)
        return ProcessResult(len(rows), tuple(opened))

    def submit(
        self,
        items: Sequence[tuple[str, bytes]],
        *,
        actor: str,
        verify: Verify,
        remote_addr: str | None = None,
    ) -> SubmitResult:
        """:meth:`accept`, then process everything queued (its own and earlier batches) at
        once: for tests and tools. The API only accepts; the worker processes."""
        results = self.accept(items, actor=actor, remote_addr=remote_addr)
        opened: list[OpenedAccount] = []
        while (done := self.process_queue(verify)).processed:
            opened.extend(done.opened)
        return SubmitResult(sum(r.accepted for r in results), tuple(opened), tuple(results))

    def _store_shares(
        self, conn: Connection, matched: Sequence[tuple[Any, Any, Any, Any]], verify: Verify
    ) -> list[OpenedAccount]:
        when = _now()
        # Lock the groups in one global order, so concurrent workers cannot deadlock.
        group_keys = sorted(
            {(h.account, h.epoch, t.params.threshold, t.params.dhf_dim) for t, h, _, _ in matched}
        )
        group_ids = {}
        for account, epoch, threshold, dhf_dim in group_keys:
            grp = f"{threshold}.{dhf_dim}"
            group_ids[(account, epoch, grp)] = self._group(conn, account, epoch, grp, when)
        touched: dict[int, tuple[Params, str, str | None]] = {}
        for table, header, inner, r in matched:
            p = table.params
            group_id = group_ids[(header.account, header.epoch, f"{p.threshold}.{p.dhf_dim}")]
            conn.execute(
                insert(shares_t).values(
                    group_id=group_id,
                    table_id=table.id,
                    received_at=when,
                    x=format(inner.x, "032x"),
                    share=to_bytes(inner.share, SHARE_BYTES),
                    dhf=b"".join(to_bytes(v, DHF_BYTES) for v in inner.row),
                    part_a=inner.part_a,
                    part_b=inner.part_b,
                    state="pending",
                )
            )
            touched[group_id] = (p, r.actor, r.remote_addr)
        opened = []
        for group_id, (p, actor, remote_addr) in sorted(touched.items()):
            result = self._advance(conn, group_id, p, verify, actor, remote_addr)
            if result is not None:
                opened.append(result)
        return opened

    def _count(
        self, conn: Connection, account: str, hour: int, *, accepted: int = 0, rejected: int = 0
    ) -> int:
        ins = _insert(conn, counts_t).values(
            account=account, hour=hour, accepted=accepted, rejected=rejected
        )
        stmt = ins.on_conflict_do_update(
            index_elements=["account", "hour"],
            set_={
                "accepted": counts_t.c.accepted + ins.excluded.accepted,
                "rejected": counts_t.c.rejected + ins.excluded.rejected,
            },
        ).returning(counts_t.c.accepted)
        return int(conn.execute(stmt).scalar_one())

    def _group(self, conn: Connection, account: str, epoch: int, grp: str, when: datetime) -> int:
        """The group's id; the upsert also locks its row until commit (PostgreSQL), so two
        batches for one account never run detection at once."""
        ins = _insert(conn, groups_t).values(
            account=account,
            epoch=epoch,
            grp=grp,
            state="collecting",
            shares=0,
            real=0,
            synthetic=0,
            verified=0,
            discarded=0,
            note="",
            updated_at=when,
        )
        stmt = ins.on_conflict_do_update(
            index_elements=["account", "epoch", "grp"], set_={"updated_at": ins.excluded.updated_at}
        ).returning(groups_t.c.id)
        return int(conn.execute(stmt).scalar_one())

    def _advance(
        self,
        conn: Connection,
        group_id: int,
        p: Params,
        verify: Verify,
        actor: str,
        remote_addr: str | None,
    ) -> OpenedAccount | None:
        """Move a group forward after new shares. Until the group opens: decode each dependency
        among its shares and keep the key only if the items it reveals, re-checked against the
        bank, cover t distinct pictures (:meth:`_decode`). Once open: classify new shares under
        the kept key and open the verified ones at once."""
        group = conn.execute(select(groups_t).where(groups_t.c.id == group_id)).one()
        shares = conn.execute(
            select(
                shares_t.c.id,
                shares_t.c.x,
                shares_t.c.share,
                shares_t.c.dhf,
                shares_t.c.part_a,
                shares_t.c.state,
            )
            .where(shares_t.c.group_id == group_id, shares_t.c.state != "discarded")
            .order_by(shares_t.c.id)
        ).all()
        aad = f"voucher-group:{group_id}".encode()
        values: dict[str, Any] = {"shares": len({s.x for s in shares})}
        first = False
        images = 0
        if group.sealed_key is not None:
            key = from_bytes(unseal(self.master_key, group.sealed_key, aad), P_SHARE)
        else:
            decoded = self._decode(conn, group, shares, p, verify, values, actor, remote_addr)
            if decoded is None:
                conn.execute(update(groups_t).where(groups_t.c.id == group_id).values(**values))
                return None
            key, images = decoded
            first = True
            values.update(
                sealed_key=seal(self.master_key, to_bytes(key, SHARE_BYTES), aad),
                state="opened",
                opened_at=_now(),
                note="",
            )
        bound = {"account": group.account, "epoch": group.epoch}
        # Classify: a share is real iff its part A opens under K (synthetic ones are random).
        # Part B of a real item that fails the re-check is destroyed, never kept under a key
        # the server holds.
        for s in shares:
            if s.state != "pending":
                continue
            a = open_part_a(key, int(s.x, 16), s.part_a, **bound)
            if a is not None and not verify(a[0].hex()):
                self._destroy(conn, [s.id], "unverified")
                continue
            state = "synthetic" if a is None else "verified"
            conn.execute(update(shares_t).where(shares_t.c.id == s.id).values(state=state))
        states = conn.execute(
            select(shares_t.c.x, shares_t.c.state).where(
                shares_t.c.group_id == group_id, shares_t.c.state != "discarded"
            )
        ).all()
        real = {x for x, st in states if st in ("verified", "unverified")}
        verified = {x for x, st in states if st == "verified"}
        synthetic = {x for x, st in states if st == "synthetic"} - real
        values.update(real=len(real), verified=len(verified), synthetic=len(synthetic))
        items = self._open_items(conn, group, key, verify)
        conn.execute(update(groups_t).where(groups_t.c.id == group_id).values(**values))
        if not items:
            return None
        append_audit(
            conn,
            actor=actor,
            action="voucher.open",
            target=f"account:{group.account}",
            detail={
                "epoch": group.epoch,
                "items": len(items),
                "threshold_crossed": first,
                "real": len(real),
                "verified": len(verified),
                "synthetic": len(synthetic),
                **({"images": images} if first else {}),
            },
            remote_addr=remote_addr,
        )
        return OpenedAccount(
            group.account,
            group.epoch,
            tuple(items),
            first,
            len(real),
            len(synthetic),
            len(verified),
            images,
        )

    def _decode(
        self,
        conn: Connection,
        group: Any,
        shares: Sequence[Any],
        p: Params,
        verify: Verify,
        values: dict[str, Any],
        actor: str,
        remote_addr: str | None,
    ) -> tuple[int, int] | None:
        """(K, distinct pictures) when a dependency among the group's pending shares decodes to
        a key whose items, re-checked against the live bank, cover at least t distinct pictures
        (:func:`bastion.psi.distinct_images`); else None, and K is forgotten.

        A dependency that decodes but falls short (vouchers forged in this account's name that
        carry no listed picture, bit-flipped variants of one listed hash, false positives) locks
        nothing: its vouchers that failed the re-check are discarded (parts destroyed, counted,
        audited ``voucher.discarded``), and those that passed wait for more of their kind."""
        pending = [s for s in shares if s.state == "pending"]
        rows: dict[str, Row] = {}
        for s in pending:
            if s.x not in rows:
                dhf = tuple(
                    from_bytes(s.dhf[i : i + DHF_BYTES], P_DHF)
                    for i in range(0, len(s.dhf), DHF_BYTES)
                )
                rows[s.x] = Row(s.id, int(s.x, 16), from_bytes(s.share, P_SHARE), dhf)
        if len(rows) < p.threshold or len(rows) > MAX_DETECT_ROWS:
            return None
        by_ref = {s.id: s for s in pending}
        bound = {"account": group.account, "epoch": group.epoch}
        discarded = int(group.discarded or 0)
        for dependency in dependencies(list(rows.values()), p.threshold):
            try:
                key = reconstruct(dependency, p.threshold)
            except Undecodable as exc:
                if group.note != str(exc)[:500]:
                    append_audit(
                        conn,
                        actor=actor,
                        action="voucher.undecodable",
                        target=f"account:{group.account}",
                        detail={"epoch": group.epoch, "shares": len(rows), "reason": str(exc)},
                        remote_addr=remote_addr,
                    )
                values["note"] = str(exc)[:500]
                continue
            passed: list[list[int]] = []
            failed: list[str] = []
            for row in dependency:
                a = open_part_a(key, row.x, by_ref[row.ref].part_a, **bound)
                matches = verify(a[0].hex()) if a is not None else []
                if matches:
                    passed.append([int(m["entry"]) for m in matches if "entry" in m])
                else:
                    failed.append(by_ref[row.ref].x)
            images = distinct_images(passed, self._entry_hashes(conn, passed))
            if images >= p.threshold:
                return key, images
            doomed = [s.id for s in pending if s.x in set(failed)]
            if doomed:
                self._destroy(conn, doomed, "discarded")
                discarded += len(doomed)
                values["discarded"] = discarded
                append_audit(
                    conn,
                    actor=actor,
                    action="voucher.discarded",
                    target=f"account:{group.account}",
                    detail={
                        "epoch": group.epoch,
                        "vouchers": len(doomed),
                        "decoded": len(dependency),
                        "verified": len(passed),
                        "images": images,
                        "threshold": p.threshold,
                        "reason": "decoded, but the items do not cover t distinct bank pictures",
                    },
                    remote_addr=remote_addr,
                )
        return None

    def _destroy(self, conn: Connection, share_ids: Sequence[int], state: str) -> None:
        """Mark shares ``state`` and destroy their sealed parts: what failed the bank re-check
        can then never be decrypted, by the key's holder or anyone who rebuilds the key."""
        conn.execute(
            update(shares_t)
            .where(shares_t.c.id.in_(list(share_ids)))
            .values(state=state, part_a=b"", part_b=b"")
        )

    def _entry_hashes(self, conn: Connection, items: Sequence[Sequence[int]]) -> dict[int, str]:
        """The PDQ hashes of the bank entries some verified item matched (distinct pictures)."""
        ids = sorted({e for item in items for e in item})
        if not ids:
            return {}
        rows = conn.execute(
            select(entries_t.c.id, entries_t.c.value).where(
                entries_t.c.id.in_(ids), entries_t.c.signal_type == "pdq"
            )
        ).all()
        return {int(r.id): r.value for r in rows}

    def _open_items(
        self, conn: Connection, group: Any, key: int, verify: Verify
    ) -> list[OpenedItem]:
        opened_ids = set(
            conn.execute(select(items_t.c.share_id).where(items_t.c.group_id == group.id)).scalars()
        )
        candidates = conn.execute(
            select(shares_t.c.id, shares_t.c.x, shares_t.c.part_a, shares_t.c.part_b)
            .where(shares_t.c.group_id == group.id, shares_t.c.state == "verified")
            .order_by(shares_t.c.id)
        ).all()
        out = []
        when = _now()
        bound = {"account": group.account, "epoch": group.epoch}
        for s in candidates:
            if s.id in opened_ids:
                continue
            x = int(s.x, 16)
            a = open_part_a(key, x, s.part_a, **bound)
            b = open_part_b(key, x, s.part_b, **bound)
            matches = verify(a[0].hex()) if a is not None else []
            if a is None or b is None or not matches:
                self._destroy(conn, [s.id], "unverified")
                continue
            pdq, quality = a[0].hex(), a[1]
            item_id, _claimed_type, raw = b
            # Whatever the client claimed, only a JPEG made here is kept (docs/e2ee.md).
            media = reencode_derivative(raw)
            media_type = MEDIA_TYPE if media else ""
            digest = hashlib.sha256(media).hexdigest()
            item_pk = conn.execute(
                insert(items_t)
                .values(
                    share_id=s.id,
                    group_id=group.id,
                    account=group.account,
                    epoch=group.epoch,
                    item_id=item_id[:512],
                    pdq=pdq,
                    quality=quality,
                    matches=matches,
                    media_type=media_type,
                    media_size=len(media),
                    media_sha256=digest,
                    sealed_media=seal(self.master_key, media, f"voucher-item:{s.id}".encode()),
                    opened_at=when,
                )
                .returning(items_t.c.id)
            ).scalar_one()
            out.append(
                OpenedItem(
                    item_pk,
                    group.account,
                    group.epoch,
                    item_id,
                    pdq,
                    quality,
                    matches,
                    media_type,
                    len(media),
                    digest,
                    when,
                    media,
                )
            )
        return out

    def _hand_off(self, opened: Sequence[OpenedAccount]) -> None:
        hook = self.on_open
        if hook is None:
            return
        for account in opened:
            try:
                hook(account)
            except Exception:
                log.exception("on_open hook failed for %s; items stay pending", account.account)
                continue
            self._mark_handed_off([i.id for i in account.items])

    def _mark_handed_off(self, item_ids: Sequence[int]) -> None:
        if not item_ids:
            return
        with self.store.begin_write() as conn:
            conn.execute(
                update(items_t).where(items_t.c.id.in_(list(item_ids))).values(handed_off_at=_now())
            )

    def pending_openings(self, limit: int = 100) -> list[OpenedAccount]:
        """Opened items the hook has not taken yet, grouped by account (with their media)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(items_t)
                .where(items_t.c.handed_off_at.is_(None))
                .order_by(items_t.c.id)
                .limit(limit)
            ).all()
        grouped: dict[tuple[str, int], list[OpenedItem]] = {}
        for r in rows:
            grouped.setdefault((r.account, r.epoch), []).append(self._item(r, with_media=True))
        return [
            OpenedAccount(acct, epoch, tuple(items), False, 0, 0, len(items))
            for (acct, epoch), items in grouped.items()
        ]

    def retry_handoffs(self, limit: int = 100) -> int:
        """Hand pending openings to ``on_open`` again; returns how many items it took."""
        pending = self.pending_openings(limit)
        self._hand_off(pending)
        return sum(len(a.items) for a in pending)

    def _item(self, r: Any, *, with_media: bool = False) -> OpenedItem:
        media = b""
        if with_media:
            media = unseal(self.master_key, r.sealed_media, f"voucher-item:{r.share_id}".encode())
        return OpenedItem(
            r.id,
            r.account,
            r.epoch,
            r.item_id,
            r.pdq,
            r.quality,
            list(r.matches or ()),
            r.media_type,
            r.media_size,
            r.media_sha256,
            r.opened_at,
            media,
        )

    def openings(self, *, account: str | None = None, limit: int = 100) -> list[OpenedItem]:
        """Opened items, newest first, without their media."""
        stmt = select(items_t).order_by(items_t.c.id.desc()).limit(max(1, min(limit, 1000)))
        if account is not None:
            stmt = stmt.where(items_t.c.account == account)
        with self.engine.connect() as conn:
            return [self._item(r) for r in conn.execute(stmt)]

    def opened_media(self, item_pk: int) -> tuple[str, bytes]:
        """(media type, derivative bytes) of an opened item, for the review system."""
        with self.engine.connect() as conn:
            r = conn.execute(select(items_t).where(items_t.c.id == item_pk)).first()
        if r is None:
            raise InvalidInput(f"no opened voucher item {item_pk}")
        return r.media_type, self._item(r, with_media=True).media

    def counts(self, account: str, *, hours: int = 48) -> list[HourCount]:
        since = int(self.clock() // 3600) - hours
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(counts_t)
                .where(counts_t.c.account == account, counts_t.c.hour > since)
                .order_by(counts_t.c.hour)
            ).all()
        return [
            HourCount(datetime.fromtimestamp(r.hour * 3600, UTC), r.accepted, r.rejected)
            for r in rows
        ]

    def groups(self, account: str) -> list[GroupInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(groups_t).where(groups_t.c.account == account).order_by(groups_t.c.epoch)
            ).all()
        return [
            GroupInfo(
                r.account,
                r.epoch,
                r.state,
                r.shares,
                r.real,
                r.synthetic,
                r.verified,
                r.opened_at,
                r.note,
                r.discarded,
            )
            for r in rows
        ]

    # -- franking --------------------------------------------------------------------------

    def _platform_key(self) -> bytes:
        if self._franking_key is not None:
            return self._franking_key
        aad = b"psi-secret:franking"
        with self.store.begin_write() as conn:
            conn.execute(
                _insert(conn, secrets_t)
                .values(
                    name="franking",
                    sealed=seal(self.master_key, _random(FRANKING_KEY_BYTES), aad),
                    created_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            sealed = conn.execute(
                select(secrets_t.c.sealed).where(secrets_t.c.name == "franking")
            ).scalar_one()
        self._franking_key = unseal(self.master_key, sealed, aad)
        return self._franking_key

    def tag(self, commitment: bytes, sender: str, recipient: str) -> tuple[bytes, int]:
        """The platform's tag binding a commitment to sender, recipient and the time now."""
        timestamp = int(self.clock())
        return platform_tag(
            self._platform_key(), commitment, sender, recipient, timestamp
        ), timestamp

    def report(
        self,
        report: Report,
        *,
        reporter: str,
        actor: str,
        context: dict[str, Any] | None = None,
        remote_addr: str | None = None,
    ) -> FrankingReport:
        """Verify and store a user's report; raises :class:`ReportRejected` (audited too)."""
        if len(report.message) > MAX_MESSAGE:
            raise ReportRejected(f"the reported message is over {MAX_MESSAGE} bytes")
        try:
            if reporter != report.recipient:
                raise ReportRejected("only the recipient of a message can report it")
            verify_report(self._platform_key(), report)
        except ReportRejected as exc:
            with self.store.begin_write() as conn:
                append_audit(
                    conn,
                    actor=actor,
                    action="franking.reject",
                    target=f"account:{reporter}",
                    detail={"reason": str(exc), "sender": report.sender},
                    remote_addr=remote_addr,
                )
            raise
        now = _now()
        sent_at = datetime.fromtimestamp(report.timestamp, UTC)
        digest = hashlib.sha256(report.message).hexdigest()
        ctx = dict(context or {})
        with self.store.begin_write() as conn:
            pk = conn.execute(
                insert(reports_t)
                .values(
                    at=now,
                    reporter=reporter,
                    sender=report.sender,
                    recipient=report.recipient,
                    sent_at=sent_at,
                    commitment=report.commitment.hex(),
                    message_size=len(report.message),
                    message_sha256=digest,
                    sealed_message=seal(
                        self.master_key,
                        report.message,
                        f"franking:{report.commitment.hex()}".encode(),
                    ),
                    context=ctx,
                )
                .returning(reports_t.c.id)
            ).scalar_one()
            append_audit(
                conn,
                actor=actor,
                action="franking.report",
                target=f"franking-report:{pk}",
                detail={
                    "sender": report.sender,
                    "recipient": report.recipient,
                    "bytes": len(report.message),
                },
                remote_addr=remote_addr,
            )
        out = FrankingReport(
            pk,
            now,
            reporter,
            report.sender,
            report.recipient,
            sent_at,
            report.commitment.hex(),
            len(report.message),
            digest,
            ctx,
            report.message,
        )
        hook = self.on_report
        if hook is not None:
            try:
                hook(out)
            except Exception:
                log.exception("on_report hook failed for report %s; it stays pending", pk)
            else:
                with self.store.begin_write() as conn:
                    conn.execute(
                        update(reports_t).where(reports_t.c.id == pk).values(handed_off_at=_now())
                    )
        return out


def _params_doc(params: Params) -> dict[str, int]:
    return {
        "mode": params.mode,
        "chunks": params.chunks,
        "probes": params.probes,
        "max_flips": params.max_flips,
        "weak_bits": params.weak_bits,
        "key_bits": params.key_bits,
        "min_quality": params.min_quality,
        "threshold": params.threshold,
        "dhf_dim": params.dhf_dim,
        "synthetic_ppm": params.synthetic_ppm,
        "epoch_seconds": params.epoch_seconds,
        "ad_bytes": params.ad_bytes,
        "bucket_size": params.bucket_size,
    }


def _random(n: int) -> bytes:
    return os.urandom(n)

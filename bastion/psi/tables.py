"""Published pdata tables and their background builds (one part of
:class:`bastion.psi.store.VoucherStore`), on the state every part shares (:class:`VoucherState`:
the store, the master key, the settings, the clock, the hooks and the table cache)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.banks.model import utcnow
from bastion.banks.rows import EntryRow
from bastion.client.pdata import Params
from bastion.crypto import MasterKey, seal, unseal
from bastion.psi import ServerSecret, build_pdata
from bastion.psi.records import (
    BUILDING,
    DONE,
    FAILED,
    MAX_BUILD_ATTEMPTS,
    PENDING,
    BuildJob,
    FrankingReport,
    LeaseLost,
    NoTable,
    OpenedAccount,
    TableInfo,
    build_job,
    params_from_settings,
    params_to_doc,
)
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
from bastion.store.audit import append_audit

if TYPE_CHECKING:
    from bastion.db import Store

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


@dataclass(frozen=True)
class LoadedTable:
    id: int
    root: bytes
    params: Params
    scalar: bytes
    banks: tuple[str, ...] | None


def upsert_into(conn: Connection, table: Any) -> Any:
    """An INSERT with ``on_conflict_do_*`` in the connection's dialect."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


class VoucherState:
    """What every part of the voucher store shares; wraps :class:`Store`. Thread-safe."""

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
        self._tables: dict[bytes, LoadedTable | None] = {}
        self._lock = threading.Lock()
        self._franking_key: bytes | None = None
        self._blob: tuple[int, bytes] | None = None

    @property
    def params(self) -> Params:
        return params_from_settings(self.settings)

    def _table(self, root: bytes, conn: Connection | None = None) -> LoadedTable | None:
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
            table = LoadedTable(row.id, root, params, secret.scalar, banks)
        with self._lock:
            if len(self._tables) > 64:
                self._tables.clear()
            self._tables[root] = table
        return table

    def banks_for(self, root: bytes) -> tuple[str, ...] | None:
        """The banks a table was built from (None: all), for the verify callback."""
        table = self._table(root)
        return table.banks if table else None


class PdataTables(VoucherState):
    """Building, publishing and serving pdata tables; build jobs a worker claims under a lease."""

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
        now = utcnow()
        stats_doc = {
            "entries": stats.entries,
            "keys": stats.keys,
            "dropped_near": stats.dropped_near,
            "buckets": stats.n_buckets,
            "load": round(stats.load, 4),
            "seconds": round(stats.seconds, 3),
            "bytes": stats.blob_bytes,
        }
        params_doc = params_to_doc(params)
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
                    params=params_to_doc(params),
                    requested_by=actor[:255],
                    requested_at=utcnow(),
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
        return None if row is None else build_job(row)

    def list_builds(self, limit: int = 20) -> list[BuildJob]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(builds_t).order_by(builds_t.c.id.desc()).limit(limit))
            return [build_job(r) for r in rows]

    def _lease_seconds(self) -> float:
        return max(10.0, float(self.settings.voucher_build_lease_seconds))

    def claim_build(self, owner: str, *, job_id: int | None = None) -> BuildJob | None:
        """Take the oldest pending build (or one whose worker's lease ran out) for ``owner``.

        A compare-and-set update: of two workers racing for a job, the second one's WHERE no
        longer matches once the first has committed, on SQLite and PostgreSQL alike, so a job
        is never built twice at once. A job abandoned :data:`MAX_BUILD_ATTEMPTS` times (its
        worker died each time: out of memory, say) is failed rather than tried again."""
        now = utcnow()
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
                    return build_job(row)
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
                        state=FAILED, finished_at=utcnow(), lease_until=None, error=str(exc)[:2000]
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

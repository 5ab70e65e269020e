"""Voucher intake (one part of :class:`bastion.psi.store.VoucherStore`): ``POST /v1/vouchers``
checks and queues (:meth:`VoucherIntake.accept`), the hourly rate limit, and the worker's step
that opens what is queued (:meth:`VoucherIntake.process_queue`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from bastion.banks.model import utcnow
from bastion.client.voucher import VoucherError, check_account, parse_header, parse_voucher
from bastion.psi import open_parsed
from bastion.psi.opening import GroupOpening
from bastion.psi.records import (
    HourCount,
    ItemResult,
    OpenedAccount,
    ProcessResult,
    SubmitResult,
    Verify,
)
from bastion.psi.tables import counts_t, queue_t, upsert_into
from bastion.store.audit import append_audit
from bastion.store.errors import StoreUnavailable


class VoucherIntake(GroupOpening):
    """Accepting vouchers into the queue and processing the queue."""

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
        when = utcnow()
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

    def _count(
        self, conn: Connection, account: str, hour: int, *, accepted: int = 0, rejected: int = 0
    ) -> int:
        ins = upsert_into(conn, counts_t).values(
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

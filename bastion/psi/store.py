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
import os
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from bastion.banks.model import utcnow
from bastion.client.franking import FRANKING_KEY_BYTES
from bastion.crypto import seal, unseal
from bastion.psi import Report, ReportRejected, platform_tag, verify_report
from bastion.psi.intake import VoucherIntake
from bastion.psi.records import MAX_MESSAGE, FrankingReport
from bastion.psi.tables import PdataTables, VoucherState, log, reports_t, secrets_t, upsert_into
from bastion.store.audit import append_audit


class FrankingReports(VoucherState):
    """The platform's franking key, its tags, and verified user reports."""

    def _platform_key(self) -> bytes:
        if self._franking_key is not None:
            return self._franking_key
        aad = b"psi-secret:franking"
        with self.store.begin_write() as conn:
            conn.execute(
                upsert_into(conn, secrets_t)
                .values(
                    name="franking",
                    sealed=seal(self.master_key, os.urandom(FRANKING_KEY_BYTES), aad),
                    created_at=utcnow(),
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
        now = utcnow()
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
                        update(reports_t).where(reports_t.c.id == pk).values(handed_off_at=utcnow())
                    )
        return out

    def reports_about(self, sender: str, *, limit: int = 100) -> list[FrankingReport]:
        """Verified reports of messages ``sender`` sent, newest first, without the messages or
        the platform's context: what the console shows beside an account case (that a message
        was reported, when, by whom, its size and digest), never what it says."""
        c = reports_t.c
        stmt = (
            select(
                c.id,
                c.at,
                c.reporter,
                c.sender,
                c.recipient,
                c.sent_at,
                c.commitment,
                c.message_size,
                c.message_sha256,
            )
            .where(c.sender == sender)
            .order_by(c.id.desc())
            .limit(max(1, min(int(limit), 1000)))
        )
        with self.store.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            FrankingReport(
                r.id,
                r.at,
                r.reporter,
                r.sender,
                r.recipient,
                r.sent_at,
                r.commitment,
                int(r.message_size),
                r.message_sha256,
                {},
            )
            for r in rows
        ]


class VoucherStore(PdataTables, VoucherIntake, FrankingReports):
    """Durable state of the voucher protocol; wraps :class:`Store`. Thread-safe. Its parts:
    :class:`~bastion.psi.tables.PdataTables` (tables and builds),
    :class:`~bastion.psi.intake.VoucherIntake` (queue and rate limit) on
    :class:`~bastion.psi.opening.GroupOpening` (threshold openings), and
    :class:`FrankingReports`."""


__all__ = ["FrankingReports", "VoucherStore"]

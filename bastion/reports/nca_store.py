"""UK NCA reports (OSA s.66) on the reports table: drafted from a confirmed case, exported for the
portal (JSON or PDF), and finished when the reference the portal gave is entered."""

from __future__ import annotations

import builtins
import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from bastion.crypto import seal, unseal
from bastion.reports.errors import ReportConflict, ReportExists, ReportNotFound
from bastion.reports.model import Report, ReportInputError, State
from bastion.reports.nca import (
    AUTHORITY_NCA,
    NcaAccount,
    NcaFile,
    NcaReportContent,
    build_nca_json,
    content_from_json,
    deadline_for,
    deadlines_from_settings,
    keep_until,
    render_nca_pdf,
    with_reference,
)
from bastion.reports.sql import ReportBase, existing_id, load_report, nca_aad, reports_t
from bastion.review.model import CONFIRMED, Case
from bastion.store import InvalidInput, append_audit


class NcaReports(ReportBase):
    """The UK NCA half of :class:`bastion.reports.store.ReportStore`."""

    # -- UK NCA reports (OSA s.66): exported for the portal, reference entered back -------------

    def draft_nca_for_case(
        self,
        case: Case,
        *,
        priority: str,
        detection_method: str,
        summary: str,
        actor: str,
        platform: str | None = None,
        account: NcaAccount | None = None,
        related_accounts: tuple[NcaAccount, ...] = (),
        upload_ip: str | None = None,
        upload_port: int | None = None,
        urls: dict[int, str] | None = None,
    ) -> Report:
        """Draft the NCA report of a confirmed case: the content (hashes and identifiers, never
        media) is stored sealed as its JSON export, due at confirmation + the priority's
        deadline. Raises :class:`ReportExists` if the case already has an NCA report."""
        kw = nca_fields(
            priority,
            detection_method,
            summary,
            platform,
            account,
            related_accounts,
            upload_ip,
            upload_port,
            urls,
        )
        try:
            with self._tx() as conn:
                existing = existing_id(conn, case.id, AUTHORITY_NCA)
                if existing is not None:
                    raise ReportExists(existing)
                report_id = self._draft_nca_in(conn, case, actor=actor, **kw)
        except ReportInputError as exc:
            raise InvalidInput(f"NCA report: {exc}") from None
        except IntegrityError:
            with self.store.engine.connect() as conn:
                existing = existing_id(conn, case.id, AUTHORITY_NCA)
            if existing is None:
                raise
            raise ReportExists(existing) from None
        return self.get(report_id)

    def _draft_nca_in(
        self,
        conn: Connection,
        case: Case,
        *,
        actor: str,
        priority: str,
        detection_method: str,
        summary: str,
        platform: str | None,
        account: NcaAccount | None,
        related_accounts: tuple[NcaAccount, ...],
        upload_ip: str | None,
        upload_port: int | None,
        urls: dict[int, str] | None,
    ) -> int:
        if case.state != CONFIRMED:
            raise ReportConflict("only a confirmed case is reported")
        now = self.clock()
        urls = urls or {}
        files: list[NcaFile] = []
        for item in case.items:
            if not item.has_media:
                continue
            data = self._media(conn, case.id, item.id)
            files.append(
                NcaFile(
                    item_id=item.id,
                    sha256=hashlib.sha256(data).hexdigest(),
                    md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
                    file_name=item.filename,
                    media_type=item.media_type,
                    size=len(data),
                    url=urls.get(item.id),
                    upload_time=item.added_at,
                    upload_ip=upload_ip,
                    upload_port=upload_port,
                    classification=case.classification,
                )
            )
        confirmed_at = case.decided_at or now
        deadline = deadline_for(priority, confirmed_at, deadlines_from_settings(self.settings))
        content = NcaReportContent(
            case_id=case.id,
            priority=priority,
            detection_method=detection_method,
            platform=platform or getattr(self.settings, "nca_platform", None) or "Bastion",
            summary=summary,
            account=account or NcaAccount(account_id=case.uploader_id),
            related_accounts=related_accounts,
            files=tuple(files),
            confirmed_at=confirmed_at,
            deadline_at=deadline,
        )
        doc = json.dumps(build_nca_json(content)).encode()
        report_id = conn.execute(
            insert(reports_t)
            .values(
                case_id=case.id,
                authority=AUTHORITY_NCA,
                environment="portal",
                state=State.DRAFTED.value,
                incident_type="CSEA content",
                report_sealed=seal(self.master_key, doc, nca_aad(case.id)),
                attempts=0,
                next_attempt_at=deadline,
                created_by=actor,
                confirmed_at=confirmed_at,
                created_at=now,
                updated_at=now,
                priority=priority,
                deadline_at=deadline,
            )
            .returning(reports_t.c.id)
        ).scalar_one()
        append_audit(
            conn,
            actor=actor,
            action="report.draft",
            target=f"report:{report_id}",
            detail={
                "case_id": case.id,
                "authority": AUTHORITY_NCA,
                "priority": priority,
                "deadline_at": deadline.isoformat(),
                "files": len(files),
            },
        )
        return int(report_id)

    def nca_export(self, report_id: int, fmt: str = "json", *, actor: str) -> bytes:
        """The NCA report as JSON or a printable PDF for the portal (with the NCA reference
        once entered). Audited as ``report.export`` in the same transaction."""
        if fmt not in ("json", "pdf"):
            raise InvalidInput("format must be json or pdf")
        with self._tx() as conn:
            row = _nca_row(conn, report_id)
            doc = json.loads(unseal(self.master_key, row.report_sealed, nca_aad(row.case_id)))
            content = with_reference(content_from_json(doc), row.external_id, row.submitted_at)
            if fmt == "json":
                out = json.dumps(build_nca_json(content), indent=2, ensure_ascii=False).encode()
            else:
                out = render_nca_pdf(content)
            append_audit(
                conn,
                actor=actor,
                action="report.export",
                target=f"report:{report_id}",
                detail={"authority": AUTHORITY_NCA, "format": fmt, "case_id": int(row.case_id)},
            )
        return out

    def record_nca_reference(
        self,
        report_id: int,
        reference: str,
        *,
        actor: str,
        submitted_at: datetime | None = None,
    ) -> Report:
        """Enter the reference the NCA portal gave: the report is finished, the reference kept
        until five years after ``submitted_at`` (default now), and, with a vault, the case's
        evidence retention restarts from the report (jurisdiction UK), all in one transaction.
        Entering the same reference again is a no-op; a different one is a conflict."""
        if (
            not isinstance(reference, str)
            or not reference.strip()
            or len(reference.strip()) > 64
            or not reference.strip().isprintable()
        ):
            raise InvalidInput("the NCA reference must be 1-64 printable characters")
        reference = reference.strip()
        now = self.clock()
        at = submitted_at or now
        if at.tzinfo is None:
            raise InvalidInput("submitted_at needs a timezone")
        if at > now:
            raise InvalidInput("submitted_at cannot be in the future")
        with self._tx() as conn:
            row = _nca_row(conn, report_id, lock=True)
            if row.state == State.FINISHED:
                if row.external_id == reference:
                    return load_report(conn, report_id)
                raise ReportConflict("this NCA report already has another reference")
            if row.state != State.DRAFTED:
                raise ReportConflict(f"an NCA report in state {row.state} takes no reference")
            kept = keep_until(at)
            done = conn.execute(
                update(reports_t)
                .where(reports_t.c.id == report_id, reports_t.c.state == State.DRAFTED)
                .values(
                    state=State.FINISHED.value,
                    external_id=reference,
                    submitted_at=at,
                    finished_at=at,
                    keep_until=kept,
                    updated_at=now,
                )
            ).rowcount
            if not done:
                raise ReportConflict("the report changed meanwhile; try again")
            if self.vault is not None:
                self.vault.mark_reported_in(
                    conn,
                    int(row.case_id),
                    reported_at=at,
                    jurisdiction="UK",
                    reference=reference,
                    actor=actor,
                )
            append_audit(
                conn,
                actor=actor,
                action="report.reference",
                target=f"report:{report_id}",
                detail={
                    "authority": AUTHORITY_NCA,
                    "reference": reference,
                    "submitted_at": at.isoformat(),
                    "keep_until": kept.isoformat(),
                    "late": row.deadline_at is not None and at > row.deadline_at,
                },
            )
            return load_report(conn, report_id)

    def overdue_nca(self, now: datetime | None = None) -> builtins.list[Report]:
        """NCA reports past their deadline with no reference entered, most overdue first."""
        now = now or self.clock()
        with self._tx() as conn:
            ids = conn.execute(
                select(reports_t.c.id)
                .where(
                    reports_t.c.authority == AUTHORITY_NCA,
                    reports_t.c.state == State.DRAFTED,
                    reports_t.c.external_id.is_(None),
                    reports_t.c.deadline_at < now,
                )
                .order_by(reports_t.c.deadline_at, reports_t.c.id)
            ).scalars()
            return [load_report(conn, int(i)) for i in builtins.list(ids)]


def _nca_row(conn: Connection, report_id: int, *, lock: bool = False) -> Any:
    q = select(reports_t).where(reports_t.c.id == report_id)
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise ReportNotFound(f"no report {report_id}")
    if row.authority != AUTHORITY_NCA:
        raise ReportConflict(f"report {report_id} is not an NCA report")
    return row


def nca_fields(
    priority: str,
    detection_method: str,
    summary: str,
    platform: str | None,
    account: NcaAccount | None,
    related_accounts: tuple[NcaAccount, ...],
    upload_ip: str | None,
    upload_port: int | None,
    urls: dict[int, str] | None,
) -> dict[str, Any]:
    return {
        "priority": priority,
        "detection_method": detection_method,
        "summary": summary,
        "platform": platform,
        "account": account,
        "related_accounts": tuple(related_accounts),
        "upload_ip": upload_ip,
        "upload_port": upload_port,
        "urls": urls,
    }

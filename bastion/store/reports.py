"""Mandatory reports (NCMEC CyberTipline) as durable state, and the reporter that sends them.

Exactly once: a report row per (case, authority) is guaranteed by a unique constraint, and the
:class:`Reporter` records each call's result (NCMEC's report id, each file id, each step done)
in its own transaction before making the next call, so a reporter that dies at any point
resumes after restart from the first step not recorded, with the same NCMEC report. A reporter
holds a report with a lease (a conditional UPDATE) so two never work on one report at once.
Consecutive failures back off exponentially; after ``max_attempts`` (or at once on a permanent
rejection) an unfinished report is retracted at NCMEC. Sensitive payloads (the report XML,
file details, credentials) are sealed with :mod:`bastion.crypto`.

Known limit: if NCMEC opens a report but its answer is lost (timeout after sending), the id is
unknown and the retry opens another; the orphan is never finished, so NCMEC never processes it.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import random
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bastion.banks.model import utcnow
from bastion.crypto import MasterKey, UnsealError, seal, unseal
from bastion.reports.model import (
    ACTIVE_STATES,
    AUTHORITY_NCMEC,
    BASE_URLS,
    ENVIRONMENTS,
    FileProgress,
    FileState,
    IpCaptureEvent,
    ReportContent,
    ReportedUser,
    ReporterInfo,
    ReportFile,
    ReportInputError,
    State,
    Step,
    StepKind,
    age_until_reported,
    next_step,
)
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
from bastion.reports.ncmec import NcmecError, Uploaded
from bastion.reports.ncmec_xml import XmlValidationError, build_file_details, build_report, validate
from bastion.reports.rows import ReportCredentialRow, ReportFileRow, ReportRow
from bastion.review.model import CONFIRMED, EV_REVEAL, EV_VIEW, Case
from bastion.review.rows import CaseMediaRow
from bastion.review.store import media_aad
from bastion.store.store import InvalidInput, Store, StoreError, StoreUnavailable, append_audit

reports_t = ReportRow.__table__
files_t = ReportFileRow.__table__
creds_t = ReportCredentialRow.__table__
media_t = CaseMediaRow.__table__
SYSTEM = "system"
_MAX_ERROR = 1000


class ReportError(StoreError):
    """Base for report errors; messages are content-free."""


class ReportNotFound(ReportError, LookupError):
    pass


class ReportExists(ReportError):
    """The case already has a report to this authority (there is never a second one)."""

    def __init__(self, report_id: int) -> None:
        super().__init__(f"this case already has report {report_id}")
        self.report_id = report_id


class ReportConflict(ReportError):
    """The report's state does not allow the request (e.g. retracting a finished report)."""


class ReportDataMissing(ReportError):
    """A file's stored media is gone or does not open; the report cannot be completed."""


@dataclass(frozen=True)
class ReportFileInfo:
    id: int
    item_id: int
    position: int
    state: str
    external_id: str | None
    uploaded_at: datetime | None
    described_at: datetime | None


@dataclass(frozen=True)
class Report:
    """A report as the console shows it: no content, no personal data."""

    id: int
    case_id: int
    authority: str
    environment: str
    state: str
    incident_type: str
    external_id: str | None
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_response_code: int | None
    retract_reason: str | None
    created_by: str
    confirmed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    retracted_at: datetime | None
    files: tuple[ReportFileInfo, ...]
    #: UK NCA reports only: priority (P1-P3), due time, and how long the reference is kept.
    priority: str | None = None
    deadline_at: datetime | None = None
    keep_until: datetime | None = None

    def age(self, now: datetime) -> timedelta | None:
        """Time from confirmation until reported (or until now while unreported)."""
        return age_until_reported(self.confirmed_at, self.finished_at, now)


@dataclass(frozen=True)
class Credentials:
    url: str
    username: str
    password: str
    environment: str
    source: str  # "env" or "console"

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, username={self.username!r}, source={self.source})"


class ReportStore:
    """Reports on a :class:`Store`. ``settings`` supplies env-var credentials and defaults."""

    def __init__(
        self,
        store: Store,
        master_key: MasterKey,
        *,
        settings: Any = None,
        clock: Callable[[], datetime] = utcnow,
        vault: Any = None,
    ) -> None:
        """``vault`` (a :class:`bastion.vault.store.Vault`), when given, is told of every
        finished report in the same transaction, so evidence retention runs from the report."""
        self.store = store
        self.master_key = master_key
        self.settings = settings
        self.clock = clock
        self.vault = vault

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.store.engine.begin() as conn:
                yield conn
        except StoreError:
            raise
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise StoreUnavailable(f"report store: {first}") from exc

    # -- drafting ------------------------------------------------------------------------------

    def draft_for_case(
        self,
        case: Case,
        *,
        incident_type: str,
        reporter_info: ReporterInfo,
        actor: str,
        reported: ReportedUser | None = None,
        screen_name: str | None = None,
        ip_events: tuple[IpCaptureEvent, ...] = (),
        escalation_reason: str | None = None,
        web_urls: tuple[str, ...] = (),
        service_info: str | None = None,
        additional_info: str | None = None,
        publicly_available: bool = False,
        annotations: dict[int, tuple[str, ...]] | None = None,
        environment: str | None = None,
    ) -> Report:
        """Draft the CyberTipline report of a confirmed case: the report XML is built (pure),
        validated and stored sealed, with one row per file (items with stored media). The
        reporter sends it. Raises :class:`ReportExists` if the case already has one."""
        if reported is None:
            reported = ReportedUser(
                esp_identifier=case.uploader_id, screen_name=screen_name, ip_events=ip_events
            )
        kw = {
            "incident_type": incident_type,
            "reporter_info": reporter_info,
            "reported": reported,
            "escalation_reason": escalation_reason,
            "web_urls": web_urls,
            "service_info": service_info,
            "additional_info": additional_info,
            "publicly_available": publicly_available,
            "annotations": annotations,
            "environment": environment,
        }
        try:
            with self._tx() as conn:
                existing = _existing(conn, case.id)
                if existing is not None:
                    raise ReportExists(existing)
                report_id = self._draft_ncmec_in(conn, case, actor=actor, **kw)
        except (ReportInputError, XmlValidationError) as exc:
            raise InvalidInput(f"report: {exc}") from None
        except IntegrityError:
            with self.store.engine.connect() as conn:
                existing = _existing(conn, case.id)
            if existing is None:
                raise
            raise ReportExists(existing) from None
        return self.get(int(report_id))

    def _draft_ncmec_in(
        self,
        conn: Connection,
        case: Case,
        *,
        incident_type: str,
        reporter_info: ReporterInfo,
        actor: str,
        reported: ReportedUser,
        escalation_reason: str | None,
        web_urls: tuple[str, ...],
        service_info: str | None,
        additional_info: str | None,
        publicly_available: bool,
        annotations: dict[int, tuple[str, ...]] | None,
        environment: str | None,
    ) -> int:
        """Build, validate and insert the CyberTipline draft inside ``conn``; its id."""
        if case.state != CONFIRMED:
            raise ReportConflict("only a confirmed case is reported")
        env = environment or getattr(self.settings, "ncmec_environment", "test")
        if env not in ENVIRONMENTS:
            raise InvalidInput(f"environment must be one of {', '.join(ENVIRONMENTS)}")
        annotations = annotations or {}
        seen = {e.item_id for e in case.events if e.kind in (EV_REVEAL, EV_VIEW)}
        now = self.clock()
        files: list[ReportFile] = []
        for item in case.items:
            if not item.has_media:
                continue
            data = self._media(conn, case.id, item.id)
            files.append(
                ReportFile(
                    item_id=item.id,
                    original_file_name=item.filename or f"item-{item.id}",
                    md5=hashlib.md5(data).hexdigest(),
                    sha1=hashlib.sha1(data).hexdigest(),
                    sha256=hashlib.sha256(data).hexdigest(),
                    classification=case.classification,
                    viewed_by_esp=item.id in seen,
                    publicly_available=publicly_available,
                    annotations=annotations.get(item.id, ()),
                )
            )
        incident_at = min((i.added_at for i in case.items), default=case.opened_at)
        content = ReportContent(
            incident_type=incident_type,
            incident_at=incident_at,
            reporter=reporter_info,
            reported=reported,
            escalation_reason=escalation_reason,
            web_urls=web_urls,
            service_info=service_info,
            additional_info=additional_info,
            files=tuple(files),
        )
        xml = build_report(content)
        validate(xml, "report")
        report_id = conn.execute(
            insert(reports_t)
            .values(
                case_id=case.id,
                authority=AUTHORITY_NCMEC,
                environment=env,
                state=State.DRAFTED.value,
                incident_type=incident_type,
                report_sealed=seal(self.master_key, xml, _report_aad(case.id)),
                attempts=0,
                next_attempt_at=now,
                created_by=actor,
                confirmed_at=case.decided_at,
                created_at=now,
                updated_at=now,
            )
            .returning(reports_t.c.id)
        ).scalar_one()
        for pos, f in enumerate(files):
            details = json.dumps(_file_json(f)).encode()
            conn.execute(
                insert(files_t).values(
                    report_id=report_id,
                    item_id=f.item_id,
                    position=pos,
                    details_sealed=seal(self.master_key, details, _file_aad(case.id, f.item_id)),
                    state=FileState.PENDING.value,
                )
            )
        append_audit(
            conn,
            actor=actor,
            action="report.draft",
            target=f"report:{report_id}",
            detail={
                "case_id": case.id,
                "authority": AUTHORITY_NCMEC,
                "environment": env,
                "files": len(files),
            },
        )
        return int(report_id)

    def _media(self, conn: Connection, case_id: int, item_id: int) -> bytes:
        sealed = conn.execute(
            select(media_t.c.sealed).where(media_t.c.item_id == item_id)
        ).scalar_one_or_none()
        if sealed is None:
            raise ReportDataMissing(f"case item {item_id} has no stored media")
        try:
            return unseal(self.master_key, sealed, media_aad(case_id, item_id))
        except UnsealError:
            raise ReportDataMissing(f"case item {item_id}'s media does not open") from None

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
        kw = _nca_kw(
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
                existing = _existing(conn, case.id, AUTHORITY_NCA)
                if existing is not None:
                    raise ReportExists(existing)
                report_id = self._draft_nca_in(conn, case, actor=actor, **kw)
        except ReportInputError as exc:
            raise InvalidInput(f"NCA report: {exc}") from None
        except IntegrityError:
            with self.store.engine.connect() as conn:
                existing = _existing(conn, case.id, AUTHORITY_NCA)
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
                report_sealed=seal(self.master_key, doc, _nca_aad(case.id)),
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
            doc = json.loads(unseal(self.master_key, row.report_sealed, _nca_aad(row.case_id)))
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
                    return _load(conn, report_id)
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
            return _load(conn, report_id)

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
            return [_load(conn, int(i)) for i in builtins.list(ids)]

    # -- one decision, both reports ------------------------------------------------------------

    def draft_for_jurisdictions(
        self,
        case: Case,
        jurisdictions: set[str] | frozenset[str],
        *,
        actor: str,
        detection_method: str,
        priority: str,
        summary: str,
        incident_type: str | None = None,
        reporter_info: ReporterInfo | None = None,
        account: NcaAccount | None = None,
        related_accounts: tuple[NcaAccount, ...] = (),
        platform: str | None = None,
        upload_ip: str | None = None,
        upload_port: int | None = None,
        urls: dict[int, str] | None = None,
        environment: str | None = None,
        escalation_reason: str | None = None,
        web_urls: tuple[str, ...] = (),
        service_info: str | None = None,
    ) -> builtins.list[Report]:
        """Draft the reports a case needs (``"US"``: NCMEC, ``"UK"``: NCA) from one set of
        facts, in one transaction, so the reviewer enters them once. Idempotent: a report that
        already exists is returned as it is, never drafted twice. Returned US first.
        ``escalation_reason``, ``web_urls`` and ``service_info`` are NCMEC-only extras (the
        console form's): a given reason replaces the P1 default, the URLs follow ``urls``."""
        codes = {str(j).upper() for j in jurisdictions}
        if not codes or not codes <= {"US", "UK"}:
            raise InvalidInput("jurisdictions must be a non-empty subset of {'US', 'UK'}")
        if "US" in codes and (incident_type is None or reporter_info is None):
            raise InvalidInput("a US (NCMEC) report needs incident_type and reporter_info")
        try:
            nca_kw = _nca_kw(
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
            acc = nca_kw["account"] or NcaAccount(account_id=case.uploader_id)
            ncmec_kw: dict[str, Any] = {}
            if "US" in codes:
                ncmec_kw = ncmec_from_shared(
                    case,
                    acc,
                    priority,
                    detection_method,
                    summary,
                    platform,
                    upload_ip,
                    upload_port,
                    urls,
                )
                if escalation_reason:
                    ncmec_kw["escalation_reason"] = escalation_reason
                extra = tuple(u for u in web_urls if u not in ncmec_kw["web_urls"])
                ncmec_kw["web_urls"] = ncmec_kw["web_urls"] + extra
                ncmec_kw["service_info"] = service_info
        except ReportInputError as exc:
            raise InvalidInput(f"report: {exc}") from None
        for attempt in range(2):
            try:
                ids: list[int] = []
                with self._tx() as conn:
                    if "US" in codes:
                        found = _existing(conn, case.id, AUTHORITY_NCMEC)
                        ids.append(
                            found
                            if found is not None
                            else self._draft_ncmec_in(
                                conn,
                                case,
                                incident_type=incident_type,  # type: ignore[arg-type]
                                reporter_info=reporter_info,  # type: ignore[arg-type]
                                actor=actor,
                                environment=environment,
                                **ncmec_kw,
                            )
                        )
                    if "UK" in codes:
                        found = _existing(conn, case.id, AUTHORITY_NCA)
                        ids.append(
                            found
                            if found is not None
                            else self._draft_nca_in(conn, case, actor=actor, **nca_kw)
                        )
                break
            except (ReportInputError, XmlValidationError) as exc:
                raise InvalidInput(f"report: {exc}") from None
            except IntegrityError:
                if attempt:  # a concurrent draft won twice: something else is wrong
                    raise
        return [self.get(i) for i in ids]

    # -- reading -------------------------------------------------------------------------------

    def get(self, report_id: int) -> Report:
        with self._tx() as conn:
            return _load(conn, report_id)

    def for_case(self, case_id: int, authority: str = AUTHORITY_NCMEC) -> Report | None:
        with self._tx() as conn:
            existing = _existing(conn, case_id, authority)
            return None if existing is None else _load(conn, existing)

    def list(self, *, state: str | None = None, limit: int = 100) -> builtins.list[Report]:
        q = select(reports_t.c.id).order_by(reports_t.c.id.desc()).limit(limit)
        if state is not None:
            q = q.where(reports_t.c.state == state)
        with self._tx() as conn:
            return [_load(conn, int(i)) for i in conn.execute(q).scalars()]

    def report_xml(self, report_id: int) -> bytes:
        """The sealed report document (for the reporter; never shown in the console)."""
        with self._tx() as conn:
            row = conn.execute(
                select(reports_t.c.case_id, reports_t.c.report_sealed).where(
                    reports_t.c.id == report_id
                )
            ).first()
        if row is None:
            raise ReportNotFound(f"no report {report_id}")
        return unseal(self.master_key, row.report_sealed, _report_aad(row.case_id))

    # -- admin actions -------------------------------------------------------------------------

    def retract(self, report_id: int, *, actor: str, reason: str) -> Report:
        """Ask for an unfinished report to be retracted: at NCMEC by the reporter when NCMEC
        holds it, locally when it was never submitted. A finished report cannot be."""
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
            raise InvalidInput("a retraction needs a reason of at most 2000 characters")
        now = self.clock()
        with self._tx() as conn:
            r = _load(conn, report_id)
            if r.state in (State.RETRACTING, State.RETRACTED):
                return r
            if r.state == State.FINISHED:
                raise ReportConflict("a finished report cannot be retracted")
            target = State.RETRACTING if r.external_id else State.RETRACTED
            values: dict[str, Any] = {
                "state": target.value,
                "retract_reason": reason,
                "attempts": 0,
                "next_attempt_at": now,
                "updated_at": now,
            }
            if target == State.RETRACTED:
                values["retracted_at"] = now
            done = conn.execute(
                update(reports_t)
                .where(reports_t.c.id == report_id, reports_t.c.state == r.state)
                .values(**values)
            ).rowcount
            if not done:
                raise ReportConflict("the report changed meanwhile; try again")
            append_audit(
                conn,
                actor=actor,
                action="report.retract_request",
                target=f"report:{report_id}",
                detail={"from": r.state, "to": target.value, "reason": reason[:500]},
            )
            return _load(conn, report_id)

    def retry(self, report_id: int, *, actor: str) -> Report:
        """Send a failed report (one NCMEC never opened) again from the start."""
        now = self.clock()
        with self._tx() as conn:
            done = conn.execute(
                update(reports_t)
                .where(
                    reports_t.c.id == report_id,
                    reports_t.c.state == State.FAILED,
                    reports_t.c.external_id.is_(None),
                )
                .values(state=State.DRAFTED.value, attempts=0, next_attempt_at=now, updated_at=now)
            ).rowcount
            if not done:
                _load(conn, report_id)  # ReportNotFound
                raise ReportConflict("only a failed report that NCMEC never opened is retried")
            append_audit(conn, actor=actor, action="report.retry", target=f"report:{report_id}")
            return _load(conn, report_id)

    # -- credentials ---------------------------------------------------------------------------

    def set_credentials(
        self, url: str | None, username: str, password: str, *, actor: str, environment: str
    ) -> None:
        """Store the CyberTipline endpoint and login sealed (set in the admin console)."""
        if environment not in ENVIRONMENTS:
            raise InvalidInput(f"environment must be one of {', '.join(ENVIRONMENTS)}")
        if not username or not password or len(username) > 255 or len(password) > 1024:
            raise InvalidInput("NCMEC username and password are required")
        if url is not None and not url.startswith("https://"):
            raise InvalidInput("the NCMEC URL must start with https://")
        blob = json.dumps({"url": url, "username": username, "password": password}).encode()
        sealed = seal(self.master_key, blob, _cred_aad(AUTHORITY_NCMEC))
        now = self.clock()
        with self._tx() as conn:
            conn.execute(creds_t.delete().where(creds_t.c.authority == AUTHORITY_NCMEC))
            conn.execute(
                insert(creds_t).values(
                    authority=AUTHORITY_NCMEC,
                    environment=environment,
                    sealed=sealed,
                    updated_by=actor,
                    updated_at=now,
                )
            )
            append_audit(
                conn,
                actor=actor,
                action="report.credentials",
                target=f"authority:{AUTHORITY_NCMEC}",
                detail={"environment": environment, "url": url or BASE_URLS[environment]},
            )

    def hold_unsendable(self, reason: str) -> int:
        """Record on each NCMEC report that is due why none can be sent (e.g. the configured
        URL is refused), as its ``last_error``: the console and ``GET /v1/reports`` show it.
        The state is unchanged, so the report goes out once the setting is fixed. Audited
        once per report and reason; returns how many reports were marked."""
        text = _clip(reason)
        now = self.clock()
        with self._tx() as conn:
            ids = builtins.list(
                conn.execute(
                    select(reports_t.c.id).where(
                        _runnable(now),
                        reports_t.c.next_attempt_at <= now,
                        or_(reports_t.c.last_error.is_(None), reports_t.c.last_error != text),
                    )
                ).scalars()
            )
            for report_id in ids:
                conn.execute(
                    update(reports_t)
                    .where(reports_t.c.id == report_id)
                    .values(last_error=text, updated_at=now)
                )
                append_audit(
                    conn,
                    actor=SYSTEM,
                    action="report.unsendable",
                    target=f"report:{report_id}",
                    detail={"error": text},
                )
        return len(ids)

    def credentials(self) -> Credentials | None:
        """Environment variables (``BASTION_NCMEC_*``) when set, else the console's; None when
        neither is configured."""
        s = self.settings
        env = getattr(s, "ncmec_environment", "test")
        if getattr(s, "ncmec_username", None) and getattr(s, "ncmec_password", None):
            url = getattr(s, "ncmec_url", None) or BASE_URLS.get(env, BASE_URLS["test"])
            return Credentials(url, s.ncmec_username, s.ncmec_password, env, "env")
        with self._tx() as conn:
            row = conn.execute(
                select(creds_t).where(creds_t.c.authority == AUTHORITY_NCMEC)
            ).first()
        if row is None:
            return None
        data = json.loads(unseal(self.master_key, row.sealed, _cred_aad(AUTHORITY_NCMEC)))
        url = getattr(s, "ncmec_url", None) or data["url"] or BASE_URLS[row.environment]
        return Credentials(url, data["username"], data["password"], row.environment, "console")

    def file_details(self, case_id: int, file_row: Any) -> ReportFile:
        data = json.loads(
            unseal(self.master_key, file_row.details_sealed, _file_aad(case_id, file_row.item_id))
        )
        ip = data.pop("ip_event", None)
        return ReportFile(**data, ip_event=IpCaptureEvent(**ip) if ip else None)


# -- the reporter ------------------------------------------------------------------------------


class CyberTipline(Protocol):
    def submit(self, report_xml: bytes) -> str: ...
    def upload(self, report_id: str, filename: str, data: bytes) -> Uploaded: ...
    def fileinfo(self, details_xml: bytes) -> None: ...
    def finish(self, report_id: str) -> builtins.list[str]: ...
    def retract(self, report_id: str) -> None: ...


class _LeaseLost(Exception):
    pass


class Reporter:
    """Runs reports' steps against a CyberTipline client. ``after_record(n, step)`` is called
    after the n-th step's result is committed (tests raise from it to simulate a crash)."""

    def __init__(
        self,
        reports: ReportStore,
        client: CyberTipline,
        *,
        worker_id: str | None = None,
        max_attempts: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        lease: timedelta = timedelta(minutes=10),
        rng: random.Random | None = None,
        after_record: Callable[[int, Step], None] | None = None,
    ) -> None:
        s = reports.settings
        self.reports = reports
        self.client = client
        self.worker_id = worker_id or f"reporter-{secrets.token_hex(6)}"
        self.max_attempts = max_attempts or int(getattr(s, "ncmec_max_attempts", 8))
        self.backoff_base = backoff_base or float(getattr(s, "ncmec_backoff_seconds", 30.0))
        self.backoff_cap = backoff_cap or float(getattr(s, "ncmec_backoff_max_seconds", 3600.0))
        self.lease = lease
        self.rng = rng or random.Random()
        self.after_record = after_record
        if self.max_attempts < 1:
            raise InvalidInput("max_attempts must be at least 1")

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.reports.clock

    def run_due(self, limit: int = 20) -> builtins.list[Report]:
        """Run every report whose next attempt is due (and that no live reporter holds)."""
        now = self.clock()
        with self.reports._tx() as conn:
            ids = conn.execute(
                select(reports_t.c.id)
                .where(_runnable(now), reports_t.c.next_attempt_at <= now)
                .order_by(reports_t.c.next_attempt_at, reports_t.c.id)
                .limit(limit)
            ).scalars()
            ids = builtins.list(ids)
        return [self.run(int(i)) for i in ids]

    def run(self, report_id: int) -> Report:
        """Take the report's lease and execute steps until it is finished, retracted, failed,
        or a call fails (then the failure and the next attempt time are recorded)."""
        if not self._claim(report_id):
            return self.reports.get(report_id)
        n = 0
        try:
            while True:
                with self.reports._tx() as conn:
                    row, files = _raw(conn, report_id)
                step = next_step(
                    State(row.state),
                    [FileProgress(f.id, f.position, FileState(f.state)) for f in files],
                )
                if step is None:
                    break
                try:
                    result = self._execute(step, row, files)
                except (NcmecError, ReportDataMissing) as exc:
                    if self._failed(row, step, exc):
                        continue  # now retracting: retract at once, still holding the lease
                    break
                self._record(row, step, result)
                if self.after_record is not None:
                    self.after_record(n, step)
                n += 1
        except _LeaseLost:
            return self.reports.get(report_id)
        self._release(report_id)
        return self.reports.get(report_id)

    # -- steps ---------------------------------------------------------------------------------

    def _execute(self, step: Step, row: Any, files: builtins.list[Any]) -> Any:
        if step.kind == StepKind.SUBMIT:
            return self.client.submit(self.reports.report_xml(row.id))
        if step.kind in (StepKind.UPLOAD, StepKind.FILEINFO):
            f = next(f for f in files if f.id == step.file_id)
            info = self.reports.file_details(row.case_id, f)
            if step.kind == StepKind.UPLOAD:
                with self.reports._tx() as conn:
                    data = self.reports._media(conn, row.case_id, f.item_id)
                return self.client.upload(row.external_id, info.original_file_name, data)
            return self.client.fileinfo(build_file_details(row.external_id, f.external_id, info))
        if step.kind == StepKind.FINISH:
            return self.client.finish(row.external_id)
        return self.client.retract(row.external_id)

    def _record(self, row: Any, step: Step, result: Any) -> None:
        now = self.clock()
        mine = and_(
            reports_t.c.id == row.id,
            reports_t.c.locked_by == self.worker_id,
            reports_t.c.state == row.state,
        )
        base = {"attempts": 0, "last_error": None, "last_response_code": None, "updated_at": now}
        with self.reports._tx() as conn:
            if step.kind == StepKind.SUBMIT:
                values = {
                    "state": State.SUBMITTED.value,
                    "external_id": result,
                    "submitted_at": now,
                }
                audit = ("report.submit", {"ncmec_report_id": result})
            elif step.kind == StepKind.UPLOAD:
                values = {}
                audit = ("report.upload", {"file": step.file_id, "ncmec_file_id": result.file_id})
            elif step.kind == StepKind.FILEINFO:
                values = {}
                audit = ("report.fileinfo", {"file": step.file_id})
            elif step.kind == StepKind.FINISH:
                values = {"state": State.FINISHED.value, "finished_at": now}
                audit = ("report.finish", {"ncmec_report_id": row.external_id})
            else:
                values = {"state": State.RETRACTED.value, "retracted_at": now}
                audit = ("report.retract", {"ncmec_report_id": row.external_id})
            if not conn.execute(update(reports_t).where(mine).values(**base, **values)).rowcount:
                raise _LeaseLost()
            if step.kind == StepKind.UPLOAD:
                conn.execute(
                    update(files_t)
                    .where(files_t.c.id == step.file_id, files_t.c.state == FileState.PENDING)
                    .values(
                        state=FileState.UPLOADED.value,
                        external_id=result.file_id,
                        uploaded_at=now,
                    )
                )
            elif step.kind == StepKind.FILEINFO:
                conn.execute(
                    update(files_t)
                    .where(files_t.c.id == step.file_id, files_t.c.state == FileState.UPLOADED)
                    .values(state=FileState.DESCRIBED.value, described_at=now)
                )
                left = conn.execute(
                    select(files_t.c.id).where(
                        files_t.c.report_id == row.id, files_t.c.state != FileState.DESCRIBED
                    )
                ).first()
                if left is None:
                    conn.execute(
                        update(reports_t)
                        .where(reports_t.c.id == row.id)
                        .values(state=State.FILES_UPLOADED.value)
                    )
            if step.kind == StepKind.FINISH and self.reports.vault is not None:
                # The report restarts the evidence's retention clock, committed with it.
                self.reports.vault.mark_reported_in(
                    conn,
                    int(row.case_id),
                    reported_at=now,
                    jurisdiction="US",
                    reference=str(row.external_id),
                    actor=SYSTEM,
                )
            append_audit(
                conn, actor=SYSTEM, action=audit[0], target=f"report:{row.id}", detail=audit[1]
            )

    def _failed(self, row: Any, step: Step, exc: Exception) -> bool:
        """Record a failed call; True when the report moved to retracting (lease kept)."""
        now = self.clock()
        attempts = int(row.attempts) + 1
        retryable = getattr(exc, "retryable", False)
        code = getattr(exc, "response_code", None)
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_error": _clip(str(exc)),
            "last_response_code": code,
            "updated_at": now,
            "locked_by": None,
            "locked_until": None,
        }
        action = "report.attempt_failed"
        if retryable and attempts < self.max_attempts:
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempts - 1))
            values["next_attempt_at"] = now + timedelta(seconds=delay * self.rng.uniform(0.5, 1))
        elif row.state in (State.SUBMITTED, State.FILES_UPLOADED):
            # NCMEC holds an open report we cannot complete: retract it (next run does).
            values.update(
                state=State.RETRACTING.value,
                attempts=0,
                next_attempt_at=now,
                retract_reason=f"could not complete the report: {_clip(str(exc), 300)}",
                locked_by=self.worker_id,
                locked_until=now + self.lease,
            )
            action = "report.unfinishable"
        else:
            values["state"] = State.FAILED.value
            action = "report.failed"
        with self.reports._tx() as conn:
            done = conn.execute(
                update(reports_t)
                .where(
                    reports_t.c.id == row.id,
                    reports_t.c.locked_by == self.worker_id,
                    reports_t.c.state == row.state,
                )
                .values(**values)
            ).rowcount
            if not done:
                raise _LeaseLost()
            append_audit(
                conn,
                actor=SYSTEM,
                action=action,
                target=f"report:{row.id}",
                detail={
                    "step": step.kind.value,
                    "attempts": attempts,
                    "response_code": code,
                    "error": _clip(str(exc), 300),
                },
            )
        return values.get("state") == State.RETRACTING.value

    # -- leases --------------------------------------------------------------------------------

    def _claim(self, report_id: int) -> bool:
        now = self.clock()
        with self.reports._tx() as conn:
            _load(conn, report_id)  # ReportNotFound
            return bool(
                conn.execute(
                    update(reports_t)
                    .where(reports_t.c.id == report_id, _runnable(now))
                    .values(locked_by=self.worker_id, locked_until=now + self.lease)
                ).rowcount
            )

    def _release(self, report_id: int) -> None:
        with self.reports._tx() as conn:
            conn.execute(
                update(reports_t)
                .where(reports_t.c.id == report_id, reports_t.c.locked_by == self.worker_id)
                .values(locked_by=None, locked_until=None)
            )


# -- helpers -----------------------------------------------------------------------------------


def _runnable(now: datetime) -> Any:
    return and_(
        reports_t.c.authority == AUTHORITY_NCMEC,  # NCA reports go through the portal by hand
        reports_t.c.state.in_([s.value for s in ACTIVE_STATES]),
        or_(reports_t.c.locked_until.is_(None), reports_t.c.locked_until <= now),
    )


def _existing(conn: Connection, case_id: int, authority: str = AUTHORITY_NCMEC) -> int | None:
    found = conn.execute(
        select(reports_t.c.id).where(
            reports_t.c.case_id == case_id, reports_t.c.authority == authority
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


def _raw(conn: Connection, report_id: int) -> tuple[Any, builtins.list[Any]]:
    row = conn.execute(select(reports_t).where(reports_t.c.id == report_id)).first()
    if row is None:
        raise ReportNotFound(f"no report {report_id}")
    files = conn.execute(
        select(files_t).where(files_t.c.report_id == report_id).order_by(files_t.c.position)
    ).all()
    return row, builtins.list(files)


def _load(conn: Connection, report_id: int) -> Report:
    row, files = _raw(conn, report_id)
    m = row._mapping
    return Report(
        id=int(m["id"]),
        case_id=int(m["case_id"]),
        authority=m["authority"],
        environment=m["environment"],
        state=m["state"],
        incident_type=m["incident_type"],
        external_id=m["external_id"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
        last_response_code=m["last_response_code"],
        retract_reason=m["retract_reason"],
        created_by=m["created_by"],
        confirmed_at=m["confirmed_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        submitted_at=m["submitted_at"],
        finished_at=m["finished_at"],
        retracted_at=m["retracted_at"],
        files=tuple(
            ReportFileInfo(
                int(f.id),
                int(f.item_id),
                int(f.position),
                f.state,
                f.external_id,
                f.uploaded_at,
                f.described_at,
            )
            for f in files
        ),
        priority=m["priority"],
        deadline_at=m["deadline_at"],
        keep_until=m["keep_until"],
    )


def _nca_row(conn: Connection, report_id: int, *, lock: bool = False) -> Any:
    q = select(reports_t).where(reports_t.c.id == report_id)
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise ReportNotFound(f"no report {report_id}")
    if row.authority != AUTHORITY_NCA:
        raise ReportConflict(f"report {report_id} is not an NCA report")
    return row


def _nca_kw(
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


def ncmec_from_shared(
    case: Case,
    account: NcaAccount,
    priority: str,
    detection_method: str,
    summary: str,
    platform: str | None,
    upload_ip: str | None,
    upload_port: int | None,
    urls: dict[int, str] | None,
) -> dict[str, Any]:
    """The CyberTipline fields from the facts shared with the NCA report: the account's
    identifiers and login IPs become the reported user, P1 escalates, the detection method and
    summary go in additionalInfo."""
    events = [
        IpCaptureEvent(x.ip, event_name="Login", date_time=x.at, port=x.port)
        for x in account.login_ips
    ]
    if upload_ip is not None:
        first = min((i.added_at for i in case.items), default=case.opened_at)
        events.insert(
            0, IpCaptureEvent(upload_ip, event_name="Upload", date_time=first, port=upload_port)
        )
    info = f"Detection method: {detection_method}\n{summary}"
    return {
        "reported": ReportedUser(
            esp_identifier=account.account_id or case.uploader_id,
            screen_name=account.user_name,
            esp_service=platform,
            ip_events=tuple(events),
        ),
        "escalation_reason": (
            "Threat to life or of serious harm (UK priority P1)" if priority == "P1" else None
        ),
        "web_urls": tuple((urls or {}).values()),
        "service_info": None,
        "additional_info": info[:5000],
        "publicly_available": False,
        "annotations": None,
    }


def _file_json(f: ReportFile) -> dict[str, Any]:
    ip = f.ip_event
    return {
        "item_id": f.item_id,
        "original_file_name": f.original_file_name,
        "md5": f.md5,
        "sha1": f.sha1,
        "sha256": f.sha256,
        "classification": f.classification,
        "viewed_by_esp": f.viewed_by_esp,
        "publicly_available": f.publicly_available,
        "annotations": list(f.annotations),
        "ip_event": None
        if ip is None
        else {
            "ip_address": ip.ip_address,
            "event_name": ip.event_name,
            "date_time": None,
            "possible_proxy": ip.possible_proxy,
            "port": ip.port,
        },
    }


def _report_aad(case_id: int) -> bytes:
    return f"bastion/report/v1:case={case_id}:authority={AUTHORITY_NCMEC}".encode()


def _file_aad(case_id: int, item_id: int) -> bytes:
    return f"bastion/report-file/v1:case={case_id}:item={item_id}".encode()


def _nca_aad(case_id: int) -> bytes:
    return f"bastion/report/v1:case={case_id}:authority={AUTHORITY_NCA}".encode()


def _cred_aad(authority: str) -> bytes:
    return f"bastion/report-credentials/v1:{authority}".encode()


def _clip(text: str, limit: int = _MAX_ERROR) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "Credentials",
    "Report",
    "ReportConflict",
    "ReportDataMissing",
    "ReportExists",
    "ReportFileInfo",
    "ReportNotFound",
    "ReportStore",
    "Reporter",
]

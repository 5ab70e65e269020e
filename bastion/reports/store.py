"""Mandatory reports (NCMEC CyberTipline; UK NCA in :mod:`bastion.reports.nca_store`) as durable
state. The reporter that sends them is :mod:`bastion.reports.reporter`.

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
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bastion.crypto import seal, unseal
from bastion.reports.errors import ReportConflict, ReportExists
from bastion.reports.model import (
    AUTHORITY_NCMEC,
    BASE_URLS,
    ENVIRONMENTS,
    HELD_UNTIL,
    Credentials,
    FileState,
    IpCaptureEvent,
    Report,
    ReportContent,
    ReportedUser,
    ReporterInfo,
    ReportFile,
    ReportInputError,
    State,
)
from bastion.reports.nca import AUTHORITY_NCA, NcaAccount
from bastion.reports.nca_store import NcaReports, nca_fields
from bastion.reports.ncmec_xml import XmlValidationError, build_report, validate
from bastion.reports.sql import (
    SYSTEM,
    clip,
    cred_aad,
    creds_t,
    existing_id,
    file_aad,
    files_t,
    load_report,
    report_aad,
    reports_t,
    runnable,
)
from bastion.review.model import CONFIRMED, EV_REVEAL, EV_VIEW, Case
from bastion.store import InvalidInput, append_audit


class ReportStore(NcaReports):
    """Reports on a :class:`Store`. ``settings`` supplies env-var credentials and defaults."""

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
        kw: dict[str, Any] = {
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
                existing = existing_id(conn, case.id)
                if existing is not None:
                    raise ReportExists(existing)
                report_id = self._draft_ncmec_in(conn, case, actor=actor, **kw)
        except (ReportInputError, XmlValidationError) as exc:
            raise InvalidInput(f"report: {exc}") from None
        except IntegrityError:
            with self.store.engine.connect() as conn:
                existing = existing_id(conn, case.id)
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
        hold: bool = False,
    ) -> int:
        """Build, validate and insert the CyberTipline draft inside ``conn``; its id. ``hold``:
        the worker leaves it until a person sends it (:data:`HELD_UNTIL`)."""
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
                report_sealed=seal(self.master_key, xml, report_aad(case.id)),
                attempts=0,
                next_attempt_at=HELD_UNTIL if hold else now,
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
                    details_sealed=seal(self.master_key, details, file_aad(case.id, f.item_id)),
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
                "held": hold,
            },
        )
        return int(report_id)

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
        conn: Connection | None = None,
        hold: bool = False,
    ) -> builtins.list[Report]:
        """Draft the reports a case needs (``"US"``: NCMEC, ``"UK"``: NCA) from one set of
        facts, in one transaction, so the reviewer enters them once. Idempotent: a report that
        already exists is returned as it is, never drafted twice. Returned US first.
        ``escalation_reason``, ``web_urls`` and ``service_info`` are NCMEC-only extras (the
        console form's): a given reason replaces the P1 default, the URLs follow ``urls``.
        With ``conn`` the drafts are made in that (caller's) transaction and commit or roll
        back with it (a confirmed account case's decision, :mod:`bastion.reports.drafting`);
        a concurrent draft's unique-constraint error is then the caller's to handle. ``hold``:
        a new NCMEC draft waits for a person to send it (:data:`HELD_UNTIL`)."""
        codes = {str(j).upper() for j in jurisdictions}
        if not codes or not codes <= {"US", "UK"}:
            raise InvalidInput("jurisdictions must be a non-empty subset of {'US', 'UK'}")
        if "US" in codes and (incident_type is None or reporter_info is None):
            raise InvalidInput("a US (NCMEC) report needs incident_type and reporter_info")
        try:
            nca_kw = nca_fields(
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

        def in_tx(conn: Connection) -> list[int]:
            ids: list[int] = []
            if "US" in codes:
                found = existing_id(conn, case.id, AUTHORITY_NCMEC)
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
                        hold=hold,
                        **ncmec_kw,
                    )
                )
            if "UK" in codes:
                found = existing_id(conn, case.id, AUTHORITY_NCA)
                ids.append(
                    found
                    if found is not None
                    else self._draft_nca_in(conn, case, actor=actor, **nca_kw)
                )
            return ids

        if conn is not None:
            try:
                return [load_report(conn, i) for i in in_tx(conn)]
            except (ReportInputError, XmlValidationError) as exc:
                raise InvalidInput(f"report: {exc}") from None
        for attempt in range(2):
            try:
                with self._tx() as tx:
                    ids = in_tx(tx)
                break
            except (ReportInputError, XmlValidationError) as exc:
                raise InvalidInput(f"report: {exc}") from None
            except IntegrityError:
                if attempt:  # a concurrent draft won twice: something else is wrong
                    raise
        return [self.get(i) for i in ids]

    # -- admin actions -------------------------------------------------------------------------

    def retract(self, report_id: int, *, actor: str, reason: str) -> Report:
        """Ask for an unfinished report to be retracted: at NCMEC by the reporter when NCMEC
        holds it, locally when it was never submitted. A finished report cannot be."""
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
            raise InvalidInput("a retraction needs a reason of at most 2000 characters")
        now = self.clock()
        with self._tx() as conn:
            r = load_report(conn, report_id)
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
            return load_report(conn, report_id)

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
                load_report(conn, report_id)  # ReportNotFound
                raise ReportConflict("only a failed report that NCMEC never opened is retried")
            append_audit(conn, actor=actor, action="report.retry", target=f"report:{report_id}")
            return load_report(conn, report_id)

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
        sealed = seal(self.master_key, blob, cred_aad(AUTHORITY_NCMEC))
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
        text = clip(reason)
        now = self.clock()
        with self._tx() as conn:
            ids = builtins.list(
                conn.execute(
                    select(reports_t.c.id).where(
                        runnable(now),
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
        data = json.loads(unseal(self.master_key, row.sealed, cred_aad(AUTHORITY_NCMEC)))
        url = getattr(s, "ncmec_url", None) or data["url"] or BASE_URLS[row.environment]
        return Credentials(url, data["username"], data["password"], row.environment, "console")


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


__all__ = ["ReportStore", "ncmec_from_shared"]

"""Drafting a report from a confirmed case, shared by the API (``/v1/reports``) and the console:
the editable inputs, the document preview, drafting, sending now, and the audited view.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bastion.reports.errors import ReportConflict
from bastion.reports.model import (
    ACCOUNT_INCIDENT_TYPE,
    ACCOUNT_INCIDENT_TYPES,
    AUTHORITY_NCMEC,
    INCIDENT_TYPES,
    Report,
    ReportContent,
    ReportedUser,
    ReporterInfo,
    ReportInputError,
    State,
)
from bastion.reports.nca import AUTHORITY_NCA, PRIORITIES, LoginIp, NcaAccount
from bastion.reports.ncmec_xml import XmlValidationError, build_report, validate
from bastion.reports.store import ncmec_from_shared
from bastion.review.model import ACCOUNT, CONFIRMED, Case, risk_snapshot
from bastion.store import InvalidInput, append_audit

if TYPE_CHECKING:
    from bastion.runtime import Runtime

log = logging.getLogger("bastion.reports")

STATES = tuple(s.value for s in State)
AUTHORITIES = (AUTHORITY_NCMEC, AUTHORITY_NCA)
#: Jurisdiction code -> the authority that takes its reports (US first, as drafts return).
JURISDICTIONS = {"US": AUTHORITY_NCMEC, "UK": AUTHORITY_NCA}


@dataclass(frozen=True)
class DraftInput:
    """The editable parts of a report: what the console form and the API body carry."""

    incident_type: str
    first_name: str
    last_name: str
    email: str
    phone: str | None = None
    escalation_reason: str | None = None
    additional_info: str | None = None
    service_info: str | None = None
    screen_name: str | None = None
    web_urls: tuple[str, ...] = ()

    def reporter(self) -> ReporterInfo:
        return ReporterInfo(self.first_name, self.last_name, self.email, phone=self.phone)

    def check(self) -> None:
        if self.incident_type not in INCIDENT_TYPES:
            raise ReportInputError("unknown incident type")
        self.reporter()


@dataclass(frozen=True)
class NcaInput:
    """The UK (NCA) parts of a draft; the rest is shared with the NCMEC report."""

    priority: str
    detection_method: str
    summary: str
    user_name: str | None = None
    email: str | None = None
    phone: str | None = None
    profile_url: str | None = None
    login_ips: tuple[str, ...] = ()
    related_accounts: tuple[str, ...] = ()

    def account(self, case: Case) -> NcaAccount:
        return NcaAccount(
            account_id=case.uploader_id,
            user_name=self.user_name,
            email=self.email,
            phone=self.phone,
            profile_url=self.profile_url,
            login_ips=tuple(LoginIp(ip) for ip in self.login_ips),
        )

    def related(self) -> tuple[NcaAccount, ...]:
        return tuple(
            NcaAccount(account_id=a, relationship="related") for a in self.related_accounts
        )

    def check(self, case: Case) -> None:
        if self.priority not in PRIORITIES:
            raise ReportInputError(f"priority must be one of {', '.join(PRIORITIES)}")
        if not self.detection_method.strip():
            raise ReportInputError("the detection method is required for a UK (NCA) report")
        if not self.summary.strip():
            raise ReportInputError("a summary (additional information) is required for UK (NCA)")
        self.account(case)
        self.related()


def blank_to_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def preview_xml(case: Case, data: DraftInput, nca: NcaInput | None = None) -> bytes:
    """The report document drafting would store, built before anything is stored: the same
    inputs ``ReportStore.draft_for_case`` uses (file details go separately, after upload), or,
    with ``nca``, those ``draft_for_jurisdictions`` maps from the facts shared with the UK."""
    if case.state != CONFIRMED:
        raise ReportConflict("only a confirmed case is reported")
    reported = ReportedUser(esp_identifier=case.uploader_id, screen_name=data.screen_name)
    escalation, info, urls = data.escalation_reason, data.additional_info, data.web_urls
    if nca is not None:
        kw = ncmec_from_shared(
            case, nca.account(case), nca.priority, nca.detection_method, nca.summary,
            None, None, None, None,
        )  # fmt: skip
        reported, info = kw["reported"], kw["additional_info"]
        escalation = escalation or kw["escalation_reason"]
    content = ReportContent(
        incident_type=data.incident_type,
        incident_at=min((i.added_at for i in case.items), default=case.opened_at),
        reporter=data.reporter(),
        reported=reported,
        escalation_reason=escalation,
        web_urls=urls,
        service_info=data.service_info,
        additional_info=info,
    )
    xml = build_report(content)
    try:
        validate(xml, "report")
    except XmlValidationError as exc:
        raise InvalidInput(f"report: {exc}") from None
    return xml


def draft(rt: Runtime, case: Case, data: DraftInput, *, actor: str) -> Report:
    return rt.reports.draft_for_case(
        case,
        incident_type=data.incident_type,
        reporter_info=data.reporter(),
        actor=actor,
        screen_name=data.screen_name,
        escalation_reason=data.escalation_reason,
        web_urls=data.web_urls,
        service_info=data.service_info,
        additional_info=data.additional_info,
    )


def draft_jurisdictions(
    rt: Runtime,
    case: Case,
    codes: AbstractSet[str],
    data: DraftInput | None,
    nca: NcaInput,
    *,
    actor: str,
    conn: Connection | None = None,
    hold: bool = False,
) -> list[Report]:
    """Draft the reports ``codes`` ask for in one transaction (existing ones are kept): its
    own, or the caller's ``conn``. ``hold``: the NCMEC draft waits for a person to send it."""
    return rt.reports.draft_for_jurisdictions(
        case,
        set(codes),
        actor=actor,
        conn=conn,
        hold=hold,
        detection_method=nca.detection_method,
        priority=nca.priority,
        summary=nca.summary,
        incident_type=data.incident_type if data else None,
        reporter_info=data.reporter() if data else None,
        account=nca.account(case),
        related_accounts=nca.related(),
        escalation_reason=data.escalation_reason if data else None,
        web_urls=data.web_urls if data else (),
        service_info=data.service_info if data else None,
    )


#: Who drafts a confirmed account case's reports: the service, from the configured reporting
#: contact (``report_*`` settings), not the reviewer, who decided the case but wrote no report.
#: The reviewer's ``case.decide`` audit row is in the same transaction as ``report.draft``.
AUTO_DRAFT_ACTOR = "system:account-report"
#: How an account case was detected, as its NCA report and CyberTipline additionalInfo say.
ACCOUNT_DETECTION_METHOD = "behavioural risk detectors (metadata)"
#: The NCA priority of an account case's draft (the policy has no setting for it): P2, "a risk
#: of harm", not P1 (threat to life), which a person chooses when editing the draft.
ACCOUNT_NCA_PRIORITY = "P2"


def reporting_contact(settings: Any) -> DraftInput | None:
    """The configured reporting contact as the editable parts of an account case's report,
    or None when the ``report_*`` settings are not all set (a person drafts it then)."""
    names = ("report_first_name", "report_last_name", "report_email")
    first, last, email = ((getattr(settings, n, None) or "").strip() for n in names)
    if not (first and last and email):
        return None
    return DraftInput(
        incident_type=ACCOUNT_INCIDENT_TYPE,
        first_name=first,
        last_name=last,
        email=email,
        phone=blank_to_none(getattr(settings, "report_phone", None)),
    )


def account_summary(case: Case) -> str:
    """What an account case's reports say about it: the classification, and the newest risk
    snapshot's score, band and each fired detector with its evidence counts. Detector names
    and numbers only: no event, no explanation text, never message content (none is stored)."""
    snap: dict[str, Any] | None = None
    for item in case.items:  # oldest first: the newest snapshot wins
        snap = risk_snapshot(item.signals or ()) or snap
    lines = [
        f"Account {case.uploader_id}: confirmed by human review as "
        f"{case.classification or 'online enticement'} (account case {case.id})."
    ]
    if snap is not None:
        lines.append(f"Risk score {snap.get('score')} (band {snap.get('band')}).")
        for c in snap.get("contributions") or ():
            if not (isinstance(c, dict) and c.get("fired")):
                continue
            evidence = ", ".join(
                f"{k}={v}" for k, v in sorted(dict(c.get("evidence") or {}).items())
            )
            lines.append(
                f"Detector {c.get('detector')}: {c.get('points')} points"
                + (f"; evidence counts: {evidence}" if evidence else "")
            )
    lines.append("No message content is held by the service (metadata and flags only).")
    return "\n".join(lines)[:4000]


def draft_account_case_in(rt: Runtime, conn: Connection, case: Case) -> list[Report]:
    """In a confirmed account case's decision transaction (``pipeline.decide``'s hook): draft
    its text-only CyberTipline report and its UK NCA report through
    :func:`draft_jurisdictions`, when the reporting contact is configured; else nothing (the
    decision answer says a draft is needed). The NCMEC draft is held: the worker does not send
    it; a person does (the console's *Send now*), as the NCA one is exported by a person.

    Why inside the decision's transaction: the drafts commit with the confirmation or not at
    all, so a crash never leaves a confirmed case without its drafts, and a retried decision
    never drafts twice (a final decision happens once per case: the case row is locked and
    the transition refuses a second one; the (case, authority) unique constraint stands
    behind it). Inputs the drafting refuses (a rejected contact, say) must not undo the
    reviewers' decision: the drafting runs in a savepoint, rolled back alone, and the failure
    is audited (``report.auto_draft_failed``) and logged, so a person drafts it."""
    if case.subject != ACCOUNT or case.state != CONFIRMED:
        return []
    contact = reporting_contact(rt.settings)
    if contact is None:
        return []
    data = DraftInput(
        incident_type=ACCOUNT_INCIDENT_TYPES.get(case.classification or "", ACCOUNT_INCIDENT_TYPE),
        first_name=contact.first_name,
        last_name=contact.last_name,
        email=contact.email,
        phone=contact.phone,
    )
    nca = NcaInput(
        priority=ACCOUNT_NCA_PRIORITY,
        detection_method=ACCOUNT_DETECTION_METHOD,
        summary=account_summary(case),
    )
    try:
        with conn.begin_nested():
            data.check()
            nca.check(case)
            return draft_jurisdictions(
                rt,
                case,
                set(JURISDICTIONS),
                data,
                nca,
                actor=AUTO_DRAFT_ACTOR,
                conn=conn,
                hold=True,  # no person has read it: it goes when one sends it
            )
    except (InvalidInput, ReportInputError, ReportConflict) as exc:
        log.warning("account case %s: reports not drafted: %s", case.id, exc)
        append_audit(
            conn,
            actor=AUTO_DRAFT_ACTOR,
            action="report.auto_draft_failed",
            target=f"case:{case.id}",
            detail={"error": str(exc)[:500]},
        )
        return []


def send_now(rt: Runtime, report_id: int, *, actor: str | None = None) -> Report:
    """Run the report's remaining steps in this request with the configured login. With
    ``actor``, who sent it is audited (``report.send_now``): for a held draft (the service's)
    this is the person's decision to send what the service drafted."""
    from bastion.reports.ncmec import CyberTiplineClient
    from bastion.reports.reporter import Reporter as NcmecReporter

    rs = rt.reports
    creds = rs.credentials()
    if creds is None:
        raise ReportConflict("no CyberTipline login is configured (admin: /admin/ncmec)")
    if actor is not None:
        before = rs.get(report_id)
        rt.store.record_audit(
            actor=actor,
            action="report.send_now",
            target=f"report:{report_id}",
            detail={"case_id": before.case_id, "state": before.state, "held": before.held},
        )
    try:
        client = CyberTiplineClient(
            creds.url,
            creds.username,
            creds.password,
            timeout=float(getattr(rt.settings, "ncmec_timeout", 60.0)),
        )
    except ValueError as exc:
        raise ReportConflict(str(exc)) from None
    try:
        return NcmecReporter(rs, client).run(report_id)
    finally:
        client.close()


def audit_view(rt: Runtime, actor: str, report: Report, remote_addr: str | None) -> None:
    rt.store.record_audit(
        actor=actor,
        action="report.view",
        target=f"report:{report.id}",
        detail={"case_id": report.case_id, "state": report.state},
        remote_addr=remote_addr,
    )

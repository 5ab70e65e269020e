"""Drafting a report from a confirmed case, shared by the API (``/v1/reports``) and the console:
the editable inputs, the document preview, drafting, sending now, and the audited view.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.reports.errors import ReportConflict
from bastion.reports.model import (
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
from bastion.review.model import CONFIRMED, Case
from bastion.store import InvalidInput

if TYPE_CHECKING:
    from bastion.runtime import Runtime

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
) -> list[Report]:
    """Draft the reports ``codes`` ask for in one transaction (existing ones are kept)."""
    return rt.reports.draft_for_jurisdictions(
        case,
        set(codes),
        actor=actor,
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


def send_now(rt: Runtime, report_id: int) -> Report:
    """Run the report's remaining steps in this request with the configured login."""
    from bastion.reports.ncmec import CyberTiplineClient
    from bastion.reports.reporter import Reporter as NcmecReporter

    rs = rt.reports
    creds = rs.credentials()
    if creds is None:
        raise ReportConflict("no CyberTipline login is configured (admin: /admin/ncmec)")
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

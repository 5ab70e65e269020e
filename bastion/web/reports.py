"""Mandatory reports in the console: draft a confirmed case's CyberTipline report, watch it,
retry or retract it, and set the CyberTipline login (see docs/console.md, docs/reports.md).

Admins and senior reviewers only: a report carries the uploader's identifiers, so it is no
reviewer's or auditor's business. Four-eyes is the review flow's: only a ``confirmed`` case
(final, after any second review the policy asks for) can be reported. Drafting queues the
report; the worker's reporter sends it, or "Send now" runs it in the request. Every change is
audited by the store call; opening a report (its XML) is audited here as ``report.view``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Form, Query, Response

from bastion.reports.drafting import (
    AUTHORITIES,
    JURISDICTIONS,
    STATES,
    DraftInput,
    NcaInput,
    audit_view,
    blank_to_none,
    draft,
    draft_jurisdictions,
    preview_xml,
    send_now,
)
from bastion.reports.model import (
    ACCOUNT_INCIDENT_TYPE,
    ACCOUNT_INCIDENT_TYPES,
    AUTHORITY_NCMEC,
    ENVIRONMENTS,
    INCIDENT_TYPES,
    Report,
    ReportInputError,
    State,
)
from bastion.reports.nca import AUTHORITY_NCA, PRIORITIES, PRIORITY_MEANING
from bastion.review.model import ACCOUNT, CONFIRMED, Case
from bastion.store import InvalidInput
from bastion.web.base import (
    ADMINS,
    ConsoleRoute,
    Ctx,
    PageError,
    action,
    not_found,
    page,
    redirect,
    render,
)

if TYPE_CHECKING:
    pass


#: Who may draft, send, retry and retract reports, and read them.
REPORTERS = ("admin", "senior_reviewer")
EXPORT_TYPES = {"json": "application/json", "pdf": "application/pdf"}
MAX_ID = 2**63 - 1

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
Reporter = Annotated[Ctx, Depends(page(*REPORTERS))]
ReporterAction = Annotated[Ctx, Depends(action(*REPORTERS))]
Admin = Annotated[Ctx, Depends(page(*ADMINS))]
AdminAction = Annotated[Ctx, Depends(action(*ADMINS))]


def age_text(age: timedelta | None) -> str:
    if age is None:
        return "-"
    minutes = int(age.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // 1440} d {(minutes % 1440) // 60} h"


def _id(value: int) -> int:
    if not 0 < value <= MAX_ID:
        raise not_found()
    return value


def _now() -> datetime:
    return datetime.now(UTC)


# -- list and detail -------------------------------------------------------------------------


@router.get("/reports")
def reports_list(
    ctx: Reporter,
    state: Annotated[str, Query(max_length=32)] = "",
    authority: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    if state and state not in STATES:
        raise PageError(400, "Invalid filter", f"unknown report state {state!r}")
    if authority and authority not in AUTHORITIES:
        raise PageError(400, "Invalid filter", f"unknown authority {authority!r}")
    rs = ctx.rt.reports
    rows = rs.list(state=state or None, limit=500)
    rows = [r for r in rows if not authority or r.authority == authority]
    reported = {r.case_id for r in rs.list(limit=5000)}
    confirmed = ctx.rt.review.list_cases(ctx.viewer, states=(CONFIRMED,), limit=200)
    now = _now()
    waiting = [
        (c, age_text(max(now - c.decided_at, timedelta(0))) if c.decided_at else "-")
        for c in confirmed
        if c.id not in reported
    ]
    return render(
        "reports.html",
        ctx,
        rows=[(r, age_text(r.age(now))) for r in rows],
        waiting=waiting,
        state=state,
        authority=authority,
        states=STATES,
        authorities=AUTHORITIES,
    )


def _report_page(ctx: Ctx, report_id: int, *, notice: str = "") -> Response:
    rs = ctx.rt.reports
    report = rs.get(report_id)
    ncmec = report.authority == AUTHORITY_NCMEC
    # An NCA report's document is its export (audited by the store as report.export).
    xml = rs.report_xml(report_id).decode() if ncmec else None
    audit_view(ctx.rt, ctx.actor, report, ctx.remote_addr)
    siblings = _case_reports(ctx, report.case_id).values()
    return render(
        "report.html",
        ctx,
        report=report,
        siblings=[r for r in siblings if r.id != report.id],
        age=age_text(report.age(_now())),
        xml=xml,
        notice=notice,
        can_retry=ncmec and report.state == State.FAILED and not report.external_id,
        can_retract=report.state not in (State.FINISHED, State.RETRACTING, State.RETRACTED),
        can_send=ncmec and report.state in (State.DRAFTED, State.SUBMITTED, State.FILES_UPLOADED),
        nca=report.authority == AUTHORITY_NCA,
        can_reference=report.authority == AUTHORITY_NCA and report.state == State.DRAFTED,
    )


@router.get("/reports/{report_id}")
def report_view(ctx: Reporter, report_id: int, done: str = "") -> Response:
    notice = {"drafted": "Report drafted; the worker sends it.", "sent": "Send attempted."}
    return _report_page(ctx, _id(report_id), notice=notice.get(done, ""))


@router.post("/reports/{report_id}/retry")
def report_retry(ctx: ReporterAction, report_id: int) -> Response:
    ctx.rt.reports.retry(_id(report_id), actor=ctx.actor)
    return redirect(f"/reports/{report_id}")


@router.post("/reports/{report_id}/retract")
def report_retract(
    ctx: ReporterAction, report_id: int, reason: Annotated[str, Form(max_length=2000)] = ""
) -> Response:
    ctx.rt.reports.retract(_id(report_id), actor=ctx.actor, reason=reason)
    return redirect(f"/reports/{report_id}")


@router.get("/reports/{report_id}/export")
def report_export(
    ctx: Reporter, report_id: int, fmt: Annotated[str, Query(max_length=8)] = "json"
) -> Response:
    """An NCA report as JSON or PDF for the NCA portal (no media in either)."""
    if fmt not in EXPORT_TYPES:
        raise PageError(400, "Invalid format", "format must be json or pdf")
    data = ctx.rt.reports.nca_export(_id(report_id), fmt, actor=ctx.actor)
    name = f"nca-report-{report_id}.{fmt}"
    return Response(
        data,
        media_type=EXPORT_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/reports/{report_id}/reference")
def report_reference(
    ctx: ReporterAction, report_id: int, reference: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    """The reference the NCA portal gave: the report is finished."""
    ctx.rt.reports.record_nca_reference(_id(report_id), reference, actor=ctx.actor)
    return redirect(f"/reports/{report_id}")


@router.post("/reports/{report_id}/send")
def report_send(ctx: ReporterAction, report_id: int) -> Response:
    send_now(ctx.rt, _id(report_id), actor=ctx.actor)
    return redirect(f"/reports/{report_id}?done=sent")


# -- drafting from a case --------------------------------------------------------------------


def _lines(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.splitlines() if p.strip())


def _case_reports(ctx: Ctx, case_id: int) -> dict[str, Report]:
    """The case's reports by jurisdiction code (US first)."""
    found = {code: ctx.rt.reports.for_case(case_id, a) for code, a in JURISDICTIONS.items()}
    return {code: r for code, r in found.items() if r is not None}


def _form_page(
    ctx: Ctx,
    case: Case,
    *,
    values: dict[str, str] | None = None,
    xml: str | None = None,
    error: PageError | None = None,
    note: str = "",
) -> Response:
    values = values or {}
    if case.subject == ACCOUNT and not values.get("incident_type"):
        # A confirmed account case is online enticement, whether grooming or sextortion.
        values = {
            **values,
            "incident_type": ACCOUNT_INCIDENT_TYPES.get(
                case.classification or "", ACCOUNT_INCIDENT_TYPE
            ),
        }
    return render(
        "report_form.html",
        ctx,
        status=error.status if error else 200,
        case=case,
        values=values,
        checked=values.get("jurisdictions", "US").split(","),
        existing=_case_reports(ctx, case.id),
        incident_types=INCIDENT_TYPES,
        priorities=[(p, PRIORITY_MEANING[p]) for p in PRIORITIES],
        environment=getattr(ctx.rt.settings, "ncmec_environment", "test"),
        xml=xml,
        error=error,
        note=note,
    )


@router.get("/cases/{case_id}/report")
def report_form(ctx: Reporter, case_id: int) -> Response:
    """The drafting form; once the case has a report for every authority, its report."""
    case = ctx.rt.review.get_case(ctx.viewer, _id(case_id))
    existing = _case_reports(ctx, case.id)
    if len(existing) == len(JURISDICTIONS):
        return redirect(f"/reports/{next(iter(existing.values())).id}")
    if case.state != CONFIRMED:
        raise PageError(409, "Not possible now", "Only a confirmed case is reported.")
    return _form_page(ctx, case)


@router.post("/cases/{case_id}/report")
def report_submit(
    ctx: ReporterAction,
    case_id: int,
    incident_type: Annotated[str, Form(max_length=200)] = "",
    first_name: Annotated[str, Form(max_length=200)] = "",
    last_name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=200)] = "",
    phone: Annotated[str, Form(max_length=200)] = "",
    escalation_reason: Annotated[str, Form(max_length=3000)] = "",
    additional_info: Annotated[str, Form(max_length=5000)] = "",
    screen_name: Annotated[str, Form(max_length=1000)] = "",
    web_urls: Annotated[str, Form(max_length=20_000)] = "",
    jurisdiction: Annotated[list[str] | None, Form(max_length=2)] = None,
    nca_priority: Annotated[str, Form(max_length=8)] = "",
    nca_detection_method: Annotated[str, Form(max_length=500)] = "",
    nca_email: Annotated[str, Form(max_length=320)] = "",
    nca_phone: Annotated[str, Form(max_length=500)] = "",
    nca_profile_url: Annotated[str, Form(max_length=2000)] = "",
    nca_login_ips: Annotated[str, Form(max_length=20_000)] = "",
    nca_related_accounts: Annotated[str, Form(max_length=20_000)] = "",
    preview: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """One submit drafts the reports the checked jurisdictions need (US, NCMEC: the default;
    UK, NCA) in one transaction; a report the case has already is kept. "Preview"
    (``preview=1``) shows the NCMEC document that would be sent and stores nothing."""
    case = ctx.rt.review.get_case(ctx.viewer, _id(case_id))
    selected = [j for j in JURISDICTIONS if j in (jurisdiction or ["US"])]
    values = {
        "incident_type": incident_type,
        "first_name": first_name,
        "last_name": last_name,
        "email": email,
        "phone": phone,
        "escalation_reason": escalation_reason,
        "additional_info": additional_info,
        "screen_name": screen_name,
        "web_urls": web_urls,
        "jurisdictions": ",".join(selected),
        "nca_priority": nca_priority,
        "nca_detection_method": nca_detection_method,
        "nca_email": nca_email,
        "nca_phone": nca_phone,
        "nca_profile_url": nca_profile_url,
        "nca_login_ips": nca_login_ips,
        "nca_related_accounts": nca_related_accounts,
    }
    if not selected or len(selected) != len(set(jurisdiction or ["US"])):
        error = PageError(400, "Invalid report", "choose US, UK or both")
        return _form_page(ctx, case, values=values, error=error)
    existing = _case_reports(ctx, case.id)
    missing = {j for j in selected if j not in existing}
    if not missing:  # posted again: nothing changes
        return redirect(f"/reports/{existing[selected[0]].id}")
    try:
        data = None
        if "US" in missing:
            data = DraftInput(
                incident_type=incident_type,
                first_name=first_name.strip(),
                last_name=last_name.strip(),
                email=email.strip(),
                phone=blank_to_none(phone),
                escalation_reason=blank_to_none(escalation_reason),
                additional_info=blank_to_none(additional_info),
                screen_name=blank_to_none(screen_name),
                web_urls=_lines(web_urls),
            )
            data.check()
        nca = None
        if "UK" in missing:
            nca = NcaInput(
                priority=nca_priority,
                detection_method=nca_detection_method.strip(),
                summary=additional_info.strip(),
                user_name=blank_to_none(screen_name),
                email=blank_to_none(nca_email),
                phone=blank_to_none(nca_phone),
                profile_url=blank_to_none(nca_profile_url),
                login_ips=_lines(nca_login_ips),
                related_accounts=_lines(nca_related_accounts),
            )
            nca.check(case)
        if preview:
            if data is None:
                note = (
                    "Only the US (NCMEC) document has a preview; the NCA export follows drafting."
                )
                return _form_page(ctx, case, values=values, note=note)
            xml = preview_xml(case, data, nca).decode()
            return _form_page(ctx, case, values=values, xml=xml)
        if nca is None:
            reports = [draft(ctx.rt, case, data, actor=ctx.actor)]  # type: ignore[arg-type]
        else:
            reports = draft_jurisdictions(ctx.rt, case, missing, data, nca, actor=ctx.actor)
    except (ReportInputError, InvalidInput) as exc:
        error = PageError(400, "Invalid report", str(exc))
        return _form_page(ctx, case, values=values, error=error)
    return redirect(f"/reports/{reports[0].id}?done=drafted")


# -- CyberTipline login ----------------------------------------------------------------------


def _ncmec_page(ctx: Ctx, *, error: str = "", saved: bool = False, status: int = 200) -> Response:
    s = ctx.rt.settings
    creds = ctx.rt.reports.credentials()
    env_override = bool(getattr(s, "ncmec_username", None) and getattr(s, "ncmec_password", None))
    return render(
        "admin/ncmec.html",
        ctx,
        status=status,
        creds=creds,
        env_override=env_override,
        env_url=getattr(s, "ncmec_url", None),
        environment=getattr(s, "ncmec_environment", "test"),
        environments=ENVIRONMENTS,
        error=error,
        saved=saved,
    )


@router.get("/admin/ncmec")
def ncmec(ctx: Admin, saved: int = 0) -> Response:
    return _ncmec_page(ctx, saved=bool(saved))


@router.post("/admin/ncmec")
def save_ncmec(
    ctx: AdminAction,
    username: Annotated[str, Form(max_length=255)],
    password: Annotated[str, Form(max_length=1024)],
    environment: Annotated[str, Form(max_length=16)],
    url: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    try:
        ctx.rt.reports.set_credentials(
            blank_to_none(url), username.strip(), password, actor=ctx.actor, environment=environment
        )
    except InvalidInput as exc:
        return _ncmec_page(ctx, error=str(exc), status=400)
    return redirect("/admin/ncmec?saved=1")

"""``/v1/reports``: mandatory reports of confirmed cases for API clients (scope ``report``).

A report is drafted from a case, and reading the case is review's business, which knows console
roles only: a key with the ``report`` scope reads the case as an admin-like viewer named
``key:<name>`` (its ``case.view`` audit rows say ``user:key:<name>``). The report calls
themselves are audited by :class:`bastion.reports.store.ReportStore` with actor ``key:<name>``.
Only a ``confirmed`` case can be reported, so four-eyes (when the policy asks for it) has
already been applied by the review flow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import require
from bastion.api.openapi import JSON_INT_MAX, NO_NUL, IdPath, whole_int
from bastion.api.problems import AUTH_RESPONSES, Problem, problem_for, problem_responses
from bastion.http_auth import Principal, client_address
from bastion.reports.drafting import (
    AUTHORITIES,
    STATES,
    DraftInput,
    NcaInput,
    audit_view,
    draft,
    draft_jurisdictions,
)
from bastion.reports.errors import ReportConflict
from bastion.reports.model import (
    AUTHORITY_NCMEC,
    INCIDENT_TYPES,
    Report,
    ReportInputError,
)
from bastion.review import CaseNotFound, Forbidden, Viewer
from bastion.runtime import RuntimeDep
from bastion.store import StoreError

if TYPE_CHECKING:
    pass

#: Non-blank text without NUL (the report fields a person must fill in).
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"
#: What a US (NCMEC) draft must carry.
US_REQUIRED = ["incident_type", "first_name", "last_name", "email"]
SCOPE = "report"
router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=AUTH_RESPONSES)
#: A valid key holding the ``report`` scope (``admin`` implies it).
report_key = require(SCOPE)
#: The errors each route can answer with, for the OpenAPI document (clients and fuzz tests).
_LIST = problem_responses(422, 503)
_ONE = problem_responses(404, 422, 503)
_ACT = problem_responses(404, 409, 422, 503)
_BODY = problem_responses(400, 404, 409, 422, 503)
ReportKey = Annotated[Principal, Depends(report_key)]


class FileOut(BaseModel):
    item_id: int
    position: int
    state: str
    external_id: str | None


class ReportOut(BaseModel):
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
    submitted_at: datetime | None
    finished_at: datetime | None
    retracted_at: datetime | None
    age_seconds: int | None = Field(
        description="From confirmation until reported (until now while unreported)"
    )
    files: list[FileOut]
    held: bool = Field(
        description="A draft the service made itself (a confirmed account case's): the worker "
        "leaves it until a person sends it (the console's Send now)"
    )


class DraftOut(ReportOut):
    reports: list[ReportOut] = Field(
        description="Every report of this draft, US (NCMEC) first; the top-level fields are "
        "the first of them"
    )


class NcaIn(BaseModel):
    """The UK (NCA) report's own fields; the rest is shared with the NCMEC report."""

    model_config = ConfigDict(extra="forbid")

    priority: Literal["P1", "P2", "P3"]
    detection_method: str = Field(min_length=1, max_length=500, pattern=NOT_BLANK)
    summary: str | None = Field(
        default=None,
        max_length=5000,
        pattern=NO_NUL,
        description="Bland and factual; default additional_info",
    )
    # The NCA account's own checks (bastion.reports.nca), stated here so the document says them.
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^\x00]*@[^\x00]*$")
    phone: str | None = Field(default=None, max_length=500, pattern=NO_NUL)
    profile_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://[^\x00]*$")
    login_ips: list[IPv4Address | IPv6Address] = Field(default_factory=list, max_length=100)
    related_accounts: list[Annotated[str, Field(min_length=1, max_length=500, pattern=NO_NUL)]] = (
        Field(
            default_factory=list, max_length=100, description="Account ids linked to the uploader"
        )
    )


def _us_only() -> list[Literal["US", "UK"]]:
    return ["US"]


class DraftIn(BaseModel):
    # What the route checks across fields, stated in the document: US (the default) needs the
    # reporting person and the incident type; `nca` goes with UK and only with UK.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "anyOf": [
                            {"not": {"required": ["jurisdictions"]}},
                            {"properties": {"jurisdictions": {"contains": {"const": "US"}}}},
                        ]
                    },
                    "then": {
                        "required": [*US_REQUIRED],
                        "properties": {f: {"type": "string"} for f in US_REQUIRED},
                    },
                },
                {
                    "if": {
                        "required": ["jurisdictions"],
                        "properties": {"jurisdictions": {"contains": {"const": "UK"}}},
                    },
                    # UK needs a summary: the nca object's, else additional_info.
                    "then": {
                        "required": ["nca"],
                        "properties": {"nca": {"type": "object"}},
                        "anyOf": [
                            {
                                "properties": {
                                    "nca": {
                                        "required": ["summary"],
                                        "properties": {
                                            "summary": {"type": "string", "pattern": NOT_BLANK}
                                        },
                                    }
                                }
                            },
                            {
                                "required": ["additional_info"],
                                "properties": {
                                    "additional_info": {"type": "string", "pattern": NOT_BLANK}
                                },
                            },
                        ],
                    },
                    "else": {"properties": {"nca": {"type": "null"}}},
                },
            ]
        },
    )

    case_id: whole_int(1, JSON_INT_MAX)  # type: ignore[valid-type]
    jurisdictions: list[Literal["US", "UK"]] = Field(
        default_factory=_us_only,
        min_length=1,
        max_length=2,
        description="US drafts the NCMEC report, UK the NCA report (needs `nca`); both are "
        "drafted in one transaction and a report that exists already is kept",
    )
    nca: NcaIn | None = None
    incident_type: str | None = Field(
        default=None,
        description="Required for US: NCMEC's incident type, one of the listed strings",
        json_schema_extra={"enum": [*INCIDENT_TYPES, None]},
    )
    first_name: str | None = Field(
        default=None,
        max_length=200,
        pattern=NOT_BLANK,
        description="Required for US: the reporting person at the ESP",
    )
    last_name: str | None = Field(
        default=None, max_length=200, pattern=NOT_BLANK, description="Required for US"
    )
    email: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[^\x00]*@[^\x00]*$",
        description="Required for US: the reporting person's email address",
    )
    phone: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    escalation_reason: str | None = Field(default=None, max_length=3000, pattern=NO_NUL)
    additional_info: str | None = Field(default=None, max_length=5000, pattern=NO_NUL)
    service_info: str | None = Field(default=None, max_length=5000, pattern=NO_NUL)
    screen_name: str | None = Field(default=None, max_length=1000, pattern=NO_NUL)
    web_urls: list[Annotated[str, Field(max_length=2000, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=100
    )


class RetractIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


def _out(r: Report) -> ReportOut:
    age = r.age(datetime.now(UTC))
    return ReportOut(
        **{k: getattr(r, k) for k in ReportOut.model_fields if k not in ("age_seconds", "files")},
        age_seconds=None if age is None else int(age.total_seconds()),
        files=[FileOut(**{k: getattr(f, k) for k in FileOut.model_fields}) for f in r.files],
    )


_ERRORS = (StoreError, ReportInputError, CaseNotFound, Forbidden)


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except _ERRORS as exc:
        raise problem_for(exc) from None


def _valid_id(report_id: int) -> int:
    if not 0 < report_id <= 2**63 - 1:
        raise Problem(404, "Not found", detail=f"no report {report_id}")
    return report_id


@router.get("", response_model=list[ReportOut], responses=_LIST)
async def list_reports(
    request: Request,
    rt: RuntimeDep,
    key: ReportKey,
    state: Annotated[
        str | None, Query(description="The report's state", json_schema_extra={"enum": STATES})
    ] = None,
    authority: Annotated[
        str | None, Query(description="ncmec or nca", json_schema_extra={"enum": AUTHORITIES})
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ReportOut]:
    # The document lists both sets (json_schema_extra); this check keeps the precise message.
    if state is not None and state not in STATES:
        raise Problem(422, "Invalid request", detail=f"state must be one of {', '.join(STATES)}")
    if authority is not None and authority not in AUTHORITIES:
        raise Problem(422, "Invalid request", detail=f"authority must be one of {AUTHORITIES}")
    rows = await _call(rt.reports.list, state=state, limit=limit)
    return [_out(r) for r in rows if authority is None or r.authority == authority]


@router.post("", response_model=DraftOut, status_code=201, responses=_BODY)
async def create_report(
    request: Request, rt: RuntimeDep, key: ReportKey, body: DraftIn
) -> DraftOut:
    """Draft the reports of a confirmed case: NCMEC (``US``, the default; the worker sends
    it) and/or the NCA (``UK``, exported for the portal). US alone answers 409 when the case
    has its report; with UK, reports that exist are kept and returned. The answer is the first
    report, with all of them in ``reports`` (US first)."""
    codes = set(body.jurisdictions)
    if ("UK" in codes) != (body.nca is not None):
        raise Problem(422, "Invalid request", detail="the nca object goes with jurisdiction UK")
    data = None
    if "US" in codes:
        need = (body.incident_type, body.first_name, body.last_name, body.email)
        if any(v is None for v in need):
            detail = "incident_type, first_name, last_name and email are required for US"
            raise Problem(422, "Invalid request", detail=detail)
        data = DraftInput(
            incident_type=body.incident_type or "",
            first_name=body.first_name or "",
            last_name=body.last_name or "",
            email=body.email or "",
            phone=body.phone,
            escalation_reason=body.escalation_reason,
            additional_info=body.additional_info,
            service_info=body.service_info,
            screen_name=body.screen_name,
            web_urls=tuple(body.web_urls),
        )
    nca = None
    if body.nca is not None:
        n = body.nca
        nca = NcaInput(
            priority=n.priority,
            detection_method=n.detection_method,
            summary=n.summary or body.additional_info or "",
            user_name=body.screen_name,
            email=n.email,
            phone=n.phone,
            profile_url=n.profile_url,
            login_ips=tuple(str(ip) for ip in n.login_ips),
            related_accounts=tuple(n.related_accounts),
        )
    viewer = Viewer(f"key:{key.name}", "admin")
    actor = f"key:{key.name}"

    def run() -> list[Report]:
        if data is not None:
            data.check()
        case = rt.review.get_case(viewer, body.case_id)
        if nca is None:
            return [draft(rt, case, data, actor=actor)]  # type: ignore[arg-type]
        nca.check(case)
        return draft_jurisdictions(rt, case, codes, data, nca, actor=actor)

    reports = [_out(r) for r in await _call(run)]
    return DraftOut(**reports[0].model_dump(), reports=reports)


@router.get("/{report_id}", response_model=ReportOut, responses=_ONE)
async def get_report(rt: RuntimeDep, key: ReportKey, report_id: IdPath) -> ReportOut:
    return _out(await _call(rt.reports.get, _valid_id(report_id)))


@router.get(
    "/{report_id}/xml",
    response_class=Response,
    responses={
        200: {"content": {"application/xml": {}}, "description": "The report document"},
        **_ACT,
    },
)
async def report_xml(
    request: Request, rt: RuntimeDep, key: ReportKey, report_id: IdPath
) -> Response:
    """The stored report document (no media; files are described after upload). Audited."""

    rs = rt.reports

    def run() -> bytes:
        report = rs.get(_valid_id(report_id))
        if report.authority != AUTHORITY_NCMEC:
            raise ReportConflict("only an NCMEC report has a report XML")
        xml = rs.report_xml(report.id)
        audit_view(rt, f"key:{key.name}", report, client_address(request, rt.settings))
        return xml

    return Response(await _call(run), media_type="application/xml")


@router.post("/{report_id}/retry", response_model=ReportOut, responses=_ACT)
async def retry_report(rt: RuntimeDep, key: ReportKey, report_id: IdPath) -> ReportOut:
    """A failed report that the authority never opened goes back to ``drafted``."""
    rs = rt.reports
    return _out(await _call(rs.retry, _valid_id(report_id), actor=f"key:{key.name}"))


@router.post("/{report_id}/retract", response_model=ReportOut, responses=_BODY)
async def retract_report(
    rt: RuntimeDep, key: ReportKey, report_id: IdPath, body: RetractIn
) -> ReportOut:
    """Withdraw an unfinished report (at the authority when it holds it)."""
    rs = rt.reports
    result = await _call(
        rs.retract, _valid_id(report_id), actor=f"key:{key.name}", reason=body.reason
    )
    return _out(result)


__all__ = ["SCOPE", "report_key", "router"]

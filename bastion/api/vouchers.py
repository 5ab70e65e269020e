"""API for end-to-end encrypted messaging: pdata, safety vouchers, message franking.

The platform's backend holds an API key with the ``vouchers`` scope: it fetches pdata (and its
root) for its apps, relays the vouchers that travel beside messages, asks for franking tags when
it relays a message, and forwards user reports. Building pdata and looking at openings need
``admin``. Nothing here tells the platform whether a voucher matched: vouchers are queued and
opened later by the worker (so not even the response time depends on it), and openings go to
human review only.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from bastion.api.auth import require
from bastion.api.openapi import NO_NUL, IdPath
from bastion.api.problems import AUTH_RESPONSES, Problem, problem_for, problem_responses
from bastion.http_auth import Principal, client_address
from bastion.psi import Report, ReportRejected
from bastion.psi.records import NoTable
from bastion.psi.store import VoucherStore
from bastion.runtime import RuntimeDep
from bastion.store import BankNotFound, InvalidInput

router = APIRouter(prefix="/v1", responses=AUTH_RESPONSES, tags=["e2ee"])

_admin_key = require("admin")
#: Longest base64 voucher accepted (a 1 MiB derivative budget, plus probes, fits).
MAX_VOUCHER_CHARS = 2_000_000
MAX_REPORT_CHARS = 24 * 2**20


#: A key with the ``vouchers`` scope (``admin`` implies it).
_vouchers_key = require("vouchers")

VouchersKey = Annotated[Principal, Depends(_vouchers_key)]
AdminKey = Annotated[Principal, Depends(_admin_key)]


_NO_TABLE = "no pdata table yet: request one (POST /v1/pdata); a worker builds it (bastion worker)"


class TableOut(BaseModel):
    root: str = Field(description="SHA-256 root of the table: pin it, publish it, audit it.")
    created_at: datetime
    bytes: int
    params: dict[str, int]
    stats: dict[str, Any]
    banks: list[str] | None = Field(None, description="Banks it was built from (null: all).")


class BuildIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    banks: list[str] | None = Field(None, max_length=1000)


class BuildOut(BaseModel):
    id: int
    state: str = Field(description="pending, building, done or failed.")
    banks: list[str] | None = Field(None, description="Banks to build from (null: all).")
    params: dict[str, int]
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    progress: float = Field(description="Share of the table's slots filled (0-1).")
    root: str | None = Field(None, description="The published table's root, once done.")
    error: str | None = None


class VoucherIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: str = Field(
        ...,
        min_length=1,
        max_length=128,
        description="The sender, as the platform authenticated them (not as the voucher says). "
        "A voucher sealed for another account is refused.",
    )
    voucher: str = Field(..., max_length=MAX_VOUCHER_CHARS, description="Base64 voucher.")


class VouchersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vouchers: list[VoucherIn] = Field(..., min_length=1, max_length=10_000)


class VoucherResult(BaseModel):
    index: int
    status: int = Field(
        description="202 queued; 422 refused (malformed, unknown table, stale epoch, or sealed "
        "for another account than its sender); 429 its account is over the hourly limit."
    )
    error: str | None = Field(None, description="invalid, account_mismatch or rate_limited.")
    detail: str | None = None
    retry_after: int | None = Field(None, description="Seconds, for 429.")


class VouchersOut(BaseModel):
    accepted: int = Field(description="Vouchers queued; never which matched (not known yet).")
    refused: int
    results: list[VoucherResult] = Field(description="One per voucher, in request order.")


class TagIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    commitment: str = Field(..., pattern=r"^[0-9a-fA-F]{64}$")
    sender: str = Field(..., min_length=1, max_length=255, pattern=r"^[^\x00]*$")
    recipient: str = Field(..., min_length=1, max_length=255, pattern=r"^[^\x00]*$")


class TagOut(BaseModel):
    tag: str
    timestamp: int


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(..., max_length=MAX_REPORT_CHARS, description="Base64 message bytes.")
    franking_key: str = Field(..., pattern=r"^[0-9a-fA-F]{64}$")
    commitment: str = Field(..., pattern=r"^[0-9a-fA-F]{64}$")
    tag: str = Field(..., pattern=r"^[0-9a-fA-F]{64}$")
    sender: str = Field(..., min_length=1, max_length=255, pattern=r"^[^\x00]*$")
    recipient: str = Field(..., min_length=1, max_length=255, pattern=r"^[^\x00]*$")
    timestamp: StrictInt = Field(..., ge=0, le=2**40)
    reporter: str = Field(..., min_length=1, max_length=255, pattern=r"^[^\x00]*$")
    context: dict[str, Annotated[str, Field(max_length=512)]] = Field(
        default_factory=dict, max_length=32
    )


class FrankingReportOut(BaseModel):
    id: int
    verified: bool = True
    sender: str
    recipient: str
    sent_at: datetime
    message_sha256: str


class OpenedOut(BaseModel):
    id: int
    account: str
    epoch: int
    item_id: str
    pdq: str
    quality: int
    matches: list[dict[str, Any]]
    media_type: str
    media_size: int
    media_sha256: str
    opened_at: datetime


class HourOut(BaseModel):
    hour: datetime
    accepted: int
    rejected: int


class GroupOut(BaseModel):
    epoch: int
    state: str
    shares: int
    real: int
    synthetic: int
    verified: int
    discarded: int = Field(
        description="Vouchers whose shares decoded but were not kept (failed the re-check)."
    )
    opened_at: datetime | None
    note: str


class AccountOut(BaseModel):
    account: str
    queued: int = Field(description="Vouchers accepted and not yet processed by the worker.")
    hours: list[HourOut]
    epochs: list[GroupOut]


def _table_out(info: Any) -> TableOut:
    return TableOut(
        root=info.root,
        created_at=info.created_at,
        bytes=info.size,
        params=info.params,
        stats=info.stats,
        banks=info.banks,
    )


def _build_out(job: Any) -> BuildOut:
    return BuildOut(
        id=job.id,
        state=job.state,
        banks=job.banks,
        params=job.params,
        requested_by=job.requested_by,
        requested_at=job.requested_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        progress=job.progress,
        root=job.root,
        error=job.error,
    )


@router.get(
    "/pdata",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The table."},
        **problem_responses(404, 503),
    },
)
def get_pdata(request: Request, rt: RuntimeDep, _: VouchersKey) -> Response:
    """The current pdata table (binary). Its root is in the `Bastion-PData-Root` header and the
    ETag; clients must check it against the root they were given (``PData.from_bytes``)."""
    store = rt.vouchers
    info = store.current_table()
    if info is None:
        raise Problem(404, "Not found", detail=_NO_TABLE)
    etag = f'"{info.root}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    try:
        blob = store.table_blob(info.id)
    except NoTable as exc:
        raise Problem(404, "Not found", detail=str(exc)) from None
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"ETag": etag, "Bastion-PData-Root": info.root},
    )


@router.get("/pdata/root", response_model=TableOut, responses=problem_responses(404, 503))
def get_pdata_root(rt: RuntimeDep, _: VouchersKey) -> TableOut:
    """The current table's root, parameters and size."""
    info = rt.vouchers.current_table()
    if info is None:
        raise Problem(404, "Not found", detail=_NO_TABLE)
    return _table_out(info)


@router.post(
    "/pdata",
    response_model=BuildOut,
    status_code=202,
    responses=problem_responses(400, 404, 422, 503),
)
def build_pdata(
    request: Request,
    rt: RuntimeDep,
    response: Response,
    principal: AdminKey,
    body: BuildIn | None = None,
) -> BuildOut:
    """Ask for a new table from the banks' enabled PDQ entries (admin). The build runs in the
    worker process (`bastion worker`, or the one `bastion serve` starts): minutes for millions
    of entries. Follow it at `Location`; the current table is served until it is done, then
    clients pick the new one up on their next fetch (vouchers for the previous few tables are
    still accepted)."""
    store = rt.vouchers
    try:
        job = store.request_build(
            actor=f"key:{principal.name}",
            banks=body.banks if body else None,
            remote_addr=client_address(request, rt.settings),
        )
    except (BankNotFound, InvalidInput, ValueError) as exc:
        raise problem_for(exc) from None
    response.headers["Location"] = f"/v1/pdata/builds/{job.id}"
    return _build_out(job)


@router.get("/pdata/builds", response_model=list[BuildOut], responses=problem_responses(503))
def list_pdata_builds(rt: RuntimeDep, _: AdminKey) -> list[BuildOut]:
    """The latest build jobs, newest first (admin)."""
    return [_build_out(j) for j in rt.vouchers.list_builds()]


@router.get(
    "/pdata/builds/{job_id}", response_model=BuildOut, responses=problem_responses(404, 422, 503)
)
def get_pdata_build(rt: RuntimeDep, job_id: IdPath, _: AdminKey) -> BuildOut:
    """One build job: pending, building (with progress), done (with its root) or failed."""
    job = rt.vouchers.get_build(job_id)
    if job is None:
        raise Problem(404, "Not found", detail=f"no pdata build {job_id}")
    return _build_out(job)


@router.post(
    "/vouchers",
    response_model=VouchersOut,
    status_code=202,
    responses=problem_responses(400, 413, 422, 503),
)
def post_vouchers(
    request: Request, rt: RuntimeDep, body: VouchersIn, principal: VouchersKey
) -> VouchersOut:
    """Queue safety vouchers, each with the sender the platform authenticated. The worker opens
    them later, so the answer (202, and the same body shape) and its timing are the same whether
    or not a voucher matches; an account whose matches cover t distinct listed pictures opens a
    case for human review, never an automatic action. Each voucher gets its own result: one
    sender's malformed, mislabelled or over-the-limit vouchers never refuse another's."""
    store: VoucherStore = rt.vouchers
    limit = int(rt.settings.voucher_max_batch)
    if len(body.vouchers) > limit:
        raise Problem(
            422,
            "Invalid request",
            detail=f"at most {limit} vouchers per request, got {len(body.vouchers)}",
        )
    results: list[VoucherResult | None] = [None] * len(body.vouchers)
    decoded: list[int] = []
    items: list[tuple[str, bytes]] = []
    for i, item in enumerate(body.vouchers):
        try:
            items.append((item.account, base64.b64decode(item.voucher, validate=True)))
        except (binascii.Error, ValueError):
            results[i] = VoucherResult(
                index=i, status=422, error="invalid", detail=f"voucher {i}: not base64"
            )
            continue
        decoded.append(i)
    judged = store.accept(
        items, actor=f"key:{principal.name}", remote_addr=client_address(request, rt.settings)
    )
    for r in judged:
        i = decoded[r.index]
        results[i] = VoucherResult(
            index=i,
            status=r.status,
            error=r.error,
            detail=f"voucher {i}: {r.detail}" if r.detail else None,
            retry_after=r.retry_after,
        )
    out = [r for r in results if r is not None]
    accepted = sum(1 for r in out if r.status == 202)
    return VouchersOut(accepted=accepted, refused=len(out) - accepted, results=out)


@router.get(
    "/vouchers/openings", response_model=list[OpenedOut], responses=problem_responses(422, 503)
)
def get_openings(
    request: Request,
    rt: RuntimeDep,
    principal: AdminKey,
    account: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OpenedOut]:
    """Items opened by threshold crossings, newest first (admin; metadata only, audited)."""
    items = rt.vouchers.openings(account=account, limit=limit)
    rt.audit(request, principal, "voucher.list_openings", account or "*", count=len(items))
    return [OpenedOut(**{k: getattr(i, k) for k in OpenedOut.model_fields}) for i in items]


@router.get(
    "/vouchers/accounts/{account}", response_model=AccountOut, responses=problem_responses(503)
)
def get_account(request: Request, rt: RuntimeDep, account: str, principal: AdminKey) -> AccountOut:
    """An account's hourly voucher counts (rate limit) and per-epoch share state (admin)."""
    store: VoucherStore = rt.vouchers
    hours = [
        HourOut(hour=h.hour, accepted=h.accepted, rejected=h.rejected)
        for h in store.counts(account)
    ]
    queued = store.queued(account)
    epochs = [
        GroupOut(**{k: getattr(g, k) for k in GroupOut.model_fields}) for g in store.groups(account)
    ]
    rt.audit(request, principal, "voucher.inspect", f"account:{account}")
    return AccountOut(account=account, queued=queued, hours=hours, epochs=epochs)


@router.post("/franking/tags", response_model=TagOut, responses=problem_responses(400, 422, 503))
def post_tag(rt: RuntimeDep, body: TagIn, _: VouchersKey) -> TagOut:
    """Bind a message's franking commitment to its sender, recipient and the time now. Call it
    when relaying the message; deliver the tag and timestamp with it."""
    tag, timestamp = rt.vouchers.tag(bytes.fromhex(body.commitment), body.sender, body.recipient)
    return TagOut(tag=tag.hex(), timestamp=timestamp)


@router.post(
    "/franking/reports",
    response_model=FrankingReportOut,
    status_code=201,
    responses=problem_responses(400, 413, 422, 503),
)
def post_report(
    request: Request, rt: RuntimeDep, body: ReportIn, principal: VouchersKey
) -> FrankingReportOut:
    """A user's report of a message they received: verified (what was sent, by whom, when)
    and stored for review, or refused with the reason (422)."""
    try:
        message = base64.b64decode(body.message, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(422, "Invalid request", detail="message: not base64") from None
    report = Report(
        message=message,
        franking_key=bytes.fromhex(body.franking_key),
        commitment=bytes.fromhex(body.commitment),
        tag=bytes.fromhex(body.tag),
        sender=body.sender,
        recipient=body.recipient,
        timestamp=body.timestamp,
    )
    try:
        stored = rt.vouchers.report(
            report,
            reporter=body.reporter,
            actor=f"key:{principal.name}",
            context=body.context,
            remote_addr=client_address(request, rt.settings),
        )
    except ReportRejected as exc:
        raise Problem(422, "Report does not verify", detail=str(exc)) from None
    return FrankingReportOut(
        id=stored.id,
        sender=stored.sender,
        recipient=stored.recipient,
        sent_at=stored.sent_at,
        message_sha256=stored.message_sha256,
    )

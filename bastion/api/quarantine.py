"""Flood quarantine over HTTP: the entries held back from automatic actions for matching more
than their bank's expected rate, and a person's release or dispute of each (docs/banks.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from bastion import pipeline
from bastion.api.auth import require
from bastion.api.problems import AUTH_RESPONSES, problem_for, problem_responses
from bastion.banks.flood import Quarantined
from bastion.http_auth import Principal, client_address
from bastion.runtime import RuntimeDep
from bastion.store import StoreError

router = APIRouter(prefix="/v1", responses=AUTH_RESPONSES, tags=["banks"])
CurateKey = Annotated[Principal, Depends(require("curate"))]
EntryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class QuarantinedOut(BaseModel):
    entry: int
    bank: str
    state: Literal["quarantined", "released", "disputed"]
    matches: int = Field(description="Matches in the hour before it was quarantined.")
    expected_rate: int
    quarantined_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None


class QuarantineResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000, pattern=r"^[^\x00]*$")


def _out(q: Quarantined) -> QuarantinedOut:
    return QuarantinedOut(
        entry=q.entry_id,
        bank=q.bank,
        state=q.state,
        matches=q.matches,
        expected_rate=q.expected_rate,
        quarantined_at=q.quarantined_at,
        resolved_at=q.resolved_at,
        resolved_by=q.resolved_by,
    )


@router.get(
    "/quarantine", response_model=list[QuarantinedOut], responses=problem_responses(422, 503)
)
def list_quarantine(
    rt: RuntimeDep,
    _: CurateKey,
    state: Annotated[
        Literal["quarantined", "released", "disputed", "all"], Query(description="Default: held")
    ] = "quarantined",
) -> list[QuarantinedOut]:
    """Entries quarantined for flooding (newest first, at most 1,000)."""
    return [_out(q) for q in rt.store.quarantined(state=None if state == "all" else state)]


def _resolve(
    outcome: str,
    entry: int,
    body: QuarantineResolveIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal,
) -> QuarantinedOut:
    try:
        done = pipeline.resolve_quarantine(
            rt,
            entry,
            outcome,
            actor=f"key:{who.name}",
            reason=body.reason,
            remote_addr=client_address(request, rt.settings),
        )
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    return _out(done)


@router.post(
    "/quarantine/{entry}/dispute",
    response_model=QuarantinedOut,
    responses=problem_responses(400, 404, 422, 503),
)
def dispute(
    entry: EntryId,
    body: QuarantineResolveIn,
    request: Request,
    rt: RuntimeDep,
    principal: CurateKey,
) -> QuarantinedOut:
    """The entry is wrong for its list (a colliding or poisoned hash): it is disabled and
    leaves every index, and an exchange's entry gets a negative finding for its upstream list;
    audited (``bank.entry.dispute``)."""
    return _resolve("disputed", entry, body, request, rt, principal)


@router.post(
    "/quarantine/{entry}/release",
    response_model=QuarantinedOut,
    responses=problem_responses(400, 404, 422, 503),
)
def release(
    entry: EntryId,
    body: QuarantineResolveIn,
    request: Request,
    rt: RuntimeDep,
    principal: CurateKey,
) -> QuarantinedOut:
    """The entry is right and the burst was real: it acts again and its count starts over;
    audited (``bank.entry.release``)."""
    return _resolve("released", entry, body, request, rt, principal)

"""``/v1/exchanges``: see how hash-list exchanges fare and ask for a sync (scope ``exchange``).

Web request workers never sync: ``POST /v1/exchanges/{name}/sync`` only marks the exchange due
(``ExchangeStore.request_sync``), and the worker's exchange loop runs it on its next pass. Adding
an exchange, and anything that touches its credentials, stays on the command line (``bastion
exchange add``, ``set-credentials``): secrets never travel through this API, and no answer
carries them (``has_credentials`` says only whether there are some).
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from bastion.api.auth import require
from bastion.api.problems import AUTH_RESPONSES, Problem, problem_for, problem_responses
from bastion.http_auth import Principal
from bastion.runtime import RuntimeDep
from bastion.store import StoreError

SCOPE = "exchange"
router = APIRouter(prefix="/v1/exchanges", tags=["exchanges"], responses=AUTH_RESPONSES)
ExchangeKey = Annotated[Principal, Depends(require(SCOPE))]
_LIST = problem_responses(503)
_ONE = problem_responses(404, 422, 503)
_ACT = problem_responses(404, 409, 422, 503)
_BODY = problem_responses(400, 404, 409, 422, 503)


class ExchangeOut(BaseModel):
    """An exchange's settings and health. Never its credentials."""

    name: str
    kind: str
    bank: str = Field(description="The bank this exchange feeds (and owns).")
    enabled: bool
    state: str = Field(description="idle, syncing, error or stalled.")
    config: dict[str, Any] = Field(description="Non-secret settings of its kind.")
    has_credentials: bool
    interval_seconds: float
    on_delete: str = Field(description="What an upstream deletion does here: disable or remove.")
    vouch_group: str | None
    min_vouchers: int
    send_feedback: bool
    checkpoint: dict[str, Any] | None = Field(description="Where the next sync resumes.")
    last_sync_at: datetime | None
    last_success_at: datetime | None
    next_sync_at: datetime | None
    last_error: str | None
    failures: int = Field(description="Consecutive failed syncs.")
    totals: dict[str, int] = Field(description="added, updated, removed, disabled, poisoned.")
    created_at: datetime
    updated_at: datetime


class ExchangeStatus(ExchangeOut):
    runs: list[dict[str, Any]] = Field(description="Recent syncs, newest first.")
    errors: list[dict[str, Any]] = Field(description="Recent poisoned records and pages.")
    attestations: list[dict[str, Any]] = Field(
        description="Recent checks of the whole list against the partner's stated root."
    )
    feedback: dict[str, int] = Field(
        description="Recent feedback rows counted by `verdict:state` (the last 1000)."
    )


class ExchangePatch(BaseModel):
    """What an ``exchange`` key may change: whether it runs, and how often."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    interval_seconds: float | None = Field(None, ge=1, le=366 * 86400)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _record(obj: Any) -> dict[str, Any]:
    doc = asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else dict(vars(obj))
    return _plain(doc)


def _out(info: Any) -> dict[str, Any]:
    return {name: getattr(info, name) for name in ExchangeOut.model_fields}


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc


@router.get("", response_model=list[ExchangeOut], responses=_LIST)
def list_exchanges(rt: RuntimeDep, _: ExchangeKey) -> list[dict[str, Any]]:
    """Every exchange with its state, last sync and totals."""
    return [_out(i) for i in _call(rt.exchanges.list)]


@router.get("/{name}", response_model=ExchangeStatus, responses=_ONE)
def exchange_status(name: str, rt: RuntimeDep, _: ExchangeKey) -> dict[str, Any]:
    """One exchange in full: checkpoint, last error, recent runs, poisoned records,
    attestations and feedback counts."""
    xs = rt.exchanges
    info = _call(xs.get, name)
    counts: dict[str, int] = {}
    for r in _call(xs.feedback, name, limit=1000):
        key = f"{r.verdict}:{r.state}"
        counts[key] = counts.get(key, 0) + 1
    return {
        **_out(info),
        "runs": [_record(r) for r in _call(xs.runs, name, limit=10)],
        "errors": [_record(e) for e in _call(xs.errors, name, limit=10)],
        "attestations": [_record(a) for a in _call(xs.attestations, name, limit=10)],
        "feedback": dict(sorted(counts.items())),
    }


@router.get("/{name}/errors", response_model=list[dict[str, Any]], responses=_ONE)
def exchange_errors(
    name: str,
    rt: RuntimeDep,
    _: ExchangeKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """Poisoned records and pages, newest first: checkpoint, key, error and a short excerpt."""
    xs = rt.exchanges
    return [_record(e) for e in _call(xs.errors, name, limit=limit)]


@router.post("/{name}/sync", response_model=ExchangeOut, status_code=202, responses=_ACT)
def request_sync(name: str, rt: RuntimeDep, principal: ExchangeKey) -> dict[str, Any]:
    """Ask for a sync as soon as the worker can (``next_sync_at`` becomes now); 202 at once.
    A disabled exchange is a 409: enable it first."""
    xs = rt.exchanges
    if not _call(xs.get, name).enabled:
        raise Problem(409, "Conflict", detail=f"exchange {name!r} is disabled; enable it first")
    return _out(_call(xs.request_sync, name, actor=f"key:{principal.name}"))


@router.patch("/{name}", response_model=ExchangeOut, responses=_BODY)
def update_exchange(
    name: str, body: ExchangePatch, rt: RuntimeDep, principal: ExchangeKey
) -> dict[str, Any]:
    """Enable or disable an exchange, or change how often it syncs."""
    xs = rt.exchanges
    fields: dict[str, Any] = {}
    if body.enabled is not None:
        fields["enabled"] = body.enabled
    if body.interval_seconds is not None:
        fields["interval"] = body.interval_seconds
    if not fields:
        return _out(_call(xs.get, name))
    return _out(_call(xs.update, name, actor=f"key:{principal.name}", **fields))

"""The contact-decision API (Ofcom ICU F1 safety defaults, F2 supportive prompts).

``POST /v1/contact/decide`` answers, before the platform delivers it, whether ``actor`` may do
``action`` towards ``target``: allow, whether the target confirms first, where it goes (inbox,
requests, spam), the F2 prompts to show and the reasons. The platform sends what it knows at
that moment (both accounts' age bands and how they are known, the defaults a child turned off,
whether the two are connected, their mutual connections, a block); Bastion adds the actor's
stored risk band from the events it was sent (:class:`~bastion.contact.bands.RiskBands`), and
the settings come from the policy's ``contact.decide`` section.

It sits on the send path, so it is fast: no database read per call (risk bands are held in
memory, reloaded at most once a second when the stored risk changed), no write, no audit
record (it returns nothing the caller did not send, except a band's effect), and it runs on
the event loop rather than a worker thread.

``GET /v1/contact/prompts`` is the F2 prompt catalogue (ids, audience, default English text)
for the platform to translate. Both need the ``contact`` scope.
"""

from __future__ import annotations

from typing import Annotated, Literal
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import require
from bastion.api.openapi import whole_int
from bastion.api.problems import AUTH_RESPONSES, problem_responses
from bastion.contact.bands import RiskBands
from bastion.contact.decide import (
    AccountFacts,
    Action,
    ChildDefault,
    Decision,
    Relationship,
    Route,
    decide,
    load_prompts,
)
from bastion.contact.model import AGE_SOURCES, RISK_BANDS, AgeBand, Ident, RiskBand
from bastion.http_auth import Principal
from bastion.runtime import Runtime, RuntimeDep

router = APIRouter(prefix="/v1/contact", responses=AUTH_RESPONSES, tags=["contact"])

ContactKey = Annotated[Principal, Depends(require("contact"))]
AgeSource = Literal["self_declared", "estimated", "verified"]
assert AGE_SOURCES == ("self_declared", "estimated", "verified")

#: One risk-band holder per runtime (so several apps in one process keep their own).
_bands: WeakKeyDictionary[Runtime, RiskBands] = WeakKeyDictionary()


def _no_repeats(value: object) -> object:
    """The document states ``uniqueItems``: a repeated default is refused, not folded."""
    if isinstance(value, list) and len(value) != len({repr(v) for v in value}):
        raise ValueError("each default at most once")
    return value


class AccountIn(BaseModel):
    """One account as the platform knows it at the moment of the decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: Ident = Field(description="The platform's account id.")
    age_band: AgeBand = Field(
        "unknown",
        description="under13, 13-15, 16-17, adult or unknown (see the policy's "
        "contact.decide.unknown_age_as_child).",
    )
    age_source: AgeSource | None = Field(
        None,
        description="How the age is known. Recorded for the caller; the F1 table does "
        "not depend on it.",
    )
    age_confidence: StrictFloat | None = Field(None, ge=0.0, le=1.0)
    relaxed: Annotated[frozenset[ChildDefault], BeforeValidator(_no_repeats)] = Field(
        frozenset(),
        max_length=4,
        description="F1 defaults this (child) account turned off: suggest, show_in_connections, "
        "see_location, message_from_non_connections.",
    )
    risk_band: RiskBand | None = Field(
        None,
        description="The platform's own risk band for this account, if it has one. The actor's "
        "band used is the higher of this and the band Bastion stored from its events.",
    )


class RelationshipIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    connected: StrictBool = False
    mutual_connections: whole_int(0, 1_000_000_000) = 0  # type: ignore[valid-type]
    blocked: StrictBool = Field(False, description="Either account has blocked the other.")


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: AccountIn
    target: AccountIn
    action: Action
    relationship: RelationshipIn = RelationshipIn()


class PromptOut(BaseModel):
    id: str
    audience: Literal["actor", "target"]


class ContactDecisionOut(BaseModel):
    allow: bool
    requires_confirmation: bool
    route_to: Route
    prompts: list[PromptOut]
    reasons: list[str]


class PromptTextOut(BaseModel):
    id: str
    audience: Literal["actor", "target"]
    text: str


class CatalogueOut(BaseModel):
    language: str = "en"
    prompts: list[PromptTextOut]


def risk_bands(rt: Runtime) -> RiskBands:
    bands = _bands.get(rt)
    if bands is None:
        bands = _bands.setdefault(rt, RiskBands(rt.store))
    return bands


def higher(a: RiskBand, b: RiskBand | None) -> RiskBand:
    if b is None:
        return a
    return a if RISK_BANDS.index(a) >= RISK_BANDS.index(b) else b


@router.post(
    "/decide",
    response_model=ContactDecisionOut,
    responses=problem_responses(400, 422),
    summary="May the actor do this to the target? (ICU F1/F2)",
)
async def decide_contact(body: DecideIn, rt: RuntimeDep, _: ContactKey) -> Response:
    """The F1/F2 decision for ``actor`` doing ``action`` towards ``target``. Nothing is stored."""
    bands = risk_bands(rt)
    if bands.due():
        await run_in_threadpool(bands.refresh)
    settings = rt.policy.current().contact.decide
    actor_risk = higher(bands.band(body.actor.account), body.actor.risk_band)
    decision: Decision = decide(
        AccountFacts(body.actor.account, body.actor.age_band, body.actor.relaxed),
        AccountFacts(body.target.account, body.target.age_band, body.target.relaxed),
        Relationship(
            body.relationship.connected,
            body.relationship.mutual_connections,
            body.relationship.blocked,
        ),
        actor_risk,
        body.action,
        settings,
    )
    return Response(decision.model_dump_json(), media_type="application/json")


@router.get("/prompts", response_model=CatalogueOut, summary="The F2 prompt catalogue")
async def prompts(_: ContactKey) -> CatalogueOut:
    """Every prompt id a decision can carry, who sees it and its default English text, for the
    platform to translate (keep every id)."""
    return CatalogueOut(
        prompts=[
            PromptTextOut(id=p.id, audience=p.audience, text=p.text)
            for p in load_prompts().values()
        ]
    )

"""The team view for leads (issue 19, item 13, in part): each reviewer's exposure today and the
breaks they took, so a lead sees who needs one. Admins and senior reviewers only: it is about
people, not cases, and reviewers do not see each other's figures. Reading it is audited
(``team.view``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from bastion.vocab import ADMIN, REVIEWER, SENIOR_REVIEWER
from bastion.web.base import ConsoleRoute, Ctx, page, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

Lead = Annotated[Ctx, Depends(page(ADMIN, SENIOR_REVIEWER))]

#: The audit action a "Take a break" release records (bastion.web.cases.release).
BREAK = "wellbeing.break"


@dataclass(frozen=True)
class TeamRow:
    name: str
    role: str
    exposure: int
    breaks: int


@router.get("/team")
def team(ctx: Lead) -> Response:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    breaks: dict[str, int] = {}
    for e in ctx.rt.store.recent_audit(5000, action=BREAK):
        if e.at >= today:
            who = e.actor.removeprefix("user:")
            breaks[who] = breaks.get(who, 0) + 1
    rows = [
        TeamRow(
            name=u.name,
            role=u.role,
            exposure=int(ctx.rt.accounts.exposure_today(u.name)),
            breaks=breaks.get(u.name, 0),
        )
        for u in ctx.rt.accounts.list_users()
        if u.role in (REVIEWER, SENIOR_REVIEWER, ADMIN) and not u.disabled
    ]
    rows.sort(key=lambda r: (-r.exposure, r.name))
    ctx.rt.store.record_audit(actor=ctx.actor, action="team.view", target="team")
    return render("team.html", ctx, rows=rows, limit=int(ctx.rt.settings.exposure_soft_limit))

"""The search box: cases by case id, content id, uploader, hash or bank entry (issue 19).

Results follow the viewer's queue permissions (``bastion.review.search``); a single case found
by its id opens directly. Searching is audited (``case.search``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from bastion.review.search import search_cases
from bastion.web.base import REVIEWERS, ConsoleRoute, Ctx, page, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

Reviewer = Annotated[Ctx, Depends(page(*REVIEWERS))]


@router.get("/search")
def search(ctx: Reviewer, q: Annotated[str, Query(max_length=512)] = "") -> Response:
    found = search_cases(ctx.rt.review, ctx.viewer, q) if q.strip() else []
    return render("search.html", ctx, q=q, found=found)

"""The SDK's exceptions: one base class, and for every HTTP error the server's problem details.

Every error answer of Bastion is an RFC 9457 problem document; :class:`ApiError` carries it
whole (``problem``) and its common members as attributes, and its subclass says what kind of
failure it was, so a caller catches what it can handle (``except CaseLeased``) and lets the rest
through. Case conflicts are told apart by the problem's ``code``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class BastionError(Exception):
    """Anything the SDK raises."""


class TransportError(BastionError):
    """The request did not get an HTTP answer (connection refused, timeout, TLS, ...)."""


class ApiError(BastionError):
    """The server answered with an error status; ``problem`` is its problem document."""

    def __init__(
        self,
        status: int,
        problem: dict[str, Any],
        *,
        method: str = "",
        url: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or "")
        self.type = str(problem.get("type") or "about:blank")
        self.code = problem.get("code") if isinstance(problem.get("code"), str) else None
        self.method = method
        self.url = url
        self.headers = headers or {}
        what = f"{method} {url}: " if method else ""
        said = f": {self.detail}" if self.detail else ""
        super().__init__(f"{what}{status} {self.title}{said}")


class InvalidRequest(ApiError):
    """400 or 422: the request was malformed or invalid; ``errors`` lists the fields when the
    server named them."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        found = self.problem.get("errors")
        return list(found) if isinstance(found, list) else []


class Unauthorized(ApiError):
    """401: no API key, or an unknown, revoked or expired one."""


class Forbidden(ApiError):
    """403: the key lacks the scope, or its user's role or queues do not allow this."""


class NotFound(ApiError):
    """404: no such case, item, bank, entry or report (or no media for the item)."""


class Conflict(ApiError):
    """409: the request conflicts with the current state."""


class CaseLeased(Conflict):
    """Another user holds the case's lease (``holder``) until ``until``."""

    @property
    def holder(self) -> str | None:
        value = self.problem.get("holder")
        return value if isinstance(value, str) else None

    @property
    def until(self) -> datetime | None:
        value = self.problem.get("until")
        try:
            return datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None


class NotLeased(Conflict):
    """Deciding needs a live lease held by the key's user: claim the case first."""


class CaseClosed(Conflict):
    """The case is already decided."""


class RevealRequired(Conflict):
    """The decision needs these items (``items``) revealed by the key's user first."""

    @property
    def items(self) -> list[int]:
        found = self.problem.get("items")
        return [i for i in found if isinstance(i, int)] if isinstance(found, list) else []


class BreakSuggested(Conflict):
    """The user reached the daily soft limit of reveals; reveal again with
    ``continue_past_limit=True`` to go on (audited)."""


class TooLarge(ApiError):
    """413: the upload is over the server's size limit."""


class RateLimited(ApiError):
    """429: the key's rate limit; retry after ``retry_after`` seconds."""

    @property
    def retry_after(self) -> float | None:
        try:
            return float(self.headers.get("retry-after", ""))
        except ValueError:
            return None


class ServerError(ApiError):
    """5xx: the server or its database failed; the request may be retried later."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidRequest,
    429: RateLimited,
}
_BY_CODE: dict[str, type[ApiError]] = {
    "case_leased": CaseLeased,
    "not_leased": NotLeased,
    "case_closed": CaseClosed,
    "reveal_required": RevealRequired,
    "take_a_break": BreakSuggested,
}


def error_for(
    status: int,
    problem: dict[str, Any],
    *,
    method: str = "",
    url: str = "",
    headers: dict[str, str] | None = None,
) -> ApiError:
    """The most specific exception for an error answer."""
    kind: type[ApiError] = ServerError if status >= 500 else _BY_STATUS.get(status, ApiError)
    code = problem.get("code")
    if status == 409 and isinstance(code, str):
        kind = _BY_CODE.get(code, Conflict)
    return kind(status, problem, method=method, url=url, headers=headers)


__all__ = [
    "ApiError",
    "BastionError",
    "BreakSuggested",
    "CaseClosed",
    "CaseLeased",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "NotLeased",
    "RateLimited",
    "RevealRequired",
    "ServerError",
    "TooLarge",
    "TransportError",
    "Unauthorized",
    "error_for",
]

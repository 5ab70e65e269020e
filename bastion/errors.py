"""One table: the HTTP answer to each domain error, for both edges.

The API's problem handler (:func:`bastion.api.problems.problem_for`) answers with ``status`` and
``title`` (and, on the cases API, ``code``); the console (:func:`bastion.web.base.page_error`)
shows the same status, with a title of its own where a person reads it differently and 400
rather than 422 for a form's invalid input (the console tests hold it to that). A new domain
error gets its row here, and both edges know it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bastion.accounts.store import UserExists, UserNotFound
from bastion.actions.outbox import OutboxConflict, OutboxNotFound
from bastion.contact.model import BatchTooLarge
from bastion.contact.store import AccountHeld, EventNotFound, HoldConflict
from bastion.exchanges.registry import ExchangeBusy, ExchangeExists, ExchangeNotFound
from bastion.feeds.store import FeedKeyUnavailable, FeedNotFound, RecordNotFound
from bastion.identity.store import GroupExists, GroupNotFound
from bastion.reports.errors import ReportConflict, ReportDataMissing, ReportExists, ReportNotFound
from bastion.reports.model import ReportInputError
from bastion.review import (
    CaseClosed,
    CaseLeased,
    CaseNotFound,
    DecisionMismatch,
    Forbidden,
    InvalidDecision,
    NoMedia,
    NotLeased,
    PreviewUnavailable,
    RevealRequired,
)
from bastion.store import (
    BankExists,
    BankNotFound,
    EntryNotFound,
    InvalidInput,
    KeyExists,
    KeyNotFound,
    StoreUnavailable,
)

#: The media type of an RFC 9457 problem document (the API's errors, the console's JSON ones).
PROBLEM_JSON = "application/problem+json"
#: What a caller hears when the database fails: the exception's text may name hosts or SQL.
STORE_DOWN = "the database is unavailable; retry later"


@dataclass(frozen=True, slots=True)
class HttpError:
    """How an edge answers one kind of error."""

    status: int
    title: str
    #: The cases API's ``code`` member, for clients to branch on.
    code: str | None = None
    #: Members the problem document adds, from the exception.
    extra: Callable[[Any], dict[str, Any]] | None = None
    #: Say :data:`STORE_DOWN` instead of the exception's own text.
    private: bool = False
    #: The console's title, where it differs from the API's.
    console_title: str | None = None
    #: The console's status, where it differs from the API's.
    console_status: int | None = None

    @property
    def page_status(self) -> int:
        return self.console_status or self.status

    @property
    def page_title(self) -> str:
        return self.console_title or self.title


def _leased(exc: CaseLeased) -> dict[str, Any]:
    return {"holder": exc.holder, "until": exc.until.isoformat()}


def _reveal(exc: RevealRequired) -> dict[str, Any]:
    return {"items": list(exc.item_ids)}


def _reported(exc: ReportExists) -> dict[str, Any]:
    return {"report_id": exc.report_id}


_NOT_FOUND = HttpError(404, "Not found")
_CONFLICT = HttpError(409, "Conflict", console_title="Already exists")
_STORE_DOWN = HttpError(503, "Store unavailable", private=True)

#: Exception type -> its answer. An exception answers with the row of the nearest class in its
#: MRO, so a subclass without a row of its own answers as its base does.
ERRORS: dict[type[BaseException], HttpError] = {
    # the store's core
    BankNotFound: _NOT_FOUND,
    EntryNotFound: _NOT_FOUND,
    KeyNotFound: _NOT_FOUND,
    BankExists: _CONFLICT,
    KeyExists: _CONFLICT,
    InvalidInput: HttpError(
        422, "Invalid request", code="invalid", console_status=400, console_title="Invalid input"
    ),
    StoreUnavailable: _STORE_DOWN,
    SQLAlchemyError: _STORE_DOWN,
    # review
    CaseNotFound: HttpError(404, "Not found", code="not_found"),
    NoMedia: HttpError(404, "Not found", code="no_media", console_title="No media"),
    PreviewUnavailable: HttpError(404, "Not found", code="no_media", console_title="No preview"),
    Forbidden: HttpError(403, "Forbidden", code="forbidden", console_title="Not allowed"),
    CaseLeased: HttpError(409, "Claimed by someone else", code="case_leased", extra=_leased),
    NotLeased: HttpError(409, "Claim the case first", code="not_leased"),
    CaseClosed: HttpError(409, "Case already decided", code="case_closed"),
    RevealRequired: HttpError(409, "Reveal first", code="reveal_required", extra=_reveal),
    DecisionMismatch: HttpError(
        409,
        "Decision does not fit the case",
        code="decision_mismatch",
        console_title="Invalid decision",
    ),
    InvalidDecision: HttpError(
        422, "Invalid request", code="invalid", console_status=400, console_title="Invalid decision"
    ),
    # reports
    ReportNotFound: _NOT_FOUND,
    ReportExists: HttpError(409, "Already reported", extra=_reported),
    ReportConflict: HttpError(409, "Conflict", console_title="Not possible now"),
    ReportDataMissing: HttpError(409, "Conflict", console_title="Report data missing"),
    ReportInputError: HttpError(
        422, "Invalid request", console_status=400, console_title="Invalid report"
    ),
    # exchanges and feeds
    ExchangeNotFound: _NOT_FOUND,
    ExchangeExists: HttpError(409, "Conflict"),
    ExchangeBusy: HttpError(409, "Conflict"),
    FeedNotFound: _NOT_FOUND,
    RecordNotFound: _NOT_FOUND,
    FeedKeyUnavailable: HttpError(503, "Feed signing unavailable"),
    # identity sharing groups
    GroupNotFound: _NOT_FOUND,
    GroupExists: _CONFLICT,
    # contact events
    BatchTooLarge: HttpError(413, "Content Too Large"),
    AccountHeld: HttpError(409, "Under legal hold"),
    EventNotFound: _NOT_FOUND,
    HoldConflict: HttpError(409, "Conflict"),
    # accounts and the outbox (console only)
    UserNotFound: _NOT_FOUND,
    UserExists: _CONFLICT,
    OutboxNotFound: _NOT_FOUND,
    OutboxConflict: HttpError(409, "Conflict", console_title="Cannot retry"),
}


def http_error(exc: BaseException) -> HttpError | None:
    """The row for ``exc`` (its nearest class in :data:`ERRORS`), or None."""
    for kind in type(exc).__mro__:
        row = ERRORS.get(kind)
        if row is not None:
            return row
    return None


def detail(exc: BaseException, row: HttpError) -> str:
    """What the answer says about ``exc``: its message, unless the row keeps it private."""
    return STORE_DOWN if row.private else str(exc)

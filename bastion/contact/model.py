"""The platform events contact safety works from, and their strict validation.

Events carry metadata and flags, never message text: a ``message`` event says who wrote to whom,
when, in which conversation and whether it had media; a ``flag`` event carries the *kind* of a
content-derived indicator (``offplatform_handle``, ``image_request``, ...) that the platform or
Bastion's own text signals computed where the platform may lawfully see content. Any field a
type does not define is refused, so text cannot slip in under another name.

Every event has the platform's own ``event_id`` (a re-sent event is recognised by it and changes
nothing) and the ``time`` it happened (timezone-aware, kept in UTC). :func:`parse_events` takes a
batch of up to :data:`MAX_BATCH` raw objects and returns the events that validated and one
:class:`EventError` per event that did not; a bad event never stops the rest of its batch.

Pure: pydantic and the standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from bastion.vocab import AGE_BANDS, AgeBand

__all__ = [
    "AGE_BANDS",
    "AGE_SOURCES",
    "EVENT_TYPES",
    "FLAG_KINDS",
    "MAX_BATCH",
    "MINOR_BANDS",
    "REPORT_CATEGORIES",
    "RISK_BANDS",
    "AccountEvent",
    "AgeBand",
    "BanEvent",
    "BatchTooLarge",
    "BlockEvent",
    "ConnectionAccept",
    "ConnectionRemove",
    "ConnectionRequest",
    "Event",
    "EventError",
    "FlagEvent",
    "GiftEvent",
    "MessageEvent",
    "PaymentEvent",
    "ProfileChange",
    "ReportEvent",
    "RiskBand",
    "event_to_json",
    "parse_event",
    "parse_events",
]

#: The most events one batch may carry (``POST /v1/events``).
MAX_BATCH = 1000

#: The age bands of children, youngest first (``unknown`` is handled by a setting where used).
MINOR_BANDS: tuple[AgeBand, ...] = ("under13", "13-15", "16-17")

AgeSource = Literal["self_declared", "estimated", "verified"]
AGE_SOURCES: tuple[AgeSource, ...] = ("self_declared", "estimated", "verified")

FlagKind = Literal[
    "offplatform_handle",
    "image_request",
    "secrecy_request",
    "payment_request",
    "meeting_request",
    "threat",
]
FLAG_KINDS: tuple[FlagKind, ...] = (
    "offplatform_handle",
    "image_request",
    "secrecy_request",
    "payment_request",
    "meeting_request",
    "threat",
)

ReportCategory = Literal[
    "grooming", "sextortion", "csam", "harassment", "spam", "impersonation", "other"
]
REPORT_CATEGORIES: tuple[ReportCategory, ...] = (
    "grooming",
    "sextortion",
    "csam",
    "harassment",
    "spam",
    "impersonation",
    "other",
)

AmountBand = Literal["low", "medium", "high"]
ProfileField = Literal[
    "display_name", "photo", "bio", "age_band", "country", "location_sharing", "privacy"
]

#: An account's risk band, lowest first (:mod:`bastion.contact.risk` computes it).
RiskBand = Literal["low", "medium", "high"]
RISK_BANDS: tuple[RiskBand, ...] = ("low", "medium", "high")

EVENT_TYPES = (
    "account",
    "profile_change",
    "ban",
    "connection_request",
    "connection_accept",
    "connection_remove",
    "message",
    "block",
    "report",
    "gift",
    "payment",
    "flag",
)


#: No control character anywhere, no white space at either end. Stated as a pattern so the API
#: document says exactly what is accepted (a validator the schema cannot show would refuse
#: requests the document allows).
_ID_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"

#: A platform identifier (account, event, conversation): opaque, at most 128 characters.
Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=_ID_PATTERN)]
#: A salted hash of a device or identifier the platform saw (never the raw value).
HashValue = Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[0-9A-Za-z_:+/=-]+$")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UTCTime = Annotated[AwareDatetime, AfterValidator(_utc)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    event_id: Ident
    time: UTCTime


class _PairEvent(_Event):
    """An event from one account (``actor``) to or about another (``target``)."""

    actor: Ident
    target: Ident

    @model_validator(mode="after")
    def _two_accounts(self) -> Self:
        if self.actor == self.target:
            raise ValueError("actor and target must be different accounts")
        return self


class AccountEvent(_Event):
    """An account's facts: created, age band (and how it is known), country, device hashes.

    A later ``account`` event for the same account replaces these facts (latest ``time`` wins,
    ties broken by ``event_id``)."""

    type: Literal["account"]
    account: Ident
    created_at: UTCTime | None = None
    age_band: AgeBand = "unknown"
    age_source: AgeSource = "self_declared"
    age_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    country: Country | None = None
    device_hashes: tuple[HashValue, ...] = Field(default=(), max_length=64)
    identifier_hashes: tuple[HashValue, ...] = Field(default=(), max_length=64)


class ProfileChange(_Event):
    """The account changed its profile. Only the changed field *names* are sent, plus the new
    age band or country when those changed, and hashes of devices newly seen."""

    type: Literal["profile_change"]
    account: Ident
    changed: tuple[ProfileField, ...] = Field(min_length=1, max_length=16)
    age_band: AgeBand | None = None
    age_source: AgeSource | None = None
    country: Country | None = None
    device_hashes: tuple[HashValue, ...] = Field(default=(), max_length=64)
    identifier_hashes: tuple[HashValue, ...] = Field(default=(), max_length=64)


class BanEvent(_Event):
    """The platform banned an account (or lifted a ban). Used to spot a banned user returning
    under a new account that shares a device or identifier hash."""

    type: Literal["ban"]
    account: Ident
    lifted: bool = False


class ConnectionRequest(_PairEvent):
    type: Literal["connection_request"]


class ConnectionAccept(_PairEvent):
    """``actor`` accepted ``target``'s request: from now on they are connected."""

    type: Literal["connection_accept"]


class ConnectionRemove(_PairEvent):
    type: Literal["connection_remove"]


class MessageEvent(_PairEvent):
    """A message's metadata only: there is no field for its text (and unknown fields are
    refused). ``first_contact`` is the platform's own view; Bastion recomputes it."""

    type: Literal["message"]
    conversation: Ident
    has_media: bool = False
    first_contact: bool = False


class BlockEvent(_PairEvent):
    type: Literal["block"]


class ReportEvent(_PairEvent):
    """``actor`` reported ``target``."""

    type: Literal["report"]
    category: ReportCategory


class GiftEvent(_PairEvent):
    type: Literal["gift"]
    amount_band: AmountBand = "low"


class PaymentEvent(_PairEvent):
    type: Literal["payment"]
    amount_band: AmountBand = "low"


class FlagEvent(_Event):
    """A content-derived indicator about something ``account`` sent (to ``target`` when it was
    a message). The kind only, never the content."""

    type: Literal["flag"]
    account: Ident
    target: Ident | None = None
    conversation: Ident | None = None
    kind: FlagKind
    source: Literal["platform", "bastion"] = "platform"
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


Event = Annotated[
    AccountEvent
    | ProfileChange
    | BanEvent
    | ConnectionRequest
    | ConnectionAccept
    | ConnectionRemove
    | MessageEvent
    | BlockEvent
    | ReportEvent
    | GiftEvent
    | PaymentEvent
    | FlagEvent,
    Field(discriminator="type"),
]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


class EventError(BaseModel):
    """Why the event at ``index`` of a batch was refused."""

    model_config = ConfigDict(frozen=True)

    index: int
    event_id: str | None = None
    errors: tuple[dict[str, str], ...]


class BatchTooLarge(ValueError):
    """A batch of more than :data:`MAX_BATCH` events (the whole batch is refused)."""


def parse_event(raw: object) -> Event:
    """One event, validated (raises pydantic's ``ValidationError``)."""
    return _EVENT.validate_python(raw)


def _errors(exc: ValidationError) -> tuple[dict[str, str], ...]:
    return tuple(
        {
            "loc": ".".join(str(part) for part in err["loc"]),
            "type": err["type"],
            "msg": err["msg"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    )


def parse_events(batch: Sequence[object]) -> tuple[list[Event], list[EventError]]:
    """The events of ``batch`` that validate, and an error for each one that does not.

    Raises :class:`BatchTooLarge` for more than :data:`MAX_BATCH` items. Duplicate ids are
    not refused here: applying an event is idempotent by id."""
    if len(batch) > MAX_BATCH:
        raise BatchTooLarge(f"a batch holds at most {MAX_BATCH} events, got {len(batch)}")
    events: list[Event] = []
    errors: list[EventError] = []
    for index, raw in enumerate(batch):
        event_id: str | None = None
        if isinstance(raw, dict):
            candidate: Any = raw.get("event_id")
            if isinstance(candidate, str) and len(candidate) <= 128:
                event_id = candidate
        try:
            events.append(parse_event(raw))
        except ValidationError as exc:
            errors.append(EventError(index=index, event_id=event_id, errors=_errors(exc)))
    return events, errors


def event_to_json(event: Event) -> dict[str, Any]:
    """The event as the JSON object a platform sends (defaults included)."""
    return event.model_dump(mode="json")

"""What the SDK returns: typed, immutable views of the API's answers.

They mirror the response schemas of the OpenAPI document (``/openapi.json``) and ignore fields
they do not know, so a newer server does not break an older client. ``tests/sdk`` checks that
every field here exists in the server's document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# -- scan and lookup ----------------------------------------------------------------------------


class Signal(_Model):
    type: str
    value: str
    quality: int | None = None


class Match(_Model):
    """One bank entry the content matched: ``distance`` is the PDQ/vPDQ Hamming distance (0 for
    exact hashes); for a key without the ``export`` scope, the representative value of its
    ``band`` (``exact``, ``near`` or ``far``)."""

    bank: str
    entry: int
    signal_type: str
    distance: int
    band: str | None = None
    external_id: str | None = None
    labels: list[str] = []
    score: float | None = None
    variant: str | None = None
    url_match: str | None = None


class Verdict(_Model):
    """The policy's verdict; anything but ``allow`` opened (or joined) ``case_id``."""

    decision: str
    reason: str
    rule: str | None = None
    priority: str | None = None
    case_id: int | None = None


class ScanResult(_Model):
    scan_id: int | None = None
    kind: str
    format: str | None = None
    size: int
    signals: list[Signal]
    matches: list[Match]
    verdict: Verdict
    warnings: list[str] = []
    truncated: bool = False

    @property
    def matched(self) -> bool:
        return bool(self.matches)


class LookupResult(_Model):
    """The matches of one looked-up signal, or why it could not be looked up (``error``)."""

    type: str
    value: str
    matches: list[Match]
    error: str | None = None
    truncated: bool = False


# -- banks --------------------------------------------------------------------------------------


class Bank(_Model):
    name: str
    description: str
    labels: list[str]
    source: str
    enabled: bool
    is_demo: bool
    version: int
    entries: int | None = None
    created_at: datetime
    updated_at: datetime


class Entry(_Model):
    id: int
    bank: str
    signal_type: str
    value: str
    quality: int | None = None
    url_match: str | None = None
    external_id: str | None = None
    source: str = ""
    list_name: str = Field("", alias="list")
    added_at: datetime
    labels: list[str] = []
    enabled: bool
    disabled_reason: str = ""
    metadata: dict[str, Any] = {}


class EntriesAdded(_Model):
    """What an add did: each rejected entry has its own line in ``errors``."""

    added: int
    duplicates: int
    rejected: int
    errors: list[str]
    aborted: str | None = None


# -- cases --------------------------------------------------------------------------------------


class CaseSummary(_Model):
    """A case in the queue: metadata only."""

    id: int
    state: str
    queue: str
    priority: str
    opened_at: datetime
    updated_at: datetime
    due_at: datetime
    overdue: bool
    uploader_id: str | None = None
    rule: str | None = None
    reason: str
    item_count: int
    lease_holder: str | None = None
    lease_until: datetime | None = None
    first_reviewer: str | None = None
    classification: str | None = None
    decided_at: datetime | None = None
    #: ``content``, or ``account`` for an account case (items are risk snapshots, no media).
    subject: str = "content"


class CasePage(_Model):
    cases: list[CaseSummary]
    next_after: int | None = None


class QueueCount(_Model):
    queue: str
    senior: bool
    open: int
    awaiting_second: int
    overdue: int


class CaseItem(_Model):
    id: int
    added_at: datetime
    kind: str
    format: str | None = None
    content_id: str | None = None
    uploader_id: str | None = None
    conversation_id: str | None = None
    source: str | None = None
    age_band: str | None = None
    scan_id: int | None = None
    verdict: str
    rule: str | None = None
    reason: str
    priority: str
    queue: str
    actions: list[str]
    view_required: bool
    due_at: datetime
    signals: list[dict[str, Any]]
    matches: list[dict[str, Any]]
    has_media: bool
    media_type: str | None = None
    filename: str | None = None
    media_size: int | None = None
    media_note: str = ""
    media_url: str | None = None


class CaseEvent(_Model):
    id: int
    at: datetime
    actor: str
    kind: str
    item_id: int | None = None
    detail: dict[str, Any] = {}


class Case(_Model):
    """A case with its items (matches and signals, never media) and its history."""

    id: int
    state: str
    queue: str
    priority: str
    opened_at: datetime
    updated_at: datetime
    due_at: datetime
    overdue: bool
    uploader_id: str | None = None
    rule: str | None = None
    reason: str
    lease_holder: str | None = None
    lease_until: datetime | None = None
    first_reviewer: str | None = None
    second_reviewer: str | None = None
    classification: str | None = None
    labels: list[str] = []
    decided_at: datetime | None = None
    items: list[CaseItem]
    history: list[CaseEvent]
    must_reveal: list[int] = []
    revealed: list[int] = []
    viewable: list[int] = []
    subject: str = "content"
    #: A confirmed account case: the CyberTipline incident type to report it under.
    incident_type: str | None = None
    #: An account case: the risk detectors that fired in any of its snapshots.
    detectors_fired: list[str] = []


class DetectorPrecision(_Model):
    """How final decisions on the account cases a risk detector fired in went."""

    detector: str
    confirmed: int
    not_abusive: int
    unjudged: int
    precision: float | None = None


class Lease(_Model):
    case_id: int
    state: str
    queue: str
    lease_holder: str | None = None
    lease_until: datetime | None = None


class DecisionResult(_Model):
    """What a decision did (``event``: first_confirm, first_not_abusive, confirmed,
    not_abusive, escalated or disagreed)."""

    case_id: int
    event: str
    final: bool
    state: str
    queue: str
    classification: str | None = None
    labels: list[str] = []
    first_reviewer: str | None = None
    second_reviewer: str | None = None
    actions: list[str] = []
    disputed: list[str] = []
    disabled: list[str] = []
    disable_errors: list[str] = []


class Revealed(_Model):
    item_id: int
    count: int
    limit: int
    media_url: str


class Media(_Model):
    """An item's media: the blurred greyscale preview (``image/jpeg``) or the clear bytes."""

    data: bytes
    media_type: str


# -- reports ------------------------------------------------------------------------------------


class ReportFile(_Model):
    item_id: int
    position: int
    state: str
    external_id: str | None = None


class Report(_Model):
    """A mandatory report (NCMEC or NCA). ``external_id`` is the authority's report id."""

    id: int
    case_id: int
    authority: str
    environment: str
    state: str
    incident_type: str
    external_id: str | None = None
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    last_response_code: int | None = None
    retract_reason: str | None = None
    created_by: str
    confirmed_at: datetime | None = None
    created_at: datetime
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    retracted_at: datetime | None = None
    age_seconds: int | None = None
    files: list[ReportFile] = []


class Draft(Report):
    """A draft's first report, with every report it made in ``reports`` (US first)."""

    reports: list[Report] = []


__all__ = [
    "Bank",
    "Case",
    "CaseEvent",
    "CaseItem",
    "CasePage",
    "CaseSummary",
    "DecisionResult",
    "DetectorPrecision",
    "Draft",
    "EntriesAdded",
    "Entry",
    "Lease",
    "LookupResult",
    "Match",
    "Media",
    "QueueCount",
    "Report",
    "ReportFile",
    "Revealed",
    "ScanResult",
    "Signal",
    "Verdict",
]

"""Mandatory reports as a durable state machine: pure vocabulary, inputs and the next step.

No database, web or HTTP imports. :mod:`bastion.reports.store` stores the state and
:mod:`bastion.reports.reporter` runs the steps; this module decides *which* step comes next
from what has been recorded, so a restarted reporter resumes exactly where the last recorded
result left it.

A CyberTipline report moves ``drafted -> submitted -> files_uploaded -> finished``. Within
``submitted`` each file goes ``pending -> uploaded -> described`` (upload, then fileinfo). A
report that cannot be completed moves to ``retracting`` (NCMEC holds an open report: it must be
retracted) and then ``retracted``; one that never reached NCMEC goes to ``failed`` (nothing to
retract; an admin may retry it after fixing the cause).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

AUTHORITY_NCMEC = "ncmec"
ENVIRONMENTS = ("test", "production")
#: Base URIs as NCMEC's Reporting API documentation gives them.
BASE_URLS = {
    "test": "https://exttest.cybertip.org/ispws",
    "production": "https://report.cybertip.org/ispws",
}

#: Incident types (the ``incidentType`` values of NCMEC's schema). Child sex trafficking and
#: online enticement are the ones 18 U.S.C. 2258A requires since the REPORT Act (2024).
INCIDENT_TYPES = (
    "Child Pornography (possession, manufacture, and distribution)",
    "Child Sex Trafficking",
    "Child Sex Tourism",
    "Child Sexual Molestation",
    "Misleading Domain Name",
    "Misleading Words or Digital Images on the Internet",
    "Online Enticement of Children for Sexual Act",
    "Unsolicited Obscene Material Sent to a Child",
)
CLASSIFICATIONS = ("A1", "A2", "B1", "B2")
#: The CyberTipline incident type of a confirmed account case (grooming or sextortion): the
#: REPORT Act's "online enticement of children for sexual acts", spelled as NCMEC's schema
#: enumerates it (singular "Act").
ACCOUNT_INCIDENT_TYPE = "Online Enticement of Children for Sexual Act"
#: Account-case classification -> CyberTipline incident type.
ACCOUNT_INCIDENT_TYPES = {"grooming": ACCOUNT_INCIDENT_TYPE, "sextortion": ACCOUNT_INCIDENT_TYPE}
#: File annotation element names (empty elements inside ``fileAnnotations``).
FILE_ANNOTATIONS = (
    "animeDrawingVirtualHentai",
    "potentialMeme",
    "viral",
    "possibleSelfProduction",
    "physicalHarm",
    "violenceGore",
    "bestiality",
    "liveStreaming",
    "infant",
    "generativeAi",
)
HASH_TYPES = ("MD5", "SHA1", "SHA256")


class State(StrEnum):
    DRAFTED = "drafted"
    SUBMITTED = "submitted"
    FILES_UPLOADED = "files_uploaded"
    FINISHED = "finished"
    RETRACTING = "retracting"
    RETRACTED = "retracted"
    FAILED = "failed"


ACTIVE_STATES = (State.DRAFTED, State.SUBMITTED, State.FILES_UPLOADED, State.RETRACTING)
#: The next attempt of a draft held for a person: the worker never reaches it, so the report goes
#: only when a person sends it (the console's *Send now*); after that, retries are the worker's.
#: A draft the service made itself (a confirmed account case's) is held.
HELD_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)
FINAL_STATES = (State.FINISHED, State.RETRACTED, State.FAILED)


class FileState(StrEnum):
    PENDING = "pending"
    UPLOADED = "uploaded"
    DESCRIBED = "described"


class StepKind(StrEnum):
    SUBMIT = "submit"
    UPLOAD = "upload"
    FILEINFO = "fileinfo"
    FINISH = "finish"
    RETRACT = "retract"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    file_id: int | None = None  # our report_files row id for upload/fileinfo


@dataclass(frozen=True)
class FileProgress:
    id: int
    position: int
    state: FileState


def next_step(state: State, files: list[FileProgress] | tuple[FileProgress, ...]) -> Step | None:
    """The one call to make next, given what is recorded; None when nothing is left to do.
    Files go in position order, each uploaded and then described before the next one."""
    if state == State.DRAFTED:
        return Step(StepKind.SUBMIT)
    if state == State.SUBMITTED:
        for f in sorted(files, key=lambda f: (f.position, f.id)):
            if f.state == FileState.PENDING:
                return Step(StepKind.UPLOAD, f.id)
            if f.state == FileState.UPLOADED:
                return Step(StepKind.FILEINFO, f.id)
        return Step(StepKind.FINISH)
    if state == State.FILES_UPLOADED:
        return Step(StepKind.FINISH)
    if state == State.RETRACTING:
        return Step(StepKind.RETRACT)
    return None


def age_until_reported(
    confirmed_at: datetime | None, reported_at: datetime | None, now: datetime
) -> timedelta | None:
    """How long a confirmed case has waited for its report (2258A: "as soon as reasonably
    possible"): up to now while unreported, frozen at the finish time once reported."""
    if confirmed_at is None:
        return None
    end = reported_at or now
    return max(end - confirmed_at, timedelta(0))


# -- inputs ----------------------------------------------------------------------------------


class ReportInputError(ValueError):
    """A report input is missing or malformed; the message names the field, never content."""


@dataclass(frozen=True)
class ReporterInfo:
    """The reporting person at the ESP (``reporter/reportingPerson``) and company details."""

    first_name: str
    last_name: str
    email: str
    phone: str | None = None
    company_template: str | None = None
    terms_of_service: str | None = None

    def __post_init__(self) -> None:
        for name in ("first_name", "last_name", "email"):
            _required(name, getattr(self, name), 200)
        if "@" not in self.email:
            raise ReportInputError("reporter email is not an email address")
        for name in ("phone", "company_template", "terms_of_service"):
            _optional(name, getattr(self, name), 5000)


@dataclass(frozen=True)
class IpCaptureEvent:
    ip_address: str
    event_name: str | None = None  # e.g. "Upload", "Login"
    date_time: datetime | None = None
    possible_proxy: bool | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.ip_address)
        except ValueError:
            raise ReportInputError("ip capture event: not an IP address") from None
        _optional("event_name", self.event_name, 100)
        if self.port is not None and not 0 < self.port < 65536:
            raise ReportInputError("ip capture event: port out of range")
        if self.date_time is not None and self.date_time.tzinfo is None:
            raise ReportInputError("ip capture event: date_time needs a timezone")


@dataclass(frozen=True)
class ReportedUser:
    """The person or user reported (``personOrUserReported``)."""

    esp_identifier: str | None = None
    screen_name: str | None = None
    esp_service: str | None = None
    ip_events: tuple[IpCaptureEvent, ...] = ()

    def __post_init__(self) -> None:
        for name in ("esp_identifier", "screen_name", "esp_service"):
            _optional(name, getattr(self, name), 1000)
        object.__setattr__(self, "ip_events", tuple(self.ip_events))


@dataclass(frozen=True)
class ReportFile:
    """One file of the report as ``fileDetails`` describes it. ``item_id`` is the case item."""

    item_id: int
    original_file_name: str
    md5: str
    sha1: str | None = None
    sha256: str | None = None
    classification: str | None = None
    viewed_by_esp: bool = True
    publicly_available: bool = False
    annotations: tuple[str, ...] = ()
    ip_event: IpCaptureEvent | None = None

    def __post_init__(self) -> None:
        _required("original_file_name", self.original_file_name, 255)
        for name, size in (("md5", 32), ("sha1", 40), ("sha256", 64)):
            value = getattr(self, name)
            if value is None and name != "md5":
                continue
            if not isinstance(value, str) or len(value) != size or not _hex(value):
                raise ReportInputError(f"file {name} must be {size} hex digits")
        if self.classification is not None and self.classification not in CLASSIFICATIONS:
            raise ReportInputError(f"industry classification must be one of {CLASSIFICATIONS}")
        bad = [a for a in self.annotations if a not in FILE_ANNOTATIONS]
        if bad:
            raise ReportInputError(f"unknown file annotation(s): {', '.join(bad)}")
        object.__setattr__(self, "annotations", tuple(dict.fromkeys(self.annotations)))


@dataclass(frozen=True)
class ReportContent:
    """Everything the report XML is built from (see :func:`bastion.reports.ncmec_xml`)."""

    incident_type: str
    incident_at: datetime
    reporter: ReporterInfo
    reported: ReportedUser = field(default_factory=ReportedUser)
    escalation_reason: str | None = None
    web_urls: tuple[str, ...] = ()
    service_info: str | None = None
    additional_info: str | None = None
    files: tuple[ReportFile, ...] = ()

    def __post_init__(self) -> None:
        if self.incident_type not in INCIDENT_TYPES:
            raise ReportInputError("unknown incident type (see bastion.reports.INCIDENT_TYPES)")
        if self.incident_at.tzinfo is None:
            raise ReportInputError("incident date/time needs a timezone")
        _optional("escalation_reason", self.escalation_reason, 3000)
        _optional("service_info", self.service_info, 5000)
        _optional("additional_info", self.additional_info, 5000)
        for url in self.web_urls:
            _required("web url", url, 2000)
        object.__setattr__(self, "web_urls", tuple(self.web_urls))
        object.__setattr__(self, "files", tuple(self.files))


# -- reading: what the console and the API show of a report -------------------------------------


@dataclass(frozen=True)
class ReportFileInfo:
    id: int
    item_id: int
    position: int
    state: str
    external_id: str | None
    uploaded_at: datetime | None
    described_at: datetime | None


@dataclass(frozen=True)
class Report:
    """A report as the console shows it: no content, no personal data."""

    id: int
    case_id: int
    authority: str
    environment: str
    state: str
    incident_type: str
    external_id: str | None
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_response_code: int | None
    retract_reason: str | None
    created_by: str
    confirmed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    retracted_at: datetime | None
    files: tuple[ReportFileInfo, ...]
    #: UK NCA reports only: priority (P1-P3), due time, and how long the reference is kept.
    priority: str | None = None
    deadline_at: datetime | None = None
    keep_until: datetime | None = None

    def age(self, now: datetime) -> timedelta | None:
        """Time from confirmation until reported (or until now while unreported)."""
        return age_until_reported(self.confirmed_at, self.finished_at, now)

    @property
    def held(self) -> bool:
        """A draft waiting for a person to send it (see :data:`HELD_UNTIL`)."""
        at = self.next_attempt_at
        return self.state == State.DRAFTED and at.replace(tzinfo=at.tzinfo or UTC) >= HELD_UNTIL


@dataclass(frozen=True)
class Credentials:
    url: str
    username: str
    password: str
    environment: str
    source: str  # "env" or "console"

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, username={self.username!r}, source={self.source})"


def _required(name: str, value: object, limit: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ReportInputError(f"{name} is required")
    _optional(name, value, limit)


def _optional(name: str, value: object, limit: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ReportInputError(f"{name} must be text of at most {limit} characters")


def _hex(value: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in value)


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)

"""UK NCA reports of CSEA content (Online Safety Act 2023 s.66 and its regulations): pure model,
the structured JSON export and a printable PDF.

The NCA has no public API: a reviewer submits the report through the NCA's industry reporting
portal from the export and enters the reference the portal gives back. This module holds no
database, web or HTTP code; :mod:`bastion.reports.nca_store` stores the report and its deadline.

Only identifiers, hashes and metadata go into a report. Never content: the PDF holds text only
(no images of any kind), and the JSON carries no media bytes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.reports.model import ReportInputError

AUTHORITY_NCA = "nca"
SCHEMA = "bastion.nca-report"
SCHEMA_VERSION = 1
#: P1: threat to life or of serious harm, report immediately; P2; P3 (lowest).
PRIORITIES = ("P1", "P2", "P3")
PRIORITY_MEANING = {
    "P1": "Threat to life or of serious harm: report immediately",
    "P2": "Urgent (no immediate threat to life)",
    "P3": "Standard",
}
#: Deadlines from confirmation. "Immediately" is taken as one hour; P3's seven days is an
#: assumption (the regulations give no period). Configurable: ``nca_p{1,2,3}_minutes``.
DEFAULT_DEADLINES = {
    "P1": timedelta(hours=1),
    "P2": timedelta(hours=24),
    "P3": timedelta(days=7),
}
#: How long the NCA reference is kept, from the date it was entered.
KEEP_REFERENCE_YEARS = 5


def deadlines_from_settings(settings: Any) -> dict[str, timedelta]:
    """Priority → deadline from ``nca_p1_minutes`` etc. (defaults when unset)."""
    out = dict(DEFAULT_DEADLINES)
    for p in PRIORITIES:
        minutes = getattr(settings, f"nca_{p.lower()}_minutes", None)
        if minutes is not None:
            if int(minutes) < 0:
                raise ReportInputError(f"nca_{p.lower()}_minutes must not be negative")
            out[p] = timedelta(minutes=int(minutes))
    return out


def deadline_for(
    priority: str, confirmed_at: datetime, deadlines: dict[str, timedelta] | None = None
) -> datetime:
    """When the report is due: confirmation time plus the priority's deadline."""
    if priority not in PRIORITIES:
        raise ReportInputError(f"priority must be one of {', '.join(PRIORITIES)}")
    return confirmed_at + (deadlines or DEFAULT_DEADLINES)[priority]


def keep_until(reference_at: datetime) -> datetime:
    """Five calendar years after the reference date (29 February → 28 February)."""
    year = reference_at.year + KEEP_REFERENCE_YEARS
    try:
        return reference_at.replace(year=year)
    except ValueError:
        return reference_at.replace(year=year, day=28)


# -- content ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginIp:
    """A recent login of the account: address, port if known, and when."""

    ip: str
    at: datetime | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        _ip("login ip", self.ip)
        _port("login port", self.port)
        _aware("login time", self.at)


@dataclass(frozen=True)
class NcaAccount:
    """Identifiers of an account (the uploader, or a related account)."""

    account_id: str | None = None
    user_name: str | None = None
    email: str | None = None
    phone: str | None = None
    profile_url: str | None = None
    login_ips: tuple[LoginIp, ...] = ()
    relationship: str | None = None  # for related accounts, e.g. "recipient", "linked device"

    def __post_init__(self) -> None:
        for name in ("account_id", "user_name", "phone", "relationship"):
            _text(name, getattr(self, name), 500)
        _text("email", self.email, 320)
        if self.email is not None and "@" not in self.email:
            raise ReportInputError("account email is not an email address")
        _url("profile url", self.profile_url)
        object.__setattr__(self, "login_ips", tuple(self.login_ips))


@dataclass(frozen=True)
class NcaFile:
    """One file: its hashes, where and when it was uploaded. Never its bytes."""

    item_id: int
    sha256: str
    md5: str
    file_name: str | None = None
    media_type: str | None = None
    size: int | None = None
    url: str | None = None
    upload_time: datetime | None = None
    upload_ip: str | None = None
    upload_port: int | None = None
    classification: str | None = None

    def __post_init__(self) -> None:
        for name, size in (("sha256", 64), ("md5", 32)):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) != size or not _hex(value):
                raise ReportInputError(f"file {name} must be {size} hex digits")
        _text("file name", self.file_name, 255)
        _text("media type", self.media_type, 100)
        _url("file url", self.url)
        _aware("upload time", self.upload_time)
        if self.upload_ip is not None:
            _ip("upload ip", self.upload_ip)
        _port("upload port", self.upload_port)


@dataclass(frozen=True)
class NcaReportContent:
    """Everything an NCA report holds (the regulations' "where available" fields)."""

    case_id: int
    priority: str
    detection_method: str
    platform: str
    summary: str
    account: NcaAccount = field(default_factory=NcaAccount)
    related_accounts: tuple[NcaAccount, ...] = ()
    files: tuple[NcaFile, ...] = ()
    confirmed_at: datetime | None = None
    deadline_at: datetime | None = None
    nca_reference: str | None = None
    submitted_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ReportInputError(f"priority must be one of {', '.join(PRIORITIES)}")
        for name, limit in (("detection_method", 500), ("platform", 200), ("summary", 5000)):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ReportInputError(f"{name} is required")
            _text(name, value, limit)
        _text("nca reference", self.nca_reference, 64)
        for name in ("confirmed_at", "deadline_at", "submitted_at"):
            _aware(name, getattr(self, name))
        object.__setattr__(self, "related_accounts", tuple(self.related_accounts))
        object.__setattr__(self, "files", tuple(self.files))


# -- JSON ------------------------------------------------------------------------------------


def build_nca_json(content: NcaReportContent) -> dict[str, Any]:
    """The structured export. Field names are stable within ``schema_version``; optional
    fields are present with null when unknown, so a reader never guesses."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "authority": "UK NCA",
        "legal_basis": "Online Safety Act 2023 s.66",
        "case_reference": f"bastion-case-{content.case_id}",
        "case_id": content.case_id,
        "priority": content.priority,
        "priority_meaning": PRIORITY_MEANING[content.priority],
        "detection_method": content.detection_method,
        "platform": content.platform,
        "summary": content.summary,
        "confirmed_at": _iso(content.confirmed_at),
        "deadline_at": _iso(content.deadline_at),
        "nca_reference": content.nca_reference,
        "submitted_at": _iso(content.submitted_at),
        "account": _account_json(content.account),
        "related_accounts": [_account_json(a) for a in content.related_accounts],
        "files": [
            {
                "item_id": f.item_id,
                "file_name": f.file_name,
                "media_type": f.media_type,
                "size": f.size,
                "sha256": f.sha256,
                "md5": f.md5,
                "url": f.url,
                "upload_time": _iso(f.upload_time),
                "upload_ip": f.upload_ip,
                "upload_port": f.upload_port,
                "classification": f.classification,
            }
            for f in content.files
        ],
    }


def content_from_json(doc: dict[str, Any]) -> NcaReportContent:
    """Read back :func:`build_nca_json`'s output (validating it again)."""
    if doc.get("schema") != SCHEMA or doc.get("schema_version") != SCHEMA_VERSION:
        raise ReportInputError("not a Bastion NCA report of a known schema version")
    return NcaReportContent(
        case_id=int(doc["case_id"]),
        priority=doc["priority"],
        detection_method=doc["detection_method"],
        platform=doc["platform"],
        summary=doc["summary"],
        account=_account_from(doc["account"]),
        related_accounts=tuple(_account_from(a) for a in doc["related_accounts"]),
        files=tuple(NcaFile(**{**f, "upload_time": _dt(f["upload_time"])}) for f in doc["files"]),
        confirmed_at=_dt(doc["confirmed_at"]),
        deadline_at=_dt(doc["deadline_at"]),
        nca_reference=doc["nca_reference"],
        submitted_at=_dt(doc["submitted_at"]),
    )


def with_reference(
    content: NcaReportContent, reference: str | None, submitted_at: datetime | None
) -> NcaReportContent:
    return replace(content, nca_reference=reference, submitted_at=submitted_at)


def _account_json(a: NcaAccount) -> dict[str, Any]:
    return {
        "account_id": a.account_id,
        "user_name": a.user_name,
        "email": a.email,
        "phone": a.phone,
        "profile_url": a.profile_url,
        "relationship": a.relationship,
        "login_ips": [{"ip": x.ip, "port": x.port, "at": _iso(x.at)} for x in a.login_ips],
    }


def _account_from(d: dict[str, Any]) -> NcaAccount:
    return NcaAccount(
        **{k: v for k, v in d.items() if k != "login_ips"},
        login_ips=tuple(LoginIp(x["ip"], _dt(x["at"]), x["port"]) for x in d["login_ips"]),
    )


# -- PDF -------------------------------------------------------------------------------------


def render_nca_pdf(content: NcaReportContent) -> bytes:
    """A printable A4 summary of the report for the portal and the file: text only (hashes and
    identifiers, never an image). Uncompressed, so the text can be searched in the bytes.
    Core fonts are Latin-1: other characters are printed as '?' (the JSON keeps them)."""
    from fpdf import FPDF  # imported here: the JSON path needs no PDF library

    doc = build_nca_json(content)
    pdf = FPDF(format="A4")
    pdf.set_compression(False)
    pdf.set_creation_date(content.confirmed_at or datetime(2000, 1, 1, tzinfo=UTC))
    pdf.set_title(f"NCA report {doc['case_reference']}")
    pdf.set_author("Bastion")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def heading(text: str, size: int = 12) -> None:
        pdf.set_font("Helvetica", "B", size)
        pdf.multi_cell(width, 7, _latin1(text), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    def row(label: str, value: object) -> None:
        if value is None or value == "":
            value = "-"
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(45, 5, _latin1(label))
        pdf.set_font("Courier", "", 8)
        pdf.multi_cell(width - 45, 5, _latin1(str(value)), new_x="LMARGIN", new_y="NEXT")

    heading("UK NCA report of CSEA content (Online Safety Act 2023 s.66)", 14)
    row("Case reference", doc["case_reference"])
    row("Priority", f"{doc['priority']} - {doc['priority_meaning']}")
    row("Confirmed at", doc["confirmed_at"])
    row("Deadline", doc["deadline_at"])
    row("NCA reference", doc["nca_reference"] or "(not yet submitted)")
    row("Submitted at", doc["submitted_at"])
    row("Platform", doc["platform"])
    row("Detection method", doc["detection_method"])
    pdf.ln(2)
    heading("Summary")
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(width, 5, _latin1(doc["summary"]), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    heading("Account")
    _account_rows(row, doc["account"])
    for n, acc in enumerate(doc["related_accounts"], 1):
        pdf.ln(2)
        heading(f"Related account {n}", 11)
        _account_rows(row, acc)
    for n, f in enumerate(doc["files"], 1):
        pdf.ln(2)
        heading(f"File {n} (item {f['item_id']})", 11)
        row("File name", f["file_name"])
        row("Media type / size", f"{f['media_type'] or '-'} / {f['size'] or '-'} bytes")
        row("SHA-256", f["sha256"])
        row("MD5", f["md5"])
        row("URL", f["url"])
        row("Upload time", f["upload_time"])
        port = f"  port {f['upload_port']}" if f["upload_port"] is not None else ""
        row("Upload IP", (f["upload_ip"] or "-") + port)
        row("Classification", f["classification"])
    pdf.ln(4)
    pdf.set_font("Helvetica", "I", 8)
    pdf.multi_cell(
        width,
        4,
        f"Bastion NCA export, schema {SCHEMA} v{SCHEMA_VERSION}. Contains no content.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    return bytes(pdf.output())


def _account_rows(row: Any, acc: dict[str, Any]) -> None:
    row("Account id", acc["account_id"])
    row("User name", acc["user_name"])
    row("Email", acc["email"])
    row("Phone", acc["phone"])
    row("Profile URL", acc["profile_url"])
    if acc["relationship"]:
        row("Relationship", acc["relationship"])
    if not acc["login_ips"]:
        row("Recent login IPs", None)
    for x in acc["login_ips"]:
        port = f" port {x['port']}" if x["port"] is not None else ""
        row("Recent login IP", f"{x['ip']}{port} at {x['at'] or '-'}")


# -- validation helpers ----------------------------------------------------------------------


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def _text(name: str, value: object, limit: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ReportInputError(f"{name} must be text of at most {limit} characters")


def _url(name: str, value: object) -> None:
    _text(name, value, 2000)
    if value is not None and not str(value).startswith(("https://", "http://")):
        raise ReportInputError(f"{name} must be an http(s) URL")


def _ip(name: str, value: object) -> None:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        raise ReportInputError(f"{name}: not an IP address") from None


def _port(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, int) or not 0 < value < 65536):
        raise ReportInputError(f"{name} out of range")


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise ReportInputError(f"{name} needs a timezone")


def _hex(value: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))

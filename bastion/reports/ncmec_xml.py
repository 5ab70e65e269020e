"""CyberTipline XML: pure builders for ``report`` and ``fileDetails``, and a shape validator.

NCMEC's server validates submissions against its XSD and rejects elements in the wrong order
(response code 4100), so the builders emit children in :data:`SCHEMA` order and
:func:`validate` checks every document against the same table before anything is sent. The
fake CyberTipline in the tests enforces that table too. Which parts of the table come from
NCMEC's documentation and which are assumptions to check against the current XSD (``GET /xsd``)
is listed in docs/reports.md.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bastion.reports.model import (
    CLASSIFICATIONS,
    FILE_ANNOTATIONS,
    HASH_TYPES,
    INCIDENT_TYPES,
    IpCaptureEvent,
    ReportContent,
    ReportFile,
    utc,
)

MANY = 1_000_000
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = "https://report.cybertip.org/ispws/xsd"


@dataclass(frozen=True)
class Child:
    name: str
    min: int = 0
    max: int = 1


def _seq(*children: Child) -> tuple[Child, ...]:
    return children


#: Element -> its children in the order the XSD's sequences require. Elements not listed here
#: are leaves (text only). Only the parts Bastion emits are modelled; anything else is refused.
SCHEMA: dict[str, tuple[Child, ...]] = {
    "report": _seq(
        Child("incidentSummary", 1, 1),
        Child("internetDetails", 0, MANY),
        Child("lawEnforcement"),
        Child("reporter", 1, 1),
        Child("personOrUserReported"),
        Child("intendedRecipient", 0, MANY),
        Child("victim", 0, MANY),
        Child("additionalInfo"),
    ),
    "incidentSummary": _seq(
        Child("incidentType", 1, 1),
        Child("escalateToHighPriority"),
        Child("reportAnnotations"),
        Child("incidentDateTime", 1, 1),
        Child("incidentDateTimeDescription"),
    ),
    "internetDetails": _seq(Child("webPageIncident", 1, 1)),
    "webPageIncident": _seq(Child("url", 0, MANY), Child("additionalInfo")),
    "reporter": _seq(
        Child("reportingPerson", 1, 1),
        Child("contactPerson"),
        Child("companyTemplate"),
        Child("termsOfService"),
        Child("legalURL"),
    ),
    "reportingPerson": _seq(
        Child("firstName"), Child("lastName"), Child("phone", 0, MANY), Child("email", 0, MANY)
    ),
    "personOrUserReported": _seq(
        Child("personOrUserReportedPerson"),
        Child("vehicleDescription"),
        Child("espIdentifier"),
        Child("espService"),
        Child("screenName"),
        Child("displayName", 0, MANY),
        Child("profileUrl", 0, MANY),
        Child("ipCaptureEvent", 0, MANY),
        Child("deviceId", 0, MANY),
        Child("thirdPartyUserReported"),
        Child("priorCTReports", 0, MANY),
        Child("groupIdentifier"),
        Child("estimatedLocation"),
        Child("additionalInfo"),
    ),
    "ipCaptureEvent": _seq(
        Child("ipAddress", 1, 1),
        Child("eventName"),
        Child("dateTime"),
        Child("possibleProxy"),
        Child("port"),
    ),
    "fileDetails": _seq(
        Child("reportId", 1, 1),
        Child("fileId", 1, 1),
        Child("originalFileName"),
        Child("locationOfFile"),
        Child("fileViewedByEsp"),
        Child("exifViewedByEsp"),
        Child("publiclyAvailable"),
        Child("fileRelevance"),
        Child("fileAnnotations"),
        Child("industryClassification"),
        Child("originalFileHash", 0, MANY),
        Child("ipCaptureEvent"),
        Child("deviceId", 0, MANY),
        Child("details", 0, MANY),
        Child("additionalInfo", 0, MANY),
    ),
    "fileAnnotations": tuple(Child(a) for a in FILE_ANNOTATIONS),
}
#: Empty marker elements (no text, no children).
EMPTY = frozenset(FILE_ANNOTATIONS)
BOOLEANS = frozenset(
    {"fileViewedByEsp", "exifViewedByEsp", "publiclyAvailable", "possibleProxy"}
    | {"thirdPartyUserReported"}
)
DATETIMES = frozenset({"incidentDateTime", "dateTime"})
INTEGERS = frozenset({"reportId", "port", "priorCTReports"})
ENUMS = {"incidentType": INCIDENT_TYPES, "industryClassification": CLASSIFICATIONS}
#: Which schema context a leaf name with nested meaning has (``additionalInfo`` is a leaf
#: everywhere; ``email`` may carry a ``verified`` attribute).
_ATTRS = {"originalFileHash": {"hashType"}, "email": {"verified"}, "phone": {"verified"}}
_DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_HASH_LEN = {"MD5": 32, "SHA1": 40, "SHA256": 64}
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class XmlValidationError(ValueError):
    """The document does not have the shape NCMEC's schema requires. ``errors`` are paths and
    element names only, never values, so they are safe to show and to log."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors[:10]))


# -- building ----------------------------------------------------------------------------------


def build_report(content: ReportContent) -> bytes:
    """The ``report`` document for ``POST /submit``. Pure: same content, same bytes."""
    root = _root("report")
    summary = _sub(root, "incidentSummary")
    _leaf(summary, "incidentType", content.incident_type)
    _leaf(summary, "escalateToHighPriority", content.escalation_reason)
    _leaf(summary, "incidentDateTime", _dt(content.incident_at))
    if content.web_urls or content.service_info:
        web = _sub(_sub(root, "internetDetails"), "webPageIncident")
        for url in content.web_urls:
            _leaf(web, "url", url)
        _leaf(web, "additionalInfo", content.service_info)
    reporter = _sub(root, "reporter")
    person = _sub(reporter, "reportingPerson")
    r = content.reporter
    _leaf(person, "firstName", r.first_name)
    _leaf(person, "lastName", r.last_name)
    _leaf(person, "phone", r.phone)
    _leaf(person, "email", r.email)
    _leaf(reporter, "companyTemplate", r.company_template)
    _leaf(reporter, "termsOfService", r.terms_of_service)
    u = content.reported
    if u.esp_identifier or u.screen_name or u.esp_service or u.ip_events:
        reported = _sub(root, "personOrUserReported")
        _leaf(reported, "espIdentifier", u.esp_identifier)
        _leaf(reported, "espService", u.esp_service)
        _leaf(reported, "screenName", u.screen_name)
        for event in u.ip_events:
            _ip_event(reported, event)
    _leaf(root, "additionalInfo", content.additional_info)
    return _serialize(root)


def build_file_details(report_id: str, file_id: str, f: ReportFile) -> bytes:
    """The ``fileDetails`` document for ``POST /fileinfo`` about one uploaded file."""
    root = _root("fileDetails")
    _leaf(root, "reportId", report_id)
    _leaf(root, "fileId", file_id)
    _leaf(root, "originalFileName", f.original_file_name)
    _leaf(root, "fileViewedByEsp", _bool(f.viewed_by_esp))
    _leaf(root, "publiclyAvailable", _bool(f.publicly_available))
    if f.annotations:
        notes = _sub(root, "fileAnnotations")
        for name in FILE_ANNOTATIONS:  # schema order, whatever order they were given in
            if name in f.annotations:
                _sub(notes, name)
    _leaf(root, "industryClassification", f.classification)
    for kind, value in (("MD5", f.md5), ("SHA1", f.sha1), ("SHA256", f.sha256)):
        if value:
            _leaf(root, "originalFileHash", value.lower()).set("hashType", kind)
    if f.ip_event is not None:
        _ip_event(root, f.ip_event)
    return _serialize(root)


def _root(name: str) -> ET.Element:
    root = ET.Element(name)
    root.set("xmlns:xsi", XSI)
    root.set("xsi:noNamespaceSchemaLocation", SCHEMA_LOCATION)
    return root


def _sub(parent: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(parent, name)


def _leaf(parent: ET.Element, name: str, value: str | None) -> ET.Element:
    if value is None:
        return ET.Element(name)  # detached: nothing emitted
    el = ET.SubElement(parent, name)
    el.text = _BAD_CHARS.sub("", str(value))
    return el


def _ip_event(parent: ET.Element, event: IpCaptureEvent) -> None:
    el = _sub(parent, "ipCaptureEvent")
    _leaf(el, "ipAddress", event.ip_address)
    _leaf(el, "eventName", event.event_name)
    _leaf(el, "dateTime", _dt(event.date_time) if event.date_time else None)
    if event.possible_proxy is not None:
        _leaf(el, "possibleProxy", _bool(event.possible_proxy))
    if event.port is not None:
        _leaf(el, "port", str(event.port))


def _dt(value: datetime) -> str:
    return utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


# -- validating --------------------------------------------------------------------------------


def parse_xml(data: bytes | str) -> ET.Element:
    """Parse a document that must not declare a DTD or entities (refused rather than
    expanded), so neither side can be made to expand entity bombs."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise XmlValidationError(["document declares a DTD or entities"])
    try:
        return ET.fromstring(raw)
    except ET.ParseError as exc:
        raise XmlValidationError([f"not well-formed XML (line {exc.position[0]})"]) from None


def validate(data: bytes | str, root_name: str) -> ET.Element:
    """Check ``data`` against :data:`SCHEMA` (element names, order, counts, required
    elements, leaf value formats); returns the parsed root or raises
    :class:`XmlValidationError` listing every problem."""
    root = parse_xml(data)
    errors: list[str] = []
    if root.tag != root_name:
        errors.append(f"root element is <{root.tag}>, expected <{root_name}>")
    else:
        _check(root, root_name, errors)
    if errors:
        raise XmlValidationError(errors)
    return root


def check_order(children: Iterable[str], parent: str) -> list[str]:
    """Order/count errors of a list of child names under ``parent`` (used by the fake too)."""
    spec = SCHEMA[parent]
    index = {c.name: i for i, c in enumerate(spec)}
    errors: list[str] = []
    counts: dict[str, int] = {}
    last = -1
    for name in children:
        if name not in index:
            errors.append(f"{parent}: unexpected element <{name}>")
            continue
        if index[name] < last:
            errors.append(f"{parent}: <{name}> is out of order")
        last = max(last, index[name])
        counts[name] = counts.get(name, 0) + 1
    for c in spec:
        n = counts.get(c.name, 0)
        if n < c.min:
            errors.append(f"{parent}: required <{c.name}> is missing")
        if n > c.max:
            errors.append(f"{parent}: <{c.name}> appears {n} times (at most {c.max})")
    return errors


def _check(el: ET.Element, path: str, errors: list[str]) -> None:
    name = el.tag
    allowed = _ATTRS.get(name, set())
    if path.count("/") == 0:
        allowed = allowed | {"xmlns:xsi", "xsi:noNamespaceSchemaLocation"}
        allowed |= {f"{{{XSI}}}noNamespaceSchemaLocation"}
    extra = set(el.attrib) - allowed
    if extra:
        errors.append(f"{path}: unexpected attribute(s) {', '.join(sorted(extra))}")
    if name in SCHEMA:
        if (el.text or "").strip():
            errors.append(f"{path}: text where only elements belong")
        errors.extend(check_order([c.tag for c in el], name))
        for child in el:
            if child.tag in {c.name for c in SCHEMA[name]}:
                _check(child, f"{path}/{child.tag}", errors)
        return
    if len(el):
        errors.append(f"{path}: <{name}> must not have child elements")
        return
    text = (el.text or "").strip()
    if name in EMPTY:
        if text:
            errors.append(f"{path}: <{name}> must be empty")
        return
    if not text:
        errors.append(f"{path}: <{name}> is empty")
    elif name in BOOLEANS and text not in ("true", "false"):
        errors.append(f"{path}: <{name}> must be true or false")
    elif name in DATETIMES and not _DT_RE.match(text):
        errors.append(f"{path}: <{name}> must be an ISO 8601 date-time with a zone")
    elif name in INTEGERS and not text.isdigit():
        errors.append(f"{path}: <{name}> must be a whole number")
    elif name in ENUMS and text not in ENUMS[name]:
        errors.append(f"{path}: <{name}> has a value outside the schema's list")
    elif name == "originalFileHash":
        kind = el.get("hashType")
        if kind not in HASH_TYPES:
            errors.append(f"{path}: hashType must be one of {', '.join(HASH_TYPES)}")
        elif len(text) != _HASH_LEN[kind] or not re.fullmatch(r"[0-9a-fA-F]+", text):
            errors.append(f"{path}: {kind} hash has the wrong length or characters")

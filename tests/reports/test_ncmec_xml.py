"""Pure report XML: builders emit the documented order and the validator catches violations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.reports.model import (
    FileProgress,
    FileState,
    IpCaptureEvent,
    ReportContent,
    ReportedUser,
    ReporterInfo,
    ReportFile,
    ReportInputError,
    State,
    StepKind,
    age_until_reported,
    next_step,
)
from bastion.reports.ncmec_xml import (
    XmlValidationError,
    build_file_details,
    build_report,
    parse_xml,
    validate,
)

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REPORTER = ReporterInfo("Pat", "Example", "safety@example.org", phone="555-0100")


def content(**kw: object) -> ReportContent:
    values: dict[str, object] = {
        "incident_type": "Online Enticement of Children for Sexual Act",
        "incident_at": AT,
        "reporter": REPORTER,
        "reported": ReportedUser(
            esp_identifier="u-42",
            screen_name="someone",
            ip_events=(IpCaptureEvent("203.0.113.7", "Login", AT, port=443),),
        ),
        "escalation_reason": "ongoing contact",
    }
    values.update(kw)
    return ReportContent(**values)  # type: ignore[arg-type]


def test_report_children_follow_the_documented_order() -> None:
    root = validate(build_report(content(web_urls=("https://example.org/x",))), "report")
    assert [c.tag for c in root] == [
        "incidentSummary",
        "internetDetails",
        "reporter",
        "personOrUserReported",
    ]
    summary = root.find("incidentSummary")
    assert summary is not None
    assert [c.tag for c in summary] == [
        "incidentType",
        "escalateToHighPriority",
        "incidentDateTime",
    ]
    assert summary.findtext("incidentDateTime") == "2025-03-01T12:00:00Z"
    reported = root.find("personOrUserReported")
    assert reported is not None
    assert [c.tag for c in reported] == ["espIdentifier", "screenName", "ipCaptureEvent"]
    ip = reported.find("ipCaptureEvent")
    assert ip is not None and [c.tag for c in ip] == ["ipAddress", "eventName", "dateTime", "port"]


def test_builder_is_pure_and_escapes_text() -> None:
    c = content(additional_info="a < b & c")
    assert build_report(c) == build_report(c)
    assert parse_xml(build_report(c)).findtext("additionalInfo") == "a < b & c"


@pytest.mark.parametrize(
    "kind",
    ["Child Sex Trafficking", "Online Enticement of Children for Sexual Act"],
)
def test_report_act_incident_types_are_accepted(kind: str) -> None:
    root = validate(build_report(content(incident_type=kind)), "report")
    assert root.findtext("incidentSummary/incidentType") == kind


def test_unknown_incident_type_is_refused() -> None:
    with pytest.raises(ReportInputError):
        content(incident_type="Something else")


def test_out_of_order_and_missing_elements_are_reported() -> None:
    swapped = (
        b"<report><reporter><reportingPerson><firstName>a</firstName></reportingPerson>"
        b"</reporter><incidentSummary><incidentType>Child Sex Trafficking</incidentType>"
        b"<incidentDateTime>2025-03-01T12:00:00Z</incidentDateTime></incidentSummary></report>"
    )
    with pytest.raises(XmlValidationError) as info:
        validate(swapped, "report")
    assert any("out of order" in e for e in info.value.errors)
    with pytest.raises(XmlValidationError) as info:
        validate(b"<report><incidentSummary/></report>", "report")
    assert any("required <reporter>" in e for e in info.value.errors)
    assert any("required <incidentType>" in e for e in info.value.errors)


def test_entities_are_refused() -> None:
    with pytest.raises(XmlValidationError, match="DTD"):
        parse_xml(b'<!DOCTYPE x [<!ENTITY a "b">]><report/>')


def test_file_details_order_hashes_and_annotations() -> None:
    f = ReportFile(
        item_id=1,
        original_file_name="1.jpg",
        md5="0" * 32,
        sha1="1" * 40,
        sha256="2" * 64,
        classification="A1",
        viewed_by_esp=True,
        annotations=("viral", "potentialMeme"),
    )
    root = validate(build_file_details("1000", "abc", f), "fileDetails")
    assert [c.tag for c in root] == [
        "reportId",
        "fileId",
        "originalFileName",
        "fileViewedByEsp",
        "publiclyAvailable",
        "fileAnnotations",
        "industryClassification",
        "originalFileHash",
        "originalFileHash",
        "originalFileHash",
    ]
    notes = root.find("fileAnnotations")
    assert notes is not None and [c.tag for c in notes] == ["potentialMeme", "viral"]
    assert [h.get("hashType") for h in root.findall("originalFileHash")] == [
        "MD5",
        "SHA1",
        "SHA256",
    ]


def test_bad_hash_and_classification_are_caught() -> None:
    with pytest.raises(ReportInputError):
        ReportFile(item_id=1, original_file_name="x", md5="zz")
    with pytest.raises(ReportInputError):
        ReportFile(item_id=1, original_file_name="x", md5="0" * 32, classification="C3")
    doc = (
        b"<fileDetails><reportId>1</reportId><fileId>f</fileId>"
        b'<originalFileHash hashType="MD5">abc</originalFileHash></fileDetails>'
    )
    with pytest.raises(XmlValidationError, match="wrong length"):
        validate(doc, "fileDetails")


def test_next_step_walks_files_in_order() -> None:
    files = [FileProgress(2, 1, FileState.PENDING), FileProgress(1, 0, FileState.UPLOADED)]
    assert next_step(State.DRAFTED, files).kind == StepKind.SUBMIT  # type: ignore[union-attr]
    step = next_step(State.SUBMITTED, files)
    assert step is not None and (step.kind, step.file_id) == (StepKind.FILEINFO, 1)
    files[1] = FileProgress(1, 0, FileState.DESCRIBED)
    step = next_step(State.SUBMITTED, files)
    assert step is not None and (step.kind, step.file_id) == (StepKind.UPLOAD, 2)
    assert next_step(State.FILES_UPLOADED, files).kind == StepKind.FINISH  # type: ignore[union-attr]
    assert next_step(State.RETRACTING, files).kind == StepKind.RETRACT  # type: ignore[union-attr]
    assert next_step(State.FINISHED, files) is None


def test_age_until_reported_freezes_at_finish() -> None:
    assert age_until_reported(AT, None, AT + timedelta(hours=3)) == timedelta(hours=3)
    done = AT + timedelta(hours=1)
    assert age_until_reported(AT, done, AT + timedelta(days=2)) == timedelta(hours=1)
    assert age_until_reported(None, None, AT) is None

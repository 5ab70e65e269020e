"""Bank model validation: every field a database would reject fails here, per entry, by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bastion.banks.model import (
    Bank,
    NewEntry,
    normalize_entry,
    parse_signal_type,
    validate_bank_name,
    validate_value,
)
from bastion.signals.base import SignalType

PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"


@pytest.mark.parametrize("name", ["a", "IWF-demo", "ncmec.hashes_2024", "0" * 64])
def test_valid_bank_names_are_lowercased(name: str) -> None:
    assert validate_bank_name(name) == name.lower()


@pytest.mark.parametrize("name", ["", "-x", ".x", "has space", "x" * 65, "é", "a/b"])
def test_invalid_bank_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid bank name"):
        validate_bank_name(name)


def test_hex_values_are_lowercased_and_stripped() -> None:
    assert validate_value(SignalType.PDQ, f"  {PDQ.upper()}\n") == PDQ
    assert validate_value("md5", "D41D8CD98F00B204E9800998ECF8427E") == (
        "d41d8cd98f00b204e9800998ecf8427e"
    )
    assert validate_value("sha256", "A" * 64) == "a" * 64


@pytest.mark.parametrize(
    ("st", "value", "message"),
    [
        ("pdq", PDQ[:-1], "pdq value must be 64 hexadecimal characters, got 63"),
        ("pdq", PDQ[:-1] + "g", "pdq value must be 64 hexadecimal"),
        ("md5", PDQ, "md5 value must be 32 hexadecimal characters, got 64"),
        ("sha256", "", "sha256 value is empty"),
        ("sha1", PDQ, "unknown signal type 'sha1'"),
    ],
)
def test_bad_values_say_what_is_wrong(st: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_value(st, value)


def test_parse_signal_type_lists_valid_names() -> None:
    assert parse_signal_type(" PDQ ") is SignalType.PDQ
    with pytest.raises(ValueError, match="expected one of: pdq, vpdq, md5, sha256, url"):
        parse_signal_type("tlsh")


def test_normalize_entry_canonicalises_fields() -> None:
    tz = timezone(timedelta(hours=2))
    e = normalize_entry(
        NewEntry(
            signal_type="PDQ",  # type: ignore[arg-type]
            value=PDQ.upper(),
            quality=80,
            source=" NCMEC ",
            external_id=" 42 ",
            added_at=datetime(2024, 5, 1, 12, 0, tzinfo=tz),
            labels=[" csam", "A1", "csam"],
            metadata={"k": [1, 2]},
        )
    )
    assert e.signal_type is SignalType.PDQ
    assert e.value == PDQ
    assert e.source == "NCMEC"
    assert e.external_id == "42"
    assert e.added_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert e.added_at.tzinfo is UTC
    assert e.labels == ["csam", "A1"]
    assert e.url_match is None


def test_naive_added_at_means_utc() -> None:
    e = normalize_entry(NewEntry(SignalType.MD5, "0" * 32, added_at="2024-01-02T03:04:05"))  # type: ignore[arg-type]
    assert e.added_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (NewEntry(SignalType.MD5, "0" * 32, quality=50), "quality applies only to pdq and vpdq"),
        (NewEntry(SignalType.PDQ, PDQ, quality=101), "quality must be between 0 and 100"),
        (NewEntry(SignalType.PDQ, PDQ, quality="9"), "quality must be an integer"),  # type: ignore[arg-type]
        (NewEntry(SignalType.PDQ, PDQ, url_match="prefix"), "url_match applies only to url"),
        (NewEntry(SignalType.PDQ, PDQ, source="x" * 256), "source is longer than 255"),
        (NewEntry(SignalType.PDQ, PDQ, list_name="a\x00b"), "list contains a NUL"),
        (NewEntry(SignalType.PDQ, PDQ, labels=["a;b"]), "may not contain ';'"),
        (NewEntry(SignalType.PDQ, PDQ, labels="csam"), "labels must be a list"),  # type: ignore[arg-type]
        (NewEntry(SignalType.PDQ, PDQ, metadata={"t": {1, 2}}), "not JSON-serialisable"),
        (NewEntry(SignalType.PDQ, PDQ, metadata={"t": "\x00"}), "metadata contains a NUL"),
        (NewEntry(SignalType.PDQ, PDQ, metadata=[1]), "metadata must be a JSON object"),  # type: ignore[arg-type]
        # JSON's "\ud800" decodes to a lone surrogate, which no database or response can carry.
        (NewEntry(SignalType.PDQ, PDQ, labels=["\ud800"]), "label is not valid Unicode"),
        (NewEntry(SignalType.PDQ, PDQ, external_id="a\udc00"), "external_id is not valid Unicode"),
        (NewEntry(SignalType.PDQ, PDQ, metadata={"\ud800": 1}), "metadata is not valid Unicode"),
        (NewEntry(SignalType.PDQ, PDQ, added_at="yesterday"), "added_at is not an ISO 8601"),  # type: ignore[arg-type]
    ],
)
def test_normalize_entry_rejects_bad_fields(entry: NewEntry, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_entry(entry)


def test_url_values_use_the_url_normaliser() -> None:
    from bastion.signals.url import normalize_url

    raw = "HTTP://Example.COM/a/b?x=1"
    e = normalize_entry(NewEntry(SignalType.URL, raw))
    assert e.value == normalize_url(raw)
    assert e.url_match == "url"  # the default for url entries
    with pytest.raises(ValueError, match="url_match must be one of url, prefix, domain"):
        normalize_entry(NewEntry(SignalType.URL, raw, url_match="regex"))


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        ("domain", "HTTP://WWW.Example.COM./", "example.com"),
        ("domain", "*.bad.org", "bad.org"),  # a domain entry covers subdomains anyway
        ("DOMAIN", "bad.org", "bad.org"),
        ("prefix", "https://Example.com:443/a/b/", "example.com/a/b"),
        ("prefix", "example.com/a#frag", "example.com/a"),
        ("url", "example.com/a?q=1", "example.com/a?q=1"),
    ],
)
def test_url_entries_store_the_canonical_pattern_for_their_kind(
    kind: str, raw: str, stored: str
) -> None:
    e = normalize_entry(NewEntry(SignalType.URL, raw, url_match=kind))
    assert (e.value, e.url_match) == (stored, kind.lower())
    assert validate_value(SignalType.URL, raw, kind) == stored


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        ("domain", "http://example.com/a", "domain entry must be a bare host"),
        ("domain", "example.com:8080", "domain entry must be a bare host"),
        ("domain", "example.com?x=1", "domain entry must be a bare host"),
        ("prefix", "example.com/a?x=1", "prefix entry must not contain a query"),
        ("url", "*.bad.org", "invalid host label"),
        ("prefix", "*.bad.org/a", "invalid host label"),
    ],
)
def test_url_entries_reject_patterns_that_do_not_fit_their_kind(
    kind: str, raw: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_entry(NewEntry(SignalType.URL, raw, url_match=kind))


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+01:00"]
)
def test_added_at_outside_the_utc_range_is_a_value_error(stamp: str) -> None:
    with pytest.raises(ValueError, match="added_at is out of range"):
        normalize_entry(NewEntry(SignalType.PDQ, PDQ, added_at=stamp))  # type: ignore[arg-type]


def test_metadata_nesting_is_bounded() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    with pytest.raises(ValueError, match="nested more than 32 levels"):
        normalize_entry(NewEntry(SignalType.PDQ, PDQ, metadata=deep))
    shared: list[object] = [1]
    for _ in range(25):  # a DAG whose paths double per level: must not be walked 2**25 times
        shared = [shared, shared]
    with pytest.raises(ValueError, match="larger than"):
        normalize_entry(NewEntry(SignalType.PDQ, PDQ, metadata={"x": shared}))


def test_vpdq_values_are_canonical_frame_lists() -> None:
    from bastion.signals.video import parse_frames

    text = f'["{PDQ.upper()},100,0.0", "{PDQ},90,1.0"]'
    canonical = validate_value(SignalType.VPDQ, text)
    frames = parse_frames(canonical)
    assert [f.pdq for f in frames] == [PDQ, PDQ]
    assert [f.quality for f in frames] == [100, 90]
    assert validate_value(SignalType.VPDQ, canonical) == canonical
    with pytest.raises(ValueError):
        validate_value(SignalType.VPDQ, '["nothex,100,0.0"]')


def test_demo_banks_are_marked_for_people() -> None:
    now = datetime.now(UTC)
    bank = Bank(1, "demo", "", [], "IWF (demo)", True, True, now, now, 1)
    assert bank.display_name == "demo [DEMO]"
    assert Bank(2, "real", "", [], "", True, False, now, now, 1).display_name == "real"

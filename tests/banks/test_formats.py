"""Bank file formats: detection, per-line errors, streaming limits and round trips."""

from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.banks.formats import (
    MAX_LINE,
    BankFormat,
    ParseError,
    detect_format,
    parse,
    write,
    write_string,
)
from bastion.banks.model import NewEntry
from bastion.signals.base import SignalType


def _pdq() -> str:
    return secrets.token_hex(32)


def _split(items: list[NewEntry | ParseError]) -> tuple[list[NewEntry], list[ParseError]]:
    good = [i for i in items if isinstance(i, NewEntry)]
    bad = [i for i in items if isinstance(i, ParseError)]
    return good, bad


def _parse(text: str | bytes, fmt: str | None = None) -> list[NewEntry | ParseError]:
    stream = io.BytesIO(text) if isinstance(text, bytes) else io.StringIO(text)
    return list(parse(stream, fmt))


# -- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        ("signal_type,value,quality", BankFormat.CSV),
        ('"signal_type","value"', BankFormat.CSV),
        ("\ufeffsignal_type,value", BankFormat.CSV),
        ('{"signal_type": "pdq", "value": "00"}', BankFormat.JSONL),
        ("pdq " + "0" * 64, BankFormat.PYTX),
        ("video_md5 " + "0" * 32, BankFormat.PYTX),
        ('vpdq ["x"]', BankFormat.PYTX),
    ],
)
def test_detect_format_from_line(line: str, fmt: BankFormat) -> None:
    assert detect_format(line) is fmt


def test_detect_format_rejects_unknown_lines() -> None:
    with pytest.raises(ValueError, match="unrecognised bank file line"):
        detect_format("hello world")


def test_detect_format_from_path_skips_comments_and_uses_suffix(tmp_path: Path) -> None:
    pytx = tmp_path / "hashes.txt"
    pytx.write_text("# exported\n\npdq " + _pdq() + "\n")
    assert detect_format(pytx) is BankFormat.PYTX
    assert detect_format(str(pytx)) is BankFormat.PYTX
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("")
    assert detect_format(empty_csv) is BankFormat.CSV
    odd = tmp_path / "odd.dat"
    odd.write_text("nothing we know\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format(odd)


# -- CSV ----------------------------------------------------------------------------------------


def test_csv_parses_all_columns_and_reports_bad_lines_by_number() -> None:
    h1, h2 = _pdq(), _pdq()
    text = (
        "signal_type,value,quality,url_match,external_id,source,list,added_at,labels,metadata\n"
        f'pdq,{h1.upper()},90,,id-1,NCMEC,ncmec-2024,2024-05-01T00:00:00Z,csam;A1,"{{""k"": 1}}"\n'
        "\n"
        "pdq,abc,,,,,,,,\n"  # line 4: short hash
        "md5,d41d8cd98f00b204e9800998ecf8427e,7,,,,,,,\n"  # line 5: quality on md5
        "pdq,too,few\n"  # line 6
        f"pdq,{h2},x,,,,,,,\n"  # line 7: quality not an int
        f'pdq,{h2},,,,,,,,"{{bad json"\n'  # line 8
        'pdq,"unterminated\n'  # line 9
        f"PDQ,{h2},,,,,,,,\n"  # line 10: fine
    )
    good, bad = _split(_parse(text))
    assert [e.value for e in good] == [h1, h2]
    first = good[0]
    assert first.signal_type is SignalType.PDQ
    assert first.quality == 90
    assert first.external_id == "id-1"
    assert first.source == "NCMEC"
    assert first.list_name == "ncmec-2024"
    assert first.added_at == datetime(2024, 5, 1, tzinfo=UTC)
    assert first.labels == ["csam", "A1"]
    assert first.metadata == {"k": 1}
    assert [e.line for e in bad] == [4, 5, 6, 7, 8, 9]
    assert "64 hexadecimal characters, got 3" in bad[0].message
    assert "quality applies only to pdq and vpdq" in bad[1].message
    assert "expected 10 fields, found 3" in bad[2].message
    assert "quality is not an integer" in bad[3].message
    assert "metadata is not valid JSON" in bad[4].message
    assert "malformed CSV" in bad[5].message
    assert str(bad[0]).startswith("line 4: ")


def test_csv_needs_only_signal_type_and_value_in_any_order() -> None:
    h = _pdq()
    good, bad = _split(_parse(f"value,signal_type\n{h},pdq\n"))
    assert bad == []
    assert good[0].value == h and good[0].signal_type is SignalType.PDQ


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("signal_type,value,colour", "unknown CSV column(s) 'colour'"),
        ("signal_type,quality", "lacks required column(s): value"),
        ("signal_type,value,value", "duplicate CSV column(s): value"),
    ],
)
def test_csv_header_problems_stop_the_file_with_one_clear_error(header: str, message: str) -> None:
    items = _parse(f"{header}\npdq,{_pdq()},x\n", "csv")
    assert len(items) == 1
    assert isinstance(items[0], ParseError)
    assert items[0].line == 1
    assert message in items[0].message


# -- JSON lines ---------------------------------------------------------------------------------


def test_jsonl_parses_objects_and_reports_bad_lines() -> None:
    h = _pdq()
    lines = [
        json.dumps({"signal_type": "pdq", "value": h, "quality": 70, "labels": ["csam"]}),
        "{not json",
        "[1, 2]",
        json.dumps({"signal_type": "pdq", "value": h, "colour": "red"}),
        json.dumps({"signal_type": "pdq", "value": 12}),
        json.dumps({"signal_type": "md5", "value": "0" * 32, "external_id": 991}),
        json.dumps({"value": "0" * 32}),
    ]
    good, bad = _split(_parse("\n".join(lines) + "\n"))
    assert [(e.signal_type, e.quality, e.labels) for e in good] == [
        (SignalType.PDQ, 70, ["csam"]),
        (SignalType.MD5, None, []),
    ]
    assert good[1].external_id == "991"
    assert [(e.line, e.message.split(":")[0]) for e in bad] == [
        (2, "not valid JSON"),
        (3, "expected a JSON object, got list"),
        (4, "unknown field(s) 'colour'; allowed"),
        (5, "value must be a string"),
        (7, "signal_type is missing"),
    ]


# -- python-threatexchange ----------------------------------------------------------------------


def test_pytx_lines_map_signal_names() -> None:
    h = _pdq()
    text = (
        "# threatexchange hash output\n"
        f"pdq {h}\n"
        "\n"
        "video_md5 D41D8CD98F00B204E9800998ECF8427E\n"
        f"video_sha256 {'ab' * 32}\n"
        "url_md5 d41d8cd98f00b204e9800998ecf8427e\n"  # line 6: not a Bastion type
        "pdq\n"  # line 7: no value
        "pdq 1234\n"  # line 8: too short
    )
    good, bad = _split(_parse(text))
    assert [(e.signal_type, e.value) for e in good] == [
        (SignalType.PDQ, h),
        (SignalType.MD5, "d41d8cd98f00b204e9800998ecf8427e"),
        (SignalType.SHA256, "ab" * 32),
    ]
    assert [e.line for e in bad] == [6, 7, 8]
    assert "unsupported signal type 'url_md5'" in bad[0].message
    assert "expected '<signal_type> <value>'" in bad[1].message


def test_pytx_names_match_the_installed_threatexchange() -> None:
    """The names we map are the names python-threatexchange itself prints."""
    from threatexchange.signal_type.md5 import VideoMD5Signal
    from threatexchange.signal_type.pdq.signal import PdqSignal
    from threatexchange.signal_type.sha256 import VideoSHA256Signal
    from threatexchange.signal_type.url import URLSignal

    from bastion.banks.formats import BASTION_TO_PYTX

    assert BASTION_TO_PYTX[SignalType.PDQ] == PdqSignal.get_name()
    assert BASTION_TO_PYTX[SignalType.MD5] == VideoMD5Signal.get_name()
    assert BASTION_TO_PYTX[SignalType.SHA256] == VideoSHA256Signal.get_name()
    assert BASTION_TO_PYTX[SignalType.URL] == URLSignal.get_name()


# -- streaming limits ---------------------------------------------------------------------------


def test_huge_line_is_rejected_alone_and_parsing_continues() -> None:
    h = _pdq()
    data = b"pdq " + b"a" * (MAX_LINE + 10) + b"\n" + f"pdq {h}\n".encode()
    good, bad = _split(_parse(data, "pytx"))
    assert [e.value for e in good] == [h]
    assert bad == [ParseError(1, f"line is longer than {MAX_LINE} bytes")]


def test_non_utf8_line_is_an_error_for_that_line_only() -> None:
    h = _pdq()
    data = b"pdq \xff\xfe\n" + f"pdq {h}\n".encode()
    good, bad = _split(_parse(data))
    assert [e.value for e in good] == [h]
    assert bad[0].line == 1 and "not valid UTF-8" in bad[0].message


def test_parse_is_lazy() -> None:
    """A generator over lines: the first entry arrives before the stream is read to its end."""

    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.lines = 0

        def readable(self) -> bool:
            return True

        def readline(self, size: int | None = -1) -> bytes:
            self.lines += 1
            return f"pdq {self.lines:064x}\n".encode()

    stream = Endless()
    it = parse(stream, "pytx")  # type: ignore[arg-type]
    first = next(it)
    assert isinstance(first, NewEntry)
    assert stream.lines < 10


# -- writing and round trips --------------------------------------------------------------------


def _sample() -> list[NewEntry]:
    return [
        NewEntry(
            SignalType.PDQ,
            _pdq(),
            quality=88,
            source="NCMEC",
            list_name="hash-sharing",
            external_id="a,1",  # a comma, to exercise CSV quoting
            added_at=datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC),
            labels=["csam", "A1"],
            metadata={"note": 'quoted "text", commas', "n": 3, "ü": True},
        ),
        NewEntry(SignalType.MD5, secrets.token_hex(16)),
        NewEntry(SignalType.SHA256, secrets.token_hex(32), labels=["ncii"]),
    ]


@pytest.mark.parametrize("fmt", [BankFormat.CSV, BankFormat.JSONL])
def test_round_trip_keeps_every_field(fmt: BankFormat) -> None:
    entries = _sample()
    text = write_string(entries, fmt)
    assert detect_format(text.splitlines()[0]) is fmt
    good, bad = _split(_parse(text))
    assert bad == []
    assert good == entries


def test_round_trip_pytx_keeps_type_and_value() -> None:
    entries = _sample()
    out = io.StringIO()
    assert write(entries, "pytx", out) == 3
    assert out.getvalue().splitlines()[1].startswith("video_md5 ")
    good, bad = _split(_parse(out.getvalue()))
    assert bad == []
    assert [(e.signal_type, e.value) for e in good] == [(e.signal_type, e.value) for e in entries]
    assert all(e.source == "" and e.labels == [] for e in good)


def test_csv_export_has_the_documented_header() -> None:
    header = write_string([], "csv").strip()
    assert header == (
        "signal_type,value,quality,url_match,external_id,source,list,added_at,labels,metadata"
    )


# -- limits and robustness ----------------------------------------------------------------------


def _longest_vpdq() -> str:
    """A canonical vPDQ value just under MAX_VALUE characters: a ~3.5-hour video at 1 fps."""
    from bastion.banks.model import MAX_VALUE
    from bastion.signals.base import VideoFrame
    from bastion.signals.video import serialize_frames

    one = len(serialize_frames([VideoFrame("0" * 64, 100, 1.5)]))
    frame_len = len(serialize_frames([VideoFrame("0" * 64, 100, 1.5)] * 2)) - one
    frames = [VideoFrame(_pdq(), 100, 1.5) for _ in range((MAX_VALUE - one) // frame_len + 1)]
    value = serialize_frames(frames)
    assert MAX_VALUE - 2 * frame_len < len(value) <= MAX_VALUE
    return value


@pytest.mark.parametrize("fmt", [BankFormat.CSV, BankFormat.JSONL, BankFormat.PYTX])
def test_the_largest_entry_round_trips(fmt: BankFormat) -> None:
    """Every field at its limit, in 4-byte UTF-8 where text is free: the line an export writes
    must still be under MAX_LINE, and no CSV field limit may reject it (the csv module's default
    131 072 characters used to reject long vPDQ values)."""
    from bastion.banks.model import MAX_LABEL, MAX_LABELS, MAX_METADATA, MAX_TEXT, normalize_entry

    wide = "\U0001f600"  # 4 bytes in UTF-8
    entry = normalize_entry(
        NewEntry(
            SignalType.VPDQ,
            _longest_vpdq(),
            quality=100,
            external_id=wide * MAX_TEXT,
            source=wide * MAX_TEXT,
            list_name=wide * MAX_TEXT,
            labels=[f"{i:02}" + wide * (MAX_LABEL - 2) for i in range(MAX_LABELS)],
            metadata={"k": wide * (MAX_METADATA - 10)},
            added_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
    )
    text = write_string([entry], fmt)
    longest = max(len(line.encode()) for line in text.splitlines())
    assert longest <= MAX_LINE, longest
    assert longest > (900_000 if fmt is BankFormat.PYTX else 1_200_000)  # limits were reached
    good, bad = _split(_parse(text.encode(), fmt))
    assert bad == []
    if fmt is BankFormat.PYTX:
        assert [e.value for e in good] == [entry.value]
    else:
        assert good == [entry]


def test_pytx_write_refuses_url_entries_it_cannot_express() -> None:
    from bastion.banks.formats import pytx_can_carry

    exact = NewEntry(SignalType.URL, "example.com/a", url_match="url")
    domain = NewEntry(SignalType.URL, "example.com", url_match="domain")
    assert pytx_can_carry(exact) and pytx_can_carry(NewEntry(SignalType.PDQ, _pdq()))
    assert not pytx_can_carry(domain)
    assert write_string([exact], "pytx") == "url example.com/a\n"
    with pytest.raises(ValueError, match="pytx format has no url_match"):
        write_string([domain], "pytx")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_deep_json_is_a_per_line_error(fmt: str) -> None:
    deep = "[" * 200_000
    pdq = _pdq()
    if fmt == "csv":
        text = f"signal_type,value,metadata\npdq,{_pdq()},{deep}\npdq,{pdq},\n"
    else:
        text = deep + "\n" + json.dumps({"signal_type": "pdq", "value": pdq}) + "\n"
    good, bad = _split(_parse(text, fmt))
    assert [e.value for e in good] == [pdq]
    assert len(bad) == 1 and bad[0].line == (2 if fmt == "csv" else 1)
    assert "nested too deeply" in bad[0].message


def test_added_at_overflow_is_a_per_line_error() -> None:
    text = (
        "signal_type,value,added_at\n"
        f"pdq,{_pdq()},0001-01-01T00:00:00+14:00\n"
        f"pdq,{_pdq()},2024-01-01T00:00:00+14:00\n"
    )
    good, bad = _split(_parse(text))
    assert len(good) == 1
    assert [(b.line, "out of range" in b.message) for b in bad] == [(2, True)]


@pytest.mark.parametrize("fmt", [None, "csv", "jsonl", "pytx"])
def test_binary_junk_yields_errors_and_never_raises(fmt: str | None) -> None:
    import random

    rng = random.Random(11)
    for _ in range(20):
        data = rng.randbytes(rng.randrange(1, 5000))
        if fmt == "csv":
            data = b"signal_type,value,metadata,added_at,quality\n" + data
        items = _parse(data, fmt)
        assert all(isinstance(i, ParseError) for i in items)

"""Importing files: per-line errors, failures midway, exports that re-import, bounded memory."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.banks.errors import ImportAborted
from bastion.banks.formats import BankFormat
from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.signals.base import SignalType
from bastion.store import BankNotFound, InvalidInput
from tests.fixtures.stores import Database


def _pdq() -> str:
    return secrets.token_hex(32)


def _values(store: Store, bank: str) -> set[tuple[str, str]]:
    return {(e.signal_type.value, e.value) for e in store.iter_entries(banks=[bank])}


@pytest.fixture
def seeded(store: Store, make_bank: Callable[..., str]) -> tuple[str, set[tuple[str, str]]]:
    """A bank that already holds entries an import must never damage."""
    bank = make_bank()
    store.add_entries(
        bank, [NewEntry(SignalType.PDQ, _pdq(), external_id=f"old-{i}") for i in range(3)]
    )
    return bank, _values(store, bank)


def _csv(good: list[str]) -> str:
    return (
        "signal_type,value,quality,external_id,labels\n"
        f"pdq,{good[0]},90,c1,csam\n"
        "pdq,nothex,,c2,\n"
        f"md5,{good[1][:32]},5,c3,\n"
        "sha1,abc,,c4,\n"
        f"pdq,{good[2]},,c5,csam;A1\n"
    )


def _jsonl(good: list[str]) -> str:
    return (
        "\n".join(
            [
                json.dumps({"signal_type": "pdq", "value": good[0], "quality": 90}),
                "{oops",
                json.dumps({"signal_type": "pdq", "value": good[1], "extra": 1}),
                json.dumps({"signal_type": "pdq", "value": good[2], "labels": ["csam"]}),
                json.dumps({"signal_type": "pdq", "value": good[2][:-2]}),
            ]
        )
        + "\n"
    )


def _pytx(good: list[str]) -> str:
    return f"# comment\npdq {good[0]}\npdq\nurl_md5 {good[1][:32]}\npdq {good[2]}\npdq xyz\n"


@pytest.mark.parametrize(
    ("fmt", "maker", "stored", "bad_lines"),
    [
        ("csv", _csv, [0, 2], [3, 4, 5]),
        ("jsonl", _jsonl, [0, 2], [2, 3, 5]),
        ("pytx", _pytx, [0, 2], [3, 4, 6]),
    ],
)
def test_import_each_format_with_bad_lines(
    store: Store,
    seeded: tuple[str, set[tuple[str, str]]],
    tmp_path: Path,
    fmt: str,
    maker: Callable[[list[str]], str],
    stored: list[int],
    bad_lines: list[int],
) -> None:
    bank, before = seeded
    good = [_pdq() for _ in range(3)]
    path = tmp_path / f"list.{fmt}"
    path.write_text(maker(good))
    report = store.import_file(bank, path)  # format detected from the content
    assert report.added == len(stored)
    assert report.error_count == len(bad_lines)
    assert [int(e.split(":")[0].removeprefix("line ")) for e in report.errors] == bad_lines
    assert _values(store, bank) == before | {("pdq", good[i]) for i in stored}
    # The same file again: everything good is now a duplicate, nothing changes.
    again = store.import_file(bank, str(path), fmt)
    assert (again.added, again.duplicates, again.error_count) == (0, len(stored), len(bad_lines))
    assert _values(store, bank) == before | {("pdq", good[i]) for i in stored}


def test_import_keeps_provenance_fields(store: Store, make_bank: Callable[..., str]) -> None:
    bank = make_bank()
    h = _pdq()
    line = json.dumps(
        {
            "signal_type": "pdq",
            "value": h,
            "quality": 64,
            "external_id": "x-9",
            "source": "NCMEC",
            "list": "hash-sharing",
            "added_at": "2022-02-02T02:02:02+00:00",
            "labels": ["csam", "A1"],
            "metadata": {"k": "v"},
        }
    )
    assert store.import_file(bank, io.StringIO(line + "\n"), "jsonl").added == 1
    [e] = store.find_entries(bank, external_id="x-9")
    assert (e.value, e.quality, e.source, e.list_name, e.labels, e.metadata) == (
        h,
        64,
        "NCMEC",
        "hash-sharing",
        ["csam", "A1"],
        {"k": "v"},
    )
    assert e.added_at.isoformat() == "2022-02-02T02:02:02+00:00"


def test_malformed_header_stores_nothing_and_keeps_existing(
    store: Store, seeded: tuple[str, set[tuple[str, str]]]
) -> None:
    bank, before = seeded
    report = store.import_file(
        bank, io.BytesIO(f"signal_type,value,colour\npdq,{_pdq()},red\n".encode())
    )
    assert report.added == 0
    assert report.errors == [
        "line 1: unknown CSV column(s) 'colour'; allowed: signal_type, value, quality, url_match, "
        "external_id, source, list, added_at, labels, metadata"
    ]
    assert _values(store, bank) == before


def test_unrecognisable_file_is_one_error(
    store: Store, seeded: tuple[str, set[tuple[str, str]]]
) -> None:
    bank, before = seeded
    report = store.import_file(bank, io.StringIO("\n\nhello there\npdq " + _pdq() + "\n"))
    assert report.added == 0
    assert report.error_count == 1 and report.errors[0].startswith("line 3: unrecognised")
    assert _values(store, bank) == before


def test_import_into_missing_bank_reads_nothing(store: Store) -> None:
    stream = io.StringIO("pdq " + _pdq() + "\n")
    with pytest.raises(BankNotFound):
        store.import_file("absent", stream)
    assert stream.tell() == 0


class FailingStream(io.RawIOBase):
    """Serves good pytx lines, then fails like a dropped network mount."""

    def __init__(self, values: list[str], fail_after: int) -> None:
        self.values = values
        self.fail_after = fail_after
        self.served = 0

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        if self.served == self.fail_after:
            raise OSError("connection reset while reading the list")
        if self.served == len(self.values):
            return b""
        self.served += 1
        return f"pdq {self.values[self.served - 1]}\n".encode()


def test_import_failing_midway_keeps_earlier_batches_and_existing(
    store: Store, seeded: tuple[str, set[tuple[str, str]]]
) -> None:
    bank, before = seeded
    version = store.get_bank(bank).version
    values = [_pdq() for _ in range(25)]
    with pytest.raises(ImportAborted, match="stopped after 20 added entries") as info:
        store.import_file(bank, FailingStream(values, fail_after=23), "pytx", batch_size=10)
    assert info.value.report.added == 20
    assert info.value.report.batches == 2
    assert isinstance(info.value.__cause__, OSError)
    # Two full batches are committed; the three lines of the unfinished batch are not.
    assert _values(store, bank) == before | {("pdq", v) for v in values[:20]}
    assert store.get_bank(bank).version == version + 2
    # Resuming with the whole file adds only what is missing.
    report = store.import_file(bank, FailingStream(values, fail_after=-1), "pytx", batch_size=10)
    assert (report.added, report.duplicates) == (5, 20)


@pytest.mark.parametrize("fmt", list(BankFormat))
def test_export_round_trip(store: Store, make_bank: Callable[..., str], fmt: BankFormat) -> None:
    src = make_bank("source-bank")
    entries = [
        NewEntry(
            SignalType.PDQ,
            _pdq(),
            quality=70,
            source="IWF",
            list_name="l1",
            external_id="e,1",
            labels=["csam"],
            metadata={"w": 1, "s": 'a "b"'},
        ),
        NewEntry(SignalType.MD5, secrets.token_hex(16)),
        NewEntry(SignalType.SHA256, secrets.token_hex(32), external_id="s2"),
        NewEntry(
            SignalType.URL,
            "https://Example.com/some/path",
            # pytx cannot say "prefix": such exports are refused (see the test below)
            url_match=None if fmt is BankFormat.PYTX else "prefix",
        ),
        NewEntry(SignalType.VPDQ, json.dumps([f"{_pdq()},100,0.0", f"{_pdq()},95,1.0"])),
    ]
    store.add_entries(src, entries)
    store.disable_entry(src, "s2")
    out = io.StringIO()
    assert store.export(src, fmt, out) == 4  # disabled entries stay out unless asked for
    dst = make_bank("copy")
    report = store.import_file(dst, io.StringIO(out.getvalue()))
    assert (report.added, report.error_count) == (4, 0)

    def key(e: object) -> tuple[object, ...]:
        fields = ["signal_type", "value"]
        if fmt is not BankFormat.PYTX:
            fields += [
                "quality",
                "url_match",
                "source",
                "list_name",
                "external_id",
                "added_at",
                "labels",
                "metadata",
            ]
        return tuple(getattr(e, f) for f in fields)

    original = sorted((key(e) for e in store.iter_entries(banks=[src])), key=str)
    copied = sorted((key(e) for e in store.iter_entries(banks=[dst])), key=str)
    assert copied == original
    everything = io.StringIO()
    assert store.export(src, fmt, everything, include_disabled=True) == 5


def test_pytx_export_refuses_prefix_and_domain_entries_before_writing(
    store: Store, make_bank: Callable[..., str]
) -> None:
    bank = make_bank()
    store.add_entries(
        bank,
        [
            NewEntry(SignalType.PDQ, _pdq()),
            NewEntry(SignalType.URL, "example.com/exact"),
            NewEntry(SignalType.URL, "*.bad.example", url_match="domain", external_id="d"),
        ],
    )
    out = io.StringIO()
    with pytest.raises(InvalidInput, match="1 url entries matching by prefix or domain"):
        store.export(bank, "pytx", out)
    assert out.getvalue() == ""
    store.disable_entry(bank, "d")
    assert store.export(bank, "pytx", out) == 2  # the disabled domain entry is not exported
    with pytest.raises(InvalidInput, match="pytx format cannot express"):
        store.export(bank, "pytx", io.StringIO(), include_disabled=True)


def test_export_fails_before_writing_anything(
    store: Store, make_bank: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = make_bank()
    store.add_entries(bank, [NewEntry(SignalType.PDQ, _pdq())])
    out = io.StringIO()
    with pytest.raises(InvalidInput, match="unknown bank file format 'xml'"):
        store.export(bank, "xml", out)
    with pytest.raises(BankNotFound):
        store.export("no-such-bank", "csv", out)

    def broken_query(**_: object) -> Iterator[object]:
        raise ConnectionError("database went away")
        yield  # a generator, like the real one: it fails on the first next()

    monkeypatch.setattr(store, "_iter", broken_query)
    with pytest.raises(ConnectionError):
        store.export(bank, "csv", out)  # the header would be written first, were it not checked
    assert out.getvalue() == ""


def test_import_file_reports_unreadable_paths(
    store: Store, make_bank: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = make_bank()
    with pytest.raises(InvalidInput, match="it is a directory"):
        store.import_file(bank, tmp_path)
    with pytest.raises(InvalidInput, match="No such file"):
        store.import_file(bank, tmp_path / "missing.csv")
    locked = tmp_path / "locked.txt"
    locked.write_text(f"pdq {_pdq()}\n")

    def deny(self: Path, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", deny)  # chmod does not stop root, who runs CI here
    with pytest.raises(InvalidInput, match=r"cannot read .*locked\.txt.*Permission denied"):
        store.import_file(bank, locked)


@pytest.mark.parametrize("fmt", [None, "csv", "jsonl", "pytx"])
def test_binary_junk_gives_per_line_errors(
    store: Store, make_bank: Callable[..., str], tmp_path: Path, fmt: str | None
) -> None:
    import random

    bank = make_bank()
    rng = random.Random(5)
    good = [_pdq() for _ in range(3)]
    header = b"signal_type,value\n" if fmt == "csv" else b""
    line = {"csv": "pdq,{}\n", "jsonl": '{{"signal_type":"pdq","value":"{}"}}\n'}.get(
        fmt or "", "pdq {}\n"
    )
    path = tmp_path / "junk.bin"
    with path.open("wb") as fh:
        fh.write(header + line.format(good[0]).encode())
        for _ in range(50):
            fh.write(rng.randbytes(rng.randrange(1, 3000)) + b"\x00\xff\n")
        fh.write(line.format(good[1]).encode())
        fh.write(rng.randbytes(200_000).replace(b"\n", b""))  # one long line, no newline
        fh.write(b"\n" + line.format(good[2]).encode())
    report = store.import_file(bank, path, fmt, batch_size=1000)
    assert report.error_count >= 50
    assert report.added == 3
    assert {v for _, v in _values(store, bank)} == set(good)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_deeply_nested_json_is_a_line_error_not_an_aborted_import(
    store: Store, make_bank: Callable[..., str], fmt: str
) -> None:
    bank = make_bank()
    good = [_pdq() for _ in range(4)]
    deep = "[" * 200_000
    if fmt == "csv":
        rows = [f"pdq,{good[0]},", f"pdq,{good[1]},{deep}", f"pdq,{good[2]},", f"pdq,{good[3]},"]
        rows.insert(2, 'pdq,{},"{}"'.format(_pdq(), '{""a"":' * 50 + "1" + "}" * 50))
        text = "signal_type,value,metadata\n" + "\n".join(rows) + "\n"
    else:
        rows = [json.dumps({"signal_type": "pdq", "value": v}) for v in good]
        rows.insert(1, deep)
        rows.insert(2, '{"signal_type":"pdq","value":"' + _pdq() + '","metadata":' + deep + "]}")
        text = "\n".join(rows) + "\n"
    # One batch: an escaping RecursionError used to drop the whole unflushed batch.
    report = store.import_file(bank, io.StringIO(text), fmt, batch_size=1000)
    assert report.added == (3 if fmt == "csv" else 4)
    assert report.error_count == 2, report.errors
    assert all("nested" in e for e in report.errors), report.errors
    assert good[0] in {v for _, v in _values(store, bank)}


def test_unexpected_exceptions_on_one_line_do_not_abort_the_import(
    store: Store, make_bank: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.banks.formats as formats

    bank = make_bank()
    good = [_pdq() for _ in range(5)]
    real = formats.normalize_entry

    def flaky(entry: NewEntry) -> NewEntry:
        if entry.value == good[2]:
            raise KeyError("surprise")
        return real(entry)

    monkeypatch.setattr(formats, "normalize_entry", flaky)
    text = "".join(f"pdq {v}\n" for v in good)
    report = store.import_file(bank, io.StringIO(text), "pytx", batch_size=1000)
    assert report.added == 4
    assert report.errors == ["line 3: cannot read line: KeyError: 'surprise'"]


LINES = 200_000

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from bastion.db import Store

    url, schema, path = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    store = Store.open(url, schema=schema)
    store.create_bank("big")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = store.import_file("big", path, batch_size=5000)
    after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = sum(1 for _ in store.iter_entries(batch=5000))
    after_iter = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"added": report.added, "errors": report.error_count, "count": count,
                      "import_kb": after_import - base, "iter_kb": after_iter - base}))
    store.close()
    """
)


def _pdq_lines(n: int) -> Iterator[str]:
    import random

    rng = random.Random(7)
    for _ in range(n):
        yield f"pdq {rng.getrandbits(256):064x}\n"


@pytest.mark.slow  # a subprocess imports a large list and measures its peak memory
def test_large_import_streams_in_bounded_memory(db: Database, tmp_path: Path) -> None:
    """200k lines through import and iter_entries in a fresh process, whose peak RSS growth must
    stay far below the ~75 MB that merely holding 200k parsed entries takes."""
    path = tmp_path / "big.txt"
    with path.open("w") as fh:
        fh.writelines(_pdq_lines(LINES))
    db.open().close()  # create the PostgreSQL schema; the child process migrates nothing new
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, db.url, db.schema or "", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["added"], result["errors"], result["count"]) == (LINES, 0, LINES)
    assert result["import_kb"] < 30_000, result
    assert result["iter_kb"] < 30_000, result

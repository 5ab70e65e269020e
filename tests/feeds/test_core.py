"""The pure feed core: canonical records, Ed25519 signatures, Merkle roots, and tampering."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime

import pytest

from bastion.feeds import (
    EMPTY_ROOT,
    AddRecord,
    BadSignature,
    KeyFormatError,
    RecordError,
    RemoveRecord,
    SigningKey,
    VerifyKey,
    VersionStatement,
    add_record,
    canonical,
    fingerprint,
    leaf_hash,
    merkle_root,
    parse_record,
    parse_statement,
    rfc6962_root,
)


def _rec(key: str = "1", value: str | None = None, **kw: object) -> AddRecord:
    fields: dict = {
        "feed": "shared",
        "publisher": "Org A",
        "key": key,
        "signal_type": "pdq",
        "value": value or secrets.token_hex(32),
        "url_match": None,
        "labels": ["test", "ncmec:A1"],
        "list_name": "list-1",
        "source": "",
        "added_at": datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
        "revision": 7,
    }
    fields.update(kw)
    return add_record(**fields)


def test_canonical_form_is_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()
    with pytest.raises(RecordError):
        canonical({"x": float("nan")})


def test_add_record_round_trip_and_fields() -> None:
    rec = _rec()
    data = rec.encode()
    doc = json.loads(data)
    assert set(doc) == {
        "feed", "publisher", "key", "op", "signal_type", "value", "url_match", "labels",
        "list", "source", "added_at", "revision",
    }  # fmt: skip
    assert doc["revision"] == 7
    assert doc["op"] == "add" and doc["source"] == "Org A"  # empty source: the publisher
    assert doc["added_at"] == "2026-01-02T03:04:05+00:00"
    assert parse_record(data) == rec
    removal = RemoveRecord("shared", "Org A", "7", 42)
    assert parse_record(removal.encode()) == removal


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b"[]",
        b'{"op":"add"}',
        b'{"op":"frob","key":"1"}',
        # not canonical: spaces, key order
        b'{"feed": "f", "key": "1", "op": "remove", "publisher": "p", "revision": 1}',
        b'{"op":"remove","feed":"f","key":"1","publisher":"p","revision":1}',
        b'{"feed":"f","key":"1","op":"remove","publisher":"p","revision":-1}',
        b'{"feed":"f","key":"1","op":"remove","publisher":"p","revision":1,"x":1}',
        b'{"feed":"f","key":"","op":"remove","publisher":"p","revision":1}',
        # nested past the parser's recursion limit: a RecordError, not a RecursionError
        b"[" * 200_000 + b"]" * 200_000,
        b'{"op":"remove","x":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    ],
)
def test_malformed_records_are_refused(text: bytes) -> None:
    with pytest.raises(RecordError):
        parse_record(text)


def test_deeply_nested_statement_is_refused() -> None:
    with pytest.raises(RecordError):
        parse_statement(b'{"feed":' + b"[" * 200_000 + b"]" * 200_000 + b"}")


def test_signatures_verify_and_tampering_fails() -> None:
    key = SigningKey.generate()
    pinned = VerifyKey.from_text(key.public.text)
    assert pinned == key.public and pinned.fingerprint == fingerprint(key.public.raw)
    assert VerifyKey.from_text(key.public.raw.hex()) == pinned  # hex works too
    assert "fingerprint" in repr(key) and key.raw().hex() not in repr(key)
    rec = _rec(value="a" * 64)
    sig = key.sign_record(rec.encode())
    pinned.verify_record(rec.encode(), sig)
    # A changed value, a swapped key, a reordered label list: each breaks the signature.
    for changed in (
        _rec(value="b" + "a" * 63),
        _rec(key="2", value="a" * 64),
        _rec(value="a" * 64, labels=["ncmec:A1", "test"]),
    ):
        assert changed.encode() != rec.encode()
        with pytest.raises(BadSignature):
            pinned.verify_record(changed.encode(), sig)
    # Another publisher's key does not verify it; nor does a record signature a statement.
    with pytest.raises(BadSignature):
        SigningKey.generate().public.verify_record(rec.encode(), sig)
    with pytest.raises(BadSignature):
        pinned.verify_statement(rec.encode(), sig)
    with pytest.raises(BadSignature):
        pinned.verify_record(rec.encode(), "not base64!")


def test_key_formats() -> None:
    for bad in ("", "abc", "00" * 31, "A" * 44 + "==", "zz" * 32):
        with pytest.raises(KeyFormatError):
            VerifyKey.from_text(bad)
    key = SigningKey.generate()
    assert SigningKey.from_raw(key.raw()).public == key.public


def test_version_statement_round_trip() -> None:
    key = SigningKey.generate()
    st = VersionStatement("shared", "Org A", 3, 120, "ab" * 32, 5)
    sig = key.sign_statement(st.encode())
    key.public.verify_statement(st.encode(), sig)
    assert parse_statement(st.encode()) == st
    forged = VersionStatement("shared", "Org A", 3, 120, "cd" * 32, 5)
    with pytest.raises(BadSignature):
        key.public.verify_statement(forged.encode(), sig)
    with pytest.raises(RecordError):
        parse_statement(VersionStatement("f", "p", 1, 1, "XY" * 32, 0).encode())


def test_merkle_root_known_values_and_rfc6962() -> None:
    assert merkle_root([]) == (EMPTY_ROOT, 0)
    assert hashlib.sha256(b"").hexdigest() == EMPTY_ROOT
    one = b'{"x":1}'
    assert merkle_root([one])[0] == hashlib.sha256(b"\x00" + one).hexdigest()
    a, b = sorted([leaf_hash(b"1"), leaf_hash(b"2")])
    assert merkle_root([b"2", b"1"])[0] == hashlib.sha256(b"\x01" + a + b).hexdigest()
    for n in range(1, 40):
        records = [f"r{i}".encode() for i in range(n)]
        root, count = merkle_root(records)
        assert count == n and root == rfc6962_root(records)
    # Order does not matter; content does.
    records = [_rec(key=str(i)).encode() for i in range(11)]
    assert merkle_root(records) == merkle_root(list(reversed(records)))
    assert merkle_root(records)[0] != merkle_root(records[:-1])[0]
    tampered = [*records[:-1], records[-1].replace(b'"list-1"', b'"list-2"')]
    assert merkle_root(tampered)[0] != merkle_root(records)[0]

"""Feed records: the canonical bytes a publisher signs and a subscriber verifies.

A record is a small JSON object serialised canonically (keys sorted, no spaces, UTF-8, no NaN),
so two Bastions agree on its bytes, hence on its signature and its Merkle leaf, whatever JSON
library either uses. Records travel as that exact text; subscribers keep the text, never a
re-serialisation, so what they verify later is byte for byte what was signed.

Pure: no database or web imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: The ``op`` of a record that puts a signal on the list, and of one that takes it off.
ADD = "add"
REMOVE = "remove"
ADD_FIELDS = frozenset(
    {
        "feed",
        "publisher",
        "key",
        "op",
        "signal_type",
        "value",
        "url_match",
        "labels",
        "list",
        "source",
        "added_at",
        "revision",
    }
)
REMOVE_FIELDS = frozenset({"feed", "publisher", "key", "op", "revision"})
VERSION_FIELDS = frozenset({"feed", "publisher", "version", "revision", "root", "count"})


class RecordError(ValueError):
    """A record is malformed: not canonical JSON, a missing or extra field, a wrong type."""


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The canonical encoding: sorted keys, compact separators, UTF-8, no NaN or infinities."""
    try:
        text = json.dumps(
            doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # ValueError has UnicodeEncodeError
        raise RecordError(f"not canonically encodable: {type(exc).__name__}") from None


def iso(when: datetime) -> str:
    """A time as ISO 8601 in UTC to the second (``2026-01-02T03:04:05+00:00``): databases keep
    different sub-second precision, and the record must read the same from either."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True)
class AddRecord:
    """A signal on the list, with its provenance, as of the publisher's store ``revision`` (the
    last change to this signal in the feed). Subscribers reject a record whose revision lies
    outside what they asked for, so an old record cannot be replayed over a newer one."""

    feed: str
    publisher: str
    key: str
    signal_type: str
    value: str
    url_match: str | None
    labels: tuple[str, ...]
    list: str
    source: str
    added_at: str
    revision: int

    def doc(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "publisher": self.publisher,
            "key": self.key,
            "op": ADD,
            "signal_type": self.signal_type,
            "value": self.value,
            "url_match": self.url_match,
            "labels": list(self.labels),
            "list": self.list,
            "source": self.source,
            "added_at": self.added_at,
            "revision": self.revision,
        }

    def encode(self) -> bytes:
        return canonical(self.doc())


@dataclass(frozen=True, slots=True)
class RemoveRecord:
    """A record taken off the list (removed or disabled by the publisher) at ``revision``."""

    feed: str
    publisher: str
    key: str
    revision: int

    def doc(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "publisher": self.publisher,
            "key": self.key,
            "op": REMOVE,
            "revision": self.revision,
        }

    def encode(self) -> bytes:
        return canonical(self.doc())


@dataclass(frozen=True, slots=True)
class VersionStatement:
    """What a feed holds at a version: the Merkle root and count of its add records as of the
    publisher's store ``revision``."""

    feed: str
    publisher: str
    version: int
    revision: int
    root: str
    count: int

    def doc(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "publisher": self.publisher,
            "version": self.version,
            "revision": self.revision,
            "root": self.root,
            "count": self.count,
        }

    def encode(self) -> bytes:
        return canonical(self.doc())


Record = AddRecord | RemoveRecord


#: What a hostile JSON text can make the parser raise: malformed text (ValueError, which
#: includes UnicodeDecodeError), nesting too deep for the parser (RecursionError), or a text
#: that expands beyond memory (MemoryError).
JSON_ERRORS = (ValueError, RecursionError, MemoryError)


def _load(data: bytes | str, fields: frozenset[str], what: str) -> dict[str, Any]:
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except JSON_ERRORS:
        raise RecordError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{what} is not a JSON object")
    missing, extra = fields - doc.keys(), doc.keys() - fields
    if missing or extra:
        raise RecordError(
            f"{what} fields differ: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    if canonical(doc) != raw:
        raise RecordError(f"{what} is not in canonical form")
    return doc


def _text(doc: Mapping[str, Any], name: str, *, empty: bool = True) -> str:
    value = doc[name]
    if not isinstance(value, str) or (not empty and not value):
        raise RecordError(f"record field {name!r} must be {'' if empty else 'non-empty '}text")
    return value


def _int(doc: Mapping[str, Any], name: str) -> int:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"field {name!r} must be a non-negative integer")
    return value


def parse_record(data: bytes | str) -> Record:
    """The record ``data`` encodes, or :class:`RecordError`. Only canonical text is accepted:
    anything else could not be the text the publisher signed and hashed."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        op = json.loads(raw.decode("utf-8")).get("op")
    except (*JSON_ERRORS, AttributeError):
        raise RecordError("record is not a JSON object") from None
    if op == REMOVE:
        doc = _load(raw, REMOVE_FIELDS, "remove record")
        return RemoveRecord(
            feed=_text(doc, "feed", empty=False),
            publisher=_text(doc, "publisher"),
            key=_text(doc, "key", empty=False),
            revision=_int(doc, "revision"),
        )
    if op != ADD:
        raise RecordError(f"record op must be {ADD!r} or {REMOVE!r}")
    doc = _load(raw, ADD_FIELDS, "add record")
    labels = doc["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise RecordError("record field 'labels' must be a list of text")
    url_match = doc["url_match"]
    if url_match is not None and not isinstance(url_match, str):
        raise RecordError("record field 'url_match' must be text or null")
    return AddRecord(
        feed=_text(doc, "feed", empty=False),
        publisher=_text(doc, "publisher"),
        key=_text(doc, "key", empty=False),
        signal_type=_text(doc, "signal_type", empty=False),
        value=_text(doc, "value", empty=False),
        url_match=url_match,
        labels=tuple(labels),
        list=_text(doc, "list"),
        source=_text(doc, "source"),
        added_at=_text(doc, "added_at", empty=False),
        revision=_int(doc, "revision"),
    )


def parse_statement(data: bytes | str) -> VersionStatement:
    doc = _load(data, VERSION_FIELDS, "version statement")
    root = _text(doc, "root", empty=False)
    if len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
        raise RecordError("version statement root must be 64 lowercase hex characters")
    return VersionStatement(
        feed=_text(doc, "feed", empty=False),
        publisher=_text(doc, "publisher"),
        version=_int(doc, "version"),
        revision=_int(doc, "revision"),
        root=root,
        count=_int(doc, "count"),
    )


def add_record(
    *,
    feed: str,
    publisher: str,
    key: str,
    signal_type: str,
    value: str,
    url_match: str | None,
    labels: Sequence[str],
    list_name: str,
    source: str,
    added_at: datetime,
    revision: int,
) -> AddRecord:
    """An add record from a bank entry's fields (``source`` falls back to the publisher)."""
    return AddRecord(
        feed=feed,
        publisher=publisher,
        key=key,
        signal_type=signal_type,
        value=value,
        url_match=url_match or None,
        labels=tuple(labels),
        list=list_name,
        source=source or publisher,
        added_at=iso(added_at),
        revision=int(revision),
    )

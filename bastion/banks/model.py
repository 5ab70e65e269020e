"""Bank domain model: banks, their entries, and the validation every entry passes before storage.

Pure: no database or web imports. The store and the import formats both funnel entries through
:func:`normalize_entry`, so anything stored has one canonical form and any bad field is rejected
with a message that names it, before it can reach (and abort) a database transaction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from bastion.signals.base import SignalType

BANK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$", re.IGNORECASE)
_HEX_RE = re.compile(r"^[0-9a-f]+$")
_HEX_LENGTHS = {SignalType.PDQ: 64, SignalType.MD5: 32, SignalType.SHA256: 64}
# Identity entries are HMAC-SHA256 digests (bastion.identity): never the identifier itself.
_HEX_LENGTHS.update({t: 64 for t in (SignalType.EMAIL, SignalType.USERNAME)})
_HEX_LENGTHS.update({t: 64 for t in (SignalType.PHONE, SignalType.IP)})

#: Column widths shared with the store schema; checked here so a long field is a per-entry error
#: rather than a database error that would abort a whole batch.
MAX_TEXT = 255
MAX_LABEL = 64
MAX_LABELS = 64
MAX_VALUE = 1_000_000
MAX_METADATA = 64_000
MAX_METADATA_DEPTH = 32


class UrlMatch(StrEnum):
    """How a ``url`` entry matches: the exact normalised URL, any URL under it, or a domain."""

    URL = "url"
    PREFIX = "prefix"
    DOMAIN = "domain"


def _short(value: object, limit: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def validate_bank_name(name: str) -> str:
    """Return the bank name lowercased, or raise ValueError. Names are used in URLs and CLIs."""
    if not isinstance(name, str) or not BANK_NAME_RE.match(name):
        raise ValueError(
            f"invalid bank name {_short(name)}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name.lower()


def parse_signal_type(name: str | SignalType) -> SignalType:
    """Map a signal type name to :class:`SignalType`, with an error listing the valid names."""
    if isinstance(name, SignalType):
        return name
    try:
        return SignalType(str(name).strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in SignalType)
        raise ValueError(f"unknown signal type {_short(name)} (expected one of: {valid})") from None


def _check_text(what: str, value: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    if not _is_unicode(value):
        raise ValueError(f"{what} is not valid Unicode text (it has a lone surrogate)")
    return value


def _is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON's ``"\\ud800"`` decodes to one): no
    database or JSON response can carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_value(
    signal_type: SignalType | str, value: str, url_match: UrlMatch | str | None = None
) -> str:
    """Return the canonical form of ``value`` for ``signal_type`` or raise ValueError saying why.

    Canonical: lowercase hex for pdq/md5/sha256, the serialised frame list (as
    python-threatexchange writes it) for vpdq, and for url the pattern
    :func:`bastion.signals.url.normalize_url_entry` gives for ``url_match`` (default ``url``), so
    every stored url entry is one the URL index accepts.
    """
    st = parse_signal_type(signal_type)
    if not isinstance(value, str):
        raise ValueError(f"{st} value must be a string, got {type(value).__name__}")
    if len(value) > MAX_VALUE:
        raise ValueError(f"{st} value is longer than {MAX_VALUE} characters")
    text = value.strip()
    if not text:
        raise ValueError(f"{st} value is empty")
    if st is SignalType.TEXT:
        from bastion.text.query import canonical_keyword

        return canonical_keyword(text)
    if st in _HEX_LENGTHS:
        want = _HEX_LENGTHS[st]
        hexed = text.lower()
        if len(hexed) != want or not _HEX_RE.match(hexed):
            # An identity value is never echoed: it may be an identifier sent by mistake.
            hint = " (an HMAC-SHA256 digest)" if st.is_identity else f": {_short(text)}"
            raise ValueError(
                f"{st} value must be {want} hexadecimal characters, got {len(hexed)} "
                f"characters{hint}"
            )
        return hexed
    if st is SignalType.URL:
        from bastion.signals.url import normalize_url_entry

        kind = _url_match(url_match)
        return _check_text("url value", normalize_url_entry(kind, text), MAX_VALUE)
    # vpdq
    from bastion.signals.video import parse_frames, serialize_frames

    frames = parse_frames(text)
    if not frames:
        raise ValueError("vpdq value has no frames")
    canonical = serialize_frames(frames)
    if len(canonical) > MAX_VALUE:  # re-serialising can lengthen terse input a little
        raise ValueError(f"{st} value is longer than {MAX_VALUE} characters once normalised")
    return canonical


def _url_match(url_match: object) -> str:
    if not url_match:
        return UrlMatch.URL.value
    try:
        if not isinstance(url_match, str):
            raise ValueError
        return UrlMatch(url_match.strip().lower()).value
    except ValueError:
        raise ValueError(
            f"url_match must be one of url, prefix, domain, got {_short(url_match)}"
        ) from None


def _utc(value: datetime | str | None, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{what} is not an ISO 8601 date/time: {_short(value)}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a date/time, got {type(value).__name__}")
    # Lists that give a bare date/time mean UTC; keeping everything aware avoids mixed comparisons.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError(f"{what} is out of range in UTC: {_short(value)}") from None


def normalize_labels(labels: Any) -> list[str]:
    """Strip, drop duplicates, keep order. Labels may not contain ';' (the CSV separator)."""
    if isinstance(labels, str) or not isinstance(labels, list | tuple | set | frozenset):
        raise ValueError(f"labels must be a list of strings, got {type(labels).__name__}")
    out: list[str] = []
    if not labels:
        return out
    for raw in labels:
        label = _check_text("label", raw, MAX_LABEL).strip()
        if not label:
            raise ValueError("labels may not be empty")
        if ";" in label or "\n" in label:
            raise ValueError(f"label {_short(label)} may not contain ';' or a newline")
        if label not in out:
            out.append(label)
    if len(out) > MAX_LABELS:
        raise ValueError(f"more than {MAX_LABELS} labels")
    return out


#: A keyword entry's ``language``: a BCP 47 tag (``en``, ``pt-BR``, ``zh-Hant``).
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}$")


def _keyword_metadata(st: SignalType, metadata: dict[str, Any]) -> dict[str, Any]:
    """A text entry may say its language in ``metadata.language`` (a BCP 47 tag)."""
    language = metadata.get("language")
    bad = not isinstance(language, str) or not _LANGUAGE_RE.match(language)
    if st is SignalType.TEXT and language is not None and bad:
        raise ValueError(
            f"language must be a BCP 47 tag such as en or pt-BR, got {_short(language)}"
        )
    return metadata


def normalize_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None or metadata == {}:
        return {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    _check_depth(metadata)
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata is not JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_METADATA:
        raise ValueError(f"metadata is larger than {MAX_METADATA} characters of JSON")
    if "\\u0000" in encoded:  # PostgreSQL JSONB cannot hold NUL
        raise ValueError("metadata contains a NUL character")
    if not _is_unicode(encoded):
        raise ValueError("metadata is not valid Unicode text (it has a lone surrogate)")
    return metadata


def _check_depth(obj: Any) -> None:
    """Bound nesting without recursing: JSON encoders recurse, and a deep enough object would
    raise RecursionError later, deep inside a database insert, aborting a whole batch."""
    stack = [(obj, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_METADATA:  # each value takes at least one character of JSON
            raise ValueError(f"metadata is larger than {MAX_METADATA} characters of JSON")
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to add to a bank: what the import formats produce and the store consumes.

    Frozen so that an entry, once validated by :func:`normalize_entry`, stays valid; the store
    then skips validating it again (a measurable share of a large import).
    """

    signal_type: SignalType
    value: str
    quality: int | None = None
    url_match: str | None = None
    source: str = ""
    list_name: str = ""
    external_id: str | None = None
    added_at: datetime | None = None
    labels: list[str] = field(default_factory=list)
    enabled: bool = True
    disabled_reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Set only by normalize_entry; dataclasses.replace() resets it, so edits get re-validated.
    canonical: bool = field(default=False, init=False, repr=False, compare=False)


def normalize_entry(entry: NewEntry) -> NewEntry:
    """Return a validated, canonical copy of ``entry`` or raise ValueError naming the bad field."""
    if entry.canonical:
        return entry
    st = parse_signal_type(entry.signal_type)
    url_match: str | None = entry.url_match or None
    if st is SignalType.URL:
        url_match = _url_match(url_match)
    elif url_match is not None:
        raise ValueError(f"url_match applies only to url entries, not {st}")
    value = validate_value(st, entry.value, url_match)
    quality = entry.quality
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, int):
            raise ValueError(f"quality must be an integer, got {_short(quality)}")
        if not st.is_perceptual:
            raise ValueError(f"quality applies only to pdq and vpdq entries, not {st}")
        if not 0 <= quality <= 100:
            raise ValueError(f"quality must be between 0 and 100, got {quality}")
    external_id = entry.external_id
    if external_id is not None:
        external_id = _check_text("external_id", str(external_id)).strip() or None
    if not isinstance(entry.enabled, bool):
        raise ValueError("enabled must be true or false")
    out = replace(
        entry,
        signal_type=st,
        value=value,
        quality=quality,
        url_match=url_match,
        source=_check_text("source", entry.source or "").strip(),
        list_name=_check_text("list", entry.list_name or "").strip(),
        external_id=external_id,
        added_at=_utc(entry.added_at, "added_at"),
        labels=normalize_labels(entry.labels or []),
        disabled_reason=_check_text("disabled_reason", entry.disabled_reason or "", 2000),
        metadata=_keyword_metadata(st, normalize_metadata(entry.metadata)),
    )
    object.__setattr__(out, "canonical", True)
    return out


@dataclass(slots=True)
class Bank:
    """A named hash list. ``version`` rises on every change to the bank or any of its entries."""

    id: int
    name: str
    description: str
    labels: list[str]
    source: str
    enabled: bool
    is_demo: bool
    created_at: datetime
    updated_at: datetime
    version: int
    #: Number of entries (enabled or not); filled by listings, None where not counted.
    entry_count: int | None = None
    #: ``block``: a list of what to find; ``allow``: known benign items whose matches suppress
    #: other banks' matches of the same content (see :mod:`bastion.banks.hygiene`).
    kind: str = "block"
    #: Signal type -> the largest distance that counts as a match of this bank's entries.
    thresholds: dict[str, int] = field(default_factory=dict)
    #: Matches per entry and hour past which an entry is quarantined from automatic actions.
    expected_rate: int | None = None

    @property
    def display_name(self) -> str:
        """Name for people: demo banks are always marked so no one mistakes them for real lists."""
        return f"{self.name} [DEMO]" if self.is_demo else self.name


BANK_KINDS = ("block", "allow")
#: Signal types a bank threshold applies to: the ones matched by distance.
THRESHOLD_TYPES = (SignalType.PDQ.value, SignalType.VPDQ.value)
#: Widest bank threshold: PDQ practice is 31, sometimes up to ~52-63 (the API's own limit).
MAX_BANK_THRESHOLD = 64
MAX_EXPECTED_RATE = 100_000_000


def validate_bank_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind.strip().lower() not in BANK_KINDS:
        raise ValueError(f"bank kind must be one of {', '.join(BANK_KINDS)}, got {_short(kind)}")
    return kind.strip().lower()


def validate_thresholds(thresholds: object) -> dict[str, int]:
    """A bank's per-signal-type distances: only distance-matched types, whole numbers 0-64."""
    if not isinstance(thresholds, dict):
        raise ValueError(f"thresholds must be an object, got {type(thresholds).__name__}")
    out: dict[str, int] = {}
    for key, value in thresholds.items():
        name = str(key).strip().lower()
        if name not in THRESHOLD_TYPES:
            raise ValueError(
                f"thresholds apply to {', '.join(THRESHOLD_TYPES)} only, not {_short(key)}"
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"threshold for {name} must be a whole number, got {_short(value)}")
        if not 0 <= value <= MAX_BANK_THRESHOLD:
            raise ValueError(f"threshold for {name} must be 0-{MAX_BANK_THRESHOLD}, got {value}")
        out[name] = value
    return out


def validate_expected_rate(rate: object) -> int | None:
    """Matches per entry and hour; None turns flood protection off for the bank."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_EXPECTED_RATE:
        raise ValueError(
            f"expected_rate must be a whole number 1-{MAX_EXPECTED_RATE} (or null), "
            f"got {_short(rate)}"
        )
    return rate


class IndexEntry(NamedTuple):
    """The part of an entry an in-memory index needs: a lean row, so loading millions is fast."""

    id: int
    bank: str
    signal_type: SignalType
    value: str
    url_match: str | None
    external_id: str | None
    labels: list[str]


@dataclass(slots=True)
class BankEntry:
    """A stored signal with its provenance. ``revision`` is the store-wide change counter."""

    id: int
    bank: str
    signal_type: SignalType
    value: str
    quality: int | None
    url_match: str | None
    source: str
    list_name: str
    external_id: str | None
    added_at: datetime
    labels: list[str]
    enabled: bool
    disabled_reason: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    revision: int = 0

    def to_new_entry(self) -> NewEntry:
        return NewEntry(
            signal_type=self.signal_type,
            value=self.value,
            quality=self.quality,
            url_match=self.url_match,
            source=self.source,
            list_name=self.list_name,
            external_id=self.external_id,
            added_at=self.added_at,
            labels=list(self.labels),
            enabled=self.enabled,
            disabled_reason=self.disabled_reason,
            metadata=dict(self.metadata),
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class ImportReport:
    """Outcome of an import. ``errors`` keeps the first ``max_errors`` messages; ``error_count``
    counts them all."""

    added: int = 0
    duplicates: int = 0
    error_count: int = 0
    errors: list[str] = field(default_factory=list)
    batches: int = 0
    max_errors: int = 100

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(message)

    @property
    def ok(self) -> bool:
        return self.error_count == 0


@dataclass(frozen=True, slots=True)
class EntryChange:
    """One entry's state at ``revision``. ``active`` False means drop it from any index: it was
    disabled, its bank was disabled, or it was removed (then ``entry`` is None). ``entry`` holds
    only what an index needs (see :meth:`Store.get_entry` for the whole row)."""

    entry_id: int
    bank: str
    signal_type: SignalType
    value: str
    revision: int
    active: bool
    entry: IndexEntry | None

    @property
    def removed(self) -> bool:
        return self.entry is None

"""NCMEC Hash Sharing API (v2): keep a bank in sync with an NCMEC hash list, send votes back.

The API (``GET /v2/status``, ``GET /v2/entries?from=&to=``, ``PUT /v2/entries/{member}/{id}/
{TYPE}/feedback``, ``GET /v2/feedback/{TYPE}/reasons``) answers XML, authenticates with HTTP
Basic, and has two habits that shape this module (both observed by python-threatexchange's
maintainers, facebook/ThreatExchange PR 1118 and issues 1679/1744):

* Entries in a time window do **not** come in time order, so progress can only be committed once
  a whole window ``(from, to]`` has been paged through. The checkpoint therefore holds the window
  and NCMEC's ``nextUrl`` while paging, and moves ``from`` to the window's end only when the last
  page of the window is applied.
* A paging URL is only valid for the exact window it was issued for, and may go stale. We resume
  with it only while it is young (``paging_url_max_age``); otherwise the window is fetched again
  from its start (upserts are idempotent, so a repeat costs time, never correctness).

Windows adapt: the first page of a window tells (through the ``start``/``max`` of its paging URL)
how many entries the window holds; a window with more than ``max_window_entries`` is shrunk
before paging, and windows that come back small grow again. A one-second window that still
holds too much is paged through anyway, checkpointing every page.

Pure: no database or web framework imports. XML is parsed with ``defusedxml`` with DTDs
forbidden (whatever the document's encoding), so a hostile server cannot make us expand
entities, and documents nested deeper than :data:`MAX_XML_DEPTH` are refused while parsing, so
nothing downstream can recurse without bound.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from xml.sax.saxutils import escape, quoteattr

import httpx
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from pydantic import Field, field_validator, model_validator

from bastion.banks.model import NewEntry, normalize_entry, normalize_labels
from bastion.exchanges.base import (
    Checkpoint,
    Exchange,
    ExchangeConfig,
    ExchangeContext,
    ExchangeCredentials,
    FeedbackItem,
    FeedbackUnsupported,
    Item,
    OnDelete,
    Page,
    PermanentError,
    Poisoned,
    PoisonedPage,
    Removal,
    TransientError,
    Upsert,
    Verdict,
    register,
)
from bastion.signals.base import SignalType

#: XML namespace of the v2 API's documents.
NAMESPACE = "https://hashsharing.ncmec.org/hashsharing/v2"
SOURCE = "NCMEC"

#: NCMEC's documented base URLs, one per database ("environment"); ``test-*`` are the test systems.
ENVIRONMENTS: dict[str, str] = {
    "industry": "https://report.cybertip.org/hashsharing",
    "industry-exploitative": "https://report.cybertip.org/exploitative-hashsharing",
    "law-enforcement": "https://lesp.ncmec.org/csam-hashsharing",
    "ngo": "https://hashsharing.ncmec.org/npo",
    "ngo-exploitative": "https://hashsharing.ncmec.org/exploitative",
    "ngo-generative-ai": "https://hashsharing.ncmec.org/generative-ai-csam",
    "ngo-generative-ai-exploitative": "https://hashsharing.ncmec.org/generative-ai-exploitative",
    "test-industry": "https://exttest.cybertip.org/hashsharing",
    "test-industry-exploitative": "https://exttest.cybertip.org/exploitative-hashsharing",
    "test-law-enforcement": "https://betalesp.ncmec.org/csam-hashsharing",
    "test-ngo": "https://hashsharing-test.ncmec.org/npo",
    "test-ngo-exploitative": "https://hashsharing-test.ncmec.org/exploitative",
    "test-ngo-generative-ai": "https://hashsharing-test.ncmec.org/generative-ai-csam",
    "test-ngo-generative-ai-exploitative": (
        "https://hashsharing-test.ncmec.org/generative-ai-exploitative"
    ),
}
Environment = Literal[
    "industry",
    "industry-exploitative",
    "law-enforcement",
    "ngo",
    "ngo-exploitative",
    "ngo-generative-ai",
    "ngo-generative-ai-exploitative",
    "test-industry",
    "test-industry-exploitative",
    "test-law-enforcement",
    "test-ngo",
    "test-ngo-exploitative",
    "test-ngo-generative-ai",
    "test-ngo-generative-ai-exploitative",
]

#: Fingerprint element names (lowercase, as NCMEC writes them) we can store, and the fingerprint
#: type name NCMEC uses in feedback paths. Everything else (sha1, pdna, netclean, videntifier,
#: tmk-pdqf, ...) is skipped and counted in the checkpoint's ``skipped``.
KEPT: dict[str, SignalType] = {
    "md5": SignalType.MD5,
    "pdq": SignalType.PDQ,
    "sha256": SignalType.SHA256,
}
FEEDBACK_TYPES: dict[SignalType, str] = {
    SignalType.MD5: "MD5",
    SignalType.PDQ: "PDQ",
    SignalType.SHA256: "SHA256",
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_ENTRY_ID_RE = re.compile(r"^[A-Za-z0-9._:~-]{1,200}$")
_MEMBER_RE = re.compile(r"^[0-9]{1,18}$")
_MEDIA = {"image": "image", "video": "video"}
_RAW_EXCERPT = 500
#: NCMEC's documents nest about five levels (queryResult/images/image/fingerprints/md5); a
#: document nested deeper than this is not an NCMEC answer and is refused as it is parsed.
MAX_XML_DEPTH = 32


class NcmecConfig(ExchangeConfig):
    """Non-secret settings of an NCMEC exchange (shown in ``bastion exchange status``)."""

    #: Which NCMEC database; sets the documented base URL. Give this or ``url``.
    environment: Environment | None = None
    #: Explicit base URL (before ``/v2``), e.g. for a proxy; https, or http on loopback only.
    url: str | None = None
    #: The first sync fetches entries added after this time (default: the whole list).
    start: datetime | None = None
    #: Largest time window per query, in seconds (default: unbounded; windows adapt anyway).
    window_seconds: int | None = Field(default=None, ge=1)
    #: Smallest window the adaptive sizing goes down to.
    min_window_seconds: int = Field(default=1, ge=1)
    #: A window whose first page says it holds more entries than this is shrunk before paging.
    max_window_entries: int = Field(default=50_000, ge=1)
    #: Entries per page, sent as ``size`` on a window's first query (default: NCMEC's, 1000).
    page_size: int | None = Field(default=None, ge=1, le=10_000)
    #: Windows end this many seconds before now, so entries still being written are not missed.
    settle_seconds: int = Field(default=5, ge=0, le=3600)
    #: A stored paging URL older than this is not trusted; the window is fetched again.
    paging_url_max_age: int = Field(default=12 * 3600, ge=60)
    #: Which NCMEC fingerprints to keep (others are skipped and counted).
    signal_types: tuple[Literal["md5", "pdq", "sha256"], ...] = ("md5", "pdq", "sha256")
    #: Labels on every entry (default: ``csam``; ``exploitative`` for the exploitative lists).
    labels: tuple[str, ...] | None = None
    #: Each entry's classification becomes the label ``<prefix><classification>`` (``ncmec:A1``).
    classification_prefix: str = "ncmec:"
    #: Extra labels per classification, e.g. ``{"A1": ["severity:1"]}``.
    classification_labels: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: Keep only entries of these NCMEC member (ESP) ids; empty keeps all.
    only_members: tuple[int, ...] = ()
    #: The entries' ``list_name`` (default: the environment name, or the URL's host).
    list_name: str | None = None
    #: NCMEC reason GUIDs for negative feedback. Keys, first match wins:
    #: ``<signal_type>:<reason>``, ``<reason>``, ``<signal_type>``, ``*``.
    negative_reasons: dict[str, str] = Field(default_factory=dict)
    #: Largest response accepted; a bigger page is a poisoned page.
    max_page_bytes: int = Field(default=64 << 20, ge=1024)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("the NCMEC URL must use https (plain http only on loopback)")
        if not parts.hostname or parts.query or parts.fragment or parts.username:
            raise ValueError("the NCMEC URL must be a plain base URL (no query or user info)")
        return url

    @field_validator("start")
    @classmethod
    def _check_start(cls, start: datetime | None) -> datetime | None:
        if start is None:
            return None
        return start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if labels is None else tuple(normalize_labels(list(labels)))

    @field_validator("classification_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if len(prefix) > 32 or any(c in prefix for c in ";\n\x00"):
            raise ValueError("classification_prefix: at most 32 characters, no ';' or newline")
        return prefix

    @field_validator("classification_labels")
    @classmethod
    def _check_class_labels(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {k: tuple(normalize_labels(list(v))) for k, v in value.items()}

    @field_validator("negative_reasons")
    @classmethod
    def _check_reasons(cls, value: dict[str, str]) -> dict[str, str]:
        for key, guid in value.items():
            if not _GUID_RE.match(guid):
                raise ValueError(f"negative_reasons[{key!r}] is not an NCMEC reason GUID")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> NcmecConfig:
        if (self.environment is None) == (self.url is None):
            raise ValueError("set exactly one of environment or url")
        if self.window_seconds is not None and self.window_seconds < self.min_window_seconds:
            raise ValueError("window_seconds must be at least min_window_seconds")
        if not self.signal_types:
            raise ValueError("signal_types may not be empty")
        return self

    @property
    def base_url(self) -> str:
        return self.url or ENVIRONMENTS[self.environment or ""]

    @property
    def list_label(self) -> str:
        return self.list_name or self.environment or urlsplit(self.base_url).hostname or "ncmec"

    @property
    def base_labels(self) -> tuple[str, ...]:
        if self.labels is not None:
            return self.labels
        exploitative = "exploitative" in (self.environment or "")
        return ("exploitative",) if exploitative else ("csam",)


class NcmecCredentials(ExchangeCredentials):
    """The hash sharing account (HTTP Basic), issued by NCMEC per member."""

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


@dataclass
class _State:
    """Where a sync stands: everything up to ``start`` is applied; while a window is being
    paged, ``to`` is its end and ``next`` NCMEC's URL for its next page."""

    start: datetime
    window: int | None
    to: datetime | None = None
    next: str | None = None
    next_at: datetime | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, checkpoint: Checkpoint | None, config: NcmecConfig) -> _State:
        if not checkpoint:
            return cls(config.start or EPOCH, config.window_seconds)
        try:
            window = checkpoint.get("window", config.window_seconds)
            if window is not None and (isinstance(window, bool) or int(window) < 1):
                raise ValueError("window")
            if config.window_seconds is not None and window is not None:
                window = min(int(window), config.window_seconds)
            skipped = checkpoint.get("skipped") or {}
            state = cls(
                _parse_time(checkpoint["from"]),
                None if window is None else int(window),
                skipped={str(k): int(v) for k, v in dict(skipped).items()},
            )
            if checkpoint.get("to"):
                state.to = _parse_time(checkpoint["to"])
                if checkpoint.get("next"):
                    state.next = _check_next(str(checkpoint["next"]))
                    state.next_at = _parse_time(checkpoint["next_at"])
        except (KeyError, TypeError, ValueError):
            raise PermanentError(
                "the stored checkpoint is not an NCMEC checkpoint; reset it to sync again"
            ) from None
        return state

    def dump(self) -> Checkpoint:
        out: Checkpoint = {"from": _fmt(self.start)}
        if self.to is not None:
            out["to"] = _fmt(self.to)
            if self.next:
                out["next"] = self.next
                out["next_at"] = _fmt(self.next_at or self.start)
        if self.window is not None:
            out["window"] = self.window
        if self.skipped:
            out["skipped"] = dict(sorted(self.skipped.items()))
        return out


@dataclass(frozen=True)
class _Paging:
    """What an NCMEC paging URL says: the 1-based index of the next entry, page size, total."""

    start: int
    size: int
    max: int


@dataclass(frozen=True)
class MemberStatus:
    """``GET /v2/status``: the account we are logged in as."""

    member_id: int
    member_name: str
    username: str


@register
class NcmecExchange(Exchange):
    """NCMEC Hash Sharing API v2 (CSAM and related hash lists; votes sent back).

    Key of each record: ``<member id>-<entry id>`` (NCMEC entry ids are scoped by the member
    that submitted them, and the vote path needs both)."""

    kind: ClassVar[str] = "ncmec"
    Config: ClassVar[type[ExchangeConfig]] = NcmecConfig
    Credentials: ClassVar[type[ExchangeCredentials] | None] = NcmecCredentials
    feedback: ClassVar[frozenset[Verdict]] = frozenset({Verdict.POSITIVE, Verdict.NEGATIVE})
    on_delete: ClassVar[OnDelete] = OnDelete.DISABLE
    default_interval: ClassVar[float] = 3600.0

    def __init__(
        self,
        config: ExchangeConfig | Mapping[str, Any],
        credentials: ExchangeCredentials | Mapping[str, Any] | None = None,
        context: ExchangeContext | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(config, NcmecConfig):
            raw = config.model_dump() if isinstance(config, ExchangeConfig) else dict(config)
            config = NcmecConfig.model_validate(raw)
        if credentials is not None and not isinstance(credentials, NcmecCredentials):
            raw = dict(credentials) if isinstance(credentials, Mapping) else {}
            credentials = NcmecCredentials.model_validate(raw)
        super().__init__(config, credentials, context)
        self.cfg: NcmecConfig = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._http: httpx.Client | None = None
        self._reasons: dict[str, list[tuple[str, str]]] = {}

    # -- fetching -----------------------------------------------------------------------------

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        cfg = self.cfg
        state = _State.load(checkpoint, cfg)
        now = self._clock()
        if state.next and (
            state.next_at is None
            or now - state.next_at > timedelta(seconds=cfg.paging_url_max_age)
            or (state.to is not None and state.to <= state.start)
        ):
            # NCMEC paging URLs go stale; fetch the window again from its start.
            state.to = state.next = state.next_at = None
        end = _floor(now - timedelta(seconds=cfg.settle_seconds))
        if state.to is not None and state.to > end:
            state.to = state.next = state.next_at = None
        run_start = state.start
        resumed = bool(state.next)  # the first request uses a paging URL from the checkpoint
        in_window = 0  # entries seen in the current window during this run
        seen: set[str] = set()  # paging URLs followed in the current window (a loop is poison)
        while True:
            if state.next:
                assert state.to is not None
                window_to = state.to
                url, params, fresh = cfg.base_url + state.next, None, False
            else:
                if state.start >= end:
                    return
                window_to = state.to or self._window_end(state, end)
                params = {"from": _fmt(state.start), "to": _fmt(window_to)}
                if cfg.page_size:
                    params["size"] = str(cfg.page_size)
                url, fresh = cfg.base_url + "/v2/entries", True
                seen.clear()
            skip_to = self._skip_to(state, window_to, None if fresh else state.next)
            try:
                root = self._get_xml("entries", url, params, skip_to, restartable=resumed)
            except _StalePaging:
                # NCMEC no longer knows the stored paging URL: fetch its window again.
                state.to = state.next = state.next_at = None
                resumed = False
                continue
            resumed = False
            try:
                items, next_url, counts = self._parse_page(root, skip_to)
            except (RecursionError, MemoryError) as exc:
                raise PoisonedPage(
                    f"NCMEC entries: the page cannot be read ({type(exc).__name__})",
                    skip_to=skip_to,
                ) from None
            if next_url is not None and (next_url == state.next or next_url in seen):
                raise PoisonedPage(
                    "NCMEC entries: the paging URL does not advance", skip_to=skip_to
                )
            if next_url is not None:
                seen.add(next_url)
            paging = _paging(next_url) if next_url else None
            if fresh and next_url and self._shrink(state, window_to, paging, len(items)):
                continue  # probe a smaller window; nothing of this page is yielded
            for name, n in counts.items():
                state.skipped[name] = state.skipped.get(name, 0) + n
            in_window += len(items)
            if next_url:
                state.to, state.next, state.next_at = window_to, next_url, self._clock()
            else:
                state.start, state.to, state.next, state.next_at = window_to, None, None, None
                self._grow(state, in_window)
                in_window = 0
            total = max(1, int((end - run_start).total_seconds()))
            done = int((state.start - run_start).total_seconds())
            yield Page(items=items, checkpoint=state.dump(), progress=(min(done, total), total))

    def _window_end(self, state: _State, end: datetime) -> datetime:
        if state.window is None:
            return end
        return min(end, state.start + timedelta(seconds=state.window))

    def _shrink(
        self, state: _State, window_to: datetime, paging: _Paging | None, on_page: int
    ) -> bool:
        """Make the window smaller when its first page says it holds too many entries."""
        if paging is None:
            return False  # no estimate: page through what we asked for
        estimate = max(paging.max - paging.start + 1, 0) + on_page
        duration = int((window_to - state.start).total_seconds())
        minimum = self.cfg.min_window_seconds
        if estimate <= self.cfg.max_window_entries or duration <= minimum:
            return False
        target = duration * self.cfg.max_window_entries // (2 * estimate)
        state.window = max(minimum, min(duration // 2, target))
        state.to = None
        return True

    def _grow(self, state: _State, seen: int) -> None:
        """After a window with few entries, try a wider one (grow slower than we shrink)."""
        if state.window is None or seen * 4 >= self.cfg.max_window_entries:
            return
        cap = self.cfg.window_seconds
        state.window = state.window * 2 if cap is None else min(state.window * 2, cap)

    def _skip_to(self, state: _State, window_to: datetime, current: str | None) -> Checkpoint:
        """The checkpoint past an unreadable page, losing as little as we can.

        Mid-window: the page after it, when the paging URL says where that is (``start`` +
        ``size``), else the next window. A window's first page: the same start with a window
        16 times narrower, so repeated failures close in on the bad stretch; once the window is
        ``min_window_seconds`` wide, the next window.
        """
        skipped = dict(state.skipped)
        if current:
            paging = _paging(current)
            if paging is not None and paging.start + paging.size <= paging.max:
                nxt = _with_start(current, paging.start + paging.size)
                return _State(
                    state.start, state.window, window_to, nxt, self._clock(), skipped
                ).dump()
        else:
            duration = int((window_to - state.start).total_seconds())
            minimum = self.cfg.min_window_seconds
            if duration > minimum:
                narrower = max(minimum, duration // 16)
                return _State(state.start, narrower, skipped=skipped).dump()
        return _State(window_to, state.window, skipped=skipped).dump()

    def _parse_page(
        self, root: ET.Element, skip_to: Checkpoint
    ) -> tuple[list[Item], str | None, dict[str, int]]:
        if root.tag != "queryResult":
            raise PoisonedPage(
                f"NCMEC entries: unexpected document <{root.tag[:40]}>", skip_to=skip_to
            )
        items: list[Item] = []
        counts: dict[str, int] = {}
        for container in root:
            if container.tag not in ("images", "videos"):
                continue
            for el in container:
                items.extend(self._parse_entry(el, counts))
        next_url: str | None = None
        paging = root.find("paging")
        if paging is not None:
            text = (paging.findtext("next") or "").strip()
            if text:
                try:
                    next_url = _check_next(text)
                except ValueError as exc:
                    raise PoisonedPage(f"NCMEC entries: {exc}", skip_to=skip_to) from None
        return items, next_url, counts

    def _parse_entry(self, el: ET.Element, counts: dict[str, int]) -> list[Item]:
        tag = el.tag
        deleted = tag.startswith("deleted")
        media = _MEDIA.get((tag[len("deleted") :] if deleted else tag).lower())
        if media is None:
            return [Poisoned(f"unknown entry element <{tag[:40]}>", raw=_excerpt(el))]
        entry_id = (el.findtext("id") or "").strip()
        member_el = el.find("member")
        member = (member_el.get("id") or "").strip() if member_el is not None else ""
        key = f"{member}-{entry_id}" if _MEMBER_RE.match(member) else None
        if not _ENTRY_ID_RE.match(entry_id):
            return [
                Poisoned(f"{media} entry has a missing or invalid <id>", key=None, raw=_excerpt(el))
            ]
        if key is None:
            return [Poisoned(f"{media} entry has no valid <member id=...>", raw=_excerpt(el))]
        if self.cfg.only_members and int(member) not in self.cfg.only_members:
            counts["other_members"] = counts.get("other_members", 0) + 1
            return []
        if deleted:
            return [Removal(key, f"deleted by {SOURCE}")]
        try:
            return [Upsert(key, self._entries(el, key, member, entry_id, media, member_el, counts))]
        except ValueError as exc:
            return [Poisoned(f"{media} entry {key}: {exc}", key=key, raw=_excerpt(el))]

    def _entries(
        self,
        el: ET.Element,
        key: str,
        member: str,
        entry_id: str,
        media: str,
        member_el: ET.Element | None,
        counts: dict[str, int],
    ) -> tuple[NewEntry, ...]:
        cfg = self.cfg
        stamp = (el.findtext("timestamp") or "").strip()
        added_at = _parse_time(stamp, "timestamp") if stamp else None
        classification = (el.findtext("classification") or "").strip()
        labels = list(cfg.base_labels)
        if classification:
            labels.append(cfg.classification_prefix + classification)
            labels.extend(cfg.classification_labels.get(classification, ()))
        metadata: dict[str, Any] = {"ncmec_id": entry_id, "member_id": int(member), "media": media}
        member_name = (member_el.text or "").strip() if member_el is not None else ""
        if member_name:
            metadata["member"] = member_name[:200]
        if classification:
            metadata["classification"] = classification
        kept = {KEPT[name] for name in cfg.signal_types}
        values: dict[SignalType, str] = {}
        fingerprints = el.find("fingerprints")
        for fp in () if fingerprints is None else fingerprints:
            name = fp.tag.lower()
            text = (fp.text or "").strip()
            st = KEPT.get(name)
            if st is None or st not in kept or not text:
                counts[name[:40]] = counts.get(name[:40], 0) + 1
                continue
            if st in values and values[st] != text.lower():
                raise ValueError(f"two different {name} fingerprints")
            values[st] = text.lower()
        out = []
        for st, value in values.items():
            entry = NewEntry(
                signal_type=st,
                value=value,
                source=SOURCE,
                list_name=cfg.list_label,
                external_id=key,
                added_at=added_at,
                labels=labels,
                metadata={**metadata, "fingerprint": FEEDBACK_TYPES[st]},
            )
            out.append(normalize_entry(entry))
        return tuple(out)

    # -- feedback -----------------------------------------------------------------------------

    def send_feedback(self, item: FeedbackItem) -> None:
        """PUT an affirmative (POSITIVE) or negative vote, with a reason GUID, on one
        fingerprint of one entry."""
        try:
            st = SignalType(item.signal_type)
        except ValueError:
            st = None
        fp_type = FEEDBACK_TYPES.get(st) if st is not None else None
        if st is None or fp_type is None:
            raise FeedbackUnsupported(f"NCMEC takes no feedback on {item.signal_type} signals")
        member, entry_id = _split_key(item)
        root = ET.Element("feedbackSubmission", {"xmlns": NAMESPACE})
        if item.verdict is Verdict.POSITIVE:
            ET.SubElement(root, "affirmative")
        elif item.verdict is Verdict.NEGATIVE:
            guid = self._negative_reason(st, fp_type, item.reason)
            vote = ET.SubElement(root, "negative")
            ET.SubElement(ET.SubElement(vote, "reasonIds"), "guid").text = guid
        else:  # pragma: no cover - Verdict has two members
            raise FeedbackUnsupported(f"NCMEC takes no {item.verdict} feedback")
        body = b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root)
        path = f"/v2/entries/{quote(member, safe='')}/{quote(entry_id, safe='')}/{fp_type}/feedback"
        r = self._request(
            "feedback",
            "PUT",
            self.cfg.base_url + path,
            content=body,
            headers={"Content-Type": "application/xml; charset=utf-8"},
        )
        if r.status_code >= 300:
            hint = " (no such entry or fingerprint)" if r.status_code == 404 else ""
            raise PermanentError(f"NCMEC feedback: HTTP {r.status_code}{hint}")

    def feedback_reasons(self, fp_type: str) -> list[tuple[str, str]]:
        """``GET /v2/feedback/{TYPE}/reasons``: (guid, name) of each negative-feedback reason."""
        if fp_type not in self._reasons:
            url = f"{self.cfg.base_url}/v2/feedback/{quote(fp_type, safe='')}/reasons"
            root = self._get_xml("feedback reasons", url, None, None)
            reasons = []
            for el in root.iter("reason"):
                guid, name = el.get("guid") or "", (el.get("name") or "")[:200]
                if _GUID_RE.match(guid):
                    reasons.append((guid, name))
            self._reasons[fp_type] = reasons
        return self._reasons[fp_type]

    def _negative_reason(self, st: SignalType, fp_type: str, reason: str) -> str:
        configured = self.cfg.negative_reasons
        for key in (f"{st}:{reason}" if reason else "", reason, str(st), "*"):
            if key and key in configured:
                return configured[key]
        available = self.feedback_reasons(fp_type)
        if len(available) == 1:
            return available[0][0]
        listed = "; ".join(f"{guid} {name}" for guid, name in available) or "none"
        raise PermanentError(
            f"NCMEC feedback: choose a reason for negative {fp_type} feedback in the exchange's "
            f"negative_reasons setting (NCMEC offers: {listed})"
        )

    # -- other calls --------------------------------------------------------------------------

    def status(self) -> MemberStatus:
        """``GET /v2/status``: checks the URL and credentials, says who we are."""
        root = self._get_xml("status", self.cfg.base_url + "/v2/status", None, None)
        member = root.find("member")
        member_id = (member.get("id") or "") if member is not None else ""
        if root.tag != "status" or member is None or not _MEMBER_RE.match(member_id):
            raise PermanentError("NCMEC status: the answer has no member")
        return MemberStatus(
            int(member_id), (member.text or "").strip(), (root.findtext("username") or "").strip()
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- HTTP plumbing ------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        if self._http is None:
            creds = self.credentials
            if not isinstance(creds, NcmecCredentials):
                raise PermanentError("NCMEC exchanges need credentials (username and password)")
            self._http = httpx.Client(
                auth=httpx.BasicAuth(creds.username, creds.password),
                timeout=self.context.timeout,
                transport=self.context.transport,
                headers={"User-Agent": self.context.user_agent},
                follow_redirects=False,
            )
        return self._http

    def _request(self, what: str, method: str, url: str, **kwargs: Any) -> _Response:
        limit = self.cfg.max_page_bytes
        try:
            with self._client().stream(method, url, **kwargs) as r:
                status, headers = r.status_code, r.headers
                chunks, size, too_big = [], 0, False
                if status < 300:
                    for chunk in r.iter_bytes():
                        size += len(chunk)
                        if size > limit:
                            too_big = True
                            break
                        chunks.append(chunk)
        except httpx.TimeoutException:
            raise TransientError(f"NCMEC {what}: timed out") from None
        except httpx.HTTPError as exc:
            raise TransientError(
                f"NCMEC {what}: cannot reach NCMEC ({type(exc).__name__})"
            ) from None
        if status in (401, 403):
            raise PermanentError(
                f"NCMEC {what}: HTTP {status}: check the NCMEC username, password and "
                "membership of this list"
            )
        if status == 429 or status >= 500:
            raise TransientError(
                f"NCMEC {what}: HTTP {status}", retry_after=_retry_after(headers, self._clock)
            )
        if 300 <= status < 400:
            raise PermanentError(f"NCMEC {what}: unexpected redirect (HTTP {status}); check url")
        return _Response(status, b"".join(chunks), too_big)

    def _get_xml(
        self,
        what: str,
        url: str,
        params: dict[str, str] | None,
        skip_to: Checkpoint | None,
        *,
        restartable: bool = False,
    ) -> ET.Element:
        r = self._request(what, "GET", url, params=params)
        if restartable and r.status_code in (400, 404, 410):
            raise _StalePaging

        def poisoned(message: str) -> PoisonedPage:
            raw = r.body[:2000].decode("utf-8", "replace")
            return PoisonedPage(f"NCMEC {what}: {message}", skip_to=skip_to, raw=raw)

        if r.status_code >= 400:
            if skip_to is None:
                raise PermanentError(f"NCMEC {what}: HTTP {r.status_code}")
            raise poisoned(f"HTTP {r.status_code}")
        if r.too_big:
            raise poisoned(f"answer larger than {self.cfg.max_page_bytes} bytes")
        try:
            return _parse_xml(r.body)
        except (ValueError, RecursionError, MemoryError) as exc:
            if isinstance(exc, ValueError):
                message = str(exc)
            else:
                message = f"the answer cannot be parsed ({type(exc).__name__})"
            if skip_to is None:
                raise PermanentError(f"NCMEC {what}: {message}") from None
            raise poisoned(message) from None


class _StalePaging(Exception):
    """A paging URL stored in a checkpoint was refused (400/404/410)."""


@dataclass(frozen=True)
class _Response:
    status_code: int
    body: bytes
    too_big: bool


# -- helpers ------------------------------------------------------------------------------------


class _TooDeep(Exception):
    """Raised by :class:`_DepthLimitedBuilder` inside the parser."""


class _DepthLimitedBuilder(ET.TreeBuilder):
    """A tree builder that stops the parse as soon as elements nest too deeply, before a
    deep tree exists (serialising or walking one recursively overflows the stack)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._depth = 0
        self._limit = limit

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self._depth += 1
        if self._depth > self._limit:
            raise _TooDeep
        return super().start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def _parse_xml(body: bytes) -> ET.Element:
    """Parse an answer with defusedxml: a DTD (and so any entity declaration) is refused, never
    expanded, in any encoding; elements may nest at most :data:`MAX_XML_DEPTH` deep. Namespaces
    are dropped from tags (the API uses one namespace throughout). Every refusal is a
    ``ValueError``."""
    parser = DefusedXMLParser(target=_DepthLimitedBuilder(MAX_XML_DEPTH), forbid_dtd=True)
    try:
        parser.feed(body)
        root = parser.close()
    except DefusedXmlException:
        raise ValueError("the answer declares a DTD or entities (refused)") from None
    except _TooDeep:
        raise ValueError(f"the answer nests elements deeper than {MAX_XML_DEPTH} levels") from None
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML (line {exc.position[0]})") from None
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith("{"):
            el.tag = el.tag.split("}", 1)[1]
    return root


def _check_next(text: str) -> str:
    """A paging URL must be a path under the base URL (never another host)."""
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or not parts.path.startswith("/v2/entries") or "\\" in text:
        raise ValueError("the paging URL is not a /v2/entries path")
    if len(text) > 2000 or any(ord(c) < 33 for c in text):
        raise ValueError("the paging URL is malformed")
    return text


def _paging(url: str) -> _Paging | None:
    query = parse_qs(urlsplit(url).query)
    try:
        return _Paging(int(query["start"][0]), int(query["size"][0]), int(query["max"][0]))
    except (KeyError, ValueError, IndexError):
        return None


def _with_start(url: str, start: int) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    query["start"] = [str(start)]
    return f"{parts.path}?{urlencode(query, doseq=True)}"


def _parse_time(value: object, what: str = "time") -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a date/time")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{what} is not an ISO 8601 date/time: {value[:40]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _fmt(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floor(when: datetime) -> datetime:
    return when.replace(microsecond=0)


def _excerpt(el: ET.Element, limit: int = _RAW_EXCERPT) -> str:
    """The start of ``el`` as XML, for an error record: built without recursion and only as far
    as ``limit`` characters (``ET.tostring`` recurses and renders everything)."""
    out: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text)

    def opening(node: ET.Element) -> str:
        attrs = "".join(f" {k}={quoteattr(str(v)[:limit])}" for k, v in node.attrib.items())
        return f"<{node.tag}{attrs}>" + escape((node.text or "")[:limit])

    emit(opening(el))
    stack: list[tuple[ET.Element, Iterator[ET.Element]]] = [(el, iter(el))]
    while stack and size < limit:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            emit(f"</{node.tag}>" + (escape((node.tail or "")[:limit]) if stack else ""))
        else:
            emit(opening(child))
            stack.append((child, iter(child)))
    return "".join(out)[:limit]


def _split_key(item: FeedbackItem) -> tuple[str, str]:
    member = str(item.metadata.get("member_id", "")) if item.metadata else ""
    entry_id = str(item.metadata.get("ncmec_id", "")) if item.metadata else ""
    if not (member and entry_id):
        member, _, entry_id = item.key.partition("-")
    if not _MEMBER_RE.match(member) or not _ENTRY_ID_RE.match(entry_id):
        raise PermanentError("NCMEC feedback: the entry key is not <member id>-<entry id>")
    return member, entry_id


def _retry_after(headers: httpx.Headers, clock: Callable[[], datetime]) -> float | None:
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - clock()).total_seconds())

"""Subscribe to another Bastion's feed (kind ``bastion``): verified records in, disputes out.

The publisher's Ed25519 public key is pinned in the configuration (given out of band, e.g. read
over the phone as its fingerprint); nothing the publisher's server says can change it. A sync:

1. reads the feed's latest version statement and checks its signature with the pinned key (a
   statement that does not verify, a version older than one we already hold, or the held
   version re-signed with another root or revision, stops the sync with a permanent error:
   someone must look);
2. pages the feed's records up to that version's store revision, checking every record's
   signature, that it names this feed and publisher, and that its signed revision lies between
   the request's cursor and the version (so an old record cannot be replayed over a removal);
   a record that fails is a ``Poisoned`` item, recorded and never applied; a cursor that does
   not advance is a poisoned page;
3. pulls the dispute counts that changed since the last sync and refreshes those entries,
   under the same revision window per record: only an entry we hold and the publisher still
   lists, with a record no older than the one we hold (never adding or re-enabling one);
4. attaches the version's Merkle root as an ``Attestation`` once for every version it reaches
   (and again after a dispute refresh rewrote records), marked ``stream: incomplete`` when the
   publisher did not say that nothing changed after the version; the engine recomputes the
   root from what we hold (:meth:`verify_state`) and records whether we have exactly the list
   the publisher signed.

Each entry keeps its signed record text and signature in ``metadata["feed"]``, so the copy can be
re-verified and its Merkle root recomputed at any time, and ``metadata["disputes"]`` holds how
many subscribers disputed it (outside the signed part). Requiring several publishers to vouch for
an entry is the engine's generic ``vouch_group`` / ``min_vouchers``.

Pure: no database or web framework imports.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, field_validator

from bastion.banks.model import NewEntry, normalize_entry
from bastion.exchanges.base import (
    Attestation,
    Checkpoint,
    Exchange,
    ExchangeConfig,
    ExchangeContext,
    ExchangeCredentials,
    FeedbackItem,
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
from bastion.feeds import (
    AddRecord,
    BadSignature,
    KeyFormatError,
    RecordError,
    RemoveRecord,
    VerifyKey,
    VersionStatement,
    leaf_hash,
    parse_record,
    parse_statement,
)
from bastion.feeds.merkle import root_of_leaves
from bastion.feeds.records import JSON_ERRORS

#: The reason a publisher's removal is stored with (the engine prefixes ``upstream:``).
WITHDRAWN = "withdrawn by the publisher"
#: Disabled reasons of entries the publisher still lists: held back for vouchers (the engine's
#: ``upstream: awaiting vouchers (n of k)``). Other ``upstream:`` reasons mean it withdrew them.
_AWAITING = "upstream: awaiting vouchers"
_UPSTREAM = "upstream:"
#: The engine's reason prefix for an entry disabled here and then withdrawn by the publisher.
_WITHDRAWN_LOCAL = "upstream+local:"
_REASON_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
_FEED_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$", re.IGNORECASE)
#: Attestation ``detail["stream"]``: every change up to the version's revision was received and
#: the publisher said none came after it, or it did not say so (see :meth:`verify_state`).
COMPLETE = "complete"
INCOMPLETE = "incomplete"
#: What :meth:`BastionFeedExchange.verify_state` prefixes its root with when the stream was
#: incomplete and our copy differs from the signed root: recorded as a disagreement.
UNVERIFIED = "unverified:"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _loopback(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BastionFeedConfig(ExchangeConfig):
    #: The publishing Bastion's base URL, e.g. https://bastion.example.org
    url: str = Field(min_length=8, max_length=2000)
    #: The feed's name on the publisher.
    feed: str = Field(min_length=1, max_length=64)
    #: The publisher's Ed25519 public key (base64 or hex of 32 bytes), from ``bastion feed
    #: key`` on the publisher, received out of band. Required: records are checked against it.
    publisher_key: str = Field(min_length=44, max_length=200)
    #: Records per request.
    page_size: int = Field(default=1000, ge=1, le=5000)
    #: The largest answer read from the publisher, in bytes; a longer one is a poisoned page.
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, le=1024**3)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s?#@]+(/[^\s?#]*)?$", v):
            raise ValueError("url must be the http(s) base URL of the publishing Bastion")
        parts = urlsplit(v)
        if parts.scheme != "https" and not _loopback(parts.hostname or ""):
            # Over plain http anyone on the path can drop withdrawals or stall the feed, and
            # read the API key: only a loopback host (tests, a local tunnel) may use it.
            raise ValueError("url must use https (plain http only for a loopback host)")
        return v

    @field_validator("feed")
    @classmethod
    def _feed(cls, v: str) -> str:
        if not _FEED_RE.match(v):
            raise ValueError("feed must be a feed name (letters, digits, '_', '.', '-')")
        return v.lower()

    @field_validator("publisher_key")
    @classmethod
    def _key(cls, v: str) -> str:
        try:
            return VerifyKey.from_text(v).text
        except (KeyFormatError, ValueError):
            raise ValueError(
                "publisher_key must be base64 or hex of a 32-byte Ed25519 key"
            ) from None


class BastionFeedCredentials(ExchangeCredentials):
    #: A ``feed``-scoped API key the publisher issued to us.
    api_key: str = Field(min_length=8, max_length=512)


@register
class BastionFeedExchange(Exchange):
    """A feed published by another Bastion (``bastion feed create`` on its side)."""

    kind: ClassVar[str] = "bastion"
    Config: ClassVar[type[ExchangeConfig]] = BastionFeedConfig
    Credentials: ClassVar[type[ExchangeCredentials] | None] = BastionFeedCredentials
    feedback: ClassVar[frozenset[Verdict]] = frozenset({Verdict.NEGATIVE, Verdict.POSITIVE})
    default_interval: ClassVar[float] = 300.0
    #: A withdrawn record is deleted here: the publisher no longer vouches for it, and a copy
    #: kept disabled (perhaps with a local reviewer's reason) would still look held to the
    #: Merkle check. A reviewer's dispute stays recorded (``entry_disputes``, and upstream).
    on_delete: ClassVar[OnDelete] = OnDelete.REMOVE

    @classmethod
    def vouch_identity(cls, config: ExchangeConfig | Mapping[str, Any]) -> str | None:
        """Who vouches through this exchange: the pinned publisher key's fingerprint. Two
        exchanges of one vouch group with the same key are one publisher, not two."""
        if isinstance(config, Mapping):
            key = config.get("publisher_key")
        else:
            key = getattr(config, "publisher_key", None)
        if not isinstance(key, str):
            return None
        try:
            return VerifyKey.from_text(key).fingerprint
        except (KeyFormatError, ValueError):
            return None

    def __init__(
        self,
        config: ExchangeConfig,
        credentials: ExchangeCredentials | None = None,
        context: ExchangeContext | None = None,
    ) -> None:
        super().__init__(config, credentials, context)
        assert isinstance(config, BastionFeedConfig)
        self.cfg = config
        self.pinned = VerifyKey.from_text(config.publisher_key)
        headers = {"User-Agent": self.context.user_agent, "Accept": "application/json"}
        if isinstance(credentials, BastionFeedCredentials):
            headers["Authorization"] = f"Bearer {credentials.api_key}"
        self.base = f"{config.url}/v1/feeds/{quote(config.feed, safe='')}"
        self.http = httpx.Client(
            timeout=self.context.timeout, transport=self.context.transport, headers=headers
        )

    def close(self) -> None:
        self.http.close()

    # -- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
        """The status and body of one request, reading at most ``max_response_bytes`` (after
        content decoding, so a compressed bomb stops there too)."""
        cap = self.cfg.max_response_bytes
        try:
            with self.http.stream(method, self.base + path, **kw) as r:
                status, retry = r.status_code, r.headers.get("retry-after")
                body = bytearray()
                if status < 400:
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) > cap:
                            raise PoisonedPage(
                                f"the publishing Bastion's answer exceeds {cap} bytes "
                                "(max_response_bytes)"
                            )
        except httpx.TimeoutException:
            raise TransientError("the publishing Bastion timed out") from None
        except httpx.HTTPError as exc:
            raise TransientError(
                f"cannot reach the publishing Bastion: {type(exc).__name__}"
            ) from None
        if status in (429, 503) or status >= 500:
            raise TransientError(
                f"the publishing Bastion answered {status}", retry_after=_retry_after(retry)
            )
        if status in (401, 403):
            raise PermanentError(
                f"the publishing Bastion refused our API key ({status}): check the "
                "credentials and that the key has the 'feed' scope"
            )
        return status, bytes(body)

    def _json(self, answer: tuple[int, bytes], what: str) -> dict[str, Any]:
        status, body = answer
        if status == 404:
            raise PermanentError(
                f"{what}: the publisher has no feed {self.cfg.feed!r} that our API key may read "
                "(404): check the feed name, and that the publisher granted the feed to our key"
            )
        if status >= 400:
            raise PermanentError(f"{what}: the publishing Bastion answered {status}")
        try:
            doc = json.loads(body)
        except JSON_ERRORS:
            raise PoisonedPage(f"{what}: the answer is not JSON", raw=_excerpt(body)) from None
        if not isinstance(doc, dict):
            raise PoisonedPage(f"{what}: the answer is not a JSON object", raw=_excerpt(body))
        return doc

    # -- sync ----------------------------------------------------------------------------------

    def _statement(self) -> VersionStatement | None:
        meta = self._json(self._request("GET", ""), "feed metadata")
        latest = meta.get("latest")
        if latest is None:
            return None  # the publisher has not signed a version yet
        if not isinstance(latest, dict):
            raise PoisonedPage("feed metadata: 'latest' is not an object")
        text, sig = latest.get("statement"), latest.get("signature")
        if not isinstance(text, str) or not isinstance(sig, str):
            raise PoisonedPage("feed metadata: the version statement or signature is missing")
        try:
            self.pinned.verify_statement(text.encode("utf-8"), sig)
            statement = parse_statement(text)
        except (BadSignature, RecordError) as exc:
            raise PermanentError(
                f"the feed's version statement does not verify under the pinned publisher key "
                f"({exc}); check publisher_key with the publisher"
            ) from None
        if statement.feed != self.cfg.feed:
            raise PermanentError(
                f"the version statement is for feed {statement.feed!r}, not {self.cfg.feed!r}"
            )
        return statement

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        cp = dict(checkpoint or {})
        statement = self._statement()
        if statement is None:
            return
        held = _int(cp.get("version"))
        if statement.version < held:
            raise PermanentError(
                f"the publisher's latest version {statement.version} is older than version "
                f"{held} we already hold: a rolled-back or replaced feed; someone must look"
            )
        if statement.version == held and (
            ("root" in cp and cp["root"] != statement.root)
            or ("revision" in cp and _int(cp["revision"]) != statement.revision)
        ):
            raise PermanentError(
                f"the publisher signed version {held} twice with different contents (root or "
                "revision): an equivocating publisher; someone must look"
            )
        upto = statement.revision
        if statement.version > held:
            # A new version: continue from where the last one ended (its revision).
            after = str(cp.get("revision", "")) if cp.get("done") else str(cp.get("after") or "")
            cp = {
                **cp,
                "version": statement.version,
                "revision": upto,
                "root": statement.root,
                "count": statement.count,
                "publisher": statement.publisher,
                "after": after,
                "done": False,
            }
        if not cp.get("done"):
            after = str(cp.get("after") or "")
            while True:
                lo, pos = _cursor(after)
                params = {"after": after, "upto": upto, "limit": self.cfg.page_size}
                doc = self._json(self._request("GET", "/entries", params=params), "entries")
                records, nxt = doc.get("records"), doc.get("next")
                if not isinstance(records, list) or not (nxt is None or isinstance(nxt, str)):
                    raise PoisonedPage(
                        "entries: the answer lacks records or next", raw=str(doc)[:500]
                    )
                if nxt is not None:
                    try:
                        _nlo, npos = _cursor(nxt)
                    except ValueError:
                        raise PoisonedPage(f"entries: bad next cursor {nxt[:40]!r}") from None
                    if npos <= pos or npos[0] > upto:
                        # A cursor that does not move forward within the version would page
                        # forever.
                        raise PoisonedPage(
                            f"entries: the next cursor {nxt[:40]!r} does not advance from "
                            f"{after!r} within revision {upto}"
                        )
                items = [self._item(r, statement, lo) for r in records]
                done = nxt is None
                after = str(upto) if done else str(nxt)
                cp = {**cp, "after": after, "done": done}
                if done:
                    # The stream is complete when the publisher says nothing changed after the
                    # version's revision; otherwise our copy may legitimately differ.
                    cp["complete"] = doc.get("complete") is True
                yield Page(items, cp)
                if done:
                    break
        refreshed = 0
        for page in self._disputes(cp, statement):
            refreshed += len(page.items)
            cp = dict(page.checkpoint)
            yield page
        if cp.get("attested") != statement.version or refreshed:
            # Every version we reach is attested once (and again when dispute refreshes
            # rewrote records), complete or not: a run of unverified versions is visible.
            stream = COMPLETE if cp.get("complete") else INCOMPLETE
            cp = {**cp, "attested": statement.version}
            yield Page(
                [],
                cp,
                attestation=Attestation(
                    version=statement.version,
                    root=statement.root,
                    count=statement.count,
                    detail={"revision": upto, "feed": self.cfg.feed, "stream": stream},
                ),
            )

    def _disputes(self, cp: Checkpoint, statement: VersionStatement) -> Iterator[Page]:
        """Refresh the counts of records whose feedback changed since the last sync."""
        after = _int(cp.get("disputes_after"))
        while True:
            params = {"after": after, "upto": statement.revision, "limit": self.cfg.page_size}
            doc = self._json(self._request("GET", "/disputes", params=params), "disputes")
            found, nxt = doc.get("items"), doc.get("next")
            if not isinstance(found, list) or isinstance(nxt, bool) or not isinstance(nxt, int):
                raise PoisonedPage("disputes: the answer lacks items or next", raw=str(doc)[:500])
            if not found:
                return
            if nxt <= after:
                raise PoisonedPage(
                    f"disputes: the next id {nxt} does not advance from {after} (a publisher "
                    "that would page forever)"
                )
            served = []
            for raw in found:
                record = raw.get("record") if isinstance(raw, dict) else None
                # No record: the entry changed after this version, or was withdrawn; its count
                # then comes with its next record.
                if isinstance(record, dict):
                    served.append({**record, **_counts(raw)})
            items = self._refresh(served, statement)
            after = nxt
            cp = {**cp, "disputes_after": after}
            yield Page(items, cp)
            if len(found) < self.cfg.page_size:
                return

    def _refresh(self, served: list[dict[str, Any]], statement: VersionStatement) -> list[Item]:
        """The dispute refresh's records, under the entries path's revision window applied per
        record: a record may only refresh an entry we hold (and the publisher still lists), and
        its revision must lie between that of the record we hold (an older one was superseded,
        so it can only be a replay) and the version's. A refresh never adds or re-enables an
        entry. Without a view of what we hold (``ExchangeContext.held``), it refreshes none."""
        lookup = self.context.held
        if lookup is None or not served:
            return []
        keys = [r["key"] for r in served if isinstance(r.get("key"), str)]
        held = lookup(keys)
        items: list[Item] = []
        for raw in served:
            key = raw.get("key")
            if not isinstance(key, str):
                items.append(Poisoned("record served without its key", raw=str(raw)[:500]))
                continue
            lo = _held_revision(held.get(key, ()))
            if lo is None:
                text = raw.get("record")
                items.append(
                    Poisoned(
                        f"dispute refresh of record {key[:64]} refused: we hold no record of it "
                        "that the publisher still lists (withdrawn, or never applied), and a "
                        "refresh never adds one (a replayed page?)",
                        key=key,
                        raw=(text if isinstance(text, str) else str(raw))[:500],
                    )
                )
                continue
            items.append(self._item(raw, statement, lo))
        return items

    def _item(self, raw: Any, statement: VersionStatement, lo: int) -> Item:
        """One served record as an Upsert or Removal, once its signature, its feed and
        publisher, and its revision check out; anything else is Poisoned (never applied).

        The revision must lie between ``lo`` (what the request's cursor has already passed: a
        record older than that was applied before, so it can only be a replay) and the
        version's revision (a record from the future is not part of the version)."""
        if not isinstance(raw, Mapping):
            return Poisoned("record is not a JSON object", raw=str(raw)[:500])
        key = raw.get("key") if isinstance(raw.get("key"), str) else None
        text, sig = raw.get("record"), raw.get("sig")
        if not isinstance(text, str) or not isinstance(sig, str):
            return Poisoned("record or signature missing", key=key, raw=str(raw)[:500])
        try:
            self.pinned.verify_record(text.encode("utf-8"), sig)
        except BadSignature as exc:
            return Poisoned(f"record rejected: {exc}", key=key, raw=text[:500])
        try:
            record = parse_record(text)
        except RecordError as exc:
            return Poisoned(f"record rejected: {exc}", key=key, raw=text[:500])
        if record.feed != self.cfg.feed or record.publisher != statement.publisher:
            return Poisoned(
                f"record rejected: signed for feed {record.feed!r} of {record.publisher!r}",
                key=record.key,
                raw=text[:500],
            )
        if key is not None and key != record.key:
            return Poisoned("record rejected: served under another key", key=key, raw=text[:500])
        if not lo <= record.revision <= statement.revision:
            return Poisoned(
                f"record rejected: revision {record.revision} is outside {lo}..."
                f"{statement.revision} (a replayed or future record)",
                key=record.key,
                raw=text[:500],
            )
        if isinstance(record, RemoveRecord):
            return Removal(record.key, WITHDRAWN)
        try:
            entry = normalize_entry(_entry(record, text, sig, raw))
        except ValueError as exc:
            return Poisoned(f"record {record.key}: {exc}", key=record.key, raw=text[:500])
        return Upsert(record.key, (entry,))

    # -- attestation ---------------------------------------------------------------------------

    def verify_state(self, attestation: Attestation, entries: Iterable[Any]) -> str | None:
        """The Merkle root of the signed records we hold (every entry the publisher still lists:
        enabled, disabled here, or held back for vouchers; entries disabled by the publisher,
        ``upstream:`` other than awaiting vouchers, are not held). An entry whose record is
        missing, unsigned, or does not describe the entry as stored makes the answer a
        description instead of a root, so the engine records a disagreement.

        When the page stream of the version was incomplete (the publisher did not say that
        nothing changed after the version's revision, or a man in the middle removed that) and
        the root differs, the answer is ``unverified:<root>``: a disagreement whose detail
        says ``stream: incomplete``. If the root matches anyway, the copy is the signed list."""
        leaves = []
        for e in entries:
            reason = e.disabled_reason or ""
            if not e.enabled and reason.startswith(_UPSTREAM) and not reason.startswith(_AWAITING):
                continue  # withdrawn by the publisher
            feed = (e.metadata or {}).get("feed")
            text = feed.get("record") if isinstance(feed, dict) else None
            sig = feed.get("sig") if isinstance(feed, dict) else None
            if not isinstance(text, str) or not isinstance(sig, str):
                return f"entry {e.id} carries no signed feed record"
            try:
                self.pinned.verify_record(text.encode("utf-8"), sig)
                record = parse_record(text)
            except (BadSignature, RecordError):
                return f"entry {e.id}: its feed record does not verify"
            if not isinstance(record, AddRecord) or not _describes(record, e):
                return f"entry {e.id} differs from its signed record"
            leaves.append(leaf_hash(text.encode("utf-8")))
        root = root_of_leaves(leaves)
        if root != attestation.root and attestation.detail.get("stream") == INCOMPLETE:
            return UNVERIFIED + root
        return root

    # -- feedback ------------------------------------------------------------------------------

    def send_feedback(self, item: FeedbackItem) -> None:
        """NEGATIVE: a dispute; POSITIVE: a confirmation. Once per record on the publisher's
        side, so a retry after a lost answer is harmless."""
        path = "/disputes" if item.verdict is Verdict.NEGATIVE else "/confirmations"
        default = "not_abusive" if item.verdict is Verdict.NEGATIVE else "confirmed"
        reason = (item.reason or default).strip().lower()
        if not _REASON_RE.match(reason):
            reason = default
        status, _body = self._request("POST", path, json={"key": item.key, "reason": reason})
        if status == 404:
            raise PermanentError(f"the publisher no longer has record {item.key!r}")
        if status >= 400:
            raise PermanentError(f"the publishing Bastion refused the feedback ({status})")


def _withdrawn(entry: Any) -> bool:
    """Disabled because the publisher withdrew it (``upstream:`` other than awaiting vouchers,
    or withdrawn after a local decision): no longer what the publisher lists."""
    reason = entry.disabled_reason or ""
    if entry.enabled:
        return False
    return reason.startswith(_WITHDRAWN_LOCAL) or (
        reason.startswith(_UPSTREAM) and not reason.startswith(_AWAITING)
    )


def _held_revision(entries: Iterable[Any]) -> int | None:
    """The signed revision of the record we hold for one key (the highest, should there be
    several), among entries the publisher still lists; None when there is none."""
    best: int | None = None
    for e in entries:
        feed = (e.metadata or {}).get("feed")
        text = feed.get("record") if isinstance(feed, dict) else None
        if _withdrawn(e) or not isinstance(text, str):
            continue
        try:
            revision = parse_record(text).revision
        except RecordError:
            continue
        best = revision if best is None else max(best, revision)
    return best


def _entry(record: AddRecord, text: str, sig: str, raw: Mapping[str, Any]) -> NewEntry:
    return NewEntry(
        signal_type=record.signal_type,  # type: ignore[arg-type]  # normalize_entry parses it
        value=record.value,
        url_match=record.url_match,
        source=record.source,
        list_name=record.list,
        added_at=record.added_at,  # type: ignore[arg-type]
        labels=list(record.labels),
        metadata={
            "feed": {"record": text, "sig": sig},
            "disputes": _count(raw.get("disputes")),
            "confirmations": _count(raw.get("confirmations")),
        },
    )


def _counts(raw: Mapping[str, Any]) -> dict[str, int]:
    return {k: _count(raw.get(k)) for k in ("disputes", "confirmations")}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _describes(record: AddRecord, entry: Any) -> bool:
    """Whether the stored ``entry`` is what ``record`` makes: the same signal type, value and
    URL match, labels, list, source and time. Counts and other metadata are not compared."""
    try:
        want = normalize_entry(_entry(record, "", "", {}))
    except (ValueError, ImportError):
        return False
    return (
        str(entry.signal_type) == str(want.signal_type)
        and entry.value == want.value
        and (entry.url_match or None) == (want.url_match or None)
        and sorted(entry.labels or ()) == sorted(want.labels or ())
        and (entry.list_name or "") == (want.list_name or "")
        and (entry.source or "") == (want.source or "")
        and _same_time(entry.added_at, want.added_at)
    )


def _same_time(a: Any, b: Any) -> bool:
    if not isinstance(a, datetime) or not isinstance(b, datetime):
        return bool(a == b)
    a = a if a.tzinfo else a.replace(tzinfo=UTC)
    b = b if b.tzinfo else b.replace(tzinfo=UTC)
    return bool(a.replace(microsecond=0) == b.replace(microsecond=0))


def _cursor(text: str) -> tuple[int, tuple[int, int]]:
    """An entries cursor as (the lowest revision a record after it may carry, its position):
    ``""`` is the start, ``"R"`` is after all of revision R, ``"R.ID"`` after entry ID of R.
    Raises ValueError for anything else."""
    if not text:
        return 0, (0, -1)
    rev, dot, entry = text.partition(".")
    if not rev.isdigit() or (dot and not entry.isdigit()):
        raise ValueError(text)
    if dot:
        return int(rev), (int(rev), int(entry))
    return int(rev) + 1, (int(rev), 2**63)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _excerpt(body: bytes) -> str:
    return body[:500].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


__all__ = [
    "COMPLETE",
    "INCOMPLETE",
    "UNVERIFIED",
    "WITHDRAWN",
    "BastionFeedConfig",
    "BastionFeedCredentials",
    "BastionFeedExchange",
]

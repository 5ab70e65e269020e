"""Meta ThreatExchange: tail a privacy group's ``/threat_updates`` into a bank; react to
descriptors as feedback.

``GET {base}/{version}/{privacy_group}/threat_updates`` lists the group's indicators (a hash or
URL) updated between ``start_time`` and ``stop_time``, oldest first, in Graph API pages
(``paging.next`` is the URL of the next page). An item with ``should_delete`` true, or with no
descriptor we can see (ThreatExchange shows an indicator only through a visible descriptor), has
left the group: a :class:`Removal`. Deletion events are kept 90 days upstream, so sync more often
than that.

Checkpoints: ``{"start_time", "stop_time", "next", "skipped"}``. A sync reads one window, from the
last window's end (less one second, in case the bounds are exclusive) to now less
``settle_seconds``; mid-window the checkpoint holds the ``paging.next`` URL *without* the access
token, so a restart resumes at the page it stopped at. Once the window is done only its end is
kept.

Feedback: ThreatExchange takes reactions on descriptors (``POST {base}/{version}/{descriptor_id}``
with ``reactions=``), not on indicators; entries keep their descriptors' ids and owners so a
verdict can be sent as reactions to every descriptor another app owns.

The access token (``app_id|app_secret``) travels in the query string, as the Graph API expects:
every message this module builds is passed through :func:`redact`, and a logging filter on
httpx's logger strips it from request logs. It is only ever sent to the configured base URL's
scheme and host: a ``paging.next`` elsewhere is a poisoned page, and a stored ``next`` elsewhere
(an edited checkpoint, or ``base_url`` changed mid-window) is dropped and its window read again.

Untrusted answers: a body is read in a stream and refused (poisoned page) past
``max_page_bytes``; JSON too deeply nested to decode is a poisoned page too, as is a
``paging.next`` that does not advance (the URL just fetched, or one already followed in this
window).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, field_validator

from bastion.banks.model import MAX_LABEL, MAX_LABELS, NewEntry, normalize_entry
from bastion.exchanges.base import (
    Checkpoint,
    Exchange,
    ExchangeConfig,
    ExchangeContext,
    ExchangeCredentials,
    FeedbackItem,
    FeedbackUnsupported,
    Item,
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
from bastion.exchanges.http import Answer, https_base, read_capped, retry_after, short_raw
from bastion.signals.base import SignalType

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v21.0"

#: ThreatExchange indicator type -> Bastion signal type. Other types (HASH_TMK, HASH_VIDEO_MD5,
#: HASH_SHA1, HASH_PHOTODNA, DEBUG_STRING, ...) are skipped and counted in ``skipped``.
SIGNAL_TYPES: dict[str, SignalType] = {
    "HASH_PDQ": SignalType.PDQ,
    "HASH_MD5": SignalType.MD5,
    "HASH_SHA256": SignalType.SHA256,
    "URI": SignalType.URL,
    # Keywords (docs/text-signals.md): a trend query's JSON, or one raw term. Ask for them with
    # types=TREND_QUERY,RAW_TEXT.
    "TREND_QUERY": SignalType.TEXT,
    "RAW_TEXT": SignalType.TEXT,
}
#: Reaction types ThreatExchange documents (reference/reacting, Jan 2023).
REACTIONS = frozenset(
    {
        "SAW_THIS_TOO",
        "NON_MALICIOUS",
        "DISAGREE_WITH_TAGS",
        "HELPFUL",
        "NOT_HELPFUL",
        "OUTDATED",
        "WANT_MORE_INFO",
        "INGESTED",
        "ALREADY_KNOWN",
        "IN_REVIEW",
        "REVIEWED",
    }
)
#: Graph API error codes: bad or expired token, missing permission -> a person must act.
_AUTH_CODES = frozenset({102, 190, 10, 200})
#: Graph API throttling codes -> wait and retry.
_THROTTLE_CODES = frozenset({4, 17, 32, 341, 613})
_MAX_DESCRIPTORS = 20
_MAX_RETRY_AFTER = 86_400.0
_TOKEN_PARAM = re.compile(r"(access_token=)[^&\s\"'#]+", re.IGNORECASE)
_LABEL_BAD = re.compile(r"[;\n\r\x00]")
#: Error answers are read only this far (enough for any Graph API error).
_MAX_ERROR_BYTES = 64 << 10
_RAW_EXCERPT = 2000

log = logging.getLogger(__name__)


def redact(text: str, token: str | None = None) -> str:
    """``text`` without ``token`` (plain or URL-encoded, or its secret half) and without any
    ``access_token=`` query value."""
    if token:
        secret = token.partition("|")[2]
        for needle in {token, quote(token, safe=""), quote(token), secret}:
            if needle and len(needle) >= 4:
                text = text.replace(needle, "<redacted>")
    return _TOKEN_PARAM.sub(r"\1<redacted>", text)


class _RedactTokens(logging.Filter):
    """httpx logs every request URL at INFO level; a Graph API URL carries the access token."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's business, not ours
            return True
        if "access_token" in message.lower():
            record.msg = redact(message)
            record.args = ()
        return True


_LOG_FILTER = _RedactTokens()
for _name in ("httpx", "httpcore"):
    if _LOG_FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_LOG_FILTER)


class ThreatExchangeConfig(ExchangeConfig):
    """Non-secret settings of a ThreatExchange exchange: which privacy group, which types."""

    privacy_group: str = Field(pattern=r"^[0-9]{1,20}$")
    base_url: str = DEFAULT_BASE_URL
    api_version: str = Field(default=DEFAULT_VERSION, pattern=r"^v[0-9]{1,3}\.[0-9]{1,3}$")
    #: Indicator types asked for (``types=``); types Bastion cannot match are skipped anyway.
    types: tuple[str, ...] = ("HASH_PDQ", "HASH_MD5", "HASH_SHA256", "URI")
    #: Items per page (Graph API ``limit``).
    page_size: int = Field(default=500, ge=1, le=1000)
    #: A window ends this long before now, so updates still being written land in the next one.
    settle_seconds: int = Field(default=60, ge=0, le=3600)
    source: str = Field(default="ThreatExchange", min_length=1, max_length=255)
    #: Defaults to ``privacy-group:<id>``.
    list_name: str | None = Field(default=None, min_length=1, max_length=255)
    #: Labels on every entry: what the privacy group is about (``csam``, ``terrorism``...).
    labels: tuple[str, ...] = ("threatexchange",)
    #: Add ``te:<tag>`` labels from the descriptors' tags.
    tag_labels: bool = True
    #: An indicator every visible descriptor calls NON_MALICIOUS is not kept as a match.
    drop_non_malicious: bool = True
    #: Reactions sent for a confirmed match / a false positive (empty: verdict not sent).
    positive_reactions: tuple[str, ...] = ("HELPFUL", "SAW_THIS_TOO")
    negative_reactions: tuple[str, ...] = ("NON_MALICIOUS",)
    #: Largest threat_updates answer read (after content decoding); a bigger one is a poisoned
    #: page.
    max_page_bytes: int = Field(default=64 << 20, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return https_base(value)

    @field_validator("privacy_group", mode="before")
    @classmethod
    def _group(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("types may not be empty")
        for name in value:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", name):
                raise ValueError(f"{name[:40]!r} is not a ThreatExchange indicator type")
        return value

    @field_validator("positive_reactions", "negative_reactions")
    @classmethod
    def _reactions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in REACTIONS:
                raise ValueError(
                    f"unknown reaction {name[:40]!r} "
                    f"(expected one of: {', '.join(sorted(REACTIONS))})"
                )
        return value


class ThreatExchangeCredentials(ExchangeCredentials):
    """A ThreatExchange app access token, ``<app id>|<app secret>``."""

    access_token: str = Field(min_length=8, max_length=1024, pattern=r"^[^\s&#]+$")

    @property
    def app_id(self) -> str | None:
        app, sep, _ = self.access_token.partition("|")
        return app if sep and app.isdigit() else None


def _graph_error(response: Answer) -> tuple[int | None, str]:
    """The Graph API error code and message of a failed response, when it has the usual shape."""
    try:
        body = response.json()
    except ValueError:
        return None, ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code")
    message = error.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message[:300] if isinstance(message, str) else "",
    )


def _epoch(value: Any) -> datetime | None:
    """Graph API times: Unix seconds (number or digit string) or ISO 8601 (``+0000``)."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ValueError


def _edge(value: Any) -> list[Any] | None:
    """A Graph API edge (``{"data": [...]}``) or a bare list; None when neither."""
    if isinstance(value, dict):
        value = value.get("data")
    return value if isinstance(value, list) else None


def _tags(value: Any) -> list[str]:
    """Descriptor tags: a list of names, or an edge of ``{"text": ...}`` / ``{"name": ...}``."""
    out: list[str] = []
    for tag in _edge(value) or []:
        if isinstance(tag, dict):
            tag = tag.get("text") or tag.get("name")
        if isinstance(tag, str) and tag.strip():
            out.append(tag.strip())
    return out


@register
class ThreatExchangeExchange(Exchange):
    """Sync a bank with one ThreatExchange privacy group; send verdicts as reactions."""

    kind: ClassVar[str] = "threatexchange"
    Config: ClassVar[type[ExchangeConfig]] = ThreatExchangeConfig
    Credentials: ClassVar[type[ExchangeCredentials] | None] = ThreatExchangeCredentials
    feedback: ClassVar[frozenset[Verdict]] = frozenset({Verdict.POSITIVE, Verdict.NEGATIVE})
    default_interval: ClassVar[float] = 900.0

    config: ThreatExchangeConfig
    credentials: ThreatExchangeCredentials

    def __init__(
        self,
        config: ExchangeConfig,
        credentials: ExchangeCredentials | None = None,
        context: ExchangeContext | None = None,
    ) -> None:
        if not isinstance(config, ThreatExchangeConfig):
            raise TypeError("ThreatExchangeExchange needs a ThreatExchangeConfig")
        if not isinstance(credentials, ThreatExchangeCredentials):
            raise PermanentError("ThreatExchange needs credentials (an app access token)")
        super().__init__(config, credentials, context)
        self._client = httpx.Client(
            timeout=self.context.timeout,
            transport=self.context.transport,
            headers={"User-Agent": self.context.user_agent},
        )
        base = urlsplit(self.config.base_url)
        self._origin = (base.scheme, base.netloc.lower())
        self._root = f"{self.config.base_url}/{self.config.api_version}"
        #: Seconds since the epoch; tests replace it.
        self.clock = time.time

    def close(self) -> None:
        self._client.close()

    @property
    def list_name(self) -> str:
        return self.config.list_name or f"privacy-group:{self.config.privacy_group}"

    # -- HTTP ------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, self.credentials.access_token)

    def _request(
        self, method: str, url: str | httpx.URL, what: str, *, limit: int, **kwargs: Any
    ) -> Answer:
        """Send a request to the API and read at most ``limit`` bytes of a success body
        (``_MAX_ERROR_BYTES`` of an error body); map failures to exchange errors."""
        self._check_origin(url)
        response = read_capped(
            self._client,
            method,
            url,
            limit=limit,
            error_limit=_MAX_ERROR_BYTES,
            excerpt=_RAW_EXCERPT,
            partner="ThreatExchange",
            what=what,
            scrub=self._redact,
            **kwargs,
        )
        code = response.status_code
        if code < 400:
            return response
        graph_code, message = _graph_error(response)
        detail = f"HTTP {code}" + (f", error {graph_code}" if graph_code is not None else "")
        if message:
            detail += f": {message}"
        detail = self._redact(detail)
        if code == 429 or graph_code in _THROTTLE_CODES:
            raise TransientError(
                f"ThreatExchange {what} throttled ({detail})",
                retry_after=retry_after(response.headers.get("Retry-After"), most=_MAX_RETRY_AFTER),
            )
        if (
            code in (401, 403)
            or graph_code in _AUTH_CODES
            or (graph_code is not None and 200 <= graph_code < 300)
        ):
            raise PermanentError(
                f"ThreatExchange refused {what} ({detail}): check the access token and "
                "the app's membership of the privacy group"
            )
        if code == 408 or code >= 500:
            hint = ""
            if code == 500 and what == "threat_updates":
                hint = " (ThreatExchange also answers 500 when threat_updates is not enabled "
                hint += "for the privacy group)"
            raise TransientError(
                f"ThreatExchange {what} failed ({detail}){hint}",
                retry_after=retry_after(response.headers.get("Retry-After"), most=_MAX_RETRY_AFTER),
            )
        raise PermanentError(f"ThreatExchange rejected {what} ({detail})")

    def _same_origin(self, url: str | httpx.URL) -> bool:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return False
        return (parsed.scheme, parsed.netloc.decode("ascii").lower()) == self._origin

    def _check_origin(self, url: str | httpx.URL) -> None:
        """The token goes to the configured API only: a last check before any request."""
        if not self._same_origin(url):
            raise PermanentError("ThreatExchange: refusing to send the token outside the API")

    def _with_token(self, url: str) -> httpx.URL:
        """``url`` (already checked to be on the API's origin) with the access token."""
        self._check_origin(url)
        parsed = httpx.URL(url)
        return parsed.copy_remove_param("access_token").copy_add_param(
            "access_token", self.credentials.access_token
        )

    def _strip_next(self, url: str) -> str:
        """The next-page URL to keep in a checkpoint: no token, and on the API's own host (the
        token is never sent anywhere else)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise PoisonedPage("ThreatExchange paging.next is not a URL") from None
        if (parsed.scheme, parsed.netloc.decode("ascii").lower()) != self._origin:
            raise PoisonedPage("ThreatExchange paging.next points outside the API")
        return str(parsed.copy_remove_param("access_token"))

    # -- fetching ---------------------------------------------------------------------------

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        cp = dict(checkpoint or {})
        skipped: dict[str, int] = {
            str(k): int(v)
            for k, v in (cp.get("skipped") or {}).items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
        start = cp.get("start_time")
        if isinstance(start, bool) or not isinstance(start, int):
            start = None
        stop = cp.get("stop_time")
        next_url = cp.get("next")
        if isinstance(next_url, str) and not self._same_origin(next_url):
            # Never send the token there (an edited checkpoint, or base_url changed mid-window):
            # read the window again from its start instead; upserts are idempotent.
            log.warning("ThreatExchange: the stored next URL is not on the API; window restarted")
            next_url = None
        seen: set[str] = set()  # next URLs followed in this window: a repeat would loop forever
        if isinstance(stop, int) and not isinstance(stop, bool) and isinstance(next_url, str):
            url = self._with_token(next_url)  # resume inside a window
            params: dict[str, Any] | None = None
            seen.add(str(httpx.URL(next_url).copy_remove_param("access_token")))
        else:
            stop = int(self.clock()) - self.config.settle_seconds
            if start is not None and stop <= start:
                return  # nothing can have settled since the last window
            url = httpx.URL(f"{self._root}/{self.config.privacy_group}/threat_updates")
            params = {
                "access_token": self.credentials.access_token,
                "types": ",".join(self.config.types),
                "fields": "id,indicator,type,last_updated,should_delete,"
                "descriptors{id,owner{id,name},status,tags}",
                "limit": self.config.page_size,
                "stop_time": stop,
            }
            if start is not None:
                params["start_time"] = start
        done = 0
        limit = self.config.max_page_bytes
        while True:
            response = self._request("GET", url, "threat_updates", limit=limit, params=params)
            data, next_url = self._parse_page(response, start, stop)
            if next_url is not None:
                if next_url in seen:
                    raise PoisonedPage(
                        "ThreatExchange paging.next does not advance",
                        raw=self._redact(next_url)[:_RAW_EXCERPT],
                    )
                seen.add(next_url)
            items: list[Item] = []
            for record in data:
                item = self._item(record, skipped)
                if item is not None:
                    items.append(item)
            done += len(data)
            if next_url:
                cp = {
                    "start_time": start,
                    "stop_time": stop,
                    "next": next_url,
                    "skipped": dict(skipped),
                }
                yield Page(items, cp, progress=(done, None))
                url, params = self._with_token(next_url), None
                continue
            # Window done; the next one starts a second early in case its bounds are exclusive.
            cp = {"start_time": max(stop - 1, start or 0), "skipped": dict(skipped)}
            yield Page(items, cp, progress=(done, done))
            return

    def _parse_page(
        self, response: Answer, start: int | None, stop: int
    ) -> tuple[list[Any], str | None]:
        # Redact before clipping, so a token cut in half by the clip is still found.
        head = response.body[: _RAW_EXCERPT + 16_384].decode("utf-8", "replace")
        raw = self._redact(head)[:_RAW_EXCERPT]
        if response.too_big:
            raise PoisonedPage(
                f"ThreatExchange answered more than {self.config.max_page_bytes} bytes "
                "(max_page_bytes)",
                raw=raw,
            )
        try:
            body = json.loads(response.body)
        except ValueError:
            raise PoisonedPage("ThreatExchange answered invalid JSON", raw=raw) from None
        except (RecursionError, MemoryError) as exc:
            raise PoisonedPage(
                f"ThreatExchange answered JSON too deeply nested to read ({type(exc).__name__})",
                raw=raw,
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
            raise PoisonedPage("ThreatExchange answered an unexpected shape", raw=raw)
        paging = body.get("paging") or {}
        next_url = paging.get("next") if isinstance(paging, dict) else None
        if next_url is not None and not isinstance(next_url, str):
            raise PoisonedPage("ThreatExchange paging.next is not a string", raw=raw)
        return body.get("data", []), (self._strip_next(next_url) if next_url else None)

    def _item(self, record: Any, skipped: dict[str, int]) -> Item | None:
        raw = self._redact(short_raw(record, _RAW_EXCERPT))
        if not isinstance(record, dict):
            return Poisoned("threat update is not an object", raw=raw)
        ident = record.get("id")
        if isinstance(ident, int) and not isinstance(ident, bool):
            ident = str(ident)
        if not isinstance(ident, str) or not ident.isdigit() or len(ident) > 40:
            return Poisoned("threat update has no numeric id", raw=raw)
        key = ident
        te_type = record.get("type")
        if not isinstance(te_type, str) or not te_type:
            return Poisoned("threat update has no type", key=key, raw=raw)
        signal_type = SIGNAL_TYPES.get(te_type)
        if signal_type is None:
            skipped[te_type[:40]] = skipped.get(te_type[:40], 0) + 1
            return None
        should_delete = record.get("should_delete", False)
        if not isinstance(should_delete, bool):
            return Poisoned("should_delete is not a boolean", key=key, raw=raw)
        if should_delete:
            return Removal(key, "ThreatExchange deleted it or removed it from the group")
        descriptors = _edge(record.get("descriptors"))
        if not descriptors:
            # An indicator is visible only through a descriptor we can see: none, it is gone.
            return Removal(key, "no ThreatExchange descriptor is visible any more")
        indicator = record.get("indicator")
        if not isinstance(indicator, str) or not indicator.strip():
            return Poisoned("threat update has no indicator", key=key, raw=raw)
        try:
            added_at = _epoch(record.get("last_updated")) if "last_updated" in record else None
        except (ValueError, OverflowError, OSError):
            return Poisoned("last_updated is not a time", key=key, raw=raw)
        meta_descriptors: list[dict[str, Any]] = []
        statuses: list[str] = []
        tags: list[str] = []
        for descriptor in descriptors:
            if not isinstance(descriptor, dict):
                return Poisoned("a descriptor is not an object", key=key, raw=raw)
            d_id = descriptor.get("id")
            d_id = str(d_id) if isinstance(d_id, int) and not isinstance(d_id, bool) else d_id
            if not isinstance(d_id, str) or not d_id.isdigit() or len(d_id) > 40:
                return Poisoned("a descriptor has no numeric id", key=key, raw=raw)
            owner = descriptor.get("owner")
            owner_id = owner.get("id") if isinstance(owner, dict) else None
            owner_id = str(owner_id) if isinstance(owner_id, int | str) else None
            status = descriptor.get("status")
            status = status if isinstance(status, str) else None
            if status:
                statuses.append(status)
            tags.extend(_tags(descriptor.get("tags")))
            if len(meta_descriptors) < _MAX_DESCRIPTORS:
                meta_descriptors.append({"id": d_id, "owner": owner_id, "status": status})
        if (
            self.config.drop_non_malicious
            and statuses
            and len(statuses) == len(descriptors)
            and all(s == "NON_MALICIOUS" for s in statuses)
        ):
            return Removal(key, "every ThreatExchange descriptor says NON_MALICIOUS")
        labels = list(self.config.labels)
        if self.config.tag_labels:
            for tag in dict.fromkeys(tags):
                label = f"te:{tag}"
                if len(labels) >= MAX_LABELS:
                    break
                if len(label) <= MAX_LABEL and not _LABEL_BAD.search(label):
                    labels.append(label)
        metadata = {
            "indicator_id": key,
            "type": te_type,
            "descriptors": meta_descriptors,
        }
        try:
            entry = normalize_entry(
                NewEntry(
                    signal_type=signal_type,
                    value=indicator,
                    source=self.config.source,
                    list_name=self.list_name,
                    added_at=added_at,
                    labels=labels,
                    metadata=metadata,
                )
            )
        except ValueError as exc:
            return Poisoned(f"invalid {te_type} indicator: {exc}", key=key, raw=raw)
        return Upsert(key, (entry,))

    # -- feedback ---------------------------------------------------------------------------

    def send_feedback(self, item: FeedbackItem) -> None:
        reactions = (
            self.config.positive_reactions
            if item.verdict is Verdict.POSITIVE
            else self.config.negative_reactions
        )
        if not reactions:
            raise FeedbackUnsupported(
                f"no ThreatExchange reaction is configured for {item.verdict}"
            )
        descriptors = _descriptor_targets(item.metadata)
        if not descriptors:
            raise FeedbackUnsupported("the entry names no ThreatExchange descriptor to react to")
        me = self.credentials.app_id
        # Reactions go on other apps' descriptors only (ThreatExchange's reacting docs).
        targets = [d for d, owner in descriptors if me is None or owner != me]
        if not targets:
            raise FeedbackUnsupported("every descriptor of this indicator is this app's own")
        for descriptor_id in targets:
            response = self._request(
                "POST",
                f"{self._root}/{descriptor_id}",
                "reaction",
                limit=_MAX_ERROR_BYTES,
                data={
                    "reactions": ",".join(reactions),
                    "access_token": self.credentials.access_token,
                },
            )
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("success") is False:
                raise PermanentError("ThreatExchange did not accept the reaction")


def _descriptor_targets(metadata: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    raw = metadata.get("descriptors") if isinstance(metadata, Mapping) else None
    for descriptor in raw if isinstance(raw, list) else []:
        if not isinstance(descriptor, dict):
            continue
        d_id = descriptor.get("id")
        owner = descriptor.get("owner")
        if isinstance(d_id, str) and d_id.isdigit():
            out.append((d_id, owner if isinstance(owner, str) else None))
    return out

"""StopNCII.org hash exchange: pull the hashes people submitted to StopNCII, report matches back.

StopNCII publishes hashes (PDQ for images, MD5 for videos) that adults generated on their own
device from intimate images they fear will be shared without consent. Platforms fetch them with
``FetchHashes`` and tell StopNCII what they did with ``SubmitFeedback`` (``Blocked`` after
review confirmed the match, ``NotBlocked`` when it did not).

Wire format (see ``docs/exchanges-stopncii.md`` for sources): ``GET {base}/FetchHashes`` with
``startTimestamp``, ``pageSize`` and ``nextPageToken``, headers ``Ocp-Apim-Subscription-Key``
(every call) and ``x-functions-key`` (one key per endpoint). Each record is the current, whole
state of one hash; ``hashStatus`` ``Withdrawn`` or ``Deleted`` means the person withdrew it and
platforms must stop using it. python-threatexchange compares ``hashValue`` (not ``hashStatus``)
with those states, so its client never drops a withdrawn hash; here a withdrawal is a
:class:`Removal`, always.

Checkpoints: ``{"start", "page_token", "pass_started", "token_at", "skipped"}``. A pass asks for
every record modified since ``start`` and walks the page tokens; mid-pass the checkpoint holds the
token (tokens expire, so a stale or refused token restarts the pass from ``start``, which only
repeats idempotent upserts). A finished pass sets ``start`` to the time the pass began, less a
margin for clock skew, so the next pass misses nothing that changed while we read.

Untrusted answers: a body is read in a stream and refused (poisoned page) past
``max_page_bytes``; JSON too deeply nested to decode is a poisoned page too, as is a page token
that does not advance (the token just sent, or any token already followed in this pass).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import Field, field_validator

from bastion.banks.model import NewEntry, normalize_entry
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

DEFAULT_BASE_URL = "https://api.stopncii.org/v1"

#: StopNCII signalType -> Bastion signal type. VideoTMK, Text and Unknown have no Bastion
#: matcher: such records are skipped and counted in the checkpoint's ``skipped``.
SIGNAL_TYPES: dict[str, SignalType] = {
    "ImagePDQ": SignalType.PDQ,
    "VideoMD5": SignalType.MD5,
    "URL": SignalType.URL,
}
#: Aggregate statuses of a hash that keep it in use, and those that take it out of use.
ACTIVE_STATUSES = frozenset({"Received", "Active"})
REMOVED_STATUSES = frozenset({"Withdrawn", "Deleted"})
#: Bastion verdict -> StopNCII CSP feedback value.
FEEDBACK_VALUES: dict[Verdict, str] = {
    Verdict.POSITIVE: "Blocked",
    Verdict.NEGATIVE: "NotBlocked",
}
_MAX_RETRY_AFTER = 86_400.0
#: Error answers are read only this far (enough for any error message).
_MAX_ERROR_BYTES = 64 << 10
_RAW_EXCERPT = 2000


class StopNCIIConfig(ExchangeConfig):
    """Non-secret settings of a StopNCII exchange."""

    base_url: str = DEFAULT_BASE_URL
    #: Records per FetchHashes call (python-threatexchange asks for 800).
    page_size: int = Field(default=800, ge=1, le=5000)
    #: Unix time of the first pass: the default (10, as python-threatexchange) means everything.
    start_timestamp: int = Field(default=10, ge=0)
    #: Seconds subtracted from a pass's start time when it becomes the next pass's start.
    overlap_seconds: int = Field(default=300, ge=0, le=86_400)
    #: A checkpointed page token older than this is not trusted: the pass restarts instead.
    token_max_age_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)
    source: str = Field(default="StopNCII", min_length=1, max_length=255)
    list_name: str = Field(default="stopncii", min_length=1, max_length=255)
    labels: tuple[str, ...] = ("ncii", "stopncii")
    #: Tags sent with every feedback (StopNCII's ``tags`` are free-form; keep them codes).
    feedback_tags: tuple[str, ...] = ()
    #: Largest FetchHashes answer read (after content decoding); a bigger one is a poisoned page.
    max_page_bytes: int = Field(default=64 << 20, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return https_base(value)

    @field_validator("feedback_tags")
    @classmethod
    def _tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not _is_code(tag):
                raise ValueError("feedback tags must be 1-64 letters, digits, '-' or '_'")
        return value


class StopNCIICredentials(ExchangeCredentials):
    """StopNCII API keys: the Azure API Management subscription key (every call) and one
    function key per endpoint. Without ``feedback_function_key`` no feedback is sent."""

    subscription_key: str = Field(min_length=1, max_length=512)
    fetch_function_key: str = Field(min_length=1, max_length=512)
    feedback_function_key: str | None = Field(default=None, min_length=1, max_length=512)


def _is_code(text: str) -> bool:
    return (
        0 < len(text) <= 64 and text.isascii() and text.replace("-", "").replace("_", "").isalnum()
    )


def _raise_for_status(response: Answer, what: str) -> None:
    """Map an HTTP failure to the exchange error the store acts on. Bodies are not quoted: they
    may echo request data."""
    code = response.status_code
    if code < 400:
        return
    if code in (401, 403):
        raise PermanentError(f"StopNCII refused {what} (HTTP {code}): check the API keys")
    if code == 429 or code == 408 or code >= 500:
        raise TransientError(
            f"StopNCII {what} failed (HTTP {code})",
            retry_after=retry_after(response.headers.get("Retry-After"), most=_MAX_RETRY_AFTER),
        )
    raise PermanentError(f"StopNCII rejected {what} (HTTP {code})")


@register
class StopNCIIExchange(Exchange):
    """Sync a bank with StopNCII.org's hash list; send Blocked / NotBlocked feedback."""

    kind: ClassVar[str] = "stopncii"
    Config: ClassVar[type[ExchangeConfig]] = StopNCIIConfig
    Credentials: ClassVar[type[ExchangeCredentials] | None] = StopNCIICredentials
    feedback: ClassVar[frozenset[Verdict]] = frozenset(FEEDBACK_VALUES)
    default_interval: ClassVar[float] = 900.0

    config: StopNCIIConfig
    credentials: StopNCIICredentials

    def __init__(
        self,
        config: ExchangeConfig,
        credentials: ExchangeCredentials | None = None,
        context: ExchangeContext | None = None,
    ) -> None:
        if not isinstance(config, StopNCIIConfig):
            raise TypeError("StopNCIIExchange needs a StopNCIIConfig")
        if not isinstance(credentials, StopNCIICredentials):
            raise PermanentError("StopNCII needs credentials (subscription and fetch keys)")
        super().__init__(config, credentials, context)
        self._client = httpx.Client(
            timeout=self.context.timeout,
            transport=self.context.transport,
            headers={"User-Agent": self.context.user_agent},
        )
        #: Seconds since the epoch; tests replace it to control pass start times.
        self.clock = time.time

    def close(self) -> None:
        self._client.close()

    # -- fetching -------------------------------------------------------------------------

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        cp = dict(checkpoint or {})
        start = cp.get("start", self.config.start_timestamp)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            start = self.config.start_timestamp
        skipped: dict[str, int] = {
            str(k): int(v)
            for k, v in (cp.get("skipped") or {}).items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
        now = int(self.clock())
        token = cp.get("page_token") if isinstance(cp.get("page_token"), str) else None
        pass_started = cp.get("pass_started")
        token_at = cp.get("token_at")
        if token and not (
            isinstance(pass_started, int)
            and isinstance(token_at, int)
            and now - token_at <= self.config.token_max_age_seconds
        ):
            token = None  # too old to trust: read the pass again from its start
        if not token or not isinstance(pass_started, int):
            token, pass_started = None, now
        done = 0
        seen: set[str] = set()  # page tokens followed in this pass: a repeat would loop forever
        if token:
            seen.add(token)
        while True:
            try:
                data = self._fetch_page(start, token)
            except _TokenRefused:
                # An expired or unknown page token: restart this pass from its start time.
                token, pass_started = None, int(self.clock())
                seen.clear()
                data = self._fetch_page(start, None)
            records, has_more, next_token = data
            if next_token is not None:
                if next_token in seen:
                    raise PoisonedPage(
                        "StopNCII FetchHashes: the nextPageToken does not advance",
                        raw=short_raw({"nextPageToken": next_token[:200]}, _RAW_EXCERPT),
                    )
                seen.add(next_token)
            items: list[Item] = []
            for record in records:
                item = self._item(record, skipped)
                if item is not None:
                    items.append(item)
            done += len(records)
            if has_more:
                cp = {
                    "start": start,
                    "page_token": next_token,
                    "pass_started": pass_started,
                    "token_at": int(self.clock()),
                    "skipped": dict(skipped),
                }
                yield Page(items, cp, progress=(done, None))
                token = next_token
                continue
            # Our clock, not nextSetTimestamp: python-threatexchange's own fixture has that go
            # backwards between pages. The overlap absorbs clock skew; repeats are idempotent.
            resume = max(start, pass_started - self.config.overlap_seconds)
            cp = {"start": resume, "page_token": None, "skipped": dict(skipped)}
            yield Page(items, cp, progress=(done, done))
            return

    def _fetch_page(self, start: int, token: str | None) -> tuple[list[Any], bool, str | None]:
        params: dict[str, Any] = {"startTimestamp": start, "pageSize": self.config.page_size}
        if token:
            params["nextPageToken"] = token
        headers = {
            "Ocp-Apim-Subscription-Key": self.credentials.subscription_key,
            "x-functions-key": self.credentials.fetch_function_key,
        }
        limit = self.config.max_page_bytes
        response = read_capped(
            self._client,
            "GET",
            f"{self.config.base_url}/FetchHashes",
            limit=limit,
            error_limit=_MAX_ERROR_BYTES,
            excerpt=_RAW_EXCERPT,
            partner="StopNCII",
            what="FetchHashes",
            params=params,
            headers=headers,
        )
        if token and response.status_code in (400, 404, 410):
            raise _TokenRefused
        _raise_for_status(response, "FetchHashes")
        text = response.excerpt(_RAW_EXCERPT)
        if response.too_big:
            raise PoisonedPage(
                f"StopNCII FetchHashes answered more than {limit} bytes (max_page_bytes)",
                raw=text,
            )
        try:
            body = json.loads(response.body)
        except ValueError:
            raise PoisonedPage("StopNCII FetchHashes answered invalid JSON", raw=text) from None
        except (RecursionError, MemoryError) as exc:
            raise PoisonedPage(
                f"StopNCII FetchHashes answered JSON too deeply nested to read "
                f"({type(exc).__name__})",
                raw=text,
            ) from None
        if not isinstance(body, dict):
            raise PoisonedPage("StopNCII FetchHashes answered with a non-object", raw=text)
        records = body.get("hashRecords")
        if records is None:
            records = []
        if not isinstance(records, list):
            raise PoisonedPage("StopNCII FetchHashes: hashRecords is not a list", raw=text)
        has_more = body.get("hasMoreRecords", False)
        if not isinstance(has_more, bool):
            raise PoisonedPage("StopNCII FetchHashes: hasMoreRecords is not a boolean", raw=text)
        next_token = body.get("nextPageToken")
        if has_more and (not isinstance(next_token, str) or not next_token):
            raise PoisonedPage(
                "StopNCII FetchHashes: hasMoreRecords without a nextPageToken", raw=text
            )
        return records, has_more, (next_token if has_more else None)

    def _item(self, record: Any, skipped: dict[str, int]) -> Item | None:
        """One hash record as an Upsert or Removal; None for a type Bastion cannot match."""
        raw = short_raw(record, _RAW_EXCERPT)
        if not isinstance(record, dict):
            return Poisoned("hash record is not an object", raw=raw)
        value = record.get("hashValue")
        if not isinstance(value, str) or not value.strip():
            return Poisoned("hash record has no hashValue", raw=raw)
        key = _key(value)
        upstream_type = record.get("signalType")
        if not isinstance(upstream_type, str):
            return Poisoned("hash record has no signalType", key=key, raw=raw)
        status = record.get("hashStatus")
        if not isinstance(status, str):
            return Poisoned("hash record has no hashStatus", key=key, raw=raw)
        signal_type = SIGNAL_TYPES.get(upstream_type)
        if signal_type is None:
            skipped[upstream_type[:40]] = skipped.get(upstream_type[:40], 0) + 1
            return None
        cases = record.get("caseNumbers") or {}
        if not isinstance(cases, dict):
            return Poisoned("caseNumbers is not an object", key=key, raw=raw)
        # The aggregate status decides; a hash all of whose cases are withdrawn is withdrawn too,
        # whatever the aggregate says (belt and braces: withdrawal must never be missed).
        case_states = [s for s in cases.values() if isinstance(s, str)]
        if status in REMOVED_STATUSES or (
            case_states and all(s in REMOVED_STATUSES for s in case_states)
        ):
            reason = status if status in REMOVED_STATUSES else case_states[0]
            return Removal(key, f"StopNCII hash {reason.lower()}")
        if status not in ACTIVE_STATUSES:
            return Poisoned(f"unknown hashStatus {status[:40]!r}", key=key, raw=raw)
        modified = record.get("lastModtimestamp")
        added_at = None
        if modified is not None:
            if isinstance(modified, bool) or not isinstance(modified, int | float):
                return Poisoned("lastModtimestamp is not a number", key=key, raw=raw)
            try:
                added_at = datetime.fromtimestamp(modified, UTC)
            except (OverflowError, OSError, ValueError):
                return Poisoned("lastModtimestamp is out of range", key=key, raw=raw)
        metadata: dict[str, Any] = {
            "signal_type": upstream_type,
            "hash_status": status,
            "cases": len(cases),
        }
        if isinstance(modified, int):
            metadata["last_modified"] = modified
        try:
            entry = normalize_entry(
                NewEntry(
                    signal_type=signal_type,
                    value=value,
                    source=self.config.source,
                    list_name=self.config.list_name,
                    added_at=added_at,
                    labels=list(self.config.labels),
                    metadata=metadata,
                )
            )
        except ValueError as exc:
            return Poisoned(f"invalid {upstream_type} hashValue: {exc}", key=key, raw=raw)
        if entry.value != value:
            # Feedback names the hash as StopNCII spelled it (replace() drops the canonical mark,
            # so the entry is validated again).
            entry = normalize_entry(replace(entry, metadata={**metadata, "hash_value": value}))
        return Upsert(key, (entry,))

    # -- feedback -------------------------------------------------------------------------

    def send_feedback(self, item: FeedbackItem) -> None:
        value = FEEDBACK_VALUES.get(item.verdict)
        if value is None:
            raise FeedbackUnsupported(f"StopNCII has no feedback value for {item.verdict}")
        key = self.credentials.feedback_function_key
        if not key:
            raise FeedbackUnsupported("no StopNCII feedback function key is configured")
        hash_value = _metadata_str(item.metadata, "hash_value") or item.value
        tags = list(self.config.feedback_tags)
        reason = item.reason
        if reason and _is_code(reason) and reason not in tags:
            tags.append(reason)  # a short code only: reviewers' free text never leaves
        body = {
            "count": 1,
            "hashFeedbacks": [{"hashValue": hash_value, "feedbackValue": value, "tags": tags}],
        }
        headers = {
            "Ocp-Apim-Subscription-Key": self.credentials.subscription_key,
            "x-functions-key": key,
        }
        response = read_capped(
            self._client,
            "POST",
            f"{self.config.base_url}/SubmitFeedback",
            limit=_MAX_ERROR_BYTES,  # the answer's body is not used
            error_limit=_MAX_ERROR_BYTES,
            excerpt=_RAW_EXCERPT,
            partner="StopNCII",
            what="SubmitFeedback",
            json=body,
            headers=headers,
        )
        _raise_for_status(response, "SubmitFeedback")


class _TokenRefused(Exception):
    """The server would not take a page token (expired): restart the pass."""


def _key(value: str) -> str:
    """The record's key: the hash as StopNCII spells it (lowercased hex), hashed when too long
    for an external id (URLs)."""
    text = value.strip()
    if len(text) <= 200:
        return text.lower() if all(c in "0123456789abcdefABCDEF" for c in text) else text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _metadata_str(metadata: Mapping[str, Any], name: str) -> str | None:
    value = metadata.get(name) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None

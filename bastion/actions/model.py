"""Pure rules for actions: names, idempotency keys, the webhook body, backoff, and what an HTTP
status means for delivery. No web or database imports; the outbox store and worker wrap these."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

#: Actions the policy and review stages name; others are configured by name (``[webhooks.x]``).
BUILTIN_ACTIONS = ("remove_content", "restrict_account", "preserve")
ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*$")
MAX_ACTION = 64
#: Idempotency keys go into an HTTP header, so: visible ASCII (no spaces or control characters),
#: bounded. Callers building keys from platform ids that may hold other characters should hash
#: them (or use Bastion's own ids).
KEY_RE = re.compile(r"^[!-~]+$")
MAX_KEY = 200
#: Largest serialised body a row may hold.
MAX_BODY = 256 * 1024


class State(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


def validate_action(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_ACTION or not ACTION_RE.match(name):
        raise ValueError(
            f"invalid action name {name!r}: use lowercase words joined by _ . or - "
            f"(at most {MAX_ACTION} characters), e.g. remove_content"
        )
    return name


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or not KEY_RE.match(key):
        raise ValueError(
            f"invalid idempotency key {key!r}: 1 to {MAX_KEY} visible ASCII characters, no spaces"
        )
    return key


def canonical_payload(payload: object) -> dict[str, Any]:
    """``payload`` as it reads back from a JSON column (a round trip), or ValueError. Refuses NUL
    characters, which PostgreSQL's jsonb cannot hold."""
    if not isinstance(payload, dict):
        raise ValueError(f"action payload must be a JSON object, not {type(payload).__name__}")
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"action payload is not storable as JSON: {exc}") from None
    if "\\u0000" in text:
        raise ValueError("action payload contains a NUL character")
    if len(text) > MAX_BODY:
        raise ValueError(f"action payload is {len(text)} characters of JSON; limit {MAX_BODY}")
    return json.loads(text)


def build_body(
    *,
    key: str,
    action: str,
    created_at: datetime,
    case_id: int | None,
    payload: dict[str, Any],
) -> str:
    """The webhook body, serialised once at enqueue time and sent byte for byte on every attempt
    (so each attempt's signature covers the same bytes the receiver may already have seen)."""
    doc = {
        "id": key,
        "action": action,
        "created_at": created_at.astimezone(UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "case_id": case_id,
        "data": payload,
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if len(text.encode("utf-8")) > MAX_BODY:
        raise ValueError(f"webhook body would exceed {MAX_BODY} bytes")
    return text


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``n`` (1-based, just failed) waits
    ``min(cap, base * 2**(n-1))`` scaled by a random factor in ``[1 - jitter, 1]``, so retries
    from many rows that failed together spread out instead of arriving at once."""

    base: float = 10.0
    cap: float = 3600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base and 0 <= self.jitter < 1):
            raise ValueError("backoff needs base > 0, cap >= base and 0 <= jitter < 1")

    def ceiling(self, attempts: int) -> float:
        """The delay before jitter after ``attempts`` failed attempts."""
        exponent = min(max(attempts, 1) - 1, 60)  # 2**60 s is far past any cap
        return min(self.cap, self.base * 2.0**exponent)

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        r = (rng or random).random()
        return self.ceiling(attempts) * (1.0 - self.jitter * r)


#: 4xx answers that mean "not now" rather than "never": timeout, conflict (e.g. the same key
#: still being processed), too early, rate limited.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


def classify_status(status: int) -> Outcome:
    """2xx acknowledges; other 4xx are permanent (a receiver refusing the signature or the body
    will refuse the same bytes again); 3xx (redirects are not followed), 5xx and the retryable
    4xx are tried again."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Outcome.DEAD
    return Outcome.RETRY

"""What the exchange store and engine hand out, and the reasons they write on entries.

Pure: no database or web framework imports. The rows behind these records are in
:mod:`bastion.exchanges.rows`; the store that reads and writes them is
:mod:`bastion.exchanges.store`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Prefix of the ``disabled_reason`` of entries disabled because of the partner (a removal, a
#: snapshot without them, too few vouchers). Only such entries are re-enabled by an upsert;
#: entries disabled here (a reviewer's "not abusive", an admin) stay disabled.
UPSTREAM = "upstream:"
AWAITING = "upstream: awaiting vouchers"
#: Prefix of an entry disabled here first and then withdrawn by the partner: it keeps the local
#: reason after :data:`WAS`, stays disabled if the partner lists it again (the reason reverts to
#: the local one), and no longer counts as the partner vouching for it.
WITHDRAWN_LOCAL = "upstream+local:"
WAS = " | was: "
STATES = ("idle", "syncing", "error", "stalled")
TOTALS = ("added", "updated", "removed", "disabled", "poisoned")
MAX_ERROR = 2000
MAX_RAW = 2000
MAX_KEY = 255
#: Rows per statement of the chunked reads and writes (SQLite's placeholder budget).
CHUNK = 2000
MAX_CHECKPOINT = 64 * 1024


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """What list and status show of an exchange; never its credentials."""

    name: str
    kind: str
    bank: str
    enabled: bool
    config: dict[str, Any]
    has_credentials: bool
    interval_seconds: float
    on_delete: str
    vouch_group: str | None
    min_vouchers: int
    send_feedback: bool
    checkpoint: dict[str, Any] | None
    state: str
    last_sync_at: datetime | None
    last_success_at: datetime | None
    next_sync_at: datetime | None
    last_error: str | None
    failures: int
    totals: dict[str, int]
    created_at: datetime
    updated_at: datetime
    lease_holder: str | None = None
    lease_until: datetime | None = None
    poison_attempts: int = 0


@dataclass(slots=True)
class SyncResult:
    exchange: str
    pages: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    disabled: int = 0
    poisoned: int = 0
    skipped_pages: int = 0
    error: str | None = None
    complete: bool = False
    checkpoint: dict[str, Any] | None = None

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in (*TOTALS, "pages", "skipped_pages")}


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Handed to a ``progress`` callback after each page: the run's counts so far and the
    page's own ``progress`` (done, total or None) when the exchange knows it."""

    exchange: str
    pages: int
    added: int
    updated: int
    removed: int
    disabled: int
    poisoned: int
    done: int | None
    total: int | None
    checkpoint: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ExchangeErrorRecord:
    id: int
    at: datetime
    kind: str
    checkpoint: dict[str, Any] | None
    key: str | None
    error: str
    raw: str


@dataclass(frozen=True, slots=True)
class SyncRun:
    id: int
    worker_id: str
    state: str  # running | ok | partial | error | interrupted
    started_at: datetime
    finished_at: datetime | None
    pages: int
    added: int
    updated: int
    removed: int
    disabled: int
    poisoned: int
    skipped_pages: int
    error: str | None
    checkpoint: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AttestationRecord:
    id: int
    at: datetime
    version: int
    root: str
    computed: str | None
    count: int
    agrees: bool
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    id: int
    exchange: str
    entry_id: int
    key: str
    signal_type: str
    verdict: str
    reason: str
    case_id: int | None
    state: str  # pending | sending | sent | failed | unsupported
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def clip(text: object, limit: int = MAX_ERROR) -> str:
    """``text`` as storable text of at most ``limit`` characters (an ellipsis marks a cut)."""
    s = str(text).replace("\x00", "")
    s = s.encode("utf-8", "replace").decode("utf-8")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def upstream_disabled(enabled: bool, reason: str | None) -> bool:
    return not enabled and (reason or "").startswith(UPSTREAM)


def withdrawn_local(reason: str, local: str) -> str:
    """The reason of a locally disabled entry the partner then withdrew."""
    upstream = reason.removeprefix(UPSTREAM).strip()
    return clip(f"{WITHDRAWN_LOCAL} {upstream}{WAS}{local}", 2000)


def local_reason(reason: str) -> str:
    """The local reason kept inside a :data:`WITHDRAWN_LOCAL` reason."""
    return reason.partition(WAS)[2] if reason.startswith(WITHDRAWN_LOCAL) else reason


def vouches(enabled: bool, reason: str | None) -> bool:
    """Whether an entry counts as its exchange vouching for the value: it is enabled, held back
    only for vouchers, or disabled here (the partner still lists it)."""
    why = reason or ""
    return (
        bool(enabled) or why.startswith(AWAITING) or not why.startswith((UPSTREAM, WITHDRAWN_LOCAL))
    )

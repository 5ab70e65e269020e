"""The exchange interface: what every connector to an outside hash list implements.

An exchange turns a partner's API or a list file into a stream of :class:`Page` objects. Each
page carries the changes it holds (:class:`Upsert`, :class:`Removal`, :class:`Poisoned`) and the
checkpoint to resume from once they are applied. The store applies a page's changes and its
checkpoint in one transaction, so a crash loses nothing and repeats nothing: the next sync starts
from the last committed checkpoint and fetches the interrupted page again.

Pure: no database or web framework imports. The sync engine (``bastion.exchanges.engine``)
drives an exchange; the exchange never sees the store. Modelled on python-threatexchange's
``SignalExchangeAPI`` (fetch an iterator of deltas from a checkpoint, then report back), without
its in-memory state or pickled checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bastion.banks.model import NewEntry

#: Checkpoints are JSON objects: stored as JSON, shown by ``bastion exchange status``.
Checkpoint = dict[str, Any]


class ExchangeError(Exception):
    """A sync or feedback call failed. Messages never carry credentials or list contents."""


class TransientError(ExchangeError):
    """Try again later: a server error, a timeout, rate limiting. ``retry_after`` (seconds) is
    the partner's own hint, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ExchangeError):
    """Retrying will not help until a person changes something: bad credentials, a revoked
    membership, a configuration the partner rejects."""


class PoisonedPage(ExchangeError):
    """A whole page could not be read (not JSON, wrong shape). ``skip_to`` is the checkpoint past
    it, when the exchange can name one (say, the next time window); the store records the error
    and moves on after a few failed attempts, so one bad page never stalls a sync forever."""

    def __init__(self, message: str, *, skip_to: Checkpoint | None = None, raw: str = "") -> None:
        super().__init__(message)
        self.skip_to = skip_to
        self.raw = raw[:2000]


class OnDelete(StrEnum):
    """What happens locally when the partner deletes or withdraws an entry."""

    #: Keep the entry, disabled, with the reason: cases that matched it still show what it was.
    DISABLE = "disable"
    #: Delete it (a tombstone tells replicas and indexes).
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Upsert:
    """The partner's current version of one of its records.

    ``key`` is the partner's id for the record, unique within the exchange (NCMEC entry id,
    StopNCII hash, ThreatExchange indicator id, a list line's id or value). One record may carry
    several signals (NCMEC gives MD5, SHA-1 and PDQ of one file): the store keeps exactly
    ``entries`` for the key, dropping signals an earlier version had and this one lacks. Every
    entry is stored with ``external_id = key``.
    """

    key: str
    entries: tuple[NewEntry, ...]


@dataclass(frozen=True, slots=True)
class Removal:
    """The partner deleted or withdrew record ``key``; the store disables or removes its entries
    (:class:`OnDelete`). Removing a key the bank does not hold is not an error."""

    key: str
    reason: str = "deleted upstream"


@dataclass(frozen=True, slots=True)
class Poisoned:
    """One malformed record: recorded with the page's checkpoint and skipped; the rest of the
    page is applied."""

    error: str
    key: str | None = None
    raw: str = ""


Item = Upsert | Removal | Poisoned


@dataclass(frozen=True, slots=True)
class Attestation:
    """What the partner says the whole list looks like once this page is applied (a Bastion
    feed's Merkle root for a version). The store streams the exchange's entries to
    :meth:`Exchange.verify_state` and records whether they agree."""

    version: int
    root: str
    count: int
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    """Changes to apply, and the checkpoint to store in the same transaction.

    ``snapshot``: this page belongs to a full listing with that id (a list file fetched whole).
    When a page with ``snapshot_complete`` arrives, every entry of the exchange that no page of
    the same snapshot delivered is deleted upstream as far as we know, and is disabled or removed.
    A snapshot may span many pages and survive a crash midway (its id is in the checkpoint).
    """

    items: Sequence[Item]
    checkpoint: Checkpoint
    snapshot: str | None = None
    snapshot_complete: bool = False
    attestation: Attestation | None = None
    #: Work done so far and expected in all, for progress bars (None when unknown).
    progress: tuple[int, int | None] | None = None


class Verdict(StrEnum):
    """A reviewer's finding about a match, sent back to the list's source."""

    #: Confirmed abusive: the list entry was right.
    POSITIVE = "positive"
    #: Not abusive: a false positive, the entry (or our use of it) is wrong.
    NEGATIVE = "negative"


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One finding to send upstream about the record ``key``.

    ``reason`` is a short code (never the reviewer's free text, which may hold personal data);
    each exchange maps it to its partner's vocabulary.
    """

    key: str
    verdict: Verdict
    signal_type: str
    value: str
    reason: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


class FeedbackUnsupported(ExchangeError):
    """The partner has no way to receive this verdict."""


class ExchangeConfig(BaseModel):
    """Base of each exchange's non-secret settings (stored as JSON, shown in status)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeCredentials(BaseModel):
    """Base of each exchange's secrets (stored sealed with the master key, never shown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __repr__(self) -> str:  # never print secrets, even in a traceback
        return f"{type(self).__name__}(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class ExchangeContext:
    """What the host gives an exchange besides its own settings: network limits and identity.

    ``transport`` lets tests (and proxies) swap httpx's transport; ``fetch_policy`` is the SSRF
    policy (``bastion.fetch.FetchPolicy``) for exchanges that fetch URLs a user typed in.
    ``held``: the entries (``bastion.banks.BankEntry``) the exchange's bank holds now under
    each of the given record keys, read-only; None when the host gives no such view. For an
    exchange that must compare what it is served with what it already applied (a Bastion
    feed's dispute refresh refuses records older than the ones held).
    """

    timeout: float = 30.0
    user_agent: str = "Bastion-exchange/0.1"
    fetch_policy: Any = None
    transport: Any = None
    organisation: str = ""
    held: Callable[[Sequence[str]], Mapping[str, Sequence[Any]]] | None = None


class Exchange(ABC):
    """One configured connection to a hash list source.

    Subclasses set ``kind`` (the name in ``bastion exchange add --type``), ``Config`` and
    ``Credentials`` (pydantic models; ``Credentials`` is None when there are none), and which
    verdicts they can send. They raise :class:`TransientError`, :class:`PermanentError` or
    :class:`PoisonedPage` from :meth:`fetch`; any other exception is treated as transient.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[ExchangeConfig]]
    Credentials: ClassVar[type[ExchangeCredentials] | None] = None
    #: Verdicts :meth:`send_feedback` accepts.
    feedback: ClassVar[frozenset[Verdict]] = frozenset()
    #: Default for what a deletion upstream does locally (the exchange's config may override).
    on_delete: ClassVar[OnDelete] = OnDelete.DISABLE
    #: Seconds between scheduled syncs unless configured.
    default_interval: ClassVar[float] = 900.0

    def __init__(
        self,
        config: ExchangeConfig,
        credentials: ExchangeCredentials | None = None,
        context: ExchangeContext | None = None,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.context = context or ExchangeContext()

    @classmethod
    def vouch_identity(cls, config: ExchangeConfig) -> str | None:
        """Who stands behind this exchange's entries, for vouching: two exchanges of one vouch
        group with the same identity (two subscriptions to one publisher key) are one voucher,
        not two, so the engine refuses the second. None: every exchange is its own source."""
        return None

    @abstractmethod
    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        """Pages of changes after ``checkpoint`` (None: from the beginning), oldest first.

        The store applies each page before asking for the next, and may stop early (shutdown);
        so each page's checkpoint must be enough to resume from.
        """

    def send_feedback(self, item: FeedbackItem) -> None:
        """Send one finding upstream. Raises :class:`FeedbackUnsupported` for verdicts the
        partner cannot take, :class:`TransientError` to be retried later."""
        raise FeedbackUnsupported(f"{self.kind} exchanges take no feedback")

    def verify_state(self, attestation: Attestation, entries: Iterable[Any]) -> str | None:
        """Check the exchange's entries (``bastion.banks.BankEntry``, every one it delivered,
        enabled or not) against ``attestation``; return the computed root (or a description),
        equal to ``attestation.root`` when they agree."""
        raise ExchangeError(f"{self.kind} exchanges make no attestations")

    def close(self) -> None:  # noqa: B027  (optional hook: most exchanges hold nothing open)
        """Release connections."""

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REGISTRY: dict[str, type[Exchange]] = {}


def register(cls: type[Exchange]) -> type[Exchange]:
    """Class decorator: make ``cls`` available as ``--type cls.kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def exchange_types() -> dict[str, type[Exchange]]:
    """Every known exchange kind, importing the built-in connectors on first use."""
    import bastion.exchanges  # noqa: F401  (its __init__ imports and registers the built-ins)

    return dict(sorted(_REGISTRY.items()))


def exchange_type(kind: str) -> type[Exchange]:
    types = exchange_types()
    try:
        return types[kind]
    except KeyError:
        raise ValueError(
            f"unknown exchange type {kind!r} (expected one of: {', '.join(types)})"
        ) from None

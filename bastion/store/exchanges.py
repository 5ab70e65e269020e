"""Exchanges in the store: their settings, checkpoints and the engine that applies their pages.

Each exchange feeds the one bank it owns (``source = "exchange:<name>"``); every entry of that
bank is the exchange's and carries the partner's record key as ``external_id``. A sync claims
the exchange with a lease, asks it for pages after the stored checkpoint, and applies each page
in one bank write transaction (``Store.write``): entries, the checkpoint, poisoned records,
snapshot marks, vouching and counters commit or roll back together, so a crash loses nothing and
repeats nothing. The lease is checked again inside every page's transaction, so a worker that
lost it (it stalled past ``lease_until`` and another took over) cannot commit a page.

Bank writes bump the store revision and the bank version like any other bank write, so live
indexes pick the changes up through ``Store.changes_page`` without a rebuild; removals leave
tombstones.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bastion import __version__
from bastion.actions.model import Backoff
from bastion.banks.model import BankEntry, NewEntry, normalize_entry, utcnow, validate_bank_name
from bastion.config import Settings
from bastion.crypto import CryptoError, MasterKey, seal, unseal
from bastion.exchanges.base import (
    Attestation,
    Checkpoint,
    Exchange,
    ExchangeContext,
    ExchangeError,
    FeedbackItem,
    FeedbackUnsupported,
    OnDelete,
    Page,
    PermanentError,
    Poisoned,
    PoisonedPage,
    Removal,
    TransientError,
    Upsert,
    Verdict,
    exchange_type,
)
from bastion.exchanges.rows import (
    ExchangeAttestationRow,
    ExchangeErrorRow,
    ExchangeFeedbackRow,
    ExchangeRow,
    ExchangeRunRow,
    ExchangeSeenRow,
)
from bastion.store.bulk import (
    bank_fields,
    banks_t,
    copy_rows,
    entries_t,
    entry_select,
    executemany_rows,
    json_doc,
    storable,
    to_entry,
    tombstone,
    touch_bank,
)
from bastion.store.errors import InvalidInput, StoreError, StoreUnavailable
from bastion.store.store import Store, append_audit

log = logging.getLogger("bastion.exchanges")

ex_t = ExchangeRow.__table__
err_t = ExchangeErrorRow.__table__
runs_t = ExchangeRunRow.__table__
seen_t = ExchangeSeenRow.__table__
att_t = ExchangeAttestationRow.__table__
fb_t = ExchangeFeedbackRow.__table__

#: Prefix of the ``disabled_reason`` of entries disabled because of the partner (a removal, a
#: snapshot without them, too few vouchers). Only such entries are re-enabled by an upsert;
#: entries disabled here (a reviewer's "not abusive", an admin) stay disabled.
UPSTREAM = "upstream:"
AWAITING = "upstream: awaiting vouchers"
#: Prefix of an entry disabled here first and then withdrawn by the partner: it keeps the local
#: reason after :data:`_WAS`, stays disabled if the partner lists it again (the reason reverts to
#: the local one), and no longer counts as the partner vouching for it.
WITHDRAWN_LOCAL = "upstream+local:"
_WAS = " | was: "
STATES = ("idle", "syncing", "error", "stalled")
TOTALS = ("added", "updated", "removed", "disabled", "poisoned")
_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_MAX_ERROR = 2000
_MAX_RAW = 2000
_MAX_KEY = 255
_CHUNK = 2000
_MAX_CHECKPOINT = 64 * 1024
_FEEDBACK_LEASE = timedelta(minutes=5)
#: Entry columns an upsert sets from the partner's record (in place, keeping the entry id).
_KEPT = ("source", "list_name", "external_id", "labels", "metadata", "quality")
_STATE_COLUMNS = ("added_at", "enabled", "disabled_reason")
_UPDATABLE = frozenset(
    {
        "config",
        "interval",
        "on_delete",
        "vouch_group",
        "min_vouchers",
        "send_feedback",
        "enabled",
        "checkpoint",
    }
)


class ExchangeNotFound(StoreError):
    pass


class ExchangeExists(StoreError):
    pass


class ExchangeBusy(StoreError):
    """Another worker holds the exchange's lease (a sync is running)."""


class _LeaseLost(Exception):
    """The lease ran out and another worker took the exchange: stop without committing."""


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


@dataclass(slots=True)
class _Counts:
    added: int = 0
    updated: int = 0
    removed: int = 0
    disabled: int = 0
    poisoned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in TOTALS}


@dataclass(slots=True)
class _Plan:
    """A page reduced to its final effect per key, validated outside the transaction."""

    #: key -> entry rows (:func:`_page_row` tuples) the key holds from now on.
    upserts: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    #: Keys with a bad entry: their good entries are applied, nothing of theirs is dropped.
    partial: set[str] = field(default_factory=set)
    removals: dict[str, str] = field(default_factory=dict)
    #: (key, error, raw) per poisoned item or bad entry.
    poisoned: list[tuple[str | None, str, str]] = field(default_factory=list)
    #: Keys the page delivered (for a snapshot's seen set; poisoned keys too, so a malformed
    #: record never deletes what we hold for it).
    seen: set[str] = field(default_factory=set)


def _vkey(row: Any) -> tuple[str, str, str]:
    m = row if isinstance(row, dict) else row._mapping
    return (m["signal_type"], m["value_hash"], m["url_match"] or "")


def _clip(text: object, limit: int = _MAX_ERROR) -> str:
    s = str(text).replace("\x00", "")
    s = s.encode("utf-8", "replace").decode("utf-8")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _cred_aad(name: str) -> bytes:
    return b"exchange-credentials:" + name.encode("utf-8")


def _exchange_name(name: object) -> str:
    try:
        return validate_bank_name(name)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidInput(str(exc).replace("bank name", "exchange name")) from None


def _pydantic_message(what: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return f"invalid {what}: " + "; ".join(parts)


def _upstream_disabled(enabled: bool, reason: str | None) -> bool:
    return not enabled and (reason or "").startswith(UPSTREAM)


def _withdrawn_local(reason: str, local: str) -> str:
    """The reason of a locally disabled entry the partner then withdrew."""
    upstream = reason.removeprefix(UPSTREAM).strip()
    return _clip(f"{WITHDRAWN_LOCAL} {upstream}{_WAS}{local}", 2000)


def _local_reason(reason: str) -> str:
    """The local reason kept inside a :data:`WITHDRAWN_LOCAL` reason."""
    return reason.partition(_WAS)[2] if reason.startswith(WITHDRAWN_LOCAL) else reason


# -- the bulk apply path ---------------------------------------------------------------------
#: A page's entry as a tuple (:func:`_page_row`): a fraction of a dict's cost per row, and what
#: the bulk writes hand to the driver.
_ST, _VALUE, _VH, _QUALITY, _UM, _SOURCE, _LIST, _KEY, _ADDED, _LABELS, _META = range(11)
#: PostgreSQL takes a chunk as one array parameter (``= ANY``), so chunks can be large.
_PG_CHUNK = 50_000
#: Rows a sync adds before it refreshes PostgreSQL's statistics (see :class:`_Statistics`).
_ANALYZE_MIN = 50_000
#: What an upsert compares with a stored entry; JSON columns as text, decoded only when needed.
_OLD_COLUMNS = (
    entries_t.c.id,
    entries_t.c.signal_type,
    entries_t.c.value_hash,
    entries_t.c.url_match,
    entries_t.c.external_id,
    entries_t.c.enabled,
    entries_t.c.disabled_reason,
    entries_t.c.source,
    entries_t.c.list_name,
    entries_t.c.added_at,
    cast(entries_t.c.labels, Text).label("labels"),
    cast(entries_t.c.metadata, Text).label("metadata"),
    entries_t.c.quality,
    entries_t.c.bank_id,
)


def _page_row(e: NewEntry, key: str) -> tuple[Any, ...]:
    """A canonical entry of record ``key`` as stored (``added_at`` None: keep a stored entry's
    date, a new one gets the page's time)."""
    value = e.value
    return (
        e.signal_type.value,
        value,
        hashlib.sha256(value.encode("utf-8")).hexdigest(),
        e.quality,
        e.url_match or "",
        e.source,
        e.list_name,
        key,
        e.added_at,
        e.labels,
        e.metadata,
    )


def _one_of(column: Any, values: Sequence[Any], pg: bool, kind: Any = String) -> Any:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``: one parameter, one cached
    statement, instead of thousands of placeholders to render and parse per query."""
    if pg:
        return column == any_(bindparam(None, builtins.list(values), type_=ARRAY(kind)))
    return column.in_(values)


@contextmanager
def _no_nested_loops(conn: Connection) -> Iterator[None]:
    """PostgreSQL: plan the next statements without nested loops (hash or merge joins)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    before = conn.exec_driver_sql("SHOW enable_nestloop").scalar()
    conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"SET LOCAL enable_nestloop = {'off' if before == 'off' else 'on'}")


def _stored(r: tuple[Any, ...]) -> tuple[Any, ...]:
    """A :func:`_page_row` as the store's bulk writers take it (``_entry_row`` order): a new
    entry is enabled, with no disabled reason."""
    return (*r[:_META], True, "", r[_META])


class _Statistics:
    """Keeps PostgreSQL's planner statistics for the entries table current during a long sync.

    A page's reads are index lookups only while the planner knows how big the bank is. Right
    after a bulk load it does not (autovacuum analyzes a minute later at best, or never under
    load) and reads the whole bank for every page instead: quadratic over a 10M-entry list.
    So a sync that has added half the table (at least ``_ANALYZE_MIN`` rows) since the
    last look analyzes it, in its own short transaction between pages."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.on = store.engine.dialect.name == "postgresql"
        self.base = 0
        self.rows = self._estimate() if self.on else 0.0

    def _estimate(self) -> float:
        try:
            with self.store.engine.connect() as conn:
                n = conn.exec_driver_sql(
                    f"SELECT reltuples FROM pg_class WHERE oid = '{entries_t.name}'::regclass"
                ).scalar()
            return max(0.0, float(n or 0))
        except SQLAlchemyError:
            self.on = False
            return 0.0

    def grew(self, added: int) -> None:
        if not self.on or added - self.base < max(_ANALYZE_MIN, 0.5 * self.rows):
            return
        self.base = added
        try:
            with self.store.begin_write() as conn:
                conn.exec_driver_sql(f"ANALYZE {entries_t.name}")
        except SQLAlchemyError:
            log.debug("could not analyze %s", entries_t.name, exc_info=True)
        self.rows = self._estimate()


class ExchangeStore:
    """Exchanges on a :class:`Store`. ``master_key`` None: exchanges without credentials still
    work; setting or using credentials raises :class:`InvalidInput`. ``clock`` and ``rng`` are
    injectable so tests can walk leases and backoff without waiting."""

    def __init__(
        self,
        store: Store,
        master_key: MasterKey | None,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        transport: Any = None,
    ) -> None:
        self.store = store
        self.master_key = master_key
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        #: httpx transport handed to exchanges (tests, proxies); None: the default.
        self.transport = transport
        try:
            self.lease = timedelta(seconds=float(settings.exchange_lease_seconds))
            self.poison_attempts = int(settings.exchange_poison_attempts)
            self.backoff = Backoff(
                base=float(settings.exchange_backoff_seconds),
                cap=float(settings.exchange_backoff_max_seconds),
            )
            self.feedback_max_attempts = int(settings.exchange_feedback_max_attempts)
            self.page_limit = int(settings.exchange_page_limit)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"exchange settings: {exc}") from None
        if self.lease.total_seconds() < 1:
            raise InvalidInput("exchange_lease_seconds must be at least 1")
        if self.poison_attempts < 1 or self.feedback_max_attempts < 1 or self.page_limit < 0:
            raise InvalidInput(
                "exchange_poison_attempts and exchange_feedback_max_attempts must be at least "
                "1, exchange_page_limit at least 0"
            )

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise StoreUnavailable(f"exchange database error: {first}") from exc

    def context(self) -> ExchangeContext:
        """What exchanges get from the host: timeouts, identity, URL fetch policy."""
        return ExchangeContext(
            timeout=float(self.settings.exchange_timeout),
            user_agent=f"Bastion-exchange/{__version__}",
            fetch_policy=self.settings.fetch_policy,
            transport=self.transport,
            organisation=self.settings.exchange_organisation,
        )

    def _row(self, conn: Connection, name: str, *, lock: bool = False) -> Row[Any]:
        if not isinstance(name, str) or not storable(name):
            raise ExchangeNotFound(f"no exchange named {name!r}")
        stmt = (
            select(ex_t, banks_t.c.name.label("bank_name"))
            .join(banks_t, banks_t.c.id == ex_t.c.bank_id)
            .where(ex_t.c.name == name.strip().lower())
        )
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=ex_t)
        row = conn.execute(stmt).first()
        if row is None:
            raise ExchangeNotFound(f"no exchange named {name!r}")
        return row

    @staticmethod
    def _info(r: Row[Any]) -> ExchangeInfo:
        totals = {k: int((r.totals or {}).get(k, 0)) for k in TOTALS}
        return ExchangeInfo(
            name=r.name,
            kind=r.kind,
            bank=r.bank_name,
            enabled=bool(r.enabled),
            config=dict(r.config or {}),
            has_credentials=r.credentials is not None,
            interval_seconds=float(r.interval_seconds),
            on_delete=r.on_delete,
            vouch_group=r.vouch_group,
            min_vouchers=int(r.min_vouchers),
            send_feedback=bool(r.send_feedback),
            checkpoint=dict(r.checkpoint) if r.checkpoint is not None else None,
            state=r.state,
            last_sync_at=r.last_sync_at,
            last_success_at=r.last_success_at,
            next_sync_at=r.next_sync_at,
            last_error=r.last_error,
            failures=int(r.failures),
            totals=totals,
            created_at=r.created_at,
            updated_at=r.updated_at,
            lease_holder=r.lease_holder,
            lease_until=r.lease_until,
            poison_attempts=int(r.poison_attempts),
        )

    def _seal(self, name: str, cls: type[Exchange], credentials: dict[str, Any]) -> bytes:
        if cls.Credentials is None:
            raise InvalidInput(f"{cls.kind} exchanges take no credentials")
        if not isinstance(credentials, dict):
            raise InvalidInput("credentials must be a JSON object")
        try:
            model = cls.Credentials.model_validate(credentials)
        except ValidationError as exc:
            raise InvalidInput(_pydantic_message("credentials", exc)) from None
        if self.master_key is None:
            raise InvalidInput(
                "cannot store credentials: no master key (set secret_key or secret_key_file)"
            )
        blob = json.dumps(model.model_dump(mode="json"), separators=(",", ":")).encode()
        return seal(self.master_key, blob, _cred_aad(name))

    @staticmethod
    def _kind(kind: str) -> type[Exchange]:
        try:
            return exchange_type(str(kind).strip().lower())
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    @staticmethod
    def _config(cls: type[Exchange], config: dict[str, Any] | None) -> dict[str, Any]:
        if config is not None and not isinstance(config, dict):
            raise InvalidInput("config must be a JSON object")
        try:
            model = cls.Config.model_validate(config or {})
        except ValidationError as exc:
            raise InvalidInput(_pydantic_message(f"{cls.kind} config", exc)) from None
        return json_doc("config", model.model_dump(mode="json"), dict, 64 * 1024)

    @staticmethod
    def _interval(value: object) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInput(f"interval must be a number of seconds, not {value!r}") from None
        if not 1 <= seconds <= 366 * 86400:
            raise InvalidInput("interval must be between 1 second and a year")
        return seconds

    @staticmethod
    def _on_delete(value: object) -> str:
        try:
            return OnDelete(str(value).strip().lower()).value
        except ValueError:
            raise InvalidInput(f"on_delete must be disable or remove, not {value!r}") from None

    @staticmethod
    def _group(value: object) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not _GROUP_RE.match(value.strip().lower()):
            raise InvalidInput(
                f"invalid vouch group {value!r}: use 1-64 letters, digits, '_', '.' or '-'"
            )
        return value.strip().lower()

    @staticmethod
    def _check_identity(
        conn: Connection,
        cls: type[Exchange],
        config: dict[str, Any],
        group: str | None,
        *,
        other_than: int | None = None,
    ) -> None:
        """Refuse a second exchange of one vouch group backed by the same source (two
        subscriptions to one publisher key would otherwise count as two vouchers)."""
        if group is None:
            return
        mine = cls.vouch_identity(cls.Config.model_validate(config))
        if mine is None:
            return
        peers = conn.execute(
            select(ex_t.c.id, ex_t.c.name, ex_t.c.kind, ex_t.c.config).where(
                ex_t.c.vouch_group == group
            )
        ).all()
        for peer in peers:
            if peer.id == other_than:
                continue
            try:
                peer_cls = exchange_type(peer.kind)
                theirs = peer_cls.vouch_identity(peer_cls.Config.model_validate(peer.config))
            except (ValueError, ValidationError):
                continue
            if theirs == mine:
                raise InvalidInput(
                    f"exchange {peer.name!r} of vouch group {group!r} already vouches as "
                    f"{mine}: one source cannot vouch twice"
                )

    @staticmethod
    def _min_vouchers(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
            raise InvalidInput(f"min_vouchers must be a whole number from 1 to 100, not {value!r}")
        return value

    @staticmethod
    def _flag(what: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise InvalidInput(f"{what} must be true or false")
        return value

    # -- managing exchanges --------------------------------------------------------------------

    def add(
        self,
        name: str,
        kind: str,
        *,
        bank: str | None = None,
        config: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        interval: float | None = None,
        on_delete: str | None = None,
        vouch_group: str | None = None,
        min_vouchers: int = 1,
        send_feedback: bool = True,
        enabled: bool = True,
        labels: Sequence[str] = (),
        actor: str = "system",
    ) -> ExchangeInfo:
        """Configure an exchange feeding ``bank`` (default: the exchange's name), created with
        ``labels`` when missing. A bank already fed by another exchange is refused."""
        name = _exchange_name(name)
        cls = self._kind(kind)
        conf = self._config(cls, config)
        seconds = self._interval(cls.default_interval if interval is None else interval)
        delete_mode = self._on_delete(cls.on_delete.value if on_delete is None else on_delete)
        group = self._group(vouch_group)
        minimum = self._min_vouchers(min_vouchers)
        self._flag("send_feedback", send_feedback)
        self._flag("enabled", enabled)
        bank_name = _exchange_name(bank if bank is not None else name)
        sealed = self._seal(name, cls, credentials) if credentials is not None else None
        bank_values = bank_fields({"labels": list(labels), "source": f"exchange:{name}"[:255]})
        now = self.clock()
        try:
            with self._db(), self.store.write() as (conn, _rev):
                if conn.execute(select(ex_t.c.id).where(ex_t.c.name == name)).first():
                    raise ExchangeExists(f"an exchange named {name!r} already exists")
                bank_row = conn.execute(
                    select(banks_t.c.id).where(banks_t.c.name == bank_name)
                ).first()
                if bank_row is None:
                    bank_id = conn.execute(
                        insert(banks_t).values(
                            name=bank_name,
                            description=f"Kept in sync by exchange {name} ({cls.kind}).",
                            enabled=True,
                            is_demo=False,
                            version=1,
                            created_at=now,
                            updated_at=now,
                            **bank_values,
                        )
                    ).inserted_primary_key[0]
                else:
                    bank_id = bank_row.id
                    owner = conn.execute(
                        select(ex_t.c.name).where(ex_t.c.bank_id == bank_id)
                    ).scalar()
                    if owner is not None:
                        raise ExchangeExists(
                            f"bank {bank_name!r} is already fed by exchange {owner!r}"
                        )
                self._check_identity(conn, cls, conf, group)
                conn.execute(
                    insert(ex_t).values(
                        name=name,
                        kind=cls.kind,
                        bank_id=bank_id,
                        config=conf,
                        credentials=sealed,
                        enabled=enabled,
                        interval_seconds=seconds,
                        on_delete=delete_mode,
                        vouch_group=group,
                        min_vouchers=minimum,
                        send_feedback=send_feedback,
                        checkpoint=None,
                        state="idle",
                        failures=0,
                        poison_attempts=0,
                        next_sync_at=now if enabled else None,
                        totals=dict.fromkeys(TOTALS, 0),
                        created_at=now,
                        updated_at=now,
                    )
                )
                append_audit(
                    conn,
                    actor=actor,
                    action="exchange.add",
                    target=name,
                    detail={
                        "kind": cls.kind,
                        "bank": bank_name,
                        "bank_created": bank_row is None,
                        "config": conf,
                        "credentials": sealed is not None,
                        "vouch_group": group,
                        "min_vouchers": minimum,
                    },
                )
        except IntegrityError:
            raise ExchangeExists(
                f"an exchange named {name!r} or one feeding bank {bank_name!r} already exists"
            ) from None
        return self.get(name)

    def get(self, name: str) -> ExchangeInfo:
        with self._db(), self.store.engine.connect() as conn:
            return self._info(self._row(conn, name))

    def list(self) -> builtins.list[ExchangeInfo]:
        stmt = (
            select(ex_t, banks_t.c.name.label("bank_name"))
            .join(banks_t, banks_t.c.id == ex_t.c.bank_id)
            .order_by(ex_t.c.name)
        )
        with self._db(), self.store.engine.connect() as conn:
            return [self._info(r) for r in conn.execute(stmt)]

    def update(self, name: str, *, actor: str = "system", **fields: Any) -> ExchangeInfo:
        """Change any of config, interval, on_delete, vouch_group, min_vouchers,
        send_feedback, enabled, checkpoint (None: start again from the beginning). A changed
        config, checkpoint or re-enabling makes the exchange due now and clears its error."""
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise InvalidInput(f"cannot update exchange field(s): {', '.join(unknown)}")
        with self._db(), self.store.write() as (conn, rev):
            row = self._row(conn, name, lock=True)
            cls = self._kind(row.kind)
            values: dict[str, Any] = {}
            if "config" in fields:
                values["config"] = self._config(cls, fields["config"])
            if "interval" in fields:
                values["interval_seconds"] = self._interval(fields["interval"])
            if "on_delete" in fields:
                values["on_delete"] = self._on_delete(fields["on_delete"])
            if "vouch_group" in fields:
                values["vouch_group"] = self._group(fields["vouch_group"])
            if "min_vouchers" in fields:
                values["min_vouchers"] = self._min_vouchers(fields["min_vouchers"])
            if "send_feedback" in fields:
                values["send_feedback"] = self._flag("send_feedback", fields["send_feedback"])
            if "enabled" in fields:
                values["enabled"] = self._flag("enabled", fields["enabled"])
            if "checkpoint" in fields:
                cp = fields["checkpoint"]
                values["checkpoint"] = (
                    None if cp is None else json_doc("checkpoint", cp, dict, _MAX_CHECKPOINT)
                )
                values["poison_attempts"] = 0
            now = self.clock()
            restart = (
                "config" in values
                or "checkpoint" in values
                or (values.get("enabled") and not row.enabled)
            )
            if restart:
                values.update(next_sync_at=now, failures=0, last_error=None)
                if row.state in ("error", "stalled"):
                    values["state"] = "idle"
            if values.get("enabled") is False:
                values["next_sync_at"] = None
            if "config" in values or "vouch_group" in values:
                self._check_identity(
                    conn,
                    cls,
                    values.get("config", row.config),
                    values.get("vouch_group", row.vouch_group),
                    other_than=row.id,
                )
            values["updated_at"] = now
            conn.execute(update(ex_t).where(ex_t.c.id == row.id).values(**values))
            if "vouch_group" in values or "min_vouchers" in values:
                # The old group first: leaving it re-enables held-back entries, which the new
                # group then holds back again as it needs.
                new_group = values.get("vouch_group", row.vouch_group)
                if row.vouch_group and row.vouch_group != new_group:
                    self._revouch_banks(conn, rev, row.vouch_group, extra_bank=row.bank_id)
                if new_group:
                    self._revouch_banks(conn, rev, new_group, extra_bank=row.bank_id)
            shown = {k: v for k, v in values.items() if k not in ("updated_at",)}
            append_audit(
                conn,
                actor=actor,
                action="exchange.update",
                target=row.name,
                detail=json.loads(json.dumps(shown, default=str)),
            )
        return self.get(row.name)

    def set_credentials(
        self, name: str, credentials: dict[str, Any], *, actor: str = "system"
    ) -> None:
        """Replace the exchange's credentials (stored sealed; never shown). Makes it due now."""
        with self._db(), self.store.begin_write() as conn:
            row = self._row(conn, name, lock=True)
            sealed = self._seal(row.name, self._kind(row.kind), credentials)
            now = self.clock()
            values: dict[str, Any] = {
                "credentials": sealed,
                "updated_at": now,
                "failures": 0,
                "last_error": None,
            }
            if row.enabled:
                values["next_sync_at"] = now
            if row.state == "error":
                values["state"] = "idle"
            conn.execute(update(ex_t).where(ex_t.c.id == row.id).values(**values))
            append_audit(
                conn,
                actor=actor,
                action="exchange.credentials",
                target=row.name,
                detail={"fields": sorted(credentials)},
            )

    def remove(self, name: str, *, actor: str = "system") -> None:
        """Delete the exchange, its history and queued feedback; its bank and entries stay."""
        with self._db(), self.store.write() as (conn, rev):
            row = self._row(conn, name, lock=True)
            conn.execute(delete(ex_t).where(ex_t.c.id == row.id))
            if row.vouch_group:
                self._revouch_banks(conn, rev, row.vouch_group, extra_bank=row.bank_id)
            append_audit(
                conn,
                actor=actor,
                action="exchange.remove",
                target=row.name,
                detail={"kind": row.kind, "bank": row.bank_name},
            )

    def request_sync(self, name: str, *, actor: str = "system") -> ExchangeInfo:
        """Make the exchange due now; a worker syncs it (web requests never do)."""
        with self._db(), self.store.begin_write() as conn:
            row = self._row(conn, name)
            now = self.clock()
            conn.execute(
                update(ex_t).where(ex_t.c.id == row.id).values(next_sync_at=now, updated_at=now)
            )
            append_audit(conn, actor=actor, action="exchange.sync.request", target=row.name)
        return self.get(row.name)

    def open(self, name: str) -> Exchange:
        """An instance of the exchange with its config, unsealed credentials and context."""
        with self._db(), self.store.engine.connect() as conn:
            row = self._row(conn, name)
        return self._open_row(row)

    def _open_row(self, row: Row[Any]) -> Exchange:
        cls = self._kind(row.kind)
        try:
            config = cls.Config.model_validate(row.config or {})
        except ValidationError as exc:
            raise InvalidInput(_pydantic_message(f"stored {cls.kind} config", exc)) from None
        creds = None
        if row.credentials is not None:
            if self.master_key is None:
                raise InvalidInput(
                    f"exchange {row.name!r} has credentials but there is no master key to open "
                    "them (set secret_key or secret_key_file)"
                )
            if cls.Credentials is None:
                raise InvalidInput(f"{cls.kind} exchanges take no credentials")
            try:
                data = json.loads(unseal(self.master_key, row.credentials, _cred_aad(row.name)))
                creds = cls.Credentials.model_validate(data)
            except (CryptoError, ValueError) as exc:
                kind = type(exc).__name__
                raise InvalidInput(
                    f"exchange {row.name!r}: stored credentials do not open ({kind}); set them "
                    "again"
                ) from None
        return cls(config, creds, replace(self.context(), held=partial(self._held, row.id)))

    def _held(self, xid: int, keys: Sequence[str]) -> dict[str, builtins.list[BankEntry]]:
        """The entries exchange ``xid``'s bank holds under each of ``keys`` (its
        ``ExchangeContext.held``): what the pages applied so far left, read between pages."""
        wanted = [k for k in dict.fromkeys(keys) if isinstance(k, str) and _good_key(k)]
        out: dict[str, builtins.list[BankEntry]] = {}
        bank = select(ex_t.c.bank_id).where(ex_t.c.id == xid).scalar_subquery()
        with self._db(), self.store.engine.connect() as conn:
            for chunk in _chunks(wanted):
                stmt = entry_select().where(
                    entries_t.c.bank_id == bank, entries_t.c.external_id.in_(list(chunk))
                )
                for r in conn.execute(stmt):
                    entry = to_entry(r)
                    out.setdefault(str(entry.external_id), []).append(entry)
        return out

    # -- history -------------------------------------------------------------------------------

    def _latest(self, name: str, table: Any, limit: int) -> tuple[str, builtins.list[Row[Any]]]:
        """The exchange's canonical name and its newest ``limit`` rows of a history table."""
        with self._db(), self.store.engine.connect() as conn:
            row = self._row(conn, name)
            rows = conn.execute(
                select(table)
                .where(table.c.exchange_id == row.id)
                .order_by(table.c.id.desc())
                .limit(_limit(limit))
            ).all()
        return row.name, rows

    def errors(self, name: str, *, limit: int = 50) -> builtins.list[ExchangeErrorRecord]:
        _, rows = self._latest(name, err_t, limit)
        return [
            ExchangeErrorRecord(r.id, r.at, r.kind, r.checkpoint, r.key, r.error, r.raw)
            for r in rows
        ]

    def runs(self, name: str, *, limit: int = 20) -> builtins.list[SyncRun]:
        _, rows = self._latest(name, runs_t, limit)
        return [
            SyncRun(
                id=r.id,
                worker_id=r.worker_id,
                state=r.state,
                started_at=r.started_at,
                finished_at=r.finished_at,
                pages=r.pages,
                added=r.added,
                updated=r.updated,
                removed=r.removed,
                disabled=r.disabled,
                poisoned=r.poisoned,
                skipped_pages=r.skipped_pages,
                error=r.error,
                checkpoint=r.checkpoint,
            )
            for r in rows
        ]

    def attestations(self, name: str, *, limit: int = 20) -> builtins.list[AttestationRecord]:
        _, rows = self._latest(name, att_t, limit)
        return [
            AttestationRecord(
                r.id,
                r.at,
                r.version,
                r.root,
                r.computed,
                r.count,
                bool(r.agrees),
                dict(r.detail or {}),
            )
            for r in rows
        ]

    def feedback(self, name: str, *, limit: int = 50) -> builtins.list[FeedbackRecord]:
        exchange, rows = self._latest(name, fb_t, limit)
        return [_feedback_record(exchange, r) for r in rows]

    # -- syncing -------------------------------------------------------------------------------

    def _claim(self, conn: Connection, row: Row[Any], worker_id: str, now: datetime) -> bool:
        res = conn.execute(
            update(ex_t)
            .where(
                ex_t.c.id == row.id,
                or_(
                    ex_t.c.lease_holder.is_(None),
                    ex_t.c.lease_until.is_(None),
                    ex_t.c.lease_until < now,
                ),
            )
            .values(lease_holder=worker_id, lease_until=now + self.lease, state="syncing")
        )
        return res.rowcount == 1

    def sync(
        self,
        name: str,
        *,
        exchange: Exchange | None = None,
        worker_id: str = "cli",
        stop: threading.Event | None = None,
        max_pages: int | None = None,
        progress: Callable[[SyncProgress], None] | None = None,
    ) -> SyncResult:
        """Fetch and apply pages after the stored checkpoint until the exchange has no more,
        ``max_pages`` were applied or ``stop`` is set. Raises :class:`ExchangeBusy` when another
        worker holds the lease; every other failure is recorded on the exchange (state, backoff,
        error rows) and returned in ``SyncResult.error``."""
        if not isinstance(worker_id, str) or not 0 < len(worker_id) <= 128:
            raise InvalidInput("worker_id must be 1-128 characters")
        now = self.clock()
        with self._db(), self.store.begin_write() as conn:
            row = self._row(conn, name)
            if not self._claim(conn, row, worker_id, now):
                raise ExchangeBusy(
                    f"exchange {row.name!r} is being synced by {row.lease_holder} (lease until "
                    f"{row.lease_until.isoformat() if row.lease_until else '?'})"
                )
            # A run left "running" belonged to a worker that died: its lease was taken over.
            conn.execute(
                update(runs_t)
                .where(runs_t.c.exchange_id == row.id, runs_t.c.state == "running")
                .values(state="interrupted", finished_at=now)
            )
            run_id = conn.execute(
                insert(runs_t).values(
                    exchange_id=row.id,
                    worker_id=worker_id,
                    state="running",
                    started_at=now,
                    pages=0,
                    added=0,
                    updated=0,
                    removed=0,
                    disabled=0,
                    poisoned=0,
                    skipped_pages=0,
                    checkpoint=row.checkpoint,
                )
            ).inserted_primary_key[0]
        result = SyncResult(exchange=row.name, checkpoint=row.checkpoint)
        owned = exchange is None
        try:
            if exchange is None:
                exchange = self._open_row(row)
            self._run(row, exchange, worker_id, run_id, result, stop, max_pages, progress)
        except _LeaseLost:
            result.error = "lease lost: another worker took the exchange over"
            log.warning("exchange %s: %s", row.name, result.error)
            return result
        except BaseException as exc:
            # Anything unexpected (including a bad stored config): recorded, then re-raised only
            # if it is not an ordinary error, so the worker loop keeps going.
            self._failed(row, worker_id, run_id, result, exc)
            if not isinstance(exc, Exception):
                raise
            return result
        finally:
            if owned and exchange is not None:
                try:
                    exchange.close()
                except Exception:  # pragma: no cover - closing is best effort
                    log.debug("exchange %s: close failed", row.name, exc_info=True)
        return result

    def _run(
        self,
        row: Row[Any],
        exchange: Exchange,
        worker_id: str,
        run_id: int,
        result: SyncResult,
        stop: threading.Event | None,
        max_pages: int | None,
        progress: Callable[[SyncProgress], None] | None,
    ) -> None:
        checkpoint = row.checkpoint
        stopped = False
        stats = _Statistics(self.store)
        while True:
            pages = exchange.fetch(dict(checkpoint) if checkpoint is not None else None)
            try:
                for page in pages:
                    if not isinstance(page, Page):
                        raise PermanentError(
                            f"exchange yielded {type(page).__name__}, not a Page (a bug in the "
                            f"{row.kind} connector)"
                        )
                    self._apply(row, page, worker_id, run_id, result)
                    stats.grew(result.added)
                    checkpoint = result.checkpoint
                    if page.attestation is not None:
                        self._attest(row, exchange, page.attestation)
                    if progress is not None:
                        done, total = page.progress if page.progress else (None, None)
                        progress(
                            SyncProgress(
                                exchange=row.name,
                                pages=result.pages,
                                added=result.added,
                                updated=result.updated,
                                removed=result.removed,
                                disabled=result.disabled,
                                poisoned=result.poisoned,
                                done=done,
                                total=total,
                                checkpoint=checkpoint,
                            )
                        )
                    if (max_pages is not None and result.pages >= max_pages) or (
                        stop is not None and stop.is_set()
                    ):
                        stopped = True
                        break
            except PoisonedPage as exc:
                if self._poisoned_page(row, exc, worker_id, run_id, result, checkpoint):
                    checkpoint = result.checkpoint
                    continue  # skipped past it: fetch again from the new checkpoint
                return
            finally:
                close = getattr(pages, "close", None)
                if close is not None:
                    close()
            break
        result.complete = not stopped
        self._finished(row, worker_id, run_id, result)

    def _plan(self, page: Page) -> _Plan:
        """Validate and reduce a page outside the transaction: the last item per key wins, a
        bad entry becomes a poisoned record (its key's other entries still apply)."""
        plan = _Plan()
        final: dict[str, Upsert | Removal] = {}
        for item in page.items:
            if isinstance(item, Poisoned):
                key = item.key if isinstance(item.key, str) and _good_key(item.key) else None
                plan.poisoned.append((key, _clip(item.error), _clip(item.raw, _MAX_RAW)))
                if key is not None:
                    plan.seen.add(key)
                continue
            if not isinstance(item, Upsert | Removal):
                plan.poisoned.append((None, f"not a page item: {type(item).__name__}", ""))
                continue
            key = item.key
            if not isinstance(key, str) or not _good_key(key):
                plan.poisoned.append(
                    (None, f"invalid record key (1-{_MAX_KEY} characters)", _clip(key, 200))
                )
                continue
            final.pop(key, None)  # re-insert: dict order is the order of each key's last item
            final[key] = item
            plan.seen.add(key)
        for key, item in final.items():
            if isinstance(item, Removal):
                plan.removals[key] = _clip(f"{UPSTREAM} {item.reason or 'deleted upstream'}", 500)
                continue
            entries = item.entries if isinstance(item.entries, tuple | list) else ()
            if not isinstance(item.entries, tuple | list):
                plan.poisoned.append((key, "record entries are not a list", ""))
                plan.partial.add(key)
            if len(entries) == 1 and type(entries[0]) is NewEntry and entries[0].canonical:
                # The common case (a list line, one hash per record): nothing to validate.
                plan.upserts[key] = [_page_row(entries[0], key)]
                continue
            rows: dict[tuple[str, str, str], tuple[Any, ...]] = {}
            for n, entry in enumerate(entries, 1):
                try:
                    if not isinstance(entry, NewEntry):
                        raise ValueError(f"not a NewEntry but {type(entry).__name__}")
                    row = _page_row(normalize_entry(entry), key)
                except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as e:
                    plan.poisoned.append((key, _clip(f"entry {n}: {e}"), _clip(entry, _MAX_RAW)))
                    plan.partial.add(key)
                    continue
                rows[(row[_ST], row[_VH], row[_UM])] = row
            plan.upserts[key] = list(rows.values())
        return plan

    def _apply(
        self, row: Row[Any], page: Page, worker_id: str, run_id: int, result: SyncResult
    ) -> None:
        """One page, one transaction."""
        try:
            checkpoint = json_doc("checkpoint", page.checkpoint, dict, _MAX_CHECKPOINT)
        except InvalidInput as exc:
            raise PermanentError(f"the exchange gave an unusable checkpoint: {exc}") from None
        snapshot = page.snapshot
        if snapshot is not None and (not isinstance(snapshot, str) or not _good_key(snapshot)):
            raise PermanentError("the exchange gave an invalid snapshot id")
        plan = self._plan(page)
        counts = _Counts(poisoned=len(plan.poisoned))
        mode = OnDelete(row.on_delete)
        with self._db(), self.store.write() as (conn, rev):
            now = self.clock()
            xrow = conn.execute(
                update(ex_t)
                .where(ex_t.c.id == row.id, ex_t.c.lease_holder == worker_id)
                .values(lease_until=now + self.lease)
                .returning(ex_t.c.totals, ex_t.c.vouch_group, ex_t.c.on_delete, ex_t.c.bank_id)
            ).first()
            if xrow is None:
                raise _LeaseLost()
            mode = OnDelete(xrow.on_delete)
            bank_id = int(xrow.bank_id)
            touched = self._apply_entries(conn, rev, bank_id, plan, mode, counts, now)
            if snapshot is not None and plan.seen:
                self._mark_seen(conn, row.id, snapshot, plan.seen)
            if page.snapshot_complete and snapshot is not None:
                touched |= self._sweep(conn, rev, row.id, bank_id, snapshot, mode, counts, now)
            if touched and xrow.vouch_group:
                self._revouch(conn, rev, xrow.vouch_group, touched)
            if touched:
                touch_bank(conn, bank_id)
            if plan.poisoned:
                conn.execute(
                    insert(err_t),
                    [
                        {
                            "exchange_id": row.id,
                            "at": now,
                            "kind": "poisoned_item",
                            "checkpoint": checkpoint,
                            "key": key,
                            "error": error,
                            "raw": raw,
                        }
                        for key, error, raw in plan.poisoned
                    ],
                )
            totals = {k: int((xrow.totals or {}).get(k, 0)) for k in TOTALS}
            for k, v in counts.as_dict().items():
                totals[k] += v
            conn.execute(
                update(ex_t)
                .where(ex_t.c.id == row.id)
                .values(checkpoint=checkpoint, poison_attempts=0, totals=totals, updated_at=now)
            )
            conn.execute(
                update(runs_t)
                .where(runs_t.c.id == run_id)
                .values(
                    pages=runs_t.c.pages + 1,
                    added=runs_t.c.added + counts.added,
                    updated=runs_t.c.updated + counts.updated,
                    removed=runs_t.c.removed + counts.removed,
                    disabled=runs_t.c.disabled + counts.disabled,
                    poisoned=runs_t.c.poisoned + counts.poisoned,
                    checkpoint=checkpoint,
                )
            )
            self._in_page_transaction(conn)
        result.pages += 1
        for k, v in counts.as_dict().items():
            setattr(result, k, getattr(result, k) + v)
        result.checkpoint = checkpoint

    def _in_page_transaction(self, conn: Connection) -> None:
        """Called last inside each page's transaction; tests override it to crash there."""

    def _apply_entries(
        self,
        conn: Connection,
        rev: int,
        bank_id: int,
        plan: _Plan,
        mode: OnDelete,
        counts: _Counts,
        now: datetime,
    ) -> set[str]:
        """Write the plan's upserts and removals in bulk; returns the value hashes touched.

        Two indexed reads find what the bank holds of the page (by key, by value); new values
        then go in as one bulk insert of ready-made tuples (COPY on PostgreSQL, one
        ``executemany`` on SQLite), changed ones as one ``executemany`` update, and unchanged
        ones are left alone (a re-sync of an unchanged list writes no entry)."""
        desired: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        for rows in plan.upserts.values():
            for r in rows:
                desired[(r[_ST], r[_VH], r[_UM])] = r  # a later key takes over a shared value
        keys = [*plan.upserts, *plan.removals]
        if not keys:
            return set()
        pg = conn.dialect.name == "postgresql"
        size = _PG_CHUNK if pg else _CHUNK
        existing: dict[int, Row[Any]] = {}
        for chunk in _chunks(keys, size):
            for r in conn.execute(
                select(*_OLD_COLUMNS).where(
                    entries_t.c.bank_id == bank_id, _one_of(entries_t.c.external_id, chunk, pg)
                )
            ).all():
                existing[r[0]] = r
        by_vkey = {(r[1], r[2], r[3] or ""): r for r in existing.values()}
        # Values held under other keys (or none): only those not found by key can be there.
        # By value_hash alone, other banks' rows dropped here: with ``bank_id`` in the query
        # SQLite walks the whole bank through the unique index instead (quadratic in a load).
        hashes = sorted({vk[1] for vk in desired if vk not in by_vkey})
        for chunk in _chunks(hashes, size):
            for r in conn.execute(
                select(*_OLD_COLUMNS).where(_one_of(entries_t.c.value_hash, chunk, pg))
            ).all():
                if r[13] == bank_id and r[0] not in existing:
                    existing[r[0]] = r
                    by_vkey[(r[1], r[2], r[3] or "")] = r
        touched: set[str] = set()
        inserts: list[tuple[Any, ...]] = []
        updates: list[dict[str, Any]] = []
        decoded: dict[str | None, Any] = {}

        def same_json(text: str | None, value: Any) -> bool:
            if text not in decoded:
                decoded[text] = None if text is None else json.loads(text)
            return bool(decoded[text] == value)

        for vk, r in desired.items():
            old = by_vkey.get(vk)
            if old is None:
                inserts.append(r)
                touched.add(vk[1])
                continue
            ext, was_on, was_why, source, list_name, added, labels, meta, q = old[4:13]
            enabled, reason = bool(was_on), was_why or ""
            if _upstream_disabled(enabled, reason):
                enabled, reason = True, ""
            elif reason.startswith(WITHDRAWN_LOCAL):  # listed again: the local decision stands
                reason = _local_reason(reason)
            added_at = r[_ADDED] or added
            if (
                (r[_SOURCE], r[_LIST], r[_KEY], r[_QUALITY], added_at, enabled, reason)
                == (source, list_name, ext, q, added, was_on, was_why)
                and same_json(labels, r[_LABELS])
                and same_json(meta, r[_META])
            ):
                continue
            updates.append(
                {
                    "b_id": old.id,
                    "b_source": r[_SOURCE],
                    "b_list_name": r[_LIST],
                    "b_external_id": r[_KEY],
                    "b_labels": r[_LABELS],
                    "b_metadata": r[_META],
                    "b_quality": r[_QUALITY],
                    "b_added_at": added_at,
                    "b_enabled": enabled,
                    "b_disabled_reason": reason,
                }
            )
            touched.add(vk[1])
        if inserts:
            # The reads above showed none of these is in the bank, and the revision lock keeps
            # other writers out until commit: a plain insert (no ON CONFLICT) suffices.
            write = copy_rows if pg else executemany_rows
            write(conn, bank_id, rev, map(_stored, inserts), now=now, skip_duplicates=False)
            counts.added += len(inserts)
        if updates:
            conn.execute(
                update(entries_t)
                .where(entries_t.c.id == bindparam("b_id"))
                .values(
                    {
                        **{c: bindparam(f"b_{c}") for c in (*_KEPT, *_STATE_COLUMNS)},
                        "revision": rev,
                        "updated_at": now,
                    }
                ),
                updates,
            )
            counts.updated += len(updates)
        # Entries of the page's keys that the page no longer holds: dropped signals, removals.
        gone: dict[str, list[Row[Any]]] = {}
        for r in existing.values():
            if (r.signal_type, r.value_hash, r.url_match or "") in desired:
                continue
            ext = r.external_id
            if ext in plan.removals:
                gone.setdefault(plan.removals[ext], []).append(r)
            elif ext in plan.upserts and ext not in plan.partial:
                gone.setdefault(f"{UPSTREAM} dropped from record {ext}"[:500], []).append(r)
        for reason, rows in gone.items():
            touched |= self._retire(conn, rev, rows, reason, mode, counts, now)
        return touched

    def _retire(
        self,
        conn: Connection,
        rev: int,
        rows: Iterable[Any],
        reason: str,
        mode: OnDelete,
        counts: _Counts,
        now: datetime,
    ) -> set[str]:
        """Disable (with an upstream reason) or remove entries the partner no longer holds.
        Entries disabled here stay as they are when disabling; removing removes them all.
        ``rows`` need ``id``, ``value_hash``, ``enabled`` and ``disabled_reason``."""
        rows = builtins.list(rows)
        pg = conn.dialect.name == "postgresql"
        size = _PG_CHUNK if pg else _CHUNK
        if mode is OnDelete.REMOVE:
            ids = [r.id for r in rows]
            for chunk in _chunks(ids, size):
                tombstone(conn, _one_of(entries_t.c.id, chunk, pg, BigInteger), rev)
                conn.execute(
                    delete(entries_t).where(_one_of(entries_t.c.id, chunk, pg, BigInteger))
                )
            counts.removed += len(ids)
            return {r.value_hash for r in rows}
        doomed = [
            r
            for r in rows
            if r.enabled
            or (_upstream_disabled(False, r.disabled_reason) and r.disabled_reason != reason)
        ]
        for chunk in _chunks([r.id for r in doomed], size):
            conn.execute(
                update(entries_t)
                .where(_one_of(entries_t.c.id, chunk, pg, BigInteger))
                .values(enabled=False, disabled_reason=reason, revision=rev, updated_at=now)
            )
        # Disabled here before the partner withdrew them: keep the local reason, and note the
        # withdrawal so they stop vouching and are not taken for entries the partner still holds.
        local = [
            r
            for r in rows
            if not r.enabled
            and not (r.disabled_reason or "").startswith((UPSTREAM, WITHDRAWN_LOCAL))
        ]
        for r in local:
            conn.execute(
                update(entries_t)
                .where(entries_t.c.id == r.id)
                .values(
                    disabled_reason=_withdrawn_local(reason, r.disabled_reason or ""),
                    revision=rev,
                    updated_at=now,
                )
            )
        counts.disabled += sum(1 for r in doomed if r.enabled)
        return {r.value_hash for r in doomed} | {r.value_hash for r in local}

    def _mark_seen(self, conn: Connection, xid: int, snapshot: str, keys: set[str]) -> None:
        """Record the page's keys as seen in ``snapshot``: one statement, existing marks of this
        snapshot left untouched (no dead rows on PostgreSQL)."""
        upsert = (
            "ON CONFLICT (exchange_id, key) DO UPDATE SET snapshot = excluded.snapshot "
            f"WHERE {seen_t.name}.snapshot <> excluded.snapshot"
        )
        if conn.dialect.name == "postgresql":
            for chunk in _chunks(sorted(keys), _PG_CHUNK):
                conn.exec_driver_sql(
                    f"INSERT INTO {seen_t.name} (exchange_id, key, snapshot) "
                    "SELECT %(xid)s, k, %(snapshot)s FROM json_array_elements_text(%(keys)s::json) "
                    "AS k " + upsert,
                    # JSON text: exact for any key, and far cheaper to send than an array
                    {"xid": xid, "snapshot": snapshot, "keys": json.dumps(builtins.list(chunk))},
                )
        else:
            conn.exec_driver_sql(
                f"INSERT INTO {seen_t.name} (exchange_id, key, snapshot) VALUES (?, ?, ?) "
                + upsert,
                [(xid, k, snapshot) for k in sorted(keys)],
            )

    def _sweep(
        self,
        conn: Connection,
        rev: int,
        xid: int,
        bank_id: int,
        snapshot: str,
        mode: OnDelete,
        counts: _Counts,
        now: datetime,
    ) -> set[str]:
        """The snapshot is complete: every keyed entry it did not deliver is gone upstream.

        One anti-join finds them (on PostgreSQL without nested loops: right after a first
        load the planner has no statistics for the seen marks and would otherwise compare
        every entry with every mark, hours for a 10M-entry list); they are then disabled or
        removed by id, like any other retired entry."""
        unseen = and_(
            entries_t.c.bank_id == bank_id,
            entries_t.c.external_id.is_not(None),
            ~exists().where(
                seen_t.c.exchange_id == xid,
                seen_t.c.key == entries_t.c.external_id,
                seen_t.c.snapshot == snapshot,
            ),
        )
        cols = (
            entries_t.c.id,
            entries_t.c.value_hash,
            entries_t.c.enabled,
            entries_t.c.disabled_reason,
        )
        if mode is OnDelete.REMOVE:
            stmt = select(*cols).where(unseen)
        else:
            stmt = select(*cols).where(
                unseen,
                or_(
                    entries_t.c.enabled.is_(True),
                    entries_t.c.disabled_reason.startswith(AWAITING, autoescape=True),
                ),
            )
        with _no_nested_loops(conn):
            rows = conn.execute(stmt).all()
        reason = f"{UPSTREAM} not in the list any more"
        touched: set[str] = set()
        if rows:
            if mode is OnDelete.REMOVE:
                touched = self._retire(conn, rev, rows, reason, mode, counts, now)
            else:
                # Unlike a removal, the sweep also takes over entries held back for vouchers.
                pg = conn.dialect.name == "postgresql"
                for chunk in _chunks([r.id for r in rows], _PG_CHUNK if pg else _CHUNK):
                    conn.execute(
                        update(entries_t)
                        .where(_one_of(entries_t.c.id, chunk, pg, BigInteger))
                        .values(enabled=False, disabled_reason=reason, revision=rev, updated_at=now)
                    )
                counts.disabled += sum(1 for r in rows if r.enabled)
                touched = {r.value_hash for r in rows}
        conn.execute(delete(seen_t).where(seen_t.c.exchange_id == xid))
        return touched

    # -- vouching ------------------------------------------------------------------------------

    def _revouch(self, conn: Connection, rev: int, group: str, hashes: set[str]) -> None:
        """Enable an entry of a group member only when at least its exchange's ``min_vouchers``
        distinct exchanges of the group hold it (enabled, or held back only for vouchers, or
        disabled here but still listed upstream)."""
        members = {
            int(r.bank_id): int(r.min_vouchers)
            for r in conn.execute(
                select(ex_t.c.bank_id, ex_t.c.min_vouchers).where(ex_t.c.vouch_group == group)
            )
        }
        if not members or not hashes:
            return
        rows: list[Row[Any]] = []
        for chunk in _chunks(sorted(hashes)):
            rows += conn.execute(
                select(
                    entries_t.c.id,
                    entries_t.c.bank_id,
                    entries_t.c.signal_type,
                    entries_t.c.value_hash,
                    entries_t.c.url_match,
                    entries_t.c.enabled,
                    entries_t.c.disabled_reason,
                ).where(entries_t.c.bank_id.in_(sorted(members)), entries_t.c.value_hash.in_(chunk))
            ).all()
        vouchers: dict[tuple[str, str, str], set[int]] = {}
        for r in rows:
            if _vouches(r):
                vouchers.setdefault(_vkey(r), set()).add(int(r.bank_id))
        changes: dict[tuple[bool, str], list[int]] = {}
        for r in rows:
            reason = r.disabled_reason or ""
            if not (r.enabled or reason.startswith(AWAITING)):
                continue  # removed upstream or disabled here: not ours to enable
            have, need = len(vouchers.get(_vkey(r), ())), members[int(r.bank_id)]
            want = (True, "") if have >= need else (False, f"{AWAITING} ({have} of {need})")
            if (bool(r.enabled), reason) != want:
                changes.setdefault(want, []).append(r.id)
        now = self.clock()
        for (enabled, reason), ids in changes.items():
            for chunk in _chunks(ids):
                conn.execute(
                    update(entries_t)
                    .where(entries_t.c.id.in_(chunk))
                    .values(enabled=enabled, disabled_reason=reason, revision=rev, updated_at=now)
                )
        for bank_id in {int(r.bank_id) for r in rows if any(r.id in v for v in changes.values())}:
            touch_bank(conn, bank_id)

    def _revouch_banks(
        self, conn: Connection, rev: int, group: str, *, extra_bank: int | None = None
    ) -> None:
        """Recompute a whole group (after a member joined, left or changed ``min_vouchers``).
        A bank that left the group gets its held-back entries enabled again."""
        banks = {
            int(b)
            for b in conn.execute(
                select(ex_t.c.bank_id).where(ex_t.c.vouch_group == group)
            ).scalars()
        }
        if extra_bank is not None and extra_bank not in banks:
            now = self.clock()
            res = conn.execute(
                update(entries_t)
                .where(
                    entries_t.c.bank_id == extra_bank,
                    entries_t.c.disabled_reason.startswith(AWAITING, autoescape=True),
                )
                .values(enabled=True, disabled_reason="", revision=rev, updated_at=now)
            )
            if res.rowcount:
                touch_bank(conn, extra_bank)
        if extra_bank is not None:
            banks.add(extra_bank)
        hashes: set[str] = set()
        for bank_id in banks:
            hashes |= set(
                conn.execute(
                    select(entries_t.c.value_hash).where(entries_t.c.bank_id == bank_id)
                ).scalars()
            )
        self._revouch(conn, rev, group, hashes)

    # -- attestations --------------------------------------------------------------------------

    def _attest(self, row: Row[Any], exchange: Exchange, att: Attestation) -> None:
        """Stream the bank's entries to the exchange and record whether they agree."""
        try:
            bank = self._bank_name(row.id)
            entries = self.store.iter_entries(banks=[bank], enabled_only=False)
            computed = exchange.verify_state(att, entries)
            error = None
        except Exception as exc:  # a failed check is a disagreement, recorded as such
            computed, error = None, _clip(f"{type(exc).__name__}: {exc}", 500)
        agrees = computed is not None and computed == att.root
        detail = json_doc(
            "detail", json.loads(json.dumps(dict(att.detail), default=str)), dict, 65536
        )
        if error:
            detail["error"] = error
        now = self.clock()
        with self._db(), self.store.begin_write() as conn:
            conn.execute(
                insert(att_t).values(
                    exchange_id=row.id,
                    at=now,
                    version=int(att.version),
                    root=_clip(att.root, 255),
                    computed=None if computed is None else _clip(computed, 255),
                    count=int(att.count),
                    agrees=agrees,
                    detail=detail,
                )
            )
            if not agrees:
                append_audit(
                    conn,
                    actor="system",
                    action="exchange.attestation.mismatch",
                    target=row.name,
                    detail={
                        "version": int(att.version),
                        "expected": _clip(att.root, 255),
                        "computed": None if computed is None else _clip(computed, 255),
                        "error": error,
                    },
                )
        if not agrees:
            log.warning(
                "exchange %s: our copy does not match the partner's attestation for version %s",
                row.name,
                att.version,
            )

    def _bank_name(self, xid: int) -> str:
        with self.store.engine.connect() as conn:
            return str(
                conn.execute(
                    select(banks_t.c.name)
                    .join(ex_t, ex_t.c.bank_id == banks_t.c.id)
                    .where(ex_t.c.id == xid)
                ).scalar_one()
            )

    # -- run outcomes --------------------------------------------------------------------------

    def _release(
        self,
        conn: Connection,
        row: Row[Any],
        worker_id: str,
        values: dict[str, Any],
    ) -> bool:
        res = conn.execute(
            update(ex_t)
            .where(ex_t.c.id == row.id, ex_t.c.lease_holder == worker_id)
            .values(lease_holder=None, lease_until=None, **values)
        )
        return res.rowcount == 1

    def _finish_run(
        self, conn: Connection, run_id: int, state: str, result: SyncResult, now: datetime
    ) -> None:
        conn.execute(
            update(runs_t)
            .where(runs_t.c.id == run_id)
            .values(
                state=state,
                finished_at=now,
                error=result.error,
                skipped_pages=result.skipped_pages,
            )
        )

    def _finished(self, row: Row[Any], worker_id: str, run_id: int, result: SyncResult) -> None:
        now = self.clock()
        with self._db(), self.store.begin_write() as conn:
            current = conn.execute(
                select(ex_t.c.interval_seconds, ex_t.c.enabled).where(ex_t.c.id == row.id)
            ).first()
            interval = float(current.interval_seconds) if current else float(row.interval_seconds)
            enabled = bool(current.enabled) if current else False
            due = now + timedelta(seconds=interval) if result.complete else now
            values = {
                "state": "idle",
                "failures": 0,
                "last_error": None,
                "last_sync_at": now,
                "last_success_at": now,
                "next_sync_at": due if enabled else None,
            }
            if not self._release(conn, row, worker_id, values):
                return
            self._finish_run(conn, run_id, "ok" if result.complete else "partial", result, now)
            append_audit(
                conn,
                actor="system",
                action="exchange.sync",
                target=row.name,
                detail={"worker": worker_id, "complete": result.complete, **result.counts()},
            )

    def _poisoned_page(
        self,
        row: Row[Any],
        exc: PoisonedPage,
        worker_id: str,
        run_id: int,
        result: SyncResult,
        checkpoint: Checkpoint | None,
    ) -> bool:
        """Record an unreadable page. After ``exchange_poison_attempts`` in a row at one
        checkpoint, commit ``skip_to`` and return True (go on), or mark the exchange stalled."""
        now = self.clock()
        message = _clip(f"unreadable page: {exc}")
        skip_to = None
        if exc.skip_to is not None:
            try:
                skip_to = json_doc("checkpoint", exc.skip_to, dict, _MAX_CHECKPOINT)
            except InvalidInput:
                skip_to = None
        with self._db(), self.store.begin_write() as conn:
            xrow = conn.execute(
                update(ex_t)
                .where(ex_t.c.id == row.id, ex_t.c.lease_holder == worker_id)
                .values(poison_attempts=ex_t.c.poison_attempts + 1)
                .returning(ex_t.c.poison_attempts, ex_t.c.totals)
            ).first()
            if xrow is None:
                raise _LeaseLost()
            conn.execute(
                insert(err_t).values(
                    exchange_id=row.id,
                    at=now,
                    kind="poisoned_page",
                    checkpoint=checkpoint,
                    key=None,
                    error=message,
                    raw=_clip(exc.raw, _MAX_RAW),
                )
            )
            attempts = int(xrow.poison_attempts)
            if attempts >= self.poison_attempts and skip_to is not None:
                conn.execute(
                    update(ex_t)
                    .where(ex_t.c.id == row.id)
                    .values(checkpoint=skip_to, poison_attempts=0, updated_at=now)
                )
                conn.execute(
                    update(runs_t)
                    .where(runs_t.c.id == run_id)
                    .values(skipped_pages=runs_t.c.skipped_pages + 1, checkpoint=skip_to)
                )
                append_audit(
                    conn,
                    actor="system",
                    action="exchange.page.skipped",
                    target=row.name,
                    detail={"attempts": attempts, "error": message[:500]},
                )
                result.skipped_pages += 1
                result.checkpoint = skip_to
                log.warning("exchange %s: skipped an unreadable page: %s", row.name, message)
                return True
            stalled = attempts >= self.poison_attempts
            delay = self.backoff.delay(attempts, self.rng)
            result.error = message
            self._release(
                conn,
                row,
                worker_id,
                {
                    "state": "stalled" if stalled else "error",
                    "failures": ex_t.c.failures + 1,
                    "last_error": message,
                    "last_sync_at": now,
                    "next_sync_at": now + timedelta(seconds=delay),
                },
            )
            self._finish_run(conn, run_id, "error", result, now)
            append_audit(
                conn,
                actor="system",
                action="exchange.sync",
                target=row.name,
                detail={"worker": worker_id, "error": message[:500], **result.counts()},
            )
        return False

    def _failed(
        self, row: Row[Any], worker_id: str, run_id: int, result: SyncResult, exc: BaseException
    ) -> None:
        """Record a failed run: transient errors back off (honouring the partner's
        Retry-After), permanent ones wait for a person (retried at the longest backoff)."""
        now = self.clock()
        if isinstance(exc, TransientError):
            kind, text = "transient", str(exc)
        elif isinstance(exc, PermanentError | InvalidInput):
            kind, text = "permanent", str(exc)
        elif isinstance(exc, ExchangeError):
            kind, text = "transient", str(exc)
        elif isinstance(exc, Exception):
            # Unexpected errors are treated as transient; the type helps, the message may not
            # be safe to store (it could quote a response), so only its first line is kept.
            kind = "transient"
            text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            log.warning("exchange %s: sync failed", row.name, exc_info=exc)
        else:
            kind, text = "transient", f"interrupted ({type(exc).__name__})"
        message = _clip(text or type(exc).__name__)
        result.error = message
        try:
            with self._db(), self.store.begin_write() as conn:
                failures = (
                    int(
                        conn.execute(select(ex_t.c.failures).where(ex_t.c.id == row.id)).scalar()
                        or 0
                    )
                    + 1
                )
                if kind == "permanent":
                    delay = self.backoff.cap
                else:
                    delay = self.backoff.delay(failures, self.rng)
                    retry_after = getattr(exc, "retry_after", None)
                    if isinstance(retry_after, int | float) and retry_after > 0:
                        delay = max(delay, min(float(retry_after), 7 * 86400.0))
                if not self._release(
                    conn,
                    row,
                    worker_id,
                    {
                        "state": "error",
                        "failures": failures,
                        "last_error": message,
                        "last_sync_at": now,
                        "next_sync_at": now + timedelta(seconds=delay),
                    },
                ):
                    return
                conn.execute(
                    insert(err_t).values(
                        exchange_id=row.id,
                        at=now,
                        kind=kind,
                        checkpoint=result.checkpoint,
                        key=None,
                        error=message,
                        raw="",
                    )
                )
                self._finish_run(conn, run_id, "error", result, now)
                append_audit(
                    conn,
                    actor="system",
                    action="exchange.sync",
                    target=row.name,
                    detail={"worker": worker_id, "error": message[:500], **result.counts()},
                )
        except StoreError:
            log.warning("exchange %s: could not record the failure", row.name, exc_info=True)

    # -- the schedule --------------------------------------------------------------------------

    def run_due(
        self, worker_id: str, *, stop: threading.Event | None = None
    ) -> builtins.list[SyncResult]:
        """Sync every enabled exchange whose ``next_sync_at`` has come and whose lease is free
        (one run each, at most ``exchange_page_limit`` pages)."""
        now = self.clock()
        with self._db(), self.store.engine.connect() as conn:
            names = builtins.list(
                conn.execute(
                    select(ex_t.c.name)
                    .where(
                        ex_t.c.enabled.is_(True),
                        ex_t.c.next_sync_at <= now,
                        or_(ex_t.c.lease_until.is_(None), ex_t.c.lease_until < now),
                    )
                    .order_by(ex_t.c.next_sync_at)
                ).scalars()
            )
        out = []
        for name in names:
            if stop is not None and stop.is_set():
                break
            try:
                out.append(
                    self.sync(
                        name, worker_id=worker_id, stop=stop, max_pages=self.page_limit or None
                    )
                )
            except (ExchangeBusy, ExchangeNotFound):
                continue
        return out

    # -- feedback ------------------------------------------------------------------------------

    def queue_feedback_in(
        self,
        conn: Connection,
        matched: Iterable[tuple[str, int]],
        verdict: Verdict,
        *,
        case_id: int | None,
        reason: str = "",
    ) -> int:
        """Queue one finding per matched entry that lives in an exchange's bank (whose
        exchange sends feedback), inside the caller's transaction. Returns how many rows were
        queued; a decision retried queues nothing twice. Verdicts the exchange's kind cannot
        send are recorded as ``unsupported`` at once."""
        verdict = Verdict(verdict)
        ids = sorted({int(e) for _b, e in matched if isinstance(e, int) and 0 < e < 2**63})
        if not ids:
            return 0
        reason = _clip(reason, 64)
        now = self.clock()
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(ids):
            for r in conn.execute(
                select(
                    entries_t.c.id,
                    entries_t.c.external_id,
                    entries_t.c.signal_type,
                    entries_t.c.value,
                    entries_t.c.metadata,
                    ex_t.c.id.label("xid"),
                    ex_t.c.kind,
                )
                .join(ex_t, ex_t.c.bank_id == entries_t.c.bank_id)
                .where(
                    entries_t.c.id.in_(chunk),
                    ex_t.c.send_feedback.is_(True),
                    entries_t.c.external_id.is_not(None),
                )
            ):
                try:
                    supported = verdict in exchange_type(r.kind).feedback
                except ValueError:
                    supported = True  # unknown here; the sender decides
                rows.append(
                    {
                        "exchange_id": r.xid,
                        "entry_id": r.id,
                        "key": r.external_id,
                        "signal_type": r.signal_type,
                        "value": r.value,
                        "metadata": dict(r.metadata or {}),
                        "verdict": verdict.value,
                        "reason": reason,
                        "case_id": int(case_id or 0),
                        "state": "pending" if supported else "unsupported",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
        if not rows:
            return 0
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(fb_t).on_conflict_do_nothing(
            index_elements=["exchange_id", "key", "verdict", "case_id"]
        )
        queued = 0
        for row in rows:  # RETURNING says whether it went in: rowcount is not reliable here
            queued += len(conn.execute(stmt.values(**row).returning(fb_t.c.id)).all())
        if queued:
            append_audit(
                conn,
                actor="system",
                action="exchange.feedback.queue",
                target=f"case-{case_id}" if case_id else "",
                detail={"verdict": verdict.value, "reason": reason, "queued": queued},
            )
        return queued

    def send_due_feedback(self, worker_id: str, *, limit: int = 100) -> dict[str, int]:
        """Send queued findings whose time has come; returns counts by outcome (sent, retry,
        failed, unsupported, skipped)."""
        now = self.clock()
        counts = dict.fromkeys(("sent", "retry", "failed", "unsupported", "skipped"), 0)
        due = or_(
            fb_t.c.state == "pending",
            fb_t.c.state == "sending",  # a sender died holding it
        )
        with self._db(), self.store.engine.connect() as conn:
            rows = conn.execute(
                select(fb_t.c.id, fb_t.c.exchange_id)
                .where(due, fb_t.c.next_attempt_at <= now)
                .order_by(fb_t.c.next_attempt_at, fb_t.c.id)
                .limit(_limit(limit, 10_000))
            ).all()
        by_exchange: dict[int, list[int]] = {}
        for r in rows:
            by_exchange.setdefault(int(r.exchange_id), []).append(int(r.id))
        for xid, ids in by_exchange.items():
            with self._db(), self.store.engine.connect() as conn:
                xrow = conn.execute(
                    select(ex_t, banks_t.c.name.label("bank_name"))
                    .join(banks_t, banks_t.c.id == ex_t.c.bank_id)
                    .where(ex_t.c.id == xid)
                ).first()
            if xrow is None:
                continue
            try:
                exchange = self._open_row(xrow)
            except StoreError as exc:
                log.warning("exchange %s: feedback not sent: %s", xrow.name, exc)
                counts["skipped"] += len(ids)
                continue
            try:
                for fid in ids:
                    outcome = self._send_one(xrow, exchange, fid)
                    if outcome:
                        counts[outcome] += 1
            finally:
                try:
                    exchange.close()
                except Exception:  # pragma: no cover
                    log.debug("exchange %s: close failed", xrow.name, exc_info=True)
        return counts

    def _send_one(self, xrow: Row[Any], exchange: Exchange, fid: int) -> str | None:
        now = self.clock()
        with self._db(), self.store.begin_write() as conn:
            claimed = conn.execute(
                update(fb_t)
                .where(
                    fb_t.c.id == fid,
                    fb_t.c.state.in_(("pending", "sending")),
                    fb_t.c.next_attempt_at <= now,
                )
                .values(
                    state="sending",
                    attempts=fb_t.c.attempts + 1,
                    next_attempt_at=now + _FEEDBACK_LEASE,
                )
                .returning(*fb_t.c)
            ).first()
        if claimed is None:
            return None
        item = FeedbackItem(
            key=claimed.key,
            verdict=Verdict(claimed.verdict),
            signal_type=claimed.signal_type,
            value=claimed.value,
            reason=claimed.reason,
            metadata=dict(claimed.metadata or {}),
        )
        values: dict[str, Any]
        try:
            if item.verdict not in type(exchange).feedback:
                raise FeedbackUnsupported(f"{xrow.kind} exchanges take no {item.verdict} feedback")
            exchange.send_feedback(item)
        except FeedbackUnsupported as exc:
            outcome, values = "unsupported", {"state": "unsupported", "last_error": _clip(exc)}
        except PermanentError as exc:
            outcome, values = "failed", {"state": "failed", "last_error": _clip(exc)}
        except Exception as exc:
            text = _clip(exc if isinstance(exc, ExchangeError) else type(exc).__name__)
            if claimed.attempts >= self.feedback_max_attempts:
                outcome, values = "failed", {"state": "failed", "last_error": text}
            else:
                delay = self.backoff.delay(claimed.attempts, self.rng)
                retry_after = getattr(exc, "retry_after", None)
                if isinstance(retry_after, int | float) and retry_after > 0:
                    delay = max(delay, min(float(retry_after), 7 * 86400.0))
                outcome = "retry"
                values = {
                    "state": "pending",
                    "last_error": text,
                    "next_attempt_at": self.clock() + timedelta(seconds=delay),
                }
        else:
            outcome, values = "sent", {"state": "sent", "sent_at": self.clock(), "last_error": None}
        with self._db(), self.store.begin_write() as conn:
            conn.execute(update(fb_t).where(fb_t.c.id == fid).values(**values))
            if outcome in ("sent", "failed", "unsupported"):
                append_audit(
                    conn,
                    actor="system",
                    action=f"exchange.feedback.{outcome}",
                    target=xrow.name,
                    detail={
                        "entry": int(claimed.entry_id),
                        "verdict": claimed.verdict,
                        "case": int(claimed.case_id) or None,
                        "attempts": int(claimed.attempts),
                    },
                )
        return outcome


def _vouches(r: Row[Any]) -> bool:
    """Whether an entry counts as its exchange vouching for the value: it is enabled, held back
    only for vouchers, or disabled here (the partner still lists it)."""
    reason = r.disabled_reason or ""
    return (
        bool(r.enabled)
        or reason.startswith(AWAITING)
        or not reason.startswith((UPSTREAM, WITHDRAWN_LOCAL))
    )


def _good_key(key: str) -> bool:
    return 0 < len(key) <= _MAX_KEY and key.strip() == key and storable(key)


def _limit(limit: object, most: int = 1000) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInput(f"limit must be a whole number from 1 to {most}, not {limit!r}")
    return limit


def _feedback_record(exchange: str, r: Row[Any]) -> FeedbackRecord:
    return FeedbackRecord(
        id=r.id,
        exchange=exchange,
        entry_id=r.entry_id,
        key=r.key,
        signal_type=r.signal_type,
        verdict=r.verdict,
        reason=r.reason,
        case_id=int(r.case_id) or None,
        state=r.state,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        last_error=r.last_error,
        created_at=r.created_at,
        sent_at=r.sent_at,
    )


class ExchangeLoop:
    """The worker's exchange thread: syncs due exchanges, then sends due feedback, every
    ``exchange_poll_seconds``. :meth:`run_once` is one pass (``--once`` and tests)."""

    def __init__(
        self,
        exchanges: ExchangeStore,
        *,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exchanges = exchanges
        self.worker_id = worker_id
        self.every = max(0.1, float(exchanges.settings.exchange_poll_seconds))
        self._clock = clock
        self._next = float("-inf")
        self.stop_event = threading.Event()
        self.synced = 0
        self.feedback: dict[str, int] = {}

    def stop(self) -> None:
        self.stop_event.set()

    def run_once(self) -> list[SyncResult]:
        now = self._clock()
        if now < self._next:
            return []
        self._next = now + self.every
        results = self.exchanges.run_due(self.worker_id, stop=self.stop_event)
        self.synced += len(results)
        for r in results:
            if r.error:
                log.warning("exchange %s: %s", r.exchange, r.error)
            elif r.pages:
                log.info(
                    "exchange %s: %d page(s), +%d ~%d -%d off %d, %d poisoned",
                    r.exchange,
                    r.pages,
                    r.added,
                    r.updated,
                    r.removed,
                    r.disabled,
                    r.poisoned,
                )
        sent = self.exchanges.send_due_feedback(self.worker_id)
        for k, v in sent.items():
            self.feedback[k] = self.feedback.get(k, 0) + v
        return results

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except StoreError as exc:
                log.warning("exchanges: database unavailable: %s", exc)
            except Exception:
                log.exception("exchanges: unexpected error")
            self.stop_event.wait(min(1.0, self.every))

"""Exchanges in the store: their settings, checkpoints, history and feedback, on a :class:`Store`.

Each exchange feeds the one bank it owns (``source = "exchange:<name>"``); every entry of that
bank is the exchange's and carries the partner's record key as ``external_id``.
:class:`ExchangeStore` is what the API, the console, the CLI and the worker use; it holds the
exchange settings and delegates to its parts: the registry (settings and sealed credentials,
:mod:`bastion.exchanges.registry`), the sync engine and page applier
(:mod:`bastion.exchanges.engine`), vouch groups (:mod:`bastion.exchanges.vouching`), the
feedback queue (:mod:`bastion.exchanges.feedback`) and attestations
(:mod:`bastion.exchanges.attestations`).
"""

from __future__ import annotations

import builtins
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bastion import __version__
from bastion.actions.model import Backoff
from bastion.banks.model import utcnow
from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.exchanges.attestations import Attestations
from bastion.exchanges.base import Exchange, ExchangeContext, Verdict
from bastion.exchanges.engine import PageApplier, SyncEngine
from bastion.exchanges.feedback import FeedbackQueue
from bastion.exchanges.model import (
    AttestationRecord,
    ExchangeErrorRecord,
    ExchangeInfo,
    FeedbackRecord,
    SyncProgress,
    SyncResult,
    SyncRun,
)
from bastion.exchanges.registry import ExchangeRegistry
from bastion.exchanges.vouching import VouchGroups
from bastion.store.errors import InvalidInput

if TYPE_CHECKING:
    from bastion.db import Store


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
        self.registry = ExchangeRegistry(self)
        self.vouching = VouchGroups(self)
        self.applier = PageApplier(self)
        self.engine = SyncEngine(self)
        self.attesting = Attestations(self)
        self.feedback_queue = FeedbackQueue(self)

    def context(self) -> ExchangeContext:
        """What exchanges get from the host: timeouts, identity, URL fetch policy."""
        return ExchangeContext(
            timeout=float(self.settings.exchange_timeout),
            user_agent=f"Bastion-exchange/{__version__}",
            fetch_policy=self.settings.fetch_policy,
            transport=self.transport,
            organisation=self.settings.exchange_organisation,
        )

    def _in_page_transaction(self, conn: Connection) -> None:
        """Called last inside each page's transaction; tests override it to crash there."""

    # -- managing exchanges (the registry) -----------------------------------------------------

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
        return self.registry.add(
            name,
            kind,
            bank=bank,
            config=config,
            credentials=credentials,
            interval=interval,
            on_delete=on_delete,
            vouch_group=vouch_group,
            min_vouchers=min_vouchers,
            send_feedback=send_feedback,
            enabled=enabled,
            labels=labels,
            actor=actor,
        )

    def get(self, name: str) -> ExchangeInfo:
        return self.registry.get(name)

    def list(self) -> builtins.list[ExchangeInfo]:
        return self.registry.list()

    def update(self, name: str, *, actor: str = "system", **fields: Any) -> ExchangeInfo:
        """Change any of config, interval, on_delete, vouch_group, min_vouchers,
        send_feedback, enabled, checkpoint (None: start again from the beginning). A changed
        config, checkpoint or re-enabling makes the exchange due now and clears its error."""
        return self.registry.update(name, actor=actor, **fields)

    def set_credentials(
        self, name: str, credentials: dict[str, Any], *, actor: str = "system"
    ) -> None:
        """Replace the exchange's credentials (stored sealed; never shown). Makes it due now."""
        self.registry.set_credentials(name, credentials, actor=actor)

    def remove(self, name: str, *, actor: str = "system") -> None:
        """Delete the exchange, its history and queued feedback; its bank and entries stay."""
        self.registry.remove(name, actor=actor)

    def request_sync(self, name: str, *, actor: str = "system") -> ExchangeInfo:
        """Make the exchange due now; a worker syncs it (web requests never do)."""
        return self.registry.request_sync(name, actor=actor)

    def open(self, name: str) -> Exchange:
        """An instance of the exchange with its config, unsealed credentials and context."""
        return self.registry.open(name)

    # -- history -------------------------------------------------------------------------------

    def errors(self, name: str, *, limit: int = 50) -> builtins.list[ExchangeErrorRecord]:
        return self.engine.errors(name, limit=limit)

    def runs(self, name: str, *, limit: int = 20) -> builtins.list[SyncRun]:
        return self.engine.runs(name, limit=limit)

    def attestations(self, name: str, *, limit: int = 20) -> builtins.list[AttestationRecord]:
        return self.attesting.attestations(name, limit=limit)

    def feedback(self, name: str, *, limit: int = 50) -> builtins.list[FeedbackRecord]:
        return self.feedback_queue.feedback(name, limit=limit)

    # -- syncing -------------------------------------------------------------------------------

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
        return self.engine.sync(
            name,
            exchange=exchange,
            worker_id=worker_id,
            stop=stop,
            max_pages=max_pages,
            progress=progress,
        )

    def run_due(
        self, worker_id: str, *, stop: threading.Event | None = None
    ) -> builtins.list[SyncResult]:
        """Sync every enabled exchange whose ``next_sync_at`` has come and whose lease is free
        (one run each, at most ``exchange_page_limit`` pages)."""
        return self.engine.run_due(worker_id, stop=stop)

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
        queued; a decision retried queues nothing twice."""
        return self.feedback_queue.queue_feedback_in(
            conn, matched, verdict, case_id=case_id, reason=reason
        )

    def send_due_feedback(self, worker_id: str, *, limit: int = 100) -> dict[str, int]:
        """Send queued findings whose time has come; returns counts by outcome (sent, retry,
        failed, unsupported, skipped)."""
        return self.feedback_queue.send_due_feedback(worker_id, limit=limit)

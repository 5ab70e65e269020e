"""The outbox worker: claim due rows, deliver them, record the outcome, sleep, repeat. Beside
it, :class:`BuildLoop` and :class:`VoucherLoop` run the background work of the same process:
pdata table builds and queued safety vouchers.

It runs in its own process (``bastion worker``, or the child ``bastion serve`` starts) because
web workers must not run schedulers: with several API processes each would send everything.
Several workers may share one database; leases keep them off each other's rows. Stopping is
graceful: no new claims, deliveries in flight finish. A worker killed outright leaves leased rows
that become due again when the lease runs out, and go out again with the same idempotency key.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

import httpx

from bastion.actions.delivery import Attempt, deliver, make_client
from bastion.actions.model import Outcome, State
from bastion.actions.outbox import Outbox, OutboxItem
from bastion.actions.targets import Targets
from bastion.config import ConfigError, Settings
from bastion.psi.records import BuildJob
from bastion.psi.store import VoucherStore
from bastion.store import StoreError

log = logging.getLogger("bastion.worker")
#: Added to the longest target timeout for the default lease: time to record the outcome.
LEASE_MARGIN = 30.0
#: How often rows waiting for a target are re-labelled, and a failing database re-tried.
_NOTE_EVERY = 60.0
_DB_RETRY = 5.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    poll: float = 1.0
    concurrency: int = 4
    lease: timedelta = timedelta(seconds=40)
    heartbeat: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, targets: Targets) -> WorkerConfig:
        """Check the ``outbox_*`` settings against each other and the targets; ConfigError
        names the one at fault."""
        poll = _number("outbox_poll_seconds", settings.outbox_poll_seconds, 0.01, 60)
        heartbeat = _number("outbox_heartbeat_seconds", settings.outbox_heartbeat_seconds, 0, 1e6)
        concurrency = settings.outbox_concurrency
        if not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
            raise ConfigError("setting outbox_concurrency must be a whole number from 1 to 64")
        attempts = settings.outbox_max_attempts
        if not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise ConfigError("setting outbox_max_attempts must be a whole number from 1 to 1000")
        base = _number("outbox_backoff_seconds", settings.outbox_backoff_seconds, 0.001, 86400)
        cap = _number(
            "outbox_backoff_max_seconds", settings.outbox_backoff_max_seconds, 0.001, 7 * 86400
        )
        if cap < base:
            raise ConfigError(
                "setting outbox_backoff_max_seconds must be at least outbox_backoff_seconds"
            )
        lease = _number("outbox_lease_seconds", settings.outbox_lease_seconds, 0, 86400)
        longest = targets.max_timeout
        if lease == 0:
            lease = longest + LEASE_MARGIN
        elif lease <= longest:
            raise ConfigError(
                f"setting outbox_lease_seconds ({lease:g}) must exceed the longest webhook "
                f"timeout ({longest:g} s), or a slow answer would let another worker send the "
                "same row meanwhile"
            )
        return cls(poll, concurrency, timedelta(seconds=lease), heartbeat)


def _number(name: str, value: object, low: float, high: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name} must be a number, not {value!r}") from None
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigError(f"setting {name} must be from {low:g} to {high:g}, not {value!r}")
    return number


def new_worker_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Counters:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0  # outcome not recorded (database trouble, or the lease was taken over)


class OutboxWorker:
    def __init__(
        self,
        outbox: Outbox,
        targets: Targets,
        config: WorkerConfig | None = None,
        *,
        worker_id: str | None = None,
        client_factory: Callable[[], httpx.Client] = make_client,
        parent_pid: int | None = None,
    ) -> None:
        self.outbox = outbox
        self.targets = targets
        self.config = config or WorkerConfig()
        self.worker_id = worker_id or new_worker_id()
        self.client_factory = client_factory
        self.parent_pid = parent_pid
        self.stop_event = threading.Event()
        self.counts = Counters()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []

    def stop(self) -> None:
        """Ask the worker to stop: no new claims; deliveries in flight finish."""
        self.stop_event.set()

    # -- one row -------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None or client.is_closed:
            client = self._local.client = self.client_factory()
            with self._lock:
                self._clients.append(client)
        return client

    def process(self, item: OutboxItem) -> Outcome | None:
        """Deliver one claimed row and record what happened; None if the outcome could not be
        recorded (the row's lease then runs out and it is sent again with the same key)."""
        try:
            return self._process(item)
        except StoreError as exc:
            log.error("outbox %d: could not record the outcome: %s", item.id, exc)
        except Exception:
            log.exception("outbox %d: unexpected error while delivering", item.id)
        with self._lock:
            self.counts.lost += 1
        return None

    def _process(self, item: OutboxItem) -> Outcome | None:
        target = self.targets.for_action(item.action)
        if target is None:  # claims are filtered by target, so only after a config change
            attempt = Attempt(
                Outcome.RETRY, None, f"no webhook target configured for {item.action}"
            )
            name = None
        else:
            name = target.name
            attempt = deliver(
                self._client(),
                target,
                action=item.action,
                idempotency_key=item.idempotency_key,
                body=item.body_bytes,
            )
        if attempt.outcome is Outcome.DELIVERED:
            self.outbox.mark_delivered(item, status=attempt.status, target=name)
            log.info(
                "outbox %d: %s %s delivered to %s (HTTP %s, attempt %d)",
                item.id,
                item.action,
                item.idempotency_key,
                name,
                attempt.status,
                item.attempts,
            )
            with self._lock:
                self.counts.delivered += 1
            return Outcome.DELIVERED
        state = self.outbox.mark_failed(
            item,
            self.worker_id,
            error=attempt.error or "failed",
            status=attempt.status,
            permanent=attempt.outcome is Outcome.DEAD,
            target=name,
        )
        if state is None:
            log.warning("outbox %d: lease was taken over; outcome not recorded", item.id)
            with self._lock:
                self.counts.lost += 1
            return None
        if state is State.DEAD:
            log.warning(
                "outbox %d: %s %s dead after attempt %d: %s",
                item.id,
                item.action,
                item.idempotency_key,
                item.attempts,
                attempt.error,
            )
            with self._lock:
                self.counts.dead += 1
            return Outcome.DEAD
        log.info(
            "outbox %d: %s attempt %d failed, will retry: %s",
            item.id,
            item.action,
            item.attempts,
            attempt.error,
        )
        with self._lock:
            self.counts.retried += 1
        return Outcome.RETRY

    # -- loops ---------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Deliver every row due now, one at a time, and return how many were attempted."""
        self._note_unroutable()
        done = 0
        try:
            while not self.stop_event.is_set():
                items = self.outbox.claim_due(
                    self.worker_id, 1, self.config.lease, actions=self.targets.routable
                )
                if not items:
                    break
                self.process(items[0])
                done += 1
        finally:
            self._close_clients()
        return done

    def run(self) -> None:
        """Deliver until :meth:`stop` (or the parent process given as ``parent_pid`` is gone)."""
        cfg = self.config
        routable = self.targets.routable
        log.info(
            "outbox worker %s started: targets %s, %d at a time, lease %g s",
            self.worker_id,
            self.targets.describe() or "none (actions wait until one is configured)",
            cfg.concurrency,
            cfg.lease.total_seconds(),
        )
        next_note = 0.0
        next_beat = time.monotonic() + cfg.heartbeat if cfg.heartbeat else math.inf
        inflight: set[Future[Outcome | None]] = set()
        pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="outbox")
        try:
            while not self.stop_event.is_set():
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    log.warning("outbox worker: parent process is gone; stopping")
                    break
                now_mono = time.monotonic()
                if now_mono >= next_note:
                    next_note = now_mono + _NOTE_EVERY
                    self._note_unroutable()
                if now_mono >= next_beat:
                    next_beat = now_mono + cfg.heartbeat
                    self._heartbeat()
                inflight = {f for f in inflight if not f.done()}
                pause = cfg.poll
                free = cfg.concurrency - len(inflight)
                if free > 0:
                    try:
                        pause = self._fill(pool, inflight, free, routable)
                    except StoreError as exc:
                        log.warning("outbox worker: database unavailable: %s", exc)
                        pause = _DB_RETRY
                if pause <= 0:
                    continue
                if inflight:
                    wait(inflight, timeout=pause, return_when=FIRST_COMPLETED)
                else:
                    self.stop_event.wait(pause)
        finally:
            if inflight:
                log.info("outbox worker: finishing %d deliveries in flight", len(inflight))
            pool.shutdown(wait=True)
            self._close_clients()
            c = self.counts
            log.info(
                "outbox worker %s stopped: %d delivered, %d retried, %d dead",
                self.worker_id,
                c.delivered,
                c.retried,
                c.dead,
            )

    def _fill(
        self,
        pool: ThreadPoolExecutor,
        inflight: set[Future[Outcome | None]],
        free: int,
        routable: frozenset[str] | None,
    ) -> float:
        """Claim up to ``free`` due rows and start them; return how long to wait next (0: look
        again at once). A cheap read first, so an idle worker does not take write locks."""
        due = self.outbox.next_due(actions=routable)
        if due is None:
            return self.config.poll
        wait_for = (due - self.outbox.clock()).total_seconds()
        if wait_for > 0:
            return min(self.config.poll, max(wait_for, 0.01))
        items = self.outbox.claim_due(self.worker_id, free, self.config.lease, actions=routable)
        for item in items:
            inflight.add(pool.submit(self.process, item))
        # Something was due but another worker took it: wait a poll rather than spin.
        return 0 if len(items) == free else self.config.poll

    def _note_unroutable(self) -> None:
        try:
            marked = self.outbox.note_unroutable(self.targets.routable)
        except StoreError as exc:
            log.warning("outbox worker: database unavailable: %s", exc)
            return
        if marked:
            log.warning("outbox: %d pending actions have no webhook target configured", marked)

    def _heartbeat(self) -> None:
        c = self.counts
        try:
            s = self.outbox.stats()
        except StoreError as exc:
            log.warning("outbox worker %s alive; database unavailable: %s", self.worker_id, exc)
            return
        age = "none" if s.oldest_pending_age is None else f"{s.oldest_pending_age:.0f} s"
        log.info(
            "outbox worker %s alive: %d delivered, %d retried, %d dead since start; "
            "pending %d, delivering %d, dead %d; oldest waiting %s",
            self.worker_id,
            c.delivered,
            c.retried,
            c.dead,
            s.counts["pending"],
            s.counts["delivering"],
            s.counts["dead"],
            age,
        )

    def _close_clients(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


class BuildLoop:
    """Claims pending pdata builds (``POST /v1/pdata`` records them) and runs them, one at a
    time, in the worker process: a build takes minutes for a large bank and must not hold a
    web request, and web workers run no schedulers. Leases keep two workers off one job."""

    def __init__(
        self, vouchers: VoucherStore, *, poll: float = 5.0, worker_id: str | None = None
    ) -> None:
        self.vouchers = vouchers
        self.poll = poll
        self.worker_id = worker_id or new_worker_id()
        self.stop_event = threading.Event()
        self.built = 0
        self.failed = 0

    def stop(self) -> None:
        """Stop claiming; a build in progress finishes (or, on a hard stop, is reclaimed by
        another worker once its lease runs out)."""
        self.stop_event.set()

    def run_once(self) -> BuildJob | None:
        """Claim and run one pending build; the job as it ended, or None if none was waiting."""
        job = self.vouchers.build_pending_once(self.worker_id)
        if job is not None:
            if job.state == "done":
                self.built += 1
                log.info("pdata build %d done: root %s", job.id, job.root)
            else:
                self.failed += 1
                log.warning("pdata build %d %s: %s", job.id, job.state, job.error)
        return job

    def run(self) -> None:
        """Poll for builds until :meth:`stop`; a database error waits and tries again."""
        log.info("pdata build loop %s started (poll %g s)", self.worker_id, self.poll)
        while not self.stop_event.is_set():
            try:
                job = self.run_once()
            except StoreError as exc:
                log.warning("pdata build loop: database unavailable: %s", exc)
                job = None
                self.stop_event.wait(_DB_RETRY)
            except Exception:
                log.exception("pdata build loop: unexpected error")
                job = None
                self.stop_event.wait(_DB_RETRY)
            if job is None:
                self.stop_event.wait(self.poll)
        log.info(
            "pdata build loop %s stopped: %d built, %d failed",
            self.worker_id,
            self.built,
            self.failed,
        )


class VoucherLoop:
    """Processes queued safety vouchers (``POST /v1/vouchers`` only queues them) in the worker
    process: opens them, keeps the shares that matched, moves account groups forward and hands
    openings to review. The request that queued a voucher never opens it, so the platform cannot
    tell from the answer, nor from its timing, whether it matched.

    ``verify`` is the server-side re-check against the live bank; ``prepare`` runs before each
    step (the worker loads its bank index on the first queued voucher and refreshes it after),
    so entries disabled after a dispute stop counting."""

    def __init__(
        self,
        vouchers: VoucherStore,
        verify: Callable[[str], list[dict[str, object]]],
        *,
        prepare: Callable[[], object] | None = None,
        poll: float = 1.0,
        batch: int = 200,
        retry_every: float = 60.0,
        worker_id: str | None = None,
    ) -> None:
        self.vouchers = vouchers
        self.verify = verify
        self.prepare = prepare
        self.poll = poll
        self.batch = batch
        self.retry_every = retry_every
        self.worker_id = worker_id or new_worker_id()
        self.stop_event = threading.Event()
        self.processed = 0
        self.opened = 0
        self._retried_at = time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()

    def run_once(self) -> int:
        """Process one batch of queued vouchers; how many (0: the queue was empty). Openings
        whose hand-off to review failed are offered again every ``retry_every`` seconds."""
        if time.monotonic() - self._retried_at >= self.retry_every:
            self._retried_at = time.monotonic()
            self.vouchers.retry_handoffs()
        if not self.vouchers.queued():
            return 0
        if self.prepare is not None:
            self.prepare()
        done = self.vouchers.process_queue(self.verify, limit=self.batch)
        self.processed += done.processed
        self.opened += sum(len(a.items) for a in done.opened)
        return done.processed

    def drain(self) -> int:
        """Process until the queue is empty (``bastion worker --once``, tests)."""
        total = 0
        while n := self.run_once():
            total += n
        return total

    def run(self) -> None:
        """Poll the queue until :meth:`stop`; a database error waits and tries again."""
        log.info("voucher loop %s started (poll %g s)", self.worker_id, self.poll)
        while not self.stop_event.is_set():
            try:
                n = self.run_once()
            except StoreError as exc:
                log.warning("voucher loop: database unavailable: %s", exc)
                n = 0
                self.stop_event.wait(_DB_RETRY)
            except Exception:
                log.exception("voucher loop: unexpected error")
                n = 0
                self.stop_event.wait(_DB_RETRY)
            if n == 0:
                self.stop_event.wait(self.poll)
        log.info(
            "voucher loop %s stopped: %d processed, %d items opened",
            self.worker_id,
            self.processed,
            self.opened,
        )

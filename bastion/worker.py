"""The worker: deliver queued actions to the configured webhooks, build requested pdata tables,
open queued safety vouchers, purge expired evidence, send due reports, sync exchanges and sign
feed versions; and the child process ``bastion serve`` runs beside the web server (web workers
never run schedulers).

Every loop is built from the process's one :class:`~bastion.runtime.Runtime`, the same wiring
the server uses, so work done here reaches review, the outbox and the audit log exactly as a
request would. ``bastion worker`` (the CLI command) only parses options and calls
:func:`run_worker`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from bastion.actions.outbox import Outbox
from bastion.actions.targets import Targets, load_targets
from bastion.actions.worker import BuildLoop, OutboxWorker, VoucherLoop, WorkerConfig
from bastion.backscan.loop import RematchLoop
from bastion.config import Settings
from bastion.contact.cases import AccountCaseLoop
from bastion.contact.store import ContactStore
from bastion.db import Store
from bastion.exchanges.engine import ExchangeLoop
from bastion.exchanges.store import ExchangeStore
from bastion.feeds.versioner import FeedVersioner
from bastion.housekeeping import Housekeeping
from bastion.runtime import Runtime, build_runtime
from bastion.store import StoreError

log = logging.getLogger("bastion.worker")


def check_worker_settings(settings: Settings) -> float:
    """Validate the webhook targets and outbox settings (ConfigError otherwise) and return how
    long a graceful stop may take: the longest delivery timeout."""
    targets = load_targets(settings)
    WorkerConfig.from_settings(settings, targets)
    return targets.max_timeout


def worker_runtime(settings: Settings, store: Store) -> Runtime:
    """The worker's runtime: the server's wiring, except that edits of the policy file are not
    audited here (the server audits them; once is enough)."""
    rt = build_runtime(settings, store)
    rt.policy.on_reload = None
    return rt


def voucher_loop(rt: Runtime, worker_id: str) -> VoucherLoop:
    """The queued-voucher loop over ``rt`` (bank index, policy, review), so an opening reaches
    review exactly as the server would hand it over."""

    def prepare() -> None:
        """The bank index, loaded on the first queued voucher, then kept current."""
        if rt.index.loaded:
            rt.index.refresh()
        else:
            rt.index.load()

    return VoucherLoop(
        rt.vouchers,
        voucher_verifier(rt),
        prepare=prepare,
        poll=max(0.05, float(rt.settings.voucher_queue_poll_seconds)),
        worker_id=f"{worker_id}:vouchers",
    )


def voucher_verifier(rt: Runtime) -> Callable[[str], list[dict[str, Any]]]:
    """Server-side re-check of an opened item's PDQ hash against the live bank index of ``rt``
    (the worker's runtime, which processes queued vouchers)."""
    banks = list(rt.settings.voucher_banks) or None
    distance = int(rt.settings.voucher_verify_distance)

    def verify(pdq: str) -> list[dict[str, Any]]:
        with rt.index.read() as matcher:
            found = matcher.lookup_pdq([pdq], threshold=distance, banks=banks)[0]
        return [m.as_dict() for m in found[:20]]

    return verify


@dataclass
class Loops:
    """The worker's loops. Deliveries always run; the others are None when this worker cannot
    run them (no master key, or the runtime could not be built: logged why)."""

    deliveries: OutboxWorker
    builds: BuildLoop | None = None
    chores: Housekeeping | None = None
    exchanges: ExchangeLoop | None = None
    versions: FeedVersioner | None = None
    vouchers: VoucherLoop | None = None
    account_cases: AccountCaseLoop | None = None
    rematch: RematchLoop | None = None

    def run_once(self, say: Callable[[str], None]) -> None:
        """One pass of every loop (``bastion worker --once``), each saying what it did."""
        done = self.deliveries.run_once()
        c = self.deliveries.counts
        say(f"{done} attempted: {c.delivered} delivered, {c.retried} to retry, {c.dead} dead")
        builds = self.builds
        while builds is not None and builds.run_once() is not None:
            pass
        if builds is not None and builds.built + builds.failed:
            say(f"pdata builds: {builds.built} done, {builds.failed} failed")
        if self.chores is not None:
            self.chores.run_once()
            say(f"evidence purged: {self.chores.purged}, reports run: {self.chores.reported}")
        if self.exchanges is not None:
            synced = self.exchanges.run_once()
            failed = sum(1 for r in synced if r.error)
            say(f"exchanges synced: {len(synced)} ({failed} failed)")
        if self.versions is not None:
            say(f"feed versions signed: {len(self.versions.run_once())}")
        if self.vouchers is not None:
            say(f"vouchers processed: {self.vouchers.drain()}")
        if self.account_cases is not None:
            cases = self.account_cases.run_once()
            say(f"account cases: {cases.opened} opened, {cases.joined} joined")
        if self.rematch is not None:
            bpass = self.rematch.run_once()
            found = bpass.rematched.matched if bpass.rematched else 0
            say(f"back-scan: {found} retroactive matches, cases opened {bpass.opened}")

    def run(self) -> None:
        """Every loop until stopped (SIGTERM or Ctrl-C: deliveries in flight finish first)."""
        thread = None
        if self.builds is not None:
            thread = threading.Thread(target=self.builds.run, name="pdata-builds", daemon=True)
            thread.start()
        if self.chores is not None:
            threading.Thread(target=self.chores.run, name="housekeeping", daemon=True).start()
        if self.exchanges is not None:
            threading.Thread(target=self.exchanges.run, name="exchanges", daemon=True).start()
        if self.versions is not None:  # each version is one transaction: none is left half made
            threading.Thread(target=self.versions.run, name="feed-versions", daemon=True).start()
        if self.vouchers is not None:  # each step is one transaction: a hard stop loses nothing
            threading.Thread(target=self.vouchers.run, name="vouchers", daemon=True).start()
        if self.account_cases is not None:  # each case is one transaction, as above
            threading.Thread(
                target=self.account_cases.run, name="account-cases", daemon=True
            ).start()
        if self.rematch is not None:  # each case is one transaction; a re-match is redone
            threading.Thread(target=self.rematch.run, name="backscan", daemon=True).start()
        _graceful(self.stop)
        self.deliveries.run()
        if self.builds is not None and thread is not None:
            self.builds.stop()
            # A build in progress is not waited for: its lease runs out and a worker takes it
            # up again (the table is only published together with its job's completion).
            thread.join(5)

    def stop(self) -> None:
        self.deliveries.stop()
        # a sync stops between pages
        for loop in (
            self.exchanges,
            self.versions,
            self.vouchers,
            self.account_cases,
            self.rematch,
        ):
            if loop is not None:
                loop.stop()
        if self.builds is not None:
            self.builds.stop()
        if self.chores is not None:
            self.chores.stop()


def build_loops(
    store: Store,
    settings: Settings,
    targets: Targets,
    config: WorkerConfig,
    *,
    parent_pid: int | None = None,
) -> Loops:
    """The worker's loops from one :func:`worker_runtime`. Without it (most often: no master
    key) only what needs no key runs: deliveries, and exchanges without credentials."""
    try:
        rt: Runtime | None = worker_runtime(settings, store)
    except (OSError, ValueError, StoreError) as exc:
        rt = None
        log.warning(
            "pdata builds, vouchers, evidence purges, reports and feed versions disabled in "
            "this worker: %s",
            exc,
        )
    if rt is not None:
        settings = rt.settings
        outbox = rt.outbox
    else:
        store.use_settings_audit_keys(settings)
        settings = settings.in_data_dir(store.data_dir)
        outbox = Outbox.from_settings(store, settings)
    runner = OutboxWorker(outbox, targets, config, parent_pid=parent_pid)
    wid = runner.worker_id
    loops = Loops(deliveries=runner, exchanges=_exchange_loop(rt, store, settings, wid))
    if rt is not None:
        loops.builds = BuildLoop(rt.vouchers, worker_id=f"{wid}:pdata")
        loops.chores = Housekeeping(
            rt.vault,
            rt.reports,
            rt.settings,
            worker_id=f"{wid}:chores",
            contact=partial(ContactStore.for_runtime, rt),
        )
        loops.versions = FeedVersioner(
            rt.feeds, every=float(rt.settings.feed_version_seconds), worker_id=f"{wid}:feeds"
        )
        loops.vouchers = voucher_loop(rt, wid)
        every = float(rt.settings.contact_case_interval_seconds)
        if every > 0:
            loops.account_cases = AccountCaseLoop(
                rt.store, rt.review, rt.policy.current, every=every
            )
        every = float(rt.settings.rematch_interval_seconds)
        if every > 0:
            loops.rematch = RematchLoop(rt, every=every)
    return loops


def _exchange_loop(
    rt: Runtime | None, store: Store, settings: Settings, worker_id: str
) -> ExchangeLoop | None:
    """The exchange sync and feedback loop. Without the master key, exchanges that need no
    credentials still sync (the others record that the key is missing)."""
    try:
        if rt is not None:
            exchanges = rt.exchanges
        else:
            log.warning("exchanges with credentials cannot sync in this worker: no master key")
            exchanges = ExchangeStore(store, None, settings)
        return ExchangeLoop(exchanges, worker_id=f"{worker_id}:exchanges")
    except StoreError as exc:
        log.warning("exchange syncs disabled in this worker: %s", exc)
        return None


def run_worker(
    store: Store,
    settings: Settings,
    targets: Targets,
    config: WorkerConfig,
    *,
    once: bool = False,
    parent_pid: int | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Run the worker over ``store`` until stopped, or one pass of each loop with ``once``
    (each loop then says what it did through ``say``)."""
    loops = build_loops(store, settings, targets, config, parent_pid=parent_pid)
    if once:
        loops.run_once(say)
    else:
        loops.run()


def _graceful(stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: stop claiming and let deliveries finish. A second: exit now (the
    rows being delivered go out again after their lease, with the same idempotency key)."""
    seen: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if seen:
            raise SystemExit(128 + signum)
        seen.append(signum)
        log.info("outbox worker: %s received, finishing", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- the child process `bastion serve` runs -----------------------------------------------------


class _Terminated(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class WorkerChild:
    """Runs ``bastion worker`` as a child process and restarts it if it dies (with a growing
    pause), until :meth:`stop`. Settings reach it through the environment, so a database
    password never shows in the process list."""

    def __init__(self, *, database_url: str | None, config: Path | None, log_level: str) -> None:
        self.env = dict(os.environ)
        if database_url:
            self.env["BASTION_DATABASE_URL"] = database_url
        if config is not None:
            self.env["BASTION_CONFIG"] = str(Path(config).resolve())
        self.cmd = [
            sys.executable,
            "-m",
            "bastion.cli",
            "worker",
            "--exit-with-parent",
            "--log-level",
            log_level,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="worker-child", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            # Its own process group: a terminal's Ctrl-C reaches only the server, which then
            # stops the worker in order (rather than both racing and the worker being restarted).
            self.proc = subprocess.Popen(self.cmd, env=self.env, process_group=0)

    def _supervise(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.warning("outbox worker exited with code %s; restarting in %g s", code, pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, 60.0)
            self._spawn()

    def stop(self, timeout: float) -> None:
        """SIGTERM, then up to ``timeout`` seconds for deliveries in flight, then SIGKILL."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def worker_child(
    settings: Settings, *, config: Path | None, log_level: str, enabled: bool = True
) -> Iterator[WorkerChild | None]:
    """Run the worker child for the duration of the block. SIGTERM to the server (after
    uvicorn's own graceful shutdown) stops the child too, then ends the server by that signal."""
    if not enabled:
        yield None
        return
    stop_timeout = check_worker_settings(settings) + 5
    # Migrate before the child starts, so server and worker do not both try at once; a failure
    # is the server's to report when it opens the store.
    with suppress(StoreError):
        Store.open(settings.database_url).close()
    child = WorkerChild(
        database_url=settings.database_url,
        config=config,
        log_level="debug" if log_level == "trace" else log_level,
    )

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    terminated: int | None = None
    try:
        child.start()
        yield child
    except _Terminated as exc:
        terminated = exc.signum
    finally:
        signal.signal(signal.SIGTERM, previous)
        child.stop(stop_timeout)
    if terminated is not None:
        signal.signal(terminated, signal.SIG_DFL)
        os.kill(os.getpid(), terminated)

"""``bastion worker``: deliver queued actions to the configured webhooks, build requested
pdata tables and open queued safety vouchers; and the child worker process ``bastion serve``
runs beside the web server (web workers never run schedulers).

Exit codes: 0 stopped normally, 2 bad configuration or unreachable database.
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
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bastion.config import ConfigError, Settings

if TYPE_CHECKING:
    from bastion.actions.worker import BuildLoop, VoucherLoop
    from bastion.housekeeping import Housekeeping
    from bastion.store import Store
    from bastion.store.exchanges import ExchangeLoop
    from bastion.store.feeds import FeedVersioner

err = Console(stderr=True)
log = logging.getLogger("bastion.worker")


def check_worker_settings(settings: Settings) -> float:
    """Validate the webhook targets and outbox settings (ConfigError otherwise) and return how
    long a graceful stop may take: the longest delivery timeout."""
    from bastion.actions.targets import load_targets
    from bastion.actions.worker import WorkerConfig

    targets = load_targets(settings)
    WorkerConfig.from_settings(settings, targets)
    return targets.max_timeout


def worker(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="BASTION_DATABASE_URL",
            help="Database URL (default: SQLite in ./bastion-data/).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level (debug, info, warning).")] = "info",
    exit_with_parent: Annotated[
        bool, typer.Option("--exit-with-parent", hidden=True, help="Stop when the parent dies.")
    ] = False,
) -> None:
    """Deliver queued actions (signed webhooks), build requested pdata tables and open queued
    safety vouchers until stopped.

    Runs beside `bastion serve` (which starts one unless --no-worker) or on its own; several
    workers may share a database. SIGTERM or Ctrl-C lets deliveries in flight finish first.
    """
    from bastion.actions.outbox import Outbox
    from bastion.actions.targets import load_targets
    from bastion.actions.worker import OutboxWorker, WorkerConfig
    from bastion.store import Store, StoreError

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "httpx", "httpcore"):  # one line per request is the worker's job
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root_db = ctx.find_root().params.get("db")
    try:
        settings = Settings.load(config, database_url=db or root_db)
        targets = load_targets(settings)
        wconfig = WorkerConfig.from_settings(settings, targets)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    try:
        store = Store.open(settings.database_url)
    except StoreError as exc:
        err.print(f"[red]error:[/red] cannot open the store: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    store.use_settings_audit_keys(settings)
    settings = settings.in_data_dir(store.data_dir)
    parent = os.getppid() if exit_with_parent else None
    try:
        runner = OutboxWorker(
            Outbox.from_settings(store, settings), targets, wconfig, parent_pid=parent
        )
        builds = _build_loop(store, settings, runner.worker_id)
        chores = _housekeeping(store, settings, runner.worker_id)
        exchanges = _exchange_loop(store, settings, runner.worker_id)
        versions = _feed_versioner(store, settings, runner.worker_id)
        vouchers = voucher_loop(store, settings, runner.worker_id)
        if once:
            done = runner.run_once()
            c = runner.counts
            err.print(
                f"{done} attempted: {c.delivered} delivered, {c.retried} to retry, {c.dead} dead"
            )
            while builds is not None and builds.run_once() is not None:
                pass
            if builds is not None and builds.built + builds.failed:
                err.print(f"pdata builds: {builds.built} done, {builds.failed} failed")
            if chores is not None:
                chores.run_once()
                err.print(f"evidence purged: {chores.purged}, reports run: {chores.reported}")
            if exchanges is not None:
                synced = exchanges.run_once()
                failed = sum(1 for r in synced if r.error)
                err.print(f"exchanges synced: {len(synced)} ({failed} failed)")
            if versions is not None:
                err.print(f"feed versions signed: {len(versions.run_once())}")
            if vouchers is not None:
                err.print(f"vouchers processed: {vouchers.drain()}")
            return
        thread = None
        if builds is not None:
            thread = threading.Thread(target=builds.run, name="pdata-builds", daemon=True)
            thread.start()

        if chores is not None:
            threading.Thread(target=chores.run, name="housekeeping", daemon=True).start()
        if exchanges is not None:
            threading.Thread(target=exchanges.run, name="exchanges", daemon=True).start()
        if versions is not None:  # each version is one transaction: none is left half made
            threading.Thread(target=versions.run, name="feed-versions", daemon=True).start()
        if vouchers is not None:  # each step is one transaction: a hard stop loses nothing
            threading.Thread(target=vouchers.run, name="vouchers", daemon=True).start()

        def stop() -> None:
            runner.stop()
            for loop in (exchanges, versions, vouchers):  # an exchange sync stops between pages
                if loop is not None:
                    loop.stop()
            if builds is not None:
                builds.stop()
            if chores is not None:
                chores.stop()

        _graceful(stop)
        runner.run()
        if builds is not None and thread is not None:
            builds.stop()
            # A build in progress is not waited for: its lease runs out and a worker takes it
            # up again (the table is only published together with its job's completion).
            thread.join(5)
    finally:
        store.close()


def _build_loop(store: Store, settings: Settings, worker_id: str) -> BuildLoop | None:
    """The pdata build loop, or None (logged) if the master key cannot be loaded: deliveries
    still run, and requested builds wait for a worker that has the key."""
    from bastion.actions.worker import BuildLoop
    from bastion.crypto import MasterKey
    from bastion.psi.store import VoucherStore

    try:
        key = MasterKey.load(settings)
    except (OSError, ValueError) as exc:
        log.warning("pdata builds disabled in this worker: no master key (%s)", exc)
        return None
    return BuildLoop(VoucherStore(store, key, settings), worker_id=f"{worker_id}:pdata")


def voucher_loop(store: Store, settings: Settings, worker_id: str) -> VoucherLoop | None:
    """The queued-voucher loop, or None (logged) without the master key: vouchers then wait in
    the queue for a worker that has it. It uses the server's own wiring (a Runtime: bank index,
    policy, review), so an opening reaches review exactly as the server would hand it over."""
    from bastion.actions.worker import VoucherLoop
    from bastion.api.app import Runtime
    from bastion.api.vouchers import voucher_verifier
    from bastion.store import StoreError

    try:
        rt = Runtime(settings, store)
    except (OSError, ValueError, StoreError) as exc:
        log.warning("voucher processing disabled in this worker: %s", exc)
        return None
    rt.policy.on_reload = None  # the server audits edits of the policy file; once is enough

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
        poll=max(0.05, float(settings.voucher_queue_poll_seconds)),
        worker_id=f"{worker_id}:vouchers",
    )


def _housekeeping(store: Store, settings: Settings, worker_id: str) -> Housekeeping | None:
    """Evidence purges and due reports, or None (logged) without the master key: deliveries
    still run."""
    from bastion.crypto import MasterKey
    from bastion.housekeeping import Housekeeping

    try:
        key = MasterKey.load(settings)
    except (OSError, ValueError) as exc:
        log.warning("evidence purges and reports disabled in this worker: no master key (%s)", exc)
        return None
    return Housekeeping(store, key, settings, worker_id=f"{worker_id}:chores")


def _exchange_loop(store: Store, settings: Settings, worker_id: str) -> ExchangeLoop | None:
    """The exchange sync and feedback loop. Without the master key, exchanges that need no
    credentials still sync (the others record that the key is missing)."""
    from bastion.crypto import MasterKey
    from bastion.store import StoreError
    from bastion.store.exchanges import ExchangeLoop, ExchangeStore

    try:
        key: MasterKey | None = MasterKey.load(settings)
    except (OSError, ValueError) as exc:
        log.warning(
            "exchanges with credentials cannot sync in this worker: no master key (%s)", exc
        )
        key = None
    try:
        return ExchangeLoop(ExchangeStore(store, key, settings), worker_id=f"{worker_id}:exchanges")
    except StoreError as exc:
        log.warning("exchange syncs disabled in this worker: %s", exc)
        return None


def _feed_versioner(store: Store, settings: Settings, worker_id: str) -> FeedVersioner | None:
    """Signs new versions of published feeds; None (logged) without the master key, which
    seals the feed signing key."""
    from bastion.store.feeds import FeedVersioner

    return FeedVersioner.from_settings(store, settings, f"{worker_id}:feeds")


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
    from bastion.store import Store, StoreError

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

"""The worker process's periodic duties beside webhook delivery and pdata builds: purge evidence
whose retention ran out, purge contact events past theirs, and send mandatory reports that are
due.

Like the outbox, they run only in ``bastion worker`` (or the child ``bastion serve`` starts),
never in web workers. Several workers may run them at once: purges are conditional updates and
reports are leased, so nothing is done twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bastion.config import Settings
from bastion.contact.store import ContactStore
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.reports.ncmec import CyberTiplineClient
from bastion.reports.reporter import Reporter
from bastion.reports.store import ReportStore
from bastion.store import StoreError
from bastion.vault.store import Vault

log = logging.getLogger("bastion.worker")


class Housekeeping:
    """Runs each duty when it is due; :meth:`run_once` is one pass (what ``--once`` and tests
    call), :meth:`run` loops until :meth:`stop`."""

    def __init__(
        self,
        vault: Vault,
        reports: ReportStore,
        settings: Settings,
        *,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
        contact: Callable[[], ContactStore] | None = None,
    ) -> None:
        self.settings = settings
        #: Builds the contact store for a purge (with the policy's risk settings at that time).
        self.contact = contact
        self.contact_every = float(settings.contact_purge_interval_seconds)
        self._next_contact_purge = float("-inf")
        self.contact_purged = 0
        self.vault = vault
        self.reports = reports
        self.worker_id = worker_id
        self.purge_every = float(settings.vault_purge_interval_seconds)
        self.report_every = float(settings.report_poll_seconds)
        self._clock = clock
        self._next_purge = self._next_report = float("-inf")
        self.stop_event = threading.Event()
        self.purged = 0
        self.reported = 0

    @classmethod
    def for_store(
        cls,
        store: Store,
        master_key: MasterKey,
        settings: Settings,
        *,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> Housekeeping:
        """Over services of its own (the worker passes its runtime's instead)."""
        vault = Vault.from_settings(store, master_key, settings)
        reports = ReportStore(store, master_key, settings=settings, vault=vault)
        return cls(vault, reports, settings, worker_id=worker_id, clock=clock)

    def stop(self) -> None:
        self.stop_event.set()

    def run_once(self) -> None:
        now = self._clock()
        if now >= self._next_purge:
            self._next_purge = now + self.purge_every
            purged = self.vault.purge_expired()
            self.purged += purged
            if purged:
                log.info("vault: purged %d expired item(s)", purged)
            # Flood protection's per-minute match counts older than the hour it looks back.
            self.vault.store.purge_match_counts()
        if self.contact is not None and self.contact_every > 0 and now >= self._next_contact_purge:
            self._next_contact_purge = now + self.contact_every
            purged = self.contact().purge_expired()
            self.contact_purged += purged
            if purged:
                log.info("contact: purged %d expired event(s)", purged)
        if now >= self._next_report:
            self._next_report = now + self.report_every
            self.reported += len(self._send_due_reports())

    def _send_due_reports(self) -> list[object]:
        creds = self.reports.credentials()
        if creds is None:
            return []  # nothing can be sent; drafts wait (the console says why)
        try:
            client = CyberTiplineClient(
                creds.url, creds.username, creds.password, timeout=self.settings.ncmec_timeout
            )
        except ValueError as exc:
            # A URL the client refuses (plain http off loopback): say so on every report that
            # waits, where the console and the API show it, not only in this log.
            log.warning("reports not sent: %s", exc)
            self.reports.hold_unsendable(f"not sent: {exc}")
            return []
        with client:
            return list(Reporter(self.reports, client, worker_id=self.worker_id).run_due())

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except StoreError as exc:
                log.warning("housekeeping: database unavailable: %s", exc)
            except Exception:
                log.exception("housekeeping: unexpected error")
            self.stop_event.wait(1.0)

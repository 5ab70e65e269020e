"""The worker's back-scan loop: re-match the stored signals when banks have grown, and open
the backlog's cases at the set rate."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.backscan.intake import drain
from bastion.backscan.rematch import RematchReport, rematch
from bastion.backscan.store import BackscanStore

if TYPE_CHECKING:
    from bastion.runtime import Runtime

log = logging.getLogger("bastion.backscan")


@dataclass
class Pass:
    rematched: RematchReport | None = None
    opened: dict[str, int] = field(default_factory=dict)


class RematchLoop:
    """Every ``every`` seconds: re-match if any stored signal set is behind the banks' revision,
    then drain the backlog. Several workers may run it: each finding opens one case."""

    def __init__(self, rt: Runtime, *, every: float) -> None:
        self.rt = rt
        self.every = every
        self._stop = threading.Event()

    def run_once(self) -> Pass:
        out = Pass()
        store = BackscanStore(self.rt.store)
        behind = [
            d for d in store.datasets() if d.matched_revision < self.rt.store.current_revision()
        ]
        if behind or not store.datasets():
            report = rematch(self.rt)
            if report.new_entries:
                out.rematched = report
                log.info("re-matched stored signals: %s", report.as_dict())
        out.opened = drain(self.rt)
        return out

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bad pass is logged and retried; it must not stop the worker
                log.exception("back-scan loop pass failed")
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()

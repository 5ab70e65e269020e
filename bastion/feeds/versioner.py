"""The worker's feed duty: sign a new version of every feed whose banks changed."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from bastion.crypto import MasterKey
from bastion.feeds.store import FeedStore, FeedVersion
from bastion.store import StoreError

if TYPE_CHECKING:
    from bastion.db import Store

log = logging.getLogger("bastion.feeds")


class FeedVersioner:
    """The worker's duty: sign a new version of every feed whose banks changed, every
    ``feed_version_seconds``. Cheap when nothing changed (one indexed probe per feed)."""

    def __init__(self, feeds: FeedStore, *, every: float = 5.0, worker_id: str = "worker") -> None:
        self.feeds = feeds
        self.every = max(0.1, float(every))
        self.worker_id = worker_id
        self.stop_event = threading.Event()
        self.made = 0

    @classmethod
    def from_settings(cls, store: Store, settings: Any, worker_id: str) -> FeedVersioner | None:
        """None (logged) without the master key: the feed key cannot sign without it."""
        try:
            key = MasterKey.load(settings)
        except (OSError, ValueError) as exc:
            log.warning("feed versions disabled in this worker: no master key (%s)", exc)
            return None
        every = float(getattr(settings, "feed_version_seconds", 5.0))
        return cls(FeedStore(store, key, settings), every=every, worker_id=worker_id)

    def run_once(self) -> list[FeedVersion]:
        made = self.feeds.publish_due(actor=f"system:{self.worker_id}")
        for v in made:
            log.info(
                "feed %s: version %d (root %s, %d records)", v.feed, v.version, v.root, v.count
            )
        self.made += len(made)
        return made

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except StoreError as exc:
                log.warning("feed versions: %s", exc)
            except Exception:
                log.exception("feed versions: unexpected error")
            self.stop_event.wait(self.every)

    def stop(self) -> None:
        self.stop_event.set()


__all__ = ["FeedVersioner"]

"""The stored risk bands the contact decision reads, kept in memory.

``POST /v1/contact/decide`` sits on the platform's send path, so it never reads the database
per call. :class:`RiskBands` holds the accounts whose stored band (``contact_risk``, written by
the event intake) is above ``low``: a small share of the accounts known, whatever their number.
Every other account, known or not, is ``low``. It reloads when the intake has committed more
events or rebuilt its projections (``contact_state``), at most once per ``interval`` seconds, so
a band is at most about a second old.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from bastion.contact.model import RISK_BANDS, RiskBand
from bastion.contact.rows import ContactRiskRow, ContactStateRow

if TYPE_CHECKING:
    from bastion.store.engine import Database

log = logging.getLogger("bastion.contact")

_STATE_ID = 1


class RiskBands:
    """Account -> stored risk band above ``low``, reloaded when the stored risk changes."""

    def __init__(
        self,
        db: Database,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._bands: Mapping[str, RiskBand] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked: float | None = None
        self.last_error: str | None = None

    def due(self) -> bool:
        """Whether :meth:`refresh` should run before the next answer."""
        return self._checked is None or self._clock() - self._checked >= self.interval

    def expire(self) -> None:
        """Make the next :meth:`due` true (after the policy's bands changed, and in tests)."""
        self._checked = None

    def band(self, account: str) -> RiskBand:
        return self._bands.get(account, "low")

    def __len__(self) -> int:
        return len(self._bands)

    def refresh(self) -> None:
        """Reload if the stored risk changed. A database error keeps the bands held (and says
        so in ``last_error`` and the log): decisions go on with the last known bands."""
        with self._lock:
            if not self.due():
                return
            self._checked = self._clock()
            try:
                with self._db.engine.connect() as conn:
                    row = conn.execute(
                        sa.select(ContactStateRow.applied_seq, ContactStateRow.generation).where(
                            ContactStateRow.id == _STATE_ID
                        )
                    ).first()
                    stamp = (int(row[0]), int(row[1])) if row is not None else (0, 0)
                    if stamp == self._stamp:
                        return
                    rows = conn.execute(
                        sa.select(ContactRiskRow.account, ContactRiskRow.band).where(
                            ContactRiskRow.band != "low"
                        )
                    ).all()
            except SQLAlchemyError as exc:
                if self.last_error is None:
                    log.warning("cannot read stored risk bands: %s", type(exc).__name__)
                self.last_error = type(exc).__name__
                return
            self._bands = {a: b for a, b in rows if b in RISK_BANDS}
            self._stamp = stamp
            self.last_error = None

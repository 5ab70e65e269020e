"""The whole store: :class:`Store` composes the core (:class:`~bastion.store.engine.Database`,
with the audit log) and the domains' store parts. Importing this module imports every domain's
tables, so ``Base.metadata`` is complete (Alembic and the schema tests read it from here)."""

from __future__ import annotations

import bastion.accounts.rows
import bastion.actions.rows
import bastion.backscan.rows
import bastion.banks.rows
import bastion.contact.rows
import bastion.exchanges.rows
import bastion.feeds.rows
import bastion.identity.rows
import bastion.psi.rows
import bastion.reports.rows
import bastion.review.rows
import bastion.scans.rows
import bastion.vault.rows  # noqa: F401
from bastion.accounts.keys import KeyOps
from bastion.banks.changes import ChangeFeed
from bastion.banks.flood import FloodOps
from bastion.banks.store import BankOps
from bastion.scans.store import ScanOps
from bastion.store.engine import Database
from bastion.store.tables import Base

__all__ = ["Base", "Store"]


class Store(BankOps, ChangeFeed, FloodOps, KeyOps, ScanOps, Database):
    """Banks and their entries, the change feed, API keys, scans and the audit log, over one
    database. Thread-safe in the way an SQLAlchemy Engine is; open once per process and share
    (:meth:`~bastion.store.engine.Database.open`). The other domains' stores (review, exchanges,
    reports, feeds, vault, accounts, vouchers) wrap it."""

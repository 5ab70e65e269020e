"""The store core: the database engine (:class:`Database`: open, migrate, transactions, the
revision counter), the audit chain, the shared bulk and paging helpers (:mod:`bastion.store.bulk`)
and the errors. Each domain keeps its own SQL beside it; the whole store is
:class:`bastion.db.Store`."""

from bastion.store.audit import append_audit
from bastion.store.audit_chain import AuditEvent
from bastion.store.engine import DEFAULT_URL, URL_ENV, Database, data_dir, database_url
from bastion.store.errors import (
    AuditKeyUnavailable,
    BankExists,
    BankNotFound,
    EntryNotFound,
    InvalidInput,
    KeyExists,
    KeyNotFound,
    ScanNotFound,
    StoreError,
    StoreUnavailable,
)

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "AuditEvent",
    "AuditKeyUnavailable",
    "BankExists",
    "BankNotFound",
    "Database",
    "EntryNotFound",
    "InvalidInput",
    "KeyExists",
    "KeyNotFound",
    "ScanNotFound",
    "StoreError",
    "StoreUnavailable",
    "append_audit",
    "data_dir",
    "database_url",
]

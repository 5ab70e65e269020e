"""Persistence: banks and entries in SQLite or PostgreSQL, schema managed by Alembic."""

from bastion.store.errors import (
    AuditKeyUnavailable,
    BankExists,
    BankNotFound,
    EntryNotFound,
    ImportAborted,
    InvalidInput,
    KeyExists,
    KeyNotFound,
    ScanNotFound,
    StoreError,
    StoreUnavailable,
)
from bastion.store.store import (
    DEFAULT_URL,
    URL_ENV,
    AuditEvent,
    EntryChange,
    ImportReport,
    ScanRecord,
    Store,
    append_audit,
    database_url,
)

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "AuditEvent",
    "AuditKeyUnavailable",
    "BankExists",
    "BankNotFound",
    "EntryChange",
    "EntryNotFound",
    "ImportAborted",
    "ImportReport",
    "InvalidInput",
    "KeyExists",
    "KeyNotFound",
    "ScanNotFound",
    "ScanRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "append_audit",
    "database_url",
]

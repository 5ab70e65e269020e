"""Persistence: banks and entries in SQLite or PostgreSQL, schema managed by Alembic."""

from bastion.store.store import (
    DEFAULT_URL,
    URL_ENV,
    BankExists,
    BankNotFound,
    EntryChange,
    EntryNotFound,
    ImportAborted,
    ImportReport,
    InvalidInput,
    Store,
    StoreError,
    StoreUnavailable,
    database_url,
)

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "BankExists",
    "BankNotFound",
    "EntryChange",
    "EntryNotFound",
    "ImportAborted",
    "ImportReport",
    "InvalidInput",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "database_url",
]

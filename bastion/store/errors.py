"""The store's exceptions: one family (:class:`StoreError`), each message meant for the person
running the command."""

from __future__ import annotations


class StoreError(Exception):
    """Base for store errors; the message is meant for the person running the command."""


class BankNotFound(StoreError):
    pass


class BankExists(StoreError):
    pass


class EntryNotFound(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The database cannot be opened: a malformed URL, an unreachable or refusing server, an
    unwritable SQLite file, or a schema from a newer Bastion. Passwords are never in the
    message."""


class InvalidInput(StoreError, ValueError):
    """A bank name, field or reference that fails validation."""


class KeyNotFound(StoreError):
    pass


class KeyExists(StoreError):
    pass


class ScanNotFound(StoreError):
    pass


class AuditKeyUnavailable(StoreError):
    """The audit key file is missing where the log needs it, unreadable, not private, belongs to
    another log, or lacks the key the log is chained under. Appends refuse rather than write a
    record that could not be verified (docs/audit.md)."""

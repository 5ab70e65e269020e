"""The change feed the in-memory index follows: every entry change is numbered by the store
revision it was written at (:meth:`ChangeFeed.changes_page`), and a fresh index loads from
:meth:`ChangeFeed.iter_index_entries`."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Text,
    cast,
    select,
)

from bastion.banks.model import (
    EntryChange,
    IndexEntry,
)
from bastion.banks.sql import SIGNAL_TYPES, banks_t, entries_t, tomb_t
from bastion.signals.base import SignalType
from bastion.store.bulk import keyset_page
from bastion.store.engine import Database
from bastion.store.errors import (
    InvalidInput,
)
from bastion.store.tables import state_t

#: What the in-memory index needs of an entry, in IndexEntry field order. Labels are read as text
#: and parsed only when non-empty: the JSON type's per-row decoding costs more than the rest.
_INDEX_COLUMNS = (
    entries_t.c.id,
    banks_t.c.name,
    entries_t.c.signal_type,
    entries_t.c.value,
    entries_t.c.url_match,
    entries_t.c.external_id,
    cast(entries_t.c.labels, Text),
)


def _to_index_entry(r: Sequence[Any]) -> IndexEntry:
    i, bank, st, value, um, ext, labels = r[: len(_INDEX_COLUMNS)]
    parsed = json.loads(labels) if labels and labels != "[]" else []
    return IndexEntry(i, bank, SIGNAL_TYPES[st], value, um or None, ext, parsed)


class ChangeFeed(Database):
    """Entries as the index needs them, and their changes by revision (a part of
    :class:`bastion.db.Store`)."""

    def iter_index_entries(
        self,
        *,
        banks: Sequence[str] | None = None,
        signal_types: Sequence[SignalType | str] | None = None,
        batch: int = 50_000,
    ) -> Iterator[IndexEntry]:
        """Stream what the matcher needs of every enabled entry of every enabled bank.

        Selects seven columns instead of the whole row: loading a 1M-entry bank into the index
        is bound by row decoding, and dates and metadata are never needed there.
        """
        stmt = (
            select(*_INDEX_COLUMNS)
            .join(banks_t, banks_t.c.id == entries_t.c.bank_id)
            .where(entries_t.c.enabled.is_(True), banks_t.c.enabled.is_(True))
            .order_by(entries_t.c.id)
        )
        if banks is not None:
            stmt = stmt.where(banks_t.c.name.in_([str(b).lower() for b in banks]))
        if signal_types is not None:
            stmt = stmt.where(entries_t.c.signal_type.in_([str(t) for t in signal_types]))
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            for row in result:
                yield _to_index_entry(row)

    def changes_since(self, revision: int) -> tuple[list[EntryChange], int]:
        """Entry changes after ``revision``, oldest first, and the revision to ask from next.

        To build an index: note ``current_revision()``, load ``iter_entries()``, then apply
        ``changes_since(noted)`` (applying a change twice is harmless). Every change numbered up
        to the returned revision has been committed, so none is ever skipped.

        Holds every change in memory at once: a long-running index should page through
        :meth:`changes_page` instead.
        """
        upto = self.current_revision()
        changes: list[EntryChange] = []
        cursor: int | tuple[int, int] | None = revision
        while cursor is not None:
            page, cursor = self.changes_page(cursor, upto=upto)
            changes += page
        return changes, max(upto, revision)

    def changes_page(
        self,
        after: int | tuple[int, int],
        *,
        limit: int = 10_000,
        upto: int | None = None,
    ) -> tuple[list[EntryChange], tuple[int, int] | None]:
        """At most ``limit`` changes strictly after ``after``, oldest first, and the cursor to ask
        from next (None once none are left).

        Changes are ordered by ``(revision, entry id)``: one import batch or bank rename shares a
        revision, so the cursor is that pair, and an int ``after`` means "after every change of
        that revision". ``upto`` caps the revision read: pass ``current_revision()`` noted once
        before the first page, so every page stops at the same committed point (everything at or
        below it is committed, whatever commits meanwhile) and the caller may then record ``upto``
        as applied. Only the columns an index needs are read, so a page's memory is bounded.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        rev, after_id = (after, None) if isinstance(after, int) else after
        with self.engine.connect() as conn:
            if upto is None:
                upto = int(conn.execute(select(state_t.c.revision)).scalar_one())
            if rev >= upto and (after_id is None or rev > upto):
                return [], None
            entry_rows = keyset_page(
                conn,
                select(
                    *_INDEX_COLUMNS,
                    entries_t.c.revision,
                    entries_t.c.enabled,
                    banks_t.c.enabled,
                ).join(banks_t, banks_t.c.id == entries_t.c.bank_id),
                (entries_t.c.revision, entries_t.c.id),
                (rev, after_id, upto, limit),
            )
            tomb_rows = keyset_page(
                conn,
                select(
                    tomb_t.c.entry_id,
                    tomb_t.c.bank_name,
                    tomb_t.c.signal_type,
                    tomb_t.c.value,
                    tomb_t.c.revision,
                ),
                (tomb_t.c.revision, tomb_t.c.entry_id),
                (rev, after_id, upto, limit),
            )
        types = SIGNAL_TYPES
        changes = []
        for row in entry_rows:
            entry = _to_index_entry(row)
            revision, enabled, bank_enabled = row[len(_INDEX_COLUMNS) :]
            changes.append(
                EntryChange(
                    entry_id=entry.id,
                    bank=entry.bank,
                    signal_type=entry.signal_type,
                    value=entry.value,
                    revision=revision,
                    active=bool(enabled) and bool(bank_enabled),
                    entry=entry,
                )
            )
        changes += [
            EntryChange(
                entry_id=i,
                bank=bank,
                signal_type=types[st],
                value=value,
                revision=r,
                active=False,
                entry=None,
            )
            for i, bank, st, value, r in typing.cast("list[tuple[Any, ...]]", tomb_rows)
        ]
        # Each query returned its own first ``limit``; the merged first ``limit`` is among them.
        # An id is never both live and a tombstone (ids are never reused), so keys are unique.
        changes.sort(key=lambda c: (c.revision, c.entry_id))
        if len(changes) < limit:
            return changes, None
        del changes[limit:]
        return changes, (changes[-1].revision, changes[-1].entry_id)

"""Banks and their entries in the database: :class:`BankOps`, the bank half of
:class:`bastion.db.Store` (create, rename, enable, import, export, find, disable, remove)."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    SQLAlchemyError,
)

from bastion.banks.errors import ImportAborted
from bastion.banks.formats import BankFormat, ParseError, parse, write
from bastion.banks.model import (
    Bank,
    BankEntry,
    ImportReport,
    NewEntry,
    normalize_entry,
    utcnow,
    validate_bank_kind,
    validate_bank_name,
    validate_expected_rate,
    validate_thresholds,
    validate_value,
)
from bastion.banks.sql import (
    bank_fields,
    banks_t,
    copy_rows,
    entries_t,
    entry_row,
    entry_select,
    executemany_rows,
    find_bank,
    require_bank,
    to_entry,
    tombstone,
    touch_bank,
    value_hash,
)
from bastion.signals.base import SignalType
from bastion.store.audit import append_audit_values, append_if, maybe_audit
from bastion.store.bulk import storable
from bastion.store.engine import Database
from bastion.store.errors import BankExists, EntryNotFound, InvalidInput, StoreError


def _format(fmt: BankFormat | str) -> BankFormat:
    try:
        return BankFormat(str(fmt).strip().lower())
    except ValueError:
        valid = ", ".join(f.value for f in BankFormat)
        raise InvalidInput(f"unknown bank file format {fmt!r} (expected one of: {valid})") from None


def _bank_name(name: str) -> str:
    try:
        return validate_bank_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _resolve(conn: Connection, bank_row: Row[Any], ref: int | str) -> list[int]:
    """Entry ids in the bank named by ``ref``: an id, an external id, or a value."""
    base = select(entries_t.c.id).where(entries_t.c.bank_id == bank_row.id)
    if isinstance(ref, int) and not isinstance(ref, bool):
        ids = _by_id(conn, base, ref)
    elif isinstance(ref, str) and ref.strip():
        ids = []
        if storable(ref):
            ids = list(conn.execute(base.where(entries_t.c.external_id == ref.strip())).scalars())
        if not ids:
            hashes = _value_hashes(ref, list(SignalType))
            if hashes:
                ids = list(conn.execute(base.where(entries_t.c.value_hash.in_(hashes))).scalars())
        if not ids and ref.strip().isdigit():
            ids = _by_id(conn, base, int(ref))
    else:
        raise InvalidInput(f"an entry reference must be an id, external id or value, not {ref!r}")
    if not ids:
        raise EntryNotFound(
            f"bank {bank_row.name!r} has no entry with id, external id or value {ref!r}"
        )
    return ids


def _by_id(conn: Connection, base: Select[Any], entry_id: int) -> list[int]:
    if not 0 < entry_id < 2**63:  # outside BIGINT: cannot be an id, and would be a DB error
        return []
    return list(conn.execute(base.where(entries_t.c.id == entry_id)).scalars())


def _value_hashes(value: str, types: Iterable[SignalType]) -> list[str]:
    """Hashes of every canonical form ``value`` takes among ``types`` (skipping invalid ones)."""
    out: set[str] = set()
    for st in types:
        for url_match in ("url", "prefix", "domain") if st is SignalType.URL else (None,):
            try:
                out.add(value_hash(validate_value(st, value, url_match)))
            except (ValueError, ImportError):
                continue
    return sorted(out)


def _to_bank(r: Row[Any], entry_count: int | None = None) -> Bank:
    m = r._mapping
    return Bank(
        id=m[banks_t.c.id],
        name=m[banks_t.c.name],
        description=m[banks_t.c.description],
        labels=list(m[banks_t.c.labels] or []),
        source=m[banks_t.c.source],
        enabled=bool(m[banks_t.c.enabled]),
        is_demo=bool(m[banks_t.c.is_demo]),
        created_at=m[banks_t.c.created_at],
        updated_at=m[banks_t.c.updated_at],
        version=m[banks_t.c.version],
        entry_count=entry_count,
        kind=m[banks_t.c.kind],
        thresholds=dict(m[banks_t.c.thresholds] or {}),
        expected_rate=m[banks_t.c.expected_rate],
    )


def hygiene_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The bank-hygiene settings among ``fields`` (kind, thresholds, expected_rate), checked."""
    out: dict[str, Any] = {}
    try:
        if "kind" in fields:
            out["kind"] = validate_bank_kind(fields["kind"])
        if "thresholds" in fields:
            out["thresholds"] = validate_thresholds(fields["thresholds"])
        if "expected_rate" in fields:
            out["expected_rate"] = validate_expected_rate(fields["expected_rate"])
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return out


class BankOps(Database):
    """Banks and their entries (a part of :class:`bastion.db.Store`)."""

    def create_bank(
        self,
        name: str,
        *,
        description: str = "",
        labels: Iterable[str] = (),
        source: str = "",
        is_demo: bool = False,
        enabled: bool = True,
        kind: str = "block",
        thresholds: dict[str, int] | None = None,
        expected_rate: int | None = None,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> Bank:
        """Create a bank. With ``actor``, a ``bank.create`` audit event is written in the same
        transaction (as for every bank change below that takes an actor)."""
        name = _bank_name(name)
        fields = bank_fields({"description": description, "labels": list(labels), "source": source})
        fields.update(
            hygiene_fields(
                {"kind": kind, "thresholds": thresholds or {}, "expected_rate": expected_rate}
            )
        )
        audit = maybe_audit(
            actor,
            "bank.create",
            name,
            {
                "labels": fields["labels"],
                "source": fields["source"],
                "enabled": enabled,
                "is_demo": is_demo,
                "kind": fields["kind"],
                "thresholds": fields["thresholds"],
                "expected_rate": fields["expected_rate"],
            },
            remote_addr,
        )
        now = utcnow()
        try:
            with self.write() as (conn, _rev):
                if find_bank(conn, name) is not None:
                    raise BankExists(f"bank {name!r} already exists")
                conn.execute(
                    insert(banks_t).values(
                        name=name,
                        enabled=enabled,
                        is_demo=is_demo,
                        version=1,
                        created_at=now,
                        updated_at=now,
                        **fields,
                    )
                )
                append_if(conn, audit)
        except IntegrityError:
            raise BankExists(f"bank {name!r} already exists") from None
        self.__dict__.pop("_rules_cache", None)  # FloodOps.search_rules: read them again
        return self.get_bank(name)

    def get_bank(self, name: str) -> Bank:
        with self.engine.connect() as conn:
            return _to_bank(require_bank(conn, name))

    def list_banks(self) -> list[Bank]:
        """All banks by name, each with ``entry_count`` filled."""
        counts = (
            select(entries_t.c.bank_id, func.count().label("n"))
            .group_by(entries_t.c.bank_id)
            .subquery()
        )
        stmt = (
            select(banks_t, func.coalesce(counts.c.n, 0).label("entry_count"))
            .outerjoin(counts, counts.c.bank_id == banks_t.c.id)
            .order_by(banks_t.c.name)
        )
        with self.engine.connect() as conn:
            return [_to_bank(r, r.entry_count) for r in conn.execute(stmt)]

    def bank_labels(self) -> dict[str, list[str]]:
        """Each bank's labels: a read of the banks table alone (no entry counts), cheap enough
        for the scan path."""
        with self.engine.connect() as conn:
            return {
                r.name: list(r.labels or ())
                for r in conn.execute(select(banks_t.c.name, banks_t.c.labels))
            }

    def update_bank(
        self,
        name: str,
        /,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
        **fields: Any,
    ) -> Bank:
        """Change any of name (a rename), description, labels, source, enabled, is_demo, and
        the hygiene settings kind, thresholds and expected_rate. With ``actor``, audited
        (``bank.update``, the fields as details) in the same transaction."""
        allowed = {"name", "description", "labels", "source", "enabled", "is_demo"}
        allowed |= {"kind", "thresholds", "expected_rate"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise InvalidInput(f"cannot update bank field(s): {', '.join(unknown)}")
        values = bank_fields(
            {k: v for k, v in fields.items() if k in ("description", "labels", "source")}
        )
        values.update(hygiene_fields(fields))
        for flag in ("enabled", "is_demo"):
            if flag in fields:
                if not isinstance(fields[flag], bool):
                    raise InvalidInput(f"{flag} must be true or false")
                values[flag] = fields[flag]
        new_name = _bank_name(fields["name"]) if "name" in fields else None
        changed = {**values, **({"name": new_name} if new_name is not None else {})}
        audit = maybe_audit(actor, "bank.update", str(name), changed, remote_addr)
        with self.write() as (conn, rev):
            row = require_bank(conn, name)
            if new_name is not None and new_name != row.name:
                if find_bank(conn, new_name) is not None:
                    raise BankExists(f"bank {new_name!r} already exists")
                values["name"] = new_name
            touch_bank(conn, row.id, **values)
            # Entries carry their bank's name and enabled state to replicas: renumber them.
            if "name" in values or values.get("enabled", row.enabled) != row.enabled:
                conn.execute(
                    update(entries_t).where(entries_t.c.bank_id == row.id).values(revision=rev)
                )
            final = values.get("name", row.name)
            if audit is not None:
                append_audit_values(conn, {**audit, "target": row.name})
        self.__dict__.pop("_rules_cache", None)  # FloodOps.search_rules: read them again
        return self.get_bank(final)

    def set_bank_enabled(
        self, name: str, enabled: bool, *, actor: str | None = None, remote_addr: str | None = None
    ) -> Bank:
        return self.update_bank(name, enabled=enabled, actor=actor, remote_addr=remote_addr)

    def delete_bank(
        self, name: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> None:
        """Delete a bank and all its entries (leaving tombstones for replicas). With ``actor``,
        audited (``bank.delete``, with the number of entries) in the same transaction."""
        audit = maybe_audit(actor, "bank.delete", str(name), None, remote_addr)
        with self.write() as (conn, rev):
            row = require_bank(conn, name)
            tombstone(conn, entries_t.c.bank_id == row.id, rev)
            gone = conn.execute(delete(entries_t).where(entries_t.c.bank_id == row.id)).rowcount
            conn.execute(delete(banks_t).where(banks_t.c.id == row.id))
            if audit is not None:
                append_audit_values(
                    conn, {**audit, "target": row.name, "detail": {"entries": gone}}
                )

    def add_entries(
        self,
        bank: str,
        entries: Iterable[NewEntry | ParseError],
        *,
        batch_size: int = 5000,
        max_errors: int = 100,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> ImportReport:
        """Validate and add entries, ``batch_size`` per transaction.

        An entry identical in (signal type, value, url_match) to one already in the bank, or
        earlier in the stream, counts as a duplicate and is skipped. A bad entry is reported and
        skipped. ParseErrors in the stream are reported as they are. If the stream raises,
        earlier batches stay committed and :class:`ImportAborted` carries the report. With
        ``actor``, every transaction that adds entries also records ``bank.entries.add`` (how
        many it added), so each committed batch is audited with it.
        """
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        name = self.get_bank(bank).name
        audit = maybe_audit(actor, "bank.entries.add", name, None, remote_addr)
        report = ImportReport(max_errors=max_errors)
        batch: list[NewEntry] = []
        try:
            for number, item in enumerate(entries, 1):
                if isinstance(item, ParseError):
                    report.add_error(str(item))
                    continue
                try:
                    batch.append(normalize_entry(item))
                except (ValueError, TypeError, AttributeError, OverflowError) as exc:
                    report.add_error(f"entry {number}: {exc}")
                except RecursionError:
                    report.add_error(f"entry {number}: nested too deeply")
                    continue
                if len(batch) >= batch_size:
                    self._insert_batch(name, batch, report, audit)
                    batch = []
            if batch:
                self._insert_batch(name, batch, report, audit)
        except StoreError:
            raise
        except (OSError, SQLAlchemyError, UnicodeError, RuntimeError) as exc:
            raise ImportAborted(
                f"import into bank {name!r} stopped after {report.added} added entries "
                f"(earlier batches are kept): {exc}",
                report,
            ) from exc
        return report

    def _insert_batch(
        self,
        bank: str,
        batch: list[NewEntry],
        report: ImportReport,
        audit: dict[str, Any] | None = None,
    ) -> None:
        unique: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        for e in batch:
            row = entry_row(e)
            key = (row[0], row[2], row[4])  # signal_type, value_hash, url_match
            if key in unique:
                report.duplicates += 1
            else:
                unique[key] = row
        try:
            with self.write() as (conn, rev):
                self._insert_rows(conn, bank, rev, unique, report, audit)
        except (IntegrityError, DataError):
            # Validation should have caught everything the database rejects; if not, find the
            # offending rows one by one rather than lose the batch.
            for key, row in unique.items():
                try:
                    with self.write() as (conn, rev):
                        self._insert_rows(conn, bank, rev, {key: row}, report, audit)
                except (IntegrityError, DataError) as exc:
                    report.add_error(
                        f"{row[0]} {row[1][:40]!r}: database rejected the "
                        f"entry: {getattr(exc, 'orig', exc)}"
                    )
        report.batches += 1

    @staticmethod
    def _insert_rows(
        conn: Connection,
        bank: str,
        rev: int,
        rows: dict[tuple[str, str, str], tuple[Any, ...]],
        report: ImportReport,
        audit: dict[str, Any] | None = None,
    ) -> None:
        """Insert ``rows`` (from :func:`entry_row`) skipping values the bank already holds.

        The rows go to the driver as plain tuples, converted here once per batch rather than per
        row by SQLAlchemy's type machinery (which cost more than the insert itself): PostgreSQL
        takes them by ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT
        DO NOTHING``, SQLite by one ``executemany``. ON CONFLICT DO NOTHING lets the unique index
        find duplicates: no read-then-write race, and no reliance on planner statistics that lag
        behind a table growing mid-import.
        """
        bank_row = require_bank(conn, bank)
        if rows:
            if conn.dialect.name == "postgresql":
                copy_rows(conn, bank_row.id, rev, rows.values())
            else:
                executemany_rows(conn, bank_row.id, rev, rows.values())
        # The rows this transaction inserted are exactly those carrying its revision (RETURNING
        # would say the same but makes PostgreSQL bulk inserts several times slower).
        added = conn.execute(
            select(func.count()).select_from(entries_t).where(entries_t.c.revision == rev)
        ).scalar_one()
        if added:
            touch_bank(conn, bank_row.id)
            if audit is not None:
                detail = {"added": added, "duplicates": len(rows) - added, "revision": rev}
                append_audit_values(conn, {**audit, "detail": detail})
        report.added += added
        report.duplicates += len(rows) - added

    def import_file(
        self,
        bank: str,
        source: str | os.PathLike[str] | IO[str] | IO[bytes],
        fmt: BankFormat | str | None = None,
        *,
        batch_size: int = 5000,
        max_errors: int = 100,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> ImportReport:
        """Parse a bank file (path or open stream) and add its entries; see :meth:`add_entries`.
        Per-line problems are collected as ``line N: message``."""
        audited = {"actor": actor, "remote_addr": remote_addr}
        self.get_bank(bank)  # fail before reading anything
        fmt = _format(fmt) if fmt is not None else None
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if path.is_dir():
                raise InvalidInput(f"cannot import {str(path)!r}: it is a directory")
            try:
                fh = path.open("rb")
            except OSError as exc:
                raise InvalidInput(
                    f"cannot read {str(path)!r}: {exc.strerror or type(exc).__name__}"
                ) from None
            with fh:
                return self.add_entries(
                    bank, parse(fh, fmt), batch_size=batch_size, max_errors=max_errors, **audited
                )
        return self.add_entries(
            bank, parse(source, fmt), batch_size=batch_size, max_errors=max_errors, **audited
        )

    def export(
        self,
        bank: str,
        fmt: BankFormat | str,
        out: IO[str],
        *,
        include_disabled: bool = False,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> int:
        """Write a bank's entries to ``out``; returns the count. Disabled entries are left out
        unless asked for (the formats have no column for the enabled flag). With ``actor``, the
        export is audited (``bank.export``) before any value is read out.

        Everything that can be checked is checked before the first byte is written: the bank, the
        format, that a pytx export loses nothing (it cannot say a url entry matches by prefix or
        domain: :class:`InvalidInput`), and that the entry query runs.
        """
        fmt = _format(fmt)
        name = self.get_bank(bank).name
        if fmt is BankFormat.PYTX:
            stmt = (
                select(func.count())
                .select_from(entries_t)
                .join(banks_t, banks_t.c.id == entries_t.c.bank_id)
                .where(
                    banks_t.c.name == name,
                    entries_t.c.signal_type == SignalType.URL.value,
                    entries_t.c.url_match.in_(["prefix", "domain"]),
                )
            )
            if not include_disabled:
                stmt = stmt.where(entries_t.c.enabled.is_(True))
            with self.engine.connect() as conn:
                lossy = conn.execute(stmt).scalar_one()
            if lossy:
                raise InvalidInput(
                    f"bank {name!r} has {lossy} url entries matching by prefix or domain, which "
                    "the pytx format cannot express (they would re-import as exact URLs); "
                    "export as csv or jsonl"
                )
        if actor is not None:
            detail = {"format": fmt.value, "include_disabled": include_disabled}
            self.record_audit(
                actor=actor,
                action="bank.export",
                target=name,
                detail=detail,
                remote_addr=remote_addr,
            )
        entries = self._iter(
            banks=[name], entries_enabled=not include_disabled, banks_enabled=False
        )
        try:
            first = next(entries, None)  # run the query before writing a header
            return write(chain([first], entries) if first is not None else (), fmt, out)
        finally:
            entries.close()

    def iter_entries(
        self,
        *,
        banks: Sequence[str] | None = None,
        enabled_only: bool = True,
        signal_types: Sequence[SignalType | str] | None = None,
        batch: int = 10000,
    ) -> Iterator[BankEntry]:
        """Stream entries in id order without loading them all (server-side cursor on
        PostgreSQL). ``enabled_only`` keeps enabled entries of enabled banks."""
        return self._iter(
            banks=banks,
            entries_enabled=enabled_only,
            banks_enabled=enabled_only,
            signal_types=signal_types,
            batch=batch,
        )

    def _iter(
        self,
        *,
        banks: Sequence[str] | None,
        entries_enabled: bool,
        banks_enabled: bool,
        signal_types: Sequence[SignalType | str] | None = None,
        batch: int = 10000,
    ) -> Generator[BankEntry]:
        stmt = entry_select().order_by(entries_t.c.id)
        if banks is not None:
            stmt = stmt.where(banks_t.c.name.in_([str(b).lower() for b in banks]))
        if entries_enabled:
            stmt = stmt.where(entries_t.c.enabled.is_(True))
        if banks_enabled:
            stmt = stmt.where(banks_t.c.enabled.is_(True))
        if signal_types is not None:
            stmt = stmt.where(entries_t.c.signal_type.in_([str(t) for t in signal_types]))
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            for row in result:
                yield to_entry(row)

    def list_entries(self, bank: str, *, after: int = 0, limit: int = 100) -> list[BankEntry]:
        """One page of a bank's entries (enabled or not) in id order, after id ``after``."""
        bank_row = self.get_bank(bank)
        if after >= 2**63 - 1:  # no id is larger; and past BIGINT the query would be a DB error
            return []
        stmt = (
            entry_select()
            .where(banks_t.c.name == bank_row.name, entries_t.c.id > after)
            .order_by(entries_t.c.id)
            .limit(max(1, min(limit, 10_000)))
        )
        with self.engine.connect() as conn:
            return [to_entry(r) for r in conn.execute(stmt)]

    def get_entry(self, entry_id: int) -> BankEntry:
        row = None
        if isinstance(entry_id, int) and 0 < entry_id < 2**63:
            with self.engine.connect() as conn:
                row = conn.execute(entry_select().where(entries_t.c.id == entry_id)).first()
        if row is None:
            raise EntryNotFound(f"no bank entry with id {entry_id}")
        return to_entry(row)

    def find_entries(
        self,
        bank: str,
        *,
        external_id: str | None = None,
        value: str | None = None,
        signal_type: SignalType | str | None = None,
    ) -> list[BankEntry]:
        """Entries of ``bank`` matching all the given criteria (the value in any signal type it
        is valid for, unless ``signal_type`` says which)."""
        with self.engine.connect() as conn:
            bank_row = require_bank(conn, bank)
            stmt = entry_select().where(entries_t.c.bank_id == bank_row.id)
            if external_id is not None:
                if not storable(str(external_id)):  # stored external ids never are
                    return []
                stmt = stmt.where(entries_t.c.external_id == str(external_id))
            if signal_type is not None:
                stmt = stmt.where(entries_t.c.signal_type == str(SignalType(signal_type)))
            if value is not None:
                types = [SignalType(signal_type)] if signal_type is not None else list(SignalType)
                hashes = _value_hashes(value, types)
                if not hashes:
                    return []
                stmt = stmt.where(entries_t.c.value_hash.in_(hashes))
            return [to_entry(r) for r in conn.execute(stmt.order_by(entries_t.c.id))]

    def disable_entry(
        self,
        bank: str,
        entry_ref: int | str,
        reason: str = "",
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        """Disable the entries ``entry_ref`` names (id, external id, or value); returns them.
        With ``actor``, audited (``bank.entry.disable``) in the same transaction."""
        return self._set_enabled(bank, entry_ref, False, reason, actor, remote_addr)

    def enable_entry(
        self,
        bank: str,
        entry_ref: int | str,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        return self._set_enabled(bank, entry_ref, True, "", actor, remote_addr)

    def _set_enabled(
        self,
        bank: str,
        entry_ref: int | str,
        enabled: bool,
        reason: str,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        if not isinstance(reason, str) or len(reason) > 2000 or "\x00" in reason:
            raise InvalidInput("reason must be text of at most 2000 characters")
        action = "bank.entry.enable" if enabled else "bank.entry.disable"
        audit = maybe_audit(actor, action, f"{bank}/{entry_ref}", None, remote_addr)
        with self.write() as (conn, rev):
            bank_row = require_bank(conn, bank)
            ids = _resolve(conn, bank_row, entry_ref)
            conn.execute(
                update(entries_t)
                .where(entries_t.c.id.in_(ids))
                .values(enabled=enabled, disabled_reason=reason, revision=rev, updated_at=utcnow())
            )
            touch_bank(conn, bank_row.id)
            rows = conn.execute(entry_select().where(entries_t.c.id.in_(ids))).all()
            if audit is not None:
                detail: dict[str, Any] = {"entries": sorted(ids)}
                if not enabled:
                    detail["reason"] = reason
                append_audit_values(conn, {**audit, "detail": detail})
        return [to_entry(r) for r in rows]

    def remove_entry(
        self,
        bank: str,
        entry_ref: int | str,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        """Delete the entries ``entry_ref`` names; returns what they were. With ``actor``,
        audited (``bank.entry.delete``) in the same transaction."""
        audit = maybe_audit(actor, "bank.entry.delete", f"{bank}/{entry_ref}", None, remote_addr)
        with self.write() as (conn, rev):
            bank_row = require_bank(conn, bank)
            ids = _resolve(conn, bank_row, entry_ref)
            rows = conn.execute(entry_select().where(entries_t.c.id.in_(ids))).all()
            tombstone(conn, entries_t.c.id.in_(ids), rev)
            conn.execute(delete(entries_t).where(entries_t.c.id.in_(ids)))
            touch_bank(conn, bank_row.id)
            if audit is not None:
                append_audit_values(conn, {**audit, "detail": {"entries": sorted(ids)}})
        return [to_entry(r) for r in rows]

"""The exchange registry: each exchange's settings, its sealed credentials and the bank it
feeds, read and changed in audited transactions. Opening an exchange unseals its credentials
with the master key and hands it the host's :class:`~bastion.exchanges.base.ExchangeContext`."""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import Connection, CursorResult, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bastion.banks.model import BankEntry, validate_bank_name
from bastion.banks.sql import bank_fields, banks_t, entries_t, entry_select, to_entry
from bastion.crypto import CryptoError, seal, unseal
from bastion.exchanges.base import Exchange, OnDelete, exchange_type
from bastion.exchanges.model import (
    MAX_CHECKPOINT,
    MAX_KEY,
    TOTALS,
    ExchangeInfo,
    chunks,
)
from bastion.exchanges.rows import ex_t
from bastion.store.audit import append_audit
from bastion.store.bulk import json_doc, storable
from bastion.store.errors import InvalidInput, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from bastion.exchanges.store import ExchangeStore

_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_UPDATABLE = frozenset(
    {
        "config",
        "interval",
        "on_delete",
        "vouch_group",
        "min_vouchers",
        "send_feedback",
        "enabled",
        "checkpoint",
    }
)


class ExchangeNotFound(StoreError):
    pass


class ExchangeExists(StoreError):
    pass


class ExchangeBusy(StoreError):
    """Another worker holds the exchange's lease (a sync is running)."""


@contextmanager
def database_errors() -> Iterator[None]:
    """Database failures as :class:`StoreUnavailable` (store errors pass through)."""
    try:
        yield
    except StoreError:
        raise
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        raise StoreUnavailable(f"exchange database error: {first}") from exc


def new_id(result: CursorResult[Any]) -> int:
    """The id of the row an INSERT made."""
    pk = result.inserted_primary_key
    assert pk is not None, "not an INSERT"
    return int(pk[0])


def good_key(key: str) -> bool:
    """Whether ``key`` can be a record key (``external_id``) as given."""
    return 0 < len(key) <= MAX_KEY and key.strip() == key and storable(key)


def page_limit(limit: object, most: int = 1000) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInput(f"limit must be a whole number from 1 to {most}, not {limit!r}")
    return limit


def _cred_aad(name: str) -> bytes:
    return b"exchange-credentials:" + name.encode("utf-8")


def _exchange_name(name: object) -> str:
    try:
        return validate_bank_name(name)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidInput(str(exc).replace("bank name", "exchange name")) from None


def _pydantic_message(what: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return f"invalid {what}: " + "; ".join(parts)


def exchange_kind(kind: str) -> type[Exchange]:
    try:
        return exchange_type(str(kind).strip().lower())
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def exchange_config(cls: type[Exchange], config: dict[str, Any] | None) -> dict[str, Any]:
    if config is not None and not isinstance(config, dict):
        raise InvalidInput("config must be a JSON object")
    try:
        model = cls.Config.model_validate(config or {})
    except ValidationError as exc:
        raise InvalidInput(_pydantic_message(f"{cls.kind} config", exc)) from None
    doc: dict[str, Any] = json_doc("config", model.model_dump(mode="json"), dict, 64 * 1024)
    return doc


def _interval(value: object) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"interval must be a number of seconds, not {value!r}") from None
    if not 1 <= seconds <= 366 * 86400:
        raise InvalidInput("interval must be between 1 second and a year")
    return seconds


def _on_delete(value: object) -> str:
    try:
        return OnDelete(str(value).strip().lower()).value
    except ValueError:
        raise InvalidInput(f"on_delete must be disable or remove, not {value!r}") from None


def _group(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _GROUP_RE.match(value.strip().lower()):
        raise InvalidInput(
            f"invalid vouch group {value!r}: use 1-64 letters, digits, '_', '.' or '-'"
        )
    return value.strip().lower()


def check_identity(
    conn: Connection,
    cls: type[Exchange],
    config: dict[str, Any],
    group: str | None,
    *,
    other_than: int | None = None,
) -> None:
    """Refuse a second exchange of one vouch group backed by the same source (two
    subscriptions to one publisher key would otherwise count as two vouchers)."""
    if group is None:
        return
    mine = cls.vouch_identity(cls.Config.model_validate(config))
    if mine is None:
        return
    peers = conn.execute(
        select(ex_t.c.id, ex_t.c.name, ex_t.c.kind, ex_t.c.config).where(
            ex_t.c.vouch_group == group
        )
    ).all()
    for peer in peers:
        if peer.id == other_than:
            continue
        try:
            peer_cls = exchange_type(peer.kind)
            theirs = peer_cls.vouch_identity(peer_cls.Config.model_validate(peer.config))
        except (ValueError, ValidationError):
            continue
        if theirs == mine:
            raise InvalidInput(
                f"exchange {peer.name!r} of vouch group {group!r} already vouches as "
                f"{mine}: one source cannot vouch twice"
            )


def _min_vouchers(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise InvalidInput(f"min_vouchers must be a whole number from 1 to 100, not {value!r}")
    return value


def _flag(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false")
    return value


class ExchangeRegistry:
    """Adding, changing, listing, opening and removing exchanges of an :class:`ExchangeStore`."""

    def __init__(self, xs: ExchangeStore) -> None:
        self.xs = xs

    def row(self, conn: Connection, name: str, *, lock: bool = False) -> Row[Any]:
        if not isinstance(name, str) or not storable(name):
            raise ExchangeNotFound(f"no exchange named {name!r}")
        stmt = (
            select(ex_t, banks_t.c.name.label("bank_name"))
            .join(banks_t, banks_t.c.id == ex_t.c.bank_id)
            .where(ex_t.c.name == name.strip().lower())
        )
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=ex_t)
        row = conn.execute(stmt).first()
        if row is None:
            raise ExchangeNotFound(f"no exchange named {name!r}")
        return row

    @staticmethod
    def info(r: Row[Any]) -> ExchangeInfo:
        totals = {k: int((r.totals or {}).get(k, 0)) for k in TOTALS}
        return ExchangeInfo(
            name=r.name,
            kind=r.kind,
            bank=r.bank_name,
            enabled=bool(r.enabled),
            config=dict(r.config or {}),
            has_credentials=r.credentials is not None,
            interval_seconds=float(r.interval_seconds),
            on_delete=r.on_delete,
            vouch_group=r.vouch_group,
            min_vouchers=int(r.min_vouchers),
            send_feedback=bool(r.send_feedback),
            checkpoint=dict(r.checkpoint) if r.checkpoint is not None else None,
            state=r.state,
            last_sync_at=r.last_sync_at,
            last_success_at=r.last_success_at,
            next_sync_at=r.next_sync_at,
            last_error=r.last_error,
            failures=int(r.failures),
            totals=totals,
            created_at=r.created_at,
            updated_at=r.updated_at,
            lease_holder=r.lease_holder,
            lease_until=r.lease_until,
            poison_attempts=int(r.poison_attempts),
        )

    def seal(self, name: str, cls: type[Exchange], credentials: dict[str, Any]) -> bytes:
        if cls.Credentials is None:
            raise InvalidInput(f"{cls.kind} exchanges take no credentials")
        if not isinstance(credentials, dict):
            raise InvalidInput("credentials must be a JSON object")
        try:
            model = cls.Credentials.model_validate(credentials)
        except ValidationError as exc:
            raise InvalidInput(_pydantic_message("credentials", exc)) from None
        if self.xs.master_key is None:
            raise InvalidInput(
                "cannot store credentials: no master key (set secret_key or secret_key_file)"
            )
        blob = json.dumps(model.model_dump(mode="json"), separators=(",", ":")).encode()
        return seal(self.xs.master_key, blob, _cred_aad(name))

    def add(
        self,
        name: str,
        kind: str,
        *,
        bank: str | None = None,
        config: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        interval: float | None = None,
        on_delete: str | None = None,
        vouch_group: str | None = None,
        min_vouchers: int = 1,
        send_feedback: bool = True,
        enabled: bool = True,
        labels: Sequence[str] = (),
        actor: str = "system",
    ) -> ExchangeInfo:
        """Configure an exchange feeding ``bank`` (default: the exchange's name), created with
        ``labels`` when missing. A bank already fed by another exchange is refused."""
        name = _exchange_name(name)
        cls = exchange_kind(kind)
        conf = exchange_config(cls, config)
        seconds = _interval(cls.default_interval if interval is None else interval)
        delete_mode = _on_delete(cls.on_delete.value if on_delete is None else on_delete)
        group = _group(vouch_group)
        minimum = _min_vouchers(min_vouchers)
        _flag("send_feedback", send_feedback)
        _flag("enabled", enabled)
        bank_name = _exchange_name(bank if bank is not None else name)
        sealed = self.seal(name, cls, credentials) if credentials is not None else None
        bank_values = bank_fields({"labels": list(labels), "source": f"exchange:{name}"[:255]})
        now = self.xs.clock()
        try:
            with database_errors(), self.xs.store.write() as (conn, _rev):
                if conn.execute(select(ex_t.c.id).where(ex_t.c.name == name)).first():
                    raise ExchangeExists(f"an exchange named {name!r} already exists")
                bank_row = conn.execute(
                    select(banks_t.c.id).where(banks_t.c.name == bank_name)
                ).first()
                if bank_row is None:
                    bank_id = new_id(
                        conn.execute(
                            insert(banks_t).values(
                                name=bank_name,
                                description=f"Kept in sync by exchange {name} ({cls.kind}).",
                                enabled=True,
                                is_demo=False,
                                version=1,
                                created_at=now,
                                updated_at=now,
                                **bank_values,
                            )
                        )
                    )
                else:
                    bank_id = bank_row.id
                    owner = conn.execute(
                        select(ex_t.c.name).where(ex_t.c.bank_id == bank_id)
                    ).scalar()
                    if owner is not None:
                        raise ExchangeExists(
                            f"bank {bank_name!r} is already fed by exchange {owner!r}"
                        )
                check_identity(conn, cls, conf, group)
                conn.execute(
                    insert(ex_t).values(
                        name=name,
                        kind=cls.kind,
                        bank_id=bank_id,
                        config=conf,
                        credentials=sealed,
                        enabled=enabled,
                        interval_seconds=seconds,
                        on_delete=delete_mode,
                        vouch_group=group,
                        min_vouchers=minimum,
                        send_feedback=send_feedback,
                        checkpoint=None,
                        state="idle",
                        failures=0,
                        poison_attempts=0,
                        next_sync_at=now if enabled else None,
                        totals=dict.fromkeys(TOTALS, 0),
                        created_at=now,
                        updated_at=now,
                    )
                )
                append_audit(
                    conn,
                    actor=actor,
                    action="exchange.add",
                    target=name,
                    detail={
                        "kind": cls.kind,
                        "bank": bank_name,
                        "bank_created": bank_row is None,
                        "config": conf,
                        "credentials": sealed is not None,
                        "vouch_group": group,
                        "min_vouchers": minimum,
                    },
                )
        except IntegrityError:
            raise ExchangeExists(
                f"an exchange named {name!r} or one feeding bank {bank_name!r} already exists"
            ) from None
        return self.get(name)

    def get(self, name: str) -> ExchangeInfo:
        with database_errors(), self.xs.store.engine.connect() as conn:
            return self.info(self.row(conn, name))

    def list(self) -> builtins.list[ExchangeInfo]:
        stmt = (
            select(ex_t, banks_t.c.name.label("bank_name"))
            .join(banks_t, banks_t.c.id == ex_t.c.bank_id)
            .order_by(ex_t.c.name)
        )
        with database_errors(), self.xs.store.engine.connect() as conn:
            return [self.info(r) for r in conn.execute(stmt)]

    def update(self, name: str, *, actor: str = "system", **fields: Any) -> ExchangeInfo:
        """Change any of config, interval, on_delete, vouch_group, min_vouchers,
        send_feedback, enabled, checkpoint (None: start again from the beginning). A changed
        config, checkpoint or re-enabling makes the exchange due now and clears its error."""
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise InvalidInput(f"cannot update exchange field(s): {', '.join(unknown)}")
        with database_errors(), self.xs.store.write() as (conn, rev):
            row = self.row(conn, name, lock=True)
            cls = exchange_kind(row.kind)
            values: dict[str, Any] = {}
            if "config" in fields:
                values["config"] = exchange_config(cls, fields["config"])
            if "interval" in fields:
                values["interval_seconds"] = _interval(fields["interval"])
            if "on_delete" in fields:
                values["on_delete"] = _on_delete(fields["on_delete"])
            if "vouch_group" in fields:
                values["vouch_group"] = _group(fields["vouch_group"])
            if "min_vouchers" in fields:
                values["min_vouchers"] = _min_vouchers(fields["min_vouchers"])
            if "send_feedback" in fields:
                values["send_feedback"] = _flag("send_feedback", fields["send_feedback"])
            if "enabled" in fields:
                values["enabled"] = _flag("enabled", fields["enabled"])
            if "checkpoint" in fields:
                cp = fields["checkpoint"]
                values["checkpoint"] = (
                    None if cp is None else json_doc("checkpoint", cp, dict, MAX_CHECKPOINT)
                )
                values["poison_attempts"] = 0
            now = self.xs.clock()
            restart = (
                "config" in values
                or "checkpoint" in values
                or (values.get("enabled") and not row.enabled)
            )
            if restart:
                values.update(next_sync_at=now, failures=0, last_error=None)
                if row.state in ("error", "stalled"):
                    values["state"] = "idle"
            if values.get("enabled") is False:
                values["next_sync_at"] = None
            if "config" in values or "vouch_group" in values:
                check_identity(
                    conn,
                    cls,
                    values.get("config", row.config),
                    values.get("vouch_group", row.vouch_group),
                    other_than=row.id,
                )
            values["updated_at"] = now
            conn.execute(update(ex_t).where(ex_t.c.id == row.id).values(**values))
            if "vouch_group" in values or "min_vouchers" in values:
                # The old group first: leaving it re-enables held-back entries, which the new
                # group then holds back again as it needs.
                new_group = values.get("vouch_group", row.vouch_group)
                if row.vouch_group and row.vouch_group != new_group:
                    self.xs.vouching.revouch_banks(
                        conn, rev, row.vouch_group, extra_bank=row.bank_id
                    )
                if new_group:
                    self.xs.vouching.revouch_banks(conn, rev, new_group, extra_bank=row.bank_id)
            shown = {k: v for k, v in values.items() if k not in ("updated_at",)}
            append_audit(
                conn,
                actor=actor,
                action="exchange.update",
                target=row.name,
                detail=json.loads(json.dumps(shown, default=str)),
            )
        return self.get(row.name)

    def set_credentials(
        self, name: str, credentials: dict[str, Any], *, actor: str = "system"
    ) -> None:
        """Replace the exchange's credentials (stored sealed; never shown). Makes it due now."""
        with database_errors(), self.xs.store.begin_write() as conn:
            row = self.row(conn, name, lock=True)
            sealed = self.seal(row.name, exchange_kind(row.kind), credentials)
            now = self.xs.clock()
            values: dict[str, Any] = {
                "credentials": sealed,
                "updated_at": now,
                "failures": 0,
                "last_error": None,
            }
            if row.enabled:
                values["next_sync_at"] = now
            if row.state == "error":
                values["state"] = "idle"
            conn.execute(update(ex_t).where(ex_t.c.id == row.id).values(**values))
            append_audit(
                conn,
                actor=actor,
                action="exchange.credentials",
                target=row.name,
                detail={"fields": sorted(credentials)},
            )

    def remove(self, name: str, *, actor: str = "system") -> None:
        """Delete the exchange, its history and queued feedback; its bank and entries stay."""
        with database_errors(), self.xs.store.write() as (conn, rev):
            row = self.row(conn, name, lock=True)
            conn.execute(delete(ex_t).where(ex_t.c.id == row.id))
            if row.vouch_group:
                self.xs.vouching.revouch_banks(conn, rev, row.vouch_group, extra_bank=row.bank_id)
            append_audit(
                conn,
                actor=actor,
                action="exchange.remove",
                target=row.name,
                detail={"kind": row.kind, "bank": row.bank_name},
            )

    def request_sync(self, name: str, *, actor: str = "system") -> ExchangeInfo:
        """Make the exchange due now; a worker syncs it (web requests never do)."""
        with database_errors(), self.xs.store.begin_write() as conn:
            row = self.row(conn, name)
            now = self.xs.clock()
            conn.execute(
                update(ex_t).where(ex_t.c.id == row.id).values(next_sync_at=now, updated_at=now)
            )
            append_audit(conn, actor=actor, action="exchange.sync.request", target=row.name)
        return self.get(row.name)

    def open(self, name: str) -> Exchange:
        """An instance of the exchange with its config, unsealed credentials and context."""
        with database_errors(), self.xs.store.engine.connect() as conn:
            row = self.row(conn, name)
        return self.open_row(row)

    def open_row(self, row: Row[Any]) -> Exchange:
        cls = exchange_kind(row.kind)
        try:
            config = cls.Config.model_validate(row.config or {})
        except ValidationError as exc:
            raise InvalidInput(_pydantic_message(f"stored {cls.kind} config", exc)) from None
        creds = None
        if row.credentials is not None:
            if self.xs.master_key is None:
                raise InvalidInput(
                    f"exchange {row.name!r} has credentials but there is no master key to open "
                    "them (set secret_key or secret_key_file)"
                )
            if cls.Credentials is None:
                raise InvalidInput(f"{cls.kind} exchanges take no credentials")
            try:
                data = json.loads(unseal(self.xs.master_key, row.credentials, _cred_aad(row.name)))
                creds = cls.Credentials.model_validate(data)
            except (CryptoError, ValueError) as exc:
                kind = type(exc).__name__
                raise InvalidInput(
                    f"exchange {row.name!r}: stored credentials do not open ({kind}); set them "
                    "again"
                ) from None
        return cls(config, creds, replace(self.xs.context(), held=partial(self.held, row.id)))

    def held(self, xid: int, keys: Sequence[str]) -> dict[str, builtins.list[BankEntry]]:
        """The entries exchange ``xid``'s bank holds under each of ``keys`` (its
        ``ExchangeContext.held``): what the pages applied so far left, read between pages."""
        wanted = [k for k in dict.fromkeys(keys) if isinstance(k, str) and good_key(k)]
        out: dict[str, builtins.list[BankEntry]] = {}
        bank = select(ex_t.c.bank_id).where(ex_t.c.id == xid).scalar_subquery()
        with database_errors(), self.xs.store.engine.connect() as conn:
            for chunk in chunks(wanted):
                stmt = entry_select().where(
                    entries_t.c.bank_id == bank, entries_t.c.external_id.in_(list(chunk))
                )
                for r in conn.execute(stmt):
                    entry = to_entry(r)
                    out.setdefault(str(entry.external_id), []).append(entry)
        return out

    def latest(self, name: str, table: Any, limit: int) -> tuple[str, Sequence[Any]]:
        """The exchange's canonical name and its newest ``limit`` rows of a history table."""
        with database_errors(), self.xs.store.engine.connect() as conn:
            row = self.row(conn, name)
            rows = conn.execute(
                select(table)
                .where(table.c.exchange_id == row.id)
                .order_by(table.c.id.desc())
                .limit(page_limit(limit))
            ).all()
        return str(row.name), rows

"""Attestations: what a partner says its whole list is (a signed root over a version), checked
against our copy of it after the page that carried it, and recorded either way; a mismatch is
audited and logged."""

from __future__ import annotations

import builtins
import json
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, insert, select

from bastion.banks.sql import banks_t
from bastion.exchanges.base import Attestation, Exchange
from bastion.exchanges.model import AttestationRecord, clip
from bastion.exchanges.registry import database_errors
from bastion.exchanges.rows import att_t, ex_t
from bastion.store.audit import append_audit
from bastion.store.bulk import json_doc

if TYPE_CHECKING:
    from bastion.exchanges.store import ExchangeStore

log = logging.getLogger("bastion.exchanges")


class Attestations:
    """Checks and records partners' attestations of an :class:`ExchangeStore`."""

    def __init__(self, xs: ExchangeStore) -> None:
        self.xs = xs

    def attestations(self, name: str, *, limit: int = 20) -> builtins.list[AttestationRecord]:
        _, rows = self.xs.registry.latest(name, att_t, limit)
        return [
            AttestationRecord(
                r.id,
                r.at,
                r.version,
                r.root,
                r.computed,
                r._mapping["count"],  # r.count is also the tuple method
                bool(r.agrees),
                dict(r.detail or {}),
            )
            for r in rows
        ]

    def attest(self, row: Row[Any], exchange: Exchange, att: Attestation) -> None:
        """Stream the bank's entries to the exchange and record whether they agree."""
        try:
            bank = self.bank_name(row.id)
            entries = self.xs.store.iter_entries(banks=[bank], enabled_only=False)
            computed = exchange.verify_state(att, entries)
            error = None
        except Exception as exc:  # a failed check is a disagreement, recorded as such
            computed, error = None, clip(f"{type(exc).__name__}: {exc}", 500)
        agrees = computed is not None and computed == att.root
        detail = json_doc(
            "detail", json.loads(json.dumps(dict(att.detail), default=str)), dict, 65536
        )
        if error:
            detail["error"] = error
        now = self.xs.clock()
        with database_errors(), self.xs.store.begin_write() as conn:
            conn.execute(
                insert(att_t).values(
                    exchange_id=row.id,
                    at=now,
                    version=int(att.version),
                    root=clip(att.root, 255),
                    computed=None if computed is None else clip(computed, 255),
                    count=int(att.count),
                    agrees=agrees,
                    detail=detail,
                )
            )
            if not agrees:
                append_audit(
                    conn,
                    actor="system",
                    action="exchange.attestation.mismatch",
                    target=row.name,
                    detail={
                        "version": int(att.version),
                        "expected": clip(att.root, 255),
                        "computed": None if computed is None else clip(computed, 255),
                        "error": error,
                    },
                )
        if not agrees:
            log.warning(
                "exchange %s: our copy does not match the partner's attestation for version %s",
                row.name,
                att.version,
            )

    def bank_name(self, xid: int) -> str:
        with self.xs.store.engine.connect() as conn:
            return str(
                conn.execute(
                    select(banks_t.c.name)
                    .join(ex_t, ex_t.c.bank_id == banks_t.c.id)
                    .where(ex_t.c.id == xid)
                ).scalar_one()
            )

"""Stored scans: :class:`ScanOps`, the scan half of :class:`bastion.db.Store`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Row,
    insert,
    select,
)

from bastion.banks.model import (
    utcnow,
)
from bastion.scans.model import ScanRecord
from bastion.scans.rows import ScanRow
from bastion.store.bulk import json_doc, paging, short_text
from bastion.store.engine import Database
from bastion.store.errors import (
    ScanNotFound,
)

scans_t = ScanRow.__table__
_MAX_SCAN_JSON = 16 * 1024 * 1024


def _to_scan(r: Row[Any]) -> ScanRecord:
    return ScanRecord(
        id=r.id,
        at=r.at,
        actor=r.actor,
        content_kind=r.content_kind,
        context=dict(r.context or {}),
        signals=list(r.signals or ()),
        matches=list(r.matches or ()),
        verdict=r.verdict,
    )


class ScanOps(Database):
    """Scan records (a part of :class:`bastion.db.Store`)."""

    def record_scan(
        self,
        *,
        actor: str,
        content_kind: str,
        context: dict[str, Any],
        signals: list[dict[str, Any]],
        matches: list[dict[str, Any]],
        verdict: str,
    ) -> int:
        """Store a scan and return its id. The row is committed when this returns, so a caller
        that answers afterwards never reports a match it has not recorded."""
        values = {
            "at": utcnow(),
            "actor": short_text("actor", actor, 255, empty=False),
            "content_kind": short_text("content_kind", content_kind, 32, empty=False),
            "context": json_doc("context", context, dict, _MAX_SCAN_JSON),
            "signals": json_doc("signals", signals, list, _MAX_SCAN_JSON),
            "matches": json_doc("matches", matches, list, _MAX_SCAN_JSON),
            "verdict": short_text("verdict", verdict, 32, empty=False),
        }
        with self.engine.begin() as conn:
            key = conn.execute(insert(scans_t).values(**values)).inserted_primary_key
            assert key is not None
            return int(key[0])

    def get_scan(self, scan_id: int) -> ScanRecord:
        row = None
        if isinstance(scan_id, int) and not isinstance(scan_id, bool) and 0 < scan_id < 2**63:
            with self.engine.connect() as conn:
                row = conn.execute(select(scans_t).where(scans_t.c.id == scan_id)).first()
        if row is None:
            raise ScanNotFound(f"no scan with id {scan_id!r}")
        return _to_scan(row)

    def iter_scans(self, limit: int = 100, *, before_id: int | None = None) -> list[ScanRecord]:
        """Up to ``limit`` scans, newest first; pass the last id seen as ``before_id`` to page."""
        _, limit = paging(0, limit, 10_000)
        stmt = select(scans_t).order_by(scans_t.c.id.desc()).limit(limit)
        if before_id is not None:
            start, _ = paging(before_id, 1, 1)
            stmt = stmt.where(scans_t.c.id < start)
        with self.engine.connect() as conn:
            return [_to_scan(r) for r in conn.execute(stmt)]

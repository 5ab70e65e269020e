"""Vouch groups: exchanges whose lists must agree before an entry counts.

An entry of a group member is enabled only when at least its exchange's ``min_vouchers``
distinct exchanges of the group hold the same value; until then it is held back with the
reason :data:`~bastion.exchanges.model.AWAITING`. The page applier calls :meth:`revouch` for the
values a page touched, the registry :meth:`revouch_banks` when a member joins, leaves or changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from bastion.banks.sql import entries_t, touch_bank
from bastion.exchanges.model import AWAITING, chunks, vouches
from bastion.exchanges.rows import ex_t

if TYPE_CHECKING:
    from bastion.exchanges.store import ExchangeStore


def _vkey(row: Any) -> tuple[str, str, str]:
    m = row if isinstance(row, dict) else row._mapping
    return (m["signal_type"], m["value_hash"], m["url_match"] or "")


class VouchGroups:
    """Recomputes which entries of a vouch group's banks are enabled."""

    def __init__(self, xs: ExchangeStore) -> None:
        self.xs = xs

    def revouch(self, conn: Connection, rev: int, group: str, hashes: set[str]) -> None:
        """Enable an entry of a group member only when at least its exchange's ``min_vouchers``
        distinct exchanges of the group hold it (enabled, or held back only for vouchers, or
        disabled here but still listed upstream)."""
        members = {
            int(r.bank_id): int(r.min_vouchers)
            for r in conn.execute(
                select(ex_t.c.bank_id, ex_t.c.min_vouchers).where(ex_t.c.vouch_group == group)
            )
        }
        if not members or not hashes:
            return
        rows: list[Any] = []
        for chunk in chunks(sorted(hashes)):
            rows += conn.execute(
                select(
                    entries_t.c.id,
                    entries_t.c.bank_id,
                    entries_t.c.signal_type,
                    entries_t.c.value_hash,
                    entries_t.c.url_match,
                    entries_t.c.enabled,
                    entries_t.c.disabled_reason,
                ).where(entries_t.c.bank_id.in_(sorted(members)), entries_t.c.value_hash.in_(chunk))
            ).all()
        vouchers: dict[tuple[str, str, str], set[int]] = {}
        for r in rows:
            if vouches(r.enabled, r.disabled_reason):
                vouchers.setdefault(_vkey(r), set()).add(int(r.bank_id))
        changes: dict[tuple[bool, str], list[int]] = {}
        for r in rows:
            reason = r.disabled_reason or ""
            if not (r.enabled or reason.startswith(AWAITING)):
                continue  # removed upstream or disabled here: not ours to enable
            have, need = len(vouchers.get(_vkey(r), ())), members[int(r.bank_id)]
            want = (True, "") if have >= need else (False, f"{AWAITING} ({have} of {need})")
            if (bool(r.enabled), reason) != want:
                changes.setdefault(want, []).append(r.id)
        now = self.xs.clock()
        for (enabled, reason), ids in changes.items():
            for chunk in chunks(ids):
                conn.execute(
                    update(entries_t)
                    .where(entries_t.c.id.in_(chunk))
                    .values(enabled=enabled, disabled_reason=reason, revision=rev, updated_at=now)
                )
        for bank_id in {int(r.bank_id) for r in rows if any(r.id in v for v in changes.values())}:
            touch_bank(conn, bank_id)

    def revouch_banks(
        self, conn: Connection, rev: int, group: str, *, extra_bank: int | None = None
    ) -> None:
        """Recompute a whole group (after a member joined, left or changed ``min_vouchers``).
        A bank that left the group gets its held-back entries enabled again."""
        banks = {
            int(b)
            for b in conn.execute(
                select(ex_t.c.bank_id).where(ex_t.c.vouch_group == group)
            ).scalars()
        }
        if extra_bank is not None and extra_bank not in banks:
            now = self.xs.clock()
            res = conn.execute(
                update(entries_t)
                .where(
                    entries_t.c.bank_id == extra_bank,
                    entries_t.c.disabled_reason.startswith(AWAITING, autoescape=True),
                )
                .values(enabled=True, disabled_reason="", revision=rev, updated_at=now)
            )
            if res.rowcount:
                touch_bank(conn, extra_bank)
        if extra_bank is not None:
            banks.add(extra_bank)
        hashes: set[str] = set()
        for bank_id in banks:
            hashes |= set(
                conn.execute(
                    select(entries_t.c.value_hash).where(entries_t.c.bank_id == bank_id)
                ).scalars()
            )
        self.revouch(conn, rev, group, hashes)

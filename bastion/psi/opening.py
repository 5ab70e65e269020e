"""Threshold opening (one part of :class:`bastion.psi.store.VoucherStore`): matched shares
kept per account and epoch, a key rebuilt from t real shares, the items re-checked against the
live bank, and what opened handed to the review system."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from bastion.banks.model import utcnow
from bastion.client.field import DHF_BYTES, P_DHF, P_SHARE, SHARE_BYTES, from_bytes, to_bytes
from bastion.client.pdata import Params
from bastion.client.voucher import open_part_a, open_part_b
from bastion.crypto import seal, unseal
from bastion.psi import Row, Undecodable, dependencies, distinct_images, reconstruct
from bastion.psi.media import MEDIA_TYPE, reencode_derivative
from bastion.psi.records import MAX_DETECT_ROWS, GroupInfo, OpenedAccount, OpenedItem, Verify
from bastion.psi.tables import (
    VoucherState,
    entries_t,
    groups_t,
    items_t,
    log,
    shares_t,
    upsert_into,
)
from bastion.store.audit import append_audit
from bastion.store.errors import InvalidInput


class GroupOpening(VoucherState):
    """Shares into groups, groups forward to an opening, openings to the ``on_open`` hook."""

    def _store_shares(
        self, conn: Connection, matched: Sequence[tuple[Any, Any, Any, Any]], verify: Verify
    ) -> list[OpenedAccount]:
        when = utcnow()
        # Lock the groups in one global order, so concurrent workers cannot deadlock.
        group_keys = sorted(
            {(h.account, h.epoch, t.params.threshold, t.params.dhf_dim) for t, h, _, _ in matched}
        )
        group_ids = {}
        for account, epoch, threshold, dhf_dim in group_keys:
            grp = f"{threshold}.{dhf_dim}"
            group_ids[(account, epoch, grp)] = self._group(conn, account, epoch, grp, when)
        touched: dict[int, tuple[Params, str, str | None]] = {}
        for table, header, inner, r in matched:
            p = table.params
            group_id = group_ids[(header.account, header.epoch, f"{p.threshold}.{p.dhf_dim}")]
            conn.execute(
                insert(shares_t).values(
                    group_id=group_id,
                    table_id=table.id,
                    received_at=when,
                    x=format(inner.x, "032x"),
                    share=to_bytes(inner.share, SHARE_BYTES),
                    dhf=b"".join(to_bytes(v, DHF_BYTES) for v in inner.row),
                    part_a=inner.part_a,
                    part_b=inner.part_b,
                    state="pending",
                )
            )
            touched[group_id] = (p, r.actor, r.remote_addr)
        opened = []
        for group_id, (p, actor, remote_addr) in sorted(touched.items()):
            result = self._advance(conn, group_id, p, verify, actor, remote_addr)
            if result is not None:
                opened.append(result)
        return opened

    def _group(self, conn: Connection, account: str, epoch: int, grp: str, when: datetime) -> int:
        """The group's id; the upsert also locks its row until commit (PostgreSQL), so two
        batches for one account never run detection at once."""
        ins = upsert_into(conn, groups_t).values(
            account=account,
            epoch=epoch,
            grp=grp,
            state="collecting",
            shares=0,
            real=0,
            synthetic=0,
            verified=0,
            discarded=0,
            note="",
            updated_at=when,
        )
        stmt = ins.on_conflict_do_update(
            index_elements=["account", "epoch", "grp"], set_={"updated_at": ins.excluded.updated_at}
        ).returning(groups_t.c.id)
        return int(conn.execute(stmt).scalar_one())

    def _advance(
        self,
        conn: Connection,
        group_id: int,
        p: Params,
        verify: Verify,
        actor: str,
        remote_addr: str | None,
    ) -> OpenedAccount | None:
        """Move a group forward after new shares. Until the group opens: decode each dependency
        among its shares and keep the key only if the items it reveals, re-checked against the
        bank, cover t distinct pictures (:meth:`_decode`). Once open: classify new shares under
        the kept key and open the verified ones at once."""
        group = conn.execute(select(groups_t).where(groups_t.c.id == group_id)).one()
        shares = conn.execute(
            select(
                shares_t.c.id,
                shares_t.c.x,
                shares_t.c.share,
                shares_t.c.dhf,
                shares_t.c.part_a,
                shares_t.c.state,
            )
            .where(shares_t.c.group_id == group_id, shares_t.c.state != "discarded")
            .order_by(shares_t.c.id)
        ).all()
        aad = f"voucher-group:{group_id}".encode()
        values: dict[str, Any] = {"shares": len({s.x for s in shares})}
        first = False
        images = 0
        if group.sealed_key is not None:
            key = from_bytes(unseal(self.master_key, group.sealed_key, aad), P_SHARE)
        else:
            decoded = self._decode(conn, group, shares, p, verify, values, actor, remote_addr)
            if decoded is None:
                conn.execute(update(groups_t).where(groups_t.c.id == group_id).values(**values))
                return None
            key, images = decoded
            first = True
            values.update(
                sealed_key=seal(self.master_key, to_bytes(key, SHARE_BYTES), aad),
                state="opened",
                opened_at=utcnow(),
                note="",
            )
        bound = {"account": group.account, "epoch": group.epoch}
        # Classify: a share is real iff its part A opens under K (synthetic ones are random).
        # Part B of a real item that fails the re-check is destroyed, never kept under a key
        # the server holds.
        for s in shares:
            if s.state != "pending":
                continue
            a = open_part_a(key, int(s.x, 16), s.part_a, **bound)
            if a is not None and not verify(a[0].hex()):
                self._destroy(conn, [s.id], "unverified")
                continue
            state = "synthetic" if a is None else "verified"
            conn.execute(update(shares_t).where(shares_t.c.id == s.id).values(state=state))
        states = conn.execute(
            select(shares_t.c.x, shares_t.c.state).where(
                shares_t.c.group_id == group_id, shares_t.c.state != "discarded"
            )
        ).all()
        real = {x for x, st in states if st in ("verified", "unverified")}
        verified = {x for x, st in states if st == "verified"}
        synthetic = {x for x, st in states if st == "synthetic"} - real
        values.update(real=len(real), verified=len(verified), synthetic=len(synthetic))
        items = self._open_items(conn, group, key, verify)
        conn.execute(update(groups_t).where(groups_t.c.id == group_id).values(**values))
        if not items:
            return None
        append_audit(
            conn,
            actor=actor,
            action="voucher.open",
            target=f"account:{group.account}",
            detail={
                "epoch": group.epoch,
                "items": len(items),
                "threshold_crossed": first,
                "real": len(real),
                "verified": len(verified),
                "synthetic": len(synthetic),
                **({"images": images} if first else {}),
            },
            remote_addr=remote_addr,
        )
        return OpenedAccount(
            group.account,
            group.epoch,
            tuple(items),
            first,
            len(real),
            len(synthetic),
            len(verified),
            images,
        )

    def _decode(
        self,
        conn: Connection,
        group: Any,
        shares: Sequence[Any],
        p: Params,
        verify: Verify,
        values: dict[str, Any],
        actor: str,
        remote_addr: str | None,
    ) -> tuple[int, int] | None:
        """(K, distinct pictures) when a dependency among the group's pending shares decodes to
        a key whose items, re-checked against the live bank, cover at least t distinct pictures
        (:func:`bastion.psi.distinct_images`); else None, and K is forgotten.

        A dependency that decodes but falls short (vouchers forged in this account's name that
        carry no listed picture, bit-flipped variants of one listed hash, false positives) locks
        nothing: its vouchers that failed the re-check are discarded (parts destroyed, counted,
        audited ``voucher.discarded``), and those that passed wait for more of their kind."""
        pending = [s for s in shares if s.state == "pending"]
        rows: dict[str, Row] = {}
        for s in pending:
            if s.x not in rows:
                dhf = tuple(
                    from_bytes(s.dhf[i : i + DHF_BYTES], P_DHF)
                    for i in range(0, len(s.dhf), DHF_BYTES)
                )
                rows[s.x] = Row(s.id, int(s.x, 16), from_bytes(s.share, P_SHARE), dhf)
        if len(rows) < p.threshold or len(rows) > MAX_DETECT_ROWS:
            return None
        by_ref = {s.id: s for s in pending}
        bound = {"account": group.account, "epoch": group.epoch}
        discarded = int(group.discarded or 0)
        for dependency in dependencies(list(rows.values()), p.threshold):
            try:
                key = reconstruct(dependency, p.threshold)
            except Undecodable as exc:
                if group.note != str(exc)[:500]:
                    append_audit(
                        conn,
                        actor=actor,
                        action="voucher.undecodable",
                        target=f"account:{group.account}",
                        detail={"epoch": group.epoch, "shares": len(rows), "reason": str(exc)},
                        remote_addr=remote_addr,
                    )
                values["note"] = str(exc)[:500]
                continue
            passed: list[list[int]] = []
            failed: list[str] = []
            for row in dependency:
                a = open_part_a(key, row.x, by_ref[row.ref].part_a, **bound)
                matches = verify(a[0].hex()) if a is not None else []
                if matches:
                    passed.append([int(m["entry"]) for m in matches if "entry" in m])
                else:
                    failed.append(by_ref[row.ref].x)
            images = distinct_images(passed, self._entry_hashes(conn, passed))
            if images >= p.threshold:
                return key, images
            doomed = [s.id for s in pending if s.x in set(failed)]
            if doomed:
                self._destroy(conn, doomed, "discarded")
                discarded += len(doomed)
                values["discarded"] = discarded
                append_audit(
                    conn,
                    actor=actor,
                    action="voucher.discarded",
                    target=f"account:{group.account}",
                    detail={
                        "epoch": group.epoch,
                        "vouchers": len(doomed),
                        "decoded": len(dependency),
                        "verified": len(passed),
                        "images": images,
                        "threshold": p.threshold,
                        "reason": "decoded, but the items do not cover t distinct bank pictures",
                    },
                    remote_addr=remote_addr,
                )
        return None

    def _destroy(self, conn: Connection, share_ids: Sequence[int], state: str) -> None:
        """Mark shares ``state`` and destroy their sealed parts: what failed the bank re-check
        can then never be decrypted, by the key's holder or anyone who rebuilds the key."""
        conn.execute(
            update(shares_t)
            .where(shares_t.c.id.in_(list(share_ids)))
            .values(state=state, part_a=b"", part_b=b"")
        )

    def _entry_hashes(self, conn: Connection, items: Sequence[Sequence[int]]) -> dict[int, str]:
        """The PDQ hashes of the bank entries some verified item matched (distinct pictures)."""
        ids = sorted({e for item in items for e in item})
        if not ids:
            return {}
        rows = conn.execute(
            select(entries_t.c.id, entries_t.c.value).where(
                entries_t.c.id.in_(ids), entries_t.c.signal_type == "pdq"
            )
        ).all()
        return {int(r.id): r.value for r in rows}

    def _open_items(
        self, conn: Connection, group: Any, key: int, verify: Verify
    ) -> list[OpenedItem]:
        opened_ids = set(
            conn.execute(select(items_t.c.share_id).where(items_t.c.group_id == group.id)).scalars()
        )
        candidates = conn.execute(
            select(shares_t.c.id, shares_t.c.x, shares_t.c.part_a, shares_t.c.part_b)
            .where(shares_t.c.group_id == group.id, shares_t.c.state == "verified")
            .order_by(shares_t.c.id)
        ).all()
        out = []
        when = utcnow()
        bound = {"account": group.account, "epoch": group.epoch}
        for s in candidates:
            if s.id in opened_ids:
                continue
            x = int(s.x, 16)
            a = open_part_a(key, x, s.part_a, **bound)
            b = open_part_b(key, x, s.part_b, **bound)
            matches = verify(a[0].hex()) if a is not None else []
            if a is None or b is None or not matches:
                self._destroy(conn, [s.id], "unverified")
                continue
            pdq, quality = a[0].hex(), a[1]
            item_id, _claimed_type, raw = b
            # Whatever the client claimed, only a JPEG made here is kept (docs/e2ee.md).
            media = reencode_derivative(raw)
            media_type = MEDIA_TYPE if media else ""
            digest = hashlib.sha256(media).hexdigest()
            item_pk = conn.execute(
                insert(items_t)
                .values(
                    share_id=s.id,
                    group_id=group.id,
                    account=group.account,
                    epoch=group.epoch,
                    item_id=item_id[:512],
                    pdq=pdq,
                    quality=quality,
                    matches=matches,
                    media_type=media_type,
                    media_size=len(media),
                    media_sha256=digest,
                    sealed_media=seal(self.master_key, media, f"voucher-item:{s.id}".encode()),
                    opened_at=when,
                )
                .returning(items_t.c.id)
            ).scalar_one()
            out.append(
                OpenedItem(
                    item_pk,
                    group.account,
                    group.epoch,
                    item_id,
                    pdq,
                    quality,
                    matches,
                    media_type,
                    len(media),
                    digest,
                    when,
                    media,
                )
            )
        return out

    def _hand_off(self, opened: Sequence[OpenedAccount]) -> None:
        hook = self.on_open
        if hook is None:
            return
        for account in opened:
            try:
                hook(account)
            except Exception:
                log.exception("on_open hook failed for %s; items stay pending", account.account)
                continue
            self._mark_handed_off([i.id for i in account.items])

    def _mark_handed_off(self, item_ids: Sequence[int]) -> None:
        if not item_ids:
            return
        with self.store.begin_write() as conn:
            conn.execute(
                update(items_t)
                .where(items_t.c.id.in_(list(item_ids)))
                .values(handed_off_at=utcnow())
            )

    def pending_openings(self, limit: int = 100) -> list[OpenedAccount]:
        """Opened items the hook has not taken yet, grouped by account (with their media)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(items_t)
                .where(items_t.c.handed_off_at.is_(None))
                .order_by(items_t.c.id)
                .limit(limit)
            ).all()
        grouped: dict[tuple[str, int], list[OpenedItem]] = {}
        for r in rows:
            grouped.setdefault((r.account, r.epoch), []).append(self._item(r, with_media=True))
        return [
            OpenedAccount(acct, epoch, tuple(items), False, 0, 0, len(items))
            for (acct, epoch), items in grouped.items()
        ]

    def retry_handoffs(self, limit: int = 100) -> int:
        """Hand pending openings to ``on_open`` again; returns how many items it took."""
        pending = self.pending_openings(limit)
        self._hand_off(pending)
        return sum(len(a.items) for a in pending)

    def _item(self, r: Any, *, with_media: bool = False) -> OpenedItem:
        media = b""
        if with_media:
            media = unseal(self.master_key, r.sealed_media, f"voucher-item:{r.share_id}".encode())
        return OpenedItem(
            r.id,
            r.account,
            r.epoch,
            r.item_id,
            r.pdq,
            r.quality,
            list(r.matches or ()),
            r.media_type,
            r.media_size,
            r.media_sha256,
            r.opened_at,
            media,
        )

    def openings(self, *, account: str | None = None, limit: int = 100) -> list[OpenedItem]:
        """Opened items, newest first, without their media."""
        stmt = select(items_t).order_by(items_t.c.id.desc()).limit(max(1, min(limit, 1000)))
        if account is not None:
            stmt = stmt.where(items_t.c.account == account)
        with self.engine.connect() as conn:
            return [self._item(r) for r in conn.execute(stmt)]

    def opened_media(self, item_pk: int) -> tuple[str, bytes]:
        """(media type, derivative bytes) of an opened item, for the review system."""
        with self.engine.connect() as conn:
            r = conn.execute(select(items_t).where(items_t.c.id == item_pk)).first()
        if r is None:
            raise InvalidInput(f"no opened voucher item {item_pk}")
        return r.media_type, self._item(r, with_media=True).media

    def groups(self, account: str) -> list[GroupInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(groups_t).where(groups_t.c.account == account).order_by(groups_t.c.epoch)
            ).all()
        return [
            GroupInfo(
                r.account,
                r.epoch,
                r.state,
                r.shares,
                r.real,
                r.synthetic,
                r.verified,
                r.opened_at,
                r.note,
                r.discarded,
            )
            for r in rows
        ]

"""Account cases: behavioural risk handed to people through the review machinery.

Risk alone never acts on an account (Lantern: signals are not proof). An account whose stored
risk band is at or above the policy's ``contact.case_band`` gets an *account case* through
:meth:`bastion.review.store.CaseIntake.submit`, the same intake content cases use: one item of
kind ``account`` with the account as ``uploader_id``, no media, and a snapshot of its risk in
``signals`` (score, band, each detector's points, explanation and evidence counts), in the
policy's ``contact.case_queue`` at ``contact.case_priority``. People decide it; a confirmation
restricts the account (:mod:`bastion.pipeline`).

:class:`AccountCaseLoop` runs in the worker (never in a web worker), and is idempotent:

- an account with an active account case joins it (one active account case per account, a
  unique index); a new snapshot item is added only when the evidence grew;
- after a decision (not abusive, or confirmed) the account gets a new case only if the evidence
  grew since that case's last snapshot: a detector fired that had not, or the score rose by at
  least ``contact.case_reopen_margin`` points;
- so running it again over unchanged risk changes nothing.

It reads only risk rows updated since its last complete pass, less :data:`OVERLAP` (all of
them on its first pass and whenever the policy changes): a row's ``updated_at`` is its writer's
clock when its transaction began, so a transaction that commits after a pass can carry times
older than rows that pass saw; the overlap (far longer than any batch's transaction, and any
clock difference between processes) makes sure it is read by a later pass.

Several workers may run it at once. They never open two cases for an account (the unique
index), nor add the same evidence twice: the growth check is made again inside the intake's
transaction, which holds the account's case (locked), and a snapshot that is no longer new
evidence by then is rolled back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from bastion.contact.model import RISK_BANDS
from bastion.contact.rows import ContactAccountRow, ContactRiskRow
from bastion.policy import ContactPolicy, Policy, Verdict
from bastion.review.model import (
    ACCOUNT,
    ACCOUNT_KIND,
    RISK_SIGNAL,
    NewItem,
    Submitted,
    risk_snapshot,
)
from bastion.review.rows import CaseItemRow, CaseRow
from bastion.store.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from bastion.review.store import CaseIntake
    from bastion.store.engine import Database

__all__ = ["RISK_SOURCE", "AccountCaseLoop", "Pass", "grew", "snapshot"]

log = logging.getLogger("bastion.worker")

risk_t = ContactRiskRow.__table__
accounts_t = ContactAccountRow.__table__
cases_t = CaseRow.__table__
items_t = CaseItemRow.__table__

#: How far back of the newest ``updated_at`` it saw a pass reads again (see the module docstring).
OVERLAP = timedelta(minutes=10)
#: The ``source`` of an account case's items.
RISK_SOURCE = "contact-risk"
#: The ``rule`` an account case's verdict names (the policy setting that opened it).
CASE_RULE = "contact.case_band"
_CHUNK = 500


def snapshot(
    score: int,
    band: str,
    contributions: Iterable[Mapping[str, Any]],
    *,
    case_band: str,
    at: datetime,
) -> dict[str, Any]:
    """The risk snapshot an account item carries (see :data:`bastion.review.model.RISK_SIGNAL`):
    plain JSON, counts only, no event and no message content."""
    return {
        "type": RISK_SIGNAL,
        "score": int(score),
        "band": band,
        "case_band": case_band,
        "at": at.isoformat(),
        "contributions": [
            {
                "detector": str(c["detector"]),
                "points": int(c["points"]),
                "fired": bool(c["fired"]),
                "explanation": str(c.get("explanation", "")),
                "evidence": {str(k): int(v) for k, v in dict(c.get("evidence") or {}).items()},
            }
            for c in contributions
        ],
    }


def _fired(snap: Mapping[str, Any]) -> set[str]:
    return {
        str(c.get("detector"))
        for c in snap.get("contributions") or ()
        if isinstance(c, Mapping) and c.get("fired")
    }


def grew(previous: Mapping[str, Any] | None, current: Mapping[str, Any], margin: int) -> bool:
    """Whether ``current`` is more evidence than ``previous`` (the last snapshot the account's
    cases hold): there was none, a detector fired that had not, or the score rose by at least
    ``margin`` points."""
    if previous is None:
        return True
    if _fired(current) - _fired(previous):
        return True
    try:
        before = int(previous.get("score", 0))
    except (TypeError, ValueError):
        return True
    return int(current["score"]) >= before + margin


@dataclass
class Pass:
    """What one pass did: cases opened, cases joined with a new snapshot, accounts at or above
    the band left as they were (no new evidence), and accounts that failed (logged)."""

    opened: int = 0
    joined: int = 0
    unchanged: int = 0
    failed: int = 0


class AccountCaseLoop:
    """Opens and joins account cases from the stored risk (see the module docstring).
    ``policy`` returns the current policy; :meth:`run_once` is one pass (``bastion worker
    --once`` and tests), :meth:`run` repeats it every ``every`` seconds until :meth:`stop`."""

    def __init__(
        self,
        store: Database,
        review: CaseIntake,
        policy: Callable[[], Policy],
        *,
        every: float = 30.0,
        actor: str = "system:account-cases",
    ) -> None:
        self.store = store
        self.review = review
        self.policy = policy
        self.every = float(every)
        self.actor = actor
        self._since: datetime | None = None
        self._digest: str | None = None
        self.stop_event = threading.Event()
        self.totals = Pass()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except StoreError as exc:
                log.warning("account cases: database unavailable: %s", exc)
            except Exception:
                log.exception("account cases: unexpected error")
            self.stop_event.wait(self.every)

    def run_once(self) -> Pass:
        """One pass over the risk rows at or above the case band updated since the last
        complete pass (every row after a policy change)."""
        policy = self.policy()
        if policy.digest != self._digest:
            self._since, self._digest = None, policy.digest
        cp = policy.contact
        bands = RISK_BANDS[RISK_BANDS.index(cp.case_band) :]
        done = Pass()
        try:
            with self.store.engine.connect() as conn:
                stmt = select(
                    risk_t.c.account,
                    risk_t.c.score,
                    risk_t.c.band,
                    risk_t.c.contributions,
                    risk_t.c.updated_at,
                ).where(risk_t.c.band.in_(bands))
                if self._since is not None:
                    stmt = stmt.where(risk_t.c.updated_at >= self._since - OVERLAP)
                rows = conn.execute(stmt.order_by(risk_t.c.account)).all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"account cases: {exc}") from exc
        newest = self._since
        for chunk in _chunks(rows):
            accounts = [r.account for r in chunk]
            previous = self._latest_snapshots(accounts)
            ages = self._age_bands(accounts)
            for r in chunk:
                snap = snapshot(
                    r.score, r.band, r.contributions, case_band=cp.case_band, at=r.updated_at
                )
                if not grew(previous.get(r.account), snap, cp.case_reopen_margin):
                    done.unchanged += 1
                else:
                    try:
                        created = self._submit(cp, r.account, snap, ages.get(r.account))
                    except _NotNew:  # another worker added this evidence meanwhile
                        done.unchanged += 1
                        created = None
                    except StoreError as exc:
                        done.failed += 1
                        log.warning("account cases: %s: %s", r.account, exc)
                        continue
                    if created:
                        done.opened += 1
                    elif created is not None:
                        done.joined += 1
                if newest is None or r.updated_at > newest:
                    newest = r.updated_at
        if not done.failed:  # a failed account is looked at again next pass
            self._since = newest
        for name in ("opened", "joined", "unchanged", "failed"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(done, name))
        if done.opened or done.joined:
            log.info("account cases: %d opened, %d joined", done.opened, done.joined)
        return done

    def _submit(
        self, cp: ContactPolicy, account: str, snap: dict[str, Any], age_band: str | None
    ) -> bool:
        fired = sorted(_fired(snap))
        reason = (
            f"risk band {snap['band']} (score {snap['score']}, case band {cp.case_band}): "
            f"{', '.join(fired) or 'no detector fired'}"
        )
        verdict = Verdict(
            decision="review",
            rule=CASE_RULE,
            reason=reason,
            priority=cp.case_priority,
            queue=cp.case_queue,
            actions=(),
            view_required=False,
        )
        item = NewItem(
            kind=ACCOUNT_KIND,
            uploader_id=account,
            source=RISK_SOURCE,
            age_band=age_band,
            signals=[snap],
        )
        margin = cp.case_reopen_margin

        def still_new(conn: Connection, sub: Submitted) -> None:
            """In the intake's transaction (the account's case locked): is this snapshot still
            new evidence against the one before it? Another worker may have added it."""
            if not grew(_previous_snapshot(conn, account, sub.item_id), snap, margin):
                raise _NotNew(account)

        return self.review.submit(verdict, item, actor=self.actor, then=still_new).created

    def _latest_snapshots(self, accounts: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each account's newest snapshot in any of its account cases (active or decided).
        Found through the cases' uploader index, then each case's items (both indexed)."""
        stmt = (
            select(items_t.c.id, cases_t.c.uploader_id, items_t.c.signals)
            .join(items_t, items_t.c.case_id == cases_t.c.id)
            .where(
                cases_t.c.uploader_id.in_(list(accounts)),
                cases_t.c.subject == ACCOUNT,
                items_t.c.kind == ACCOUNT_KIND,
            )
            .order_by(items_t.c.id)
        )
        out: dict[str, dict[str, Any]] = {}
        try:
            with self.store.engine.connect() as conn:
                for row in conn.execute(stmt):
                    snap = risk_snapshot(row.signals or ())
                    if snap is not None:
                        out[row.uploader_id] = snap  # ordered by id: the newest wins
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"account cases: {exc}") from exc
        return out

    def _age_bands(self, accounts: Sequence[str]) -> dict[str, str]:
        stmt = select(accounts_t.c.account, accounts_t.c.age_band).where(
            accounts_t.c.account.in_(list(accounts))
        )
        try:
            with self.store.engine.connect() as conn:
                return {r.account: r.age_band for r in conn.execute(stmt)}
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"account cases: {exc}") from exc


class _NotNew(Exception):
    """The snapshot is no longer new evidence: its intake transaction is rolled back."""


def _previous_snapshot(conn: Connection, account: str, before: int) -> dict[str, Any] | None:
    """The account's newest snapshot in its account cases older than item ``before``."""
    rows = conn.execute(
        select(items_t.c.signals)
        .join(cases_t, cases_t.c.id == items_t.c.case_id)
        .where(
            cases_t.c.uploader_id == account,
            cases_t.c.subject == ACCOUNT,
            items_t.c.kind == ACCOUNT_KIND,
            items_t.c.id < before,
        )
        .order_by(items_t.c.id.desc())
    )
    for (signals,) in rows:
        snap = risk_snapshot(signals or ())
        if snap is not None:
            return snap
    return None


def _chunks(rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]

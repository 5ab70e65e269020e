"""An account case for the console tests and screenshots: contact events (metadata and flag kinds
only, never text) for one adult account that cold-contacts many children abroad, is blocked and
reported by some, and gets one accepted request; then the account case review holds for it.

The case is opened as the worker opens it: the account-case pass over the stored risk
(:class:`bastion.contact.cases.AccountCaseLoop`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.contact.cases import AccountCaseLoop
from bastion.contact.model import parse_event
from bastion.contact.store import ContactStore
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.policy import parse_policy
from bastion.review import Viewer
from bastion.review.history import uploader_cases
from bastion.review.store import ReviewStore
from tests.web.seed import POLICY

ACCOUNT = "acct-g1"
#: The children it contacts: (id, age band, country).
CHILDREN = [
    ("kid-1", "13-15", "GB"),
    ("kid-2", "13-15", "GB"),
    ("kid-3", "13-15", "IE"),
    ("kid-4", "under13", "GB"),
    ("kid-5", "16-17", "IE"),
    ("kid-6", "13-15", "FR"),
]
BLOCKED_BY = ("kid-2", "kid-3")
REPORTED_BY = "kid-4"
ACCEPTED_BY = "kid-1"
FRIEND = "adult-f"  # an adult it is connected to
MUTUAL_WITH = "kid-6"  # the friend is connected to this child too

ADMIN = Viewer("seed", "admin", ())


def account_events(now: datetime | None = None, account: str = ACCOUNT) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    start = now - timedelta(hours=20)
    n = iter(range(10_000))

    def ev(type_: str, at: datetime, **fields: object) -> dict[str, Any]:
        return {
            "event_id": f"{account}-e{next(n)}",
            "time": at.isoformat(),
            "type": type_,
            **fields,
        }

    out = [
        ev(
            "account",
            now - timedelta(days=3),
            account=account,
            age_band="adult",
            age_source="self_declared",
            country="US",
            created_at=(now - timedelta(days=3)).isoformat(),
        ),
        ev("account", now - timedelta(days=900), account=FRIEND, age_band="adult", country="US"),
        ev("connection_request", now - timedelta(days=2), actor=account, target=FRIEND),
        ev("connection_accept", now - timedelta(days=2, minutes=-5), actor=FRIEND, target=account),
        # The friend knows one of the children: their one mutual connection.
        ev("connection_request", now - timedelta(days=5), actor=FRIEND, target=MUTUAL_WITH),
        ev(
            "connection_accept",
            now - timedelta(days=5, minutes=-5),
            actor=MUTUAL_WITH,
            target=FRIEND,
        ),
    ]
    for i, (kid, band, country) in enumerate(CHILDREN):
        at = start + timedelta(minutes=20 * i)
        out.append(
            ev(
                "account",
                now - timedelta(days=400),
                account=kid,
                age_band=band,
                age_source="estimated",
                age_confidence=0.8,
                country=country,
            )
        )
        out.append(ev("connection_request", at, actor=account, target=kid))
        out.append(
            ev(
                "message",
                at + timedelta(minutes=1),
                actor=account,
                target=kid,
                conversation=f"conv-{kid}",
                first_contact=True,
            )
        )
    first = start + timedelta(minutes=2)
    out.append(
        ev(
            "flag",
            first,
            account=account,
            target="kid-1",
            kind="offplatform_handle",
            source="bastion",
        )
    )
    out.append(
        ev("connection_accept", start + timedelta(hours=1), actor=ACCEPTED_BY, target=account)
    )
    for kid in BLOCKED_BY:
        out.append(ev("block", start + timedelta(hours=7), actor=kid, target=account))
    out.append(
        ev(
            "report",
            start + timedelta(hours=8),
            actor=REPORTED_BY,
            target=account,
            category="grooming",
        )
    )
    return out


def open_account_case(
    store: Store,
    *,
    account: str = ACCOUNT,
    queue: str = "default",
    now: datetime | None = None,
) -> int:
    """Ingest the account's events, run the worker's account-case pass once (the console
    tests' policy, with account cases in ``queue``), and return the account's case id."""
    policy = parse_policy(POLICY + f"contact:\n  case_queue: {queue}\n")
    contact = ContactStore(store, policy.contact.risk)
    results = contact.ingest([parse_event(e) for e in account_events(now, account)])
    assert all(r.status == "ok" for r in results), results
    review = ReviewStore(store, MasterKey.generate(), policy=lambda: policy)
    AccountCaseLoop(store, review, lambda: policy).run_once()
    for found in uploader_cases(review, ADMIN, account):
        if "account" in found.kinds and found.case.state in ("open", "awaiting_second"):
            return found.case.id
    raise AssertionError(f"no account case was opened for {account}")

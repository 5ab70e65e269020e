"""Review fixtures: a ReviewStore on SQLite and on PostgreSQL (the shared ``db`` and ``store``),
with the shared ``clock`` the tests move by hand instead of sleeping (tests/fixtures)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.policy import Policy, QueueSpec, ReviewSettings, Verdict
from bastion.review import NewItem, Viewer
from bastion.review.store import ReviewStore
from tests.fixtures.clock import Clock
from tests.fixtures.stores import Database

ALICE = Viewer("alice", "reviewer", ("default",))
BOB = Viewer("bob", "reviewer", ("default", "ncii"))
# Listed on her record, but a reviewer never sees a senior queue.
CAROL = Viewer("carol", "reviewer", ("default", "senior"))
SAM = Viewer("sam", "senior_reviewer", ())
SUE = Viewer("sue", "senior_reviewer", ())
ROOT = Viewer("root", "admin", ())
AUDREY = Viewer("audrey", "auditor", ())

LEASE = timedelta(minutes=15)
POLICY = Policy(
    rules=(),
    queues={
        "default": QueueSpec("default"),
        "ncii": QueueSpec("ncii"),
        "senior": QueueSpec("senior", senior=True),
    },
    review=ReviewSettings(lease=LEASE),
)
FOUR_EYES = ReviewSettings(four_eyes=True, lease=LEASE)
ONE_REVIEW = ReviewSettings(four_eyes=False, lease=LEASE)


def verdict(
    priority: str = "normal",
    queue: str = "default",
    *,
    decision: str = "review",
    view_required: bool = True,
    actions: tuple[str, ...] = (),
    rule: str | None = "test-rule",
) -> Verdict:
    return Verdict(decision, rule, f"{rule} matched", priority, queue, actions, view_required)  # type: ignore[arg-type]


def item(uploader: str | None = "u1", **kwargs: object) -> NewItem:
    values: dict[str, object] = {"kind": "image", "format": "jpeg", "uploader_id": uploader}
    values.update(kwargs)
    return NewItem(**values)  # type: ignore[arg-type]


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def review(store: Store, key: MasterKey, clock: Clock) -> ReviewStore:
    return ReviewStore(store, key, policy=lambda: POLICY, now=clock)


@pytest.fixture
def make_review(db: Database, key: MasterKey, clock: Clock) -> Callable[[], ReviewStore]:
    """Another ReviewStore on the same database through its own Store (own connections)."""

    def make() -> ReviewStore:
        return ReviewStore(db.open(), key, policy=lambda: POLICY, now=clock)

    return make

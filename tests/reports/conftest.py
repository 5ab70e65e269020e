"""Report fixtures: confirmed cases with benign test images (from tests/data) on
SQLite and PostgreSQL, a hand-moved clock, and the fake CyberTipline on a loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.reports.store import ReportStore
from bastion.review import Decision
from bastion.review.model import Case
from bastion.review.store import ReviewStore
from tests.conftest import TESTDATA
from tests.fixtures.clock import Clock
from tests.reports.fake_cybertipline import PASSWORD, USER, FakeCyberTipline, LoopbackServer
from tests.review.conftest import ONE_REVIEW, POLICY, ROOT, item, verdict

IMAGES = TESTDATA / "images" / "misc-images"
REPORTER_KW = {"first_name": "Pat", "last_name": "Example", "email": "safety@example.org"}


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def review(store: Store, key: MasterKey, clock: Clock) -> ReviewStore:
    return ReviewStore(store, key, policy=lambda: POLICY, now=clock)


@pytest.fixture
def reports(store: Store, key: MasterKey, clock: Clock) -> ReportStore:
    return ReportStore(store, key, clock=clock)


@pytest.fixture
def confirmed_case(review: ReviewStore) -> Callable[..., Case]:
    """A confirmed (A1) case whose items carry benign test images as media."""
    counter = iter(range(1, 10_000))

    def make(files: int = 2, uploader: str | None = None) -> Case:
        uploader = uploader or f"user-{next(counter)}"
        paths = [IMAGES / "small.jpg", IMAGES / "wee.jpg", IMAGES / "modes" / "RGB.jpg"]
        case_id = 0
        for i in range(files):
            path = paths[i % len(paths)]
            name, media = path.name, path.read_bytes()
            sub = review.submit(
                verdict(),
                item(uploader, media=media, media_type="image/jpeg", filename=f"{i}-{name}"),
                actor="system",
            )
            case_id = sub.case_id
        case = review.claim(ROOT, case_id)
        for it in case.items:
            review.reveal(ROOT, case_id, it.id)
        review.decide(ROOT, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
        return review.get_case(ROOT, case_id)

    return make


@pytest.fixture
def fake() -> Iterator[tuple[FakeCyberTipline, LoopbackServer]]:
    tipline = FakeCyberTipline()
    server = LoopbackServer(tipline.app).start()
    try:
        yield tipline, server
    finally:
        server.stop()


CREDENTIALS = (USER, PASSWORD)

"""Vault fixtures: a Vault and a ReviewStore sharing one database (SQLite and PostgreSQL) and one
hand-moved clock, and a helper that takes a real case through review to confirmation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.review import Decision
from bastion.review.store import ReviewStore
from bastion.vault.store import Vault
from tests.conftest import TESTDATA
from tests.fixtures.clock import Clock
from tests.review.conftest import (  # noqa: F401  (key, review: fixtures)
    ONE_REVIEW,
    ROOT,
    SAM,
    item,
    key,
    review,
    verdict,
)

#: A benign photo from the test data (see tests/data/SOURCES.md).
IMAGE = TESTDATA / "images" / "misc-images" / "small.jpg"
MATCHES = [
    {
        "bank": "test-bank",
        "entry": 7,
        "signal_type": "pdq",
        "distance": 4,
        "external_id": "ext-7",
        "labels": ["demo"],
    }
]


@pytest.fixture
def image() -> bytes:
    return IMAGE.read_bytes()


@pytest.fixture
def vault(store: Store, key: MasterKey, clock: Clock) -> Vault:  # noqa: F811
    return Vault(store, key, now=clock)


Confirm = Callable[..., tuple[int, list[int]]]


@pytest.fixture
def confirm(review: ReviewStore, vault: Vault, image: bytes) -> Confirm:  # noqa: F811
    """Open a case with ``items`` (kwargs for NewItem each; default one item with the image),
    confirm it as the lead's pipeline will (preserving inside the decision's transaction), and
    return (case id, new evidence ids)."""

    def run(*items: dict[str, Any], uploader: str = "u1") -> tuple[int, list[int]]:
        specs = items or (
            {"media": image, "media_type": "image/jpeg", "content_id": "c-1", "matches": MATCHES},
        )
        case_id = 0
        for spec in specs:
            case_id = review.submit(verdict(), item(uploader, **spec), actor="key:test").case_id
        viewer = SAM
        case = review.claim(viewer, case_id)
        for it in case.items:
            if it.has_media:
                review.reveal(viewer, case_id, it.id)
        made: list[int] = []

        def then(conn: Any, outcome: Any) -> None:
            made.extend(
                vault.preserve_in(conn, outcome.case.id, actor=viewer.actor, reason="confirmed")
            )

        review.decide(
            viewer,
            case_id,
            Decision.confirmed("A1", note="reviewer's private note"),
            policy_review=ONE_REVIEW,
            then=then,
        )
        return case_id, made

    return run

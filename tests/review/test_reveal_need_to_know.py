"""Need to know (issue 19, item 2): only the claim holder reveals an active case's content; a
decided case shows its match details, and a reveal there needs a stated reason that lands in
the history and the audit log, without being counted like review work."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.review import Decision, NotLeased
from bastion.review.model import ReasonRequired
from bastion.review.store import ReviewStore

from .conftest import ALICE, BOB, ONE_REVIEW, SAM, item, verdict


@pytest.fixture
def photo(testdata: Path) -> bytes:
    return (testdata / "images" / "bridge-mods" / "aaa-orig.jpg").read_bytes()


def _actions(review: ReviewStore, prefix: str) -> list[str]:
    return [e.action for e in review.store.recent_audit(200, action=prefix)]


def test_only_the_claim_holder_reveals_an_active_case(review: ReviewStore, photo: bytes) -> None:
    s = review.submit(verdict(), item(media=photo, media_type="image/jpeg"), actor="k")
    with pytest.raises(NotLeased, match="nobody holds it"):
        review.reveal(ALICE, s.case_id, s.item_id)
    review.claim(ALICE, s.case_id)
    # A senior may open every queue, yet not look at a case another reviewer holds.
    with pytest.raises(NotLeased, match="claimed by alice"):
        review.reveal(SAM, s.case_id, s.item_id)
    with pytest.raises(NotLeased):
        review.reveal(BOB, s.case_id, s.item_id)
    assert review.reveal(ALICE, s.case_id, s.item_id, then=lambda conn: 7) == 7
    assert review.media(ALICE, s.case_id, s.item_id, clear=True).data == photo
    assert _actions(review, "content.reveal") == ["content.reveal"]


def test_a_decided_case_reveals_only_with_a_reason_audited_and_uncounted(
    review: ReviewStore, photo: bytes
) -> None:
    s = review.submit(
        verdict(view_required=False), item(media=photo, media_type="image/jpeg"), actor="k"
    )
    review.claim(ALICE, s.case_id)
    review.decide(ALICE, s.case_id, Decision.not_abusive("a bridge"), policy_review=ONE_REVIEW)
    counted: list[int] = []
    with pytest.raises(ReasonRequired, match="state why"):
        review.reveal(SAM, s.case_id, s.item_id, reason="   ", then=lambda c: counted.append(1))
    out = review.reveal(
        SAM, s.case_id, s.item_id, reason="dispute from the bank owner", then=counted.append
    )
    assert out is None and counted == []  # not an exposure of review work
    assert review.media(SAM, s.case_id, s.item_id, clear=True).data == photo
    (event,) = review.store.recent_audit(10, action="content.reveal.closed")
    assert event.actor == "user:sam" and event.target == f"case:{s.case_id}/item:{s.item_id}"
    assert event.detail == {"closed": True, "reason": "dispute from the bank owner"}
    history = review.get_case(SAM, s.case_id).events
    reveal = next(e for e in history if e.kind == "reveal")
    assert reveal.detail["reason"].startswith("dispute")

"""Review media: sealed at rest, blurred greyscale previews by default, the original only shortly
after a deliberate reveal, every view audited. Uses the benign ThreatExchange test media."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

import bastion.review.store as review_module
from bastion.review import (
    REVEAL_WINDOW,
    CaseNotFound,
    Forbidden,
    NoMedia,
    PreviewUnavailable,
)
from bastion.review.store import ReviewStore, media_t
from bastion.store import StoreUnavailable
from tests.fixtures.clock import Clock

from .conftest import ALICE, AUDREY, BOB, ROOT, SAM, item, verdict


@pytest.fixture
def photo(testdata: Path) -> bytes:
    return (testdata / "images" / "bridge-mods" / "aaa-orig.jpg").read_bytes()


@pytest.fixture
def video(testdata: Path) -> bytes:
    return (testdata / "videos" / "pattern-sd-grey-bar.mp4").read_bytes()


def _grey(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        grey = img.convert("L")
        if size is not None:
            grey = grey.resize(size)
        return np.asarray(grey, dtype=np.float64)


def _detail(a: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels: high for sharp images."""
    return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())


def test_media_is_sealed_at_rest(review: ReviewStore, photo: bytes) -> None:
    s = review.submit(verdict(), item(media=photo, media_type="image/jpeg"), actor="k")
    with review.store.engine.connect() as conn:
        sealed = conn.execute(select(media_t.c.sealed)).scalar_one()
    assert len(sealed) > len(photo)
    for start in range(0, len(photo) - 32, len(photo) // 20):
        assert photo[start : start + 32] not in sealed
    case = review.get_case(ROOT, s.case_id)
    (it,) = case.items
    assert (it.has_media, it.media_type, it.media_size, it.media_note) == (
        True,
        "image/jpeg",
        len(photo),
        "",
    )


def test_preview_is_blurred_greyscale_and_small(review: ReviewStore, photo: bytes) -> None:
    s = review.submit(verdict(), item(media=photo, media_type="image/jpeg"), actor="k")
    media = review.media(ALICE, s.case_id, s.item_id, clear=False)
    assert media.media_type == "image/jpeg"
    with Image.open(io.BytesIO(media.data)) as img:
        assert img.format == "JPEG" and img.mode == "L"
        assert max(img.size) == 640
        size = img.size
    preview = _grey(media.data)
    original = _grey(photo, size)
    # Same picture, much less detail: blurred, not replaced by noise or a blank.
    assert _detail(preview) < _detail(original) / 4
    assert abs(preview.mean() - original.mean()) < 20
    assert np.abs(preview - original).mean() > 5
    assert preview.std() > 5


def test_clear_view_needs_a_recent_reveal_by_the_viewer(
    review: ReviewStore, clock: Clock, photo: bytes
) -> None:
    s = review.submit(verdict(), item(media=photo, media_type="image/jpeg"), actor="k")
    with pytest.raises(Forbidden, match="reveal item"):
        review.media(ALICE, s.case_id, s.item_id, clear=True)
    review.claim(ALICE, s.case_id)
    review.reveal(ALICE, s.case_id, s.item_id)
    assert review.media(ALICE, s.case_id, s.item_id, clear=True).data == photo
    assert review.media(ALICE, s.case_id, s.item_id, clear=True).media_type == "image/jpeg"
    with pytest.raises(Forbidden):  # alice's reveal is not bob's
        review.media(BOB, s.case_id, s.item_id, clear=True)
    assert review.get_case(ALICE, s.case_id).viewable == {s.item_id}
    clock.advance(REVEAL_WINDOW)
    with pytest.raises(Forbidden):
        review.media(ALICE, s.case_id, s.item_id, clear=True)
    case = review.get_case(ALICE, s.case_id)
    assert case.viewable == frozenset() and case.revealed == {s.item_id}
    review.media(ALICE, s.case_id, s.item_id, clear=False)  # the preview needs no reveal

    audit = [(e.actor, e.action, e.target, e.detail) for e in review.store.iter_audit()]
    target = f"case:{s.case_id}/item:{s.item_id}"
    assert ("user:alice", "content.reveal", target, {}) in audit
    views = [a for a in audit if a[1] == "content.view"]
    assert [(a[0], a[3]) for a in views] == [
        ("user:alice", {"clear": True}),
        ("user:alice", {"clear": True}),
        ("user:alice", {"clear": False}),
    ]
    denied = [a for a in audit if a[1] == "access.denied"]
    assert {a[0] for a in denied} == {"user:alice", "user:bob"}
    assert [e.kind for e in case.events] == ["open", "claim", "reveal", "view", "view"]
    assert review.store.verify_audit_chain() is None


def test_media_access_follows_queue_permissions(review: ReviewStore, photo: bytes) -> None:
    s = review.submit(
        verdict(queue="senior"), item(media=photo, media_type="image/jpeg"), actor="k"
    )
    for call in (
        lambda: review.media(ALICE, s.case_id, s.item_id, clear=False),
        lambda: review.reveal(ALICE, s.case_id, s.item_id),
        lambda: review.media(AUDREY, s.case_id, s.item_id, clear=False),
    ):
        with pytest.raises(Forbidden):
            call()
    review.media(SAM, s.case_id, s.item_id, clear=False)
    other = review.submit(verdict(), item("u2", media=photo, media_type="image/jpeg"), actor="k")
    with pytest.raises(CaseNotFound):  # an item of another case
        review.media(SAM, s.case_id, other.item_id, clear=False)


def test_video_preview_is_a_blurred_frame(review: ReviewStore, video: bytes) -> None:
    s = review.submit(verdict(), item(kind="video", media=video, media_type="video/mp4"), actor="k")
    media = review.media(ALICE, s.case_id, s.item_id, clear=False)
    with Image.open(io.BytesIO(media.data)) as img:
        assert img.mode == "L" and max(img.size) == 640
    assert _grey(media.data).std() > 1  # a picture, not a blank frame
    review.claim(ALICE, s.case_id)
    review.reveal(ALICE, s.case_id, s.item_id)
    assert review.media(ALICE, s.case_id, s.item_id, clear=True).data == video


def test_media_type_is_sniffed_for_images_and_unknown_types_have_no_preview(
    review: ReviewStore, photo: bytes
) -> None:
    s = review.submit(verdict(), item(media=photo), actor="k")
    assert review.get_case(ROOT, s.case_id).items[0].media_type == "image/jpeg"
    blob = review.submit(verdict(), item("u2", media=b"%PDF-1.4 benign"), actor="k")
    assert review.get_case(ROOT, blob.case_id).items[0].media_type == "application/octet-stream"
    with pytest.raises(PreviewUnavailable):
        review.media(ALICE, blob.case_id, blob.item_id, clear=False)
    broken = review.submit(
        verdict(), item("u3", media=photo[:200], media_type="image/jpeg"), actor="k"
    )
    with pytest.raises(PreviewUnavailable):
        review.media(ALICE, broken.case_id, broken.item_id, clear=False)
    bad_video = review.submit(
        verdict(), item("u4", media=b"\x00" * 1000, media_type="video/mp4"), actor="k"
    )
    with pytest.raises(PreviewUnavailable):
        review.media(ALICE, bad_video.case_id, bad_video.item_id, clear=False)


def test_items_without_media(
    review: ReviewStore, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = review.submit(verdict(), item(), actor="k")
    with pytest.raises(NoMedia):
        review.reveal(ALICE, plain.case_id, plain.item_id)
    with pytest.raises(NoMedia):
        review.media(ALICE, plain.case_id, plain.item_id, clear=False)
    monkeypatch.setattr(review_module, "MAX_MEDIA_BYTES", len(photo) - 1)
    big = review.submit(verdict(), item("u2", media=photo, media_type="image/jpeg"), actor="k")
    (it,) = review.get_case(ROOT, big.case_id).items
    assert not it.has_media and it.media_size == len(photo)
    assert "over the" in it.media_note and str(len(photo) - 1) in it.media_note
    with pytest.raises(NoMedia, match="over the"):
        review.media(ALICE, big.case_id, big.item_id, clear=False)
    # Nothing to reveal, so an item whose media was too large does not block a decision.
    assert review.get_case(ALICE, big.case_id).must_reveal() == ()


def test_a_blob_moved_to_another_item_does_not_open(review: ReviewStore, photo: bytes) -> None:
    a = review.submit(verdict(), item("u1", media=photo, media_type="image/jpeg"), actor="k")
    b = review.submit(
        verdict(), item("u2", media=b"other bytes", media_type="image/jpeg"), actor="k"
    )
    with review.store.engine.begin() as conn:
        blob = conn.execute(
            select(media_t.c.sealed).where(media_t.c.item_id == a.item_id)
        ).scalar_one()
        conn.execute(update(media_t).where(media_t.c.item_id == b.item_id).values(sealed=blob))
    review.claim(ALICE, b.case_id)
    review.reveal(ALICE, b.case_id, b.item_id)
    with pytest.raises(StoreUnavailable, match="cannot be decrypted"):
        review.media(ALICE, b.case_id, b.item_id, clear=True)


def test_another_master_key_cannot_read_media(review: ReviewStore, photo: bytes) -> None:
    from bastion.crypto import MasterKey

    s = review.submit(verdict(), item(media=photo, media_type="image/jpeg"), actor="k")
    other = ReviewStore(review.store, MasterKey.generate(), now=review._now)
    with pytest.raises(StoreUnavailable, match="master key"):
        other.media(ALICE, s.case_id, s.item_id, clear=False)

"""Issue 12, finding 11: the console serves media inline only for an allowlist of base types.

The guard used to compare the whole type string with ``image/svg+xml``, so an item stored as
``image/svg+xml;x=1`` (as an E2EE voucher's part B could claim) was served inline, script and
all. Now the base type (parameters stripped, case folded) must be on the allowlist; anything else
is a download. The SVG here is a harmless text document with an ``alert`` in it.
"""

from __future__ import annotations

import pytest

from bastion.policy import Verdict
from bastion.review import NewItem
from bastion.review.preview import INLINE_SAFE_TYPES, base_media_type, inline_media_type
from tests.web.conftest import Console

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
PNG = bytes.fromhex(  # a 1x1 grey PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63680000000082008177cd72b60000000049454e44ae426082"
)
SVG_SPELLINGS = [
    "image/svg+xml",
    "image/svg+xml;x=1",
    "IMAGE/SVG+XML",
    "Image/Svg+Xml;charset=utf-8",
    "image/svg+xml;x=1;y=image/png",
]


def test_only_allowlisted_base_types_are_inline() -> None:
    for spelling in [*SVG_SPELLINGS, "image/svg+xml ; x=1", " image/SVG+xml"]:
        assert base_media_type(spelling) == "image/svg+xml"
        assert inline_media_type(spelling) is None
    for other in ("text/html", "application/xml", "image/x-icon", "application/pdf", "", None):
        assert inline_media_type(other) is None
    assert inline_media_type("IMAGE/PNG;x=1") == "image/png"
    assert inline_media_type("video/MP4; codecs=avc1") == "video/mp4"
    assert all(t.startswith(("image/", "video/")) and "svg" not in t for t in INLINE_SAFE_TYPES)


def _item(console: Console, uploader: str, media: bytes, media_type: str) -> tuple[int, int]:
    verdict = Verdict("review", "test", "test item", "normal", "default", (), True)
    item = NewItem(kind="image", uploader_id=uploader, media=media, media_type=media_type)
    done = console.rt.review.submit(verdict, item, actor="test")
    return done.case_id, done.item_id


@pytest.mark.parametrize("spelling", SVG_SPELLINGS)
def test_svg_in_any_spelling_is_never_served_inline(console: Console, spelling: str) -> None:
    case_id, item_id = _item(console, f"svg-{spelling}", SVG, spelling)
    ada = console.login("ada")
    url = f"/cases/{case_id}/items/{item_id}"
    assert ada.post_form(f"/cases/{case_id}/claim").status_code == 303
    r = ada.post(f"{url}/reveal", headers={"X-CSRF-Token": ada.csrf}, data={"continue": "1"})
    assert r.status_code == 200, r.text
    r = ada.get(f"{url}/media?clear=1")
    assert r.status_code == 200 and r.content == SVG
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == "attachment"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_allowlisted_types_are_served_inline_by_their_base_type(console: Console) -> None:
    case_id, item_id = _item(console, "png-upper", PNG, "IMAGE/PNG;x=1")
    ada = console.login("ada")
    url = f"/cases/{case_id}/items/{item_id}"
    assert ada.post_form(f"/cases/{case_id}/claim").status_code == 303
    ada.post(f"{url}/reveal", headers={"X-CSRF-Token": ada.csrf}, data={"continue": "1"})
    r = ada.get(f"{url}/media?clear=1")
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == "inline"

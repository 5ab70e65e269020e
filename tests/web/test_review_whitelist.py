"""Issue 12, finding 8: one reviewer must not be able to whitelist known material.

The attack, through the real console over a real store (SQLite and PostgreSQL): a plain reviewer,
with four-eyes on, clears a case that matched an exchange's entry as "not abusive" and ticks
"disable the matched entries". Before the fix the entry was disabled at once, the same file then
scanned as ``allow``, and the finding was queued upstream as a dispute. Now the disable request is
refused, a not-abusive finding waits for a second reviewer, and only a senior's agreement
disables the entry and sends the finding upstream. The photo is a benign test image.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.db import Store
from bastion.exchanges.base import Upsert
from bastion.review import Viewer
from bastion.server import create_app
from tests.exchanges.scripted import SCRIPTS, Script, Step, entry
from tests.web.conftest import Console, console_settings
from tests.web.seed import POLICY, seed_store

PHOTO = "images/reg-test-input/labelme-subset/q0746.jpg"
ADA = Viewer("ada", "admin")


@pytest.fixture
def four_eyes(web_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Console]:
    """The console with ``four_eyes: true`` and an exchange whose one entry is the photo's MD5."""
    token = seed_store(web_store, testdata)
    (tmp_path / "policy.yaml").write_text(POLICY.replace("four_eyes: false", "four_eyes: true"))
    settings = console_settings(tmp_path)
    digest = hashlib.md5((testdata / PHOTO).read_bytes()).hexdigest()
    SCRIPTS["whitelist"] = Script(
        steps=[Step(items=[Upsert("known-1", (entry(digest, labels=["csam"]),))])]
    )
    app = create_app(settings, store=web_store)
    try:
        with TestClient(app, follow_redirects=False) as main:
            rt = app.state.runtime
            rt.exchanges.add("partner", "scripted", config={"script": "whitelist"})
            assert rt.exchanges.sync("partner").added == 1
            rt.index.refresh()
            main.headers["Authorization"] = f"Bearer {token}"
            yield Console(app=app, store=web_store, settings=settings, cases={}, main=main)
    finally:
        SCRIPTS.pop("whitelist", None)


def _scan(console: Console, testdata: Path, uploader: str) -> dict:
    r = console.main.post(
        "/v1/scan",
        files={"file": ("upload.jpg", (testdata / PHOTO).read_bytes())},
        data={"context": json.dumps({"uploader_id": uploader, "content_id": uploader})},
    )
    assert r.status_code == 200, r.text
    return r.json()


def _claim_and_reveal(user, url: str) -> None:  # type: ignore[no-untyped-def]
    assert user.post_form(f"{url}/claim").status_code == 303
    for item in re.findall(r'<article class="item" id="item-(\d+)"', user.get(url).text):
        user.post(f"{url}/items/{item}/reveal", headers={"X-CSRF-Token": user.csrf})


def test_one_reviewer_cannot_whitelist_a_known_file(four_eyes: Console, testdata: Path) -> None:
    console, rt = four_eyes, four_eyes.rt
    first = _scan(console, testdata, "uploader-a")
    assert first["verdict"]["decision"] == "review" and first["matches"][0]["bank"] == "partner"
    case_id = first["verdict"]["case_id"]
    url = f"/cases/{case_id}"
    (known,) = console.store.list_entries("partner")
    uploaders = (f"uploader-{n}" for n in itertools.count())

    def nothing_took_effect() -> None:
        assert console.store.get_entry(known.id).enabled
        assert rt.review.disputes_for_entry(known.id) == 0
        assert rt.exchanges.feedback("partner") == []  # nothing queued upstream
        again = _scan(console, testdata, next(uploaders))
        assert again["verdict"]["decision"] != "allow" and again["matches"]

    # The attack: a plain reviewer clears the case and asks to disable the entry.
    rex = console.login("rex")
    _claim_and_reveal(rex, url)
    attack = {"decision": "not_abusive", "reason": "just a photo", "disable_entries": "1"}
    r = rex.post_form(f"{url}/decide", attack)
    assert r.status_code == 403 and "senior reviewer or an admin" in r.text
    nothing_took_effect()
    assert "access.denied" in console.audit_actions("access")

    # Without disabling, the finding waits for a second reviewer; still nothing takes effect.
    r = rex.post_form(f"{url}/decide", {"decision": "not_abusive", "reason": "just a photo"})
    assert r.status_code == 303 and "event=first_not_abusive" in r.headers["location"]
    assert "waits for a second reviewer" in rex.get(r.headers["location"]).text
    case = rt.review.get_case(ADA, case_id)
    assert (case.state, case.first_reviewer, case.decided_at) == ("awaiting_second", "rex", None)
    nothing_took_effect()
    assert rex.post_form(f"{url}/claim").status_code == 403  # not their own second review

    # A senior reviewer agrees and disables the entry: now it takes effect, and goes upstream.
    sue = console.login("sue")
    page = sue.get(url).text
    assert "who found it not abusive" in page and 'name="disable_entries"' in page
    _claim_and_reveal(sue, url)
    r = sue.post_form(f"{url}/decide", {**attack, "reason": "agreed: a stock photo"})
    assert r.status_code == 303
    assert "event=not_abusive" in r.headers["location"] and "disabled=1" in r.headers["location"]
    case = rt.review.get_case(ADA, case_id)
    assert (case.state, case.first_reviewer, case.second_reviewer) == ("not_abusive", "rex", "sue")
    assert not console.store.get_entry(known.id).enabled
    assert rt.review.disputes_for_entry(known.id) == 1
    queued = rt.exchanges.feedback("partner")
    assert [(f.key, f.verdict, f.case_id) for f in queued] == [("known-1", "negative", case_id)]
    assert _scan(console, testdata, next(uploaders))["verdict"]["decision"] == "allow"

"""The pipeline behind /v1/scan: policy verdict → case → actions in the outbox, all committed
together; a confirmation's actions (account actions once per uploader); policy edits on disk
audited. Real app, real store (SQLite and PostgreSQL), the default policy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion import pipeline
from bastion.config import Settings
from bastion.db import Store
from bastion.review import CaseClosed, Decision, Viewer
from bastion.server import create_app

PHOTOS = ["bridge-mods/aaa-orig.jpg", "misc-images/wee.jpg"]


def _scan(client: TestClient, headers: dict[str, str], data: bytes, **context: str) -> dict:
    r = client.post(
        "/v1/scan",
        headers=headers,
        files={"file": ("upload.jpg", data)},
        data={"context": json.dumps(context)},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_a_blocked_upload_opens_a_case_with_its_actions_and_a_confirmation_adds_more(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    photos = [(testdata / "images" / p).read_bytes() for p in PHOTOS]
    made = client.post("/v1/banks", headers=admin, json={"name": "known", "labels": ["csam"]})
    assert made.status_code == 201, made.text
    entries = [{"signal_type": "md5", "value": hashlib.md5(p).hexdigest()} for p in photos]
    r = client.post("/v1/banks/known/entries", headers=admin, json={"entries": entries})
    assert r.status_code in (200, 201), r.text
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    rt.index.refresh()

    first = _scan(client, admin, photos[0], uploader_id="u-1", content_id="c-1", source="upload")
    verdict = first["verdict"]
    assert (verdict["decision"], verdict["rule"], verdict["priority"]) == (
        "block",
        "csam-exact",
        "critical",
    )
    case_id = verdict["case_id"]
    queued = rt.outbox.list(case_id=case_id)
    assert sorted(o.action for o in queued) == ["preserve", "remove_content"]
    for o in queued:
        assert o.payload["content_id"] == "c-1" and o.payload["uploader_id"] == "u-1"
        assert o.payload["rule"] == "csam-exact"
        body = json.dumps(o.payload)
        assert hashlib.md5(photos[0]).hexdigest() not in body  # ids and reasons, no hashes

    # The same uploader's next blocked upload joins the open case.
    second = _scan(client, admin, photos[1], uploader_id="u-1", content_id="c-2")
    assert second["verdict"]["case_id"] == case_id
    assert len(rt.outbox.list(case_id=case_id)) == 4

    viewer = Viewer("ann", "admin")
    rt.review.claim(viewer, case_id)
    outcome = pipeline.decide(rt, viewer, case_id, Decision.confirmed("B2", (), ""))
    assert outcome.final
    actions = [o.action for o in rt.outbox.list(case_id=case_id)]
    # on_confirmed: remove_content and preserve per item, restrict_account once per uploader.
    assert sorted(actions) == sorted(
        ["preserve", "remove_content"] * 2
        + ["preserve", "remove_content"] * 2
        + ["restrict_account"]
    )
    (restrict,) = [o for o in rt.outbox.list(case_id=case_id) if o.action == "restrict_account"]
    assert restrict.payload == {
        "case_id": case_id,
        "uploader_id": "u-1",
        "reason": "confirmed by review",
        "classification": "B2",
    }
    assert "u-1" not in restrict.idempotency_key  # platform ids stay out of the key
    # The confirmation preserved each item's bytes as evidence, in the same transaction.
    evidence = rt.vault.list(case_id=case_id)
    assert sorted(e.content_id for e in evidence) == ["c-1", "c-2"]
    by_content = {e.content_id: e for e in evidence}
    for content_id, photo in zip(("c-1", "c-2"), photos, strict=True):
        assert by_content[content_id].sha256 == hashlib.sha256(photo).hexdigest()
        assert by_content[content_id].has_content
    # Deciding again is refused, and queues nothing more.
    with pytest.raises(CaseClosed):
        pipeline.decide(rt, viewer, case_id, Decision.confirmed("B2", (), ""))
    assert len(rt.outbox.list(case_id=case_id)) == 9
    assert rt.review.prior_confirmed("u-1") == 1
    events = [e.action for e in api_store.iter_audit()]
    assert events.count("action.enqueue") == 9 and "case.decide" in events


def test_with_vault_on_block_a_blocked_upload_is_preserved_at_once(
    api_store: Store, settings: Settings, admin: dict[str, str], testdata: Path
) -> None:
    photo = (testdata / "images" / PHOTOS[0]).read_bytes()
    app = create_app(replace(settings, vault_on_block=True), store=api_store)
    with TestClient(app) as client:
        client.post("/v1/banks", headers=admin, json={"name": "known", "labels": ["csam"]})
        entry = {"signal_type": "md5", "value": hashlib.md5(photo).hexdigest()}
        client.post("/v1/banks/known/entries", headers=admin, json={"entries": [entry]})
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        rt.index.refresh()
        verdict = _scan(client, admin, photo, uploader_id="u-3", content_id="c-9")["verdict"]
        assert verdict["decision"] == "block"
        (evidence,) = rt.vault.list(case_id=verdict["case_id"])
    assert evidence.content_id == "c-9" and evidence.sha256 == hashlib.sha256(photo).hexdigest()
    assert "evidence.preserve" in [e.action for e in api_store.iter_audit()]


def test_an_upload_nothing_matched_is_allowed_and_opens_nothing(
    client: TestClient, admin: dict[str, str], testdata: Path
) -> None:
    photo = (testdata / "images" / PHOTOS[0]).read_bytes()
    verdict = _scan(client, admin, photo, uploader_id="u-2")["verdict"]
    assert verdict["decision"] == "allow" and verdict["case_id"] is None
    assert client.app.state.runtime.outbox.list() == []  # type: ignore[attr-defined]


def test_a_policy_edit_on_disk_is_picked_up_and_audited(
    client: TestClient, api_store: Store
) -> None:
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    path = Path(rt.settings.policy_file)
    text = path.read_text().replace("four_eyes: false", "four_eyes: true")
    assert text != path.read_text()
    tmp = path.with_name("policy.yaml.new")
    tmp.write_text(text)
    tmp.replace(path)
    policy = rt.policy.refresh()
    assert policy.review.four_eyes is True
    (event,) = [e for e in api_store.iter_audit() if e.action == "policy.reload"]
    assert event.actor == "system" and event.target == str(path)
    assert event.detail == {"digest": policy.digest, "rules": len(policy.rules)}


def test_a_voucher_opening_goes_to_review_only_never_an_automatic_action(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    """An E2EE voucher opening whose item matched a CSAM-labelled bank exactly (MD5 and PDQ at
    distance 0): the default policy blocks such a scan at once (remove_content, preserve, no
    need to look). An opening is only ever a review case: no webhook, nothing preserved, and the
    reviewer must view the derivative (issue 12, finding 1)."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from bastion.psi.records import OpenedAccount, OpenedItem
    from bastion.vault.rows import EvidenceRow

    made = client.post("/v1/banks", headers=admin, json={"name": "known", "labels": ["csam"]})
    assert made.status_code == 201, made.text
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    exact = [
        {"bank": "known", "entry": 1, "signal_type": "md5", "distance": 0, "labels": []},
        {"bank": "known", "entry": 2, "signal_type": "pdq", "distance": 0, "labels": []},
    ]
    media = b"\xff\xd8\xff not shown"
    item = OpenedItem(
        1, "alice", 7, "msg-1", "ab" * 32, 100, exact, "image/jpeg", len(media),
        hashlib.sha256(media).hexdigest(), datetime.now(UTC), media,
    )  # fmt: skip
    scanned = pipeline.Scanned("image", "jpeg", {"source": "upload"}, [], exact, None, None, None)
    as_scan = pipeline.verdict_for(rt, scanned)
    assert (as_scan.decision, as_scan.rule) == ("block", "csam-exact")  # what a scan would get
    assert set(as_scan.actions) == {"remove_content", "preserve"} and not as_scan.view_required

    (submitted,) = pipeline.open_voucher_cases(
        rt, OpenedAccount("alice", 7, (item,), True, 5, 0, 5)
    )
    case = rt.review.get_case(Viewer("ann", "admin"), submitted.case_id)
    (case_item,) = case.items
    assert case.priority == "critical" and case.uploader_id == "alice"
    assert (case_item.verdict, case_item.rule, case_item.actions) == ("review", "csam-exact", ())
    assert case_item.view_required and case_item.source == pipeline.VOUCHER_SOURCE
    assert rt.outbox.list(case_id=submitted.case_id) == []  # no remove_content, no preserve
    with api_store.engine.connect() as conn:
        preserved = conn.execute(select(func.count()).select_from(EvidenceRow.__table__))
        assert preserved.scalar_one() == 0

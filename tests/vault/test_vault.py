"""The evidence vault on SQLite and PostgreSQL: preservation from a real confirmed case, hashes,
sealing, tamper detection, retention from the report, legal hold, purge, audited reads."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.review import CaseNotFound, Decision, Forbidden
from bastion.review.store import ReviewStore
from bastion.vault import (
    EVIDENCE_ROLES,
    EvidenceDamaged,
    EvidenceNotFound,
    EvidencePurged,
    HoldConflict,
    RetentionRules,
)
from bastion.vault.rows import EvidenceRow
from bastion.vault.store import Vault
from tests.fixtures.clock import Clock
from tests.review.conftest import ONE_REVIEW, SAM, item, verdict

from .conftest import MATCHES, Confirm

evidence_t = EvidenceRow.__table__
YEAR = timedelta(days=365)


def audit_actions(store: Store) -> list[str]:
    return [e.action for e in store.iter_audit(limit=10_000)]


def audit_of(store: Store, action: str) -> list[dict]:
    return [
        {"actor": e.actor, "target": e.target, **e.detail}
        for e in store.iter_audit(limit=10_000)
        if e.action == action
    ]


def raw(store: Store, evidence_id: int):
    with store.engine.connect() as conn:
        return conn.execute(select(evidence_t).where(evidence_t.c.id == evidence_id)).one()


def set_column(store: Store, evidence_id: int, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(evidence_t).where(evidence_t.c.id == evidence_id).values(**values))


# -- preserving --------------------------------------------------------------------------------


def test_confirming_preserves_hashes_of_the_original_bytes(
    confirm: Confirm, vault: Vault, store: Store, image: bytes, clock: Clock
) -> None:
    case_id, ids = confirm()
    assert len(ids) == 1
    row = raw(store, ids[0])
    assert row.case_id == case_id
    assert row.sha256 == hashlib.sha256(image).hexdigest()
    assert row.md5 == hashlib.md5(image).hexdigest()
    assert row.size == len(image)
    assert row.media_type == "image/jpeg" and row.content_id == "c-1"
    assert row.preserved_at == clock.at and row.retain_until == clock.at + YEAR
    assert not row.legal_hold and row.purged_at is None
    # Sealed, not stored in the clear (nor any large piece of it).
    sealed = bytes(row.sealed)
    assert sealed != image and image[100:164] not in sealed
    meta = json.loads(row.metadata_json)
    assert meta["case"]["state"] == "confirmed" and meta["case"]["classification"] == "A1"
    assert meta["item"]["matches"] == MATCHES
    assert meta["item"]["verdict"] == "review" and meta["item"]["rule"] == "test-rule"
    kinds = [e["kind"] for e in meta["events"]]
    assert kinds[0] == "open" and "reveal" in kinds and kinds[-1] == "decide"
    assert "reviewer's private note" not in row.metadata_json
    assert row.metadata_sha256 == hashlib.sha256(row.metadata_json.encode()).hexdigest()
    preserve = audit_of(store, "evidence.preserve")
    assert preserve == [
        {
            "actor": "user:sam",
            "target": f"evidence:{ids[0]}",
            "case": case_id,
            "item": row.item_id,
            "content": True,
            "size": len(image),
            "sha256": row.sha256,
            "retain_until": (clock.at + YEAR).isoformat(),
            "jurisdictions": ["US"],
            "reason": "confirmed",
        }
    ]
    # The decision and the preservation are one transaction: the audit log shows them in order.
    actions = audit_actions(store)
    assert actions.index("case.decide") < actions.index("evidence.preserve")
    assert store.verify_audit_chain() is None


def test_preserve_is_idempotent_and_items_without_media_get_metadata_rows(
    confirm: Confirm, vault: Vault, store: Store, image: bytes
) -> None:
    case_id, ids = confirm(
        {"media": image, "media_type": "image/jpeg", "content_id": "c-1"},
        {"content_id": "text-2", "kind": "text", "format": None},
    )
    assert len(ids) == 2
    text_row = raw(store, ids[1])
    assert not text_row.has_content and text_row.sealed is None
    assert text_row.sha256 is None and text_row.md5 is None
    assert text_row.content_id == "text-2"
    assert vault.preserve(case_id, actor="system", reason="again") == []
    with store.engine.connect() as conn:
        assert len(conn.execute(select(evidence_t.c.id)).all()) == 2
    assert len(audit_of(store, "evidence.preserve")) == 2
    report = vault.verify()
    assert (report.checked, report.ok, report.failures) == (2, 2, [])


def test_a_failing_decision_leaves_no_evidence(
    review: ReviewStore, vault: Vault, store: Store, image: bytes
) -> None:
    case_id = review.submit(
        verdict(), item(media=image, media_type="image/jpeg"), actor="key:test"
    ).case_id
    review.claim(SAM, case_id)
    review.reveal(SAM, case_id, review.get_case(SAM, case_id).items[0].id)

    def then(conn, outcome) -> None:
        vault.preserve_in(conn, outcome.case.id, actor="user:sam", reason="confirmed")
        raise RuntimeError("outbox down")

    with pytest.raises(RuntimeError):
        review.decide(SAM, case_id, Decision.confirmed("B2"), policy_review=ONE_REVIEW, then=then)
    assert vault.list() == []
    assert review.get_case(SAM, case_id).state == "open"
    assert "evidence.preserve" not in audit_actions(store)


def test_preserve_checks_its_input(vault: Vault, confirm: Confirm) -> None:
    with pytest.raises(CaseNotFound):
        vault.preserve(999, actor="system", reason="x")
    case_id, _ = confirm()
    with pytest.raises(ValueError, match="jurisdiction"):
        vault.preserve(case_id, actor="system", reason="x", jurisdictions=("united states",))


def test_evidence_survives_loss_of_the_review_copy(
    confirm: Confirm, vault: Vault, store: Store, image: bytes
) -> None:
    """The vault seals its own copy: deleting the review media does not touch the evidence."""
    _, ids = confirm()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM case_media")
    assert vault.read("root", "admin", ids[0], purpose="NCMEC request").data == image


# -- integrity ---------------------------------------------------------------------------------


def test_verify_reports_a_tampered_blob_by_id(
    confirm: Confirm, vault: Vault, store: Store, image: bytes
) -> None:
    _, first = confirm()
    _, second = confirm(
        {"media": image + b"\x00", "media_type": "image/jpeg", "content_id": "c-2"}, uploader="u2"
    )
    assert vault.verify().failures == []
    blob = bytearray(raw(store, second[0]).sealed)
    blob[len(blob) // 2] ^= 0x01
    set_column(store, second[0], sealed=bytes(blob))
    report = vault.verify()
    assert report.checked == 2 and report.ok == 1
    assert [i for i, _ in report.failures] == [second[0]]
    assert "does not decrypt" in report.failures[0][1]
    with pytest.raises(EvidenceDamaged):
        vault.read("root", "admin", second[0], purpose="check")
    assert vault.read("root", "admin", first[0], purpose="check").data == image
    verify_audit = audit_of(store, "evidence.verify")
    assert verify_audit[-1]["failed"] == [second[0]] and verify_audit[-1]["checked"] == 2


@pytest.mark.parametrize(("column", "name"), [("sha256", "SHA-256"), ("md5", "MD5")])
def test_verify_reports_a_tampered_hash(
    confirm: Confirm, vault: Vault, store: Store, column: str, name: str
) -> None:
    _, ids = confirm()
    value = getattr(raw(store, ids[0]), column)
    set_column(store, ids[0], **{column: ("0" if value[0] != "0" else "1") + value[1:]})
    report = vault.verify()
    assert report.failures == [(ids[0], f"content does not match its recorded {name}")]


def test_verify_reports_edited_metadata_and_moved_blobs(
    confirm: Confirm, vault: Vault, store: Store, image: bytes
) -> None:
    _, (a,) = confirm()
    _, (b,) = confirm({"media": image, "media_type": "image/jpeg"}, uploader="u2")
    text = raw(store, a).metadata_json.replace('"A1"', '"B2"')
    set_column(store, a, metadata_json=text)
    # The same plaintext, so equal hashes: only the AAD binding tells the blobs apart.
    set_column(store, b, sealed=raw(store, a).sealed)
    failures = dict(vault.verify().failures)
    assert failures[a] == "metadata does not match its recorded SHA-256"
    assert "does not decrypt" in failures[b]


def test_verify_reports_content_deleted_without_a_purge(
    confirm: Confirm, vault: Vault, store: Store
) -> None:
    _, (a,) = confirm()
    set_column(store, a, sealed=None)
    assert vault.verify().failures == [(a, "content is missing (not purged)")]


def test_a_wrong_master_key_fails_verification(
    confirm: Confirm, store: Store, clock: Clock
) -> None:
    _, (a,) = confirm()
    other = Vault(store, MasterKey.generate(), now=clock)
    report = other.verify()
    assert report.ok == 0 and report.failures[0][0] == a
    assert "another master key" in report.failures[0][1]


# -- retention, hold, purge --------------------------------------------------------------------


def test_retention_runs_from_the_report(
    confirm: Confirm, vault: Vault, store: Store, clock: Clock
) -> None:
    _, (a,) = confirm()
    preserved = clock.at
    reported = preserved + timedelta(days=20)
    clock.advance(timedelta(days=30))
    n = vault.mark_reported(
        raw(store, a).case_id, reported_at=reported, jurisdiction="us", reference="CT-123"
    )
    assert n == 1
    row = raw(store, a)
    assert row.retain_until == reported + YEAR and row.reported_at == reported
    assert row.reports == [
        {"jurisdiction": "US", "reference": "CT-123", "reported_at": reported.isoformat()}
    ]
    # A one-year clock from preservation would have expired here; from the report it has not.
    clock.at = preserved + YEAR + timedelta(days=1)
    assert vault.purge_expired() == 0
    clock.at = reported + YEAR
    assert vault.purge_expired() == 1
    assert audit_of(store, "evidence.report")[0]["reference"] == "CT-123"


def test_jurisdiction_periods_and_later_reports_only_lengthen(
    store: Store, key: MasterKey, clock: Clock, confirm: Confirm
) -> None:
    case_id, (a,) = confirm()
    uk = Vault(store, key, rules=RetentionRules(jurisdictions={"UK": 730}), now=clock)
    at = clock.at
    uk.mark_reported(case_id, reported_at=at, jurisdiction="UK", reference="NCA-1")
    assert raw(store, a).retain_until == at + timedelta(days=730)
    uk.mark_reported(case_id, reported_at=at + timedelta(days=1), jurisdiction="US", reference="C")
    assert raw(store, a).retain_until == at + timedelta(days=730)
    assert raw(store, a).reported_at == at
    assert uk.mark_reported(12345, reported_at=at, jurisdiction="US", reference="x") == 0


def test_preserving_for_several_jurisdictions_takes_the_longest(
    review: ReviewStore, store: Store, key: MasterKey, clock: Clock, image: bytes
) -> None:
    vault = Vault(store, key, rules=RetentionRules(default_days=400), now=clock)
    case_id = review.submit(verdict(), item(media=image), actor="key:test").case_id
    (a,) = vault.preserve(case_id, actor="system", reason="blocked", jurisdictions=("US", "UK"))
    assert raw(store, a).retain_until == clock.at + timedelta(days=400)
    assert raw(store, a).jurisdictions == ["US", "UK"]


def test_hold_stops_the_clock_and_release_resumes_it(
    confirm: Confirm, vault: Vault, store: Store, clock: Clock
) -> None:
    _, (a,) = confirm()
    start = clock.at
    clock.advance(timedelta(days=100))
    held = vault.hold(a, actor="user:root", reason="litigation 42")
    assert held.legal_hold and held.state == "held" and held.hold_reason == "litigation 42"
    with pytest.raises(HoldConflict):
        vault.hold(a, actor="user:root", reason="again")
    clock.advance(timedelta(days=400))  # well past the original retention
    assert vault.expired() == [] and vault.purge_expired() == 0
    assert raw(store, a).sealed is not None
    released = vault.release(a, actor="user:root", reason="case closed")
    # 265 days were left when the hold began; they are left now.
    assert released.retain_until == clock.at + timedelta(days=265)
    assert released.retain_until == start + YEAR + timedelta(days=400)
    assert not released.legal_hold and released.state == "active"
    with pytest.raises(HoldConflict):
        vault.release(a, actor="user:root", reason="again")
    clock.advance(timedelta(days=265))
    assert [r.id for r in vault.expired()] == [a]
    assert vault.purge_expired() == 1
    holds = audit_of(store, "evidence.hold") + audit_of(store, "evidence.release")
    assert [h["reason"] for h in holds] == ["litigation 42", "case closed"]


def test_hold_needs_a_reason_and_an_existing_unpurged_item(
    confirm: Confirm, vault: Vault, clock: Clock
) -> None:
    _, (a,) = confirm()
    with pytest.raises(ValueError, match="reason"):
        vault.hold(a, actor="user:root", reason="  ")
    with pytest.raises(EvidenceNotFound):
        vault.hold(999, actor="user:root", reason="x")
    clock.advance(YEAR)
    assert vault.purge_expired() == 1
    with pytest.raises(EvidencePurged):
        vault.hold(a, actor="user:root", reason="too late")


def test_purge_removes_bytes_keeps_hashes_and_is_audited(
    confirm: Confirm, vault: Vault, store: Store, clock: Clock, image: bytes
) -> None:
    _, (a,) = confirm()
    _, (b,) = confirm({"media": image, "media_type": "image/jpeg"}, uploader="u2")
    vault.hold(b, actor="user:root", reason="held")
    clock.advance(YEAR - timedelta(seconds=1))
    assert vault.purge_expired() == 0
    clock.advance(timedelta(seconds=1))
    assert vault.purge_expired(actor="system") == 1
    assert vault.purge_expired() == 0  # nothing twice
    row = raw(store, a)
    assert row.sealed is None and row.purged_at == clock.at
    assert row.sha256 == hashlib.sha256(image).hexdigest()
    assert row.md5 == hashlib.md5(image).hexdigest()
    assert raw(store, b).sealed is not None
    purge = audit_of(store, "evidence.purge")
    assert [(p["actor"], p["target"]) for p in purge] == [("system", f"evidence:{a}")]
    with pytest.raises(EvidencePurged):
        vault.read("root", "admin", a, purpose="late")
    report = vault.verify()
    assert (report.checked, report.ok, report.failures) == (2, 2, [])
    assert {r.id: r.state for r in vault.list()} == {a: "purged", b: "held"}
    assert [r.id for r in vault.list(state="purged")] == [a]
    assert store.verify_audit_chain() is None


def test_a_purged_row_with_content_fails_verification(
    confirm: Confirm, vault: Vault, store: Store, clock: Clock
) -> None:
    _, (a,) = confirm()
    sealed = raw(store, a).sealed
    clock.advance(YEAR)
    vault.purge_expired()
    set_column(store, a, sealed=sealed)
    assert vault.verify().failures == [(a, "purged, but content is still stored")]


# -- reading -----------------------------------------------------------------------------------


def test_read_needs_an_evidence_role_and_is_audited(
    confirm: Confirm, vault: Vault, store: Store, image: bytes
) -> None:
    assert EVIDENCE_ROLES == ("admin",)
    case_id, (a,) = confirm()
    for role in ("senior_reviewer", "reviewer", "auditor"):
        with pytest.raises(Forbidden):
            vault.read("eve", role, a, purpose="curious")
        with pytest.raises(Forbidden):
            vault.show("user:eve", role, a)
    denied = audit_of(store, "access.denied")
    assert len(denied) == 6 and {d["attempted"] for d in denied} == {
        "evidence.read",
        "evidence.show",
    }
    assert all(d["target"] == f"evidence:{a}" for d in denied)
    assert "evidence.read" not in audit_actions(store)
    with pytest.raises(ValueError, match="purpose"):
        vault.read("root", "admin", a, purpose=" ")
    ev = vault.read("root", "admin", a, purpose="law enforcement request 7")
    assert ev.data == image
    assert (
        ev.manifest.case_id == case_id and ev.manifest.sha256 == hashlib.sha256(image).hexdigest()
    )
    assert ev.manifest.metadata["item"]["matches"] == MATCHES
    reads = audit_of(store, "evidence.read")
    assert reads == [
        {
            "actor": "user:root",
            "target": f"evidence:{a}",
            "case": case_id,
            "item": ev.manifest.item_id,
            "role": "admin",
            "purpose": "law enforcement request 7",
            "content": True,
        }
    ]
    with pytest.raises(EvidenceNotFound):
        vault.read("root", "admin", 999, purpose="x")
    assert store.verify_audit_chain() is None


def test_list_pages_and_filters(confirm: Confirm, vault: Vault, image: bytes) -> None:
    _, (a,) = confirm()
    c2, (b,) = confirm({"media": image, "media_type": "image/jpeg"}, uploader="u2")
    assert [r.id for r in vault.list()] == [a, b]
    assert [r.id for r in vault.list(limit=1)] == [a]
    assert [r.id for r in vault.list(after=a)] == [b]
    assert [r.id for r in vault.list(case_id=c2)] == [b]
    assert [r.id for r in vault.list(state="active")] == [a, b]
    assert vault.list(state="expired") == []
    with pytest.raises(ValueError):
        vault.list(state="gone")

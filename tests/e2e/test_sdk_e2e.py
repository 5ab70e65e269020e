"""An integrator's whole loop through the SDK, against the real `bastion serve` and its worker
(SQLite and PostgreSQL): bank a benign photo, scan an edited copy, find the case in the queue as
a reviewer whose key was made with `bastion key create`, claim, reveal, confirm, then see the
signed webhooks arrive at a real receiver and draft the report the confirmation made due."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.accounts.store import AccountStore
from bastion.db import Store
from bastion.sdk import CaseLeased, Client, Forbidden, hashes
from tests.actions.receiver import Receiver, running
from tests.fixtures.servers import BASTION, Server
from tests.fixtures.stores import postgres_schema_url
from tests.web.seed import POLICY, fast_hasher

SECRET = "sdk-e2e-receiver-secret-0123456789"
BANKED = "images/bridge-mods/aaa-orig.jpg"
SCANNED = "images/bridge-mods/blur-a-lot.jpg"
INCIDENT = "Child Pornography (possession, manufacture, and distribution)"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    with postgres_schema_url("t_sdk") as url:
        yield url


def cli_key(db_url: str, tmp_path: Path, name: str, scopes: str) -> str:
    """A key made as an operator makes it; the token is the last line of stdout."""
    done = subprocess.run(
        [BASTION, "key", "create", name, "--scopes", scopes],
        env={**os.environ, "BASTION_DATABASE_URL": db_url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def wait_for(receiver: Receiver, case_id: int, actions: set[str]) -> dict[str, dict]:
    """The applied webhooks of ``case_id`` by action, once all of ``actions`` arrived."""
    deadline = time.monotonic() + 60  # the worker child starts beside a loaded machine
    while True:
        with receiver.lock:
            bodies = [json.loads(b) for b in receiver.applied.values()]
        got = {b["action"]: b for b in bodies if b["case_id"] == case_id}
        if actions <= set(got):
            return got
        assert time.monotonic() < deadline, f"webhooks so far: {bodies}"
        time.sleep(0.1)


def test_scan_review_webhook_and_report_through_the_sdk(
    db_url: str, tmp_path: Path, testdata: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    config = tmp_path / "bastion.toml"
    config.write_text(
        f'policy_file = "{tmp_path / "policy.yaml"}"\n'
        f'webhook_secret = "{SECRET}"\n'
        "outbox_poll_seconds = 0.1\noutbox_backoff_seconds = 0.5\n"
    )
    with Store.open(db_url) as store:
        accounts = AccountStore(store, hasher=fast_hasher())
        accounts.create_user("rex", "reviewer", "a long test password", actor="system")
        accounts.create_user("sue", "reviewer", "a long test password", actor="system")
    platform = cli_key(db_url, tmp_path, "platform", "match,curate,report,review")
    rex_key = cli_key(db_url, tmp_path, "rex@tooling", "review,media")
    sue_key = cli_key(db_url, tmp_path, "sue@tooling", "review")
    with running(SECRET) as receiver:
        server = Server(
            db_url, tmp_path, "--config", str(config), env={"BASTION_WEBHOOK_URL": receiver.url}
        )
        try:
            base = server.base
            with (
                Client(base, platform) as bastion,
                Client(base, rex_key) as rex,
                Client(base, sue_key) as sue,
            ):
                # The platform banks the original (its hash, computed here) and scans an edit.
                bastion.create_bank("bridge", labels=["test"], source="e2e")
                pdq = next(s for s in hashes(testdata / BANKED) if s.type == "pdq")
                added = bastion.add_entries(
                    "bridge", [{"signal_type": "pdq", "value": pdq.value, "external_id": "b-1"}]
                )
                assert added.added == 1
                photo = (testdata / SCANNED).read_bytes()
                scanned = bastion.scan(
                    photo,
                    filename="upload.jpg",
                    context={"content_id": "photo-1", "uploader_id": "user-42"},
                )
                assert scanned.matches[0].bank == "bridge" and scanned.matches[0].distance > 0
                assert scanned.verdict.decision == "review"
                case_id = scanned.verdict.case_id
                assert case_id is not None
                # The platform key, review scope and all, is nobody: it cannot read the queue.
                with pytest.raises(Forbidden) as nobody:
                    bastion.list_cases()
                assert nobody.value.code == "not_bound"

                # The reviewer finds, claims, reveals and confirms it.
                assert [c.id for c in rex.iter_cases()] == [case_id]
                case = rex.get_case(case_id)
                (item,) = case.items
                assert item.content_id == "photo-1" and item.matches[0]["external_id"] == "b-1"
                assert rex.claim(case_id).lease_holder == "rex"
                with pytest.raises(CaseLeased):
                    sue.claim(case_id)
                rex.reveal(case_id, item.id)
                assert rex.media(case_id, item.id, clear=True).data == photo
                done = rex.confirm(case_id, "A1", labels=["e2e"])
                assert done.event == "confirmed" and done.final
                assert done.actions == ["remove_content", "preserve"]

                # The worker sends the confirmation's actions, signed, to the platform.
                got = wait_for(receiver, case_id, {"remove_content", "preserve"})
                data = got["remove_content"]["data"]
                assert data["content_id"] == "photo-1" and data["uploader_id"] == "user-42"
                assert data["classification"] == "A1" and data["reason"] == "confirmed by review"
                with receiver.lock:
                    assert all(r.signature_ok for r in receiver.requests)

                # The confirmed case is now reportable: the draft waits for the worker.
                assert bastion.list_reports() == []
                draft = bastion.draft_report(
                    case_id,
                    incident_type=INCIDENT,
                    first_name="Test",
                    last_name="Reporter",
                    email="reports@example.org",
                )
                assert draft.case_id == case_id and draft.state == "drafted"
                assert [f.item_id for f in draft.files] == [item.id]
                assert [r.id for r in bastion.list_reports(state="drafted")] == [draft.id]
                assert bastion.get_report(draft.id).confirmed_at is not None
        finally:
            server.stop()
    with Store.open(db_url) as store:
        actions = {e.action for e in store.recent_audit(500)}
        views = store.recent_audit(500, action="case.view")
    assert {"case.claim", "content.reveal", "content.view", "case.decide"} <= actions
    # rex opened it once; drafting the report read it as the report key (bastion.api.reports).
    assert sorted(e.actor for e in views) == ["user:key:platform", "user:rex"]

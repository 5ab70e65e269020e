"""``text`` events on POST /v1/events (issue 16): Bastion computes ``flag`` events from text the
platform may see, through the keyword banks and the policy's ``contact.text_flags`` map, stores
only the flags (ids derived from the text event's id and the kind, so re-sending changes
nothing) and never the text: not in any table, the audit log, the response or the logs. Real
app, real store (SQLite and PostgreSQL). Non-explicit terms only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.contact.model import FlagEvent
from bastion.contact.store import ContactStore
from bastion.contact.textflags import derived_id
from bastion.db import Store
from bastion.store.tables import Base
from tests.api.conftest import bearer

URL = "/v1/events"
T = "2026-03-02T09:00:00Z"

HANDLE = "4dd m3 on an0ther app"
SECRET = "don't tell your parents about our chats, it is our secret game"
PLAIN = "good luck with the maths test tomorrow"


@pytest.fixture
def events_key(api_store: Store) -> dict[str, str]:
    return bearer(api_store, "platform", "events")


def _bank(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post("/v1/banks", headers=admin, json={"name": "contact-terms"})
    assert r.status_code == 201, r.text
    entries = [
        {"signal_type": "text", "value": "add me on another app", "labels": ["offplatform_handle"]},
        {"signal_type": "text", "value": "don't tell your parents", "labels": ["secrecy_request"]},
        {"signal_type": "text", "value": "secret game", "labels": ["grooming", "secrecy_request"]},
        # a label the map does not name: matches, but yields no flag
        {"signal_type": "text", "value": "maths test", "labels": ["homework"]},
    ]
    r = client.post("/v1/banks/contact-terms/entries", headers=admin, json={"entries": entries})
    assert r.status_code == 200 and r.json()["added"] == 4, r.text


def _text(eid: str, text: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "time": T,
        "type": "text",
        "account": "a-1",
        "target": "c-7",
        "conversation": "cv-3",
        "text": text,
        **fields,
    }


def _everything(store: Store) -> str:
    """Every row of every table, as one string (to look for the text anywhere)."""
    out = []
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                out.append(repr(tuple(row)))
    return "\n".join(out)


def test_text_events_derive_flags_and_store_no_text(
    client: TestClient,
    admin: dict[str, str],
    events_key: dict[str, str],
    api_store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _bank(client, admin)
    head = api_store.audit_head()[0]
    batch = [
        _text("t-1", HANDLE),
        _text("t-2", SECRET),
        _text("t-3", PLAIN),
        {"event_id": "m-1", "time": T, "type": "message", "actor": "a-1", "target": "c-7",
         "conversation": "cv-3"},
    ]  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        r = client.post(URL, json={"events": batch}, headers=events_key)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["accepted"], doc["duplicates"], doc["refused"]) == (4, 0, 0)
    results = doc["results"]
    assert [(x["index"], x["event_id"], x["status"]) for x in results] == [
        (0, "t-1", "ok"),
        (1, "t-2", "ok"),
        (2, "t-3", "ok"),
        (3, "m-1", "ok"),
    ]
    assert results[0]["flags"] == [
        {"kind": "offplatform_handle", "event_id": "t-1:offplatform_handle", "status": "ok"}
    ]
    # two entries labelled secrecy_request matched: one flag of that kind
    assert results[1]["flags"] == [
        {"kind": "secrecy_request", "event_id": "t-2:secrecy_request", "status": "ok"}
    ]
    assert results[2]["flags"] == []  # "maths test" matched, but its label maps to no kind
    assert results[3]["flags"] is None
    # only the flags (and the message) are stored, as bastion's flags with the text's context
    stored = {e.event_id: e for e in ContactStore(api_store).stored_events()}
    assert set(stored) == {"t-1:offplatform_handle", "t-2:secrecy_request", "m-1"}
    flag = stored["t-2:secrecy_request"]
    assert isinstance(flag, FlagEvent)
    assert (flag.account, flag.target, flag.conversation, flag.source) == (
        "a-1",
        "c-7",
        "cv-3",
        "bastion",
    )
    # the text is nowhere: no table (events, audit log, scans, ...), not the response, no log
    dump = _everything(api_store)
    body = r.text
    for text in (HANDLE, SECRET, PLAIN):
        # the texts, and pieces of them that are in no bank entry
        for piece in (text, "4dd m3", "an0ther", "about our chats", "tomorrow"):
            assert piece not in dump
            assert piece not in body
            assert piece not in caplog.text
    assert all(a.action != "scan" for a in api_store.iter_audit(since_id=head))

    # re-sent: the same derived ids are duplicates, nothing changes; a text with no flag is
    # still acknowledged (ok: there was nothing to store)
    again = client.post(URL, json={"events": batch}, headers=events_key).json()
    assert [x["status"] for x in again["results"]] == ["duplicate", "duplicate", "ok", "duplicate"]
    assert again["results"][0]["flags"][0]["status"] == "duplicate"
    assert len(ContactStore(api_store).stored_events()) == 3


def test_text_event_errors_are_per_event_and_never_echo_the_text(
    client: TestClient, admin: dict[str, str], events_key: dict[str, str], api_store: Store
) -> None:
    _bank(client, admin)
    batch = [
        _text("t-1", SECRET, colour="blue"),  # unknown field
        _text("t-2", SECRET, target="a-1"),  # target is the account itself
        _text("t-3", "x" * 20_001),  # too long
        {"event_id": "t-4", "time": T, "type": "text", "account": "a-1"},  # no text
        _text("t-5", SECRET, time="2026-03-02T09:00:00"),  # no timezone
        _text("t-6", HANDLE),
    ]
    r = client.post(URL, json={"events": batch}, headers=events_key)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["accepted"], doc["refused"]) == (1, 5)
    statuses = [(x["event_id"], x["status"]) for x in doc["results"]]
    assert statuses == [
        ("t-1", "error"),
        ("t-2", "error"),
        ("t-3", "error"),
        ("t-4", "error"),
        ("t-5", "error"),
        ("t-6", "ok"),
    ]
    assert doc["results"][0]["errors"][0]["type"] == "extra_forbidden"
    assert "different accounts" in doc["results"][1]["error"]
    assert doc["results"][2]["errors"][0]["loc"] == "text"
    assert doc["results"][3]["errors"][0]["type"] == "missing"
    assert "parents" not in r.text and "xxxx" not in r.text
    stored = [e.event_id for e in ContactStore(api_store).stored_events()]
    assert stored == ["t-6:offplatform_handle"]


def test_derived_id_conflict_is_that_events_error(
    client: TestClient, admin: dict[str, str], events_key: dict[str, str], api_store: Store
) -> None:
    """A platform event already stored under a derived id with other content: the text event
    is refused (the stored event unchanged), the rest of the batch applied."""
    _bank(client, admin)
    own = {"event_id": "t-1:offplatform_handle", "time": T, "type": "flag", "account": "b-2",
           "kind": "offplatform_handle"}  # fmt: skip
    assert client.post(URL, json={"events": [own]}, headers=events_key).status_code == 200
    r = client.post(URL, json={"events": [_text("t-1", HANDLE), _text("t-2", SECRET)]},
                    headers=events_key)  # fmt: skip
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["error", "ok"]
    assert "conflict" in results[0]["error"]
    stored = {e.event_id: e for e in ContactStore(api_store).stored_events()}
    assert stored["t-1:offplatform_handle"].account == "b-2"  # type: ignore[union-attr]
    assert "t-2:secrecy_request" in stored


def test_the_policy_map_decides_which_labels_flag(
    client: TestClient, admin: dict[str, str], events_key: dict[str, str], api_store: Store
) -> None:
    """With ``contact.text_flags`` naming ``grooming`` as secrecy_request only, a term labelled
    offplatform_handle yields nothing, and ``secret game`` (labelled grooming) a flag."""
    _bank(client, admin)
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    path = Path(rt.settings.policy_file)
    text = path.read_text()
    assert "    offplatform_handle: offplatform_handle\n" in text
    text = text.replace("  text_flags:\n", "  text_flags:\n    grooming: secrecy_request\n", 1)
    text = text.replace("    offplatform_handle: offplatform_handle\n", "", 1)
    tmp = path.with_name("policy.yaml.new")
    tmp.write_text(text)
    tmp.replace(path)
    assert dict(rt.policy.refresh().contact.text_flags)["grooming"] == "secrecy_request"
    r = client.post(URL, json={"events": [_text("t-1", HANDLE), _text("t-2", "a secret game")]},
                    headers=events_key)  # fmt: skip
    flags = [x["flags"] for x in r.json()["results"]]
    assert flags == [[], [{"kind": "secrecy_request", "event_id": "t-2:secrecy_request",
                           "status": "ok"}]]  # fmt: skip


def test_long_event_ids_derive_ids_that_fit() -> None:
    eid = "e" * 128
    out = derived_id(eid, "offplatform_handle")
    assert len(out) <= 128 and out.endswith(":offplatform_handle")
    assert (
        out == derived_id(eid, "offplatform_handle") != derived_id("f" * 128, "offplatform_handle")
    )
    assert derived_id("t-1", "threat") == "t-1:threat"


def test_an_allow_bank_entry_covering_the_term_yields_no_flag(
    client: TestClient, admin: dict[str, str], events_key: dict[str, str], api_store: Store
) -> None:
    """As for a text scan: a known benign phrase (a game's title) containing a listed term
    suppresses the flag where it covers the term, not elsewhere in the text."""
    _bank(client, admin)
    r = client.post("/v1/banks", headers=admin, json={"name": "benign", "kind": "allow"})
    assert r.status_code == 201, r.text
    entry = {"signal_type": "text", "value": "secret game show"}
    r = client.post("/v1/banks/benign/entries", headers=admin, json={"entries": [entry]})
    assert r.status_code == 200, r.text
    batch = [
        _text("t-1", "did you watch the secret game show"),
        _text("t-2", "the secret game show, and our secret game"),
    ]
    results = client.post(URL, json={"events": batch}, headers=events_key).json()["results"]
    assert [x["flags"] for x in results] == [
        [],
        [{"kind": "secrecy_request", "event_id": "t-2:secrecy_request", "status": "ok"}],
    ]
    assert [e.event_id for e in ContactStore(api_store).stored_events()] == ["t-2:secrecy_request"]

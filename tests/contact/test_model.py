"""The event schema: strict validation, per-event errors, batches, no text fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.contact.model import (
    EVENT_TYPES,
    MAX_BATCH,
    AccountEvent,
    BatchTooLarge,
    MessageEvent,
    event_to_json,
    parse_event,
    parse_events,
)

T = "2026-01-01T12:00:00+01:00"

GOOD: dict[str, dict[str, object]] = {
    "account": {
        "account": "a1",
        "age_band": "13-15",
        "age_source": "estimated",
        "age_confidence": 0.8,
        "country": "GB",
        "device_hashes": ["dev:abcdef12"],
    },
    "profile_change": {"account": "a1", "changed": ["bio", "country"], "country": "IE"},
    "ban": {"account": "a1"},
    "connection_request": {"actor": "a1", "target": "a2"},
    "connection_accept": {"actor": "a2", "target": "a1"},
    "connection_remove": {"actor": "a2", "target": "a1"},
    "message": {"actor": "a1", "target": "a2", "conversation": "c1", "has_media": True},
    "block": {"actor": "a2", "target": "a1"},
    "report": {"actor": "a2", "target": "a1", "category": "grooming"},
    "gift": {"actor": "a1", "target": "a2", "amount_band": "medium"},
    "payment": {"actor": "a1", "target": "a2"},
    "flag": {"account": "a1", "target": "a2", "kind": "offplatform_handle", "source": "bastion"},
}


def raw(kind: str, eid: str = "e1", **extra: object) -> dict[str, object]:
    return {"event_id": eid, "time": T, "type": kind, **GOOD[kind], **extra}


def test_every_type_has_a_good_example() -> None:
    assert set(GOOD) == set(EVENT_TYPES)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_each_type_parses_and_round_trips(kind: str) -> None:
    event = parse_event(raw(kind))
    assert event.type == kind
    assert event.time == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)  # kept in UTC
    assert parse_event(event_to_json(event)) == event


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_unknown_fields_are_refused_for_every_type(kind: str) -> None:
    events, errors = parse_events([raw(kind, note="anything")])
    assert events == []
    assert len(errors) == 1
    assert errors[0].errors[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("field", ["text", "body", "content", "caption"])
def test_a_message_cannot_carry_text(field: str) -> None:
    _, errors = parse_events([raw("message", **{field: "see you later"})])
    assert [e.index for e in errors] == [0]
    assert errors[0].errors[0]["loc"] == f"message.{field}"
    assert "text" not in MessageEvent.model_fields


def test_bad_events_get_errors_and_the_rest_is_accepted() -> None:
    batch: list[object] = [
        raw("message", "m1"),
        {**raw("message", "m2"), "time": "2026-01-01T12:00:00"},  # naive time
        raw("block", "b1", target="a2"),  # blocks itself
        "not an object",
        {**raw("report", "r1"), "category": "unknown-category"},
        {"type": "message", "time": T},  # no id
        {**raw("account", "x"), "age_band": "14"},
        {**raw("account", "y"), "country": "gb"},
        {**raw("flag", "f1"), "kind": "free text"},
        raw("account", "a9"),
    ]
    events, errors = parse_events(batch)
    assert [e.event_id for e in events] == ["m1", "a9"]
    assert [e.index for e in errors] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [e.event_id for e in errors] == ["m2", "b1", None, "r1", None, "x", "y", "f1"]
    assert all(e.errors for e in errors)


def test_batch_limit() -> None:
    events, errors = parse_events([raw("ban", f"e{i}") for i in range(MAX_BATCH)])
    assert len(events) == MAX_BATCH and errors == []
    with pytest.raises(BatchTooLarge):
        parse_events([raw("ban", f"e{i}") for i in range(MAX_BATCH + 1)])


def test_account_defaults_and_bounds() -> None:
    event = parse_event({"event_id": "e", "time": T, "type": "account", "account": "a"})
    assert isinstance(event, AccountEvent)
    assert event.age_band == "unknown" and event.age_source == "self_declared"
    _, errors = parse_events([{**raw("account"), "age_confidence": 1.5}])
    assert errors[0].errors[0]["loc"] == "account.age_confidence"


def test_identifiers_are_printable_and_bounded() -> None:
    _, errors = parse_events(
        [
            {**raw("ban"), "account": ""},
            {**raw("ban"), "account": "x" * 129},
            {**raw("ban"), "account": "a\nb"},
            {**raw("ban"), "event_id": " padded"},
        ]
    )
    assert [e.index for e in errors] == [0, 1, 2, 3]

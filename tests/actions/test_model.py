"""Pure action rules: names, keys, the webhook body, backoff and status classification."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from bastion.actions import Backoff, Outcome, classify_status
from bastion.actions.model import (
    MAX_BODY,
    build_body,
    canonical_payload,
    validate_action,
    validate_key,
)


@pytest.mark.parametrize("name", ["remove_content", "restrict_account", "preserve", "notify.ops"])
def test_valid_action_names(name: str) -> None:
    assert validate_action(name) == name


@pytest.mark.parametrize("name", ["", "Remove", "remove content", "1x", "a" * 65, None, "x..y"])
def test_invalid_action_names(name: object) -> None:
    with pytest.raises(ValueError, match="invalid action name"):
        validate_action(name)


@pytest.mark.parametrize(
    "key", ["remove_content:case-1:item-2", "a", "A9._:@/+=-", "{[x]}!", "k" * 200]
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", ["", "has space", "new\nline", "tab\t", "k" * 201, "é", 5])
def test_invalid_keys(key: object) -> None:
    with pytest.raises(ValueError, match="invalid idempotency key"):
        validate_key(key)


def test_body_shape_is_fixed_and_compact() -> None:
    at = datetime(2025, 3, 1, 12, 0, 5, 123456, tzinfo=UTC)
    body = build_body(
        key="k1", action="preserve", created_at=at, case_id=7, payload={"content_id": "c-1"}
    )
    assert body == (
        '{"id":"k1","action":"preserve","created_at":"2025-03-01T12:00:05Z","case_id":7,'
        '"data":{"content_id":"c-1"}}'
    )
    assert json.loads(body)["data"] == {"content_id": "c-1"}


def test_payload_must_be_storable_json() -> None:
    assert canonical_payload({"n": (1, 2)}) == {"n": [1, 2]}  # as it reads back
    for bad, reason in [
        ([1], "JSON object"),
        ({"x": float("nan")}, "not storable"),
        ({"x": object()}, "not storable"),
        ({"x": "a\x00b"}, "NUL"),
        ({"x": "a" * MAX_BODY}, "limit"),
    ]:
        with pytest.raises(ValueError, match=reason):
            canonical_payload(bad)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    b = Backoff(base=10, cap=3600, jitter=0.25)
    assert [b.ceiling(n) for n in range(1, 11)] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert b.ceiling(500) == 3600  # no overflow for absurd attempt counts


def test_backoff_jitter_stays_within_the_band() -> None:
    b = Backoff(base=10, cap=3600, jitter=0.25)
    rng = random.Random(1)
    delays = [b.delay(3, rng) for _ in range(500)]
    assert all(30 <= d <= 40 for d in delays)
    assert max(delays) - min(delays) > 5  # really jittered, not constant
    assert Backoff(base=10, cap=60, jitter=0).delay(4) == 60


@pytest.mark.parametrize("args", [(0, 10, 0.1), (10, 5, 0.1), (1, 10, 1.0), (1, 10, -0.1)])
def test_backoff_rejects_nonsense(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(*args)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (301, Outcome.RETRY),
        (400, Outcome.DEAD),
        (401, Outcome.DEAD),
        (403, Outcome.DEAD),
        (404, Outcome.DEAD),
        (410, Outcome.DEAD),
        (422, Outcome.DEAD),
        (408, Outcome.RETRY),
        (409, Outcome.RETRY),
        (425, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
    ],
)
def test_status_classification(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome

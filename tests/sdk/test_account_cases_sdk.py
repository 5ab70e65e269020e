"""The SDK's account-case calls (issue 15) build the requests ``/v1/cases`` expects: the subject
filter, a not-abusive finding per detector, the detectors' precision; and read what it answers.
The server side of the same calls is tested in tests/api/test_account_cases_api.py and the
end-to-end test."""

from __future__ import annotations

import json

import httpx
import pytest

from bastion.sdk import ApiError, Client

PRECISION = [
    {"detector": "fanout", "confirmed": 3, "not_abusive": 1, "unjudged": 2, "precision": 0.75}
]


def test_account_case_requests_and_answers() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/v1/cases/detectors":
            return httpx.Response(200, json=PRECISION)
        if request.url.path == "/v1/cases":
            return httpx.Response(200, json={"cases": [], "next_after": None})
        return httpx.Response(500)

    with Client("https://b.example", "k", transport=httpx.MockTransport(handler)) as bastion:
        assert bastion.list_cases(subject="account").cases == []
        assert list(bastion.iter_cases(subject="content")) == []
        [fanout] = bastion.detector_precision()
        assert (fanout.detector, fanout.precision, fanout.unjudged) == ("fanout", 0.75, 2)
        for call in (
            lambda: bastion.not_abusive(7, "a coach", detectors=["fanout", "age_gap"]),
            lambda: bastion.not_abusive(8, "a coach"),
            lambda: bastion.confirm(9, "sextortion"),
        ):
            with pytest.raises(ApiError):  # the mock refuses decisions: the request is what counts
                call()
    assert sent[0].url.params["subject"] == "account"
    assert sent[1].url.params["subject"] == "content"
    decisions = [json.loads(r.content) for r in sent if r.url.path.endswith("/decide")]
    assert decisions[0] == {
        "decision": "not_abusive",
        "reason": "a coach",
        "disable_entries": False,
        "detectors": ["fanout", "age_gap"],
    }
    assert "detectors" not in decisions[1]
    assert decisions[2] == {"decision": "confirmed", "classification": "sextortion", "labels": []}

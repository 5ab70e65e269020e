"""Keyword entries in the shared matcher and the live index: added, matched with their spans,
disabled; validation of text entries in banks. Non-explicit terms only."""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest

from bastion.banks.model import NewEntry, normalize_entry, validate_value
from bastion.index.matcher import Matcher, TextMatch
from bastion.policy import parse_policy, policy_input
from bastion.signals.base import Signal, SignalType


class Row(NamedTuple):
    id: int
    bank: str
    signal_type: str
    value: str
    url_match: str | None = None
    external_id: str | None = None
    labels: list[str] = []  # noqa: RUF012  (a NamedTuple default, never mutated)


def test_text_entries_match_through_the_matcher() -> None:
    query = {"and": [{"or": ["don't tell"]}, {"or": ["parents", "mum"]}], "not": ["surprise"]}
    matcher = Matcher.from_entries(
        [
            Row(1, "grooming", "text", "add me on another app", labels=["grooming"]),
            Row(2, "grooming", "text", json.dumps(query), external_id="q-1"),
            Row(3, "hashes", "md5", "0" * 32),
        ]
    )
    text = "ok 4dd me on аnother app and don't tell your parents"  # noqa: RUF001
    matches = matcher.match([Signal(SignalType.TEXT, text)])
    assert [m.entry_id for m in matches] == [1, 2]
    first = matches[0]
    assert isinstance(first, TextMatch)
    assert first.signal_type is SignalType.TEXT and first.distance == 0
    assert first.labels == ("grooming",)
    shape = first.as_dict()
    assert shape["spans"] == [[3, 24]]
    assert text[3:24] == "4dd me on аnother app"  # noqa: RUF001
    assert shape["normalisations"] == ["confusables", "leetspeak"]
    assert shape["occurrences"] == 1
    assert matcher.match([Signal(SignalType.TEXT, "don't tell mum about the surprise")]) == []
    matcher.remove(1)
    assert [m.entry_id for m in matcher.match([Signal(SignalType.TEXT, text)])] == [2]
    assert matcher.match([Signal(SignalType.TEXT, text)], banks=["hashes"]) == []


def test_a_bad_stored_keyword_is_rejected_not_fatal() -> None:
    matcher = Matcher.from_entries(
        [Row(1, "b", "text", '{"and": []}'), Row(2, "b", "text", "secret game")]
    )
    assert [eid for eid, _ in matcher.rejected] == [1]
    assert len(matcher.match([Signal(SignalType.TEXT, "a secret game")])) == 1


def test_text_entries_are_validated_and_canonical() -> None:
    assert validate_value("text", "  secret \t game ") == "secret game"
    assert validate_value("text", '{"and":[{"or":["secret game"]}]}') == (
        '{"and":[{"or":["secret game"]}],"not":[]}'
    )
    entry = normalize_entry(
        NewEntry(
            SignalType.TEXT, "delete this chat", labels=["grooming"], metadata={"language": "en"}
        )
    )
    assert entry.value == "delete this chat" and entry.metadata == {"language": "en"}
    with pytest.raises(ValueError, match="BCP 47"):
        normalize_entry(NewEntry(SignalType.TEXT, "delete this chat", metadata={"language": "x"}))
    with pytest.raises(ValueError, match="regular-expression"):
        validate_value("text", '{"and":[{"or":["regex-/a.b/"]}]}')
    with pytest.raises(ValueError, match="quality applies only"):
        normalize_entry(NewEntry(SignalType.TEXT, "secret game", quality=50))


def test_the_default_policy_sends_keyword_matches_to_review() -> None:
    from importlib import resources

    policy = parse_policy(resources.files("bastion").joinpath("default_policy.yaml").read_text())
    labels = {"grooming": ["grooming"], "trade": ["csam_trade"]}
    match = {"bank": "grooming", "entry": 1, "signal_type": "text", "distance": 0, "labels": []}
    verdict = policy.decide(policy_input("text", {}, [match], labels, uploader_confirmed=3))
    assert (verdict.decision, verdict.rule, verdict.priority) == ("review", "keyword", "normal")
    urgent = dict(match, bank="trade")
    verdict = policy.decide(policy_input("text", {}, [urgent], labels))
    assert (verdict.decision, verdict.rule, verdict.priority) == (
        "review",
        "keyword-urgent",
        "high",
    )

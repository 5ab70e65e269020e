"""F1 defaults for every pair of age bands and every action, F2 prompts at each key moment."""

from __future__ import annotations

import itertools

import pytest

from bastion.contact.decide import (
    ACTIONS,
    CHILD_DEFAULTS,
    PROMPT_IDS,
    AccountFacts,
    ContactSettings,
    Decision,
    Relationship,
    decide,
    load_prompts,
    may_relax,
    moment_prompts,
)
from bastion.contact.model import RISK_BANDS
from bastion.vocab import AGE_BANDS

PAIRS = list(itertools.product(AGE_BANDS, AGE_BANDS))
CHILDREN = {"under13", "13-15", "16-17", "unknown"}  # unknown: protected by default


def expected_stranger(actor: str, target: str, action: str) -> tuple[bool, bool, str, set[str]]:
    """(allow, requires_confirmation, route_to, prompt ids) from the written F1/F2 table, for
    an actor of low risk that is not connected to the target."""
    if target in CHILDREN:
        return {
            "suggest": (False, False, "inbox", set()),
            "show_in_connections": (False, False, "inbox", set()),
            "see_location": (False, False, "inbox", set()),
            "livestream_comment": (False, False, "inbox", set()),
            "message": (True, True, "requests", {"message_unknown"}),
            "connection_request": (True, True, "requests", {"request_unknown"}),
            "gift": (True, True, "requests", {"gift_unknown"}),
        }[action]
    child_actor = actor in CHILDREN
    if action == "connection_request":
        return True, True, "requests", {"contact_unknown_adult"} if child_actor else set()
    if action == "message":
        return True, False, "inbox", {"contact_unknown_adult"} if child_actor else set()
    return True, False, "inbox", set()


def shape(d: Decision) -> tuple[bool, bool, str, set[str]]:
    return d.allow, d.requires_confirmation, d.route_to, {p.id for p in d.prompts}


@pytest.mark.parametrize(("actor", "target"), PAIRS)
@pytest.mark.parametrize("action", ACTIONS)
def test_f1_table_strangers(actor: str, target: str, action: str) -> None:
    got = decide(AccountFacts("a", actor), AccountFacts("t", target), Relationship(), "low", action)  # type: ignore[arg-type]
    assert shape(got) == expected_stranger(actor, target, action)
    if target in CHILDREN and not got.allow:
        assert any(r.startswith("f1.") for r in got.reasons)


@pytest.mark.parametrize(("actor", "target"), PAIRS)
@pytest.mark.parametrize("action", ACTIONS)
def test_f1_table_connected(actor: str, target: str, action: str) -> None:
    rel = Relationship(connected=True, mutual_connections=3)
    got = decide(AccountFacts("a", actor), AccountFacts("t", target), rel, "low", action)  # type: ignore[arg-type]
    if action == "connection_request":
        assert not got.allow and got.reasons == ("already_connected",)
    elif target in CHILDREN and action in ("suggest", "show_in_connections", "see_location"):
        # Connection does not lift these: children are never suggested, listed or located.
        assert not got.allow
    else:
        assert shape(got) == (True, False, "inbox", set())


@pytest.mark.parametrize(("actor", "target"), PAIRS)
@pytest.mark.parametrize("action", ACTIONS)
def test_high_risk_actor(actor: str, target: str, action: str) -> None:
    got = decide(
        AccountFacts("a", actor), AccountFacts("t", target), Relationship(), "high", action
    )  # type: ignore[arg-type]
    if action == "show_in_connections":
        assert not got.allow  # lists are hidden from suspicious accounts, whoever's they are
    elif target in CHILDREN:
        if action == "connection_request":
            assert shape(got) == (True, True, "spam", {"high_risk_request"})
        else:
            assert not got.allow
        if action == "message":
            assert got.route_to == "spam"
            assert "risk.high_actor_message_button_hidden" in got.reasons
    elif action == "suggest":
        assert not got.allow
    else:
        assert got.allow


@pytest.mark.parametrize("band", RISK_BANDS)
def test_risk_below_spam_band_changes_nothing(band: str) -> None:
    settings = ContactSettings(spam_band="high")
    got = decide(
        AccountFacts("a", "adult"),
        AccountFacts("t", "13-15"),
        Relationship(),
        band,
        "connection_request",
        settings,
    )  # type: ignore[arg-type]
    assert got.route_to == ("spam" if band == "high" else "requests")
    lower = ContactSettings(spam_band="medium")
    got = decide(
        AccountFacts("a", "adult"),
        AccountFacts("t", "13-15"),
        Relationship(),
        band,
        "message",
        lower,
    )  # type: ignore[arg-type]
    assert got.allow is (band == "low")


def test_high_risk_connected_adult_still_needs_confirmation() -> None:
    rel = Relationship(connected=True)
    got = decide(AccountFacts("a", "adult"), AccountFacts("t", "under13"), rel, "high", "message")
    assert shape(got) == (True, True, "requests", {"message_unknown"})


def test_risk_rule_for_child_actors_setting() -> None:
    off = ContactSettings(risk_rule_for_child_actors=False)
    a, t = AccountFacts("a", "16-17"), AccountFacts("t", "13-15")
    assert decide(a, t, Relationship(), "high", "connection_request").route_to == "spam"
    assert decide(a, t, Relationship(), "high", "connection_request", off).route_to == "requests"
    # an unknown-age actor is never treated as a child for what that would allow
    u = AccountFacts("u", "unknown")
    assert decide(u, t, Relationship(), "high", "connection_request", off).route_to == "spam"


def test_unknown_age_follows_the_setting() -> None:
    adult = AccountFacts("a", "adult")
    unknown = AccountFacts("t", "unknown")
    as_child = decide(adult, unknown, Relationship(), "low", "message")
    assert as_child.requires_confirmation and as_child.route_to == "requests"
    not_child = ContactSettings(unknown_age_as_child=False)
    for action in ACTIONS:
        got = decide(adult, unknown, Relationship(), "low", action, not_child)
        assert got.allow and got.route_to != "spam", action


def test_blocked_pairs_are_refused_every_action() -> None:
    for actor, target in PAIRS:
        for action in ACTIONS:
            got = decide(
                AccountFacts("a", actor),
                AccountFacts("t", target),
                Relationship(blocked=True),
                "low",
                action,  # type: ignore[arg-type]
            )
            assert not got.allow and got.reasons == ("blocked",)


def test_relaxed_defaults_open_only_to_other_children() -> None:
    teen = AccountFacts("t", "13-15", relaxed=frozenset(CHILD_DEFAULTS))
    peer, adult = AccountFacts("p", "16-17"), AccountFacts("a", "adult")
    unknown = AccountFacts("u", "unknown")
    stranger, friend = Relationship(), Relationship(connected=True)
    assert decide(peer, teen, stranger, "low", "suggest").allow
    assert not decide(adult, teen, stranger, "low", "suggest").allow
    assert not decide(unknown, teen, stranger, "low", "suggest").allow
    assert decide(peer, teen, stranger, "low", "message").route_to == "inbox"
    assert decide(adult, teen, stranger, "low", "message").route_to == "requests"
    assert decide(peer, teen, stranger, "low", "show_in_connections").allow
    assert decide(adult, teen, friend, "low", "show_in_connections").allow
    assert not decide(adult, teen, stranger, "low", "show_in_connections").allow
    assert decide(adult, teen, friend, "low", "see_location").allow
    assert not decide(peer, teen, stranger, "low", "see_location").allow
    # high risk closes every relaxed door
    for action in ("suggest", "message", "show_in_connections", "see_location"):
        assert not decide(
            peer, teen, friend if action == "see_location" else stranger, "high", action
        ).allow  # type: ignore[arg-type]


def test_under13_cannot_relax_by_default() -> None:
    child = AccountFacts("c", "under13", relaxed=frozenset(CHILD_DEFAULTS))
    peer = AccountFacts("p", "under13")
    settings = ContactSettings()
    assert not decide(peer, child, Relationship(), "low", "suggest").allow
    assert all(not may_relax(child, d, settings) for d in CHILD_DEFAULTS)
    assert may_relax(AccountFacts("t", "13-15"), "suggest", settings)
    assert not may_relax(
        AccountFacts("t", "13-15"), "suggest", ContactSettings(relaxable=frozenset())
    )
    allowed = ContactSettings(under13_may_relax=True)
    assert decide(peer, child, Relationship(), "low", "suggest", allowed).allow


@pytest.mark.parametrize("default", CHILD_DEFAULTS)
def test_f2_prompt_when_a_child_turns_a_default_off(default: str) -> None:
    prompts = moment_prompts("default_off", AccountFacts("c", "13-15"), default)  # type: ignore[arg-type]
    assert [(p.id, p.audience) for p in prompts] == [(f"default_off_{default}", "actor")]
    assert moment_prompts("default_off", AccountFacts("a", "adult"), default) == ()  # type: ignore[arg-type]


@pytest.mark.parametrize("moment", ["block", "report"])
def test_f2_prompts_when_a_child_blocks_or_reports(moment: str) -> None:
    for band in AGE_BANDS:
        prompts = moment_prompts(moment, AccountFacts("c", band))  # type: ignore[arg-type]
        assert [p.id for p in prompts] == ([moment] if band in CHILDREN else [])


def test_default_off_needs_the_default() -> None:
    with pytest.raises(ValueError):
        moment_prompts("default_off", AccountFacts("c", "13-15"))


def emitted_prompt_ids() -> set[str]:
    """Every prompt id the decision code emits, over all its inputs."""
    seen: set[str] = set()
    settings = [ContactSettings(), ContactSettings(unknown_age_as_child=False)]
    rels = [Relationship(), Relationship(connected=True), Relationship(mutual_connections=2)]
    for (actor, target), action, risk, rel, s, relaxed in itertools.product(
        PAIRS, ACTIONS, RISK_BANDS, rels, settings, [frozenset(), frozenset(CHILD_DEFAULTS)]
    ):
        got = decide(
            AccountFacts("a", actor), AccountFacts("t", target, relaxed), rel, risk, action, s
        )  # type: ignore[arg-type]
        seen |= {p.id for p in got.prompts}
    for band in AGE_BANDS:
        for d in CHILD_DEFAULTS:
            seen |= {p.id for p in moment_prompts("default_off", AccountFacts("c", band), d)}  # type: ignore[arg-type]
        for m in ("block", "report"):
            seen |= {p.id for p in moment_prompts(m, AccountFacts("c", band))}  # type: ignore[arg-type]
    return seen


def test_every_emitted_prompt_is_in_the_catalogue() -> None:
    catalogue = load_prompts()
    emitted = emitted_prompt_ids()
    assert emitted == set(PROMPT_IDS)
    assert emitted <= set(catalogue)
    assert set(catalogue) == set(PROMPT_IDS)  # nothing stale in the catalogue either
    for prompt in catalogue.values():
        assert 40 < len(prompt.text) < 400


def test_settings_are_strict() -> None:
    with pytest.raises(ValueError):
        ContactSettings.model_validate({"unknown_age_as_kid": True})
    with pytest.raises(ValueError):
        ContactSettings.model_validate({"spam_band": "severe"})


def test_decision_has_the_api_shape() -> None:
    got = decide(
        AccountFacts("a", "adult"), AccountFacts("t", "13-15"), Relationship(), "low", "message"
    )
    assert got.model_dump(mode="json") == {
        "allow": True,
        "requires_confirmation": True,
        "route_to": "requests",
        "prompts": [{"id": "message_unknown", "audience": "target"}],
        "reasons": ["f1.child_confirms_non_connection"],
    }

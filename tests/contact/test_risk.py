"""The risk detectors, the score and band, and incremental == from-scratch."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from bastion.contact.model import Event
from bastion.contact.risk import (
    DETECTORS,
    Contribution,
    FanOutSettings,
    RiskSettings,
    RiskState,
    StrangerConversationSettings,
    recompute,
)
from tests.contact.helpers import T0, account, at, connect, ev, message


def state_of(events: list[Event], settings: RiskSettings | None = None) -> RiskState:
    state = RiskState(settings)
    for e in events:
        state.apply(e)
    return state


def kids(n: int, band: str = "13-15", country: str = "GB", prefix: str = "k") -> list[Event]:
    return [account(f"{prefix}{i}", band, country=country) for i in range(n)]


def tick(hours: float = 12) -> Event:
    """An unrelated event that moves the stream's latest time on (past the response grace)."""
    return message("other1", "other2", at(hours=hours))


def contribution(state: RiskState, acc: str, name: str):  # type: ignore[no-untyped-def]
    return next(c for c in state.result(acc).contributions if c.detector == name)


def test_every_detector_reports_even_when_quiet() -> None:
    state = state_of([account("a", "adult")])
    result = state.result("a")
    assert [c.detector for c in result.contributions] == list(DETECTORS)
    assert result.score == 0 and result.band == "low" and result.fired() == ()
    assert all(c.explanation for c in result.contributions)


def test_fanout_to_stranger_minors_with_low_response() -> None:
    events = [account("g", "adult", country="GB"), *kids(8)]
    events += [
        ev("connection_request", at(minutes=10 * i), actor="g", target=f"k{i}") for i in range(8)
    ]
    events.append(ev("connection_accept", at(hours=2), actor="k0", target="g"))
    state = state_of([*events, tick()])
    fan = contribution(state, "g", "fanout")
    assert fan.fired and fan.points == 30 + 2 * 3
    assert fan.evidence == {
        "max_in_window": 8,
        "stranger_minors": 8,
        "settled": 8,
        "responded": 1,
    }
    gap = contribution(state, "g", "age_gap")
    assert gap.points == 30 and gap.evidence["younger_stranger_minors"] == 8
    assert state.result("g").band == "high"


def test_explanations_are_formatted_when_read_and_compare_as_text() -> None:
    """A rescoring keeps each explanation's template and arguments; the text read is the full
    sentence, and a contribution equals one rebuilt from its stored text (the API's read)."""
    events = [account("g", "adult", country="GB"), *kids(8)]
    events += [
        ev("connection_request", at(minutes=10 * i), actor="g", target=f"k{i}") for i in range(8)
    ]
    events.append(ev("connection_accept", at(hours=2), actor="k0", target="g"))
    state = state_of([*events, tick()])
    texts = {c.detector: c.explanation for c in state.result("g").contributions}
    assert texts["fanout"] == (
        "first contacted 8 stranger minors within 24 h; 1 of 8 past the grace period responded"
    )
    assert texts["age_gap"] == "a adult account contacted 8 much younger stranger minors"
    assert texts["new_account"] == "not a new account contacting stranger minors"
    assert texts["blocked_reported"] == "0 minors blocked or reported the account"
    assert "{" not in "".join(texts.values())
    for c in state.result("g").contributions:
        stored = Contribution(c.detector, c.points, c.fired, c.explanation, dict(c.evidence))
        assert stored == c and c == stored and hash(stored) == hash(c)
        other = Contribution(c.detector, c.points, c.fired, c.explanation + ".", c.evidence)
        assert other != c


def test_fanout_respects_the_window_and_responses() -> None:
    events = [account("g", "adult"), *kids(6)]
    # one contact a day: never 5 within 24 h
    events += [message("g", f"k{i}", at(days=i)) for i in range(6)]
    assert not contribution(state_of(events), "g", "fanout").fired
    wide = RiskSettings(fanout=FanOutSettings(window_hours=24 * 7))
    assert contribution(state_of(events, wide), "g", "fanout").fired
    # most children write back: not a fan-out
    replies = [message(f"k{i}", "g", at(days=i, minutes=5)) for i in range(4)]
    assert not contribution(state_of(events + replies, wide), "g", "fanout").fired


def test_mutual_connections_make_contacts_not_strangers() -> None:
    events = [account("coach", "adult"), account("club", "adult"), *kids(8)]
    events += connect("coach", "club", at(days=-30))
    for i in range(8):
        events += connect("club", f"k{i}", at(days=-20))
    events += [
        ev("connection_request", at(minutes=i), actor="coach", target=f"k{i}") for i in range(8)
    ]
    state = state_of(events)
    assert not contribution(state, "coach", "fanout").fired
    assert not contribution(state, "coach", "age_gap").fired
    assert state.mutual_connections("coach", "k3") == 1
    # the same requests made before the club connection existed would be stranger contacts
    late = [e for e in events if not (e.type == "connection_accept" and e.actor == "club")]
    assert contribution(state_of([*late, tick()]), "coach", "fanout").fired


def test_age_gap_between_children() -> None:
    events = [account("t", "16-17"), account("y", "under13"), account("p", "13-15")]
    events += [message("t", "y", at()), message("t", "p", at())]
    gap = contribution(state_of(events), "t", "age_gap")
    assert gap.evidence == {"younger_stranger_minors": 1} and gap.points == 10


def test_new_account_contacting_minors() -> None:
    new = account("n", "adult", created_at=at(hours=-5).isoformat())
    events = [new, *kids(2), message("n", "k0", at()), message("n", "k1", at(minutes=3))]
    c = contribution(state_of(events), "n", "new_account")
    assert c.fired and c.evidence == {"account_age_hours": 5, "stranger_minors": 2}
    old = [account("n", "adult"), *events[1:]]
    assert not contribution(state_of(old), "n", "new_account").fired


def test_blocked_and_reported_by_minors() -> None:
    events = [account("x", "adult"), *kids(10), account("grown", "adult")]
    events += [message("x", f"k{i}", at(minutes=i)) for i in range(10)]
    events += [ev("block", at(hours=1), actor="k1", target="x")]
    events += [ev("report", at(hours=1), actor="k2", target="x", category="grooming")]
    events += [ev("block", at(hours=1), actor="grown", target="x")]  # adults do not count
    c = contribution(state_of(events), "x", "blocked_reported")
    assert c.points == 25
    assert c.evidence == {
        "minors": 2,
        "blocked": 1,
        "reported": 1,
        "reported_grooming_or_sextortion": 1,
        "minors_contacted": 10,
    }
    one = [e for e in events if e.type != "report"]
    assert not contribution(state_of(one), "x", "blocked_reported").fired


def test_cross_country_without_mutuals() -> None:
    events = [account("r", "16-17", country="XA"), *kids(3, country="GB")]
    events += [message("r", f"k{i}", at(minutes=i)) for i in range(3)]
    c = contribution(state_of(events), "r", "cross_country")
    assert c.fired and c.evidence == {"stranger_minors_abroad": 3}


def test_fast_escalation_within_messages_or_minutes() -> None:
    base = [account("s", "adult"), *kids(2)]
    quick = [message("s", "k0", at(minutes=i)) for i in range(3)]
    quick.append(ev("flag", at(minutes=4), account="s", target="k0", kind="image_request"))
    c = contribution(state_of(base + quick), "s", "fast_escalation")
    assert c.fired and c.points == 35 and c.evidence == {"minors": 1, "flags_image_request": 1}
    # after 30 messages over three days: not fast
    slow = [message("s", "k1", at(hours=3 * i)) for i in range(30)]
    slow.append(ev("flag", at(days=4), account="s", target="k1", kind="offplatform_handle"))
    assert not contribution(state_of(base + slow), "s", "fast_escalation").fired
    # a flag kind that is not an escalation kind
    secrecy = [
        *quick[:3],
        ev("flag", at(minutes=4), account="s", target="k0", kind="secrecy_request"),
    ]
    assert not contribution(state_of(base + secrecy), "s", "fast_escalation").fired


def test_gifts_to_unconnected_minors() -> None:
    events = [account("a", "adult"), account("parent", "adult"), *kids(2)]
    events += connect("parent", "k1", at(days=-10)) + connect("parent", "a", at(days=-10))
    events += [
        ev("gift", at(), actor="a", target="k0"),
        ev("payment", at(), actor="a", target="k1"),
    ]
    c = contribution(state_of(events), "a", "gifts_to_minors")
    assert c.evidence == {"minors": 1, "gifts": 1} and c.points == 15  # k1 shares the parent
    teen = [account("t", "16-17"), *kids(1), ev("gift", at(), actor="t", target="k0")]
    assert not contribution(state_of(teen), "t", "gifts_to_minors").fired


def test_ban_evasion_through_shared_hashes() -> None:
    events = [
        account("old", "adult", device_hashes=["dev:aaaa1111"]),
        ev("ban", at(days=-2), account="old"),
        account("new", "adult", identifier_hashes=["id:bbbb2222"]),
        ev(
            "profile_change", at(), account="new", changed=["photo"], device_hashes=["dev:aaaa1111"]
        ),
    ]
    state = state_of(events)
    c = contribution(state, "new", "ban_evasion")
    assert c.points == 45 and c.evidence == {"shared_hashes": 1, "banned_accounts": 1}
    assert not contribution(state, "old", "ban_evasion").fired  # the banned one itself
    state.apply(ev("ban", at(days=1), account="old", lifted=True))
    assert not contribution(state, "new", "ban_evasion").fired


def test_risk_comes_from_metadata_when_account_facts_arrive_late() -> None:
    """Scores cached before a child's account event must be refreshed when it arrives."""
    state = RiskState()
    for i in range(6):
        state.apply(message("g", f"k{i}", at(minutes=i)))
    assert state.rescore()["g"].score == 0  # the targets' ages are not known yet
    for e in kids(6):
        state.apply(e)
    state.apply(account("g", "adult"))
    assert state.results()["g"].band == "medium"  # the children may still answer
    state.apply(tick())  # an unrelated event: the grace period is over, "g" is rescored
    assert state.rescore()["g"].band == "high"


def test_response_rate_waits_for_the_grace_period() -> None:
    events = [account("g", "adult"), *kids(6)]
    events += [message("g", f"k{i}", at(minutes=i)) for i in range(6)]
    state = state_of(events)
    quiet = contribution(state, "g", "fanout")
    assert not quiet.fired and quiet.evidence["settled"] == 0
    # four children answer within the grace period: never a low response rate
    answered = [message(f"k{i}", "g", at(hours=1)) for i in range(4)]
    assert not contribution(state_of([*events, *answered, tick()]), "g", "fanout").fired
    state.apply(tick(hours=5))  # not yet past six hours
    assert not contribution(state, "g", "fanout").fired
    state.apply(tick(hours=6.5))
    assert contribution(state, "g", "fanout").fired


def test_duplicates_change_nothing_and_conflicts_are_reported() -> None:
    state = RiskState()
    e = message("a", "b", at())
    assert state.apply(e) == "applied"
    assert state.apply(e) == "duplicate"
    other = message("a", "c", at())
    clash = other.model_copy(update={"event_id": e.event_id})
    assert state.apply(clash) == "conflict"
    assert "c" not in state.accounts


def conversation(a: str, child: str, replies: int = 2) -> list[Event]:
    """``a`` writes first; an hour later they take turns, the child answering ``replies`` times."""
    out = [message(a, child, at())]
    for i in range(2 * replies + 1):
        sender, receiver = (child, a) if i % 2 else (a, child)
        out.append(message(sender, receiver, at(hours=3, minutes=i)))
    return out


def test_stranger_conversation_started_by_an_adult_outside_any_connection() -> None:
    """A slow groomer's first day: one child, no flag yet, a conversation it keeps up."""
    base = [account("g", "adult"), *kids(1), account("p", "adult")]
    talk = conversation("g", "k0")  # 4 messages from g, 2 replies
    state = state_of(base + talk)
    c = contribution(state, "g", "stranger_conversation")
    assert c.fired and c.points == 50 and c.evidence == {"minors": 1, "replies": 2}
    assert state.result("g").band == "high"  # with age_gap's 10: a case for a person
    # one reply is not yet a conversation
    one = conversation("g", "k0", replies=1)
    assert not contribution(state_of(base + one), "g", "stranger_conversation").fired
    # the child wrote first: not the pattern
    first = [message("k0", "g", at(minutes=-5))]
    assert not contribution(state_of(base + first + talk), "g", "stranger_conversation").fired
    # the child accepted the adult as a connection: no longer outside a connection
    accepted = [ev("connection_accept", at(hours=1), actor="k0", target="g")]
    assert not contribution(state_of(base + talk + accepted), "g", "stranger_conversation").fired
    # a relative who connects the child's parent afterwards shares a connection now
    family = connect("p", "k0", at(days=-30)) + connect("g", "p", at(hours=5))
    assert not contribution(state_of(base + talk + family), "g", "stranger_conversation").fired
    # a teen one band older is a peer; two bands older counts (age_gap's gap)
    teen = [account("t", "16-17")]
    peer = state_of([*teen, account("k0", "13-15"), *conversation("t", "k0")])
    assert not contribution(peer, "t", "stranger_conversation").fired
    older = state_of([*teen, account("k0", "under13"), *conversation("t", "k0")])
    assert contribution(older, "t", "stranger_conversation").fired
    off = RiskSettings(stranger_conversation=StrangerConversationSettings(enabled=False))
    quiet = state_of(base + talk, off).result("g")
    assert "stranger_conversation" not in [c.detector for c in quiet.contributions]


def test_band_thresholds() -> None:
    s = RiskSettings(medium_at=10, high_at=20)
    events = [account("t", "16-17"), account("y", "under13"), message("t", "y", at())]
    assert state_of(events, s).result("t").band == "medium"
    assert state_of(events).result("t").band == "low"
    with pytest.raises(ValueError):
        RiskSettings.model_validate({"fanout": {"window": 3}})


# -- incremental equals from scratch ------------------------------------------------------------

BANDS = ["under13", "13-15", "16-17", "adult", "unknown"]
#: A short conversation is enough in the random streams, so they exercise the detector.
TALK = StrangerConversationSettings(min_messages=2, min_replies=1)


def random_events(rng: random.Random, n_accounts: int = 12, n_events: int = 220) -> list[Event]:
    accs = [f"u{i}" for i in range(n_accounts)]
    hashes = [f"dev:{i:08d}" for i in range(4)]
    out: list[Event] = []

    def when() -> object:
        return T0 + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))

    for a in accs:
        for _ in range(rng.choice([0, 1, 1, 2])):  # none, one, or an update
            out.append(
                ev(
                    "account",
                    when(),  # type: ignore[arg-type]
                    account=a,
                    age_band=rng.choice(BANDS),
                    country=rng.choice(["GB", "GB", "IE", "XA"]),
                    created_at=(T0 - timedelta(days=rng.choice([1, 3, 300]))).isoformat(),
                    device_hashes=rng.sample(hashes, rng.randrange(0, 2)),
                )
            )
    kinds = ["message"] * 8 + ["connection_request"] * 3 + ["connection_accept"] * 3
    kinds += ["connection_remove", "block", "report", "gift", "payment", "flag", "flag", "ban"]
    kinds += ["profile_change"]
    for _ in range(n_events):
        kind = rng.choice(kinds)
        a, b = rng.sample(accs, 2)
        t = when()
        if kind == "ban":
            out.append(ev("ban", t, account=a, lifted=rng.random() < 0.3))  # type: ignore[arg-type]
        elif kind == "profile_change":
            out.append(
                ev(
                    "profile_change",
                    t,  # type: ignore[arg-type]
                    account=a,
                    changed=["age_band"],
                    age_band=rng.choice(BANDS),
                    device_hashes=rng.sample(hashes, 1),
                )
            )
        elif kind == "flag":
            k = rng.choice(
                ["offplatform_handle", "image_request", "payment_request", "secrecy_request"]
            )
            target = b if rng.random() < 0.8 else None
            out.append(ev("flag", t, account=a, target=target, kind=k))  # type: ignore[arg-type]
        elif kind == "message":
            out.append(message(a, b, t))  # type: ignore[arg-type]
        elif kind == "report":
            out.append(
                ev("report", t, actor=a, target=b, category=rng.choice(["grooming", "spam"]))
            )  # type: ignore[arg-type]
        else:
            out.append(ev(kind, t, actor=a, target=b))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("seed", range(40))
def test_incremental_equals_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    # dense graphs (every account touched again and again) and sparse ones (stale scores show)
    events = random_events(rng, n_accounts=12 if seed % 3 else 60)
    # a loose threshold so the random graphs produce non-trivial scores to compare
    settings = RiskSettings(
        fanout=FanOutSettings(
            min_targets=2, max_response_rate=0.8, response_grace_hours=seed % 3 * 4
        ),
        stranger_conversation=TALK,
        medium_at=10,
        high_at=25,
        lookback_days=1 if seed % 2 else 30,  # odd seeds: contacts expire within the stream
    )
    expected = recompute(events, settings)
    # out of order, with duplicates, scored at random moments in between
    stream = events + rng.sample(events, len(events) // 5)
    if seed % 4 == 0:
        rng.shuffle(stream)  # any order at all
    else:  # roughly in time order, events up to six hours late: the stream's time advances
        late = {id(e): timedelta(hours=rng.uniform(0, 6)) for e in stream}
        stream.sort(key=lambda e: e.time + late[id(e)])
    state = RiskState(settings)
    for e in stream:
        assert state.apply(e) in ("applied", "duplicate")
        if rng.random() < 0.15:
            state.rescore()
        if rng.random() < 0.05:
            state.result(rng.choice(sorted(state.accounts)))
    assert state.results() == expected
    assert set(expected) == state.accounts


def test_the_random_streams_exercise_every_detector() -> None:
    """Guards the property test against comparing only zeros."""
    settings = RiskSettings(
        fanout=FanOutSettings(min_targets=2, max_response_rate=0.8),
        stranger_conversation=TALK,
        medium_at=10,
        high_at=25,
    )
    fired: set[str] = set()
    bands: set[str] = set()
    for seed in range(40):
        for result in recompute(random_events(random.Random(seed)), settings).values():
            fired.update(result.fired())
            bands.add(result.band)
    assert fired == set(DETECTORS)
    assert bands == {"low", "medium", "high"}


def test_relationship_and_facts_feed_the_contact_decision() -> None:
    from bastion.contact.decide import decide

    events = [account("g", "adult"), account("p", "adult"), *kids(2)]
    events += connect("p", "k0", at(days=-3)) + connect("p", "g", at(days=-3))
    events += connect("g", "k0", at(days=-1))
    events += [ev("block", at(), actor="k1", target="g")]
    state = state_of(events)
    rel = state.relationship("g", "k0")
    assert rel.connected and rel.mutual_connections == 1 and not rel.blocked
    assert state.relationship("g", "k1").blocked and state.relationship("k1", "g").blocked
    actor, target = state.account_facts("g"), state.account_facts("k0")
    assert target.age_band == "13-15"
    band = state.result("g").band
    assert decide(actor, target, rel, band, "message").route_to == "inbox"
    state.apply(ev("connection_remove", at(minutes=5), actor="k0", target="g"))
    rel = state.relationship("g", "k0")
    assert not rel.connected
    assert decide(actor, target, rel, band, "message").route_to == "requests"


def test_contacts_older_than_the_lookback_stop_counting() -> None:
    events = [account("g", "adult"), *kids(3)]
    events += [message("g", f"k{i}", at(minutes=i)) for i in range(3)]
    state = state_of(events)
    assert contribution(state, "g", "age_gap").points == 30
    state.apply(tick(hours=24 * 29))
    assert contribution(state, "g", "age_gap").points == 30
    state.apply(tick(hours=24 * 30 + 1))  # an unrelated event: "g" wakes up and is rescored
    assert state.rescore()["g"].score == 0
    state.apply(message("g", "k0", at(days=31)))  # a new message is not a new first contact
    assert state.result("g").score == 0

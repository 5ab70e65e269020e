"""A keyword bank shared through Bastion-to-Bastion feeds with 2-of-3 vouching (issue 16): the
subscriber enables a keyword entry once two of three publishers in its vouch group carry it, and
its matcher then finds the term in obfuscated text. SQLite and PostgreSQL; non-explicit terms."""

from __future__ import annotations

import json
from collections.abc import Callable

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.index.matcher import Matcher
from bastion.signals.base import Signal, SignalType
from tests.feeds.conftest import exchanges, subscribe
from tests.feeds.loopback import Publisher

QUERY = json.dumps({"and": [{"or": ["secret game"]}], "not": ["board game club"]})


def test_keyword_bank_through_feeds_with_two_of_three_vouching(
    stores: Callable[[str], Store],
) -> None:
    pubs = [Publisher(stores(f"pub-{c}"), f"Org {c.upper()}") for c in "abc"]
    try:
        shared = NewEntry(SignalType.TEXT, QUERY, labels=["grooming"], metadata={"language": "en"})
        pubs[0].store.add_entries("pub", [shared])
        pubs[1].store.add_entries("pub", [shared])
        pubs[2].store.add_entries("pub", [NewEntry(SignalType.TEXT, "delete this chat")])
        for pub in pubs:
            pub.feeds.publish("shared")
        sub = stores("sub")
        xs = exchanges(sub)
        for c, pub in zip("abc", pubs, strict=True):
            subscribe(xs, pub, f"from-{c}", vouch_group="g", min_vouchers=2)
        assert xs.sync("from-a").error is None
        canonical = '{"and":[{"or":["secret game"]}],"not":["board game club"]}'
        (held,) = sub.find_entries("from-a", value=canonical)
        assert held.signal_type is SignalType.TEXT and not held.enabled
        assert "awaiting vouchers (1 of 2)" in held.disabled_reason
        assert xs.sync("from-b").error is None and xs.sync("from-c").error is None
        enabled = list(sub.iter_entries(banks=["from-a", "from-b", "from-c"]))
        assert [e.value for e in enabled] == [held.value, held.value]
        assert {e.source for e in enabled} == {"Org A", "Org B"}
        # Labels and provenance travel; a feed record carries no metadata (so no language).
        assert all(e.labels[:1] == ["grooming"] for e in enabled)
        (lonely,) = sub.find_entries("from-c", value="delete this chat")
        assert not lonely.enabled and "awaiting vouchers" in lonely.disabled_reason
        matcher = Matcher.from_entries(sub.iter_index_entries())
        found = matcher.match([Signal(SignalType.TEXT, "fancy a S3CRET G4ME later?")])
        assert {m.bank for m in found} <= {"from-a", "from-b"} and found
        assert matcher.match([Signal(SignalType.TEXT, "please delete this chat")]) == []
        assert matcher.match([Signal(SignalType.TEXT, "secret game at the board game club")]) == []
    finally:
        for pub in pubs:
            pub.stop()

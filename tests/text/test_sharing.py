"""Keyword entries shared (issue 16): python-threatexchange trend_query/raw_text lines in and out,
the IWF-style list's keyword variant, and ThreatExchange TREND_QUERY/RAW_TEXT indicators through
the exchange (against the fake Graph API on loopback). Non-explicit terms only."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from bastion.banks.formats import ParseError, parse, write_string
from bastion.banks.model import NewEntry
from bastion.exchanges import Poisoned, Upsert
from bastion.exchanges.threatexchange import (
    ThreatExchangeConfig,
    ThreatExchangeCredentials,
    ThreatExchangeExchange,
)
from bastion.signals.base import SignalType
from tests.exchanges.fake_threatexchange import GROUP, TOKEN, FakeThreatExchange

QUERY = {"and": [{"or": ["secret game", "hidden game"]}], "not": ["board game club"]}


def _parse(text: str, fmt: str | None = None) -> list[NewEntry | ParseError]:
    return list(parse(io.StringIO(text), fmt))


def test_pytx_trend_query_and_raw_text_round_trip() -> None:
    lines = (
        f"trend_query {json.dumps(QUERY)}\n"
        "raw_text add me on another app\n"
        "trend_query secret game\n"  # not JSON: refused, the rest read
        'trend_query {"and": [{"or": ["regex-/x.y/"]}]}\n'
    )
    got = _parse(lines)  # detected as pytx from its first word
    good = [e for e in got if isinstance(e, NewEntry)]
    bad = [e for e in got if isinstance(e, ParseError)]
    assert [(e.signal_type, e.value) for e in good] == [
        (SignalType.TEXT, json.dumps(QUERY, separators=(",", ":"))),
        (SignalType.TEXT, "add me on another app"),
    ]
    assert [b.line for b in bad] == [3, 4]
    assert "JSON object" in bad[0].message and "regular-expression" in bad[1].message
    out = write_string(good, "pytx")
    # Everything goes out as a trend query (a term: one group of one), and comes back the same.
    assert out.splitlines()[1] == 'trend_query {"and":[{"or":["add me on another app"]}],"not":[]}'
    again = [e for e in _parse(out) if isinstance(e, NewEntry)]
    assert json.loads(again[0].value) == QUERY
    assert json.loads(again[1].value) == {"and": [{"or": ["add me on another app"]}], "not": []}


def test_iwf_style_keyword_variant() -> None:
    rows = [
        {"id": "k-1", "keyword": "secret game", "language": "en"},
        {"id": "k-2", "keyword": "jogo secreto", "language": "pt-BR", "added": "2026-01-02"},
        {"id": "k-3", "keyword": "secret game", "md5": "0" * 32},
        {"id": "k-4", "keyword": "!"},
        {"id": "h-1", "category": "A", "md5": "a" * 32},
    ]
    got = _parse("".join(json.dumps(r) + "\n" for r in rows), "iwf")
    by_key = {getattr(e, "external_id", None) or getattr(e, "key", None): e for e in got}
    k1 = by_key["k-1"]
    assert isinstance(k1, NewEntry) and k1.signal_type is SignalType.TEXT
    assert (k1.value, k1.labels, k1.metadata) == (
        "secret game",
        ["csam_trade", "iwf:keyword"],
        {"language": "en"},
    )
    assert isinstance(by_key["k-2"], NewEntry) and by_key["k-2"].added_at is not None
    assert isinstance(by_key["k-3"], ParseError) and "not both" in by_key["k-3"].message
    assert isinstance(by_key["k-4"], ParseError) and "fewer than 2" in by_key["k-4"].message
    assert isinstance(by_key["h-1"], NewEntry) and by_key["h-1"].signal_type is SignalType.MD5
    csv_list = "id,keyword,language\nk-1,secret game,en\nk-2,delete this chat,\n"
    csv_got = _parse(csv_list, "iwf")
    assert [(e.value, e.metadata) for e in csv_got if isinstance(e, NewEntry)] == [
        ("secret game", {"language": "en"}),
        ("delete this chat", {}),
    ]


@pytest.fixture
def fake() -> Iterator[FakeThreatExchange]:
    with FakeThreatExchange() as server:
        yield server


def test_threatexchange_trend_queries_and_raw_text(fake: FakeThreatExchange) -> None:
    query = fake.add(json.dumps(QUERY), type="TREND_QUERY")
    raw = fake.add("delete this chat", type="RAW_TEXT")
    bad = fake.add('{"and": [{"or": ["regex-/a+/"]}]}', type="TREND_QUERY")
    fake.tick()
    cfg = ThreatExchangeConfig(
        base_url=fake.origin,
        privacy_group=GROUP,
        settle_seconds=0,
        types=("TREND_QUERY", "RAW_TEXT"),
    )
    with ThreatExchangeExchange(cfg, ThreatExchangeCredentials(access_token=TOKEN)) as ex:
        ex.clock = lambda: fake.clock
        items = [i for page in ex.fetch(None) for i in page.items]
    ups = {i.key: i.entries[0] for i in items if isinstance(i, Upsert)}
    assert ups[query].signal_type is SignalType.TEXT
    assert json.loads(ups[query].value) == QUERY
    assert ups[query].metadata["type"] == "TREND_QUERY"
    assert (ups[raw].signal_type, ups[raw].value) == (SignalType.TEXT, "delete this chat")
    (poisoned,) = [i for i in items if isinstance(i, Poisoned)]
    assert poisoned.key == bad and "regular-expression" in poisoned.error

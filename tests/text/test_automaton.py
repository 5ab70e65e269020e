# ruff: noqa: RUF001  (look-alike characters are what this file is about)
"""Keyword matching: whole words and phrases over every entry at once, spans in the original,
the normalisations each match took, trend queries with negative terms, and a term matching
itself in every obfuscation the generator makes (property test). Non-explicit terms only."""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.text.automaton import CHUNK, REBUILD_AT, TextIndex
from bastion.text.obfuscate import KINDS, obfuscate
from bastion.text.query import canonical_keyword, parse_keyword, query_json

TERMS = [
    "secret game",
    "add me on another app",
    "don't tell your parents",
    "delete this chat",
    "are you home alone",
    "our little secret",
    "what school do you go to",
    "keep it between us",
]


def _index(*values: str) -> TextIndex:
    index = TextIndex()
    for i, value in enumerate(values, start=1):
        index.add(i, value)
    return index


def test_whole_words_and_phrases_only() -> None:
    index = _index("secret game", "secret")
    assert [h.entry_id for h in index.match("a Secret Game tonight")] == [1, 2]
    assert index.match("my secretary") == []
    assert index.match("secretgames") == []
    assert [h.entry_id for h in index.match("the secret")] == [2]


def test_spans_point_into_the_original_and_name_the_steps() -> None:
    index = _index("add me on another app")
    text = "hey!! pls 4dd  m3 on аnother app :)"
    (hit,) = index.match(text)
    assert hit.entry_id == 1
    (span,) = hit.spans
    assert text[span[0] : span[1]] == "4dd  m3 on аnother app"
    assert hit.normalisations == ("confusables", "leetspeak")
    assert hit.count == 1


def test_every_occurrence_is_counted_and_the_first_ones_reported() -> None:
    index = _index("secret game")
    text = " and ".join(["secret game"] * 12)
    (hit,) = index.match(text)
    assert hit.count == 12
    assert len(hit.spans) == 10
    assert all(text[a:b] == "secret game" for a, b in hit.spans)


def test_spaced_out_phrase_and_a_lone_letter_beside_it() -> None:
    index = _index("secret game", "play secret")
    text = "let's play a S.E.C.R.E.T g@me"
    hits = {h.entry_id: h for h in index.match(text)}
    assert set(hits) == {1}
    (span,) = hits[1].spans
    assert text[span[0] : span[1]] == "S.E.C.R.E.T g@me"
    assert hits[1].normalisations == ("case", "leetspeak", "separators")
    (whole,) = index.match("s e c r e t g a m e")
    assert whole.normalisations == ("separators",)


def test_trend_query_needs_every_group_and_no_negative_term() -> None:
    query = {
        "and": [{"or": ["don't tell", "do not tell"]}, {"or": ["parents", "mum", "dad"]}],
        "not": ["surprise party"],
    }
    index = _index(json.dumps(query))
    (hit,) = index.match("Do NOT tell your mum about this")
    assert [("Do NOT tell your mum about this")[a:b] for a, b in hit.spans] == [
        "Do NOT tell",
        "mum",
    ]
    assert index.match("do not tell anyone") == []
    assert index.match("don't tell mum about the surprise party") == []
    assert index.match("don't tell mum about the surpr1se p4rty") == []


def test_removal_and_replacement_take_effect_at_once() -> None:
    index = _index("secret game", "delete this chat")
    assert len(index.match("secret game, delete this chat")) == 2
    index.remove(1)
    assert [h.entry_id for h in index.match("secret game, delete this chat")] == [2]
    index.add(2, "our little secret")
    assert index.match("delete this chat") == []
    assert [h.entry_id for h in index.match("our little secret")] == [2]
    assert 1 not in index and 2 in index and len(index) == 1


def test_many_changes_after_a_build_rebuild_the_automaton() -> None:
    index = TextIndex()
    index.add(0, "secret game")
    index.build()
    for i in range(1, REBUILD_AT + 50):
        index.add(i, f"term number {i} here")
    for i in range(1, REBUILD_AT // 2):
        index.remove(i)
    assert [h.entry_id for h in index.match("secret game")] == [0]
    assert [h.entry_id for h in index.match(f"term number {REBUILD_AT} here")] == [REBUILD_AT]
    assert index.match("term number 3 here") == []


def test_unspaced_scripts_match_inside_a_sentence() -> None:
    index = _index("秘密游戏")
    (hit,) = index.match("我们玩一个秘密游戏吧")
    assert hit.spans == ((5, 9),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("a", "fewer than 2"),
        ("!!!", "fewer than 2"),
        ("x\x00y", "NUL"),
        ('{"and": []}', "non-empty list"),
        ('{"and": [{"or": ["regex-/se.ret/"]}]}', "regular-expression"),
        ('{"and": [{"or": []}]}', "and[0].or is empty"),
        ('{"and": [{"or": ["ok term"]}], "maybe": []}', "only 'and' and 'not'"),
        ('{"and": [{"or": "secret"}]}', "must be a list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_keywords_say_why(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        canonical_keyword(value)


def test_canonical_forms_round_trip() -> None:
    assert canonical_keyword("  secret \n game ") == "secret game"
    raw = '{"not": ["surprise"], "and": [{"or": ["secret game", "secret game"]}]}'
    canon = canonical_keyword(raw)
    assert canon == '{"and":[{"or":["secret game"]}],"not":["surprise"]}'
    assert canonical_keyword(canon) == canon
    assert query_json(parse_keyword(canon)) == json.loads(canon)
    assert query_json(parse_keyword("secret game")) == {"and": [{"or": ["secret game"]}], "not": []}


words = st.text(alphabet="abcdefghijkmnopqrstuvwxyz", min_size=3, max_size=9)
phrases = st.one_of(st.sampled_from(TERMS), st.lists(words, min_size=1, max_size=4).map(" ".join))


@settings(max_examples=300, deadline=None)
@given(phrases, st.sampled_from(KINDS), st.randoms(use_true_random=False))
def test_a_term_matches_itself_in_every_obfuscation(
    term: str, kind: str, rng: random.Random
) -> None:
    index = TextIndex()
    try:
        index.add(7, term)
    except ValueError:
        return  # e.g. "aaa": too short once repeats are reduced; refused when added
    disguised = obfuscate(term, kind, rng)
    text = f"hey there {disguised} ok bye"
    hits = index.match(text)
    assert [h.entry_id for h in hits] == [7], (term, kind, disguised)
    (lo, hi), *_ = hits[0].spans
    # The span lies within the disguised term (give or take a separator at its edges).
    start = len("hey there ")
    assert start <= lo < hi <= start + len(disguised)


def test_a_long_text_is_searched_in_pieces_with_spans_into_the_whole() -> None:
    index = _index(
        "secret game",
        json.dumps({"and": [{"or": ["delete this chat"]}, {"or": ["our little secret"]}]}),
        json.dumps({"and": [{"or": ["are you home alone"]}], "not": ["surprise party"]}),
    )
    filler = "\n\n".join("an ordinary paragraph about the weather today" for _ in range(400))
    text = (
        f"{filler}\n\nplay a S.E.C.R.E.T game\n\n{filler}\n\ndelete this chat"
        f"\n\n{filler}\n\nour l1ttle secret\n\nare you home alone\n\n{filler}\n\nsurprise party"
    )
    assert len(text) > 4 * CHUNK
    hits = {h.entry_id: h for h in index.match(text)}
    assert set(hits) == {1, 2}  # the negative term far away still suppresses entry 3
    (span,) = hits[1].spans
    assert text[span[0] : span[1]] == "S.E.C.R.E.T game"
    assert [text[a:b] for a, b in hits[2].spans] == ["delete this chat", "our l1ttle secret"]
    assert hits[2].normalisations == ("leetspeak",)

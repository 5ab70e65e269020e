# ruff: noqa: RUF001  (look-alike characters are what this file is about)
"""Text normalisation: each step on its own, the fast path against the mapped one, idempotence
(property tests) and the map back to the original. Fixtures are non-explicit phrases only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.text.normalise import (
    ALL_STEPS,
    STEPS,
    needed,
    normalise,
    normalise_joined,
    normalise_joined_re,
    normalise_mapped,
    normalise_mapped_re,
    normalise_with,
    normalise_with_spans,
)

#: Text of any kind, with the characters the steps care about made likely.
_SPECIAL = list("sSecrt3$@!|+1l0 .-_*'’\u200b\u200d\u0301\u0336ѕеаο𝐬ｓßİ…😀秘密")
texts = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(_SPECIAL)), max_size=80)


@pytest.mark.parametrize(
    ("text", "skeleton", "step"),
    [
        ("ｓｅｃｒｅｔ ｇａｍｅ", "secret game", "nfkc"),
        ("𝐬𝐞𝐜𝐫𝐞𝐭 game", "secret game", "nfkc"),
        ("SECRET Game", "secret game", "case"),
        ("s̶e̶c̶r̶e̶t̶ gáme", "secret game", "marks"),
        ("se\u200bcr\u200det ga\u2060me", "secret game", "invisible"),
        ("ѕеcrеt gаmе", "secret game", "confusables"),
        ("s3cr3t g4m3", "secret game", "leetspeak"),
        ("$ecret g@me", "secret game", "leetspeak"),
        ("s.e.c.r.e.t game", "secret game", "separators"),
        ("s e c r e t game", "secret game", "separators"),
        ("s-e-c-r-e-t game", "secret game", "separators"),
        ("seeeecret gaaame", "secret game", "repeats"),
    ],
)
def test_each_step_undoes_its_obfuscation(text: str, skeleton: str, step: str) -> None:
    assert normalise(text) == skeleton
    assert needed(text, "secret game") == (step,)


def test_separators_and_apostrophes_and_the_i_l_class() -> None:
    assert normalise("Don't tell your parents!") == normalise("dont tell your parents")
    assert normalise("add me on another app") == "ad me on another ap"
    # i, l, 1, | and ! are one letter of the skeleton.
    assert normalise("s1lly") == normalise("silly") == normalise("s!lly") == normalise("s|lly")
    # A symbol after a word, or an @ starting one, is punctuation, not a letter.
    assert normalise("secret game!") == "secret game"
    assert normalise("@secret game") == "secret game"
    # Two single letters are words ("I a"); three or more in a row are a spaced-out word.
    assert normalise("a b game") == "a b game"
    assert normalise("a b c game") == "abc game"


def test_joined_words_are_reported() -> None:
    skeleton, joined = normalise_joined("play a s.e.c.r.e.t game")
    assert skeleton == "piay asecret game"  # l and i are one letter
    assert joined == ["asecret"]


def test_the_map_points_back_into_the_original() -> None:
    text = "Hey, pls 4dd  m3 on аnother app!!"
    mapped = normalise_mapped(text)
    assert mapped.text == normalise(text) == "hey pis ad me on another ap"
    i = mapped.text.index("ad me")
    lo, hi = mapped.span(i, i + len("ad me on another ap"))
    assert text[lo:hi] == "4dd  m3 on аnother app"
    assert len(mapped.starts) == len(mapped.ends) == len(mapped.text)


def test_needed_names_only_what_the_match_took() -> None:
    assert needed("secret game", "secret game") == ()
    assert needed("add me", "add me") == ()  # the term's own double letter is no repeat
    assert needed("aaadd me", "add me") == ("repeats",)
    assert needed("Ѕ3CRЕТ", "secret") == ("case", "confusables", "leetspeak")


@settings(max_examples=400, deadline=None)
@given(texts)
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


@settings(max_examples=150, deadline=None)
@given(texts, st.sampled_from(STEPS))
def test_every_step_alone_is_idempotent(text: str, step: str) -> None:
    once = normalise_with(text, {step})
    assert normalise_with(once, {step}) == once


@settings(max_examples=400, deadline=None)
@given(texts)
def test_fast_and_mapped_paths_agree(text: str) -> None:
    mapped = normalise_mapped(text)
    assert mapped.text == normalise(text)
    assert normalise_with(text, ALL_STEPS) == mapped.text
    for start, end in zip(mapped.starts, mapped.ends, strict=True):
        assert 0 <= start < end <= len(text)


@settings(max_examples=600, deadline=None)
@given(texts)
def test_compiled_and_re_paths_agree(text: str) -> None:
    assert normalise_joined(text) == normalise_joined_re(text)
    assert normalise_mapped(text) == normalise_mapped_re(text)


def test_text_past_the_first_two_planes_takes_the_re_path() -> None:
    text = "s e c r e t \U000e0041 game \U00020001"  # a tag character, a CJK extension B one
    assert (
        normalise_joined(text)
        == normalise_joined_re(text)
        == ("secret game \U00020001", ["secret"])
    )


@settings(max_examples=300, deadline=None)
@given(texts, st.sets(st.sampled_from(STEPS)))
def test_the_string_only_reference_equals_the_mapped_one(text: str, steps: set[str]) -> None:
    assert normalise_with(text, steps) == normalise_with_spans(text, steps).text

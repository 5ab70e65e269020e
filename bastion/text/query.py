"""Keyword entries: a term (a word or phrase) or a ThreatExchange trend query.

A trend query is ThreatExchange's ``TREND_QUERY`` shape,
``{"and": [{"or": [term, ...]}, ...], "not": [term, ...]}``: it matches text that holds at least
one term of every ``or`` group and none of the ``not`` terms. Every term is matched as a whole
word or phrase after normalisation (:mod:`bastion.text.normalise`). ThreatExchange's ``regex-``
terms are refused: a regular expression cannot go into the automaton, and one slow expression
would hold up every scan.

Stored values are canonical: a term with its whitespace collapsed (NFC, as written otherwise, so
a reviewer reads what the curator wrote), a query as compact JSON with its keys in a fixed order.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from bastion.text.normalise import normalise

MAX_TERM = 500
MAX_GROUPS = 32
MAX_TERMS = 256
MAX_QUERY = 64_000
#: A term's skeleton must have at least this many characters: one letter matches too much.
MIN_SKELETON = 2
REGEX_PREFIX = "regex-"


@dataclass(frozen=True, slots=True)
class Keyword:
    """A parsed keyword entry. A plain term is a query of one group of one term."""

    groups: tuple[tuple[str, ...], ...]
    negative: tuple[str, ...] = ()
    is_query: bool = False

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(t for g in self.groups for t in g) + self.negative


def _short(value: object, limit: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def canonical_term(term: object) -> str:
    """A term as stored, or ValueError saying why it cannot be one."""
    if not isinstance(term, str):
        raise ValueError(f"a keyword term must be a string, got {type(term).__name__}")
    if "\x00" in term:
        raise ValueError("a keyword term contains a NUL character")
    try:
        term.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a keyword term is not valid Unicode (it has a lone surrogate)") from None
    text = " ".join(unicodedata.normalize("NFC", term).split())
    if not text:
        raise ValueError("a keyword term is empty")
    if len(text) > MAX_TERM:
        raise ValueError(f"a keyword term is longer than {MAX_TERM} characters")
    if text.startswith(REGEX_PREFIX):
        raise ValueError(
            f"regular-expression terms ({REGEX_PREFIX}...) are not supported: {_short(text)}"
        )
    if len(normalise(text)) < MIN_SKELETON:
        raise ValueError(
            f"keyword term {_short(text)} has fewer than {MIN_SKELETON} letters or digits "
            "once normalised"
        )
    return text


def _terms(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of terms, got {type(value).__name__}")
    if len(value) > MAX_TERMS:
        raise ValueError(f"{where} has more than {MAX_TERMS} terms")
    out: list[str] = []
    for raw in value:
        try:
            term = canonical_term(raw)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if term not in out:
            out.append(term)
    return tuple(out)


def parse_query(value: Any) -> Keyword:
    """A trend query from its decoded JSON, or ValueError naming the bad part."""
    if not isinstance(value, dict):
        raise ValueError(f"a trend query must be a JSON object, got {type(value).__name__}")
    extra = set(value) - {"and", "not"}
    if extra:
        raise ValueError(f"a trend query has only 'and' and 'not', not {_short(sorted(extra))}")
    groups_in = value.get("and")
    if not isinstance(groups_in, list) or not groups_in:
        raise ValueError("a trend query needs 'and': a non-empty list of {\"or\": [terms]}")
    if len(groups_in) > MAX_GROUPS:
        raise ValueError(f"a trend query has more than {MAX_GROUPS} 'and' groups")
    groups: list[tuple[str, ...]] = []
    for i, group in enumerate(groups_in):
        if not isinstance(group, dict) or set(group) != {"or"}:
            raise ValueError(f"and[{i}] must be an object with one key, 'or'")
        terms = _terms(group["or"], f"and[{i}].or")
        if not terms:
            raise ValueError(f"and[{i}].or is empty")
        groups.append(terms)
    negative = _terms(value.get("not", []), "not")
    return Keyword(tuple(groups), negative, is_query=True)


def parse_keyword(value: str) -> Keyword:
    """A stored (or incoming) keyword value: JSON object text is a trend query, else a term."""
    if not isinstance(value, str):
        raise ValueError(f"a keyword must be a string, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("{"):
        if len(text) > MAX_QUERY:
            raise ValueError(f"a trend query is longer than {MAX_QUERY} characters")
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"a trend query is not valid JSON: {exc}") from None
        return parse_query(decoded)
    return Keyword(((canonical_term(text),),))


def query_json(keyword: Keyword) -> dict[str, Any]:
    """ThreatExchange's TREND_QUERY object for a keyword (a term becomes one group of one)."""
    return {"and": [{"or": list(g)} for g in keyword.groups], "not": list(keyword.negative)}


def canonical_keyword(value: str) -> str:
    """The stored form of a keyword value, or ValueError."""
    keyword = parse_keyword(value)
    if not keyword.is_query:
        return keyword.groups[0][0]
    return json.dumps(query_json(keyword), ensure_ascii=False, separators=(",", ":"))

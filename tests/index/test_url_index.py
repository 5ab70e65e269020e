"""UrlIndex: url, prefix and domain entries matched through normalised keys."""

from __future__ import annotations

import pytest

from bastion.index.url import UrlIndex, entry_key


@pytest.fixture
def index() -> UrlIndex:
    idx = UrlIndex()
    idx.add(1, "url", "http://example.com/abc?id=7")
    idx.add(2, "prefix", "example.com/abc")
    idx.add(3, "domain", "example.com")
    idx.add(4, "domain", "bad.test")
    idx.add(5, "prefix", "https://www.files.test:8080/share/")
    idx.add(6, "url", "[2001:db8::1]/x")
    return idx


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://EXAMPLE.com/abc?id=7#top", [(1, "url"), (2, "prefix"), (3, "domain")]),
        ("example.com/abc", [(2, "prefix"), (3, "domain")]),
        ("example.com/abc/", [(2, "prefix"), (3, "domain")]),
        ("example.com/abc/def/g.jpg", [(2, "prefix"), (3, "domain")]),
        ("example.com/abcd", [(3, "domain")]),  # not a segment boundary
        ("example.com/ab", [(3, "domain")]),
        ("example.com/ABC", [(3, "domain")]),  # paths are case-sensitive
        ("example.com/x/../abc/y", [(2, "prefix"), (3, "domain")]),
        ("example.com/%61bc/y", [(2, "prefix"), (3, "domain")]),
        ("example.com:8080/abc", [(3, "domain")]),  # prefix is per host:port; domain is not
        ("http://user:pw@www.example.com/abc?id=7", [(1, "url"), (2, "prefix"), (3, "domain")]),
        ("cdn.img.example.com/anything", [(3, "domain")]),
        ("example.com.evil.test/abc", []),
        ("notexample.com/abc", []),
        ("example.co/abc", []),
        ("sub.bad.test", [(4, "domain")]),
        ("bad.test.", [(4, "domain")]),
        ("files.test:8080/share/a/b", [(5, "prefix")]),
        ("files.test/share/a/b", []),  # other port
        ("files.test:8080/shared", []),
        ("http://[2001:DB8:0::1]:80/x", [(6, "url")]),
    ],
)
def test_match(index: UrlIndex, url: str, expected: list) -> None:
    assert index.match(url) == expected


def test_remove_and_replace(index: UrlIndex) -> None:
    assert len(index) == 6
    assert index.remove(3) is True
    assert index.remove(3) is False
    assert index.match("cdn.example.com/") == []
    index.add(2, "domain", "files.test")  # re-adding an id replaces the entry
    assert 2 in index and len(index) == 5
    assert index.match("example.com/abc/def") == []
    assert index.match("x.files.test/") == [(2, "domain")]


def test_shared_keys_keep_both_ids() -> None:
    idx = UrlIndex()
    idx.add(10, "domain", "example.com")
    idx.add(11, "domain", "WWW.Example.COM")
    assert idx.match("a.example.com") == [(10, "domain"), (11, "domain")]
    idx.remove(10)
    assert idx.match("a.example.com") == [(11, "domain")]


@pytest.mark.parametrize(
    ("kind", "pattern", "message"),
    [
        ("prefix", "example.com/a?x=1", "must not contain a query"),
        ("domain", "example.com/a", "bare host"),
        ("domain", "example.com:8080", "bare host"),
        ("url", "javascript:alert(1)", "unsupported URL scheme"),
        ("regex", "example.com", "unknown URL entry kind"),
    ],
)
def test_bad_entries_rejected(kind: str, pattern: str, message: str) -> None:
    idx = UrlIndex()
    with pytest.raises(ValueError, match=message):
        idx.add(1, kind, pattern)  # type: ignore[arg-type]
    assert len(idx) == 0


def test_entry_keys() -> None:
    assert entry_key("domain", "*.Example.com.") == "example.com"
    assert entry_key("prefix", "HTTP://Example.com/a/b/") == "example.com/a/b"
    assert entry_key("url", "example.com/a?b=%7e") == "example.com/a?b=~"


def test_junk_query_url_raises(index: UrlIndex) -> None:
    with pytest.raises(ValueError):
        index.match("http://")


_TRICKY = [
    "example.com",
    "http://example.com/a",
    "https://Example.COM:443/a/b/?q=1#frag",
    "example.com/a?",
    "example.com?q=1",
    "example.com/a?x=1&y=2",
    "*.bad.org",
    "*.bad.org/a",
    "*.*.bad.org",
    "*.",
    "a.*.bad.org",
    "WWW.Example.COM.",
    "www.com",
    "user:pw@example.com:8080/x",
    "user@example.com",
    "example.com:80",
    "example.com:8080",
    "example.com:99999",
    "[2001:db8::1]",
    "http://[2001:DB8:0::1]:8443/a",
    "[::1",
    "0x7f.1",
    "127.0.0.1/a",
    "2130706433",
    "256.1.1.1",
    "bücher.de/ä",
    "xn--bcher-kva.de",
    "ex ample.com",
    "example.com/a b",
    "example.com/%7Euser/%2f",
    "example.com/a/../../b/./c",
    "example.com//a///b",
    "example.com\\a\\b",
    "//example.com/a",
    "ftp://example.com",
    "javascript:alert(1)",
    "mailto:x@example.com",
    "http://",
    "?",
    "/a/b",
    "#",
    "  example.com/a  ",
    "example.com/a#b?c",
    "%65xample.com",
    "exa%00mple.com",
    "-example.com",
    "example-.com",
    "_dmarc.example.com",
    "a" * 64 + ".com",
    "example.com/" + "a" * 9000,
    "EXAMPLE.com./A/B",
]


def test_every_url_entry_the_store_accepts_loads_into_the_index() -> None:
    """Import validation and index loading share one rule, so no stored entry can fail to load
    (a failing load used to break all matching)."""
    from bastion.banks.model import NewEntry, normalize_entry
    from bastion.signals.base import SignalType

    idx = UrlIndex()
    accepted: dict[str, int] = {"url": 0, "prefix": 0, "domain": 0}
    for n, (kind, raw) in enumerate(
        (k, r) for k in ("url", "prefix", "domain", None) for r in _TRICKY
    ):
        try:
            entry = normalize_entry(NewEntry(SignalType.URL, raw, url_match=kind))
        except ValueError:
            with pytest.raises(ValueError):  # the index must refuse what the store refuses
                entry_key(kind or "url", raw)  # type: ignore[arg-type]
            continue
        assert entry.url_match is not None
        accepted[entry.url_match] += 1
        # What the store keeps is already the index key, and normalising it again changes nothing.
        assert idx.add(n, entry.url_match, entry.value) == entry.value  # type: ignore[arg-type]
        assert entry_key(entry.url_match, raw) == entry.value  # type: ignore[arg-type]
        assert normalize_entry(NewEntry(SignalType.URL, entry.value, url_match=kind)) == entry
    assert accepted["url"] > 30 and accepted["prefix"] > 25 and accepted["domain"] > 10
    assert len(idx) == sum(accepted.values())


def test_wildcard_domain_entries_import_and_match() -> None:
    from bastion.banks.model import NewEntry, normalize_entry
    from bastion.signals.base import SignalType

    entry = normalize_entry(NewEntry(SignalType.URL, "*.bad.org", url_match="domain"))
    idx = UrlIndex()
    idx.add(1, "domain", entry.value)
    assert idx.match("http://x.y.bad.org/p") == [(1, "domain")]
    assert idx.match("notbad.org") == []


def test_seeded_random_urls_validate_the_same_everywhere() -> None:
    import random

    from bastion.banks.model import validate_value
    from bastion.signals.base import SignalType

    rng = random.Random(3)
    alphabet = "abcXYZ019.-_~:/?#[]@!$&'()*+,;=% \\\u00e9\u4e2d"
    for _ in range(3000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30)))
        for kind in ("url", "prefix", "domain"):
            try:
                stored = validate_value(SignalType.URL, raw, kind)
            except ValueError:
                continue
            assert UrlIndex().add(0, kind, stored) == stored  # type: ignore[arg-type]

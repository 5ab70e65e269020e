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

"""URL normalisation: one canonical scheme-less key per web address."""

from __future__ import annotations

import pytest

from bastion.signals import normalize_url, url_keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("http://example.com", "example.com"),
        ("https://example.com/", "example.com"),
        ("HTTPS://EXAMPLE.COM/Path", "example.com/Path"),  # path case kept
        ("//example.com/a", "example.com/a"),
        ("http://www.example.com/a/", "example.com/a"),
        ("www.example.com", "example.com"),
        ("http://www.com/", "www.com"),  # www is the name itself here
        ("http://wwwexample.com", "wwwexample.com"),
        ("http://example.com./a", "example.com/a"),
        ("http://example.com:80/a", "example.com/a"),
        ("https://example.com:443/a", "example.com/a"),
        ("http://example.com:8080/a", "example.com:8080/a"),
        ("example.com:8080/a/", "example.com:8080/a"),
        ("http://example.com:/a", "example.com/a"),
        ("http://user:pass@example.com/a", "example.com/a"),
        ("http://user@evil.test@example.com/a", "example.com/a"),
        ("http://example.com/a#frag", "example.com/a"),
        ("http://example.com/a?b=1#frag", "example.com/a?b=1"),
        ("http://example.com/?", "example.com"),
        ("http://example.com/a/./b/../c", "example.com/a/c"),
        ("http://example.com/../../a", "example.com/a"),
        ("http://example.com//a///b//", "example.com/a/b"),
        ("http://example.com/%7e%41%2d", "example.com/~A-"),
        ("http://example.com/a%2fb", "example.com/a%2Fb"),  # encoded slash is data, kept
        ("http://example.com/%2e%2e/a", "example.com/a"),
        ("http://example.com/a b", "example.com/a%20b"),
        ("http://example.com/100%", "example.com/100%25"),
        ("http://example.com/é", "example.com/%C3%A9"),
        ("http://example.com/%c3%a9", "example.com/%C3%A9"),
        ("http://example.com/a?q=%7e%3d&x=A+B", "example.com/a?q=~%3D&x=A+B"),
        ("http://example.com\\a\\b", "example.com/a/b"),
        ("http://münchen.de/", "xn--mnchen-3ya.de"),
        ("http://MÜNCHEN.de/", "xn--mnchen-3ya.de"),
        ("http://xn--mnchen-3ya.de/", "xn--mnchen-3ya.de"),
        ("http://faß.de/", "xn--fa-hia.de"),  # IDNA 2008: not folded to fass.de
        ("http://\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com/", "example.com"),  # full-width
        ("http://ex%61mple.com/", "example.com"),
        ("http://sub_domain.example.com/", "sub_domain.example.com"),
        ("http://[2001:DB8:0:0::1]/a", "[2001:db8::1]/a"),
        ("http://[2001:db8::1]:443/a", "[2001:db8::1]/a"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://0x7f.0.0.1/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0177.0.0.01/", "127.0.0.1"),
        ("  http://example.com/a  ", "example.com/a"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected
    assert normalize_url(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty URL"),
        ("   ", "empty URL"),
        ("http://", "no host"),
        ("http://user@/a", "no host"),
        ("javascript:alert(1)", "unsupported URL scheme 'javascript'"),
        ("ftp://example.com/", "unsupported URL scheme 'ftp'"),
        ("data:text/html,hi", "unsupported URL scheme 'data'"),
        ("http://exa mple.com/", "invalid host label"),
        ("http://example..com/", "empty label"),
        ("http://-bad-.com/", "invalid host label"),
        ("http://example.com:99999/", "invalid port"),
        ("http://example.com:80a/", "invalid port"),
        ("http://[::1/", "unterminated IPv6"),
        ("http://[::g]/", "invalid IPv6"),
        ("http://[::1]x/", "junk after IPv6"),
        ("http://256.1.1.1/", "out of range"),
        ("http://1.2.3.4.5/", "invalid IPv4"),
        ("http://exam\nple.com/", "control characters"),
        ("http://%ff.com/", "non-ASCII percent-escapes"),
    ],
)
def test_junk_is_a_value_error(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_url(raw)


def test_keys() -> None:
    keys = url_keys("https://user@www.A.B.Example.com:8443/x/y/?q=1#f")
    assert keys.url == "a.b.example.com:8443/x/y?q=1"
    assert keys.host == "a.b.example.com"
    assert keys.prefixes == (
        "a.b.example.com:8443",
        "a.b.example.com:8443/x",
        "a.b.example.com:8443/x/y",
    )
    assert keys.domains == ("a.b.example.com", "b.example.com", "example.com", "com")


def test_keys_of_ip_hosts_have_no_parent_domains() -> None:
    assert url_keys("http://10.0.0.1/a").domains == ("10.0.0.1",)
    assert url_keys("http://[::1]/a").domains == ("[::1]",)


@pytest.mark.parametrize(
    ("kind", "pattern", "expected"),
    [
        ("url", "HTTP://Example.com/a?b=%7e#f", "example.com/a?b=~"),
        ("prefix", "https://www.example.com:443/a/b/", "example.com/a/b"),
        ("prefix", "example.com/a?", "example.com/a"),  # an empty query is no query
        ("domain", "*.Example.com.", "example.com"),
        ("domain", "http://user@example.com/", "example.com"),
        ("domain", "[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_normalize_url_entry_is_canonical_and_idempotent(
    kind: str, pattern: str, expected: str
) -> None:
    from bastion.signals.url import normalize_url_entry

    assert normalize_url_entry(kind, pattern) == expected
    assert normalize_url_entry(kind, expected) == expected


@pytest.mark.parametrize(
    ("kind", "pattern", "message"),
    [
        ("prefix", "example.com/a?x=1", "must not contain a query"),
        ("domain", "http://example.com/a", "bare host"),
        ("domain", "example.com:8080", "bare host"),
        ("domain", "example.com?x", "bare host"),
        ("url", "*.example.com", "invalid host label"),
        ("regex", "example.com", "unknown URL entry kind"),
    ],
)
def test_normalize_url_entry_rejects_misfits(kind: str, pattern: str, message: str) -> None:
    from bastion.signals.url import normalize_url_entry

    with pytest.raises(ValueError, match=message):
        normalize_url_entry(kind, pattern)

"""Identity signals' normalisation and keyed hashing (issue 16): pure, no database."""

from __future__ import annotations

import secrets

import pytest

from bastion.identity.model import (
    Identifier,
    IdentifierError,
    hash_identifier,
    key_id,
    normalize,
)
from bastion.signals.base import SignalType as S

KEY = bytes(range(32))
FULLWIDTH_SECRET = "\uff53\uff45\uff43\uff52\uff45\uff54"  # "secret" in fullwidth letters


@pytest.mark.parametrize(
    ("ident", "canonical"),
    [
        (Identifier(S.EMAIL, "  Alex.Doe@Example.COM "), "alex.doe@example.com"),
        (Identifier(S.EMAIL, "J.o.h.n+games@GoogleMail.com"), "john@gmail.com"),
        (Identifier(S.EMAIL, "kim@bücher.example"), "kim@xn--bcher-kva.example"),
        (Identifier(S.USERNAME, " @SecretGame ", platform="Discord"), "discord:secretgame"),
        (
            Identifier(S.USERNAME, "\uff53\uff45\uff43\uff52\uff45\uff54", platform="roblox"),
            "roblox:secret",
        ),
        (Identifier(S.PHONE, "+44 20 7946 0018"), "+442079460018"),
        (Identifier(S.PHONE, "020 7946 0018", region="gb"), "+442079460018"),
        (Identifier(S.PHONE, "(202) 555-0143", region="US"), "+12025550143"),
        (Identifier(S.IP, "::ffff:192.0.2.7"), "192.0.2.7"),
        (Identifier(S.IP, "2001:DB8:0:0::1"), "2001:db8::1"),
        (Identifier(S.IP, "[2001:db8::1]"), "2001:db8::1"),
    ],
)
def test_identifiers_normalise_to_one_canonical_form_and_stay_there(
    ident: Identifier, canonical: str
) -> None:
    assert normalize(ident) == canonical
    # Idempotent: the canonical form (as a platform might send it again) normalises to itself.
    again = canonical.split(":", 1)[1] if ident.type is S.USERNAME else canonical
    assert normalize(Identifier(ident.type, again, ident.platform)) == canonical


@pytest.mark.parametrize(
    ("ident", "message"),
    [
        (Identifier(S.EMAIL, "secret-person-no-at-sign"), "local@domain"),
        (Identifier(S.EMAIL, "a b@example.com"), "local@domain"),
        (Identifier(S.USERNAME, "secretgame"), "needs its platform"),
        (Identifier(S.USERNAME, "secretgame", platform="no spaces"), "platform must be"),
        (Identifier(S.PHONE, "020 7946 0018"), "needs its region"),
        (Identifier(S.PHONE, "+44 20 7946"), "not a valid number"),
        (Identifier(S.IP, "999.1.1.1"), "not an IPv4 or IPv6"),
        (Identifier(S.EMAIL, "x@example.com", platform="discord"), "usernames only"),
        (Identifier(S.MD5, "x"), "identifier type must be"),  # type: ignore[arg-type]
        (Identifier(S.EMAIL, "a\ud800@example.com"), "not valid Unicode"),
        (Identifier(S.USERNAME, "handle42", platform="x\ud800"), "not valid Unicode"),
    ],
)
def test_a_bad_identifier_is_refused_without_repeating_it(ident: Identifier, message: str) -> None:
    with pytest.raises(IdentifierError, match=message) as caught:
        normalize(ident)
    assert ident.value.strip() not in str(caught.value)


def test_the_hash_depends_on_the_key_and_the_type_and_not_on_how_it_was_written() -> None:
    a = hash_identifier(KEY, Identifier(S.EMAIL, "Alex@Example.com"))
    assert a == hash_identifier(KEY, Identifier(S.EMAIL, " alex@example.COM"))
    assert len(a) == 64 and int(a, 16) >= 0
    other = secrets.token_bytes(32)
    assert hash_identifier(other, Identifier(S.EMAIL, "alex@example.com")) != a
    # The same characters as another type never collide (the type is in the hashed message).
    name = hash_identifier(KEY, Identifier(S.USERNAME, "alex@example.com", platform="x"))
    assert name != a
    assert key_id(KEY) != key_id(other) and len(key_id(KEY)) == 16
    with pytest.raises(ValueError):
        hash_identifier(b"short", Identifier(S.EMAIL, "alex@example.com"))

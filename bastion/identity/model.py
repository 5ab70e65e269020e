"""Account identifiers as keyed hashes: normalise, then HMAC-SHA256 under a sharing group's key.

Platforms that share identifiers of accounts already actioned (as the Tech Coalition's Lantern
programme does) must not hand each other the identifiers themselves: a list that leaks must
reveal nothing to whoever lacks the group's key. So an identifier is normalised to one canonical
form, then hashed with HMAC-SHA256 under the key the group agreed on; banks store and exchange
only the digest, and a scan hashes the account's identifiers the same way before looking them up.
Without the key, a digest cannot be tested against a guess (a plain hash of an e-mail address
can: the space of likely addresses is small).

Canonical forms (the message hashed is ``type``, a NUL, then the form, so an e-mail address and
a username spelled alike never collide):

- ``email``: trimmed, the local part case-folded and the domain lowercased and IDNA-encoded;
  for gmail.com and googlemail.com (one mailbox, however written) dots and ``+tag`` are dropped
  from the local part and the domain is gmail.com;
- ``username``: ``platform:name``, both NFKC-normalised and case-folded, a leading ``@`` and
  surrounding spaces dropped; the platform is required (the same handle on two platforms is two
  people);
- ``phone``: E.164 (``+447700900123``) through ``phonenumbers``; a national number needs the
  ``region`` it was written in (``GB``); only valid numbers are accepted;
- ``ip``: the address's compressed text form, an IPv4-mapped IPv6 address as IPv4.

Pure: no database or web imports.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import unicodedata
from dataclasses import dataclass

import idna
import phonenumbers

from bastion.signals.base import IDENTITY_TYPES, SignalType

KEY_BYTES = 32
MAX_IDENTIFIER = 320  # the longest e-mail address RFC 5321 allows
_PLATFORM_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_GMAIL = frozenset({"gmail.com", "googlemail.com"})


class IdentifierError(ValueError):
    """An identifier that cannot be normalised (the message never repeats the identifier)."""


@dataclass(frozen=True, slots=True)
class Identifier:
    """An account identifier as a platform sends it for a scan or a bank entry."""

    type: SignalType
    value: str
    platform: str | None = None
    region: str | None = None


def identity_type(name: str | SignalType) -> SignalType:
    try:
        st = SignalType(str(name).strip().lower())
    except ValueError:
        st = None
    if st is None or st not in IDENTITY_TYPES:
        raise IdentifierError(
            f"identifier type must be one of {', '.join(sorted(IDENTITY_TYPES))}, "
            f"got {str(name)[:20]!r}"
        )
    return st


def normalize(ident: Identifier) -> str:
    """The canonical form of ``ident`` (see the module docstring), or :class:`IdentifierError`."""
    st = identity_type(ident.type)
    value = ident.value
    if not isinstance(value, str) or not value.strip():
        raise IdentifierError(f"{st} is empty")
    if len(value) > MAX_IDENTIFIER or "\x00" in value:
        raise IdentifierError(f"{st} is longer than {MAX_IDENTIFIER} characters or has a NUL")
    for text in (value, ident.platform or "", ident.region or ""):
        if not isinstance(text, str):
            raise IdentifierError(f"{st} parts must be text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, as JSON's "\ud800" decodes
            raise IdentifierError(f"{st} is not valid Unicode text") from None
    if st is not SignalType.USERNAME and ident.platform is not None:
        raise IdentifierError(f"platform applies to usernames only, not {st}")
    if st is not SignalType.PHONE and ident.region is not None:
        raise IdentifierError(f"region applies to phone numbers only, not {st}")
    if st is SignalType.EMAIL:
        return _email(value.strip())
    if st is SignalType.USERNAME:
        return _username(value, ident.platform)
    if st is SignalType.PHONE:
        return _phone(value.strip(), ident.region)
    return _ip(value.strip())


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in value):
        raise IdentifierError("email is not an address of the form local@domain")
    try:
        host = idna.encode(domain.rstrip("."), uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        raise IdentifierError("email has a domain that is not a valid host name") from None
    local = unicodedata.normalize("NFKC", local).casefold()
    if host in _GMAIL:
        local, host = local.split("+", 1)[0].replace(".", ""), "gmail.com"
        if not local:
            raise IdentifierError("email has an empty local part")
    return f"{local}@{host}"


def _username(value: str, platform: str | None) -> str:
    if not platform or not isinstance(platform, str):
        raise IdentifierError("a username needs its platform (e.g. instagram, discord)")
    plat = unicodedata.normalize("NFKC", platform).strip().casefold()
    if not _PLATFORM_RE.match(plat):
        raise IdentifierError(
            "platform must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    name = unicodedata.normalize("NFKC", value).strip().casefold().removeprefix("@").strip()
    if not name or any(unicodedata.category(c).startswith("C") for c in name):
        raise IdentifierError("username is empty or has control characters")
    return f"{plat}:{name}"


def _phone(value: str, region: str | None) -> str:
    if region is not None and (
        not isinstance(region, str) or not re.fullmatch(r"[A-Za-z]{2}", region)
    ):
        raise IdentifierError("region must be a two-letter country code (ISO 3166-1), e.g. GB")
    try:
        number = phonenumbers.parse(value, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        raise IdentifierError(
            "phone is not a phone number (a national number needs its region, e.g. GB)"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise IdentifierError("phone is not a valid number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _ip(value: str) -> str:
    try:
        addr = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise IdentifierError("ip is not an IPv4 or IPv6 address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.compressed


def digest(key: bytes, st: SignalType, canonical: str) -> str:
    """HMAC-SHA256 of a canonical identifier under a group key, as lowercase hex."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a group key is exactly {KEY_BYTES} bytes")
    message = st.value.encode() + b"\x00" + canonical.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def hash_identifier(key: bytes, ident: Identifier) -> str:
    """Normalise ``ident`` and return its keyed hash (the value a bank entry holds)."""
    return digest(key, identity_type(ident.type), normalize(ident))


def key_id(key: bytes) -> str:
    """A public fingerprint of a group key: partners compare it to know they hold the same key
    without showing it (16 hex characters of a hash that reveals nothing of the key)."""
    return hashlib.sha256(b"bastion/identity-key-id\x00" + key).hexdigest()[:16]

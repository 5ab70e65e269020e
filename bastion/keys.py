"""API keys: token format, scopes, salted hashing and verification. Pure: no database here.

A token reads ``bst_<key_id>_<secret>``. ``key_id`` is a short public lookup handle (stored as is,
shown in listings and audit rows); ``secret`` carries 256 random bits and is stored only as
``HMAC-SHA256(salt, secret)`` with a per-key random salt.

Why not scrypt or argon2: slow KDFs exist to make guessing *low-entropy* passwords expensive. A
256-bit random secret cannot be guessed at any speed, so a slow hash would add nothing but tens of
milliseconds of CPU to every authenticated request (and a denial-of-service lever). The salt keeps
a leaked table from being checked against precomputed tokens and makes equal secrets hash apart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bastion.banks.model import BANK_NAME_RE

#: ``vouchers`` (appended last so existing listings keep their order): pdata, safety vouchers and
#: message franking for end-to-end encrypted messaging (bastion.api.vouchers). ``report``:
#: mandatory reports of confirmed cases (bastion.api.reports; reads cases as an admin would).
#: ``exchange``: see and trigger hash-list exchange syncs (bastion.api.exchanges). ``feed``: what
#: another Bastion's subscription key holds: read this instance's published feeds and send
#: disputes back (bastion.api.feeds). ``review``: work cases over ``/v1/cases`` as the console
#: user the key is bound to (:attr:`ApiKey.user`); ``media``: with ``review``, that user's
#: reveals and media reads (bastion.api.cases). ``contact``: child-contact decisions and the F2
#: prompt catalogue (bastion.api.contact). ``events``: send contact events (``POST /v1/events``,
#: bastion.api.contact_events); ``risk``: read an account's risk and its (audited) event
#: timeline. Erasing an account's events takes ``admin``.
SCOPES: tuple[str, ...] = (
    "hash",
    "match",
    "curate",
    "export",
    "admin",
    "vouchers",
    "report",
    "exchange",
    "feed",
    "review",
    "media",
    "contact",
    "events",
    "risk",
)
ADMIN = "admin"
#: Separates the console user from the key's own label in a user-bound key's name
#: (``alice@sdk``). Neither user names nor plain key names can contain it. The binding itself is
#: the key's ``user`` (a column), never read from the name: a name ``alice@...`` is only allowed
#: on a key bound to alice, so the name cannot claim a user the key does not act as.
USER_SEPARATOR = "@"
TOKEN_PREFIX = "bst_"
KEY_ID_LENGTH = 10
SECRET_BYTES = 32
SALT_BYTES = 16

# key_id is alphanumeric (a subset of url-safe) so the first '_' after it ends it unambiguously;
# the secret is url-safe base64 and may itself contain '_' and '-'.
_KEY_ID_ALPHABET = string.ascii_letters + string.digits
_TOKEN_RE = re.compile(r"bst_([A-Za-z0-9]{8,12})_([A-Za-z0-9_-]{43,128})")
#: Compared against when the key id is unknown, so a miss costs about what a hit costs.
_DUMMY_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without any secret material."""

    id: int
    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None
    #: The console user this key acts as (``/v1/cases``), or None for a key of the platform.
    user: str | None = None
    #: Who created the key (``user:<name>``, ``cli:<os user>``), None if not recorded.
    created_by: str | None = None

    def allows(self, scope: str) -> bool:
        """Whether this key grants ``scope``; ``admin`` grants every scope."""
        return ADMIN in self.scopes or scope in self.scopes

    def is_active(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now`` (an aware datetime)."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    """Scopes from ``"hash,match"`` or an iterable of names (each may itself be comma-separated).

    Raises ValueError naming every unknown scope and the valid ones; at least one is required.
    """
    items = [scopes] if isinstance(scopes, str) else list(scopes)
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"a scope must be a string, not {type(item).__name__}")
        names.update(p.strip().lower() for p in item.split(",") if p.strip())
    unknown = sorted(names - set(SCOPES))
    if unknown:
        raise ValueError(
            f"unknown scope(s): {', '.join(repr(u) for u in unknown)} "
            f"(expected some of: {', '.join(SCOPES)})"
        )
    if not names:
        raise ValueError(f"give at least one scope (from: {', '.join(SCOPES)})")
    return frozenset(names)


def validate_key_name(name: str) -> str:
    """The key name lowercased, or ValueError. A plain name follows the bank-name rule; a key
    bound to a console user may be named ``<user>@<label>`` (both parts by that rule, 64
    characters in all), so the binding shows wherever the key is named; the store allows that
    form only on a key bound to that user."""
    user, sep, label = name.partition(USER_SEPARATOR) if isinstance(name, str) else ("", "", "")
    parts = (user, label) if sep else (name,)
    if (
        not isinstance(name, str)
        or len(name) > 64
        or not all(isinstance(p, str) and BANK_NAME_RE.match(p) for p in parts)
    ):
        shown = repr(name[:80]) if isinstance(name, str) else type(name).__name__
        raise ValueError(
            f"invalid key name {shown}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (or <user>@<label> for a key that acts as a "
            "console user)"
        )
    return name.lower()


def key_user(name: str) -> str | None:
    """The user a key name ``<user>@<label>`` names (``alice`` for ``alice@sdk``), else None.
    Sugar for choosing the user at creation (``bastion key create alice@sdk``); which user a
    stored key acts as is its ``user``, not its name."""
    user, sep, _ = name.partition(USER_SEPARATOR)
    return user.lower() if sep and user else None


def new_key_id() -> str:
    return "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def format_token(key_id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}{key_id}_{secret}"


def parse_token(token: object) -> tuple[str, str] | None:
    """``(key_id, secret)`` from a well-formed token, else None (never raises)."""
    if not isinstance(token, str) or len(token) > 200:
        return None
    m = _TOKEN_RE.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def hash_secret(secret: str, salt: str) -> str:
    """Hex HMAC-SHA256 of ``secret`` keyed by the hex ``salt``."""
    return hmac.new(bytes.fromhex(salt), secret.encode("ascii"), hashlib.sha256).hexdigest()


def verify_secret(secret: str, salt: str | None, expected: str | None) -> bool:
    """Constant-time check of ``secret`` against its stored hash. With no stored key (``salt`` or
    ``expected`` None) it still hashes and compares, then returns False."""
    if salt is None or expected is None:
        hmac.compare_digest(hash_secret(secret, "00" * SALT_BYTES), _DUMMY_HASH)
        return False
    return hmac.compare_digest(hash_secret(secret, salt), expected)

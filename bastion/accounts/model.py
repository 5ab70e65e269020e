"""Console users: roles, names, password rules and hashing, session tokens. Pure: no database.

Passwords are hashed with argon2id (argon2-cffi, RFC 9106 low-memory parameters by default): a
slow, memory-hard hash is what makes guessing human-chosen passwords from a leaked table costly,
unlike API-key secrets (see ``bastion.keys``), which are random and need only a fast HMAC.

Session tokens are 256 random bits handed to the browser; the database keeps only their SHA-256,
so a copy of the database cannot be replayed as a login. A slow hash would add nothing there: the
token cannot be guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeGuard

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from bastion.vocab import ADMIN, AUDITOR, REVIEWER, ROLES, SENIOR_REVIEWER

DEFAULT_QUEUES: tuple[str, ...] = ("default",)
MAX_QUEUES = 64

MIN_PASSWORD_LENGTH = 12
#: Long enough for any passphrase or password manager, short enough that hashing stays cheap.
MAX_PASSWORD_LENGTH = 1024

#: Login throttling is per client address, never per account (anyone could otherwise lock any
#: user out): an address gets THROTTLE_FREE_FAILURES failed logins within THROTTLE_WINDOW, then
#: waits THROTTLE_FIRST_DELAY before the next attempt, twice as long after each further
#: failure, at most THROTTLE_MAX_DELAY. A success from the address clears its count.
THROTTLE_FREE_FAILURES = 5
THROTTLE_WINDOW = timedelta(hours=1)
THROTTLE_FIRST_DELAY = timedelta(seconds=15)
THROTTLE_MAX_DELAY = timedelta(minutes=15)
#: Failures kept per address (more change nothing: the delay is at its maximum long before).
THROTTLE_KEEP = 64
#: The throttle key of attempts that came with no address (the command line, tests).
NO_ADDRESS = "unknown"

TOKEN_BYTES = 32
#: A session's last-seen time is written at most this often (one write per minute, not per
#: request); idle expiry is therefore precise to about this much.
SESSION_TOUCH_INTERVAL = timedelta(minutes=1)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$", re.IGNORECASE)
#: What every failed login says, whatever the cause, so the answer never reveals which names
#: exist, which are disabled, or which password was nearly right.
LOGIN_FAILED_MESSAGE = "unknown user name or wrong password"


class LoginFailed(Exception):
    """Wrong name or password (or a disabled account): one message for all of them."""

    def __init__(self, message: str = LOGIN_FAILED_MESSAGE) -> None:
        super().__init__(message)


class LoginThrottled(LoginFailed):
    """Too many failed logins from this client address: it may not try again (no password is
    checked) until ``until``. Which name was tried plays no part, so this reveals nothing about
    names, and locks no account: the same user logs in from another address."""

    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(
            f"too many failed logins from this address: try again after "
            f"{until.strftime('%H:%M:%S')} UTC"
        )

    def retry_after(self, now: datetime) -> int:
        """Whole seconds to wait from ``now`` (at least 1), for a ``Retry-After`` header."""
        return max(1, math.ceil((self.until - now).total_seconds()))


#: The old name, from when failures locked the account.
LoginLocked = LoginThrottled


@dataclass(frozen=True, slots=True)
class User:
    """A console user, without password material."""

    id: int
    name: str
    role: str
    queues: tuple[str, ...]
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return user_actor(self.name)


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser. ``expires_at`` is the absolute end; ``idle_expires_at`` moves
    forward with use. ``user`` is read fresh with every lookup, so a role change applies at
    once."""

    id: int
    user: User
    csrf_token: str
    expires_at: datetime
    created_at: datetime
    last_seen_at: datetime
    idle_expires_at: datetime

    def csrf_ok(self, given: object) -> bool:
        """Whether a submitted form's CSRF token is this session's, compared in constant time."""
        return csrf_matches(self.csrf_token, given)


def user_actor(name: str) -> str:
    return f"user:{name}"


# -- validation ---------------------------------------------------------------------------------


def _shown(value: object) -> str:
    return repr(value[:80]) if isinstance(value, str) else type(value).__name__


def validate_user_name(name: object) -> str:
    """The user name lowercased, or ValueError. Same alphabet as bank and key names."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid user name {_shown(name)}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name.lower()


def validate_role(role: object) -> str:
    if not isinstance(role, str) or role.strip().lower() not in ROLES:
        raise ValueError(f"unknown role {_shown(role)} (expected one of: {', '.join(ROLES)})")
    return role.strip().lower()


def validate_queues(queues: Iterable[str] | str) -> tuple[str, ...]:
    """Queue names lowercased, duplicates dropped, order kept; at least one. Whether a queue
    exists (and is a senior one) is the policy's business; reviewers never see senior queues
    whatever is listed here."""
    items = [queues] if isinstance(queues, str) else list(queues)
    out: list[str] = []
    for q in items:
        if not isinstance(q, str) or not _NAME_RE.match(q.strip()):
            raise ValueError(
                f"invalid queue name {_shown(q)}: use 1-64 letters, digits, '_', '.' or '-'"
            )
        if q.strip().lower() not in out:
            out.append(q.strip().lower())
    if not out:
        raise ValueError("give at least one queue")
    if len(out) > MAX_QUEUES:
        raise ValueError(f"at most {MAX_QUEUES} queues per user, not {len(out)}")
    return tuple(out)


def check_password(password: object, *, name: str) -> str:
    """The password in the form that is hashed (Unicode NFKC, so the same characters typed on
    another keyboard still match), or ValueError saying what is wrong with it.

    Rules: at least MIN_PASSWORD_LENGTH characters, not the user's own name (nor containing it,
    for names of four or more characters), not blank.
    """
    if not isinstance(password, str):
        raise ValueError(f"a password must be a string, not {type(password).__name__}")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the password is not valid Unicode text") from None
    password = unicodedata.normalize("NFKC", password)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            f"the password is {len(password)} characters; use at least {MIN_PASSWORD_LENGTH}"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise ValueError("the password is only spaces")
    folded, who = password.casefold(), name.casefold()
    if folded.strip() == who or (len(who) >= 4 and who in folded):
        raise ValueError("the password must not be or contain the user name")
    return password


def throttle_key(remote_addr: str | None) -> str:
    """What login attempts are counted under: the client's IP address, IPv6 by its /64 network
    (one host usually holds a whole /64, so counting single addresses would let it spread its
    guesses); text that is not an address (a test client) as itself, cut to 64 characters."""
    if not isinstance(remote_addr, str) or not remote_addr.strip():
        return NO_ADDRESS
    text = remote_addr.strip()
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return text[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def throttle_until(failures: Iterable[datetime]) -> datetime | None:
    """Until when an address with these recent failed logins must wait before its next attempt
    (None: it may try now, or once that time has passed). Each failure past the free ones
    doubles the wait, from the last failure on."""
    times = sorted(failures)
    extra = len(times) - THROTTLE_FREE_FAILURES
    if extra < 0:
        return None
    delay = min(THROTTLE_MAX_DELAY, THROTTLE_FIRST_DELAY * 2 ** min(extra, 32))
    return times[-1] + delay


def _prepared(password: str) -> str:
    """The form a login attempt is compared in (the same normalisation as when it was set)."""
    return unicodedata.normalize("NFKC", password)


# -- hashing --------------------------------------------------------------------------------------


class PasswordHasher:
    """argon2id hashing with fixed parameters. Stored hashes carry their own parameters, so
    changing these keeps old hashes verifiable; :meth:`needs_rehash` says when to re-hash one
    (done at the next successful login)."""

    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65_536, parallelism: int = 4
    ) -> None:
        self._ph = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._dummy: str | None = None

    @property
    def parameters(self) -> tuple[int, int, int]:
        return (self._ph.time_cost, self._ph.memory_cost, self._ph.parallelism)

    def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (NFKC-normalised, as :meth:`verify` compares)."""
        return self._ph.hash(_prepared(password))

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``. With no stored hash (unknown user) it
        verifies against a dummy hash made with the same parameters, so the answer takes about
        as long either way, then returns False."""
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            password = ""
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:
            password = ""
        if stored is None:
            if self._dummy is None:
                self._dummy = self._ph.hash(secrets.token_urlsafe(16))
            stored, password = self._dummy, "\x00not-the-dummy-password"
        return self._check(stored, _prepared(password))

    def _check(self, stored: str, password: str) -> bool:
        """The argon2 verification itself, whatever the hash's own parameters say."""
        try:
            return self._ph.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._ph.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            return True


_default_hasher: PasswordHasher | None = None


def default_hasher() -> PasswordHasher:
    """The process-wide hasher with the default (RFC 9106 low-memory) parameters."""
    global _default_hasher
    if _default_hasher is None:
        _default_hasher = PasswordHasher()
    return _default_hasher


# -- tokens ---------------------------------------------------------------------------------------


def new_session_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """Hex SHA-256 of a session token: what the database keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def well_formed_token(token: object) -> TypeGuard[str]:
    """Cheap shape check before any lookup: url-safe base64 of about TOKEN_BYTES bytes."""
    return (
        isinstance(token, str)
        and 32 <= len(token) <= 128
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in token)
    )


def csrf_matches(expected: str, given: object) -> bool:
    """Constant-time comparison of a submitted CSRF token with the session's."""
    if not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))


# -- roles ----------------------------------------------------------------------------------------


def may_administer(role: str) -> bool:
    """Users, policy and other admin pages."""
    return role == ADMIN


def may_read_audit(role: str) -> bool:
    """The audit log and the outbox and status pages."""
    return role in (ADMIN, AUDITOR)


def may_review(role: str) -> bool:
    """See cases and their content, and decide them (auditors never do)."""
    return role in (ADMIN, SENIOR_REVIEWER, REVIEWER)


def may_use_senior_queues(role: str) -> bool:
    """Senior queues (escalations) are for senior reviewers and admins only."""
    return role in (ADMIN, SENIOR_REVIEWER)


def sees_all_queues(role: str) -> bool:
    """Admins and senior reviewers see every queue; reviewers only those on their record."""
    return role in (ADMIN, SENIOR_REVIEWER)

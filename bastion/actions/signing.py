"""Webhook signatures: HMAC-SHA256 over ``f"{t}."`` and the raw body, Stripe-style.

Signing the timestamp with the body lets a receiver refuse replays of an old request; signing the
raw bytes (not a re-serialised object) means sender and receiver never disagree about JSON
formatting. Pure code: no web or database imports, so receivers can copy it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Bastion-Signature"
#: Seconds a signed timestamp may differ from the receiver's clock, either way.
DEFAULT_TOLERANCE = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, too old, or matches no secret."""


def _key(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def compute_signature(secret: bytes | str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}."`` followed by the raw body."""
    mac = hmac.new(_key(secret), f"{int(timestamp)}.".encode("ascii"), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(secret: bytes | str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Bastion-Signature`` header value: ``t=<unix seconds>,v1=<hex>``."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={compute_signature(secret, t, body)}"


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """``(timestamp, [v1 signatures])``. Several ``v1`` entries are allowed so a sender can sign
    with an old and a new secret while they are rotated."""
    if not isinstance(header, str) or not header.strip():
        raise SignatureError("missing Bastion-Signature header")
    timestamp: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed Bastion-Signature header")
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise SignatureError("malformed timestamp in Bastion-Signature header")
            timestamp = int(value)
        elif name == "v1":
            sigs.append(value.strip().lower())
        # Unknown schemes (a future v2) are ignored so receivers keep working.
    if timestamp is None:
        raise SignatureError("Bastion-Signature header has no timestamp")
    if not sigs:
        raise SignatureError("Bastion-Signature header has no v1 signature")
    return timestamp, sigs


def verify_signature(
    secret: bytes | str,
    header: str,
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a ``Bastion-Signature`` header against the raw request body; return its timestamp.

    Raises :class:`SignatureError` when the header is malformed, the timestamp is more than
    ``tolerance`` seconds from ``now`` (a replay or a badly wrong clock), or no ``v1`` signature
    matches. Comparison is constant-time. Pass the body exactly as received, before any JSON
    parsing.
    """
    timestamp, sigs = parse_signature_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(f"signature timestamp {timestamp} is more than {tolerance} s from now")
    expected = compute_signature(secret, timestamp, body).encode("ascii")
    ok = False
    for sig in sigs:
        # Check every candidate (no early exit) and compare bytes of equal type.
        ok |= hmac.compare_digest(expected, sig.encode("ascii", "replace"))
    if not ok:
        raise SignatureError("no signature matches the body and secret")
    return timestamp

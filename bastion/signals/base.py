"""Signal types shared by every stage after hashing.

A signal is a fingerprint of content. Perceptual signals (``pdq``, ``vpdq``) carry a quality;
exact ones (``md5``, ``sha256``, ``url``) do not. ``text`` is a keyword signal: a bank entry holds
a term or a trend query (:mod:`bastion.text`), and a scanned text is matched against them all.
``email``, ``username``, ``phone`` and ``ip`` are account identifiers, kept as keyed hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class SignalType(StrEnum):
    PDQ = "pdq"
    VPDQ = "vpdq"
    MD5 = "md5"
    SHA256 = "sha256"
    URL = "url"
    TEXT = "text"
    #: Account identifiers, held only as keyed hashes (HMAC-SHA256 under a sharing group's key,
    #: :mod:`bastion.identity`): the value is the digest's hex, never the identifier.
    EMAIL = "email"
    USERNAME = "username"
    PHONE = "phone"
    IP = "ip"

    @property
    def is_perceptual(self) -> bool:
        return self in (SignalType.PDQ, SignalType.VPDQ)

    @property
    def is_identity(self) -> bool:
        return self in IDENTITY_TYPES


#: The identity signal types: leads about an account, not proof about content.
IDENTITY_TYPES = frozenset({SignalType.EMAIL, SignalType.USERNAME, SignalType.PHONE, SignalType.IP})


class SignalError(ValueError):
    """Content could not be turned into a signal (corrupt, truncated, too large, unsupported)."""


#: PDQ frames or images below this quality are reported but not matched by default (as HMA does).
DEFAULT_MIN_QUALITY = 50


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One vPDQ frame hash: PDQ of a frame sampled from a video."""

    pdq: str
    quality: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class Signal:
    """A fingerprint of one piece of content.

    ``value`` is the canonical text form: lowercase hex for ``pdq``/``md5``/``sha256``, the
    normalised URL for ``url``, and the serialised frame list for ``vpdq``
    (see :func:`bastion.signals.video.serialize_frames`).
    """

    type: SignalType
    value: str
    quality: int | None = None
    frames: tuple[VideoFrame, ...] = field(default=(), compare=False, repr=False)

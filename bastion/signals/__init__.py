"""Content to signals: PDQ (images), vPDQ (video), MD5/SHA-256 (exact) and normalised URLs."""

from bastion.signals.base import (
    DEFAULT_MIN_QUALITY,
    Signal,
    SignalError,
    SignalType,
    VideoFrame,
)
from bastion.signals.content import HashOptions, sniff
from bastion.signals.exact import ExactHashes, exact_from_bytes, exact_from_path
from bastion.signals.files import FileSignals, hash_bytes, hash_file
from bastion.signals.pdq import (
    hamming,
    pdq_dihedral_from_bytes,
    pdq_dihedral_from_image,
    pdq_from_bytes,
    pdq_from_image,
)
from bastion.signals.url import UrlKeys, normalize_url, url_keys
from bastion.signals.video import (
    parse_frames,
    serialize_frames,
    video_match_score,
    vpdq_frames,
)

__all__ = [
    "DEFAULT_MIN_QUALITY",
    "ExactHashes",
    "FileSignals",
    "HashOptions",
    "Signal",
    "SignalError",
    "SignalType",
    "UrlKeys",
    "VideoFrame",
    "exact_from_bytes",
    "exact_from_path",
    "hamming",
    "hash_bytes",
    "hash_file",
    "normalize_url",
    "parse_frames",
    "pdq_dihedral_from_bytes",
    "pdq_dihedral_from_image",
    "pdq_from_bytes",
    "pdq_from_image",
    "serialize_frames",
    "sniff",
    "url_keys",
    "video_match_score",
    "vpdq_frames",
]

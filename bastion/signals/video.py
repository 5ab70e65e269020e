"""vPDQ video hashing through Meta's ``vpdq`` package, and vPDQ's frame-set matching.

The serialised form is python-threatexchange's VPDQ signal value (what HMA stores and exchanges
over ThreatExchange): a JSON list of ``"hex,quality,timestamp"`` strings, the timestamp written
with 3 significant digits (``f"{ts:.3}"``, so 12.34 s becomes ``"12.3"``). We keep that format,
lossy timestamps included, so values round-trip with HMA unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from bastion.signals.base import DEFAULT_MIN_QUALITY, SignalError, VideoFrame

#: HMA's frame match threshold for vPDQ.
DEFAULT_FRAME_DISTANCE = 31

_PAIRWISE_BUDGET = 32 * 1024 * 1024  # bytes of XOR scratch per block in video_match_score


def vpdq_frames(
    path: str | Path, *, seconds_per_hash: float = 1.0, threads: int = 0
) -> tuple[VideoFrame, ...]:
    """Hash one frame per ``seconds_per_hash`` seconds of the video at ``path``.

    Undecodable or frameless videos raise :class:`SignalError`; a missing file raises
    :class:`FileNotFoundError` (the caller's mistake, not the content's).
    """
    import vpdq  # native extension; imported lazily so image-only users never load FFmpeg

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    if seconds_per_hash < 0:
        raise ValueError("seconds_per_hash must be >= 0 (0 = every frame)")
    try:
        features = vpdq.computeHash(
            str(path), seconds_per_hash=seconds_per_hash, thread_count=threads
        )
    except Exception as e:  # vpdq raises a bare Exception("Fail to create VPDQ hash")
        raise SignalError(f"video could not be decoded: {e}") from None
    if not features:
        raise SignalError("video could not be decoded: no frames")
    return tuple(VideoFrame(f.hex, int(f.quality), float(f.timestamp)) for f in features)


def serialize_frames(frames: Iterable[VideoFrame]) -> str:
    """Frames as python-threatexchange's VPDQ JSON value."""
    return json.dumps([f"{f.pdq},{f.quality},{f.timestamp:.3}" for f in frames])


def parse_frames(text: str) -> tuple[VideoFrame, ...]:
    """Parse a VPDQ JSON value (ours or python-threatexchange's); ValueError if malformed."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"vPDQ value is not JSON: {e}") from None
    if not isinstance(items, list):
        raise ValueError(f"vPDQ value must be a JSON list, got {type(items).__name__}")
    return tuple(_parse_frame(i, item) for i, item in enumerate(items))


def _parse_frame(index: int, item: object) -> VideoFrame:
    where = f"vPDQ frame {index}"
    if not isinstance(item, str):
        raise ValueError(f"{where}: expected a 'hex,quality,timestamp' string, got {item!r}")
    parts = item.split(",")
    if len(parts) != 3:
        raise ValueError(f"{where}: expected 'hex,quality,timestamp', got {item!r}")
    pdq, quality_text, ts_text = (p.strip() for p in parts)
    if len(pdq) != 64 or any(c not in "0123456789abcdefABCDEF" for c in pdq):
        raise ValueError(f"{where}: hash must be 64 hex digits, got {pdq!r}")
    try:
        quality = int(quality_text)
        timestamp = float(ts_text)
    except ValueError:
        raise ValueError(f"{where}: bad quality or timestamp in {item!r}") from None
    if not 0 <= quality <= 100:
        raise ValueError(f"{where}: quality {quality} outside 0..100")
    if not math.isfinite(timestamp) or timestamp < 0:
        raise ValueError(f"{where}: timestamp {ts_text!r} is not a finite number >= 0")
    return VideoFrame(pdq.lower(), quality, timestamp)


def _usable(frames: Sequence[VideoFrame], min_quality: int) -> np.ndarray:
    """Unique hashes (first occurrence kept) then quality-filtered, as python-threatexchange
    does, as an (n, 32) uint8 array."""
    seen: dict[str, int] = {}
    for f in frames:
        seen.setdefault(f.pdq, f.quality)
    kept = [h for h, q in seen.items() if q >= min_quality]
    if not kept:
        return np.zeros((0, 32), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(kept)), dtype=np.uint8).reshape(-1, 32)


def video_match_score(
    query: Sequence[VideoFrame],
    target: Sequence[VideoFrame],
    *,
    distance: int = DEFAULT_FRAME_DISTANCE,
    min_quality: int = DEFAULT_MIN_QUALITY,
) -> tuple[float, float]:
    """``(query_match_percent, target_match_percent)`` as vPDQ/HMA define them.

    Each side is reduced to its unique frame hashes of quality >= ``min_quality``; the query
    percentage is the share of those query frames within ``distance`` of some target frame, and
    symmetrically for the target. A side with no usable frames scores 0.
    """
    q = _usable(query, min_quality)
    t = _usable(target, min_quality)
    if len(q) == 0 or len(t) == 0:
        return 0.0, 0.0
    q_hit = np.zeros(len(q), dtype=bool)
    t_hit = np.zeros(len(t), dtype=bool)
    step = max(1, _PAIRWISE_BUDGET // (32 * len(t)))  # bound memory on hour-long videos
    for start in range(0, len(q), step):
        block = q[start : start + step]
        dist = np.bitwise_count(block[:, None, :] ^ t[None, :, :]).sum(axis=2, dtype=np.int32)
        close = dist <= distance
        q_hit[start : start + step] = close.any(axis=1)
        t_hit |= close.any(axis=0)
    return float(q_hit.sum()) * 100.0 / len(q), float(t_hit.sum()) * 100.0 / len(t)

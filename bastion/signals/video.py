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
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from bastion.signals.base import DEFAULT_MIN_QUALITY, SignalError, VideoFrame

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

#: HMA's frame match threshold for vPDQ.
DEFAULT_FRAME_DISTANCE = 31

_PAIRWISE_BUDGET = 32 * 1024 * 1024  # bytes of XOR scratch per block in video_match_score


class VideoDuration(NamedTuple):
    """How long a video is and where that figure came from.

    ``source`` is ``"stream"``, ``"container"`` or ``"frames"`` (frame count / frame rate) when the
    file declares its length, ``"packets"`` when it had to be counted by demuxing; a count that
    stopped early (past ``stop_after``) is then a lower bound. ``seconds`` is None only when
    nothing in the file tells its length.
    """

    seconds: float | None
    source: Literal["stream", "container", "frames", "packets"]


def probe_video_duration(
    path: str | Path, *, stop_after: float | None = None, count: bool = False
) -> VideoDuration:
    """Length of the first video stream at ``path``, without decoding any frame.

    vPDQ cannot stop part-way, so a length limit has to be checked before hashing. The declared
    duration is read first (the video stream's, else the container's, else frame count / rate);
    streams that declare none (live Matroska, for one) are demuxed packet by packet, counting
    timestamps, and the count stops as soon as it passes ``stop_after``. ``count=True`` always
    counts packets, for a length a crafted header cannot lie about.

    Unopenable files and files without a video stream raise :class:`SignalError`.
    """
    import av  # imported lazily, like vpdq, so image-only users never load FFmpeg

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    try:
        # Only the local file itself: no demuxer may open further URLs or files named inside it.
        with av.open(str(path), container_options={"protocol_whitelist": "file"}) as container:
            if not container.streams.video:
                raise SignalError("video could not be decoded: no video stream")
            stream = container.streams.video[0]
            if count:
                return VideoDuration(_count_packets(container, stream, stop_after), "packets")
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
                if _plausible(seconds):
                    return VideoDuration(seconds, "stream")
            if container.duration:
                seconds = container.duration / av.time_base
                if _plausible(seconds):
                    return VideoDuration(seconds, "container")
            if stream.frames and stream.average_rate:
                seconds = float(stream.frames / stream.average_rate)
                if _plausible(seconds):
                    return VideoDuration(seconds, "frames")
            return VideoDuration(_count_packets(container, stream, stop_after), "packets")
    except SignalError:
        raise
    except av.FFmpegError as e:  # InvalidDataError & co.; strerror leaves out our temp file name
        raise SignalError(f"video could not be decoded: {e.strerror or e}") from None
    except (OSError, ValueError) as e:
        raise SignalError(f"video could not be decoded: {e}") from None


def _plausible(seconds: float) -> bool:
    return math.isfinite(seconds) and seconds > 0


def _count_packets(
    container: InputContainer, stream: VideoStream, stop_after: float | None
) -> float | None:
    """Span of the packets' timestamps (plus the last one's duration), demuxed not decoded."""
    time_base = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    first: int | None = None
    end: int | None = None
    count = 0
    seconds: float | None = None
    for packet in container.demux(stream):
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None and packet.size == 0:
            continue  # the demuxer's final empty flush packet
        count += 1
        if ts is not None and time_base:
            first = ts if first is None else min(first, ts)
            stop = ts + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
            seconds = float((end - first) * time_base)
        elif rate:
            seconds = float(count / rate)
        if stop_after and seconds is not None and seconds > stop_after:
            break
    if count and seconds is None and rate:
        seconds = float(count / rate)
    return seconds if count else 0.0


def check_video_duration(path: str | Path, max_seconds: float | None) -> VideoDuration | None:
    """Raise :class:`SignalError` ("video too long: ...") if the video at ``path`` runs longer
    than ``max_seconds``; None or 0 means no limit (and no probe). Returns the probe's answer."""
    if not max_seconds:
        return None
    duration = probe_video_duration(path, stop_after=max_seconds)
    if duration.source != "packets" and (duration.seconds or 0) <= max_seconds:
        # The header says it fits; demux (no decoding) to the limit so a header that lies about
        # the length cannot make vPDQ decode an hour of video.
        counted = probe_video_duration(path, stop_after=max_seconds, count=True)
        if (counted.seconds or 0) > max_seconds:
            duration = counted
    seconds = duration.seconds
    if seconds is not None and seconds > max_seconds:
        limit = _seconds_text(max_seconds)
        if duration.source == "packets":
            raise SignalError(
                f"video too long: more than {_seconds_text(seconds)} s > limit {limit} s "
                "(no declared duration; counting stopped at the limit)"
            )
        raise SignalError(f"video too long: {_seconds_text(seconds)} s > limit {limit} s")
    return duration


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


def vpdq_frames(
    path: str | Path,
    *,
    seconds_per_hash: float = 1.0,
    threads: int = 0,
    max_seconds: float | None = None,
) -> tuple[VideoFrame, ...]:
    """Hash one frame per ``seconds_per_hash`` seconds of the video at ``path``.

    With ``max_seconds`` (None or 0 = no limit), a longer video is refused before any decoding:
    see :func:`check_video_duration`. Undecodable, over-long or frameless videos raise
    :class:`SignalError`; a missing file raises :class:`FileNotFoundError` (the caller's mistake,
    not the content's).
    """
    import vpdq  # native extension; imported lazily so image-only users never load FFmpeg

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    if seconds_per_hash < 0:
        raise ValueError("seconds_per_hash must be >= 0 (0 = every frame)")
    if max_seconds is not None and max_seconds < 0:
        raise ValueError("max_seconds must be >= 0 (0 or None = no limit)")
    check_video_duration(path, max_seconds)
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

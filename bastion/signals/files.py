"""Hash a whole file into every signal it supports, never raising for bad content.

A scan over millions of uploads must not stop at the first corrupt one, so content problems end
up as a precise ``error`` on :class:`FileSignals`; the exact hashes are still reported whenever
the bytes could be read (a corrupt file can still be on an exact-hash list).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bastion.signals.base import Signal, SignalError, SignalType
from bastion.signals.content import (
    DEFAULT_OPTIONS,
    IMAGE_EXTENSIONS,
    SNIFF_BYTES,
    VIDEO_EXTENSIONS,
    ContentKind,
    HashOptions,
    describe_bytes,
    sniff,
)
from bastion.signals.exact import exact_from_bytes, hash_stream
from bastion.signals.pdq import open_image, pdq_dihedral_from_image, pdq_from_image
from bastion.signals.video import serialize_frames, vpdq_frames


@dataclass
class FileSignals:
    """Everything hashed from one file. ``signals`` always starts with md5 and sha256 when the
    file could be read; then ``pdq`` (images) or ``vpdq`` (videos) unless ``error`` says why not.
    """

    path: str
    kind: ContentKind
    size: int
    signals: list[Signal]
    error: str | None = None
    #: Container format from the magic bytes (``jpeg``, ``png``, ``heif``, ``mp4``...), if known.
    format: str | None = None
    #: With ``dihedral=True``: PDQ hex of the 8 rotations/flips, index 0 = as-is (see
    #: :func:`bastion.signals.pdq.pdq_dihedral_from_image` for the order).
    pdq_dihedral: list[str] = field(default_factory=list)

    def get(self, signal_type: SignalType) -> Signal | None:
        return next((s for s in self.signals if s.type == signal_type), None)


def hash_file(
    path: str | os.PathLike[str],
    *,
    reference: bool = False,
    dihedral: bool = False,
    options: HashOptions | None = None,
) -> FileSignals:
    """Compute md5, sha256 and the perceptual signal of the file at ``path``.

    The file is read once: streamed through the exact hashes, and kept in memory only if it is an
    image small enough to decode. Videos are decoded from the path by vPDQ, after their declared
    length is checked against ``options.max_video_seconds``.
    """
    options = options or DEFAULT_OPTIONS
    path_str = str(path)
    head = bytearray()
    kept: list[bytes] | None = []
    kept_size = 0

    def on_chunk(chunk: bytes) -> None:
        nonlocal kept, kept_size
        if len(head) < SNIFF_BYTES:
            head.extend(chunk[: SNIFF_BYTES - len(head)])
        if kept is not None:
            kept.append(chunk)
            kept_size += len(chunk)
            if kept_size > options.max_image_bytes or sniff(bytes(head))[0] != "image":
                kept = None  # not an image we will decode: stop holding bytes

    try:
        with open(path, "rb") as f:
            exact = hash_stream(f, on_chunk=on_chunk)
    except OSError as e:
        return FileSignals(path_str, "other", 0, [], error=f"cannot read file: {e}")
    result = FileSignals(path_str, "other", exact.size, exact.signals())
    data = b"".join(kept) if kept is not None else None
    _add_perceptual(result, bytes(head), data, Path(path), reference, dihedral, options)
    return result


def hash_bytes(
    data: bytes,
    *,
    name: str = "<bytes>",
    reference: bool = False,
    dihedral: bool = False,
    options: HashOptions | None = None,
) -> FileSignals:
    """Like :func:`hash_file` for content already in memory (an API upload).

    Videos are written to a private temporary file because the vPDQ decoder reads from a path.
    """
    options = options or DEFAULT_OPTIONS
    result = FileSignals(name, "other", len(data), exact_from_bytes(data).signals())
    kind, _ = sniff(data[:SNIFF_BYTES])
    if kind != "video":
        _add_perceptual(result, data[:SNIFF_BYTES], data, Path(name), reference, dihedral, options)
        return result
    fd, tmp = tempfile.mkstemp(prefix="bastion-video-", suffix=Path(name).suffix[:10])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _add_perceptual(result, data[:SNIFF_BYTES], None, Path(tmp), reference, dihedral, options)
    finally:
        os.unlink(tmp)
    return result


def _add_perceptual(
    result: FileSignals,
    head: bytes,
    data: bytes | None,
    path: Path,
    reference: bool,
    dihedral: bool,
    options: HashOptions,
) -> None:
    kind, fmt = sniff(head)
    result.kind, result.format = kind, fmt
    if result.size == 0:
        result.error = "empty file (0 bytes)"
        return
    if kind == "other":
        suffix = Path(result.path).suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            result.error = f"not an image: bytes look like {describe_bytes(head)}"
        elif suffix in VIDEO_EXTENSIONS:
            result.error = f"not a video: bytes look like {describe_bytes(head)}"
        return
    try:
        if kind == "image":
            _add_pdq(result, data, reference, dihedral, options)
        else:
            frames = vpdq_frames(
                path,
                seconds_per_hash=options.video_seconds_per_hash,
                threads=options.video_threads,
                max_seconds=options.max_video_seconds,
            )
            result.signals.append(Signal(SignalType.VPDQ, serialize_frames(frames), None, frames))
    except SignalError as e:
        result.error = str(e)
    except MemoryError:
        result.error = "image too large: out of memory while decoding"


def _add_pdq(
    result: FileSignals,
    data: bytes | None,
    reference: bool,
    dihedral: bool,
    options: HashOptions,
) -> None:
    if data is None:
        raise SignalError(
            f"image too large: {result.size} bytes > limit {options.max_image_bytes} bytes"
        )
    with open_image(data, options) as img:
        if dihedral:
            variants = pdq_dihedral_from_image(img, reference=reference)
            result.pdq_dihedral = [h for h, _ in variants]
            pdq, quality = variants[0]
        else:
            pdq, quality = pdq_from_image(img, reference=reference)
    result.signals.append(Signal(SignalType.PDQ, pdq, quality))

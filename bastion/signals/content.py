"""What a file is, judged by its first bytes, and the limits we hash it under.

Extensions lie (uploads are renamed, attackers rename on purpose), so the kind of a file is read
from its magic bytes. The kind decides which perceptual hash is attempted; every file still gets
its exact hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ContentKind = Literal["image", "video", "other"]

#: How many leading bytes :func:`sniff` needs to decide.
SNIFF_BYTES = 64

# ISO base media (ftyp) brands. A HEIF image may name a generic major brand (mif1) and list the
# specific one among its compatible brands, so both are consulted.
_IMAGE_BRANDS = frozenset(
    b"heic heix hevc hevx heim heis hevm hevs mif1 msf1 avif avis mif2 avci".split()
)
_VIDEO_BRANDS = frozenset(
    b"isom iso2 iso3 iso4 iso5 iso6 iso8 iso9 mp41 mp42 mp71 avc1 dash M4VP "
    b"mmp4 MSNV NDAS NDSC NDSH NDSM NDSP NDSS NDXC NDXH NDXM NDXP NDXS 3gp4 3gp5 3gp6 3gp7 "
    b"3ge6 3ge7 3gg6 3g2a 3g2b 3g2c XAVC".split()
) | {b"qt  ", b"M4V ", b"f4v "}
_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})

#: Extensions that promise an image or a video; used only to word an error when the bytes disagree.
IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
        ".hif",
    ]
)
VIDEO_EXTENSIONS = frozenset(
    [".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".3gp", ".3g2", ".qt"]
)


@dataclass(frozen=True, slots=True)
class HashOptions:
    """Limits and knobs for hashing untrusted files.

    ``max_pixels`` defaults to 120 MP: it admits the largest ordinary camera output (100-108 MP
    medium-format and phone sensors) and refuses anything bigger before decoding, so a tiny file
    claiming 200+ MP cannot make us allocate gigabytes. It sits below Pillow's own hard bomb limit
    (2 x ``Image.MAX_IMAGE_PIXELS`` ~ 179 MP); raising it above that also needs Pillow's raised.
    """

    max_pixels: int = 120_000_000
    #: Images larger than this on disk are not decoded (exact hashes are still computed).
    max_image_bytes: int = 256 * 1024 * 1024
    video_seconds_per_hash: float = 1.0
    #: Decoder threads for vPDQ; 0 lets the library choose.
    video_threads: int = 0
    #: Longer videos are refused before hashing (vPDQ cannot stop part-way); None or 0 = no limit.
    max_video_seconds: float | None = 3600.0

    def __post_init__(self) -> None:
        if self.max_pixels <= 0 or self.max_image_bytes <= 0:
            raise ValueError("max_pixels and max_image_bytes must be positive")
        if self.video_seconds_per_hash < 0:
            raise ValueError("video_seconds_per_hash must be >= 0 (0 = every frame)")
        if self.video_threads < 0:
            raise ValueError("video_threads must be >= 0")
        if self.max_video_seconds is not None and not self.max_video_seconds >= 0:
            raise ValueError("max_video_seconds must be >= 0 (0 or None = no limit)")


DEFAULT_OPTIONS = HashOptions()


def sniff(head: bytes) -> tuple[ContentKind, str | None]:
    """Classify content by its leading bytes: ``(kind, format)``, e.g. ``("image", "jpeg")``."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head[:2] == b"BM" and len(head) >= 26 and head[6:10] == b"\0\0\0\0":
        return "image", "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video", "webm" if b"webm" in head[:SNIFF_BYTES] else "matroska"
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    return "other", None


def _sniff_ftyp(head: bytes) -> tuple[ContentKind, str | None]:
    box_size = int.from_bytes(head[:4], "big")
    end = min(len(head), max(16, box_size))
    major = head[8:12]
    compatible = [head[i : i + 4] for i in range(16, end - 3, 4)]
    for brands in ([major], compatible):
        for brand in brands:
            if brand in _IMAGE_BRANDS:
                return "image", "avif" if brand in (b"avif", b"avis") else "heif"
            if brand in _AUDIO_BRANDS:
                return "other", "m4a"
            if brand in _VIDEO_BRANDS:
                return "video", "mov" if brand == b"qt  " else "mp4"
    return "other", None


def describe_bytes(head: bytes) -> str:
    """A short human description of unrecognised bytes, for error messages."""
    if not head:
        return "empty"
    for magic, name in (
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "gzip data"),
        (b"<?xml", "XML text"),
        (b"\x7fELF", "an ELF executable"),
        (b"MZ", "a Windows executable"),
    ):
        if head.startswith(magic):
            return name
    stripped = head.lstrip()
    if stripped[:1] == b"<" and stripped[:15].lower().startswith((b"<!doctype", b"<html")):
        return "HTML text"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sniffed window.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "unrecognised binary data"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text"
    return "unrecognised binary data"

"""Blurred greyscale previews: what a reviewer sees of media until they choose to reveal it.

Made on the server so the clear bytes never reach the browser before a reveal (a CSS blur would
ship the original). No database or web imports.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageFilter, ImageOps

from bastion.review.model import PreviewUnavailable
from bastion.signals.base import SignalError
from bastion.signals.pdq import open_image

#: Longest side of a preview, in pixels.
PREVIEW_SIZE = 640
#: Blur radius as a fraction of the preview's longest side: shapes and tones survive, detail not.
BLUR_FRACTION = 1 / 32
#: A video preview is the frame at this many seconds (or the last one before, if shorter)...
VIDEO_AT_SECONDS = 1.0
#: ... decoding at most this many frames to get there.
_MAX_FRAMES = 300
_MAX_VIDEO_PIXELS = 40_000_000
PREVIEW_TYPE = "image/jpeg"
#: The only media types ever served for a browser to render inline: raster images and video,
#: which a browser draws without running script. SVG (script), HTML, XML, PDF and anything
#: unknown are served as downloads instead, whatever else the type string says.
INLINE_SAFE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
    }
)


def base_media_type(media_type: str | None) -> str:
    """``type/subtype`` alone: parameters, whitespace and case removed, as a browser reads it
    (``IMAGE/SVG+XML ; x=1`` is ``image/svg+xml``)."""
    return (media_type or "").split(";", 1)[0].strip().lower()


def inline_media_type(media_type: str | None) -> str | None:
    """The base type to serve media of ``media_type`` inline with, or None when it must only be
    downloaded (``application/octet-stream``, ``Content-Disposition: attachment``). Compares
    the base type against :data:`INLINE_SAFE_TYPES`: a denylist or a whole-string comparison
    lets ``image/svg+xml;x=1`` through."""
    base = base_media_type(media_type)
    return base if base in INLINE_SAFE_TYPES else None


def blurred_preview(data: bytes, media_type: str) -> bytes:
    """A JPEG, greyscale, at most PREVIEW_SIZE px, strongly blurred. Images by Pillow (with the
    same decompression-bomb limits as hashing), videos by a frame decoded with PyAV.
    Raises :class:`PreviewUnavailable` for other types or undecodable media."""
    kind = media_type.split("/", 1)[0].lower()
    if kind == "image":
        img = _image(data)
    elif kind == "video":
        img = _video_frame(data)
    else:
        raise PreviewUnavailable(f"no preview for media of type {media_type}")
    return _blur(img)


def _image(data: bytes) -> Image.Image:
    try:
        with open_image(data) as img:
            img.draft("L", (PREVIEW_SIZE, PREVIEW_SIZE))  # JPEG: decode at reduced size
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                out = ImageOps.exif_transpose(img)
                out.load()
            return out
    except SignalError as exc:
        raise PreviewUnavailable(f"no preview: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise PreviewUnavailable(f"no preview: corrupt image: {exc}") from None


def _video_frame(data: bytes) -> Image.Image:
    import av  # lazily, as in bastion.signals.video: image-only use never loads FFmpeg

    try:
        # The bytes only: no demuxer may open further URLs or files named inside them.
        with av.open(
            io.BytesIO(data), mode="r", container_options={"protocol_whitelist": "none"}
        ) as container:
            if not container.streams.video:
                raise PreviewUnavailable("no preview: the video has no video stream")
            stream = container.streams.video[0]
            if (stream.width or 0) * (stream.height or 0) > _MAX_VIDEO_PIXELS:
                raise PreviewUnavailable("no preview: video frames are too large")
            frame = None
            for n, frame in enumerate(container.decode(stream)):
                if (frame.time is not None and frame.time >= VIDEO_AT_SECONDS) or n >= _MAX_FRAMES:
                    break
            if frame is None:
                raise PreviewUnavailable("no preview: no frame could be decoded")
            image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]  # PyAV's stub
            return image
    except PreviewUnavailable:
        raise
    except av.FFmpegError as exc:
        raise PreviewUnavailable(f"no preview: video could not be decoded: {exc}") from None
    except (OSError, ValueError) as exc:
        raise PreviewUnavailable(f"no preview: video could not be decoded: {exc}") from None


def _blur(img: Image.Image) -> bytes:
    grey = img.convert("L")
    grey.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.Resampling.BILINEAR)
    radius = max(4.0, max(grey.size) * BLUR_FRACTION)
    blurred = grey.filter(ImageFilter.GaussianBlur(radius))
    out = io.BytesIO()
    blurred.save(out, format="JPEG", quality=70)
    return out.getvalue()

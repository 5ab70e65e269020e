"""Opened derivatives are re-encoded to JPEG before the server stores them.

Part B of a voucher carries whatever media type and bytes the client put there: a hostile client
can write ``image/svg+xml;x=1`` and an SVG with script, or any format Pillow would parse. The
server never keeps those bytes: it decodes them as one of a few raster formats, within a pixel
budget, shrinks them to the derivative's size and writes a fresh baseline JPEG. What is stored,
handed to review and served is always ``image/jpeg`` made here; anything else is dropped (the
item still opens, with its match details, and no picture).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

#: The formats a client's derivative may be decoded from (the client writes JPEG).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
MEDIA_TYPE = "image/jpeg"
#: Decoding budget: a derivative is a few KiB and at most 160 px on its long side; a larger
#: image is refused before its pixels are decoded (a decompression bomb costs nothing).
MAX_PIXELS = 4096 * 4096
MAX_SIDE = 320
QUALITY = 80


def reencode_derivative(data: bytes) -> bytes:
    """A fresh JPEG (long side <= ``MAX_SIDE``) of the image in ``data``; b"" if ``data`` is
    empty, not one of :data:`FORMATS`, too large or corrupt."""
    if not data:
        return b""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                if img.width * img.height > MAX_PIXELS or img.width * img.height == 0:
                    return b""
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
                frame = img.convert("RGBA" if _alpha(img) else "RGB")
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ):
        return b""
    if frame.mode == "RGBA":
        flat = Image.new("RGB", frame.size, (255, 255, 255))
        flat.paste(frame, mask=frame.getchannel("A"))
        frame = flat
    frame.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def _alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)

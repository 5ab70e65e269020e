"""On-device image hashing (PDQ with per-bit reliability) and the low-resolution derivative.

The pixels are prepared exactly as the server's default pipeline prepares them, by the same
function (``bastion.imaging.pdq_array``, which imports nothing of the server): JPEGs decoded with
DCT scaling straight to luma, keeping the long side >= 720 px; EXIF orientation applied; alpha
composited on white; large non-JPEGs box-reduced. A test checks that both give the same hash on
every reference image.
``pdqhash.compute_float`` returns the 256 DCT coefficients; bit i is ``coefficient_i > median``,
and how far a coefficient is from the median says how likely an edit is to flip that bit.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pdqhash
from PIL import Image, UnidentifiedImageError

from bastion.imaging import pdq_array

MAX_PIXELS = 120_000_000
MAX_BYTES = 100 * 2**20
#: The derivative's long side, and the JPEG qualities tried until it fits the voucher.
DERIVATIVE_SIDE = 160
_QUALITIES = (70, 55, 40, 25)


class ImageError(ValueError):
    """Bytes that are not an image this library can hash, with the reason."""


@dataclass(frozen=True)
class ImageHash:
    """A PDQ hash (32 bytes), its DCT coefficients (float32, 256) and quality (0-100)."""

    hash: bytes
    floats: np.ndarray
    quality: int

    @property
    def hex(self) -> str:
        return self.hash.hex()


def open_image(data: bytes) -> Image.Image:
    if not data:
        raise ImageError("empty file")
    if len(data) > MAX_BYTES:
        raise ImageError(f"image too large: {len(data)} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise ImageError("not an image, or an image too large to open") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"corrupt image: {exc}") from None
    if img.width * img.height > MAX_PIXELS or img.width * img.height == 0:
        img.close()
        raise ImageError(f"unsupported image size {img.width}x{img.height}")
    return img


def hash_image(data: bytes) -> ImageHash:
    """PDQ of an encoded image with its per-bit floats; raises :class:`ImageError`."""
    return hash_and_derivative(data, 0)[0]


def derivative(data: bytes, max_bytes: int) -> bytes:
    """The low-resolution derivative :func:`hash_and_derivative` makes for ``data``."""
    return hash_and_derivative(data, max_bytes)[1]


def hash_and_derivative(data: bytes, max_bytes: int) -> tuple[ImageHash, bytes]:
    """Hash an image and make its derivative from the same decode: a small JPEG (long side
    <= 160 px) of at most ``max_bytes``, what a reviewer sees first if the account ever crosses
    the threshold. JPEG photos are decoded straight to luma for PDQ, so their derivative is
    greyscale (review shows a blurred greyscale view first anyway). Empty if nothing fits."""
    with open_image(data) as img:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                array = pdq_array(img)
            floats, quality = pdqhash.compute_float(array)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
            raise ImageError(f"cannot decode image: {exc}") from None
    floats = np.asarray(floats, dtype=np.float32)
    bits = (floats > np.median(floats)).astype(np.uint8)
    hashed = ImageHash(np.packbits(bits).tobytes(), floats, int(quality))
    return hashed, _small_jpeg(array, max_bytes) if max_bytes > 0 else b""


def _small_jpeg(array: np.ndarray, max_bytes: int) -> bytes:
    if array.strides[2] == 0:  # luma broadcast to three channels
        small = Image.fromarray(np.ascontiguousarray(array[:, :, 0]), "L")
    else:
        small = Image.fromarray(np.ascontiguousarray(array), "RGB")
    factor = max(small.size) // (2 * DERIVATIVE_SIDE)
    if factor > 1:
        small = small.reduce(factor)
    for side in (DERIVATIVE_SIDE, DERIVATIVE_SIDE // 2, DERIVATIVE_SIDE // 4):
        small.thumbnail((side, side), Image.Resampling.BILINEAR)
        for quality in _QUALITIES:
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=quality)
            if buf.tell() <= max_bytes:
                return buf.getvalue()
    return b""

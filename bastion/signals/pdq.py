"""PDQ image hashing through Meta's ``pdqhash`` bindings (the C++ reference implementation).

Two pipelines:

* **reference** (``reference=True``): full-resolution decode, no EXIF transposition, the pixels
  as ``Image.convert("RGB")`` gives them. This reproduces Meta's published reference hashes
  bit for bit; use it to check interoperability, not for scanning.
* **default** (fast): what banks and queries are hashed with. JPEGs are decoded with DCT scaling
  (libjpeg's 1/2, 1/4, 1/8 scaled IDCT, via ``Image.draft``) straight to luma, keeping the long
  side at least ``bastion.imaging.TARGET_SIDE`` pixels; other formats are box-reduced by an
  integer factor when much larger. The EXIF orientation is applied, as a viewer would show the
  image. PDQ only looks at a 64x64 box-filtered luma image, so ~1000 px keeps the hash within a
  few bits of the full decode (see ``docs/benchmarks.md``) at a third of the cost.

Pixel handling (default pipeline): alpha is composited on white, which is what a reviewer sees
and makes the hash independent of whatever colour an encoder left under fully transparent pixels;
16-bit and float images are scaled to 8 bits by their range rather than clipped; palette, CMYK,
YCbCr, LAB and HSV images are converted to RGB by Pillow. Animated GIF/WebP/APNG and HEIF
sequences are hashed on their first frame.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pdqhash
from PIL import Image, UnidentifiedImageError

from bastion.imaging import pdq_array
from bastion.signals.base import SignalError
from bastion.signals.content import DEFAULT_OPTIONS, HashOptions, describe_bytes

try:  # HEIC/HEIF support; AVIF is decoded by Pillow itself.
    import pillow_heif
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    pass
else:
    pillow_heif.register_heif_opener()

PDQ_HEX_LEN = 64

_T = TypeVar("_T")


def hamming(a_hex: str, b_hex: str) -> int:
    """Hamming distance between two 256-bit hashes given as 64 hex digits."""
    return (_parse_pdq(a_hex) ^ _parse_pdq(b_hex)).bit_count()


def _parse_pdq(value: str) -> int:
    if len(value) != PDQ_HEX_LEN:
        raise ValueError(f"PDQ hash must be {PDQ_HEX_LEN} hex digits, got {len(value)}: {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise ValueError(f"PDQ hash is not hexadecimal: {value!r}") from None


def _bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def pdq_from_image(img: Image.Image, *, reference: bool = False) -> tuple[str, int]:
    """PDQ ``(hex, quality)`` of a Pillow image.

    In the default pipeline an *unloaded* JPEG is DCT-scaled in place (``Image.draft``), exactly as
    :func:`pdq_from_bytes` does, so both entry points give the same hash.
    """
    return _run(img, reference, _hash_one)


def pdq_dihedral_from_image(img: Image.Image, *, reference: bool = False) -> list[tuple[str, int]]:
    """PDQ of the 8 dihedral variants, in ``pdqhash.compute_dihedral`` order: as-is, rotate 90,
    180, 270 (anticlockwise, as ``Image.rotate``), flip X, flip Y, flip about the main diagonal,
    flip about the anti-diagonal. Index 0 equals :func:`pdq_from_image`."""
    return _run(img, reference, _hash_dihedral)


def pdq_from_bytes(
    data: bytes, *, reference: bool = False, options: HashOptions | None = None
) -> tuple[str, int]:
    """PDQ ``(hex, quality)`` of an encoded image; bad input raises :class:`SignalError`."""
    with open_image(data, options) as img:
        return pdq_from_image(img, reference=reference)


def pdq_dihedral_from_bytes(
    data: bytes, *, reference: bool = False, options: HashOptions | None = None
) -> list[tuple[str, int]]:
    with open_image(data, options) as img:
        return pdq_dihedral_from_image(img, reference=reference)


def open_image(data: bytes, options: HashOptions | None = None) -> Image.Image:
    """Open (header only) an untrusted encoded image, refusing bombs before any pixel is decoded."""
    options = options or DEFAULT_OPTIONS
    if not data:
        raise SignalError("empty file (0 bytes)")
    if len(data) > options.max_image_bytes:
        raise SignalError(
            f"image too large: {len(data)} bytes > limit {options.max_image_bytes} bytes"
        )
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning tier.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        if claimed and int(claimed.group(1)) > options.max_pixels:
            raise SignalError(
                f"image too large: {claimed.group(1)} pixels > limit {options.max_pixels}"
            ) from None
        raise SignalError(f"image too large: {e}") from None
    except UnidentifiedImageError:
        raise SignalError(f"not an image: bytes look like {describe_bytes(data[:64])}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise SignalError(f"corrupt image: {e}") from None
    pixels = img.width * img.height
    if pixels > options.max_pixels:
        img.close()
        raise SignalError(f"image too large: {pixels} pixels > limit {options.max_pixels}")
    if pixels == 0:
        img.close()
        raise SignalError("image has no pixels (0 width or height)")
    return img


def _run(img: Image.Image, reference: bool, hasher: Callable[[np.ndarray], _T]) -> _T:
    """Decode, prepare and hash, translating decoder failures into precise SignalErrors."""
    fmt = img.format or "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            array = _reference_array(img) if reference else pdq_array(img)
        return hasher(array)
    except SignalError:
        raise
    except Image.DecompressionBombError as e:
        raise SignalError(f"image too large: {e}") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg or "premature end" in msg.lower():
            raise SignalError(f"truncated {fmt}: {msg}") from None
        raise SignalError(f"corrupt {fmt}: {msg}") from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise SignalError(f"corrupt {fmt}: {e}") from None


def _hash_one(array: np.ndarray) -> tuple[str, int]:
    bits, quality = pdqhash.compute(array)
    return _bits_to_hex(bits), int(quality)


def _hash_dihedral(array: np.ndarray) -> list[tuple[str, int]]:
    variants, quality = pdqhash.compute_dihedral(array)
    return [(_bits_to_hex(bits), int(quality)) for bits in variants]


def _reference_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))

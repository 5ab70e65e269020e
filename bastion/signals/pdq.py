"""PDQ image hashing through Meta's ``pdqhash`` bindings (the C++ reference implementation).

Two pipelines:

* **reference** (``reference=True``): full-resolution decode, no EXIF transposition, the pixels
  as ``Image.convert("RGB")`` gives them. This reproduces Meta's published reference hashes
  bit for bit; use it to check interoperability, not for scanning.
* **default** (fast): what banks and queries are hashed with. JPEGs are decoded with DCT scaling
  (libjpeg's 1/2, 1/4, 1/8 scaled IDCT, via ``Image.draft``) straight to luma, keeping the long
  side at least :data:`TARGET_SIDE` pixels; other formats are box-reduced by an integer factor
  when much larger. The EXIF orientation is applied, as a viewer would show the image. PDQ only
  looks at a 64x64 box-filtered luma image, so ~1000 px keeps the hash within a few bits of the
  full decode (see ``docs/benchmarks.md``) at a third of the cost.

Pixel handling (default pipeline): alpha is composited on white, which is what a reviewer sees
and makes the hash independent of whatever colour an encoder left under fully transparent pixels;
16-bit and float images are scaled to 8 bits by their range rather than clipped; palette, CMYK,
YCbCr, LAB and HSV images are converted to RGB by Pillow. Animated GIF/WebP/APNG and HEIF
sequences are hashed on their first frame.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pdqhash
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from bastion.signals.base import SignalError
from bastion.signals.content import DEFAULT_OPTIONS, HashOptions, describe_bytes

try:  # HEIC/HEIF support; AVIF is decoded by Pillow itself.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    pillow_heif = None

#: The default pipeline keeps at least this many pixels on the image's long side. Chosen by
#: measurement (benchmarks/bench_hashing.py): at 1/8 scale (~500 px) some 12 MP photos drift
#: 12 bits from the full decode; at >= 720 px every test photo stays within 6.
TARGET_SIDE = 720

PDQ_HEX_LEN = 64
_ORIENTATION = 0x0112  # EXIF tag

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
            array = _reference_array(img) if reference else _fast_array(img)
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


def _fast_array(img: Image.Image) -> np.ndarray:
    if isinstance(img, JpegImageFile) and img.tile:  # JPEG or MPO, not yet decoded
        factor = _reduction(max(img.size))
        if factor > 1:
            w, h = img.size
            # Straight to luma: PDQ uses Rec.601 luma, which is the JPEG Y channel already.
            mode = "L" if img.mode == "RGB" else img.mode
            img.draft(mode, (math.ceil(w / factor), math.ceil(h / factor)))
    img.load()
    if img.getexif().get(_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    img = _to_l_or_rgb(img)
    factor = _reduction(max(img.size))
    if factor > 1 and max(img.size) > 2 * TARGET_SIDE:
        img = img.reduce(max(img.size) // TARGET_SIDE)
    array = np.asarray(img)
    if array.ndim == 2:
        # pdqhash wants 3 channels; a stride-0 view repeats the luma without copying.
        array = np.broadcast_to(array[:, :, None], (*array.shape, 3))
    return array


def _reduction(long_side: int) -> int:
    for factor in (8, 4, 2):
        if math.ceil(long_side / factor) >= TARGET_SIDE:
            return factor
    return 1


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        return Image.fromarray(_scale_to_8bit(np.asarray(img)), "L")
    if mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_8bit(values: np.ndarray) -> np.ndarray:
    """Map a 16-bit, 32-bit or float greyscale image to 0..255 by its evident range."""
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1.0 and values.dtype.kind == "f" and hi > 0:
        scaled = values * 255.0  # float images in [0, 1]
    elif lo >= 0 and hi <= 255:
        scaled = values
    elif lo >= 0 and hi <= 65535:
        scaled = values / 257.0  # 16-bit samples
    else:
        scaled = (values - lo) * (255.0 / (hi - lo))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

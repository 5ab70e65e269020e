"""Decoding an image into the pixel array PDQ hashes.

Pure Pillow and numpy, shared by the server's signals and by the embeddable client
(``bastion.client``), which may not import ``bastion.signals`` and its server dependencies.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

#: The default pipeline keeps at least this many pixels on the image's long side. Chosen by
#: measurement (benchmarks/bench_hashing.py): at 1/8 scale (~500 px) some 12 MP photos drift
#: 12 bits from the full decode; at >= 720 px every test photo stays within 6.
TARGET_SIDE = 720
_ORIENTATION = 0x0112  # EXIF tag


def pdq_array(img: Image.Image) -> np.ndarray:
    """The pixels PDQ should hash, fast: JPEGs decoded at reduced size straight to luma, EXIF
    orientation applied, odd modes flattened (alpha over white), then box-reduced to no less
    than ``TARGET_SIDE`` on the long side. Returns an H x W x 3 uint8 array."""
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

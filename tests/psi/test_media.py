"""Opened derivatives are re-encoded to JPEG by the server: nothing a client wrote is kept."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bastion.psi.media import MAX_SIDE, reencode_derivative


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w: int, h: int, mode: str = "RGB") -> Image.Image:
    ramp = (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)
    if mode == "L":
        return Image.fromarray(ramp, "L")
    channels = [ramp, ramp[::-1], np.full_like(ramp, 90)]
    if mode == "RGBA":
        channels.append(np.full_like(ramp, 128))
    return Image.fromarray(np.stack(channels, axis=2), mode)


def _jpeg_of(data: bytes) -> Image.Image:
    assert data[:3] == b"\xff\xd8\xff", data[:16]
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return img


def test_raster_derivatives_come_out_as_fresh_jpegs() -> None:
    for img, fmt in [
        (_gradient(160, 120, "L"), "JPEG"),  # what the client sends
        (_gradient(64, 48), "PNG"),
        (_gradient(64, 48, "RGBA"), "PNG"),  # alpha flattened on white
        (_gradient(64, 48), "WEBP"),
        (_gradient(64, 48).convert("P"), "GIF"),
    ]:
        out = _jpeg_of(reencode_derivative(_encode(img, fmt)))
        assert out.size == img.size and out.mode == "RGB"


def test_large_pictures_are_shrunk_and_bombs_refused_before_decoding() -> None:
    out = _jpeg_of(reencode_derivative(_encode(_gradient(1200, 900), "PNG")))
    assert max(out.size) == MAX_SIDE
    bomb = _encode(Image.new("1", (20_000, 20_000)), "PNG")  # 50 KB, 400 Mpx
    assert len(bomb) < 100_000 and reencode_derivative(bomb) == b""


def test_anything_else_is_dropped() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    html = b"<html><script>alert(1)</script></html>"
    tiff = _encode(_gradient(32, 32), "TIFF")  # a raster format, but not one a client sends
    truncated = _encode(_gradient(64, 48), "PNG")[:60]
    for data in (b"", svg, html, tiff, truncated, b"\xff\xd8\xff" + b"\x00" * 50):
        assert reencode_derivative(data) == b"", data[:20]

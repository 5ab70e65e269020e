"""The client's on-device hash is the server's: same pipeline, same bits, plus reliable floats."""

from __future__ import annotations

import numpy as np
import pdqhash
import pytest

from bastion.client import ImageError, derivative, hash_image
from bastion.client.image import open_image
from bastion.imaging import pdq_array
from bastion.signals.pdq import pdq_from_bytes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


def _images(testdata):
    return sorted(p for p in (testdata / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def test_client_hash_equals_the_server_pipeline_on_every_reference_image(testdata) -> None:
    images = _images(testdata)
    assert len(images) == 40  # every image in tests/data
    for path in images:
        data = path.read_bytes()
        client = hash_image(data)
        server_hex, server_quality = pdq_from_bytes(data)
        assert (client.hex, client.quality) == (server_hex, server_quality), path.name
        # The bits are the floats thresholded at their median, as PDQ defines them.
        with open_image(data) as img:
            bits, _ = pdqhash.compute(pdq_array(img))
        assert np.packbits(bits.astype(np.uint8)).tobytes() == client.hash, path.name


def test_derivative_is_small_and_fits_the_budget(testdata) -> None:
    data = (testdata / "images/bridge-mods/aaa-orig.jpg").read_bytes()
    small = derivative(data, 4000)
    assert small[:2] == b"\xff\xd8" and 0 < len(small) <= 4000
    with open_image(small) as img:
        assert max(img.size) <= 160
    assert len(derivative(data, 600)) <= 600
    assert derivative(data, 10) == b""  # nothing fits: no derivative rather than a broken one


def test_bad_input_is_a_precise_error() -> None:
    for data, message in [(b"", "empty"), (b"not an image at all", "not an image")]:
        with pytest.raises(ImageError, match=message):
            hash_image(data)
    truncated = b"\xff\xd8\xff\xe0" + b"\x00" * 20
    with pytest.raises(ImageError):
        hash_image(truncated)

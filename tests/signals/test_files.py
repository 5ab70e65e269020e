"""hash_file: every signal of a file, and a precise per-file error for hostile input."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bastion.signals import HashOptions, SignalType, hamming, hash_bytes, hash_file, parse_frames
from bastion.signals.content import sniff
from bastion.signals.exact import exact_from_path

BRIDGE = "images/bridge-mods/aaa-orig.jpg"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries almost no data: a decompression bomb's
    shape without its payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _assert_exact(result, data: bytes) -> None:
    assert result.get(SignalType.MD5).value == hashlib.md5(data).hexdigest()
    assert result.get(SignalType.SHA256).value == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)


def test_image_gets_exact_and_pdq(testdata: Path) -> None:
    path = testdata / BRIDGE
    result = hash_file(path)
    assert result.error is None and result.kind == "image" and result.format == "jpeg"
    _assert_exact(result, path.read_bytes())
    assert [s.type for s in result.signals] == [SignalType.MD5, SignalType.SHA256, SignalType.PDQ]
    pdq = result.get(SignalType.PDQ)
    assert pdq.quality == 100
    ref = hash_file(path, reference=True).get(SignalType.PDQ)
    assert ref.value == "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    assert hamming(pdq.value, ref.value) <= 8


def test_dihedral_listed_for_matcher(testdata: Path) -> None:
    result = hash_file(testdata / BRIDGE, dihedral=True)
    assert len(result.pdq_dihedral) == 8
    assert result.pdq_dihedral[0] == result.get(SignalType.PDQ).value
    assert len(set(result.pdq_dihedral)) == 8
    assert hash_file(testdata / BRIDGE).pdq_dihedral == []


def test_hash_bytes_equals_hash_file(testdata: Path) -> None:
    data = (testdata / BRIDGE).read_bytes()
    assert hash_bytes(data, name="x.jpg").signals == hash_file(testdata / BRIDGE).signals


def test_video_gets_vpdq(testdata: Path) -> None:
    path = testdata / "videos/test-padded-dimensions.mp4"
    result = hash_file(path)
    assert result.error is None and result.kind == "video"
    _assert_exact(result, path.read_bytes())
    vpdq = result.get(SignalType.VPDQ)
    assert vpdq.frames and parse_frames(vpdq.value)[0].pdq == vpdq.frames[0].pdq
    assert hash_bytes(path.read_bytes(), name="v.mp4").get(SignalType.VPDQ).value == vpdq.value


def test_other_file_gets_exact_only(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text\n")
    result = hash_file(path)
    assert result.kind == "other" and result.error is None
    assert [s.type for s in result.signals] == [SignalType.MD5, SignalType.SHA256]


def test_exact_hashes_stream_large_files(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    exact = exact_from_path(path)
    assert exact.md5 == hashlib.md5(data).hexdigest()
    assert exact.sha256 == hashlib.sha256(data).hexdigest()
    assert exact.size == len(data)


# --- hostile input: a precise error per file, exact hashes kept, never an exception ---


def _hostile(tmp_path: Path, name: str, data: bytes, options: HashOptions | None = None):
    path = tmp_path / name
    path.write_bytes(data)
    result = hash_file(path, options=options)
    _assert_exact(result, data)
    assert not any(s.type.is_perceptual for s in result.signals)
    assert result.error
    return result


def test_zero_byte_file(tmp_path: Path) -> None:
    assert _hostile(tmp_path, "empty.jpg", b"").error == "empty file (0 bytes)"


def test_truncated_jpeg(tmp_path: Path, testdata: Path) -> None:
    data = (testdata / BRIDGE).read_bytes()
    result = _hostile(tmp_path, "cut.jpg", data[: len(data) // 2])
    assert result.error.startswith("truncated JPEG")


def test_truncated_png(tmp_path: Path, testdata: Path) -> None:
    data = (testdata / "images/misc-images/modes/1.png").read_bytes()
    result = _hostile(tmp_path, "cut.png", data[: len(data) // 3])
    assert result.error.startswith(("truncated PNG", "corrupt PNG"))
    assert result.kind == "image"


def test_text_named_jpg(tmp_path: Path) -> None:
    result = _hostile(tmp_path, "fake.jpg", b"<p>hello</p> and more plain words\n" * 3)
    assert result.error == "not an image: bytes look like text"
    assert result.kind == "other"


def test_random_bytes_named_mp4(tmp_path: Path) -> None:
    data = np.random.default_rng(2).bytes(50_000)
    result = _hostile(tmp_path, "fake.mp4", data)
    assert result.error.startswith("not a video: bytes look like")


def test_ftyp_with_garbage_body_is_a_clear_video_error(tmp_path: Path) -> None:
    data = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + np.random.default_rng(3).bytes(40_000)
    result = _hostile(tmp_path, "garbage.mp4", data)
    assert result.kind == "video"
    assert result.error.startswith("video could not be decoded")


def test_truncated_mp4(tmp_path: Path, testdata: Path) -> None:
    data = (testdata / "videos/pattern-sd-grey-bar.mp4").read_bytes()[:100_000]
    result = _hostile(tmp_path, "cut.mp4", data)
    assert result.error.startswith("video could not be decoded")


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    result = _hostile(tmp_path, "bomb.png", _png_header_only(50_000, 50_000))
    assert result.error == "image too large: 2500000000 pixels > limit 120000000"


def test_bomb_above_pillows_own_limit_still_per_file(tmp_path: Path) -> None:
    # A limit the caller raised above Pillow's hard bomb check: Pillow's error is reported.
    options = HashOptions(max_pixels=10**10)
    result = _hostile(tmp_path, "bomb.png", _png_header_only(50_000, 50_000), options)
    assert result.error.startswith("image too large:")


def test_100_megapixel_image_hashes_within_limit(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000), 90).save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) < 1_000_000  # tiny on disk
    path = tmp_path / "flat.png"
    path.write_bytes(data)
    result = hash_file(path)
    assert result.error is None
    assert result.get(SignalType.PDQ).quality == 0  # flat: reported, matcher will skip it
    refused = _hostile(tmp_path, "flat2.png", data, HashOptions(max_pixels=50_000_000))
    assert refused.error == "image too large: 100000000 pixels > limit 50000000"


def test_image_over_byte_limit(tmp_path: Path, testdata: Path) -> None:
    data = (testdata / BRIDGE).read_bytes()
    result = _hostile(tmp_path, "big.jpg", data, HashOptions(max_image_bytes=1000))
    assert result.error == f"image too large: {len(data)} bytes > limit 1000 bytes"


def test_unreadable_path_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result = hash_file(tmp_path / "missing.jpg")
    assert result.error.startswith("cannot read file:") and result.signals == []


def test_batch_continues_past_bad_files(tmp_path: Path, testdata: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes((testdata / BRIDGE).read_bytes()[:5000])
    (tmp_path / "c.jpg").write_bytes((testdata / BRIDGE).read_bytes())
    results = [hash_file(p) for p in sorted(tmp_path.iterdir())]
    assert [r.error is None for r in results] == [False, False, True]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\0\x10JFIF", ("image", "jpeg")),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", ("image", "png")),
        (b"GIF89a\x01\0", ("image", "gif")),
        (b"RIFF\0\0\0\0WEBPVP8 ", ("image", "webp")),
        (b"RIFF\0\0\0\0AVI LIST", ("video", "avi")),
        (b"BM\x36\0\x0c\0\0\0\0\0\x36\0\0\0\x28\0\0\0" + b"\0" * 8, ("image", "bmp")),
        (b"II*\0\x08\0\0\0", ("image", "tiff")),
        (b"MM\0*\0\0\0\x08", ("image", "tiff")),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", ("image", "heif")),
        (b"\0\0\0\x1cftypmif1\0\0\0\0mif1heicmiaf", ("image", "heif")),
        (b"\0\0\0\x20ftypavif\0\0\0\0avifmif1miaf", ("image", "avif")),
        (b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41", ("video", "mp4")),
        (b"\0\0\0\x14ftypqt  \0\0\x02\0qt  ", ("video", "mov")),
        (b"\0\0\0\x1cftypM4A \0\0\0\0M4A mp42isom", ("other", "m4a")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", ("video", "webm")),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", ("video", "matroska")),
        (b"%PDF-1.7", ("other", None)),
        (b"", ("other", None)),
        (b"BMP is mentioned in this text file", ("other", None)),
    ],
)
def test_sniff_by_magic_bytes(head: bytes, expected: tuple[str, str | None]) -> None:
    assert sniff(head) == expected


def test_kind_comes_from_bytes_not_extension(tmp_path: Path, testdata: Path) -> None:
    path = tmp_path / "photo.txt"
    path.write_bytes((testdata / BRIDGE).read_bytes())
    result = hash_file(path)
    assert result.kind == "image" and result.get(SignalType.PDQ) is not None


def test_over_long_video_keeps_exact_hashes_and_names_the_limit(testdata: Path) -> None:
    path = testdata / "videos/pattern-sd-grey-bar.mp4"
    data = path.read_bytes()
    options = HashOptions(max_video_seconds=5)
    for result in (
        hash_file(path, options=options),
        hash_bytes(data, name="up.mp4", options=options),
    ):
        assert result.error == "video too long: 6.87 s > limit 5 s"
        assert result.kind == "video" and result.format == "mp4"
        _assert_exact(result, data)
        assert result.get(SignalType.VPDQ) is None


def test_short_video_within_limit_is_hashed(testdata: Path) -> None:
    path = testdata / "videos/doorknob-hd-no-bar.mp4"
    options = HashOptions(max_video_seconds=10)
    for result in (
        hash_file(path, options=options),
        hash_bytes(path.read_bytes(), name="door.mp4", options=options),
    ):
        assert result.error is None
        assert len(result.get(SignalType.VPDQ).frames) == 4


@pytest.mark.parametrize("limit", [None, 0])
def test_video_limit_can_be_switched_off(testdata: Path, limit: float | None) -> None:
    result = hash_file(
        testdata / "videos/pattern-sd-grey-bar.mp4", options=HashOptions(max_video_seconds=limit)
    )
    assert result.error is None and len(result.get(SignalType.VPDQ).frames) == 7  # 6.87 s


def test_video_limit_default_and_validation() -> None:
    assert HashOptions().max_video_seconds == 3600.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="max_video_seconds must be >= 0"):
            HashOptions(max_video_seconds=bad)


def test_unprobeable_video_is_per_file_error_under_a_limit(tmp_path: Path) -> None:
    data = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + np.random.default_rng(4).bytes(40_000)
    result = _hostile(tmp_path, "garbage.mp4", data, HashOptions(max_video_seconds=5))
    assert result.kind == "video"
    assert result.error.startswith("video could not be decoded")

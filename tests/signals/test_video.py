"""vPDQ: Meta's match table, pytx-compatible serialisation, and corrupt video."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.signals import SignalError, VideoFrame, parse_frames, serialize_frames
from bastion.signals.video import video_match_score, vpdq_frames

COLUMNS = {
    "c19": "chair-19-sd-bar",
    "c20": "chair-20-sd-bar",
    "c22grey": "chair-22-sd-grey-bar",
    "c22sepia": "chair-22-sd-sepia-bar",
    "c22logoL": "chair-22-with-large-logo-bar",
    "c22logoS": "chair-22-with-small-logo-bar",
    "c22orig": "chair-orig-22-sd-bar",
    "door": "doorknob-hd-no-bar",
    "pHD": "pattern-hd-no-bar",
    "pLong": "pattern-longer-no-bar",
    "pSDgrey": "pattern-sd-grey-bar",
    "pSDlogoL": "pattern-sd-with-large-logo-bar",
    "pSDlogoS": "pattern-sd-with-small-logo-bar",
}
# testdata/SOURCES.md, rows = query, columns in COLUMNS order (percent of query frames matched).
TABLE = {
    "chair-19-sd-bar": [100, 16, 16, 11, 0, 5, 11, 0, 0, 0, 0, 0, 0],
    "chair-20-sd-bar": [10, 100, 100, 100, 0, 95, 100, 0, 0, 0, 0, 0, 0],
    "chair-22-sd-grey-bar": [9, 96, 100, 100, 0, 100, 100, 0, 0, 0, 0, 0, 0],
    "chair-22-with-large-logo-bar": [0, 0, 0, 0, 100, 4, 0, 0, 0, 0, 0, 0, 0],
    "chair-orig-22-sd-bar": [4, 96, 100, 100, 0, 100, 100, 0, 0, 0, 0, 0, 0],
    "doorknob-hd-no-bar": [0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0],
    "pattern-hd-no-bar": [0, 0, 0, 0, 0, 0, 0, 0, 100, 43, 0, 0, 0],
    "pattern-sd-grey-bar": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 100],
    "pattern-sd-with-large-logo-bar": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0],
}
A = "a" * 64
B = "b" * 64


@pytest.fixture(scope="session")
def video_frames(testdata: Path) -> dict[str, tuple[VideoFrame, ...]]:
    return {
        name: vpdq_frames(testdata / "videos" / f"{name}.mp4", seconds_per_hash=1.0)
        for name in COLUMNS.values()
    }


def test_reproduces_sources_match_table(video_frames: dict[str, tuple[VideoFrame, ...]]) -> None:
    targets = list(COLUMNS.values())
    for query, expected in TABLE.items():
        got = [video_match_score(video_frames[query], video_frames[t])[0] for t in targets]
        assert [round(g) for g in got] == expected, query


def test_target_percent_is_the_reverse_view(video_frames) -> None:
    q, t = video_frames["chair-19-sd-bar"], video_frames["chair-20-sd-bar"]
    assert video_match_score(q, t)[1] == video_match_score(t, q)[0]


def test_padded_dimensions_hash(testdata: Path) -> None:
    frames = vpdq_frames(testdata / "videos/test-padded-dimensions.mp4")
    assert len(frames) >= 2
    assert [f.timestamp for f in frames[:2]] == [0.0, 1.0]
    assert all(len(f.pdq) == 64 and 0 <= f.quality <= 100 for f in frames)


def test_corrupt_video_raises_signal_error(tmp_path: Path, testdata: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((testdata / "videos/chair-20-sd-bar.mp4").read_bytes()[:100_000])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 200)
    for path in (cut, junk):
        with pytest.raises(SignalError, match="video could not be decoded"):
            vpdq_frames(path)
    with pytest.raises(FileNotFoundError):
        vpdq_frames(tmp_path / "missing.mp4")


def test_serialisation_round_trips_with_threatexchange(video_frames) -> None:
    vpdq_util = pytest.importorskip("threatexchange.extensions.vpdq.vpdq_util")
    frames = video_frames["pattern-hd-no-bar"]
    text = serialize_frames(frames)
    theirs = vpdq_util.vpdq_to_json(
        [vpdq_util.VpdqCompactFeature(f.pdq, f.quality, f.timestamp) for f in frames]
    )
    assert text == theirs
    parsed = parse_frames(text)
    assert [(f.pdq, f.quality) for f in parsed] == [(f.pdq, f.quality) for f in frames]
    assert [str(c) for c in vpdq_util.json_to_vpdq(text)] == json.loads(text)


def test_timestamps_use_three_significant_digits() -> None:
    text = serialize_frames([VideoFrame(A, 90, 12.345), VideoFrame(A, 90, 0.0)])
    assert json.loads(text) == [f"{A},90,12.3", f"{A},90,0.0"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"a": 1}', "must be a JSON list"),
        ("[1]", "expected a 'hex,quality,timestamp' string"),
        (f'["{A},90"]', "expected 'hex,quality,timestamp'"),
        ('["abc,90,1.0"]', "64 hex digits"),
        (f'["{A},ninety,1.0"]', "bad quality or timestamp"),
        (f'["{A},101,1.0"]', "outside 0..100"),
        (f'["{A},90,-1"]', "finite number >= 0"),
        (f'["{A},90,nan"]', "finite number >= 0"),
    ],
)
def test_parse_rejects_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_frames(text)


def test_parse_accepts_empty_list_and_uppercase() -> None:
    assert parse_frames("[]") == ()
    assert parse_frames(f'["{A.upper()},50,1.0"]')[0].pdq == A


def test_score_dedupes_and_filters_quality() -> None:
    near_a = "a" * 63 + "b"  # 1 bit from A
    query = [VideoFrame(A, 90, 0), VideoFrame(A, 90, 1), VideoFrame(B, 90, 2), VideoFrame(B, 10, 3)]
    target = [VideoFrame(near_a, 80, 0), VideoFrame("0" * 64, 20, 1)]
    # Query unique frames: A, B (dup A dropped); target: near_a only (low quality dropped).
    assert video_match_score(query, target) == (50.0, 100.0)
    assert video_match_score(query, target, min_quality=0) == (50.0, 50.0)
    assert video_match_score(query, target, distance=0) == (0.0, 0.0)
    assert video_match_score([], target) == (0.0, 0.0)


def test_matcher_decides_the_table_at_80_percent(video_frames) -> None:
    """The table through the matcher: a bank of all 13 videos, each query matches exactly the
    targets where at least 80% of its frames match (pytx/HMA's default decision)."""
    from bastion.index.matcher import Matcher
    from bastion.signals.base import Signal, SignalType

    @dataclass
    class Entry:
        id: int
        value: str
        bank: str = "videos"
        signal_type: str = "vpdq"
        url_match: None = None
        external_id: str | None = None
        labels: tuple[str, ...] = ()

    targets = list(COLUMNS.values())
    matcher = Matcher.from_entries(
        Entry(i, serialize_frames(video_frames[t]), external_id=t) for i, t in enumerate(targets)
    )
    for query, row in TABLE.items():
        signal = Signal(SignalType.VPDQ, serialize_frames(video_frames[query]))
        got = {m.external_id for m in matcher.match([signal])}
        assert got == {t for t, pct in zip(targets, row, strict=True) if pct >= 80}, query

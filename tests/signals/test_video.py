"""vPDQ: Meta's match table, pytx-compatible serialisation, and corrupt video.

The clips are the subset of Meta's TMK test clips kept in tests/data (see its SOURCES.md): a
pattern clip in grey and with a small logo, a doorknob clip, and one with padded dimensions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.signals import SignalError, VideoFrame, parse_frames, serialize_frames
from bastion.signals.video import (
    check_video_duration,
    probe_video_duration,
    video_match_score,
    vpdq_frames,
)

COLUMNS = {
    "door": "doorknob-hd-no-bar",
    "pSDgrey": "pattern-sd-grey-bar",
    "pSDlogoS": "pattern-sd-with-small-logo-bar",
}
# tests/data/SOURCES.md: the rows and columns of Meta's 13-clip table for the clips kept there;
# rows = query, columns in COLUMNS order (percent of query frames matched).
TABLE = {
    "doorknob-hd-no-bar": [100, 0, 0],
    "pattern-sd-grey-bar": [0, 100, 100],
}
#: The pattern clips' declared length: 206 frames at 30 fps.
PATTERN_SECONDS = 206 / 30
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
    # A query of the grey pattern clip followed by the doorknob: only its pattern frames match.
    q = video_frames["pattern-sd-grey-bar"] + video_frames["doorknob-hd-no-bar"]
    t = video_frames["pattern-sd-with-small-logo-bar"]
    forward, backward = video_match_score(q, t), video_match_score(t, q)
    assert forward[1] == backward[0] and forward[0] == backward[1]
    assert forward[0] < forward[1] == 100


def test_padded_dimensions_hash(testdata: Path) -> None:
    frames = vpdq_frames(testdata / "videos/test-padded-dimensions.mp4")
    assert len(frames) >= 2
    assert [f.timestamp for f in frames[:2]] == [0.0, 1.0]
    assert all(len(f.pdq) == 64 and 0 <= f.quality <= 100 for f in frames)


def test_corrupt_video_raises_signal_error(tmp_path: Path, testdata: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((testdata / "videos/pattern-sd-grey-bar.mp4").read_bytes()[:100_000])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 200)
    for path in (cut, junk):
        with pytest.raises(SignalError, match="video could not be decoded"):
            vpdq_frames(path)
    with pytest.raises(FileNotFoundError):
        vpdq_frames(tmp_path / "missing.mp4")


def test_serialisation_round_trips_with_threatexchange(video_frames) -> None:
    vpdq_util = pytest.importorskip("threatexchange.extensions.vpdq.vpdq_util")
    frames = video_frames["pattern-sd-grey-bar"]
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
    """The table through the matcher: a bank of the kept clips, each query matches exactly the
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


def _remux_live_matroska(src: Path, dst: Path) -> Path:
    """Copy ``src``'s video packets into a live-mode Matroska file, which declares no duration
    anywhere (no Duration element, no cues), so its length can only be counted."""
    av = pytest.importorskip("av")
    with (
        av.open(str(src)) as inp,
        av.open(str(dst), "w", format="matroska", options={"live": "1"}) as out,
    ):
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:
                continue  # the demuxer's flush packet
            packet.stream = out_stream
            out.mux(packet)
    return dst


@pytest.fixture(scope="session")
def live_mkv(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("live") / "pattern-live.mkv"
    return _remux_live_matroska(testdata / "videos/pattern-sd-grey-bar.mp4", dst)


@pytest.mark.parametrize(
    "name",
    ["doorknob-hd-no-bar", "pattern-sd-grey-bar", "pattern-sd-with-small-logo-bar"],
)
def test_probed_duration_agrees_with_vpdq(video_frames, testdata: Path, name: str) -> None:
    """One hash per second: the last frame hashed starts within the last second of the video."""
    duration = probe_video_duration(testdata / "videos" / f"{name}.mp4")
    last = video_frames[name][-1].timestamp
    assert duration.source == "stream"
    assert 0 <= duration.seconds - last <= 1.0


def test_probe_reads_declared_durations(testdata: Path) -> None:
    videos = testdata / "videos"
    grey = probe_video_duration(videos / "pattern-sd-grey-bar.mp4")
    assert grey.seconds == pytest.approx(PATTERN_SECONDS)
    assert probe_video_duration(videos / "doorknob-hd-no-bar.mp4").seconds == pytest.approx(4.0)


def test_undeclared_duration_is_counted_from_packets(live_mkv: Path) -> None:
    frames = vpdq_frames(live_mkv)
    full = probe_video_duration(live_mkv)
    assert full.source == "packets"
    assert 0 <= full.seconds - frames[-1].timestamp <= 1.0
    assert full.seconds == pytest.approx(PATTERN_SECONDS, abs=0.1)


def test_packet_count_stops_as_soon_as_over_the_limit(live_mkv: Path) -> None:
    partial = probe_video_duration(live_mkv, stop_after=3.0)
    assert partial.source == "packets"
    # Stopped within a few frames (B-frame reordering) of the limit, far short of 6.87 s.
    assert 3.0 < partial.seconds < 3.5


def test_over_long_video_refused_before_hashing(testdata: Path, live_mkv: Path) -> None:
    videos = testdata / "videos"
    with pytest.raises(SignalError, match=r"^video too long: 6\.87 s > limit 5 s$"):
        vpdq_frames(videos / "pattern-sd-grey-bar.mp4", max_seconds=5)
    with pytest.raises(SignalError, match=r"^video too long: 6\.87 s > limit 6\.5 s$"):
        vpdq_frames(videos / "pattern-sd-with-small-logo-bar.mp4", max_seconds=6.5)
    with pytest.raises(SignalError, match=r"^video too long: more than 5\.\d+ s > limit 5 s"):
        vpdq_frames(live_mkv, max_seconds=5)
    assert len(vpdq_frames(videos / "doorknob-hd-no-bar.mp4", max_seconds=10)) == 4
    assert len(vpdq_frames(live_mkv, max_seconds=10)) == 7  # one hash per second of 6.87 s


def test_no_limit_means_no_probe(testdata: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 200)
    # Without a limit nothing is opened, so even junk passes the check (vPDQ refuses it later).
    assert check_video_duration(junk, None) is None
    assert check_video_duration(junk, 0) is None
    checked = check_video_duration(testdata / "videos/doorknob-hd-no-bar.mp4", 4.0)
    assert checked is not None and checked.seconds == pytest.approx(4.0)
    with pytest.raises(ValueError, match="max_seconds must be >= 0"):
        vpdq_frames(testdata / "videos/doorknob-hd-no-bar.mp4", max_seconds=-1)


def test_unprobeable_files_raise_signal_error(tmp_path: Path, testdata: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((testdata / "videos/pattern-sd-grey-bar.mp4").read_bytes()[:100_000])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 200)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (cut, junk, empty):
        with pytest.raises(SignalError, match="video could not be decoded"):
            vpdq_frames(path, max_seconds=3600)
    for path in (junk, empty):
        with pytest.raises(SignalError, match=r"^video could not be decoded: Invalid data"):
            probe_video_duration(path)
    text = tmp_path / "lyrics.mp4"  # FFmpeg opens this as an LRC subtitle file: no video in it
    text.write_text("[00:01.00]la la la\n[00:02.00]la\n")
    with pytest.raises(SignalError, match=r"^video could not be decoded: no video stream$"):
        probe_video_duration(text)
    with pytest.raises(FileNotFoundError):
        probe_video_duration(tmp_path / "missing.mp4")


def test_a_header_that_lies_about_the_length_is_caught(monkeypatch, testdata: Path) -> None:
    from bastion.signals import video

    real = video.probe_video_duration

    def lying(path, *, stop_after=None, count=False):
        if not count:  # what a crafted header would declare
            return video.VideoDuration(1.0, "stream")
        return real(path, stop_after=stop_after, count=True)

    monkeypatch.setattr(video, "probe_video_duration", lying)
    clip = testdata / "videos/pattern-sd-grey-bar.mp4"
    with pytest.raises(SignalError, match=r"video too long: more than 5\.\d+ s > limit 5 s"):
        video.check_video_duration(clip, 5)
    assert video.check_video_duration(clip, 60).seconds == 1.0  # within the limit either way

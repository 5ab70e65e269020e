"""The matcher: every signal type against bank entries, with updates visible at once."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bastion.index.matcher import Matcher
from bastion.signals import hash_file
from bastion.signals.base import Signal, SignalType
from bastion.signals.url import normalize_url
from bastion.signals.video import serialize_frames, vpdq_frames


@dataclass
class Entry:
    id: int
    signal_type: str
    value: str
    bank: str = "demo"
    url_match: str | None = None
    external_id: str | None = None
    labels: list[str] = field(default_factory=list)


def flip(hexval: str, bits: int, rng: random.Random) -> str:
    v = int(hexval, 16)
    for b in rng.sample(range(256), bits):
        v ^= 1 << b
    return f"{v:064x}"


def test_pdq_exact_and_url_signals() -> None:
    rng = random.Random(1)
    base = f"{rng.getrandbits(256):064x}"
    md5 = "0" * 31 + "1"
    m = Matcher.from_entries(
        [
            Entry(1, "pdq", base, external_id="x1", labels=["csam"]),
            Entry(2, "md5", md5, bank="other"),
            Entry(3, "url", "bad.example/dir", url_match="prefix"),
        ]
    )
    assert len(m) == 3
    near = Signal(SignalType.PDQ, flip(base, 31, rng), quality=100)
    far = Signal(SignalType.PDQ, flip(base, 32, rng), quality=100)
    [hit] = m.match([near])
    assert (hit.entry_id, hit.distance, hit.external_id, hit.labels) == (1, 31, "x1", ("csam",))
    assert m.match([far]) == []
    assert m.match([Signal(SignalType.PDQ, base, quality=40)]) == []  # low quality: not matched
    assert [x.entry_id for x in m.match([Signal(SignalType.PDQ, base, quality=40)], min_quality=0)]
    assert [x.bank for x in m.match([Signal(SignalType.MD5, md5)])] == ["other"]
    assert m.match([Signal(SignalType.MD5, md5)], banks=["demo"]) == []
    url = Signal(SignalType.URL, normalize_url("https://www.bad.example/dir/a.jpg"))
    assert [(x.entry_id, x.url_match) for x in m.match([url])] == [(3, "prefix")]

    m.remove(1)
    assert m.match([near]) == []
    m.add(Entry(1, "pdq", base))
    assert [x.entry_id for x in m.match([near])] == [1]
    m.add(Entry(1, "md5", md5))  # re-adding an id under another type replaces it
    assert m.match([near]) == []
    assert sorted(x.entry_id for x in m.match([Signal(SignalType.MD5, md5)])) == [1, 2]


def test_batched_pdq_lookup_agrees_with_single() -> None:
    rng = random.Random(2)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(2000)]
    m = Matcher.from_entries(Entry(i, "pdq", h) for i, h in enumerate(hashes))
    queries = [flip(h, rng.randint(0, 40), rng) for h in hashes[:300]]
    batched = m.lookup_pdq(queries, threshold=31)
    for q, got in zip(queries, batched, strict=True):
        single = m.match([Signal(SignalType.PDQ, q, quality=100)])
        assert [(x.entry_id, x.distance) for x in got] == [(x.entry_id, x.distance) for x in single]
    assert sum(bool(r) for r in batched) > 100


def test_dihedral_variants(testdata: Path) -> None:
    orig = hash_file(testdata / "images/reg-test-input/dih/bridge-1-original.jpg")
    m = Matcher.from_entries([Entry(1, "pdq", orig.get(SignalType.PDQ).value)])
    rotated = hash_file(
        testdata / "images/reg-test-input/dih/bridge-2-rotate-90.jpg", dihedral=True
    )
    assert m.match(rotated.signals) == []
    [hit] = m.match(rotated.signals, dihedral=rotated.pdq_dihedral)
    assert hit.distance <= 31 and hit.variant not in (None, "original")


@pytest.fixture(scope="module")
def frames(testdata: Path):
    names = ["pattern-sd-with-small-logo-bar", "pattern-sd-grey-bar", "doorknob-hd-no-bar"]
    return {n: vpdq_frames(testdata / f"videos/{n}.mp4") for n in names}


def test_video_matches_by_share_of_frames(frames) -> None:
    """Expectations from the match table in tests/data/SOURCES.md: every frame of the grey clip
    matches the logo clip; the doorknob matches nothing of it."""
    logo = serialize_frames(frames["pattern-sd-with-small-logo-bar"])
    m = Matcher.from_entries([Entry(10, "vpdq", logo, external_id="pattern")])
    grey = Signal(SignalType.VPDQ, serialize_frames(frames["pattern-sd-grey-bar"]))
    [hit] = m.match([grey])
    assert hit.entry_id == 10 and hit.score is not None and round(hit.score) == 100
    door = Signal(SignalType.VPDQ, serialize_frames(frames["doorknob-hd-no-bar"]))
    assert m.match([door]) == []
    m.remove(10)
    assert m.match([grey]) == []

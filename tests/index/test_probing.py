"""The pure parts of finding 6 (issue 12): distance bands and the near-duplicate probe detector."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bastion.index.probing import ProbeDetector, band, band_distance, distances, to_words


def _random(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _flip(hexval: str, *bits: int) -> str:
    value = int(hexval, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _detector(clock: Clock, **kw: int) -> ProbeDetector:
    args = {"radius": 16, "limit": 10, "window": 60.0, "memory": 32, **kw}
    return ProbeDetector(clock=clock, **args)


def _observe(d: ProbeDetector, key: str, hexes: list[str], matched: list[bool]) -> object:
    return d.observe(key, to_words(hexes), list(range(len(hexes))), matched)


def test_bands_and_their_numbers() -> None:
    assert [band(d, 15) for d in (0, 1, 15, 16, 31)] == ["exact", "near", "near", "far", "far"]
    assert [band_distance(b, 15, 31) for b in ("exact", "near", "far")] == [0, 15, 31]
    # A low threshold caps the number: no band reads as further than the lookup reached.
    assert band_distance("near", 15, 10) == 10 and band_distance("far", 15, 10) == 10


def test_distances_match_python_popcount() -> None:
    rng = random.Random(1)
    a = [_random(rng) for _ in range(70)]
    b = [_random(rng) for _ in range(5)]
    want = [[(int(x, 16) ^ int(y, 16)).bit_count() for y in b] for x in a]
    assert distances(to_words(a), to_words(b)).tolist() == want


def test_flips_around_a_match_are_probes_and_distinct_lookups_are_not() -> None:
    rng = random.Random(2)
    clock = Clock()
    d = _detector(clock)
    base = _random(rng)
    assert _observe(d, "k", [base], [True]).probes == 0
    # Distinct hashes, matched or not, repeats included: never probes.
    distinct = [_random(rng) for _ in range(200)]
    v = _observe(d, "k", distinct + distinct[:5] + [base], [i % 7 == 0 for i in range(206)])
    assert (v.probes, v.refused) == (0, False)
    # Flips of a matched hash: probes, counted per lookup; past the limit, refused.
    v = _observe(d, "k", [_flip(base, i) for i in range(6)], [False] * 6)
    assert (v.probes, v.refused, v.detected) == (6, False, False)
    v = _observe(d, "k", [_flip(base, i) for i in range(6, 11)], [False] * 5)
    assert (v.probes, v.in_window, v.refused, v.detected) == (5, 11, True, True)
    assert 0 < v.retry_after <= 60
    v = _observe(d, "k", [_flip(base, 40)], [False])
    assert (v.refused, v.detected) == (True, False)  # detected once per episode
    assert _observe(d, "other-key", [_flip(base, 41)], [False]).probes == 0
    clock.now += 61
    v = _observe(d, "k", [_flip(base, 42)], [False])
    assert (v.probes, v.refused) == (0, False)  # the match it was near has aged out


def test_near_lookups_that_never_match_are_not_probes() -> None:
    """A platform's near-duplicate traffic that is in no bank (a viral meme) costs nothing."""
    rng = random.Random(3)
    d = _detector(Clock())
    meme = _random(rng)
    for i in range(50):
        v = _observe(d, "k", [_flip(meme, i, i + 1)], [False])
        assert v.probes == 0


def test_flips_in_one_batch_find_each_other() -> None:
    """Without a remembered match, a batch of flips in which some match is still a probe."""
    rng = random.Random(4)
    d = _detector(Clock(), limit=100)
    base = _random(rng)
    flips = [_flip(base, i) for i in range(40)]
    v = _observe(d, "k", flips, [i % 8 == 0 for i in range(40)])
    assert v.probes == 40


def test_a_flood_of_matches_does_not_flush_a_probed_point() -> None:
    """The ring is bounded; an attacker filling it with distinct matches between probes must not
    push out the point it probes at (points probes came near are kept first)."""
    rng = random.Random(5)
    d = _detector(Clock(), memory=16, limit=1000)
    base = _random(rng)
    _observe(d, "k", [base], [True])
    for i in range(10):
        assert _observe(d, "k", [_flip(base, i)], [False]).probes == 1
        flood = [_random(rng) for _ in range(64)]
        assert _observe(d, "k", flood, [True] * 64).probes == 0


def test_a_videos_own_frames_are_not_each_others_probes() -> None:
    rng = random.Random(6)
    d = _detector(Clock())
    frame = _random(rng)
    video = [frame] + [_flip(frame, i, i + 1) for i in range(0, 20, 2)]
    v = d.observe("k", to_words(video), [0] * len(video), [True] * len(video))
    assert v.probes == 0
    # The same frames again as another lookup are near the first: one probe for the signal.
    other = [_flip(f, 200) for f in video]
    v = d.observe("k", to_words(other), [1] * len(other), [True] * len(other))
    assert v.probes == 1


def test_memory_is_bounded_per_key_and_in_keys() -> None:
    rng = random.Random(7)
    d = ProbeDetector(radius=16, limit=5, window=60, memory=8, max_keys=3, clock=Clock())
    for key in ("a", "b", "c", "d"):
        _observe(d, key, [_random(rng) for _ in range(50)], [True] * 50)
    assert len(d) == 3 and "a" not in d._keys
    assert all(s.words.shape == (8, 4) for s in d._keys.values())


def test_off_and_bad_settings() -> None:
    rng = random.Random(8)
    d = _detector(Clock(), limit=0)
    base = _random(rng)
    flips = [base] + [_flip(base, i) for i in range(100)]
    assert _observe(d, "k", flips, [True] * 101).refused is False and not d.enabled
    for bad in ({"radius": 0}, {"radius": 257}, {"limit": -1}, {"memory": 0}):
        with pytest.raises(ValueError):
            _detector(Clock(), **bad)
    assert np.asarray(to_words([base])).shape == (1, 4)

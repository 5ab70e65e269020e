"""The pure parts of finding 6 (issue 12): distance bands, the near-duplicate probe detector and
the per-entry watch."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bastion.index.probing import (
    EntryWatch,
    Look,
    ProbeDetector,
    band,
    band_distance,
    distances,
    to_words,
)
from tests.fixtures.clock import Clock


def _random(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _flip(hexval: str, *bits: int) -> str:
    value = int(hexval, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


def _detector(clock: Clock, **kw: int) -> ProbeDetector:
    args = {"radius": 16, "limit": 10, "window": 60.0, "memory": 32, **kw}
    return ProbeDetector(clock=clock.monotonic, **args)


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
    clock.advance(61)
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
    d = ProbeDetector(radius=16, limit=5, window=60, memory=8, max_keys=3, clock=Clock().monotonic)
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


# -- the per-entry watch ----------------------------------------------------------------------
def _watch(clock: Clock, **kw: float) -> EntryWatch:
    args = {"same_radius": 8, "limit": 4, "window": 100.0, "match_limit": 0, "match_window": 60.0}
    return EntryWatch(clock=clock.monotonic, **{**args, **kw})  # type: ignore[arg-type]


def _look(hexval: str, entry: int, distance: int) -> Look:
    return Look(to_words([hexval])[0].tobytes(), entry, distance)


def test_near_identical_looks_get_the_first_answer_and_cost_nothing() -> None:
    """A re-upload (within same_radius of an earlier look at the entry) is answered as that look
    was, whatever its own distance: a bit-flip walk from it learns nothing new."""
    rng = random.Random(10)
    w = _watch(Clock())
    base = _random(rng)
    assert w.observe("k", [_look(base, 7, 30)]).shown == (30,)
    walk = [_look(_flip(base, *range(i % 8 + 1)), 7, 31 + i % 3) for i in range(200)]
    v = w.observe("k", walk)
    assert not v.refused and set(v.shown) == {30}
    # Another key, or another entry, has its own looks.
    assert w.observe("other", [_look(_flip(base, 1), 7, 32)]).shown == (32,)
    assert w.observe("k", [_look(_flip(base, 1), 8, 12)]).shown == (12,)


def test_distinct_looks_at_one_entry_are_limited_and_lock_the_key() -> None:
    rng = random.Random(11)
    clock = Clock()
    w = _watch(clock)
    base = _random(rng)
    far = [_flip(base, *rng.sample(range(256), 24)) for _ in range(6)]  # ~40 bits apart
    assert w.observe("k", [_look(h, 1, 33) for h in far[:4]]).shown == (33,) * 4
    clock.advance(10)
    v = w.observe("k", [_look(far[4], 1, 29)])
    assert v.refused and v.detected and v.reason == "entry" and v.entry == 1
    assert v.retry_after == 90.0  # until the oldest look ages out of the window
    # Locked: every lookup is refused, near the entry or not, so refusals tell nothing.
    again = w.observe("k", [])
    assert again.refused and not again.detected and again.reason == "entry"
    assert not w.observe("other", [_look(far[4], 1, 29)]).refused
    clock.advance(91)  # at 101 s: the window has passed: answered again, a new episode
    assert w.observe("k", [_look(far[5], 1, 29)]).shown == (29,)


def test_matched_answers_are_capped_before_the_request() -> None:
    clock = Clock()
    w = _watch(clock, limit=0, match_limit=5, match_window=60.0)
    assert w.enabled
    w.answered("k", 3)
    clock.advance(30)
    w.answered("k", 3)  # over the cap after this request, which was already answered
    clock.advance(1)  # at 31 s
    v = w.observe("k", [])
    assert v.refused and v.detected and v.reason == "matched"
    assert v.retry_after == 29.0  # the first 3 age out at 60 s: 3 left, under the cap
    clock.advance(30)  # at 61 s
    assert not w.observe("k", []).refused


def test_watch_memory_is_bounded_and_off_and_bad_settings() -> None:
    rng = random.Random(12)
    w = _watch(Clock(), max_pairs=10)
    for entry in range(50):
        w.observe("k", [_look(_random(rng), entry, 40) for _ in range(3)])
    assert w.pairs() == 10 and all(len(p.looks) <= 4 for p in w._pairs.values())
    off = _watch(Clock(), limit=0, match_limit=0)
    assert not off.enabled
    for bad in ({"same_radius": -1}, {"limit": -1}, {"window": 0}, {"max_pairs": 0}):
        with pytest.raises(ValueError):
            _watch(Clock(), **bad)

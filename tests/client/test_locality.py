"""Chunk keys and probes: an item always probes its own bank keys first, within budget."""

from __future__ import annotations

import itertools

import numpy as np

from bastion.client import MODE_EXACT, Params
from bastion.client.locality import (
    bank_keys,
    bits_from_bytes,
    choose_chunk,
    chunk_bounds,
    flip_sets,
    probe_keys,
)


def test_chunks_cover_the_hash_exactly_once() -> None:
    for n in range(4, 17):
        bounds = chunk_bounds(n)
        assert bounds[0][0] == 0 and bounds[-1][1] == 256
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        assert max(hi - lo for lo, hi in bounds) <= 64


def test_probes_start_with_the_chunk_as_is_and_stay_within_budget() -> None:
    rng = np.random.default_rng(5)
    params = Params.for_mode("near")
    for _ in range(50):
        raw = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
        floats = rng.normal(size=256).astype(np.float32)
        keys = probe_keys(raw, floats, params)
        assert len(keys) == params.probes == len(set(keys))
        chosen = choose_chunk(floats, params)
        assert keys[0] == bank_keys(raw, params)[chosen]  # the unedited item hits at once
        lo, hi = chunk_bounds(params.chunks)[chosen]
        base = bits_from_bytes(raw)[lo:hi]
        for key in keys:  # every probe flips at most max_flips of the weak bits
            probe = np.unpackbits(np.frombuffer(key[2:], np.uint8))[: hi - lo]
            assert int((probe != base).sum()) <= params.max_flips


def test_flip_sets_are_cheapest_first_among_the_weakest_bits() -> None:
    margins = np.array([5.0, 0.1, 3.0, 0.2, 9.0, 0.3, 7.0, 8.0, 6.0, 4.0])
    sets = flip_sets(margins, Params.for_mode("near", probes=6))
    assert sets == [(), (1,), (3,), (5,), (1, 3), (1, 5)]
    weak = set(np.argsort(margins)[:8].tolist())
    assert all(set(s) <= weak for s in flip_sets(margins, Params.for_mode("near", probes=64)))


def test_exact_mode_has_one_key() -> None:
    params = Params(mode=MODE_EXACT, chunks=1, probes=1, max_flips=0)
    raw = bytes(range(32))
    assert probe_keys(raw, None, params) == bank_keys(raw, params) == [b"E" + raw]

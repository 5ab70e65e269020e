"""HashedIndex (identity digests): the same answers as a plain dict under adds, re-adds,
removals and compactions, single and batched."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bastion.index import hashed
from bastion.index.hashed import HashedIndex


def _digest(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


def test_matches_a_dict_reference_through_adds_removals_and_compactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hashed, "_MIN_PENDING", 50)  # compact often
    rng = random.Random(16)
    index = HashedIndex()
    values = [_digest(rng) for _ in range(300)]
    # Digests sharing their first 8 bytes (the sorted key) must still be told apart.
    twin = values[0][:16] + _digest(rng)[16:]
    values.append(twin)
    ref: dict[int, str] = {}
    next_id = 1
    for step in range(3000):
        op = rng.random()
        if op < 0.6 or not ref:
            value = rng.choice(values)
            index.add([next_id], [value])
            ref[next_id] = value
            next_id += 1
        elif op < 0.8:
            victim = rng.choice(list(ref))
            index.remove([victim])
            del ref[victim]
        else:  # re-add an existing id with another value
            victim = rng.choice(list(ref))
            value = rng.choice(values)
            index.add([victim], [value])
            ref[victim] = value
        if step % 97 == 0:
            index.compact()
        assert len(index) == len(ref)
    expected = {v: sorted(i for i, x in ref.items() if x == v) for v in values}
    for v in values:
        assert index.lookup(v) == expected[v]
        assert index.lookup(bytes.fromhex(v)) == expected[v]
    assert index.lookup_many(values) == [expected[v] for v in values]
    index.compact()
    assert index.lookup_many(values) == [expected[v] for v in values]
    assert index.lookup(_digest(rng)) == []


def test_bad_digests_are_refused_before_anything_is_added() -> None:
    index = HashedIndex()
    with pytest.raises(ValueError):
        index.add([1, 2], ["00" * 32, "abc"])
    with pytest.raises(ValueError):
        index.add([1], ["zz" * 32])
    with pytest.raises(ValueError):
        index.add([1, 2], ["00" * 32])
    assert len(index) == 0 and index.lookup("00" * 32) == []
    index.remove([12345])  # unknown ids are ignored
    assert len(index) == 0


def test_a_bulk_load_answers_like_single_adds() -> None:
    rng = random.Random(3)
    values = [_digest(rng) for _ in range(500)]
    bulk, single = HashedIndex(), HashedIndex()
    bulk.add([1000], [values[0]])  # pending before the bulk load is folded in
    raw = np.frombuffer(b"".join(bytes.fromhex(v) for v in values), dtype=np.uint8)
    bulk.add_arrays(np.arange(1, 501), raw.reshape(-1, 32))
    single.add(list(range(1, 501)), values)
    single.add([1000], [values[0]])
    assert len(bulk) == len(single) == 501
    assert bulk.lookup_many(values) == single.lookup_many(values)
    assert bulk.lookup(values[0]) == [1, 1000]
    with pytest.raises(ValueError):
        bulk.add_arrays(np.arange(3), raw.reshape(-1, 32)[:2])


def test_a_large_index_finds_every_entry_through_its_buckets() -> None:
    rng = np.random.default_rng(5)
    digests = rng.integers(0, 256, size=(5000, 32), dtype=np.uint8)
    digests[1, :8] = digests[0, :8]  # two entries share a key (and so a bucket)
    index = HashedIndex()
    index.add_arrays(np.arange(1, 5001), digests)
    hexes = [d.tobytes().hex() for d in digests]
    assert all(index.lookup(h) == [i] for i, h in enumerate(hexes, 1))
    assert index.lookup_many(hexes) == [[i] for i in range(1, 5001)]
    missing = rng.integers(0, 256, size=(200, 32), dtype=np.uint8)
    assert all(index.lookup(d.tobytes().hex()) == [] for d in missing)
    # The extremes of the key space land in the first and the last bucket.
    edge = np.zeros((2, 32), dtype=np.uint8)
    edge[1, :] = 255
    index.add_arrays(np.array([9001, 9002]), edge)
    assert index.lookup("00" * 32) == [9001] and index.lookup("ff" * 32) == [9002]

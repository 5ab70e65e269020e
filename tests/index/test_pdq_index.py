"""Exactness of the PDQ index against numpy brute force, on random hashes and planted neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.index import PDQIndex, hex_to_bytes, pdq
from bastion.index import _kernels as K

RADII = [0, 1, 8, 31, 32, 52, 100]


def _flip(h: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    """``h`` with exactly ``d`` distinct random bits flipped."""
    bits = np.unpackbits(h)
    bits[rng.choice(256, d, replace=False)] ^= 1
    return np.packbits(bits)


def _brute(ids: np.ndarray, hashes: np.ndarray, q: np.ndarray, radius: int) -> list:
    d = np.bitwise_count(hashes ^ q).sum(axis=1, dtype=np.int64)
    hit = d <= radius
    return sorted(zip(ids[hit].tolist(), d[hit].tolist(), strict=True), key=lambda t: (t[1], t[0]))


class Reference:
    """Dict-backed model of the index semantics: id -> hash."""

    def __init__(self) -> None:
        self.entries: dict[int, np.ndarray] = {}

    def add(self, ids: np.ndarray, hashes: np.ndarray) -> None:
        for i, h in zip(ids.tolist(), hashes, strict=True):
            self.entries[i] = h.copy()

    def remove(self, ids) -> None:
        for i in ids:
            self.entries.pop(int(i), None)

    def search(self, q: np.ndarray, radius: int) -> list[tuple[int, int]]:
        if not self.entries:
            return []
        ids = np.fromiter(self.entries, np.int64)
        return _brute(ids, np.stack(list(self.entries.values())), q, radius)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261129)


def _random(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**62, n, replace=False).astype(np.int64) - 2**61  # sparse, some negative
    return ids, rng.integers(0, 256, (n, 32), dtype=np.uint8)


# -- hex parsing --------------------------------------------------------------------------------


def test_hex_to_bytes_round_trips() -> None:
    hexes = ["00" * 32, "ff" * 32, "0123456789abcdef" * 4, "0123456789ABCDEF" * 4]
    out = hex_to_bytes(hexes)
    assert out.shape == (4, 32) and out.dtype == np.uint8
    assert [bytes(r).hex() for r in out] == [h.lower() for h in hexes]
    assert hex_to_bytes([]).shape == (0, 32)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("ab" * 31, "item 1: PDQ hash must be 64 hex characters, got 62"),
        ("zz" + "ab" * 31, "item 1: PDQ hash has non-hex characters"),
        ("a b" + "c" * 61, "item 1: PDQ hash has non-hex characters"),
        (1234, "item 1: PDQ hash must be a str, got int"),
    ],
)
def test_hex_to_bytes_names_the_bad_item(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hex_to_bytes(["00" * 32, bad, "11" * 32])  # type: ignore[list-item]


# -- exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", RADII)
def test_range_search_is_exact_with_planted_boundary_points(
    rng: np.random.Generator, radius: int
) -> None:
    ids, hashes = _random(rng, 30_000)
    queries = rng.integers(0, 256, (12, 32), dtype=np.uint8)
    # Per query: neighbours at exactly the radius (must be found) and one bit beyond (must not).
    inside = np.stack([_flip(q, radius, rng) for q in queries for _ in range(3)])
    outside = np.stack([_flip(q, radius + 1, rng) for q in queries for _ in range(3)])
    # Half the queries are also near-duplicates of indexed hashes (within the radius).
    near = np.stack([_flip(hashes[i], min(radius, 5), rng) for i in range(6)])
    queries = np.concatenate([queries, near])
    planted_in = np.arange(len(inside), dtype=np.int64) + 2**62
    planted_out = np.arange(len(outside), dtype=np.int64) + 2**62 + 1000
    all_ids = np.concatenate([ids, planted_in, planted_out])
    all_hashes = np.concatenate([hashes, inside, outside])
    index = PDQIndex()
    index.add(all_ids, all_hashes)
    assert len(index) == len(all_ids)
    for qi, q in enumerate(queries):
        got = index.search(q, radius)
        assert got == _brute(all_ids, all_hashes, q, radius)
        if qi < 12:
            found = {i for i, _ in got}
            assert set(planted_in[3 * qi : 3 * qi + 3].tolist()) <= found
            assert not set(planted_out[3 * qi : 3 * qi + 3].tolist()) & found
    assert index.search_batch(queries, radius) == [index.search(q, radius) for q in queries]


@pytest.mark.parametrize("radius", [0, 1, 8, 31, 32, 52, 64])
def test_multi_index_probing_is_exact_without_the_cost_model(
    rng: np.random.Generator, radius: int
) -> None:
    """The planner may prefer a scan; force multi-index probing to prove it exact on its own."""
    ids, hashes = _random(rng, 5_000)
    seg = pdq._Segment.build(ids, pdq._as_words(hashes))
    plan = pdq._plan(len(ids), seg.ks, radius, cost_model=False)
    assert plan is not None
    levels = plan[0]
    assert int((levels + 1).sum()) == radius + 1
    for q in [_flip(hashes[i], radius, rng) for i in range(10)]:
        qw = pdq._as_words(q.reshape(1, 32))
        rows, d = K.mih_one(qw, 0, seg.hashes, seg.alive, *seg.tables, *plan, radius)
        got = sorted(zip(seg.ids[rows].tolist(), d.tolist(), strict=True), key=lambda t: t[::-1])
        assert got == _brute(ids, hashes, q, radius)
        assert got  # the planted source hash is always within the radius


def test_planner_picks_probing_for_small_radii_and_scans_for_large() -> None:
    ks = pdq._chunk_bits(10_000_000)
    assert ks.tolist() == [24, 24, 24] + [23] * 8
    levels, masks, _ = pdq._plan(10_000_000, ks, 31)
    assert int((levels + 1).sum()) == 32 and levels.max() == 2
    assert len(masks) == 1 + 24 + 276 + 1 + 23 + 253  # k=24 and k=23 tables up to 2 flips
    assert pdq._plan(10_000_000, ks, 100) is None
    assert pdq._plan(10_000_000, ks, 256) is None
    levels, masks, _ = pdq._plan(10_000_000, ks, 0)
    assert levels.tolist() == [0] + [-1] * 10 and masks.tolist() == [0]


@pytest.mark.parametrize("n", [4096, 100_000, 2**22 + 1, 10_000_000, 50_000_000])
def test_bucket_offsets_stay_linear_in_size(n: int) -> None:
    """2 bytes per bucket must stay under 32 bytes per hash, so a segment stays under 128."""
    ks = pdq._chunk_bits(n)
    assert (ks <= K.CHUNK_WIDTHS).all()
    assert 2 * sum(1 << int(k) for k in ks) <= 32 * n


def test_radius_256_returns_everything(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 500)
    index = PDQIndex()
    index.add(ids, hashes)
    assert len(index.search(hashes[0], 256)) == 500


def test_duplicate_hashes_under_different_ids_are_all_returned(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 10_000)
    hashes[100:200] = hashes[100]
    index = PDQIndex()
    index.add(ids, hashes)
    got = index.search(hashes[100], 0)
    assert got == sorted((i, 0) for i in ids[100:200].tolist())


def test_heavily_duplicated_hashes_overflow_to_wide_offsets(rng: np.random.Generator) -> None:
    """70k equal hashes in one bucket do not fit 16-bit relative offsets; the segment widens."""
    n = 70_000
    hashes = np.repeat(rng.integers(0, 256, (1, 32), dtype=np.uint8), n, axis=0)
    index = PDQIndex()
    index.add(np.arange(n, dtype=np.int64), hashes)
    assert index._segments[0].rel.dtype == np.uint32
    got = index.search(_flip(hashes[0], 3, rng), 3)
    assert len(got) == n and got[0] == (0, 3) and got[-1] == (n - 1, 3)


def test_batch_queries_with_more_hits_than_the_batch_buffer(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 20_000)
    hashes[:300] = hashes[0]
    index = PDQIndex()
    index.add(ids, hashes)
    index.add(ids[:50] + 1, hashes[:50])  # same hash also in the tail
    queries = np.stack([hashes[0], hashes[500], _flip(hashes[0], 10, rng)])
    for radius in (0, 31, 100):
        batch = index.search_batch(queries, radius)
        assert batch == [index.search(q, radius) for q in queries]
        if radius == 0:
            assert len(batch[0]) == 350  # 300 segment + 50 tail duplicates, beyond the buffer


# -- incremental updates ------------------------------------------------------------------------


def test_add_remove_readd_take_effect_immediately(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 10_000)
    index = PDQIndex()
    index.add(ids, hashes)
    q = hashes[7]
    assert index.search(q, 0) == [(int(ids[7]), 0)]
    index.remove([int(ids[7]), 123456789])  # unknown ids are ignored
    assert index.search(q, 0) == []
    assert len(index) == 9_999
    index.add(np.array([ids[7]]), hashes[7:8])
    assert index.search(q, 0) == [(int(ids[7]), 0)]
    assert len(index) == 10_000


def test_adding_an_id_again_replaces_its_hash(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 10_000)
    index = PDQIndex()
    index.add(ids, hashes)
    new = _flip(hashes[3], 40, rng)
    index.add(ids[3:4], new[None])
    assert index.search(hashes[3], 0) == []
    assert index.search(new, 0) == [(int(ids[3]), 0)]
    # Within one call, the last hash given for an id wins.
    index.add(np.array([5, 5]), np.stack([hashes[0], new]))
    assert index.search(new, 0) == sorted([(int(ids[3]), 0), (5, 0)])
    assert len(index) == 10_001


def test_hex_api(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 100)
    index = PDQIndex()
    index.add_hex(ids.tolist(), [bytes(h).hex() for h in hashes])
    assert index.search(bytes(hashes[9]).hex(), 0) == [(int(ids[9]), 0)]
    with pytest.raises(ValueError, match="item 1"):
        index.add_hex([1, 2], ["00" * 32, "xyz"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interleaving_matches_reference(monkeypatch, seed: int) -> None:
    """Random adds, replaces, removes and re-adds, with a tiny tail so that tail flushes,
    segment merges and dead-segment rebuilds all happen; every step is checked."""
    monkeypatch.setattr(pdq, "TAIL_MAX", 32)
    rng = np.random.default_rng(seed)
    pool_ids = rng.choice(10**9, 600, replace=False).astype(np.int64)
    centres = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    index, ref = PDQIndex(), Reference()
    for step in range(120):
        op = rng.random()
        if op < 0.55:
            n = int(rng.choice([1, 5, 40, 90]))
            ids = rng.choice(pool_ids, n)
            # Near-duplicates of a few centres, so queries have real hits at varied distances.
            hashes = np.stack(
                [_flip(centres[rng.integers(4)], int(rng.integers(0, 60)), rng) for _ in ids]
            )
            index.add(ids, hashes)
            ref.add(ids, hashes)
        else:
            ids = rng.choice(pool_ids, int(rng.choice([1, 10, 80])))
            index.remove(ids.tolist())
            ref.remove(ids)
        assert len(index) == len(ref.entries)
        if step % 3 == 0:
            q = _flip(centres[rng.integers(4)], int(rng.integers(0, 20)), rng)
            for radius in (0, 8, 31, 52, 100):
                assert index.search(q, radius) == ref.search(q, radius)
    assert len(index.segment_sizes) > 0
    q = centres[0]
    before = index.search(q, 52)
    index.compact()
    assert len(index.segment_sizes) <= 1 and index._tail_n == 0
    assert index.search(q, 52) == before == ref.search(q, 52)
    assert index.search_batch(centres, 31) == [ref.search(c, 31) for c in centres]


def test_removing_most_of_a_segment_rebuilds_it(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 10_000)
    index = PDQIndex()
    index.add(ids, hashes)
    index.remove(ids[:6_000].tolist())
    assert index.segment_sizes == [4_000]
    assert index._segments[0].n_dead == 0  # rebuilt without its dead rows
    assert index.search(hashes[0], 0) == []
    assert index.search(hashes[9_999], 0) == [(int(ids[9_999]), 0)]


# -- input validation and accounting ------------------------------------------------------------


def test_bad_input_raises_precise_errors() -> None:
    index = PDQIndex()
    with pytest.raises(ValueError, match=r"radius must be in 0\.\.256"):
        index.search(np.zeros(32, np.uint8), 257)
    with pytest.raises(TypeError, match="radius must be an int"):
        index.search(np.zeros(32, np.uint8), 3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"query must be uint8 of shape \(32,\)"):
        index.search(np.zeros(31, np.uint8), 3)
    with pytest.raises(ValueError, match="hashes must have shape"):
        index.add(np.array([1]), np.zeros((1, 16), np.uint8))
    with pytest.raises(ValueError, match="must be uint8"):
        index.add(np.array([1]), np.zeros((1, 32), np.int64))
    with pytest.raises(ValueError, match="2 ids but 1 hashes"):
        index.add(np.array([1, 2]), np.zeros((1, 32), np.uint8))
    with pytest.raises(ValueError, match="ids must be a 1-D integer array"):
        index.add(np.array([1.5]), np.zeros((1, 32), np.uint8))
    with pytest.raises(ValueError, match="item 0"):
        index.search("not hex", 3)
    assert len(index) == 0 and index.search(np.zeros(32, np.uint8), 10) == []


def test_memory_stays_under_128_bytes_per_hash(rng: np.random.Generator) -> None:
    ids, hashes = _random(rng, 100_000)
    index = PDQIndex()
    index.add(ids, hashes)
    per_hash = index.memory_bytes() / len(index)
    assert 32 < per_hash < 128

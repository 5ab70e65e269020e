"""Detection of real shares (kernel of the stacked rows) and its limits."""

from __future__ import annotations

import random

import pytest

from bastion.client.account import EpochKeys
from bastion.client.field import P_DHF, P_SHARE
from bastion.psi import Row, Undecodable, dependencies, detect_real, distinct_images, reconstruct
from bastion.psi.threshold import kernel_support


def _real(keys: EpochKeys, n: int, rng: random.Random) -> list[Row]:
    rows = []
    for i in range(n):
        x = keys.x_for(rng.randbytes(32))
        rows.append(Row(i, x, keys.share(x), tuple(keys.dhf_row(x))))
    return rows


def _synthetic(keys: EpochKeys, n: int, rng: random.Random) -> list[Row]:
    rows = []
    for i in range(n):
        x = keys.x_for(rng.randbytes(32))
        share, row = keys.dummy(x)
        rows.append(Row(1000 + i, x, share, tuple(row)))
    return rows


def test_kernel_support_finds_exactly_the_dependent_rows() -> None:
    p = 101
    a, b, c = [1, 2, 3], [4, 5, 6], [7, 1, 0]
    dependent = [(x + 2 * y) % p for x, y in zip(a, b, strict=True)]  # a + 2b
    assert kernel_support([a, b, c], p) == set()
    assert kernel_support([a, c, b, dependent], p) == {0, 2, 3}
    assert kernel_support([a, a], p) == {0, 1}
    assert kernel_support([], p) == set()


@pytest.mark.parametrize(("t", "s"), [(2, 1), (5, 8), (10, 32), (30, 64)])
def test_detection_at_exactly_t_real_with_up_to_s_synthetic(t: int, s: int) -> None:
    rng = random.Random(t * 1000 + s)
    keys = EpochKeys(rng.randbytes(32), epoch=7, threshold=t, dhf_dim=s)
    real = _real(keys, t, rng)
    synthetic = _synthetic(keys, s, rng)
    mixed = synthetic + real
    rng.shuffle(mixed)
    assert detect_real([r for r in mixed if r not in real[-1:]], t) == []  # t - 1 real: nothing
    found = detect_real(mixed, t)
    assert {r.ref for r in found} == {r.ref for r in real}
    assert reconstruct(found, t) == keys.key
    more = _real(keys, 3, rng)
    assert {r.ref for r in detect_real(mixed + more, t)} == {r.ref for r in real + more}


def test_more_synthetic_than_s_is_never_opened_wrongly() -> None:
    """Past the capacity (a client ignoring the cap) the real rows cannot be singled out; the
    server must then refuse to open rather than open the wrong items."""
    t, s = 5, 4
    refused = 0
    for seed in range(20):
        rng = random.Random(seed)
        keys = EpochKeys(rng.randbytes(32), epoch=1, threshold=t, dhf_dim=s)
        rows = _real(keys, t, rng) + _synthetic(keys, s + 4, rng)
        found = detect_real(rows, t)
        try:
            key = reconstruct(found, t)
        except Undecodable:
            refused += 1
            continue
        assert key == keys.key  # whatever it finds must still be the real key
    assert refused == 20


def test_fields_are_the_documented_primes() -> None:
    assert P_SHARE == 2**255 - 19 and P_DHF == 2**127 - 1
    assert pow(3, P_DHF - 1, P_DHF) == 1 and pow(2, P_SHARE - 1, P_SHARE) == 1


def test_dependencies_split_rows_of_two_polynomials() -> None:
    """Rows forged in an account's name with another secret form a dependency of their own, so
    neither set's decoding depends on the other's (the blinding attack)."""
    t, s = 5, 16
    rng = random.Random(77)
    own = EpochKeys(rng.randbytes(32), epoch=3, threshold=t, dhf_dim=s)
    forged = EpochKeys(rng.randbytes(32), epoch=3, threshold=t, dhf_dim=s)
    mine = _real(own, t + 1, rng)
    theirs = [Row(500 + r.ref, r.x, r.share, r.dhf) for r in _real(forged, 12, rng)]
    # Each polynomial's rows take t - 1 of the t - 1 + s dimensions: room for s - (t - 1)
    # synthetic rows while the forged ones are there (they are discarded once decoded).
    noise = _synthetic(own, s - (t - 1), rng)
    mixed = mine + theirs + noise
    rng.shuffle(mixed)
    groups = dependencies(mixed, t)
    assert sorted(sorted(r.ref for r in grp) for grp in groups) == sorted(
        [sorted(r.ref for r in mine), sorted(r.ref for r in theirs)]
    )
    keys = {reconstruct(grp, t) for grp in groups}
    assert keys == {own.key, forged.key}
    with pytest.raises(Undecodable):  # the old way: one polynomial through all of them
        reconstruct(detect_real(mixed, t), t)
    assert dependencies(mine[: t - 1] + noise, t) == []


def test_distinct_images_count_pictures_not_hash_variants() -> None:
    base = int("ab" * 32, 16)
    near = format(base ^ 0b111, "064x")  # a near-duplicate entry of the same picture
    far = format(base ^ ((1 << 100) - 1), "064x")  # 100 bits away: another picture
    hashes = {1: format(base, "064x"), 2: near, 3: far, 4: format(base ^ (1 << 200) - 1, "064x")}
    # Twelve variants of one listed hash, matching it and its near-duplicate: one picture.
    assert distinct_images([[1, 2]] * 12, hashes) == 1
    assert distinct_images([[1]] * 6 + [[2]] * 6, hashes) == 1
    # Items of different pictures count once each; a shared candidate is matched optimally.
    assert distinct_images([[1, 3], [1], [4]], hashes) == 3
    assert distinct_images([[3], [3], [4], [1, 2]], hashes) == 3
    assert distinct_images([], hashes) == 0
    # An entry whose hash is unknown is a picture of its own.
    assert distinct_images([[7], [8], [1]], hashes) == 3

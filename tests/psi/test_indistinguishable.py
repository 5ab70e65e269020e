"""Below the threshold the server cannot tell real matches from synthetic vouchers.

Many accounts each send fewer than t real matches among innocent items, with synthetic vouchers
mixed in by the client's coin. For every voucher that opens, the server sees which ciphertext of
which probe opened, the share (x, y), the detection row and the two sealed parts. A curious
server tries every probe, not just until the first success. Each observable's distribution is
compared between the real and the synthetic vouchers with a chi-square test (fixed seeds, so the
outcome is reproducible), and detection finds nothing in any account.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bastion.client import group as g
from bastion.client.voucher import outer_key, parse_inner, parse_voucher
from bastion.psi import Row, detect_real

from .helpers import chi2_homogeneity, random_hashes, setup

T = 10
ACCOUNTS = 120
BANK = random_hashes(300, seed=200)
INNOCENT = random_hashes(1000, seed=201)


def _curious_open(s, data: bytes):
    """Open a voucher the way a curious server would: every probe, every ciphertext."""
    parsed = parse_voucher(data, s.params)
    hits = []
    for i, (q, cts) in enumerate(parsed.probes):
        key = outer_key(parsed.header.digest, q, g.mul(s.secret.scalar, q))
        for j, ct in enumerate(cts):
            rkey = g.open_sealed(key, ct)
            if rkey is not None:
                hits.append((i, j, rkey))
    if not hits:
        return None, 0
    plain = g.open_sealed(hits[0][2], parsed.inner, parsed.header.raw)
    return (hits[0][0], hits[0][1], parse_inner(plain, s.params)), len(hits)


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_real_and_synthetic_vouchers_look_the_same_below_the_threshold() -> None:
    s = setup(BANK, threshold=T, synthetic_ppm=100_000, dhf_dim=32)
    observed: dict[bool, Counter] = {True: Counter(), False: Counter()}
    counts = {True: 0, False: 0}
    innocent = iter(INNOCENT)
    for a in range(ACCOUNTS):
        client = s.client(f"acct-{a}", seed=a)
        real = a % T  # 0 .. t-1 real matches per account
        items = [BANK[(7 * a + k) % len(BANK)] for k in range(real)]
        items += [next(innocent) for _ in range(8)]
        rows = []
        for h in items:
            v = client.voucher_for_hash(h, "m")
            opened, hits = _curious_open(s, v.data)
            if opened is None:
                assert not v.synthetic and h not in BANK
                continue
            assert hits == 1  # never "matched twice": a synthetic voucher opens exactly once too
            probe, slot, inner = opened
            kind = v.synthetic
            counts[kind] += 1
            obs = observed[kind]
            obs[("probe", probe)] += 1
            obs[("slot", slot)] += 1
            obs[("x", inner.x >> 123)] += 1
            obs[("y", inner.share >> 251)] += 1
            obs[("row", inner.row[0] >> 123)] += 1
            obs[("part_a", inner.part_a[20] >> 4)] += 1
            obs[("part_b", inner.part_b[20] >> 4)] += 1
            rows.append(Row(len(rows), inner.x, inner.share, inner.row))
        assert detect_real(rows, T) == []  # and nothing can be reconstructed
    assert counts[False] > 400 and counts[True] > 80
    for feature, bins in [
        ("probe", 8),
        ("slot", 4),
        ("x", 16),
        ("y", 16),
        ("row", 16),
        ("part_a", 16),
        ("part_b", 16),
    ]:
        table = [[observed[kind][(feature, b)] for b in range(bins)] for kind in (False, True)]
        p_value = chi2_homogeneity(table)
        assert p_value > 0.001, (feature, table, p_value)


def test_the_test_would_notice_a_difference() -> None:
    """The same statistics do flag a leak: here, synthetic shares that were not uniform."""
    biased = [[60, 40, 50, 50], [10, 40, 25, 25]]
    assert chi2_homogeneity(biased) < 0.001

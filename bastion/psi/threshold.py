"""Threshold opening: find the real shares among the matched vouchers and rebuild the key.

Below the threshold every matched voucher of an account carries a uniformly random-looking share
``(x, y)`` and row ``d`` (s elements), whether it is real or synthetic: real rows are
``v(x) · C`` with ``v(x) = (1, x, ..., x^(t-2))`` and C a secret random (t-1) x s matrix, and any
t-1 of them are jointly uniform.

Detection (after the "detectable hash function" of the Apple PSI paper; this construction is
Bastion's own). Stack the matched rows ``[v(x_i) | d_i]`` into a matrix M. Every real row is
``v(x_i) · [I | C]``, so real rows span at most t-1 dimensions, and t real rows (distinct x, so
any t-1 of their v are independent) have exactly one linear dependency, with every coefficient
non-zero. A synthetic row's ``d`` is uniform, so as long as there are at most s synthetic rows
they are (except with probability about n / 2^127) independent of everything else and take part
in no dependency. Hence: the real rows are exactly the union of the supports of M's left kernel
vectors, found by Gaussian elimination, in time polynomial in the number of rows (at most
t + s + a margin are ever considered). With fewer than t real rows the kernel is empty and
nothing is learned.

Then Lagrange interpolation at 0 over any t real shares gives K; the other real shares must lie
on the same polynomial, and every real item's part A must open under K, or the group is
reported as undecodable (more than s synthetic vouchers, or a hostile client) and nothing opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.client.field import P_DHF, P_SHARE, lagrange_at, powers


class Undecodable(Exception):
    """The matched rows do not decode (see the module docstring); nothing may be opened."""


@dataclass(frozen=True)
class Row:
    """One distinct matched share of an account's epoch (``ref`` is the caller's id for it)."""

    ref: int
    x: int
    share: int
    dhf: tuple[int, ...]


def kernel_support(matrix: Sequence[Sequence[int]], p: int) -> set[int]:
    """Indices of the rows of ``matrix`` that take part in some linear dependency (mod p)."""
    n = len(matrix)
    if n == 0:
        return set()
    m = len(matrix[0])
    # Work on the transpose: the left kernel of M is the null space of M^T (m x n).
    a = [[matrix[j][i] % p for j in range(n)] for i in range(m)]
    pivots: list[int] = []
    r = 0
    for col in range(n):
        if r == m:
            break
        pivot = next((i for i in range(r, m) if a[i][col]), None)
        if pivot is None:
            continue
        a[r], a[pivot] = a[pivot], a[r]
        inv = pow(a[r][col], -1, p)
        row_r = [v * inv % p for v in a[r]]
        a[r] = row_r
        for i in range(m):
            if i != r and a[i][col]:
                f = a[i][col]
                a[i] = [(vi - f * vr) % p for vi, vr in zip(a[i], row_r, strict=True)]
        pivots.append(col)
        r += 1
    pivot_set = set(pivots)
    support: set[int] = set()
    for free in range(n):
        if free in pivot_set:
            continue
        support.add(free)
        for ri, pc in enumerate(pivots):
            if a[ri][free]:
                support.add(pc)
    return support


def detect_real(rows: Sequence[Row], threshold: int) -> list[Row]:
    """The real rows, when there are at least ``threshold``; [] below it."""
    distinct: dict[int, Row] = {}
    for row in rows:
        distinct.setdefault(row.x, row)
    unique = list(distinct.values())
    if len(unique) < threshold:
        return []
    matrix = [[*powers(row.x, threshold - 1, P_DHF), *row.dhf] for row in unique]
    support = kernel_support(matrix, P_DHF)
    return [unique[i] for i in sorted(support)]


def reconstruct(real: Sequence[Row], threshold: int) -> int:
    """K = f(0) from at least ``threshold`` real rows, checking the others lie on f."""
    if len(real) < threshold:
        raise Undecodable(f"{len(real)} real shares; {threshold} are needed")
    base = [(row.x, row.share) for row in real[:threshold]]
    for row in real[threshold:]:
        if lagrange_at(base, row.x, P_SHARE) != row.share:
            raise Undecodable("the detected shares do not lie on one polynomial")
    return lagrange_at(base, 0, P_SHARE)

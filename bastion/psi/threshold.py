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

Rows made under another secret (vouchers forged in an account's name with someone else's
polynomial) have a dependency of their own, independent of the account's: ``dependencies``
splits the real rows into one group per polynomial, so each is decoded and judged alone.

Then Lagrange interpolation at 0 over any t real shares of a group gives its K; the other shares
must lie on the same polynomial, or the group is reported as undecodable (more than s synthetic
vouchers, or a hostile client) and nothing opens.

Decoding is the cryptographic gate, and all it needs is t items whose projection hit a table
key. What the server then does is policy (``bastion.psi.store``): it keeps K, and opens
anything, only once the group's items re-checked against the bank cover at least t distinct
pictures (``distinct_images``); otherwise it forgets K and destroys what failed the re-check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def kernel_supports(matrix: Sequence[Sequence[int]], p: int) -> list[set[int]]:
    """The supports of a basis of the left kernel of ``matrix`` (mod p): one set of row
    indices per independent linear dependency among the rows."""
    n = len(matrix)
    if n == 0:
        return []
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
    supports = []
    for free in range(n):
        if free in pivot_set:
            continue
        support = {free}
        for ri, pc in enumerate(pivots):
            if a[ri][free]:
                support.add(pc)
        supports.append(support)
    return supports


def kernel_support(matrix: Sequence[Sequence[int]], p: int) -> set[int]:
    """Indices of the rows of ``matrix`` that take part in some linear dependency (mod p)."""
    return set().union(*kernel_supports(matrix, p))


def _distinct(rows: Sequence[Row], threshold: int) -> list[Row] | None:
    distinct: dict[int, Row] = {}
    for row in rows:
        distinct.setdefault(row.x, row)
    unique = list(distinct.values())
    return unique if len(unique) >= threshold else None


def _matrix(rows: Sequence[Row], threshold: int) -> list[list[int]]:
    return [[*powers(row.x, threshold - 1, P_DHF), *row.dhf] for row in rows]


def detect_real(rows: Sequence[Row], threshold: int) -> list[Row]:
    """The real rows, when there are at least ``threshold``; [] below it."""
    unique = _distinct(rows, threshold)
    if unique is None:
        return []
    support = kernel_support(_matrix(unique, threshold), P_DHF)
    return [unique[i] for i in sorted(support)]


def dependencies(rows: Sequence[Row], threshold: int) -> list[list[Row]]:
    """The real rows grouped by the polynomial they come from: rows that share a dependency are
    in one group. An account's own rows form one group; rows made under another secret (a
    client that forged vouchers in this account's name with its own polynomial) form another,
    because the two row spaces are independent as long as t - 1 <= s. Each group can then be
    decoded, and kept or discarded, on its own: one group's rows never block another's."""
    unique = _distinct(rows, threshold)
    if unique is None:
        return []
    parent = list(range(len(unique)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    supports = kernel_supports(_matrix(unique, threshold), P_DHF)
    for support in supports:
        first, *rest = sorted(support)
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[int, list[int]] = {}
    for i in sorted(set().union(*supports)):
        groups.setdefault(find(i), []).append(i)
    return [[unique[i] for i in members] for members in groups.values()]


#: PDQ hashes within this distance are one picture (PDQ's own match threshold).
IMAGE_RADIUS = 31


def distinct_images(
    items: Sequence[Iterable[int]], entry_hashes: Mapping[int, str], radius: int = IMAGE_RADIUS
) -> int:
    """How many distinct pictures a set of verified items shows, by the bank: each item names
    the bank entries it matched; entries whose hashes are within ``radius`` of each other
    (directly or through a chain of near-duplicates) are one picture; and an item counts for
    one picture it matched that no other item has counted for (a maximum matching of items to
    pictures). So bit-flipped variants of one known hash, however many and however far apart,
    count once, and so do near-duplicate entries of one picture. An entry whose hash is not
    given is a picture of its own."""
    ids = sorted({e for item in items for e in item})
    parent = {e: e for e in ids}

    def find(e: int) -> int:
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    values = [(e, int(entry_hashes[e], 16)) for e in ids if e in entry_hashes]
    for i, (a, va) in enumerate(values):
        for b, vb in values[i + 1 :]:
            if (va ^ vb).bit_count() <= radius:
                parent[find(b)] = find(a)
    options = [sorted({find(e) for e in item}) for item in items]
    owner: dict[int, int] = {}  # picture -> item counted for it

    def claim(item: int, seen: set[int]) -> bool:
        for picture in options[item]:
            if picture in seen:
                continue
            seen.add(picture)
            if picture not in owner or claim(owner[picture], seen):
                owner[picture] = item
                return True
        return False

    return sum(claim(i, set()) for i in range(len(options)))


def reconstruct(real: Sequence[Row], threshold: int) -> int:
    """K = f(0) from at least ``threshold`` real rows, checking the others lie on f."""
    if len(real) < threshold:
        raise Undecodable(f"{len(real)} real shares; {threshold} are needed")
    base = [(row.x, row.share) for row in real[:threshold]]
    for row in real[threshold:]:
        if lagrange_at(base, row.x, P_SHARE) != row.share:
            raise Undecodable("the detected shares do not lie on one polynomial")
    return lagrange_at(base, 0, P_SHARE)

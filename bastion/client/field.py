"""Prime-field arithmetic for threshold sharing.

Two fields:

* ``P_SHARE`` = 2**255 - 19 for Shamir shares of an account's 32-byte key (one element each);
* ``P_DHF`` = 2**127 - 1 for the detectable-hash rows the server uses to tell real shares from
  synthetic ones (16 bytes per element: a row has ``dhf_dim`` of them, so the smaller field halves
  what every voucher carries; the detection argument is linear algebra and holds in any field).

Share x-coordinates are below 2**127, so one x serves in both fields.
"""

from __future__ import annotations

from collections.abc import Sequence

P_SHARE = 2**255 - 19
P_DHF = 2**127 - 1
SHARE_BYTES = 32
DHF_BYTES = 16
X_BYTES = 16


def to_bytes(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def from_bytes(data: bytes, p: int) -> int:
    """A field element from its big-endian encoding; ValueError if it is not reduced."""
    value = int.from_bytes(data, "big")
    if value >= p:
        raise ValueError("field element out of range")
    return value


def reduce_wide(data: bytes, p: int) -> int:
    """An (almost) uniform element from at least 16 more bytes than the field needs."""
    return int.from_bytes(data, "big") % p


def poly_eval(coefficients: Sequence[int], x: int, p: int) -> int:
    """c0 + c1 x + c2 x^2 + ... mod p (Horner)."""
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % p
    return acc


def powers(x: int, count: int, p: int) -> list[int]:
    """[1, x, x^2, ..., x^(count-1)] mod p."""
    out = [1] * count
    for i in range(1, count):
        out[i] = out[i - 1] * x % p
    return out


def lagrange_at(points: Sequence[tuple[int, int]], at: int, p: int) -> int:
    """The value at ``at`` of the unique polynomial of degree < len(points) through ``points``
    (distinct x). O(n^2) multiplications, one inversion per point."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (at - xj) % p
                den = den * (xi - xj) % p
        total = (total + yi * num * pow(den, -1, p)) % p
    return total

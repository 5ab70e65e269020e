"""Server side of one voucher: try to open it with the table's secret scalar.

For each probe the server computes ``a·Q`` (one scalar multiplication) and tries that key on the
probe's ciphertexts. A voucher whose item is not in the table opens nothing: every ciphertext
was made under a key the server cannot compute, so the server learns only that it did not match.
The first ciphertext that opens gives the voucher key, which opens the inner payload: a share
(x, f(x)), a detection row, and two parts sealed under the account key, all of which look the
same for a real match and a synthetic voucher until the account has t real matches.

The loop stops at the first success, and the builder guarantees at most one probe of a voucher
can hit (see ``bastion.psi.build``), so "matched once" is all any voucher can say.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.client import group as g
from bastion.client.pdata import Params
from bastion.client.voucher import (
    Inner,
    ParsedVoucher,
    VoucherError,
    outer_key,
    parse_inner,
    parse_voucher,
)


@dataclass(frozen=True)
class Opened:
    """A voucher that matched (really or synthetically): its share and sealed parts."""

    account: str
    epoch: int
    inner: Inner


def open_parsed(parsed: ParsedVoucher, scalar: bytes, params: Params) -> Inner | None:
    """The inner payload if some probe matches, else None. A matched voucher whose inner layer
    is broken (a faulty or hostile client) is treated as not matching."""
    hd = parsed.header.digest
    rkey = None
    for q, cts in parsed.probes:
        try:
            shared = g.mul(scalar, q)
        except g.InvalidPoint:
            raise VoucherError("a probe point is not a valid ristretto255 point") from None
        key = outer_key(hd, q, shared)
        for ct in cts:
            rkey = g.open_sealed(key, ct)
            if rkey is not None:
                break
        if rkey is not None:
            break
    if rkey is None:
        return None
    plain = g.open_sealed(rkey, parsed.inner, parsed.header.raw)
    if plain is None:
        return None
    try:
        return parse_inner(plain, params)
    except (VoucherError, ValueError):
        return None


def open_voucher(blob: bytes, scalar: bytes, params: Params) -> Opened | None:
    """Parse (raising :class:`VoucherError` for anything malformed) and try to open."""
    parsed = parse_voucher(blob, params)
    inner = open_parsed(parsed, scalar, params)
    if inner is None:
        return None
    return Opened(parsed.header.account, parsed.header.epoch, inner)

"""What the attackers of issue 12 build by hand: vouchers sealed in someone else's name, vouchers
that always open around a real share, and listed hashes with bits flipped outside the projection
a table key is made of. Shared by the HTTP tests and the loopback end-to-end test."""

from __future__ import annotations

import hashlib
from typing import Any

from bastion.client import Client, Voucher
from bastion.client import group as g
from bastion.client.field import DHF_BYTES, SHARE_BYTES, X_BYTES, to_bytes
from bastion.client.locality import compact_positions
from bastion.client.voucher import encode_header, seal_part_a, seal_part_b

#: Bits of a hash outside the compact projection (the 52 lowest-frequency bits): flipping them
#: keeps a voucher matching its table key while the full hash drifts away from the entry.
OUTSIDE_PROJECTION = sorted(set(range(256)) - set(compact_positions(52)))


def flip(hexval: str, bits: list[int]) -> str:
    """``hexval`` with ``bits`` flipped (bit 0 is the most significant bit of the first byte)."""
    raw = bytearray(bytes.fromhex(hexval))
    for bit in bits:
        raw[bit // 8] ^= 0x80 >> (bit % 8)
    return raw.hex()


def real_vouchers(
    client: Client, hashes: list[str], n: int, prefix: str = "item", **kw: Any
) -> dict[str, Voucher]:
    """Item id -> voucher for the first ``n`` of ``hashes`` whose client coin did not make them
    synthetic (1% of items are: their real share is never sent, which would blur the counts)."""
    out = {}
    for i, h in enumerate(hashes):
        v = client.voucher_for_hash(h, f"{prefix}-{i}", **kw)
        if not v.synthetic:
            out[f"{prefix}-{i}"] = v
        if len(out) == n:
            return out
    raise AssertionError("not enough non-synthetic items")


def forced_voucher(client: Client, pdq: bytes, item_id: str) -> Voucher:
    """A hand-made voucher that always opens, carrying a REAL share of ``client``'s account key.

    The outer layer is a synthetic voucher's (Q = r·G, S = r·L: anyone holding the published L
    can make it, no bank entry needed), around an inner payload sealed exactly as a real match
    of this client's secret: share, detection row, parts A and B. t of them decode on the
    server as a genuine dependency, whatever hashes they carry."""
    p = client.params
    epoch = client.epoch()
    keys = client.account.keys(epoch, p.threshold, p.dhf_dim)
    x = keys.x_for(pdq)
    header = encode_header(client.pdata.root_bytes, epoch, client.account_id, p.probes)
    rkey = client.random_bytes(g.KEY_BYTES)
    bound = {"account": client.account_id, "epoch": epoch}
    inner = (
        to_bytes(x, X_BYTES)
        + to_bytes(keys.share(x), SHARE_BYTES)
        + b"".join(to_bytes(v, DHF_BYTES) for v in keys.dhf_row(x))
        + seal_part_a(keys.key, x, pdq, 100, client.random_bytes, **bound)
        + seal_part_b(keys.key, x, p, item_id, "image/jpeg", b"", client.random_bytes, **bound)
    )
    probes = client._synthetic_probes(hashlib.sha256(header).digest(), rkey)
    data = header + b"".join(probes) + g.seal(rkey, inner, header)
    return Voucher(data, epoch, client.account_id, False, pdq.hex(), 0)

"""The Merkle root of a feed version: a commitment to exactly which add records it holds.

Leaf = SHA-256(0x00 || canonical add-record bytes); the leaves are sorted (so the root depends
on the set, not on any database's row order); interior node = SHA-256(0x01 || left || right),
splitting an odd count as RFC 6962 does (the left subtree holds the largest power of two below
n); the empty tree's root is SHA-256(b""). Every subscriber that received the same records
computes the same root, so comparing roots shows whether everyone got the same list.

Pure: no database or web imports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def leaf_hash(record: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of_leaves(leaves: list[bytes]) -> str:
    """The root over leaf hashes (sorted here, in place). Built bottom-up: pairing neighbours
    and carrying an odd last node up unchanged is the same tree as RFC 6962's split."""
    if not leaves:
        return EMPTY_ROOT
    leaves.sort()
    level = leaves
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def merkle_root(records: Iterable[bytes]) -> tuple[str, int]:
    """The root and count of the canonical add records ``records`` (in any order). Memory is
    32 bytes plus object overhead per record: fine for millions, not for billions."""
    leaves = [leaf_hash(r) for r in records]
    return root_of_leaves(leaves), len(leaves)


def rfc6962_root(records: list[bytes]) -> str:
    """The same root by RFC 6962's recursive definition over already sorted leaves; for tests
    and for anyone checking a root by hand, not for large lists."""
    leaves = sorted(leaf_hash(r) for r in records)
    if not leaves:
        return EMPTY_ROOT

    def mth(nodes: list[bytes]) -> bytes:
        if len(nodes) == 1:
            return nodes[0]
        k = 1
        while k * 2 < len(nodes):
            k *= 2
        return node_hash(mth(nodes[:k]), mth(nodes[k:]))

    return mth(leaves).hex()

"""Exact lookup of 256-bit digests (keyed identity hashes), compact enough for tens of millions.

A Python dict of 10M hex strings to id sets costs several gigabytes. Here the bulk of the entries
sits in three parallel numpy arrays sorted by the digest's first 8 bytes (48 bytes an entry: the
8-byte key, the whole 32-byte digest to confirm a hit, the 8-byte id), with a bucket table over
the keys' top bits (about 4 bytes an entry) so a lookup goes straight to its place. Recent
additions wait in a small dict and removals in a set until :meth:`compact` folds them in, which
happens by itself when the additions outgrow the sorted part (so a long run of single adds costs
O(log n) merges).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np

DIGEST_BYTES = 32
_MIN_PENDING = 65_536


class HashedIndex:
    """Maps a 32-byte digest (given as 64 hex characters or bytes) to the ids holding it."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.uint64)
        self._digests = np.empty((0, DIGEST_BYTES), dtype=np.uint8)
        self._ids = np.empty(0, dtype=np.int64)
        self._sorted_ids = np.empty(0, dtype=np.int64)  # to tell whether an id is in the arrays
        self._pending: dict[bytes, list[int]] = {}
        self._pending_of: dict[int, bytes] = {}
        self._removed: set[int] = set()
        self._view_cache: tuple[memoryview, memoryview, memoryview] | None = None
        self._starts: memoryview | None = None
        self._shift = 64

    def __len__(self) -> int:
        return len(self._ids) - len(self._removed) + len(self._pending_of)

    def _in_base(self, id_: int) -> bool:
        i = int(np.searchsorted(self._sorted_ids, id_))
        return i < len(self._sorted_ids) and int(self._sorted_ids[i]) == id_

    @staticmethod
    def _raw(value: str | bytes) -> bytes:
        raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
        if len(raw) != DIGEST_BYTES:
            raise ValueError(
                f"a digest is {DIGEST_BYTES} bytes ({2 * DIGEST_BYTES} hex characters)"
            )
        return raw

    def add(self, ids: Sequence[int], values: Sequence[str | bytes]) -> None:
        """Add or replace entries; ``ids`` and ``values`` pair up by position."""
        if len(ids) != len(values):
            raise ValueError(f"{len(ids)} ids but {len(values)} values")
        raws = [self._raw(v) for v in values]  # all checked before any is added
        for id_, raw in zip(ids, raws, strict=True):
            id_ = int(id_)
            self.remove([id_])
            self._pending.setdefault(raw, []).append(id_)
            self._pending_of[id_] = raw
        if len(self._pending_of) > max(_MIN_PENDING, len(self._ids)):
            self.compact()

    def add_arrays(self, ids: np.ndarray, digests: np.ndarray) -> None:
        """Bulk add: ``ids`` (n,) and ``digests`` (n, 32) uint8, for ids not yet in the index
        (a fresh load), merged into the sorted arrays at once without a Python object each."""
        digests = np.ascontiguousarray(digests, dtype=np.uint8).reshape(-1, DIGEST_BYTES)
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(digests):
            raise ValueError(f"{len(ids)} ids but {len(digests)} digests")
        self.compact()
        keys = digests[:, :8].copy().view(">u8").ravel().astype(np.uint64)
        keys = np.concatenate([self._keys, keys])
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._digests = np.concatenate([self._digests, digests])[order]
        self._ids = np.concatenate([self._ids, ids])[order]
        self._sorted_ids = np.sort(self._ids)
        self._view_cache = None
        self._bucket()

    def remove(self, ids: Iterable[int]) -> None:
        """Delete entries; unknown ids are ignored."""
        for id_ in ids:
            id_ = int(id_)
            raw = self._pending_of.pop(id_, None)
            if raw is not None:
                holders = self._pending[raw]
                holders.remove(id_)
                if not holders:
                    del self._pending[raw]
            elif id_ not in self._removed and self._in_base(id_):
                self._removed.add(id_)

    def lookup(self, value: str | bytes) -> list[int]:
        """Ids holding exactly this digest, ascending: the key's bucket gives where to look in
        the sorted arrays (read through memoryviews, Python ints without numpy scalars)."""
        raw = self._raw(value)
        found = list(self._pending.get(raw, ()))
        key = int.from_bytes(raw[:8], "big")
        keys, digests, ids = self._views
        starts = self._starts
        if starts is not None:  # the bucket of the key's top bits: O(1), no binary search
            bucket = key >> self._shift
            i, n = starts[bucket], starts[bucket + 1]
        else:
            i, n = bisect_left(keys, key), len(keys)
        while i < n and keys[i] <= key:
            if keys[i] != key:
                i += 1
                continue
            if digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES] == raw:
                id_ = ids[i]
                if id_ not in self._removed:
                    found.append(id_)
            i += 1
        if len(found) > 1:
            found.sort()
        return found

    def lookup_many(self, values: Sequence[str | bytes]) -> list[list[int]]:
        """:meth:`lookup` for many digests at once. Without a bucket table (a small index) the
        search and the digest check are vectorised over the batch; with one, each digest's
        bucket is read directly, which measured faster than any batched search."""
        if self._starts is not None:  # bucketed: a direct read each beats a batched search
            return [self.lookup(v) for v in values]
        raws = [self._raw(v) for v in values]
        if not raws:
            return []
        arr = np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
        keys = arr[:, :8].copy().view(">u8").ravel().astype(np.uint64)
        lo = np.searchsorted(self._keys, keys, side="left")
        hi = np.searchsorted(self._keys, keys, side="right")
        out: list[list[int]] = [[] for _ in raws]
        one = np.flatnonzero(hi - lo == 1)
        if len(one):
            at = lo[one]
            same = np.all(self._digests[at] == arr[one], axis=1)
            for j, id_ in zip(one[same].tolist(), self._ids[at[same]].tolist(), strict=True):
                if id_ not in self._removed:
                    out[j].append(id_)
        _, digests, ids = self._views
        for j in np.flatnonzero(hi - lo > 1).tolist():  # several entries share the first 8 bytes
            for i in range(int(lo[j]), int(hi[j])):
                same = digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES] == raws[j]
                if same and ids[i] not in self._removed:
                    out[j].append(ids[i])
        if self._pending:
            for j, raw in enumerate(raws):
                out[j] += self._pending.get(raw, ())
        for found in out:
            if len(found) > 1:
                found.sort()
        return out

    def _bucket(self) -> None:
        """Index the sorted keys by their top bits (about one entry a bucket): ``starts[b]`` is
        where bucket ``b`` begins, so a lookup reads two offsets instead of searching."""
        n = len(self._keys)
        if n < 1024:
            self._starts, self._shift = None, 64
            return
        bits = min(26, max(10, n.bit_length()))
        self._shift = 64 - bits
        edges = np.arange(1 << bits, dtype=np.uint64) << np.uint64(self._shift)
        starts = np.empty((1 << bits) + 1, dtype=np.uint32 if n < 2**32 else np.int64)
        starts[:-1] = np.searchsorted(self._keys, edges, side="left")
        starts[-1] = n
        self._starts = starts.data

    @property
    def _views(self) -> tuple[memoryview, memoryview, memoryview]:
        views = self._view_cache
        if views is None:
            views = self._view_cache = (
                np.ascontiguousarray(self._keys).data,
                np.ascontiguousarray(self._digests).reshape(-1).data,
                np.ascontiguousarray(self._ids).data,
            )
        return views

    def compact(self) -> None:
        """Fold pending additions and removals into the sorted arrays."""
        if not self._pending_of and not self._removed:
            return
        keep = np.ones(len(self._ids), dtype=bool)
        if self._removed:
            keep = ~np.isin(self._ids, np.fromiter(self._removed, dtype=np.int64))
        new_ids = np.fromiter(self._pending_of.keys(), dtype=np.int64, count=len(self._pending_of))
        new_digests = np.frombuffer(b"".join(self._pending_of.values()), dtype=np.uint8).reshape(
            -1, DIGEST_BYTES
        )
        new_keys = new_digests[:, :8].copy().view(">u8").ravel().astype(np.uint64)
        keys = np.concatenate([self._keys[keep], new_keys])
        digests = np.concatenate([self._digests[keep], new_digests])
        ids = np.concatenate([self._ids[keep], new_ids])
        order = np.argsort(keys, kind="stable")
        self._keys, self._digests, self._ids = keys[order], digests[order], ids[order]
        self._sorted_ids = np.sort(self._ids)
        self._view_cache = None
        self._bucket()
        self._pending.clear()
        self._pending_of.clear()
        self._removed.clear()

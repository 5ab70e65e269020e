"""Exact Hamming range search over 256-bit PDQ hashes, with incremental add and remove.

Design
------
The index is a small log-structured merge tree:

* a **tail**: an append-only buffer of at most ``TAIL_MAX`` entries searched by brute force, so an
  ``add`` costs an array append and is visible to the very next lookup;
* **segments**: immutable multi-index-hashing (MIH, Norouzi et al.) tables built from the tail
  (or directly from a large ``add``). When segments of similar size pile up they are merged, so
  there are O(log N) segments and each entry is rebuilt O(log N) times over its life (amortised
  merges, never a full rebuild on the lookup path);
* **tombstones**: ``remove`` clears a per-row ``alive`` flag in its segment (or deletes from the
  tail). A segment more than half dead is rebuilt without its dead rows.

Every live id is held in exactly one place, so per-segment answers never overlap. Within a
segment, rows are sorted by id: the row-to-id map is the sorted id array itself and id-to-row is a
binary search, so no per-entry dictionary is needed.

MIH segment: the hash is cut into 11 disjoint chunks (3 of 24 bits, 8 of 23). If two hashes differ
in at most ``r`` bits and chunk ``c`` is probed with every key within ``s_c`` flips, then
``sum(s_c + 1) > r`` guarantees (pigeonhole) that some chunk differs by at most ``s_c`` bits, so
every true neighbour is a candidate; candidates are verified by full popcount distance, so answers
are exact for any radius. Each chunk has a CSR table (bucket offsets plus uint32 row numbers). The
bucket key is the chunk truncated to ``k_c`` bits, about ``log2 n`` (see :func:`_chunk_bits`),
which keeps buckets near one entry and memory linear in ``n``; probing only those bits is still
exact because the distance on a subset of bits never exceeds the full distance. Offsets are stored
as a uint32 base per 256 buckets plus a uint16 offset per bucket (uint32 if a block overflows,
e.g. heavily duplicated hashes). At 10M hashes this is about 109 bytes per hash: 32 hash, 8 id,
1 flag, 44 rows, ~24 offsets; at any size at most ~117.

A lookup then costs a chain of three dependent random reads per candidate (bucket offset, row
number, hash); the kernel runs them in phases with software prefetch so that many cache misses
overlap (see :func:`bastion.index._kernels.mih_one`).

Per query and segment a cost model spends the pigeonhole budget one flip level at a time on the
cheapest chunk, and falls back to a brute-force scan when that is expected to be cheaper; both are
exact. Radius 31 probes ~2,900 buckets at 10M; radius 100 scans.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from bastion.index import _kernels as K

__all__ = ["HASH_BITS", "HASH_BYTES", "PDQIndex", "hex_to_bytes"]

#: Per segment and radius: flip level per chunk, flip-mask tables and each chunk's table offset.
_Plan = tuple[np.ndarray, np.ndarray, np.ndarray]
#: Per segment, the kernels' table arguments: rows_flat, rel, rel_off, base, base_off, ks.
_Tables = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

HASH_BITS = 256
HASH_BYTES = 32
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")

#: Entries held in the brute-force tail before it is frozen into a segment.
TAIL_MAX = 4096
#: Two neighbouring segments (by size) are merged when the larger is at most this many times the
#: smaller: sizes then grow geometrically and there are O(log N) segments.
MERGE_RATIO = 2
#: Memory allowed for bucket offsets (2 bytes per bucket) per hash, see :func:`_chunk_bits`.
_REL_BYTES_PER_HASH = 24
#: Larger flip tables than this per chunk always lose to a scan; it also bounds table memory.
_MAX_PROBES_PER_CHUNK = 1 << 20
#: Hits a batched query can return before it is rerun alone.
_BATCH_CAP = 64
#: Rough per-operation costs (ns) for the planner, measured on a 2-core EPYC at 10M hashes:
#: a bucket probe (one likely cache miss), a candidate (two misses: row number and hash) and a
#: brute-force row (sequential 32-byte read and popcount).
_COST_PROBE = 12.0
_COST_CAND = 25.0
_COST_SCAN = 2.0


def hex_to_bytes(hexes: Sequence[str]) -> np.ndarray:
    """Parse 64-character hex PDQ hashes into an ``(N, 32)`` uint8 array (big-endian bytes).

    Raises ``ValueError`` naming the first malformed item, so a caller can report it per entry.
    """
    n = len(hexes)
    if n == 0:
        return np.empty((0, HASH_BYTES), np.uint8)
    try:
        if all(isinstance(h, str) and len(h) == 2 * HASH_BYTES for h in hexes):
            raw = bytes.fromhex("".join(hexes))
            if len(raw) == n * HASH_BYTES:
                return np.frombuffer(raw, np.uint8).reshape(n, HASH_BYTES).copy()
    except ValueError:
        pass
    # Slow path only to name the culprit (fromhex also skips whitespace, hence the char check).
    for i, h in enumerate(hexes):
        _check_hex(i, h)
    raise AssertionError("unreachable: the fast path failed yet every item is valid")


def _check_hex(i: int, h: object) -> None:
    if not isinstance(h, str):
        raise ValueError(f"item {i}: PDQ hash must be a str, got {type(h).__name__}")
    if len(h) != 2 * HASH_BYTES:
        raise ValueError(f"item {i}: PDQ hash must be 64 hex characters, got {len(h)}: {h[:80]!r}")
    if not _HEX_CHARS.issuperset(h):
        raise ValueError(f"item {i}: PDQ hash has non-hex characters: {h!r}")


def _as_words(hashes: np.ndarray) -> np.ndarray:
    """``(N, 32)`` uint8 -> contiguous ``(N, 4)`` uint64 (a view when possible)."""
    return np.ascontiguousarray(hashes).view(np.uint64).reshape(-1, 4)


def _check_hashes(hashes: np.ndarray, what: str) -> np.ndarray:
    hashes = np.asarray(hashes)
    if hashes.ndim != 2 or hashes.shape[1] != HASH_BYTES:
        raise ValueError(f"{what} must have shape (N, 32), got {hashes.shape}")
    if hashes.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 bytes, got dtype {hashes.dtype}")
    return hashes


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"radius must be an int, got {type(radius).__name__}")
    if not 0 <= radius <= HASH_BITS:
        raise ValueError(f"radius must be in 0..256, got {radius}")
    return int(radius)


def _aligned_empty(shape: tuple[int, ...], dtype: type, align: int = 64) -> np.ndarray:
    """An uninitialised array starting on a cache line, so each 32-byte hash sits in one line."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + align, np.uint8)
    skip = -buf.ctypes.data % align
    return buf[skip : skip + nbytes].view(dtype).reshape(shape)


def _chunk_bits(n: int) -> np.ndarray:
    """Bucket bits per chunk for an ``n``-row segment.

    About ``log2 n`` keeps buckets near one entry with memory linear in ``n``; chunks wider than
    that get one more bit while the offset tables stay within ``_REL_BYTES_PER_HASH`` (at 10M
    this gives the three 24-bit chunks their full width, halving their candidates).
    """
    base = max(4, round(math.log2(max(n, 1))))
    ks = np.minimum(K.CHUNK_WIDTHS, base)
    budget = _REL_BYTES_PER_HASH * n
    used = 2 * sum(1 << int(k) for k in ks)
    for c in range(K.N_CHUNKS):
        extra = 2 * (1 << int(ks[c]))
        if ks[c] < K.CHUNK_WIDTHS[c] and used + extra <= budget:
            ks[c] += 1
            used += extra
    return ks.astype(np.int64)


@dataclass
class _Segment:
    """An immutable MIH table over rows sorted by id; only ``alive``/``n_dead`` ever change."""

    ids: np.ndarray  # int64 (n,), ascending, unique
    hashes: np.ndarray  # uint64 (n, 4)
    alive: np.ndarray  # uint8 (n,)
    #: Kernel arguments: rows_flat uint32 (N_CHUNKS * n,), rel (flat, uint16 or uint32),
    #: rel_off, base (flat uint32), base_off, ks (bucket bits per chunk).
    tables: _Tables
    n_dead: int = 0
    plans: dict[int, _Plan | None] = field(default_factory=dict)

    @classmethod
    def build(cls, ids: np.ndarray, words: np.ndarray) -> _Segment:
        """Build from unique ``ids`` and their ``(n, 4)`` uint64 hashes."""
        n = len(ids)
        if n >= 2**32:
            raise ValueError("a segment holds fewer than 2**32 hashes")
        order = np.argsort(ids, kind="stable")
        ids = np.ascontiguousarray(ids[order])
        words = np.take(words, order, axis=0, out=_aligned_empty((n, 4), np.uint64))
        ks = _chunk_bits(n)
        nbs = [1 << int(k) for k in ks]
        rel_off = np.concatenate(([0], np.cumsum([nb + 1 for nb in nbs]))).astype(np.int64)
        base_len = [(nb >> K.BLOCK_SHIFT) + 1 for nb in nbs]
        base_off = np.concatenate(([0], np.cumsum(base_len))).astype(np.int64)
        rows = _aligned_empty((K.N_CHUNKS, n), np.uint32)
        base = np.empty(int(base_off[-1]), np.uint32)
        rel = np.empty(int(rel_off[-1]), np.uint16)
        if K.build_tables(words, ks, rows, rel, rel_off, base, base_off) > np.iinfo(np.uint16).max:
            rel = np.empty(int(rel_off[-1]), np.uint32)
            K.build_tables(words, ks, rows, rel, rel_off, base, base_off)
        tables = (rows.reshape(-1), rel, rel_off, base, base_off, ks)
        return cls(ids, words, np.ones(n, np.uint8), tables)

    @property
    def rel(self) -> np.ndarray:
        return self.tables[1]

    @property
    def ks(self) -> np.ndarray:
        return self.tables[5]

    @property
    def n_live(self) -> int:
        return len(self.ids) - self.n_dead

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ids, self.hashes, self.alive, *self.tables))

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        keep = self.alive.view(bool)
        return self.ids[keep], self.hashes[keep]

    def kill(self, ids: np.ndarray) -> int:
        """Tombstone the live rows among ``ids`` (sorted); returns how many were found."""
        n = len(self.ids)
        pos = np.searchsorted(self.ids, ids)
        found = pos < n
        pos, ids = pos[found], ids[found]
        hit = (self.ids[pos] == ids) & self.alive[pos].view(bool)
        pos = pos[hit]
        self.alive[pos] = 0
        self.n_dead += len(pos)
        return len(pos)

    def plan(self, radius: int) -> _Plan | None:
        """Flip level per chunk (and the flip masks) for ``radius``, or ``None`` to scan."""
        if radius not in self.plans:
            self.plans[radius] = _plan(len(self.ids), self.ks, radius)
        return self.plans[radius]


@functools.lru_cache(maxsize=64)
def _flip_masks(k: int, s: int) -> np.ndarray:
    """Every ``k``-bit mask with at most ``s`` set bits, by increasing popcount."""
    combos = (c for j in range(s + 1) for c in combinations(range(k), j))
    return np.array([sum(1 << b for b in c) for c in combos], np.int64)


def _plan(n: int, ks: np.ndarray, radius: int, *, cost_model: bool = True) -> _Plan | None:
    """Flip levels for ``radius`` in an ``n``-row segment with ``ks`` bucket bits per chunk.

    Returns ``None`` when multi-index probing cannot be exact (more flips than bits) or, with
    ``cost_model``, when a brute-force scan is expected to be cheaper.
    """
    # The pigeonhole budget sum(s_c + 1) = radius + 1 is spent one flip level at a time on the
    # chunk where it costs least; probe counts are convex in s, so greedy is optimal.
    kl = [int(k) for k in ks]
    per_probe = [_COST_PROBE + _COST_CAND * n / (1 << k) for k in kl]
    levels = [-1] * K.N_CHUNKS
    cost = 0.0
    for _ in range(radius + 1):
        best, best_inc = -1, math.inf
        for c in range(K.N_CHUNKS):
            s = levels[c] + 1
            if s <= kl[c] and (inc := math.comb(kl[c], s) * per_probe[c]) < best_inc:
                best, best_inc = c, inc
        if best < 0:
            return None
        levels[best] += 1
        cost += best_inc
    probes = [sum(math.comb(k, j) for j in range(s + 1)) for k, s in zip(kl, levels, strict=True)]
    if max(probes) > _MAX_PROBES_PER_CHUNK or (cost_model and cost > n * _COST_SCAN):
        return None
    # One mask table per distinct bucket width, deep enough for its deepest chunk.
    depth: dict[int, int] = {}
    for k, s in zip(kl, levels, strict=True):
        if s >= 0:
            depth[k] = max(s, depth.get(k, 0))
    tables = [_flip_masks(k, s) for k, s in depth.items()]
    starts = dict(zip(depth, np.cumsum([0] + [len(t) for t in tables]).tolist(), strict=False))
    mask_off = np.array([starts.get(k, 0) for k in kl], np.int64)
    return np.array(levels, np.int64), np.concatenate(tables), mask_off


class PDQIndex:
    """Exact Hamming range search over 256-bit PDQ hashes with incremental add/remove.

    Ids are arbitrary int64 keys; adding an id again replaces its hash; equal hashes under
    different ids are all returned. Not thread-safe for concurrent writes; lookups may run from
    several threads when no write is in progress.
    """

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._tail_ids = np.empty(64, np.int64)
        self._tail_words = np.empty((64, 4), np.uint64)
        self._tail_n = 0
        self._no_alive = np.empty(0, np.uint8)

    # -- writes ------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, hashes: np.ndarray) -> None:
        """Add or replace entries: ``ids`` int64 ``(N,)``, ``hashes`` uint8 ``(N, 32)``."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        hashes = _check_hashes(hashes, "hashes")
        if len(ids) != len(hashes):
            raise ValueError(f"{len(ids)} ids but {len(hashes)} hashes")
        if ids.dtype == np.uint64 and len(ids) and ids.max() > np.iinfo(np.int64).max:
            raise ValueError("ids must fit in int64")
        ids = ids.astype(np.int64, copy=False)
        words = _as_words(hashes)
        # Within one call the last hash given for an id wins.
        uniq, last = np.unique(ids[::-1], return_index=True)
        if len(uniq) != len(ids):
            keep = np.sort(len(ids) - 1 - last)
            ids, words = ids[keep], words[keep]
        self._remove_sorted(np.sort(ids))
        if len(ids) >= TAIL_MAX:
            self._push_segment(_Segment.build(ids, words))
            return
        end = self._tail_n + len(ids)
        if end > len(self._tail_ids):
            cap = max(end, 2 * len(self._tail_ids))
            self._tail_ids = np.resize(self._tail_ids, cap)
            self._tail_words = np.resize(self._tail_words, (cap, 4))
        self._tail_ids[self._tail_n : end] = ids
        self._tail_words[self._tail_n : end] = words
        self._tail_n = end
        if self._tail_n >= TAIL_MAX:
            self._flush_tail()

    def add_hex(self, ids: Sequence[int], hexes: Sequence[str]) -> None:
        """:meth:`add` with hex hashes; raises ``ValueError`` naming a malformed item."""
        if len(ids) != len(hexes):
            raise ValueError(f"{len(ids)} ids but {len(hexes)} hashes")
        self.add(np.asarray(ids, dtype=np.int64), hex_to_bytes(hexes))

    def remove(self, ids: Iterable[int]) -> None:
        """Delete entries; unknown ids are ignored. Takes effect for the next lookup."""
        arr = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
        self._remove_sorted(np.unique(arr.astype(np.int64, copy=False)))

    def compact(self) -> None:
        """Merge the tail and every segment into one segment without dead rows.

        Optional: call it after a bulk load or a large purge for the fastest lookups.
        """
        parts = [s.live() for s in self._segments]
        parts.append((self._tail_ids[: self._tail_n], self._tail_words[: self._tail_n]))
        ids = np.concatenate([p[0] for p in parts])
        words = np.concatenate([p[1] for p in parts])
        self._segments = [_Segment.build(ids, words)] if len(ids) else []
        self._tail_n = 0

    def _remove_sorted(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self._tail_n:
            tail = self._tail_ids[: self._tail_n]
            gone = np.isin(tail, ids, assume_unique=True)
            if gone.any():
                keep = ~gone
                n = int(keep.sum())
                self._tail_ids[:n] = tail[keep]
                self._tail_words[:n] = self._tail_words[: self._tail_n][keep]
                self._tail_n = n
        rebuild = False
        for seg in self._segments:
            if seg.kill(ids) and seg.n_dead * 2 > len(seg.ids):
                rebuild = True
        if rebuild:
            segs, self._segments = self._segments, []
            for seg in segs:
                if seg.n_dead * 2 > len(seg.ids):
                    if seg.n_live:
                        self._push_segment(_Segment.build(*seg.live()))
                else:
                    self._segments.append(seg)
            self._merge()

    def _flush_tail(self) -> None:
        n = self._tail_n
        seg = _Segment.build(self._tail_ids[:n].copy(), self._tail_words[:n].copy())
        self._tail_n = 0
        self._push_segment(seg)

    def _push_segment(self, seg: _Segment) -> None:
        self._segments.append(seg)
        self._merge()

    def _merge(self) -> None:
        segs = sorted(self._segments, key=lambda s: s.n_live, reverse=True)
        i = 0
        while i < len(segs) - 1:
            big, small = segs[i], segs[i + 1]
            if big.n_live <= MERGE_RATIO * small.n_live:
                (ia, wa), (ib, wb) = big.live(), small.live()
                merged = _Segment.build(np.concatenate((ia, ib)), np.concatenate((wa, wb)))
                segs[i : i + 2] = [merged]
                segs.sort(key=lambda s: s.n_live, reverse=True)
                i = 0
            else:
                i += 1
        self._segments = segs

    # -- reads -------------------------------------------------------------------------------

    def search(self, query: np.ndarray | str, radius: int) -> list[tuple[int, int]]:
        """All ``(id, distance)`` with distance <= ``radius``, sorted by ``(distance, id)``."""
        radius = _check_radius(radius)
        if isinstance(query, str):
            q = _as_words(hex_to_bytes([query]))
        else:
            q = np.asarray(query)
            if q.shape != (HASH_BYTES,) or q.dtype != np.uint8:
                raise ValueError(f"query must be uint8 of shape (32,), got {q.dtype} {q.shape}")
            q = _as_words(q.reshape(1, HASH_BYTES))
        ids_parts: list[np.ndarray] = []
        dist_parts: list[np.ndarray] = []
        for seg in self._segments:
            plan = seg.plan(radius)
            if plan is None:
                rows, d = K.scan_one(q, 0, seg.hashes, seg.alive, len(seg.ids), radius)
            else:
                rows, d = K.mih_one(q, 0, seg.hashes, seg.alive, *seg.tables, *plan, radius)
            if len(rows):
                ids_parts.append(seg.ids[rows])
                dist_parts.append(d)
        if self._tail_n:
            rows, d = K.scan_one(q, 0, self._tail_words, self._no_alive, self._tail_n, radius)
            if len(rows):
                ids_parts.append(self._tail_ids[rows])
                dist_parts.append(d)
        return _sorted_pairs(ids_parts, dist_parts)

    def search_batch(self, queries: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
        """:meth:`search` for each row of ``queries`` (``(Q, 32)`` uint8), using all cores."""
        radius = _check_radius(radius)
        qs = _as_words(_check_hashes(queries, "queries"))
        nq = len(qs)
        ids_parts: list[list[np.ndarray]] = [[] for _ in range(nq)]
        dist_parts: list[list[np.ndarray]] = [[] for _ in range(nq)]

        def collect(
            ids: np.ndarray,
            res_r: np.ndarray,
            res_d: np.ndarray,
            counts: np.ndarray,
            rerun: Callable[[int], tuple[np.ndarray, np.ndarray]],
        ) -> None:
            for i in np.flatnonzero(counts).tolist():
                c = int(counts[i])
                if c > _BATCH_CAP:
                    rows, d = rerun(i)
                else:
                    rows, d = res_r[i, :c], res_d[i, :c]
                ids_parts[i].append(ids[rows])
                dist_parts[i].append(d)

        for seg in self._segments:
            plan = seg.plan(radius)
            n = len(seg.ids)
            if plan is None:
                out = K.scan_batch(qs, seg.hashes, seg.alive, n, radius, _BATCH_CAP)
                rerun = functools.partial(_rerun_scan, qs, seg.hashes, seg.alive, n, radius)
                collect(seg.ids, *out, rerun)
            else:
                out = K.mih_batch(qs, seg.hashes, seg.alive, *seg.tables, *plan, radius, _BATCH_CAP)
                rerun = functools.partial(
                    _rerun_mih, qs, seg.hashes, seg.alive, seg.tables, plan, radius
                )
                collect(seg.ids, *out, rerun)
        if self._tail_n:
            tw, tn = self._tail_words, self._tail_n
            out = K.scan_batch(qs, tw, self._no_alive, tn, radius, _BATCH_CAP)
            collect(
                self._tail_ids[:tn],
                *out,
                lambda i: K.scan_one(qs, i, tw, self._no_alive, tn, radius),
            )
        return [_sorted_pairs(ids_parts[i], dist_parts[i]) for i in range(nq)]

    def __len__(self) -> int:
        return self._tail_n + sum(s.n_live for s in self._segments)

    def memory_bytes(self) -> int:
        """Bytes held by the index's arrays (tail buffers counted at capacity)."""
        tail = self._tail_ids.nbytes + self._tail_words.nbytes
        return tail + sum(s.nbytes() for s in self._segments)

    @property
    def segment_sizes(self) -> list[int]:
        """Live entries per segment, largest first (for monitoring and tests)."""
        return [s.n_live for s in self._segments]


def _rerun_scan(
    qs: np.ndarray, hashes: np.ndarray, alive: np.ndarray, n: int, radius: int, i: int
) -> tuple[np.ndarray, np.ndarray]:
    return K.scan_one(qs, i, hashes, alive, n, radius)


def _rerun_mih(
    qs: np.ndarray,
    hashes: np.ndarray,
    alive: np.ndarray,
    tables: _Tables,
    plan: _Plan,
    radius: int,
    i: int,
) -> tuple[np.ndarray, np.ndarray]:
    return K.mih_one(qs, i, hashes, alive, *tables, *plan, radius)


def _sorted_pairs(
    ids_parts: list[np.ndarray], dist_parts: list[np.ndarray]
) -> list[tuple[int, int]]:
    if not ids_parts:
        return []
    if len(ids_parts) == 1:
        ids, dists = ids_parts[0], dist_parts[0]
    else:
        ids, dists = np.concatenate(ids_parts), np.concatenate(dist_parts)
    order = np.lexsort((ids, dists))
    return list(zip(ids[order].tolist(), dists[order].tolist(), strict=True))

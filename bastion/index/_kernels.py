"""Compiled kernels for :mod:`bastion.index.pdq`.

Hashes are held as ``(n, 4)`` uint64 words. The index only ever compares hashes with each other, so
the bit order inside a word is irrelevant to Hamming distance and a native view of the big-endian
bytes is used as is.

Every kernel is ``cache=True`` so the compile cost (a few seconds) is paid once per machine, and
``nogil=True`` so callers may run lookups from several threads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING


def _ensure_numba_cache_dir() -> None:
    """Numba caches compiled kernels beside this file or in the user's home; in a locked-down
    install neither is writable and every import would fail, so fall back to a private temp dir."""
    if "NUMBA_CACHE_DIR" in os.environ or os.access(Path(__file__).parent, os.W_OK):
        return
    home_cache = Path.home() / ".cache"
    if home_cache.is_dir() and os.access(home_cache, os.W_OK):
        return
    fallback = Path(tempfile.gettempdir()) / f"bastion-numba-{os.getuid()}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(fallback)


_ensure_numba_cache_dir()

import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

#: Multi-index chunks: 3 of 24 bits and 8 of 23 (256 bits, disjoint), starting at these bits.
N_CHUNKS = 11
CHUNK_WIDTHS = np.array([24, 24, 24] + [23] * 8, np.int64)
CHUNK_STARTS = np.concatenate(([0], np.cumsum(CHUNK_WIDTHS)[:-1])).astype(np.int64)
#: Bucket offsets are stored as a uint32 base per block of ``2**BLOCK_SHIFT`` buckets plus a small
#: relative offset per bucket, which halves the dominant memory cost of the tables.
BLOCK_SHIFT = 8


if TYPE_CHECKING:
    # What jitted code calls. Numba fills in ``typingctx`` and types the arguments itself; its
    # stubs type an intrinsic as its typing function, which no caller ever calls directly.

    def _popcount64(x: np.uint64, /) -> np.uint64: ...

    def _prefetch(arr: np.ndarray, idx: int | np.integer, /) -> None: ...

else:

    @intrinsic
    def _popcount64(typingctx, x):
        """LLVM ``ctpop``: a single POPCNT instruction on x86-64."""
        if not isinstance(x, types.Integer) or x.bitwidth != 64 or x.signed:
            return None

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return types.uint64(types.uint64), codegen

    @intrinsic
    def _prefetch(typingctx, arr, idx):
        """Software prefetch (``llvm.prefetch``, read, keep in all levels) of ``arr[idx, ...]``."""
        if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            aryty, idxty = signature.args
            ary = context.make_array(aryty)(context, builder, args[0])
            zero = context.get_constant(types.intp, 0)
            inds = [context.cast(builder, args[1], idxty, types.intp)] + [zero] * (aryty.ndim - 1)
            ptr = cgutils.get_item_pointer2(
                context,
                builder,
                data=ary.data,
                shape=cgutils.unpack_tuple(builder, ary.shape),
                strides=cgutils.unpack_tuple(builder, ary.strides),
                layout=aryty.layout,
                inds=inds,
            )
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.none(arr, idx), codegen


@njit(inline="always")
def _dist(h: np.ndarray, r: int | np.integer, q: np.ndarray, qi: int) -> np.int64:
    return np.int64(
        _popcount64(h[r, 0] ^ q[qi, 0])
        + _popcount64(h[r, 1] ^ q[qi, 1])
        + _popcount64(h[r, 2] ^ q[qi, 2])
        + _popcount64(h[r, 3] ^ q[qi, 3])
    )


@njit(inline="always")
def _key(h: np.ndarray, r: int | np.integer, start: int, k: int) -> np.int64:
    """The low ``k`` bits of the chunk of row ``r`` starting at bit ``start``."""
    wi = start >> 6
    off = start & 63
    v = h[r, wi] >> np.uint64(off)
    if off + k > 64:
        v |= h[r, wi + 1] << np.uint64(64 - off)
    return np.int64(v & np.uint64((1 << k) - 1))


@njit(cache=True, parallel=True)
def build_tables(
    hashes: np.ndarray,
    ks: np.ndarray,
    rows_out: np.ndarray,
    rel_out: np.ndarray,
    rel_off: np.ndarray,
    base_out: np.ndarray,
    base_off: np.ndarray,
) -> int:
    """Fill one CSR table per chunk by counting sort; returns the largest relative offset.

    Chunk ``c`` has ``2**ks[c]`` buckets. ``rows_out`` is ``(N_CHUNKS, n)`` uint32; chunk ``c``'s
    relative offsets (uint16 or uint32, ``2**k + 1`` of them) start at ``rel_off[c]`` in the flat
    ``rel_out``, and its uint32 block bases (one per ``2**BLOCK_SHIFT`` buckets, plus one) at
    ``base_off[c]`` in ``base_out``. If the returned span does not fit ``rel_out``'s dtype the
    caller rebuilds with a wider one.
    """
    n = hashes.shape[0]
    block = 1 << BLOCK_SHIFT
    spans = np.zeros(N_CHUNKS, np.int64)
    for c in prange(N_CHUNKS):
        start = CHUNK_STARTS[c]
        k = ks[c]
        nb = 1 << k
        ro = rel_off[c]
        bo = base_off[c]
        offs = np.zeros(nb + 1, np.int64)
        for r in range(n):
            offs[_key(hashes, r, start, k) + 1] += 1
        for b in range(nb):
            offs[b + 1] += offs[b]
        span = 0
        for b in range(nb + 1):
            blk_start = (b >> BLOCK_SHIFT) << BLOCK_SHIFT
            if (b & (block - 1)) == 0:
                base_out[bo + (b >> BLOCK_SHIFT)] = offs[b]
            d = offs[b] - offs[blk_start]
            rel_out[ro + b] = d
            if d > span:
                span = d
        spans[c] = span
        for r in range(n):
            key = _key(hashes, r, start, k)
            rows_out[c, offs[key]] = r
            offs[key] += 1
    return int(spans.max())


@njit(inline="always")
def _n_upto(k: int, s: int) -> int:
    """Number of keys within ``s`` flips of a ``k``-bit key: sum of C(k, j) for j <= s."""
    if s < 0:
        return 0
    total = 0
    comb = 1
    for j in range(s + 1):
        total += comb
        comb = comb * (k - j) // (j + 1)
    return total


@njit(cache=True, nogil=True)
def mih_one(
    qs: np.ndarray,
    qi: int,
    hashes: np.ndarray,
    alive: np.ndarray,
    rows_flat: np.ndarray,
    rel: np.ndarray,
    rel_off: np.ndarray,
    base: np.ndarray,
    base_off: np.ndarray,
    ks: np.ndarray,
    levels: np.ndarray,
    masks: np.ndarray,
    mask_off: np.ndarray,
    radius: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact range search of query ``qs[qi]`` in one segment by multi-index hashing.

    ``levels[c]`` is how many bits of chunk ``c`` are flipped (-1: chunk skipped). Chunk ``c``'s
    flip masks start at ``mask_off[c]`` in ``masks``, ``ks[c]``-bit masks by increasing popcount,
    so the first ``_n_upto(ks[c], s)`` of them are every mask of at most ``s`` bits. The caller
    guarantees ``sum(levels + 1) > radius``, so by pigeonhole every hash within ``radius`` shares
    a probed bucket in at least one chunk.

    The work is a chain of three dependent random reads (bucket offset, row number, hash), each
    almost always a cache miss at scale. It is done in phases that each prefetch what the next
    phase reads, so many misses are in flight instead of one chain at a time.
    Returns ``(rows, distances)`` of live rows within ``radius``, rows ascending and unique.
    """
    n = hashes.shape[0]
    nprobe = 0
    for c in range(N_CHUNKS):
        nprobe += _n_upto(ks[c], levels[c])
    buckets = np.empty(nprobe, np.int64)  # index into rel
    chunks = np.empty(nprobe, np.int64)
    p = 0
    for c in range(N_CHUNKS):
        s = levels[c]
        if s < 0:
            continue
        k = ks[c]
        key = _key(qs, qi, CHUNK_STARTS[c], k)
        ro = rel_off[c]
        mo = mask_off[c]
        for j in range(_n_upto(k, s)):
            fb = ro + (key ^ masks[mo + j])
            buckets[p] = fb
            chunks[p] = c
            _prefetch(rel, fb)
            p += 1
    starts = np.empty(nprobe, np.int64)
    ends = np.empty(nprobe, np.int64)
    total = 0
    for i in range(nprobe):
        fb = buckets[i]
        c = chunks[i]
        b = fb - rel_off[c]
        bo = base_off[c]
        row0 = c * n
        st = np.int64(base[bo + (b >> BLOCK_SHIFT)]) + np.int64(rel[fb]) + row0
        en = np.int64(base[bo + ((b + 1) >> BLOCK_SHIFT)]) + np.int64(rel[fb + 1]) + row0
        starts[i] = st
        ends[i] = en
        _prefetch(rows_flat, st)
        total += en - st
    cand = np.empty(total, np.uint32)
    t = 0
    for i in range(nprobe):
        for x in range(starts[i], ends[i]):
            r = rows_flat[x]
            cand[t] = r
            _prefetch(hashes, r)
            t += 1
    out_r = np.empty(total + 1, np.int64)
    out_d = np.empty(total + 1, np.int64)
    cnt = np.int64(0)
    for i in range(total):
        r = np.int64(cand[i])
        d = _dist(hashes, r, qs, qi)
        out_r[cnt] = r
        out_d[cnt] = d
        cnt += np.int64(d <= radius)
    # Tombstones are checked on hits only: reading ``alive`` per candidate would add a miss each.
    live = 0
    for i in range(cnt):
        if alive[out_r[i]]:
            out_r[live] = out_r[i]
            out_d[live] = out_d[i]
            live += 1
    return _dedupe(out_r[:live], out_d[:live])


@njit(inline="always")
def _dedupe(rows: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A row reachable from several chunks is found once per chunk; keep one copy."""
    if rows.shape[0] < 2:
        return rows.copy(), dists.copy()
    order = np.argsort(rows)
    out_r = np.empty(rows.shape[0], np.int64)
    out_d = np.empty(rows.shape[0], np.int64)
    u = 0
    for i in range(order.shape[0]):
        r = rows[order[i]]
        if u == 0 or out_r[u - 1] != r:
            out_r[u] = r
            out_d[u] = dists[order[i]]
            u += 1
    return out_r[:u], out_d[:u]


@njit(cache=True, nogil=True)
def scan_one(
    qs: np.ndarray, qi: int, hashes: np.ndarray, alive: np.ndarray, n: int, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force range search of ``qs[qi]`` over the first ``n`` rows (``alive`` may be empty).

    Hits go to a fixed buffer; in the rare case it overflows, a second pass fills an exact one
    (growing a buffer inside the loop would put reference counting on the hot path).
    """
    has_alive = alive.shape[0] > 0
    cap = 256
    out_r = np.empty(cap, np.int64)
    out_d = np.empty(cap, np.int64)
    cnt = 0
    for r in range(n):
        d = _dist(hashes, r, qs, qi)
        if d <= radius and (not has_alive or alive[r]):
            if cnt < cap:
                out_r[cnt] = r
                out_d[cnt] = d
            cnt += 1
    if cnt > cap:
        out_r = np.empty(cnt, np.int64)
        out_d = np.empty(cnt, np.int64)
        cnt = 0
        for r in range(n):
            d = _dist(hashes, r, qs, qi)
            if d <= radius and (not has_alive or alive[r]):
                out_r[cnt] = r
                out_d[cnt] = d
                cnt += 1
    return out_r[:cnt].copy(), out_d[:cnt].copy()


@njit(cache=True, parallel=True)
def mih_batch(
    qs: np.ndarray,
    hashes: np.ndarray,
    alive: np.ndarray,
    rows_flat: np.ndarray,
    rel: np.ndarray,
    rel_off: np.ndarray,
    base: np.ndarray,
    base_off: np.ndarray,
    ks: np.ndarray,
    levels: np.ndarray,
    masks: np.ndarray,
    mask_off: np.ndarray,
    radius: int,
    cap: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mih_one` for every query, in parallel; see :func:`_scatter` for the output."""
    nq = qs.shape[0]
    res_r = np.empty((nq, cap), np.int64)
    res_d = np.empty((nq, cap), np.int64)
    counts = np.empty(nq, np.int64)
    for i in prange(nq):
        r, d = mih_one(
            qs, i, hashes, alive, rows_flat, rel, rel_off, base, base_off, ks, levels, masks,
            mask_off, radius,
        )  # fmt: skip
        _scatter(i, r, d, res_r, res_d, counts, cap)
    return res_r, res_d, counts


@njit(cache=True, parallel=True)
def scan_batch(
    qs: np.ndarray, hashes: np.ndarray, alive: np.ndarray, n: int, radius: int, cap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`scan_one` for every query, in parallel; see :func:`_scatter` for the output."""
    nq = qs.shape[0]
    res_r = np.empty((nq, cap), np.int64)
    res_d = np.empty((nq, cap), np.int64)
    counts = np.empty(nq, np.int64)
    for i in prange(nq):
        r, d = scan_one(qs, i, hashes, alive, n, radius)
        _scatter(i, r, d, res_r, res_d, counts, cap)
    return res_r, res_d, counts


@njit(inline="always")
def _scatter(
    i: int,
    r: np.ndarray,
    d: np.ndarray,
    res_r: np.ndarray,
    res_d: np.ndarray,
    counts: np.ndarray,
    cap: int,
) -> None:
    """Store up to ``cap`` hits of query ``i``; ``counts[i]`` is the true count, so a caller seeing
    ``counts[i] > cap`` reruns that query alone (rare: only dense clusters overflow)."""
    cnt = r.shape[0]
    counts[i] = cnt
    for j in range(min(cnt, cap)):
        res_r[i, j] = r[j]
        res_d[i, j] = d[j]

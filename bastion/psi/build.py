"""Build pdata from a bank's PDQ hashes: table keys, cuckoo placement, blinding, filler.

Keys. Exact mode: one key per distinct hash. Compact mode: one key per distinct projection (the
lowest-frequency ``key_bits`` bits, ``bastion.client.locality``), and a projection within
``2 * max_flips`` bits of one kept earlier is dropped, for the same reason as in near mode below;
the dropped entry's edits are usually still found through the earlier key (the projections are
that close), and the server's re-check is against every live entry, not the key that opened.
Near mode: one key per chunk per entry, and within
each chunk index any key within ``2 * max_flips`` bits of a key kept earlier (in bank order) is
dropped, so two probes of one voucher (which differ in at most that many bits) never both hit:
a voucher opens at most one ciphertext, exactly like a synthetic one. Near-duplicate entries are
common in hash lists; the dropped key's entry keeps its other chunks, and the recall measured in
docs/benchmarks.md is with this rule applied.

Placement. A cuckoo table with two hash functions and ``bucket_size`` slots per bucket, sized to
``load`` (keys / slots), filled by random-walk insertion. **No stash**: a key that cannot be
placed would be a bank entry that silently never matches, and a stash would have to be probed by
every client for every item. So the builder retries with a new cuckoo seed, and after a few
failures grows the table by 5%, until every key has a slot; at 2 x 2 and load 0.85 the first
attempt succeeds in practice (the threshold for this shape is about 0.89).

Everything is deterministic given the secret, the hashes (in order), the parameters, ``created``
and ``label``, so an auditor holding the secret can reproduce the root.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from bastion.client import group as g
from bastion.client.locality import chunk_bounds, compact_positions
from bastion.client.pdata import MODE_COMPACT, MODE_EXACT, Params, PData, cuckoo_buckets, serialize
from bastion.psi.secret import ServerSecret

DEFAULT_LOAD = 0.85
MIN_BUCKETS = 8
_MAX_KICKS = 2000
_SEED_ATTEMPTS = 3


class BuildError(ValueError):
    """The bank cannot be made into a table (bad hash values, impossible parameters)."""


@dataclass(frozen=True)
class BuildStats:
    entries: int
    keys: int
    dropped_near: int
    n_buckets: int
    load: float
    attempts: int
    seconds: float
    blob_bytes: int

    @property
    def bytes_per_entry(self) -> float:
        return self.blob_bytes / self.entries if self.entries else float(self.blob_bytes)


def hash_matrix(hexes: Iterable[str]) -> np.ndarray:
    """``(n, 32)`` uint8 from 64-hex-digit PDQ hashes; BuildError names a bad one."""
    rows = []
    for i, h in enumerate(hexes):
        try:
            raw = bytes.fromhex(h)
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != 32:
            raise BuildError(f"entry {i}: {h!r} is not a 64-hex-digit PDQ hash")
        rows.append(raw)
    if not rows:
        return np.zeros((0, 32), np.uint8)
    return np.frombuffer(b"".join(rows), np.uint8).reshape(-1, 32)


def table_keys(hashes: np.ndarray, params: Params) -> tuple[list[bytes], int]:
    """The keys to place, in a deterministic order, and how many near keys were dropped."""
    if params.mode == MODE_EXACT:
        seen: dict[bytes, None] = {}
        for row in hashes:
            seen.setdefault(b"E" + row.tobytes(), None)
        return list(seen), 0
    bits = np.unpackbits(hashes, axis=1)
    keys: list[bytes] = []
    dropped = 0
    radius = 2 * params.max_flips
    if params.mode == MODE_COMPACT:
        projections = [(b"P", compact_positions(params.key_bits))]
    else:
        projections = [
            (b"C" + bytes([c]), list(range(lo, hi)))
            for c, (lo, hi) in enumerate(chunk_bounds(params.chunks))
        ]
    for prefix, positions in projections:
        width = len(positions)
        projected = bits[:, positions]
        padded = np.zeros((len(hashes), 64), np.uint8)
        padded[:, 64 - width :] = projected
        values = np.packbits(padded, axis=1).view(">u8").ravel().astype(np.uint64)
        # First occurrence of each value, in bank order.
        _, first = np.unique(values, return_index=True)
        first.sort()
        uniq = values[first]
        keep = _far_apart(uniq, width, radius)
        dropped += int((~keep).sum())
        packed = np.packbits(projected[first[keep]], axis=1)
        keys.extend(prefix + row.tobytes() for row in packed)
    return keys, dropped


def _far_apart(values: np.ndarray, width: int, radius: int) -> np.ndarray:
    """Greedy in order: keep a value unless a kept earlier value is within ``radius`` bits.

    Candidate pairs come from the pigeonhole principle: split the chunk into ``radius // 2 + 1``
    parts; two values within ``radius`` bits agree on some part up to one flipped bit, so each
    value is looked up under each part with every single-bit flip (sorted arrays, numpy)."""
    n = len(values)
    keep = np.ones(n, bool)
    if radius == 0 or n < 2:
        return keep
    parts = radius // 2 + 1
    bounds = [round(i * width / parts) for i in range(parts + 1)]
    smaller: dict[int, set[int]] = {}
    for p in range(parts):
        lo, hi = bounds[p], bounds[p + 1]
        shift = np.uint64(width - hi)
        mask = np.uint64((1 << (hi - lo)) - 1)
        part = (values >> shift) & mask
        order = np.argsort(part, kind="stable")
        sorted_part = part[order]
        for flip in [None, *range(hi - lo)]:
            probe = part if flip is None else part ^ np.uint64(1 << flip)
            left = np.searchsorted(sorted_part, probe, "left")
            right = np.searchsorted(sorted_part, probe, "right")
            counts = right - left
            total = int(counts.sum())
            if total == 0:
                continue
            i_idx = np.repeat(np.arange(n), counts)
            starts = np.repeat(left - np.cumsum(counts) + counts, counts)
            j_idx = order[starts + np.arange(total)]
            close = (j_idx < i_idx) & (np.bitwise_count(values[i_idx] ^ values[j_idx]) <= radius)
            for i, j in zip(i_idx[close].tolist(), j_idx[close].tolist(), strict=True):
                smaller.setdefault(i, set()).add(j)
    for i in sorted(smaller):
        if any(keep[j] for j in smaller[i]):
            keep[i] = False
    return keep


def place(keys: list[bytes], n_buckets: int, bucket_size: int, seed: bytes) -> list[int] | None:
    """Slot -> key index (-1 empty), or None when some key found no slot."""
    table = [-1] * (n_buckets * bucket_size)
    rng = random.Random(seed)
    alt = [cuckoo_buckets(seed, n_buckets, k) for k in keys]
    for item in range(len(keys)):
        current = item
        for _ in range(_MAX_KICKS):
            h0, h1 = alt[current]
            slot = _free_slot(table, h0, bucket_size)
            if slot < 0:
                slot = _free_slot(table, h1, bucket_size)
            if slot >= 0:
                table[slot] = current
                current = -1
                break
            bucket = h0 if rng.random() < 0.5 else h1
            slot = bucket * bucket_size + rng.randrange(bucket_size)
            table[slot], current = current, table[slot]
        if current >= 0:
            return None
    return table


def _free_slot(table: list[int], bucket: int, bucket_size: int) -> int:
    base = bucket * bucket_size
    for i in range(base, base + bucket_size):
        if table[i] < 0:
            return i
    return -1


def buckets_for(keys: int, bucket_size: int, load: float) -> int:
    return max(MIN_BUCKETS, math.ceil(keys / (load * bucket_size)))


def build_pdata(
    hexes: Iterable[str],
    params: Params,
    secret: ServerSecret,
    *,
    label: str = "",
    load: float = DEFAULT_LOAD,
    created: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PData, BuildStats]:
    """A published table for these hashes (enabled PDQ entries of the chosen banks).

    ``progress(done, total)`` is called as slots are filled (the slow part: one scalar
    multiplication per slot), for a progress bar or to renew a build job's lease."""
    if not 0.1 <= load <= 0.95:
        raise BuildError("load must be between 0.1 and 0.95")
    start = time.perf_counter()
    hashes = hash_matrix(hexes)
    keys, dropped = table_keys(hashes, params)
    n_buckets = buckets_for(len(keys), params.bucket_size, load)
    attempts = 0
    table = None
    while table is None:
        for _ in range(_SEED_ATTEMPTS):
            seed = g.kdf(b"cuckoo-seed", secret.fill_seed, attempts.to_bytes(4, "big"))[:16]
            attempts += 1
            table = place(keys, n_buckets, params.bucket_size, seed)
            if table is not None:
                break
        else:
            n_buckets = math.ceil(n_buckets * 1.05)
    slots = bytearray(len(table) * g.POINT_BYTES)
    step = max(1, len(table) // 200)
    for index, key_index in enumerate(table):
        if progress is not None and index % step == 0:
            progress(index, len(table))
        if key_index >= 0:
            point = secret.blind(keys[key_index])
        else:
            digest = g.kdf(b"fill", secret.fill_seed, index.to_bytes(8, "big"))
            point = g.point_from_hash(digest + g.kdf(b"fill2", digest))
        slots[index * 32 : index * 32 + 32] = point
    if progress is not None:
        progress(len(table), len(table))
    blob = serialize(
        params,
        n_buckets=n_buckets,
        seed=seed,
        public=secret.public,
        created=int(time.time()) if created is None else created,
        label=label,
        slots=bytes(slots),
    )
    pdata = PData.parse_unchecked(blob)  # the server's own table: no client pin or bounds
    stats = BuildStats(
        entries=len(hashes),
        keys=len(keys),
        dropped_near=dropped,
        n_buckets=n_buckets,
        load=len(keys) / len(table) if table else 0.0,
        attempts=attempts,
        seconds=time.perf_counter() - start,
        blob_bytes=len(blob),
    )
    return pdata, stats

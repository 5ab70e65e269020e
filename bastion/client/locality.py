"""Which keys go into the private set membership test: exact, a compact projection, or chunks,
with margin-guided probes.

Private set membership matches keys exactly, but PDQ matches by Hamming distance.

In **compact** mode (the default) every bank entry contributes ONE key: a fixed projection of its
hash onto the ``key_bits`` bits of lowest DCT frequency (``compact_positions``). Low frequencies
are what everyday edits (re-encoding, scaling, blur, tone) change least, so this projection is
the most stable part of the hash. All the locality work is the client's: it probes the
projection as is, then with its least reliable bits flipped (at most ``max_flips`` of its
``weak_bits`` weakest, cheapest first), ``probes`` keys in all. The table stays one key per
entry (37.6 bytes per entry at load 0.85), the same size as exact mode.

In **near** mode
the 256-bit hash is cut into ``chunks`` contiguous chunks (the hash is row-major over a 16x16 DCT,
so a chunk is about three rows of similar frequencies):

* the bank side inserts one key per chunk for every entry (``bank_keys``);
* a client picks the one chunk of its image whose bits are most reliable, and probes that chunk
  with up to ``probes`` keys: the chunk as is, then with its least reliable bits flipped (at most
  ``max_flips`` of its ``weak_bits`` weakest), cheapest first (``probe_keys``).

Reliability comes from PDQ's own float output: bit i is ``coefficient_i > median``, so a
coefficient close to the median is a bit an edit is likely to flip. Only the client has the
floats (a bank holds bits), which is why the probing happens on the client.

In both modes exactly one projection is probed per item, and the server's builder keeps keys of
one projection (chunk index) at least ``2 * max_flips + 1`` bits apart (every two probes of a
voucher differ in at most ``2 * max_flips`` bits), so at most one probe of a voucher can ever hit
the table: the server sees "matched" or "not matched" per voucher, never "matched twice", which
is what a synthetic voucher imitates (docs/e2ee.md: the measured recall and what a hit reveals).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from bastion.client.pdata import MODE_COMPACT, MODE_EXACT, Params

HASH_BITS = 256
_SIDE = 16


def compact_positions(key_bits: int) -> list[int]:
    """The hash bits of the compact projection, ascending: the ``key_bits`` lowest-frequency DCT
    coefficients. pdqhash lists its 16x16 coefficients from the highest frequency to the lowest
    (bit ``255 - (16 * r + c)`` is coefficient (r, c)), so frequency rank is ``r + c`` of the
    reversed index; ties by index, so the set is fixed for every ``key_bits``."""
    rank = sorted(
        range(HASH_BITS),
        key=lambda i: (((HASH_BITS - 1 - i) // _SIDE) + ((HASH_BITS - 1 - i) % _SIDE), -i),
    )
    return sorted(rank[:key_bits])


def compact_key(bits: np.ndarray) -> bytes:
    """A compact-mode key from the projected bits (``key_bits`` of them)."""
    return b"P" + np.packbits(bits.astype(np.uint8)).tobytes()


def chunk_bounds(chunks: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) bit ranges; the first ``256 % chunks`` chunks get one extra bit."""
    base, extra = divmod(HASH_BITS, chunks)
    out, lo = [], 0
    for i in range(chunks):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def bits_from_bytes(hash_bytes: bytes) -> np.ndarray:
    if len(hash_bytes) != 32:
        raise ValueError("a PDQ hash is 32 bytes")
    return np.unpackbits(np.frombuffer(hash_bytes, np.uint8))


def exact_key(hash_bytes: bytes) -> bytes:
    return b"E" + hash_bytes


def chunk_key(index: int, chunk_bits: np.ndarray) -> bytes:
    return b"C" + bytes([index]) + np.packbits(chunk_bits.astype(np.uint8)).tobytes()


def chunk_value(bits: np.ndarray, lo: int, hi: int) -> int:
    """The chunk's bits as an integer (for Hamming distances between chunk keys)."""
    return int("".join("1" if b else "0" for b in bits[lo:hi]), 2)


def bank_keys(hash_bytes: bytes, params: Params) -> list[bytes]:
    """The keys a bank entry contributes to the table."""
    if params.mode == MODE_EXACT:
        return [exact_key(hash_bytes)]
    bits = bits_from_bytes(hash_bytes)
    if params.mode == MODE_COMPACT:
        return [compact_key(bits[compact_positions(params.key_bits)])]
    return [chunk_key(i, bits[lo:hi]) for i, (lo, hi) in enumerate(chunk_bounds(params.chunks))]


def choose_chunk(floats: np.ndarray | None, params: Params) -> int:
    """The chunk whose k-th weakest bit is strongest (k grows with the probe budget): the chunk
    where the probes are most likely to cover every bit an edit flipped. Ties: lowest index."""
    if floats is None:
        return 0
    margins = np.abs(floats - np.median(floats))
    k = int(math.log2(max(1, params.probes))) + 1
    best, best_score = 0, -1.0
    for i, (lo, hi) in enumerate(chunk_bounds(params.chunks)):
        score = float(np.sort(margins[lo:hi])[min(hi - lo - 1, k)])
        if score > best_score:
            best, best_score = i, score
    return best


def flip_sets(margins: np.ndarray, params: Params) -> list[tuple[int, ...]]:
    """Up to ``probes`` sets of positions (within the chunk) to flip, cheapest total margin first;
    the empty set (the chunk as is) always comes first."""
    order = sorted(range(len(margins)), key=lambda i: (float(margins[i]), i))
    weak = order[: params.weak_bits]
    candidates = [
        combo for r in range(params.max_flips + 1) for combo in itertools.combinations(weak, r)
    ]
    candidates.sort(key=lambda c: (float(sum(margins[i] for i in c)), tuple(sorted(c))))
    return [tuple(sorted(c)) for c in candidates[: params.probes]]


def probe_keys(hash_bytes: bytes, floats: np.ndarray | None, params: Params) -> list[bytes]:
    """The keys a client item is tested with (at most ``params.probes``, distinct)."""
    if params.mode == MODE_EXACT:
        return [exact_key(hash_bytes)]
    bits = bits_from_bytes(hash_bytes)
    if params.mode == MODE_COMPACT:
        positions = compact_positions(params.key_bits)
        base = bits[positions]
        margins = (
            np.zeros(len(positions))
            if floats is None
            else np.abs(floats - np.median(floats))[positions]
        )
        keys = []
        for flips in flip_sets(margins, params):
            probe = base.copy()
            probe[list(flips)] ^= 1
            keys.append(compact_key(probe))
        return keys
    index = choose_chunk(floats, params)
    lo, hi = chunk_bounds(params.chunks)[index]
    chunk = bits[lo:hi].copy()
    margins = np.zeros(hi - lo) if floats is None else np.abs(floats - np.median(floats))[lo:hi]
    keys = []
    for flips in flip_sets(margins, params):
        probe = chunk.copy()
        for i in flips:
            probe[i] ^= 1
        keys.append(chunk_key(index, probe))
    return keys

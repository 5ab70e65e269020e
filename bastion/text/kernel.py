"""The sequence steps of :mod:`bastion.text.normalise` compiled (numba), with the map back.

Input: the folded text as code points, with each one's span in the original. Output: the
skeleton, its spans, and which of its characters came from joining single letters. The steps,
as the reference (``normalise_with``) does them with ``re``:

1. a run of symbols (``@$!|+``) before a letter or digit stands for letters when a letter or
   digit comes before it too, or when it is ``$`` signs before a letter; any other symbol is a
   separator (a space);
2. runs of one repeated character are kept once (repeats, and runs of spaces);
3. three or more one-character words in a row are joined, then (2) again;
4. spaces at the edges are dropped.

Every kernel is ``cache=True`` (compiled once per machine) and ``nogil=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _ensure_numba_cache_dir() -> None:
    """As bastion.index does: a private temporary cache when neither this package's folder nor
    the user's cache folder is writable (a locked-down install)."""
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
from numba import njit  # noqa: E402

SPACE = 32
#: Symbol code point -> the letter it stands for.
SYMBOLS = {ord("@"): ord("a"), ord("$"): ord("s"), ord("!"): ord("i"), ord("|"): ord("i")}
SYMBOLS[ord("+")] = ord("t")
DOLLAR = ord("$")


@njit(cache=True, nogil=True)
def _squeeze(codes: np.ndarray, st: np.ndarray, en: np.ndarray, mark: np.ndarray, n: int) -> int:
    """In place: runs of one character kept once (spanning the run); returns the new length."""
    if n == 0:
        return 0
    k = 0
    for i in range(1, n):
        if codes[i] == codes[k]:
            en[k] = en[i]
            mark[k] = mark[k] or mark[i]
        else:
            k += 1
            codes[k] = codes[i]
            st[k] = st[i]
            en[k] = en[i]
            mark[k] = mark[i]
    return k + 1


DELETE = np.uint32(0xFFFFFFFF)
COMPLEX = np.uint32(0xFFFFFFFE)


@njit(cache=True, nogil=True)
def fold(codes: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The per-character fold by ``table`` (one code point each, or DELETE), with each kept
    character's start in the original; False when a character is past the table or folds to
    several (the caller then folds in Python)."""
    n = len(codes)
    out = np.empty(n, dtype=np.uint32)
    starts = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        code = codes[i]
        if code >= len(table):
            return out[:0], starts[:0], False
        mapped = table[code]
        if mapped == DELETE:
            continue
        if mapped == COMPLEX:
            return out[:0], starts[:0], False
        out[k] = mapped
        starts[k] = i
        k += 1
    return out[:k], starts[:k], True


@njit(cache=True, nogil=True)
def fold_and_skeleton(
    codes: np.ndarray,
    table: np.ndarray,
    alnum: np.ndarray,
    alpha: np.ndarray,
    leet: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """:func:`fold` then :func:`skeleton` in one call (one dispatch: most texts are short);
    False (and empty arrays) when the fold must be done in Python."""
    folded, starts, ok = fold(codes, table)
    if not ok:
        empty = np.zeros(0, dtype=np.bool_)
        return folded, starts, starts, empty, False
    c, s, e, mark = skeleton(folded, starts, starts + 1, alnum, alpha, leet)
    return c, s, e, mark, True


@njit(cache=True, nogil=True)
def skeleton(
    codes: np.ndarray,
    st: np.ndarray,
    en: np.ndarray,
    alnum: np.ndarray,
    alpha: np.ndarray,
    leet: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sequence steps on folded code points (the arrays are worked on in place and
    returned cut). ``alnum``/``alpha``: per code point, ``str.isalnum``/``str.isalpha``;
    ``leet``: per code point, the letter a symbol stands for (0 for none)."""
    n = len(codes)
    c = codes
    s = st
    e = en
    mark = np.zeros(n, dtype=np.bool_)
    # 1. symbols
    i = 0
    while i < n:
        if leet[c[i]] == 0:
            i += 1
            continue
        j = i
        dollars = True
        while j < n and leet[c[j]] != 0:
            if c[j] != DOLLAR:
                dollars = False
            j += 1
        after = j < n and c[j] != SPACE and alnum[c[j]]
        as_letters = after and ((i > 0 and alnum[c[i - 1]]) or (dollars and alpha[c[j]]))
        for k in range(i, j):
            c[k] = leet[c[k]] if as_letters else SPACE
        i = j
    # 2. repeats and runs of spaces
    n = _squeeze(c, s, e, mark, n)
    # 3. three or more one-character words in a row, joined
    out = 0
    i = 0
    joined = False
    while i < n:
        # A one-character word starts at i when it is not a space, comes first or after a
        # space, and is followed by a space or the end.
        single = (
            c[i] != SPACE and (i == 0 or c[i - 1] == SPACE) and (i + 1 >= n or c[i + 1] == SPACE)
        )
        if single:
            j = i
            count = 1
            while (
                j + 2 < n
                and c[j + 1] == SPACE
                and c[j + 2] != SPACE
                and (j + 3 >= n or c[j + 3] == SPACE)
            ):
                j += 2
                count += 1
            if count >= 3:
                joined = True
                for k in range(i, j + 1, 2):
                    c[out] = c[k]
                    s[out] = s[k]
                    e[out] = e[k]
                    mark[out] = True
                    out += 1
                i = j + 1
                continue
        c[out] = c[i]
        s[out] = s[i]
        e[out] = e[i]
        mark[out] = mark[i]
        out += 1
        i += 1
    n = out
    if joined:
        n = _squeeze(c, s, e, mark, n)
    # 4. the edges' spaces
    lo = 0
    while lo < n and c[lo] == SPACE:
        lo += 1
    hi = n
    while hi > lo and c[hi - 1] == SPACE:
        hi -= 1
    return c[lo:hi].copy(), s[lo:hi].copy(), e[lo:hi].copy(), mark[lo:hi].copy()

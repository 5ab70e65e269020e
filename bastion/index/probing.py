"""What a caller without bank access learns from a match, and near-duplicate probing.

An exact Hamming distance is an oracle for the bank hash behind it: from one near copy, a batch
of its 256 one-bit flips tells which bits differ (the distance drops by one) and so gives the
listed hash. Two defences, both pure here (the API applies them to keys without ``export``):

* **Bands.** The distance is shown as a band: ``exact`` (0), ``near`` (1..``near``) or ``far``
  (above that, up to the lookup's threshold), with a representative number for surfaces whose
  shape has a numeric distance. A one-bit change inside a band changes nothing the caller sees.
* **Probe detection.** Bands still have edges (and so does the threshold itself): walking to an
  edge and flipping bits there leaks again, one lookup per bit. So :class:`ProbeDetector` counts,
  per key, lookups within a small radius of another recent lookup of that key where either of
  the two matched. Distinct images are ~128 bits apart and never near each other; a probe walk
  is nothing but near neighbours. Past a limit per window, further probes are refused.
* **Per-entry watch.** Probes need not be near each other: copies of a near copy with many
  random bits flipped are ~40 bits apart, and a client-chosen threshold measures a distance
  outright. So the threshold is pinned (bastion.api.disclosure) and :class:`EntryWatch` bounds
  what a key is told about each entry: re-asking about the same picture gets the same answer,
  and distinct looks at one entry are limited per window.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bastion.index.pdq import HASH_BITS, hex_to_bytes

#: Band names, closest first.
BANDS = ("exact", "near", "far")
#: Keys whose recent lookups are remembered; the least recently seen is forgotten first.
MAX_KEYS = 1024
#: Rows compared at once: bounds the temporary (rows x columns x 4 words) array.
_CHUNK = 64


def band(distance: int, near: int) -> str:
    """The band a distance falls in."""
    if distance <= 0:
        return "exact"
    return "near" if distance <= near else "far"


def band_distance(name: str, near: int, threshold: int) -> int:
    """The number shown for a band where a surface needs one: the most the band can hold in this
    lookup (0, ``near``, the threshold), so a client comparing it against a threshold never
    counts a match as closer than it may be."""
    if name == "exact":
        return 0
    top = near if name == "near" else threshold
    return max(0, min(top, threshold))


def to_words(hexes: Sequence[str]) -> np.ndarray:
    """PDQ hex hashes as ``(N, 4)`` uint64 words (bit order is irrelevant to distances)."""
    return np.ascontiguousarray(hex_to_bytes(hexes)).view(np.uint64).reshape(-1, 4)


def distances(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Hamming distances between every row and every column hash (``(R, C)`` uint16)."""
    out = np.empty((len(rows), len(cols)), np.uint16)
    for start in range(0, len(rows), _CHUNK):
        x = np.bitwise_xor(rows[start : start + _CHUNK, None, :], cols[None, :, :])
        out[start : start + _CHUNK] = np.bitwise_count(x).sum(axis=2, dtype=np.uint16)
    return out


@dataclass(frozen=True, slots=True)
class ProbeVerdict:
    """What one request's lookups amounted to for its key."""

    #: Lookups (signals) in this request that were probes.
    probes: int = 0
    #: Probes by this key within the window, this request's included (capped at limit + 1).
    in_window: int = 0
    #: Refuse the request: it probes and the key is over its limit.
    refused: bool = False
    #: The key has just gone over its limit (audit this once per episode).
    detected: bool = False
    #: Seconds until the key may probe again.
    retry_after: float = 0.0


class _KeyState:
    """One key's matched lookups (a fixed ring) and the times of its recent probes."""

    __slots__ = ("flagged", "probes", "seen", "sticky", "used", "words")

    def __init__(self, memory: int, limit: int) -> None:
        self.words = np.zeros((memory, 4), np.uint64)
        self.seen = np.full(memory, -np.inf)
        #: Rows a probe has come near: kept over plain rows when the ring is full, so a flood of
        #: unrelated matches cannot push a probed point out and hide the next probe at it.
        self.sticky = np.zeros(memory, bool)
        self.used = 0
        self.probes: deque[float] = deque(maxlen=limit + 1)
        self.flagged = False

    def slot(self, now: float, window: float) -> int:
        if self.used < len(self.seen):
            self.used += 1
            return self.used - 1
        stale = self.seen < now - window
        if stale.any():
            return int(np.argmax(stale))
        plain = np.flatnonzero(~self.sticky)
        if len(plain):
            return int(plain[np.argmin(self.seen[plain])])
        return int(np.argmin(self.seen))


class ProbeDetector:
    """Near-duplicate probing per key, in bounded memory (``memory`` x 41 bytes per key).

    Only lookups that matched are remembered (a probe walk is anchored at a match), so a key's
    ordinary traffic of unmatched, distinct content costs nothing and cannot flush the ring. A
    lookup is a *probe* when it lies within ``radius`` bits, but not 0 (a repeat tells nothing
    new), of a remembered match or of another lookup in the same request where one of the two
    matched. Points of one signal (a video's frames) are not compared with each other, and a
    signal counts once however many of its points are near. When a request's probes take the
    key over ``limit`` within ``window`` seconds, the request is refused; refused probes count
    too, so a key that keeps probing stays refused. ``limit`` 0 turns detection off.

    State is per process, like the per-key rate limit.
    """

    def __init__(
        self,
        *,
        radius: int,
        limit: int,
        window: float,
        memory: int = 1024,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= radius <= HASH_BITS:
            raise ValueError(f"probe radius must be 1..{HASH_BITS}, got {radius}")
        if limit < 0 or window <= 0 or memory < 1 or max_keys < 1:
            raise ValueError("probe limit must be >= 0, window > 0, memory and max_keys >= 1")
        self.radius = radius
        self.limit = limit
        self.window = window
        self.memory = memory
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def __len__(self) -> int:
        return len(self._keys)

    def _state(self, key: str) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState(self.memory, self.limit)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        return state

    def observe(
        self,
        key: str,
        words: np.ndarray,
        groups: Sequence[int],
        matched: Sequence[bool],
    ) -> ProbeVerdict:
        """Record one request's lookups: ``words`` ``(N, 4)`` uint64 hashes, the signal each
        belongs to (``groups``) and whether that signal matched."""
        if not self.enabled or len(words) == 0:
            return ProbeVerdict()
        words = np.ascontiguousarray(words, np.uint64).reshape(-1, 4)
        group = np.asarray(groups, np.int64)
        hit = np.asarray(matched, bool)
        with self._lock:
            now = self.clock()
            state = self._state(key)
            live = np.flatnonzero(state.seen[: state.used] >= now - self.window)
            mine = np.flatnonzero(hit)
            cols = np.concatenate((state.words[live], words[mine]))
            d = distances(words, cols)
            near = (d >= 1) & (d <= self.radius)
            if len(mine):  # a signal's own points are not each other's neighbours
                near[:, len(live) :] &= group[:, None] != group[None, mine]
            probe = np.asarray(near.any(axis=1))
            probe[mine[near[:, len(live) :].any(axis=0)]] = True
            touched = live[near[:, : len(live)].any(axis=0)]
            state.seen[touched] = now
            state.sticky[touched] = True
            self._remember(state, words, mine, d[mine, : len(live)], probe, now)
            count = len(np.unique(group[probe]))
            return self._count(state, count, now)

    def _remember(
        self,
        state: _KeyState,
        words: np.ndarray,
        mine: np.ndarray,
        to_ring: np.ndarray,
        probe: np.ndarray,
        now: float,
    ) -> None:
        """Put this request's matched points into the ring (a repeat of a remembered or an
        earlier point of the request is not stored twice)."""
        if not len(mine):
            return
        repeat = (to_ring == 0).any(axis=1) if to_ring.shape[1] else np.zeros(len(mine), bool)
        _, first = np.unique(words[mine], axis=0, return_index=True)
        fresh = np.zeros(len(mine), bool)
        fresh[first] = True
        for i in np.flatnonzero(fresh & ~repeat):
            row = state.slot(now, self.window)
            state.words[row] = words[mine[i]]
            state.seen[row] = now
            state.sticky[row] = bool(probe[mine[i]])

    def _count(self, state: _KeyState, count: int, now: float) -> ProbeVerdict:
        while state.probes and state.probes[0] < now - self.window:
            state.probes.popleft()
        before = len(state.probes)
        refused = count > 0 and before + count > self.limit
        for _ in range(min(count, self.limit + 1)):
            state.probes.append(now)
        over = len(state.probes) > self.limit
        detected = refused and not state.flagged
        state.flagged = over
        # Room for one more probe once all but the newest ``limit - 1`` have aged out.
        oldest = state.probes[min(1, len(state.probes) - 1)] if state.probes else now
        retry = oldest + self.window - now if refused else 0.0
        return ProbeVerdict(
            probes=count,
            in_window=len(state.probes),
            refused=refused,
            detected=detected,
            retry_after=max(0.0, retry),
        )


# -- per-entry looks --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Look:
    """A lookup's hash that came within the watch radius of a bank entry, and how close."""

    words: bytes
    entry: int
    distance: int


@dataclass(frozen=True, slots=True)
class WatchVerdict:
    """What one request's looks amounted to for its key (see :class:`EntryWatch`)."""

    #: The distance answered for each look (that of the earlier look it joined, or its own).
    shown: tuple[int, ...] = ()
    #: Refuse the request; nothing in it is answered.
    refused: bool = False
    #: The key has just been refused for the first time in this episode (audit it once).
    detected: bool = False
    #: Why: ``entry`` (too many distinct looks at one entry) or ``matched`` (too many matches).
    reason: str = ""
    #: The entry that went over its limit (``entry`` refusals).
    entry: int | None = None
    #: Seconds until the key is answered again.
    retry_after: float = 0.0


class _Pair:
    """One key's distinct looks at one entry: (hash, distance, time), oldest first."""

    __slots__ = ("looks",)

    def __init__(self) -> None:
        self.looks: list[tuple[np.ndarray, int, float]] = []


class _Key:
    __slots__ = ("flagged", "locked_until", "matched", "reason")

    def __init__(self) -> None:
        self.locked_until = 0.0
        self.flagged = False
        self.reason = ""
        #: Matched answers in time buckets: [bucket start, count], oldest first (bounded).
        self.matched: deque[list[float]] = deque(maxlen=_BUCKETS + 1)


_BUCKETS = 60


class EntryWatch:
    """Probing counted per (key, bank entry): what a key may learn about one entry, bounded.

    With the threshold pinned, each answer about an entry is one of four (no match, far, near,
    exact): at most 2 bits. So the watch bounds the *answers* a key gets about each entry:

    * A *look* is a lookup hash within the watch radius of the entry (the threshold plus a
      margin: the reviewer's masks land just outside the threshold, and those misses are where
      the information is), matched or not.
    * A look within ``same_radius`` of an earlier look by the key at that entry is the same
      picture again (a re-upload, a re-encode): it gets that earlier look's answer and costs
      nothing. Its answer is a function of what the key was already told, so near-duplicate
      walks and bit flips learn nothing new.
    * Any other look is distinct and counted: at most ``limit`` per entry per ``window``. The
      request that would exceed it is refused, and so is every lookup by the key until that
      entry has room again: a refusal that depended on the next query would itself answer
      "this came near the entry".
    * Matched answers per key are capped (``match_limit`` per ``match_window``), judged before
      each request so the refusal never depends on the request's own hashes.

    Memory: at most ``max_pairs`` (key, entry) pairs of at most ``limit`` looks each (~60 bytes
    a look), least recently seen first out, and ``max_keys`` keys. State is per process.
    """

    def __init__(
        self,
        *,
        same_radius: int,
        limit: int,
        window: float,
        match_limit: int,
        match_window: float,
        max_pairs: int = 65_536,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= same_radius <= HASH_BITS:
            raise ValueError(f"probe same radius must be 0..{HASH_BITS}, got {same_radius}")
        if limit < 0 or match_limit < 0 or window <= 0 or match_window <= 0:
            raise ValueError("probe entry limits must be >= 0 and their windows > 0")
        if max_pairs < 1 or max_keys < 1:
            raise ValueError("probe memory must be >= 1")
        self.same_radius = same_radius
        self.limit = limit
        self.window = window
        self.match_limit = match_limit
        self.match_window = match_window
        self.max_pairs = max_pairs
        self.max_keys = max_keys
        self.clock = clock
        self._pairs: OrderedDict[tuple[str, int], _Pair] = OrderedDict()
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limit > 0 or self.match_limit > 0

    def pairs(self) -> int:
        return len(self._pairs)

    def _key(self, key: str) -> _Key:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        return state

    def _matched(self, state: _Key, now: float) -> tuple[int, float]:
        """Matched answers in the window, and when the count will be under the limit again."""
        while state.matched and state.matched[0][0] <= now - self.match_window:
            state.matched.popleft()
        total = int(sum(n for _, n in state.matched))
        free_at, left = now, total
        for start, n in state.matched:
            if left < self.match_limit:
                break
            left -= int(n)
            free_at = start + self.match_window
        return total, free_at

    def observe(self, key: str, looks: Sequence[Look]) -> WatchVerdict:
        """Judge one request's looks (in order) for ``key``; on success they are remembered."""
        with self._lock:
            now = self.clock()
            state = self._key(key)
            if state.locked_until > now:
                return self._refuse(state, state.reason, None, state.locked_until - now)
            if self.match_limit:
                total, free_at = self._matched(state, now)
                if total >= self.match_limit:
                    state.locked_until = free_at
                    return self._refuse(state, "matched", None, free_at - now)
            shown: list[int] = []
            pending: dict[int, list[tuple[np.ndarray, int, float]]] = {}
            for look in looks:
                pair = self._pairs.get((key, look.entry))
                if look.entry not in pending:
                    old = pair.looks if pair is not None else []
                    pending[look.entry] = [x for x in old if x[2] > now - self.window]
                known = pending[look.entry]
                words = np.frombuffer(look.words, np.uint64)
                same = self._nearest(known, words)
                if same is not None:
                    shown.append(same)
                    continue
                if self.limit and len(known) >= self.limit:
                    state.locked_until = known[0][2] + self.window
                    return self._refuse(state, "entry", look.entry, state.locked_until - now)
                known.append((words, look.distance, now))
                shown.append(look.distance)
            for entry, kept in pending.items():
                pair = self._pairs.get((key, entry))
                if pair is None:
                    pair = self._pairs[(key, entry)] = _Pair()
                pair.looks = kept[-max(1, self.limit) :] if self.limit else kept[-1:]
                self._pairs.move_to_end((key, entry))
            while len(self._pairs) > self.max_pairs:
                self._pairs.popitem(last=False)
            state.flagged = False
            return WatchVerdict(shown=tuple(shown))

    def _nearest(self, known: list[tuple[np.ndarray, int, float]], words: np.ndarray) -> int | None:
        """The answer of the closest earlier look within ``same_radius``, if any."""
        best: tuple[int, int] | None = None
        for other, distance, _ in known:
            d = int(np.bitwise_count(np.bitwise_xor(other, words)).sum())
            if d <= self.same_radius and (best is None or d < best[0]):
                best = (d, distance)
        return None if best is None else best[1]

    def answered(self, key: str, matched: int) -> None:
        """Count a request's matched answers (signals with at least one match) for ``key``."""
        if not self.match_limit or matched <= 0:
            return
        with self._lock:
            now = self.clock()
            state = self._key(key)
            width = self.match_window / _BUCKETS
            if state.matched and now - state.matched[-1][0] < width:
                state.matched[-1][1] += matched
            else:
                state.matched.append([now, float(matched)])

    def _refuse(self, state: _Key, reason: str, entry: int | None, retry: float) -> WatchVerdict:
        detected = not state.flagged
        state.flagged = True
        state.reason = reason
        return WatchVerdict(
            refused=True,
            detected=detected,
            reason=reason,
            entry=entry,
            retry_after=max(0.0, retry),
        )

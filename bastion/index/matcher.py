"""Match signals against bank entries: one index per signal type, updated in place.

The matcher is pure: it is fed entries (from the store, a file, an exchange) and answers lookups.
It never reads a database itself, so the CLI, the API and batch jobs share it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bastion.index.exact import ExactIndex
from bastion.index.hashed import HashedIndex
from bastion.index.pdq import PDQIndex, hex_to_bytes
from bastion.index.url import UrlIndex
from bastion.signals.base import DEFAULT_MIN_QUALITY, IDENTITY_TYPES, Signal, SignalType, VideoFrame
from bastion.signals.url import url_entry_kind
from bastion.signals.video import parse_frames, video_match_score
from bastion.text.automaton import TextHit, TextIndex

#: PDQ distance at or under which two images are the same picture (Meta's recommendation).
DEFAULT_PDQ_THRESHOLD = 31
#: Share of a query video's frames that must match a bank video (pytx/HMA's default).
DEFAULT_VIDEO_MATCH_PERCENT = 80.0


class EntryLike(Protocol):
    """What the matcher reads of a bank entry (``bastion.banks.BankEntry`` and the store's lean
    ``IndexEntry`` rows satisfy it). Read-only, so a NamedTuple or a narrower type fits."""

    @property
    def id(self) -> int: ...
    @property
    def bank(self) -> str: ...
    @property
    def signal_type(self) -> SignalType | str: ...
    @property
    def value(self) -> str: ...
    @property
    def url_match(self) -> str | None: ...
    @property
    def external_id(self) -> str | None: ...
    @property
    def labels(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class EntryRef:
    """The part of a bank entry a match reports; kept small because millions are held."""

    bank: str
    signal_type: SignalType
    external_id: str | None
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Match:
    """A signal, the bank entry it matched, and how close they are.

    ``distance`` is the Hamming distance for PDQ (0 for exact types and URLs). For video,
    ``score`` is the share of the query's frames that match the entry (percent) and ``distance``
    the smallest frame distance seen. ``variant`` names the dihedral transform that matched.
    """

    entry_id: int
    bank: str
    signal_type: SignalType
    distance: int
    external_id: str | None = None
    labels: tuple[str, ...] = ()
    score: float | None = None
    variant: str | None = None
    url_match: str | None = None
    #: Set after matching by the scan path (the index knows nothing of banks): the bank's
    #: version when it matched, and whether the entry was quarantined for flooding.
    bank_version: int | None = None
    quarantined: bool | None = None

    def as_dict(self) -> dict[str, object]:
        """The JSON shape shared by the CLI and the API; optional fields only when set."""
        out: dict[str, object] = {
            "bank": self.bank,
            "entry": self.entry_id,
            "signal_type": str(self.signal_type),
            "distance": self.distance,
            "external_id": self.external_id,
            "labels": list(self.labels),
        }
        for key in ("score", "variant", "url_match", "bank_version", "quarantined"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


#: Order of pdqhash.compute_dihedral's outputs.
DIHEDRAL_NAMES = (
    "original",
    "rotate-90",
    "rotate-180",
    "rotate-270",
    "flip-x",
    "flip-y",
    "flip-plus-1",
    "flip-minus-1",
)


@dataclass
class Matcher:
    """Indexes for every signal type, plus the metadata to turn a hit into a :class:`Match`."""

    refs: dict[int, EntryRef] = field(default_factory=dict)
    pdq: PDQIndex = field(default_factory=PDQIndex)
    #: md5 and sha256; and the identity types' keyed digests, compactly (millions are shared).
    exact: dict[SignalType, ExactIndex | HashedIndex] = field(
        default_factory=lambda: {
            SignalType.MD5: ExactIndex(),
            SignalType.SHA256: ExactIndex(),
            **{t: HashedIndex() for t in IDENTITY_TYPES},
        }
    )
    urls: UrlIndex = field(default_factory=UrlIndex)
    #: Keyword entries (terms and trend queries), in one automaton.
    text: TextIndex = field(default_factory=TextIndex)
    # vPDQ: every frame of every bank video sits in one PDQ index under a synthetic frame id.
    video_frames: PDQIndex = field(default_factory=PDQIndex)
    _frames_of: dict[int, tuple[VideoFrame, ...]] = field(default_factory=dict)
    _frame_ids: dict[int, np.ndarray] = field(default_factory=dict)
    _frame_owner: dict[int, int] = field(default_factory=dict)
    _next_frame_id: int = 0
    #: Entries that could not be indexed (id, reason): reported, never fatal to the rest.
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def from_entries(cls, entries: Iterable[EntryLike], *, batch: int = 100_000) -> Matcher:
        matcher = cls()
        matcher.add_many(entries, batch=batch)
        return matcher

    def __len__(self) -> int:
        return len(self.refs)

    # -- updates ----------------------------------------------------------------------------
    def add_many(self, entries: Iterable[EntryLike], *, batch: int = 100_000) -> None:
        """Add entries in batches so PDQ hashes go into the index as arrays, not one by one.

        An entry that cannot be indexed (a malformed value that reached the store somehow) is
        recorded in :attr:`rejected` and skipped: one bad row must not stop all matching.
        """
        pdq_ids: list[int] = []
        pdq_hex: list[str] = []
        for entry in entries:
            if entry.id in self.refs:
                self.remove(entry.id)
            try:
                stype = SignalType(entry.signal_type)
                if stype is SignalType.PDQ:
                    self.refs[entry.id] = _ref(entry, stype)
                    pdq_ids.append(entry.id)
                    pdq_hex.append(entry.value)
                else:
                    self.add(entry)
            except ValueError as exc:
                self.rejected.append((entry.id, str(exc)))
                continue
            if len(pdq_ids) >= batch:
                self._add_pdq_batch(pdq_ids, pdq_hex)
                pdq_ids, pdq_hex = [], []
        if pdq_ids:
            self._add_pdq_batch(pdq_ids, pdq_hex)

    def _add_pdq_batch(self, ids: list[int], hexes: list[str]) -> None:
        try:
            self.pdq.add_hex(ids, hexes)
            return
        except ValueError:
            pass  # rare: find the bad rows one by one, index the rest
        good_ids, good_hex = [], []
        for eid, value in zip(ids, hexes, strict=True):
            try:
                hex_to_bytes([value])
            except ValueError as exc:
                self.refs.pop(eid, None)
                self.rejected.append((eid, str(exc)))
            else:
                good_ids.append(eid)
                good_hex.append(value)
        if good_ids:
            self.pdq.add_hex(good_ids, good_hex)

    def add(self, entry: EntryLike) -> None:
        """Add or replace one entry; visible to the next lookup."""
        stype = SignalType(entry.signal_type)
        if entry.id in self.refs:
            self.remove(entry.id)
        if stype is SignalType.PDQ:
            self.pdq.add_hex([entry.id], [entry.value])
        elif stype in self.exact:
            self.exact[stype].add([entry.id], [entry.value])
        elif stype is SignalType.URL:
            self.urls.add(entry.id, url_entry_kind(entry.url_match or "url"), entry.value)
        elif stype is SignalType.TEXT:
            self.text.add(entry.id, entry.value)
        elif stype is SignalType.VPDQ:
            frames = parse_frames(entry.value)
            ids = np.arange(self._next_frame_id, self._next_frame_id + len(frames), dtype=np.int64)
            self._next_frame_id += len(frames)
            if len(frames):
                self.video_frames.add_hex(ids.tolist(), [f.pdq for f in frames])
            self._frames_of[entry.id] = frames
            self._frame_ids[entry.id] = ids
            for fid in ids.tolist():
                self._frame_owner[fid] = entry.id
        else:  # pragma: no cover - SignalType is closed
            raise ValueError(f"unsupported signal type {stype}")
        self.refs[entry.id] = _ref(entry, stype)

    def remove(self, entry_id: int) -> None:
        """Disable or delete one entry; the next lookup no longer returns it."""
        ref = self.refs.pop(entry_id, None)
        if ref is None:
            return
        if ref.signal_type is SignalType.PDQ:
            self.pdq.remove([entry_id])
        elif ref.signal_type in self.exact:
            self.exact[ref.signal_type].remove([entry_id])
        elif ref.signal_type is SignalType.URL:
            self.urls.remove(entry_id)
        elif ref.signal_type is SignalType.TEXT:
            self.text.remove(entry_id)
        elif ref.signal_type is SignalType.VPDQ:
            fids = self._frame_ids.pop(entry_id)
            self.video_frames.remove(fids.tolist())
            for fid in fids.tolist():
                self._frame_owner.pop(fid, None)
            self._frames_of.pop(entry_id, None)

    # -- lookups ----------------------------------------------------------------------------
    def match(
        self,
        signals: Sequence[Signal],
        *,
        threshold: int = DEFAULT_PDQ_THRESHOLD,
        min_quality: int = DEFAULT_MIN_QUALITY,
        dihedral: Sequence[str] = (),
        video_percent: float = DEFAULT_VIDEO_MATCH_PERCENT,
        banks: Iterable[str] | None = None,
    ) -> list[Match]:
        """Every entry matching any of the content's signals.

        ``dihedral`` holds the 8 PDQ hashes of the image's rotations and flips (index 0 = as is);
        when given they are all queried and the best distance per entry wins.
        """
        found: dict[int, Match] = {}

        def keep(m: Match) -> None:
            old = found.get(m.entry_id)
            if old is None or m.distance < old.distance:
                found[m.entry_id] = m

        for sig in signals:
            stype = SignalType(sig.type)
            if stype is SignalType.PDQ:
                if sig.quality is not None and sig.quality < min_quality:
                    continue
                variants = list(dihedral) if dihedral else [sig.value]
                for i, hexval in enumerate(variants):
                    for eid, dist in self.pdq.search(hexval, threshold):
                        variant = DIHEDRAL_NAMES[i] if dihedral else None
                        keep(self._match(eid, dist, variant=variant))
            elif stype in self.exact:
                for eid in self.exact[stype].lookup(sig.value):
                    keep(self._match(eid, 0))
            elif stype is SignalType.URL:
                for eid, kind in self.urls.match(sig.value):
                    keep(self._match(eid, 0, url_match=kind))
            elif stype is SignalType.TEXT:
                for hit in self.text.match(sig.value):
                    keep(self._text_match(hit))
            elif stype is SignalType.VPDQ:
                frames = sig.frames or parse_frames(sig.value)
                for m in self._match_video(frames, threshold, min_quality, video_percent):
                    keep(m)
        return _filter_sort(found.values(), banks)

    def lookup_pdq(
        self,
        hexes: Sequence[str],
        *,
        threshold: int = DEFAULT_PDQ_THRESHOLD,
        banks: Iterable[str] | None = None,
    ) -> list[list[Match]]:
        """Batched PDQ lookups for precomputed hashes (all cores, one call)."""
        if not hexes:
            return []
        if len(hexes) == 1:  # one query: skip the thread fan-out of the batch kernel
            hits = [self.pdq.search(hexes[0], threshold)]
        else:
            hits = self.pdq.search_batch(hex_to_bytes(hexes), threshold)
        return [_filter_sort((self._match(e, d) for e, d in row), banks) for row in hits]

    def _match_video(
        self,
        frames: Sequence[VideoFrame],
        threshold: int,
        min_quality: int,
        percent: float,
    ) -> list[Match]:
        good = [f for f in frames if f.quality >= min_quality]
        if not good:
            return []
        # Candidate bank videos are those sharing at least one frame within the threshold;
        # each candidate is then scored exactly on all frames, as vPDQ defines the score.
        candidates: dict[int, int] = {}
        hits = self.video_frames.search_batch(hex_to_bytes([f.pdq for f in good]), threshold)
        for row in hits:
            for fid, dist in row:
                owner = self._frame_owner.get(fid)
                if owner is not None:
                    candidates[owner] = min(dist, candidates.get(owner, dist))
        out = []
        for eid, best in candidates.items():
            query_pct, _ = video_match_score(
                good, self._frames_of[eid], distance=threshold, min_quality=min_quality
            )
            if query_pct >= percent:
                out.append(self._match(eid, best, score=query_pct))
        return out

    def _text_match(self, hit: TextHit) -> TextMatch:
        ref = self.refs[hit.entry_id]
        return TextMatch(
            entry_id=hit.entry_id,
            bank=ref.bank,
            signal_type=ref.signal_type,
            distance=0,
            external_id=ref.external_id,
            labels=ref.labels,
            spans=hit.spans,
            normalisations=hit.normalisations,
            occurrences=hit.count,
        )

    def _match(self, entry_id: int, distance: int, **extra: object) -> Match:
        ref = self.refs[entry_id]
        return Match(
            entry_id=entry_id,
            bank=ref.bank,
            signal_type=ref.signal_type,
            distance=distance,
            external_id=ref.external_id,
            labels=ref.labels,
            **extra,  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class TextMatch(Match):
    """A keyword match: where in the scanned text (character offsets into the text as sent,
    end exclusive; the first ten) and which normalisations it took (:mod:`bastion.text`)."""

    spans: tuple[tuple[int, int], ...] = ()
    normalisations: tuple[str, ...] = ()
    occurrences: int = 0

    def as_dict(self) -> dict[str, object]:
        out = Match.as_dict(self)
        out["spans"] = [list(s) for s in self.spans]
        out["normalisations"] = list(self.normalisations)
        out["occurrences"] = self.occurrences
        return out


def _ref(entry: EntryLike, stype: SignalType) -> EntryRef:
    return EntryRef(
        bank=entry.bank,
        signal_type=stype,
        external_id=entry.external_id,
        labels=tuple(entry.labels or ()),
    )


def _filter_sort(matches: Iterable[Match], banks: Iterable[str] | None) -> list[Match]:
    wanted = None if banks is None else set(banks)
    kept = [m for m in matches if wanted is None or m.bank in wanted]
    return sorted(kept, key=lambda m: (m.distance, -(m.score or 0.0), m.bank, m.entry_id))

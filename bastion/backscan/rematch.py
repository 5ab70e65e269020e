"""Re-match stored signals when banks grow: only against the entries added since a revision.

The new entries (live ones only: an entry disabled, removed or disputed since opens nothing) go
into a small index of their own; the stored signals (every registered back-scan dataset, and the
scans table) are streamed through it in batches, PDQ by the batched index kernel, exact hashes by
dictionary. A match counts only against an entry newer than what that signal was last matched
against (the row's ``bank_revision``), so nothing already found is found again. Matches become
findings of origin ``rematch``, labelled with the bank revision of the entry that produced them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from bastion.backscan.dataset import Dataset
from bastion.backscan.store import BackscanStore
from bastion.banks.model import IndexEntry
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD, Match, Matcher
from bastion.index.pdq import PDQIndex, hex_to_bytes
from bastion.signals.base import DEFAULT_MIN_QUALITY, Signal, SignalType
from bastion.signals.video import parse_frames

if TYPE_CHECKING:
    from bastion.db import Store
    from bastion.runtime import Runtime

#: Stored rows read and matched per batch.
BATCH = 65_536
_COLUMNS = [
    "uri",
    "content_id",
    "uploader_id",
    "age_band",
    "kind",
    "format",
    "md5",
    "sha256",
    "pdq",
    "pdq_quality",
    "vpdq",
    "bank_revision",
    "matches",
]
#: The pseudo-dataset under which the scans table's re-match revision is kept.
SCANS_PATH = "db:scans"


@dataclass
class NewEntries:
    """The entries added or re-enabled after ``since`` up to ``upto``, live now, in a small
    index; ``revision`` is the revision each one was last written at."""

    since: int
    upto: int
    matcher: Matcher
    revision: dict[int, int] = field(default_factory=dict)
    skipped_disputed: int = 0
    entries: list[IndexEntry] = field(default_factory=list)

    def of_type(self, stype: SignalType) -> list[IndexEntry]:
        return [e for e in self.entries if e.signal_type == stype and e.id in self.revision]

    def __len__(self) -> int:
        return len(self.revision)


def new_entries(store: Store, since: int, disputed: set[int] | None = None) -> NewEntries:
    """The live entries changed after ``since``. The change feed's last word on each entry
    counts: one added and then disabled (a dispute) or removed is not there."""
    changes, upto = store.changes_since(since)
    latest = {}
    for c in changes:
        latest[c.entry_id] = c
    disputed = disputed or set()
    live: list[IndexEntry] = []
    revision: dict[int, int] = {}
    skipped = 0
    for c in latest.values():
        if not c.active or c.entry is None:
            continue
        if c.entry_id in disputed:
            skipped += 1
            continue
        live.append(c.entry)
        revision[c.entry_id] = c.revision
    matcher = Matcher.from_entries(live)
    for eid, _reason in matcher.rejected:
        revision.pop(eid, None)
    return NewEntries(since, upto, matcher, revision, skipped, live)


@dataclass(frozen=True)
class RematchOptions:
    threshold: int = DEFAULT_PDQ_THRESHOLD
    min_quality: int = DEFAULT_MIN_QUALITY


def match_batch(
    rows: list[dict[str, Any]], new: NewEntries, opts: RematchOptions
) -> Iterator[tuple[dict[str, Any], list[Match]]]:
    """Each stored row with its new matches (only entries newer than the row's revision)."""
    m = new.matcher
    found: list[list[Match]] = [[] for _ in rows]
    if len(m.pdq):
        idx = [
            i
            for i, r in enumerate(rows)
            if r.get("pdq") and (r.get("pdq_quality") or 0) >= opts.min_quality
        ]
        if idx:
            hits = m.pdq.search_batch(hex_to_bytes([rows[i]["pdq"] for i in idx]), opts.threshold)
            for i, row_hits in zip(idx, hits, strict=True):
                for eid, dist in row_hits:
                    found[i].append(_match(m, eid, dist))
    for stype in (SignalType.MD5, SignalType.SHA256):
        exact = m.exact[stype]
        if not len(exact):
            continue
        for i, r in enumerate(rows):
            value = r.get(str(stype))
            if value:
                for eid in exact.lookup(value):
                    found[i].append(_match(m, eid, 0))
    if m.video_frames and len(m.video_frames):
        for i, r in enumerate(rows):
            if r.get("vpdq"):
                sig = Signal(SignalType.VPDQ, r["vpdq"], None, parse_frames(r["vpdq"]))
                found[i] += m.match([sig], threshold=opts.threshold, min_quality=opts.min_quality)
    for r, ms in zip(rows, found, strict=True):
        if not ms:
            continue
        seen = r.get("bank_revision")
        fresh = [x for x in ms if seen is None or new.revision.get(x.entry_id, 0) > seen]
        if fresh:
            yield r, sorted({x.entry_id: x for x in fresh}.values(), key=lambda x: x.distance)


def _match(m: Matcher, eid: int, dist: int) -> Match:
    ref = m.refs[eid]
    return Match(eid, ref.bank, ref.signal_type, dist, ref.external_id, ref.labels)


#: Stored PDQ hashes indexed at once when the stored side is the larger (see dataset_matches):
#: a lookup costs little more in a larger index, so larger chunks re-match faster per signal;
#: 10M costs about 2.5 GB at the peak (the index's 109 B per hash, the hashes, the hex column).
CHUNK = 10_000_000


def dataset_matches(
    path: Path, new: NewEntries, opts: RematchOptions, *, chunk: int = CHUNK
) -> Iterator[tuple[dict[str, Any], list[Match]]]:
    """A dataset's rows with their new matches, read column by column.

    PDQ is a join of the stored hashes with the new entries' at ``threshold``. Whichever side is
    larger is indexed (:class:`bastion.index.pdq.PDQIndex`, exact) and the other side queries it:
    a lookup costs far less than proportionally more in a larger index, so indexing up to
    ``chunk`` stored hashes and querying with 100,000 new entries is much cheaper than 10M
    lookups in an index of the new ones. Exact hashes are a set membership test per column.
    Only rows that matched are read in full.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ds = Dataset(path)
    new_pdq = new.of_type(SignalType.PDQ)
    new_exact = {
        t: {e.value: e.id for e in new.of_type(t)} for t in (SignalType.MD5, SignalType.SHA256)
    }
    has_video = bool(new.of_type(SignalType.VPDQ))
    cols = ["pdq", "pdq_quality", "md5", "sha256", "bank_revision", "vpdq_frames"]
    parts: list[tuple[int, pa.Table]] = []
    held = 0

    def process() -> Iterator[tuple[dict[str, Any], list[Match]]]:
        tables = [t for _, t in parts]
        owners = np.concatenate(
            [np.full(t.num_rows, s, dtype=np.int64) for s, t in parts] or [np.zeros(0, np.int64)]
        )
        local = np.concatenate(
            [np.arange(t.num_rows, dtype=np.int64) for _, t in parts] or [np.zeros(0, np.int64)]
        )
        table = pa.concat_tables(tables)
        found: dict[int, list[Match]] = {}
        if new_pdq:
            _pdq_join(table, new, new_pdq, opts, found)
        for stype, values in new_exact.items():
            if not values:
                continue
            col = table.column(str(stype))
            hit = pc.is_in(col, value_set=pa.array(list(values)))
            for pos in np.flatnonzero(hit.to_numpy(zero_copy_only=False)).tolist():
                eid = values[col[pos].as_py()]
                found.setdefault(pos, []).append(_match(new.matcher, eid, 0))
        revs = table.column("bank_revision").to_pylist()
        keep: dict[int, list[Match]] = {}
        for pos, ms in found.items():
            seen = revs[pos]
            fresh = [m for m in ms if seen is None or new.revision.get(m.entry_id, 0) > seen]
            if fresh:
                keep[pos] = fresh
        if has_video:
            frames = table.column("vpdq_frames").to_numpy(zero_copy_only=False)
            for pos in np.flatnonzero(np.nan_to_num(frames.astype(float)) > 0).tolist():
                keep.setdefault(pos, [])
        by_shard: dict[int, list[int]] = {}
        for pos in sorted(keep):
            by_shard.setdefault(int(owners[pos]), []).append(pos)
        for shard, positions in by_shard.items():
            full = pq.read_table(ds.data_dir / f"shard-{shard:06d}.parquet", columns=_COLUMNS)
            rows = full.take(pa.array(local[positions])).to_pylist()
            for pos, row in zip(positions, rows, strict=True):
                ms = keep[pos]
                if has_video and row.get("vpdq"):
                    ms += [
                        m
                        for m in _video_matches(row, new, opts)
                        if row.get("bank_revision") is None
                        or new.revision.get(m.entry_id, 0) > row["bank_revision"]
                    ]
                if ms:
                    best = {m.entry_id: m for m in sorted(ms, key=lambda m: -m.distance)}
                    yield row, sorted(best.values(), key=lambda m: (m.distance, m.entry_id))

    for shard in sorted(ds.done()):
        t = pq.read_table(ds.data_dir / f"shard-{shard:06d}.parquet", columns=cols)
        parts.append((shard, t))
        held += t.num_rows
        if held >= chunk:
            yield from process()
            parts, held = [], 0
    if parts:
        yield from process()


def _pdq_join(
    table: Any,
    new: NewEntries,
    new_pdq: list[IndexEntry],
    opts: RematchOptions,
    found: dict[int, list[Match]],
) -> None:
    pdq = table.column("pdq")
    quality = table.column("pdq_quality").to_numpy(zero_copy_only=False)
    present = ~np.asarray(pdq.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    good = present & (np.nan_to_num(quality.astype(float), nan=-1) >= opts.min_quality)
    positions = np.flatnonzero(good)
    if not len(positions):
        return
    stored = hex_column(pdq.take(positions))
    ids = np.array([e.id for e in new_pdq], dtype=np.int64)
    if len(positions) > 4 * len(new_pdq):  # index the stored side, query with the new entries
        index = PDQIndex()
        index.add(positions.astype(np.int64), stored)
        hits = index.search_batch(hex_to_bytes([e.value for e in new_pdq]), opts.threshold)
        for eid, row_hits in zip(ids.tolist(), hits, strict=True):
            for pos, dist in row_hits:
                found.setdefault(int(pos), []).append(_match(new.matcher, eid, dist))
    else:
        hits = new.matcher.pdq.search_batch(stored, opts.threshold)
        for pos, row_hits in zip(positions.tolist(), hits, strict=True):
            for eid, dist in row_hits:
                found.setdefault(pos, []).append(_match(new.matcher, eid, dist))


_NIBBLE = np.full(256, 255, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def hex_column(column: Any) -> np.ndarray:
    """``(N, 32)`` uint8 from an Arrow column of 64-digit hex strings, decoded in numpy from
    the column's character buffer (no Python string per row)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    chars = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    if n == 0:
        return np.zeros((0, 32), np.uint8)
    if not (np.diff(offsets) == 64).all():
        raise ValueError("a stored PDQ hash is not 64 hex digits")
    digits = _NIBBLE[chars[offsets[0] : offsets[0] + 64 * n]].reshape(n, 32, 2)
    if (digits == 255).any():
        raise ValueError("a stored PDQ hash is not hexadecimal")
    return (digits[:, :, 0] << 4) | digits[:, :, 1]


def _video_matches(row: dict[str, Any], new: NewEntries, opts: RematchOptions) -> list[Match]:
    sig = Signal(SignalType.VPDQ, row["vpdq"], None, parse_frames(row["vpdq"]))
    return [
        m
        for m in new.matcher.match([sig], threshold=opts.threshold, min_quality=opts.min_quality)
        if m.signal_type is SignalType.VPDQ
    ]


def dataset_rows(path: Path) -> Iterator[list[dict[str, Any]]]:
    """A dataset's stored signals in batches (only the columns re-matching reads)."""
    ds = Dataset(path)
    for i in sorted(ds.done()):
        pf = pq.ParquetFile(ds.data_dir / f"shard-{i:06d}.parquet")
        for batch in pf.iter_batches(columns=_COLUMNS, batch_size=BATCH):
            yield batch.to_pylist()


def scan_rows(store: Store) -> Iterator[list[dict[str, Any]]]:
    """The scans table's signals as rows (a scan has no revision: its matches say what it was
    already matched against, and those entries are dropped from its new matches)."""
    before: int | None = None
    while True:
        page = store.iter_scans(10_000, before_id=before)
        if not page:
            return
        before = page[-1].id
        out = []
        for s in page:
            row: dict[str, Any] = {
                "uri": f"scan:{s.id}",
                "kind": s.content_kind,
                "format": None,
                "bank_revision": None,
                "matches": s.matches,
                "known": {int(m["entry"]) for m in s.matches if "entry" in m},
            }
            for key in ("content_id", "uploader_id", "age_band"):
                row[key] = s.context.get(key)
            for sig in s.signals:
                t = sig.get("type")
                if t in ("md5", "sha256", "pdq", "vpdq"):
                    row[t] = sig.get("value")
                if t == "pdq":
                    row["pdq_quality"] = sig.get("quality")
            out.append(row)
        yield out


@dataclass
class RematchReport:
    since: int
    upto: int
    new_entries: int
    skipped_disputed: int = 0
    signals: int = 0
    matched: int = 0
    seconds: float = 0.0
    review: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        rate = self.signals / self.seconds if self.seconds > 0 else 0.0
        return {**self.__dict__, "signals_per_second": round(rate, 1)}


def _retroactive_rows(
    new: NewEntries, matched: Iterable[tuple[dict[str, Any], list[Match]]]
) -> Iterator[dict[str, Any]]:
    for row, ms in matched:
        known = row.get("known") or set()
        ms = [m for m in ms if m.entry_id not in known]
        if not ms:
            continue
        version = max(new.revision[m.entry_id] for m in ms)
        matches = [{**m.as_dict(), "retroactive": True, "bank_revision": version} for m in ms]
        yield {**row, "matches": matches, "bank_revision": version}


def rematch(
    rt: Runtime,
    since: int | None = None,
    *,
    opts: RematchOptions | None = None,
    dry_run: bool = False,
) -> RematchReport:
    """Re-match every registered dataset and the scans table against the entries changed
    after ``since`` (default: the oldest revision any of them is matched up to), hand the new
    matches to the backlog, and record the revision they are now matched up to."""
    from bastion.backscan.intake import enqueue

    opts = opts or RematchOptions()
    store = BackscanStore(rt.store)
    datasets = store.datasets()
    if SCANS_PATH not in {d.path for d in datasets}:
        # Stored scans were matched against the banks of their day: the scans table is followed
        # from now on (a first pass over every entry of every bank would be a full re-scan).
        store.register_dataset(SCANS_PATH, "scans table", 0, rt.store.current_revision())
        datasets = store.datasets()
    start = min(d.matched_revision for d in datasets) if since is None else since
    started = time.monotonic()
    new = new_entries(rt.store, start, disputed=_disputed(rt))
    report = RematchReport(start, new.upto, len(new), new.skipped_disputed)
    would: Counter[str] = Counter()
    review: dict[str, Any] = {"added": 0, "known": 0}
    if len(new):
        for d in datasets:
            if since is None and d.matched_revision >= new.upto:
                continue
            if d.path == SCANS_PATH:
                batches = _scan_batches(rt.store, new, opts, report)
            else:
                report.signals += _rows_in(Path(d.path))
                batches = _batched(dataset_matches(Path(d.path), new, opts), 1000)
            for pairs in batches:
                found = list(_retroactive_rows(new, pairs))
                report.matched += len(found)
                if found:
                    label = f"rematch:{start}..{new.upto}:{d.path}"
                    r = enqueue(rt, found, origin="rematch", label=label, dry_run=dry_run)
                    review["added"] += r["added"]
                    review["known"] += r["known"]
                    would.update(r["would"])
    if not dry_run:
        for d in datasets:
            if d.matched_revision < new.upto:
                store.set_matched_revision(d.id, new.upto)
    report.seconds = round(time.monotonic() - started, 3)
    report.review = {**review, "dry_run": dry_run, "would": dict(sorted(would.items()))}
    return report


def _scan_batches(
    store: Store, new: NewEntries, opts: RematchOptions, report: RematchReport
) -> Iterator[list[tuple[dict[str, Any], list[Match]]]]:
    for rows in scan_rows(store):
        report.signals += len(rows)
        yield list(match_batch(rows, new, opts))


def _rows_in(path: Path) -> int:
    ds = Dataset(path)
    return sum(
        pq.ParquetFile(ds.data_dir / f"shard-{i:06d}.parquet").metadata.num_rows for i in ds.done()
    )


def _batched(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _disputed(rt: Runtime) -> set[int]:
    """Entries a reviewer found not abusive (their disputes), whatever their enabled flag."""
    from sqlalchemy import select

    from bastion.review.rows import EntryDisputeRow

    t = EntryDisputeRow.__table__
    with rt.store.engine.connect() as conn:
        return {int(r[0]) for r in conn.execute(select(t.c.entry_id).distinct())}

"""The re-match join finds exactly what brute force finds, whichever side it indexes (the new
entries, or the stored hashes when they are many more), at the threshold and not past it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bastion.backscan.dataset import Dataset
from bastion.backscan.model import SCHEMA
from bastion.backscan.rematch import NewEntries, RematchOptions, dataset_matches
from bastion.banks.model import IndexEntry
from bastion.index.matcher import Matcher
from bastion.signals import SignalType


def _flip(rng: np.random.Generator, h: np.ndarray, bits: int) -> np.ndarray:
    out = np.unpackbits(h.copy())
    out[rng.choice(256, bits, replace=False)] ^= 1
    return np.packbits(out)


def _dataset(tmp_path: Path, stored: np.ndarray, revision: int) -> Dataset:
    ds = Dataset(tmp_path / "ds")
    ds.data_dir.mkdir(parents=True)
    empty = dict.fromkeys(SCHEMA.names)
    for shard, lo in enumerate(range(0, len(stored), 500)):
        rows = []
        for i in range(lo, min(lo + 500, len(stored))):
            rows.append(
                {
                    **empty,
                    "uri": f"mem://{i}",
                    "shard": shard,
                    "pdq": stored[i].tobytes().hex(),
                    "pdq_quality": 40 if i % 97 == 0 else 100,  # some too weak to match
                    "md5": f"{i:032x}",
                    "bank_revision": revision,
                    "matched": 0,
                    "matches": "[]",
                }
            )
        ds.commit(shard, rows)
    return ds


@pytest.mark.parametrize("n_new", [30, 2_000])  # stored side indexed / new side indexed
def test_the_join_equals_brute_force(tmp_path: Path, n_new: int) -> None:
    rng = np.random.default_rng(n_new)
    stored = rng.integers(0, 256, (3_000, 32), dtype=np.uint8)
    new_hashes = rng.integers(0, 256, (n_new, 32), dtype=np.uint8)
    for j in range(0, n_new, 3):  # planted: stored copies at distance 0..40 of a new entry
        new_hashes[j] = _flip(rng, stored[(j * 7) % 3_000], int(rng.integers(0, 41)))
    _dataset(tmp_path, stored, revision=5)
    entries = [
        IndexEntry(1000 + j, "later", SignalType.PDQ, h.tobytes().hex(), None, None, [])
        for j, h in enumerate(new_hashes)
    ]
    entries.append(IndexEntry(9, "later", SignalType.MD5, f"{77:032x}", None, None, []))
    # entry 1000 was already there at revision 5: the rows were matched against it then
    revision = {e.id: (5 if e.id == 1000 else 6) for e in entries}
    new = NewEntries(5, 6, Matcher.from_entries(entries), revision, 0, entries)

    got = {
        (row["uri"], m.entry_id, m.distance)
        for row, ms in dataset_matches(tmp_path / "ds", new, RematchOptions(), chunk=1_200)
        for m in ms
    }
    bits = np.unpackbits(stored, axis=1)
    want = set()
    for j, h in enumerate(new_hashes):
        dist = (bits != np.unpackbits(h)).sum(axis=1)
        for i in np.flatnonzero(dist <= 31).tolist():
            if i % 97 and 1000 + j != 1000:
                want.add((f"mem://{i}", 1000 + j, int(dist[i])))
    want.add(("mem://77", 9, 0))
    assert len(want) > n_new // 6  # the planted pairs are there
    assert got == want

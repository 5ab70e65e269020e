"""A back-scan's rows: what one object hashed and matched to, as the Parquet dataset holds it.
Pure: no database, no I/O.

One row per object. Signals sit in typed columns (``md5``, ``sha256``, ``pdq``...) so a re-match
can stream one column of millions of rows without decoding JSON; matches are JSON (few rows have
any). Every row names the algorithm versions that produced its signals and the bank revision its
matches were computed at, so a later re-match knows what it has not yet been matched against.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pyarrow as pa

from bastion.index.matcher import Match
from bastion.signals import FileSignals, HashOptions, SignalType

SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("shard", pa.int32()),
        ("size", pa.int64()),
        ("version", pa.string()),  # "etag:..." or "mtime:<iso>"
        ("content_id", pa.string()),
        ("uploader_id", pa.string()),
        ("created_at", pa.string()),
        ("age_band", pa.string()),
        ("kind", pa.string()),
        ("format", pa.string()),
        ("md5", pa.string()),
        ("sha256", pa.string()),
        ("pdq", pa.string()),
        ("pdq_quality", pa.int16()),
        ("pdq_dihedral", pa.list_(pa.string())),
        ("vpdq", pa.string()),
        ("vpdq_frames", pa.int32()),
        ("algorithms", pa.string()),  # JSON: signal type -> implementation and version
        ("bank_revision", pa.int64()),
        ("matched", pa.int16()),
        ("matches", pa.string()),  # JSON list of Match.as_dict()
        ("error", pa.string()),
    ]
)


@functools.cache
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def algorithms(options: HashOptions | None, *, dihedral: bool) -> str:
    """The implementations and versions behind each signal, as one JSON text per run."""
    spf = options.video_seconds_per_hash if options else 1.0
    algos = {
        "md5": "hashlib",
        "sha256": "hashlib",
        "pdq": f"pdqhash {_version('pdqhash')} bastion-fast" + (" dihedral" if dihedral else ""),
        "vpdq": f"vpdq {_version('vpdq')} {spf:g}s",
        "bastion": _version("bastion"),
    }
    return json.dumps(algos, sort_keys=True, separators=(",", ":"))


def hashed_row(
    obj: dict[str, Any], fs: FileSignals, version: str | None, shard: int, algos: str
) -> dict[str, Any]:
    """The row of one hashed object, before matching (a worker builds it)."""
    pdq = fs.get(SignalType.PDQ)
    vpdq = fs.get(SignalType.VPDQ)
    md5 = fs.get(SignalType.MD5)
    sha = fs.get(SignalType.SHA256)
    return {
        "uri": str(obj["uri"]),
        "shard": shard,
        "size": fs.size if fs.size or obj.get("size") is None else int(obj["size"]),
        "version": version or obj.get("version"),
        "content_id": obj.get("content_id"),
        "uploader_id": obj.get("uploader_id"),
        "created_at": obj.get("created_at"),
        "age_band": obj.get("age_band"),
        "kind": fs.kind,
        "format": fs.format,
        "md5": md5.value if md5 else None,
        "sha256": sha.value if sha else None,
        "pdq": pdq.value if pdq else None,
        "pdq_quality": pdq.quality if pdq else None,
        "pdq_dihedral": list(fs.pdq_dihedral) or None,
        "vpdq": vpdq.value if vpdq else None,
        "vpdq_frames": len(vpdq.frames) if vpdq else None,
        "algorithms": algos,
        "bank_revision": None,
        "matched": 0,
        "matches": "[]",
        "error": fs.error,
    }


def with_matches(row: dict[str, Any], matches: list[Match], revision: int) -> dict[str, Any]:
    row["bank_revision"] = revision
    row["matched"] = len(matches)
    row["matches"] = json.dumps([m.as_dict() for m in matches], separators=(",", ":"))
    return row


def content_key(row: dict[str, Any]) -> str:
    """Who the platform knows this object as: its content id when the manifest gave one, else
    its uri. Review intake is idempotent by this key."""
    cid = row.get("content_id")
    return f"content:{cid}" if cid else f"uri:{row['uri']}"


@dataclass
class Tally:
    """Running totals of a run (the progress bar, ``status`` and the audit summary)."""

    shards: int = 0
    objects: int = 0
    bytes: int = 0
    matched: int = 0
    errors: int = 0
    by_bank: dict[str, int] = field(default_factory=dict)
    #: The oldest bank revision any row was matched at (a resumed run may span several).
    lowest_revision: int | None = None

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.shards += 1
        for row in rows:
            self.objects += 1
            self.bytes += int(row.get("size") or 0)
            self.errors += row.get("error") is not None
            rev = row.get("bank_revision")
            if rev is not None and (self.lowest_revision is None or rev < self.lowest_revision):
                self.lowest_revision = int(rev)
            if row.get("matched"):
                self.matched += 1
                for m in json.loads(row["matches"]):
                    self.by_bank[m["bank"]] = self.by_bank.get(m["bank"], 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "shards": self.shards,
            "objects": self.objects,
            "bytes": self.bytes,
            "matched": self.matched,
            "errors": self.errors,
            "matches_by_bank": dict(sorted(self.by_bank.items())),
        }

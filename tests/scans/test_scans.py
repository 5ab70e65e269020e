"""Scan records: stored before the answer goes out, read back by id or newest first."""

from __future__ import annotations

import pytest

from bastion.db import Store
from bastion.store import InvalidInput
from bastion.store.errors import ScanNotFound
from tests.fixtures.stores import Database

CONTEXT = {
    "content_id": "post-123",
    "uploader_id": "user-9",
    "conversation_id": None,
    "age_band": "13-15",
}
SIGNALS = [{"type": "pdq", "value": "f" * 64, "quality": 100}, {"type": "md5", "value": "0" * 32}]
MATCHES = [{"bank": "demo", "entry_id": 7, "signal_type": "pdq", "distance": 12, "labels": []}]


def _scan(store: Store, **override: object) -> int:
    fields: dict[str, object] = {
        "actor": "key:abcdefgh12",
        "content_kind": "image",
        "context": CONTEXT,
        "signals": SIGNALS,
        "matches": MATCHES,
        "verdict": "review",
        **override,
    }
    return store.record_scan(**fields)  # type: ignore[arg-type]


def test_record_and_get_round_trip(db: Database) -> None:
    store = db.open()
    scan_id = _scan(store)
    assert isinstance(scan_id, int) and scan_id > 0
    record = store.get_scan(scan_id)
    assert record.id == scan_id
    assert (record.actor, record.content_kind, record.verdict) == (
        "key:abcdefgh12",
        "image",
        "review",
    )
    assert (record.context, record.signals, record.matches) == (CONTEXT, SIGNALS, MATCHES)
    assert record.at.tzinfo is not None
    # Committed on return: another process's store sees it at once.
    assert db.open().get_scan(scan_id) == record


def test_unknown_ids_raise_not_found(store: Store) -> None:
    _scan(store)
    for bad in (999, 0, -1, 2**63, "1", True, None):
        with pytest.raises(ScanNotFound, match="no scan with id"):
            store.get_scan(bad)  # type: ignore[arg-type]


def test_newest_first_with_paging(store: Store) -> None:
    ids = [_scan(store, verdict=f"v{i}") for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [s.id for s in store.iter_scans()] == ids[::-1]
    assert [s.id for s in store.iter_scans(2)] == ids[:2:-1][:2]
    assert [s.id for s in store.iter_scans(2, before_id=ids[3])] == [ids[2], ids[1]]
    assert store.iter_scans(before_id=ids[0]) == []
    with pytest.raises(InvalidInput, match="limit must be"):
        store.iter_scans(0)


def test_large_video_scan_is_kept_whole(store: Store) -> None:
    frames = [
        {"type": "vpdq", "frame": i, "value": f"{i:064x}", "quality": 90} for i in range(5000)
    ]
    scan_id = _scan(store, content_kind="video", signals=frames)
    assert store.get_scan(scan_id).signals == frames


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"context": ["not", "a", "dict"]}, "context must be a JSON dict"),
        ({"signals": {"type": "pdq"}}, "signals must be a JSON list"),
        ({"matches": None}, "matches must be a JSON list"),
        ({"matches": [{"distance": float("inf")}]}, "matches is not storable as JSON"),
        ({"context": {"content_id": b"bytes"}}, "context is not storable as JSON"),
        ({"context": {"content_id": "a\x00"}}, "context contains a NUL"),
        ({"verdict": ""}, "verdict must be non-empty"),
        ({"verdict": "x" * 33}, "verdict must be"),
        ({"content_kind": 3}, "content_kind must be a string"),
        ({"actor": " "}, "actor must be non-empty"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(
    store: Store, override: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        _scan(store, **override)
    assert store.iter_scans() == []

"""Exact-match index for md5, sha256 and normalised URL signals: value -> ids."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence


class ExactIndex:
    """Maps a canonical signal value to the ids holding it.

    Values are compared exactly, so callers pass canonical forms (``Signal.value``: lowercase hex,
    normalised URL). Each id holds one value; adding an id again replaces its value.
    """

    def __init__(self) -> None:
        self._by_value: dict[Hashable, set[int]] = {}
        self._by_id: dict[int, Hashable] = {}

    def add(self, ids: Sequence[int], values: Sequence[Hashable]) -> None:
        """Add or replace entries; ``ids`` and ``values`` pair up by position."""
        if len(ids) != len(values):
            raise ValueError(f"{len(ids)} ids but {len(values)} values")
        for i, (id_, value) in enumerate(zip(ids, values, strict=True)):
            if not isinstance(value, Hashable) or value is None:
                raise ValueError(f"item {i}: value must be a hashable, non-None, got {value!r}")
            id_ = int(id_)
            self._discard(id_)
            self._by_id[id_] = value
            self._by_value.setdefault(value, set()).add(id_)

    def remove(self, ids: Iterable[int]) -> None:
        """Delete entries; unknown ids are ignored."""
        for id_ in ids:
            self._discard(int(id_))

    def lookup(self, value: Hashable) -> list[int]:
        """Ids holding exactly ``value``, ascending."""
        return sorted(self._by_value.get(value, ()))

    def __len__(self) -> int:
        return len(self._by_id)

    def _discard(self, id_: int) -> None:
        old = self._by_id.pop(id_, None)
        if old is None:
            return
        holders = self._by_value[old]
        holders.discard(id_)
        if not holders:
            del self._by_value[old]

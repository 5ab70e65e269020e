"""URL list matching: whole URLs, path prefixes and domains, by hash lookups only.

A URL is turned into its few candidate keys (:func:`bastion.signals.url.url_keys`: one URL, one
prefix per path segment, one domain per label), so a match costs O(segments + labels) dictionary
probes whatever the size of the list.
"""

from __future__ import annotations

from collections import defaultdict

from bastion.signals.url import (
    URL_ENTRY_KINDS,
    UrlEntryKind,
    UrlKeys,
    normalize_url_entry,
    url_keys,
)

__all__ = ["UrlEntryKind", "UrlIndex", "entry_key"]
_KINDS = URL_ENTRY_KINDS


def entry_key(kind: UrlEntryKind, pattern: str) -> str:
    """The key a list entry is indexed under: :func:`bastion.signals.url.normalize_url_entry`,
    the same rule the bank store validates entries with. ValueError for junk or a misfit."""
    return normalize_url_entry(kind, pattern)


class UrlIndex:
    """An incrementally updated set of URL list entries, each with an integer id."""

    def __init__(self) -> None:
        self._by_key: dict[UrlEntryKind, defaultdict[str, set[int]]] = {
            kind: defaultdict(set) for kind in _KINDS
        }
        self._entries: dict[int, tuple[UrlEntryKind, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def add(self, entry_id: int, kind: UrlEntryKind, pattern: str) -> str:
        """Add or replace entry ``entry_id``; returns its normalised key. ValueError for junk."""
        key = entry_key(kind, pattern)
        self.remove(entry_id)
        self._by_key[kind][key].add(entry_id)
        self._entries[entry_id] = (kind, key)
        return key

    def remove(self, entry_id: int) -> bool:
        """Remove an entry; False if it was not there."""
        found = self._entries.pop(entry_id, None)
        if found is None:
            return False
        kind, key = found
        ids = self._by_key[kind][key]
        ids.discard(entry_id)
        if not ids:
            del self._by_key[kind][key]
        return True

    def match(self, url: str) -> list[tuple[int, UrlEntryKind]]:
        """Entries matching ``url``, sorted by id; ValueError if ``url`` cannot be normalised."""
        return self.match_keys(url_keys(url))

    def match_keys(self, keys: UrlKeys) -> list[tuple[int, UrlEntryKind]]:
        hits: set[tuple[int, UrlEntryKind]] = set()
        candidates: dict[UrlEntryKind, tuple[str, ...]] = {
            "url": (keys.url,),
            "prefix": keys.prefixes,
            "domain": keys.domains,
        }
        for kind, lookups in candidates.items():
            table = self._by_key[kind]
            for lookup in lookups:
                ids = table.get(lookup)
                if ids:
                    hits.update((i, kind) for i in ids)
        return sorted(hits)

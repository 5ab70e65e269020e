"""URL list matching: whole URLs, path prefixes and domains, by hash lookups only.

A URL is turned into its few candidate keys (:func:`bastion.signals.url.url_keys`: one URL, one
prefix per path segment, one domain per label), so a match costs O(segments + labels) dictionary
probes whatever the size of the list.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from bastion.signals.url import UrlKeys, normalize_url, url_keys

UrlEntryKind = Literal["url", "prefix", "domain"]
_KINDS: tuple[UrlEntryKind, ...] = ("url", "prefix", "domain")


def entry_key(kind: UrlEntryKind, pattern: str) -> str:
    """The normalised key a list entry is stored under; ValueError for junk or a misfit pattern.

    ``prefix`` entries may not carry a query (a prefix is a path); ``domain`` entries must be a
    bare host (a leading ``*.`` is accepted and ignored, since a domain entry covers subdomains).
    """
    if kind == "url":
        return normalize_url(pattern)
    if kind == "prefix":
        keys = url_keys(pattern)
        if keys.url != keys.prefixes[-1]:
            raise ValueError(f"prefix entry must not contain a query: {pattern!r}")
        return keys.url
    if kind == "domain":
        keys = url_keys(pattern.strip().removeprefix("*."))
        if keys.url != keys.host:
            raise ValueError(f"domain entry must be a bare host, without port or path: {pattern!r}")
        return keys.host
    raise ValueError(f"unknown URL entry kind {kind!r} (expected url, prefix or domain)")


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

"""What an API key learns about bank contents: stored values and match distances.

Hash values in a bank are what the ``export`` scope guards; a key without it must not get them
by any route, directly (entry reads) or by inference (exact distances, probing). Keys with
``export`` (or ``admin``) could export the bank outright, so they see values and exact
distances, and every read of a value is audited (who, which bank, which entries). See
bastion.index.probing for why distances are banded and how probing is told from scanning.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import Request

from bastion.api.problems import Problem
from bastion.http_auth import Principal
from bastion.index.matcher import Match
from bastion.index.pdq import HASH_BITS
from bastion.index.probing import (
    BANDS,
    Look,
    ProbeVerdict,
    WatchVerdict,
    band,
    band_distance,
    to_words,
)
from bastion.runtime import Runtime
from bastion.signals import parse_frames
from bastion.signals.base import Signal, SignalType

#: Frames of one vPDQ query compared for probing (a sample when there are more), and points per
#: request: a video probe only informs when most of its frames match, so a sample finds it.
_FRAMES_PER_SIGNAL = 32
_MAX_POINTS = 4096
_sample = random.SystemRandom()
_DISTANCE_RE = re.compile(r"\bdistance (\d+)\b")


def sees_values(principal: Principal) -> bool:
    """Whether this key may read stored hash values and exact match distances."""
    return principal.allows("export")


def audit_values(
    rt: Runtime,
    request: Request,
    principal: Principal,
    action: str,
    target: str,
    ids: Iterable[int],
    **detail: Any,
) -> None:
    """Record a read of stored values: who (the key), which bank (``target``), which entries."""
    rt.audit(request, principal, action, target, ids=sorted(set(ids)), **detail)


# -- distances --------------------------------------------------------------------------------
def shown_matches(
    rt: Runtime, principal: Principal, matches: Sequence[Match], threshold: int
) -> list[dict[str, Any]]:
    """Matches as the API shows them to this key: each with its ``band``; for a key without
    ``export`` the distance is the band's representative value and, within a band, matches are
    ordered by bank and entry rather than by closeness (the order would leak the distances)."""
    near = rt.settings.match_near_distance
    exact = sees_values(principal)
    out = []
    for m in matches:
        row = m.as_dict()
        row["band"] = shown = band(m.distance, near)
        if not exact:
            row["distance"] = band_distance(shown, near, threshold)
        out.append(row)
    if not exact:
        out.sort(key=lambda r: (BANDS.index(r["band"]), r["bank"], r["entry"]))
    return out


def shown_distance(rt: Runtime, principal: Principal, distance: int, threshold: int) -> int:
    """One distance as this key may see it (exact, or its band's representative value)."""
    if sees_values(principal):
        return distance
    near = rt.settings.match_near_distance
    return band_distance(band(distance, near), near, threshold)


def shown_reason(rt: Runtime, principal: Principal, reason: str) -> str:
    """A verdict's reason with the deciding match's distance as a band, for keys without
    ``export`` (the policy writes the exact number into its reason)."""
    if sees_values(principal):
        return reason
    near = rt.settings.match_near_distance
    return _DISTANCE_RE.sub(lambda m: f"distance {band(int(m.group(1)), near)}", reason)


# -- probing ----------------------------------------------------------------------------------
def probe_points(
    signals: Sequence[tuple[Signal, bool]],
) -> tuple[np.ndarray, list[int], list[bool]]:
    """The PDQ hashes a request looked up (a vPDQ query's frames, sampled), with the signal each
    belongs to and whether that signal matched."""
    hexes: list[str] = []
    groups: list[int] = []
    matched: list[bool] = []
    per_video = max(1, min(_FRAMES_PER_SIGNAL, _MAX_POINTS // max(1, len(signals))))
    for i, (sig, hit) in enumerate(signals):
        if sig.type is SignalType.PDQ:
            values = [sig.value]
        elif sig.type is SignalType.VPDQ:
            values = [f.pdq for f in (sig.frames or parse_frames(sig.value))]
            if len(values) > per_video:
                values = _sample.sample(values, per_video)
        else:
            continue
        hexes += values
        groups += [i] * len(values)
        matched += [hit] * len(values)
    return to_words(hexes), groups, matched


def observe_probes(
    rt: Runtime, principal: Principal, signals: Sequence[tuple[Signal, bool]]
) -> ProbeVerdict | None:
    """Count a request's hash lookups for near-duplicate probing (keys without ``export``)."""
    if sees_values(principal) or not rt.probes.enabled:
        return None
    words, groups, matched = probe_points(signals)
    if not len(words):
        return None
    return rt.probes.observe(principal.name, words, groups, matched)


def refuse_probes(
    rt: Runtime,
    request: Request,
    principal: Principal,
    verdict: ProbeVerdict | None,
    *,
    message: bool = False,
) -> None:
    """Audit a key that has just gone over its probe limit; refuse (429) a request that probes
    while it is over. ``message``: also put the detail in HMA's ``message`` field."""
    if verdict is None:
        return
    if verdict.detected:
        rt.audit(
            request,
            principal,
            "match.probing",
            f"key:{principal.name}",
            route=request.url.path,
            probes=verdict.probes,
            in_window=verdict.in_window,
            limit=rt.probes.limit,
            radius=rt.probes.radius,
            window_seconds=rt.probes.window,
        )
    if verdict.refused:
        detail = (
            f"near-duplicate probing: more than {rt.probes.limit} lookups within "
            f"{rt.probes.radius} bits of each other in {rt.probes.window:g} s from this key"
        )
        raise Problem(
            429,
            "Too Many Requests",
            detail=detail,
            headers={"Retry-After": str(max(1, round(verdict.retry_after)))},
            **({"message": detail} if message else {}),
        )


# -- the pinned threshold and the per-entry watch ---------------------------------------------
def pinned_threshold(rt: Runtime, principal: Principal, requested: int) -> int:
    """The threshold a key's lookup runs at: its own with ``export``, else the server's
    (``match_threshold``). Answers at thresholds of the caller's choosing would measure a
    distance one threshold at a time, so a key without ``export`` cannot pick one."""
    return requested if sees_values(principal) else rt.settings.match_threshold


def watched_pdq(
    rt: Runtime,
    principal: Principal,
    matcher: Any,
    hexes: Sequence[str],
    *,
    threshold: int,
    banks: Any = None,
) -> tuple[list[list[Match]], WatchVerdict | None]:
    """PDQ lookups as this key is answered. With ``export``: at ``threshold``, as asked.
    Without: at the pinned threshold, through the per-entry watch (bastion.index.probing's
    :class:`EntryWatch`): every entry within the watch radius is a look, a look at an entry
    near an earlier look by the key gets that look's distance, and a refused request gets no
    matches at all (the caller raises :func:`refuse_watch`)."""
    if sees_values(principal) or not rt.watch.enabled:
        found = matcher.lookup_pdq(list(hexes), threshold=threshold, banks=banks)
        return found, None
    pinned = rt.settings.match_threshold
    radius = min(HASH_BITS, pinned + rt.settings.probe_watch_margin)
    near = matcher.lookup_pdq(list(hexes), threshold=radius, banks=banks) if hexes else []
    looks = []
    if near:
        words = to_words(list(hexes))
        looks = [
            Look(words[i].tobytes(), m.entry_id, m.distance)
            for i, row in enumerate(near)
            for m in row
        ]
    verdict = rt.watch.observe(principal.name, looks)
    if verdict.refused:
        return [[] for _ in hexes], verdict
    shown = iter(verdict.shown)
    out: list[list[Match]] = []
    for row in near:
        kept = [replace(m, distance=d) for m in row if (d := next(shown)) <= pinned]
        kept.sort(key=lambda m: (m.distance, m.entry_id))
        out.append(kept)
    return out, verdict


def watch_answered(rt: Runtime, principal: Principal, matched: int) -> None:
    """Count a request's matched answers against the key's cap (keys without ``export``)."""
    if not sees_values(principal):
        rt.watch.answered(principal.name, matched)


def refuse_watch(
    rt: Runtime,
    request: Request,
    principal: Principal,
    verdict: WatchVerdict | None,
    *,
    message: bool = False,
) -> None:
    """Refuse (429 with Retry-After) a request the watch refused; the first refusal of an
    episode is audited as ``match.probing``."""
    if verdict is None or not verdict.refused:
        return
    s = rt.settings
    if verdict.reason == "matched":
        limit, window = s.probe_match_limit, s.probe_match_window_seconds
        detail = f"more than {limit} matched answers in {window:g} s from this key"
    else:
        limit, window = s.probe_entry_limit, s.probe_entry_window_seconds
        detail = (
            f"probing: more than {limit} distinct lookups near one bank entry in {window:g} s "
            "from this key"
        )
    if verdict.detected:
        rt.audit(
            request,
            principal,
            "match.probing",
            f"key:{principal.name}",
            route=request.url.path,
            reason=verdict.reason,
            entry=verdict.entry,
            limit=limit,
            window_seconds=window,
            retry_after=round(verdict.retry_after),
        )
    detail += "; lookups by this key are answered again after Retry-After"
    raise Problem(
        429,
        "Too Many Requests",
        detail=detail,
        headers={"Retry-After": str(max(1, round(verdict.retry_after)))},
        **({"message": detail} if message else {}),
    )

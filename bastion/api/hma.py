"""The HMA-compatible surface: Meta's Hasher-Matcher-Actioner 2.0 routes (/h, /m, /c, /status).

Tools written for HMA (ROOST Coop, scripts using OpenMediaMatch) can point at Bastion and keep
their requests and response parsing. Request and response shapes follow HMA 2.0's blueprints;
where Bastion cannot honour an HMA feature it says so with an error instead of quietly doing
something else. docs/hma.md maps the concepts and lists every difference.

Concept mapping, in short:

- bank names: HMA's ``UPPER_SNAKE`` names are Bastion's names lowercased (``TEST_BANK`` is
  stored as ``test_bank``); every bank is shown upper-cased here.
- content: a group of entries added together. Its id is the id of its first ("head") entry;
  the other entries carry ``external_id = "hma-content:<id>"``. An entry without that marker is
  content of its own, so banks filled by other means are addressable here too.
- signal type names: python-threatexchange names (``pdq``, ``vpdq``, ``video_md5``, ...).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile

from bastion.api.auth import require
from bastion.api.disclosure import (
    audit_values,
    observe_probes,
    refuse_probes,
    refuse_watch,
    sees_values,
    shown_distance,
    watch_answered,
    watched_pdq,
)
from bastion.api.openapi import IdPath
from bastion.api.problems import AUTH_RESPONSES, Problem, problem_responses
from bastion.banks.formats import BASTION_TO_PYTX, PYTX_TO_BASTION
from bastion.banks.hygiene import screen
from bastion.banks.model import Bank, BankEntry, NewEntry, normalize_entry, validate_bank_name
from bastion.fetch import FetchError, fetch
from bastion.http_auth import Principal
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD, DEFAULT_VIDEO_MATCH_PERCENT, Match
from bastion.index.probing import BANDS, band
from bastion.runtime import Runtime, RuntimeDep
from bastion.signals import hamming, hash_bytes, parse_frames, video_match_score
from bastion.signals.base import DEFAULT_MIN_QUALITY, Signal, SignalType
from bastion.store import BankExists, BankNotFound, EntryNotFound, InvalidInput, StoreError

router = APIRouter(tags=["hma"], responses=AUTH_RESPONSES)
#: Error statuses, by what a route does: every route can get a bad parameter.
_BAD = problem_responses(400, 422)
_FETCH = problem_responses(400, 413, 422, 502, 504)
_UPLOAD = problem_responses(400, 413, 422)
_BANK = problem_responses(400, 404, 422)

_hash_key = Depends(require("hash"))
_match_key = Depends(require("match"))
_curate_key = Depends(require("curate"))
_any_key = Depends(require(None))

#: External-id prefix tying an entry to the HMA content whose head entry has the id that follows.
CONTENT_MARKER = "hma-content:"
_MARKER_RE = re.compile(r"^hma-content:([1-9][0-9]{0,18})$")
#: HMA's own rule for bank names (``_bank_name_ok`` in OpenMediaMatch's database module).
_HMA_BANK_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
#: Content types HMA accepts as upload field names and ``content_type`` hints.
CONTENT_TYPES = ("photo", "video")
#: Order signals are listed and stored in: the perceptual hash, when there is one, heads content.
_ORDER = (SignalType.PDQ, SignalType.VPDQ, SignalType.MD5, SignalType.SHA256, SignalType.URL)
_NO_DISTANCE = "-"
_METADATA_KEYS = ("content_id", "content_uri", "json")
_MAX_NOTE = 255
_HMA_ENABLED, _HMA_DISABLED = 1, 0
#: Matches listed per signal, closest first: a wide net must not list (or score) a whole bank.
MAX_MATCHES = 100
#: Frames per vPDQ hash /m/compare accepts: the comparison is quadratic in frames.
MAX_COMPARE_FRAMES = 10_000
#: ``enabled_ratio`` sent as text: a plain decimal number (only 0 and 1 are then accepted).
_RATIO_TEXT = re.compile(r"^[0-9]+(\.[0-9]*)?$")
#: The signal type names HMA's routes accept (any case, ``signal_type_from_hma``).
_HMA_TYPE_DOC: dict[str, Any] = {"enum": sorted(PYTX_TO_BASTION)}
#: OpenAPI description of HMA's upload body, which the routes read by hand (one file, any field).
_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "exactly one file, under the field photo or video",
                    "properties": {
                        "photo": {"type": "string", "format": "binary"},
                        "video": {"type": "string", "format": "binary"},
                    },
                    "minProperties": 1,
                    "maxProperties": 1,
                    "additionalProperties": False,
                }
            }
        },
    }
}
_FIELDS: dict[str, Any] = {
    "note": {"type": "string", "maxLength": 255},
    "content_id": {"type": "string"},
    "content_uri": {"type": "string"},
}
#: Adding content: a multipart upload, or (with ``url`` in the query) optional JSON fields.
_CONTENT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "exactly one file, under the field photo or video",
                    "properties": {
                        "photo": {"type": "string", "format": "binary"},
                        "video": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "a JSON object"},
                        **_FIELDS,
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "with `url` in the query: metadata for the fetched content",
                    "properties": {"metadata": {"type": "object"}, **_FIELDS},
                }
            },
        },
    }
}


# ---------------------------------------------------------------------------------------------
# naming


def _error(status: int, detail: str) -> Problem:
    """A problem document that also carries HMA's ``message`` field, which HMA clients read."""
    return Problem(status, detail=detail, message=detail)


def hma_signal_name(signal_type: SignalType) -> str:
    return BASTION_TO_PYTX[signal_type]


def signal_type_from_hma(name: str) -> SignalType:
    """Map an HMA/pytx signal type name (``pdq``, ``video_md5``...) to Bastion's type."""
    st = PYTX_TO_BASTION.get(str(name).strip().lower())
    if st is None:
        known = ", ".join(BASTION_TO_PYTX[t] for t in _ORDER)
        raise _error(400, f"No such SignalType '{name}' (known: {known})")
    return st


def hma_bank_name(name: str) -> str:
    """How a Bastion bank is named on the HMA surface."""
    return name.upper()


def bank_key(hma_name: str) -> str:
    """The Bastion name an HMA bank name refers to (names are case-insensitive)."""
    return hma_name.strip().lower()


def _new_bank_key(hma_name: Any) -> str:
    """Validate a name for a new or renamed bank by HMA's rule and Bastion's; return the key."""
    if not isinstance(hma_name, str) or not _HMA_BANK_RE.match(hma_name):
        raise _error(400, f"Bank names must be UPPER_WITH_UNDERSCORE, got {hma_name!r}")
    try:
        return validate_bank_name(hma_name)
    except ValueError as exc:
        raise _error(400, str(exc)) from None


def content_id_of(entry_id: int, external_id: str | None) -> int:
    """The HMA content id an entry belongs to."""
    if external_id:
        found = _MARKER_RE.match(external_id)
        if found:
            return int(found.group(1))
    return entry_id


def _marker(content_id: int) -> str:
    return f"{CONTENT_MARKER}{content_id}"


def _ordered(items: Iterable[tuple[SignalType, str]]) -> list[tuple[SignalType, str]]:
    return sorted(items, key=lambda item: _ORDER.index(item[0]))


# ---------------------------------------------------------------------------------------------
# parameters


def _split(csv: str | None) -> list[str]:
    return [part.strip() for part in (csv or "").split(",") if part.strip()]


def _bank_filter(banks: str | None) -> set[str] | None:
    names = _split(banks)
    return {bank_key(n) for n in names} if names else None


def _type_filter(types: str | None) -> set[SignalType] | None:
    if types is None:
        return None
    wanted = {signal_type_from_hma(name) for name in _split(types)}
    if not wanted:
        raise _error(400, "empty signal type selection")
    return wanted


def _content_type(hint: str | None) -> str | None:
    if hint is None or hint == "":
        return None
    if hint not in CONTENT_TYPES:
        raise _error(400, f"no such content_type: '{hint}' (expected photo or video)")
    return hint


def _flag(value: str | None, default: bool) -> bool:
    """HMA reads boolean query flags as the text ``true`` (any case); anything else is false."""
    return default if value is None else value.strip().lower() == "true"


# ---------------------------------------------------------------------------------------------
# hashing


def _fetch(rt: Runtime, url: str) -> tuple[bytes, str]:
    try:
        fetched = fetch(url, rt.settings.fetch_policy)
    except FetchError as exc:
        raise Problem(exc.status, detail=exc.message, message=exc.message, code=exc.code) from None
    name = urlsplit(fetched.url).path.rsplit("/", 1)[-1] or "<url>"
    return fetched.data, name


def _hash(
    rt: Runtime, data: bytes, name: str, types: set[SignalType] | None
) -> list[tuple[SignalType, str]]:
    """Hash content and give its signals as (type, value), perceptual first.

    As HMA does, a PDQ hash below the quality floor is reported as an empty string: such an
    image is too flat for its hash to mean anything. Callers that store or match drop it.
    """
    return _hash_kind(rt, data, name, types)[1]


def _hash_kind(
    rt: Runtime, data: bytes, name: str, types: set[SignalType] | None
) -> tuple[str, list[tuple[SignalType, str]]]:
    """:func:`_hash`, plus the kind of content (image, video, ...)."""
    result = hash_bytes(data, name=name, options=rt.settings.hash_options)
    if result.error:
        raise _error(400, f"cannot hash the content: {result.error}")
    out: list[tuple[SignalType, str]] = []
    for sig in result.signals:
        if types is not None and sig.type not in types:
            continue
        value = sig.value
        if sig.type is SignalType.PDQ and (sig.quality or 0) < DEFAULT_MIN_QUALITY:
            value = ""
        out.append((sig.type, value))
    return result.kind, _ordered(out)


def _usable(signals: list[tuple[SignalType, str]]) -> list[tuple[SignalType, str]]:
    return [(st, value) for st, value in signals if value]


async def _upload(request: Request, rt: Runtime) -> tuple[str, bytes, str, dict[str, str]]:
    """The one file of a multipart upload: (content type field name, bytes, filename, fields).

    HMA names the file's form field after its content type (``photo`` or ``video``).
    """
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise _error(400, "Missing multipart/form-data file upload")
    limit = rt.settings.max_upload_bytes
    form = await request.form(max_files=8, max_fields=64)
    try:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        if not files:
            raise _error(400, "Missing multipart/form-data file upload")
        if len(files) > 1:
            raise _error(400, "Only one file allowed per request")
        field, upload = files[0]
        if field not in CONTENT_TYPES:
            raise _error(
                400, f"no such content_type: '{field}' (name the file field photo or video)"
            )
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise _error(413, f"Content too large: the limit is {limit} bytes")
        return field, data, upload.filename or "<upload>", fields
    finally:
        await form.close()


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


# ---------------------------------------------------------------------------------------------
# matching


def _query_signal(st: SignalType, value: str) -> Signal:
    """A signal to look up from its HMA text form; 400 naming the problem if it is not valid."""
    entry = NewEntry(signal_type=st, value=value)
    try:
        canonical = normalize_entry(entry).value
    except ValueError as exc:
        raise _error(400, f"invalid signal: {exc}") from None
    if st is SignalType.VPDQ:
        return Signal(st, canonical, frames=parse_frames(canonical))
    return Signal(st, canonical)


def _match(rt: Runtime, signal: Signal, banks: set[str] | None) -> list[Match]:
    """The signal's matches, screened as /v1/lookup screens them: a bank's tighter threshold
    and an allow entry of the same signal apply (docs/banks.md)."""
    with rt.index.read() as matcher:
        found = list(matcher.match([signal], banks=banks))
    if found:
        found = screen(found, DEFAULT_PDQ_THRESHOLD, rt.store.bank_rules()).kept
    return found[:MAX_MATCHES]


def _distance(rt: Runtime, match: Match, signal: Signal, principal: Principal | None) -> str:
    """The distance as HMA prints it: Hamming distance for PDQ, ``"-"`` for exact types, and
    ``"<query%>[<bank video%>]"`` for vPDQ. A PDQ distance is exact when ``principal`` is None
    (what a scan records) or has `export`; else its band's representative value."""
    if match.signal_type is SignalType.PDQ:
        if principal is None:
            return str(match.distance)
        return str(shown_distance(rt, principal, match.distance, DEFAULT_PDQ_THRESHOLD))
    if match.signal_type is SignalType.VPDQ:
        query_pct = match.score or 0.0
        try:
            target = parse_frames(rt.store.get_entry(match.entry_id).value)
        except (StoreError, ValueError):
            return f"{query_pct:.0f}%"
        _, target_pct = video_match_score(signal.frames, target, distance=DEFAULT_PDQ_THRESHOLD)
        return f"{query_pct:.0f}%[{target_pct:.0f}%]"
    return _NO_DISTANCE


def _matches_by_bank(
    rt: Runtime, signal: Signal, matches: list[Match], principal: Principal | None
) -> dict[str, list[Any]]:
    """HMA's ``{BANK: [{bank_content_id, distance}]}``, one row per content, closest first; for
    a key without `export`, distances as bands and rows by band, then content id (the order
    within a band would tell the distances apart)."""
    hidden = principal is not None and not sees_values(principal)
    near = rt.settings.match_near_distance
    by_bank: dict[str, list[tuple[int, int, Match]]] = {}
    seen: set[tuple[str, int]] = set()
    for m in matches:
        cid = content_id_of(m.entry_id, m.external_id)
        if (m.bank, cid) in seen:
            continue
        seen.add((m.bank, cid))
        rank = BANDS.index(band(m.distance, near))
        by_bank.setdefault(hma_bank_name(m.bank), []).append((rank, cid, m))
    out: dict[str, list[Any]] = {}
    for name, rows in by_bank.items():
        if hidden:
            rows.sort(key=lambda r: (r[0], r[1]))
        out[name] = [
            {"bank_content_id": cid, "distance": _distance(rt, m, signal, principal)}
            for _, cid, m in rows
        ]
    return out


def _lookup_query(
    rt: Runtime, request: Request, principal: Principal, query: Signal, banks: set[str] | None
) -> dict[str, list[Any]]:
    """A lookup of a hash the caller chose, answered as :func:`_matches_by_bank`. For a key
    without `export`: a PDQ hash goes through the per-entry watch at the pinned threshold, and
    the lookup is counted for near-duplicate probing (429 past either limit)."""
    if query.type is SignalType.PDQ:
        with rt.index.read() as matcher:
            [found], watched = watched_pdq(
                rt, principal, matcher, [query.value], threshold=DEFAULT_PDQ_THRESHOLD, banks=banks
            )
        if found:
            found = screen(found, DEFAULT_PDQ_THRESHOLD, rt.store.bank_rules()).kept
        matches = found[:MAX_MATCHES]
    else:
        watched = None if sees_values(principal) else rt.watch.observe(principal.name, [])
        matches = [] if watched is not None and watched.refused else _match(rt, query, banks)
    refuse_watch(rt, request, principal, watched, message=True)
    probing = observe_probes(rt, principal, [(query, bool(matches))])
    refuse_probes(rt, request, principal, probing, message=True)
    watch_answered(rt, principal, 1 if matches else 0)
    return _matches_by_bank(rt, query, matches, principal)


_Looked = list[tuple[SignalType, Signal | None, list[Match]]]


def _lookup_signals(
    rt: Runtime, signals: list[tuple[SignalType, str]], banks: set[str] | None
) -> _Looked:
    """Each hashed signal with its matches (none for an unusable, low-quality hash, as the
    matcher would decide anyway)."""
    out: _Looked = []
    for st, value in signals:
        query = _query_signal(st, value) if value else None
        out.append((st, query, _match(rt, query, banks) if query else []))
    return out


def _by_signal(
    rt: Runtime, looked: _Looked, principal: Principal | None
) -> dict[str, dict[str, list[Any]]]:
    """HMA's ``{signal_type: {BANK: [...]}}``; ``principal`` None: exact, as recorded."""
    return {
        hma_signal_name(st): _matches_by_bank(rt, query, ms, principal) if query else {}
        for st, query, ms in looked
    }


# ---------------------------------------------------------------------------------------------
# /h: hashing


@router.get("/h/hash", summary="Hash content from a URL (HMA)", responses=_FETCH)
def hash_url(
    rt: RuntimeDep,
    url: Annotated[str, Query(min_length=1, description="URL of the image or video to hash")],
    content_type: str | None = None,
    types: Annotated[str | None, Query(description="comma-separated signal types")] = None,
    principal: Principal = _hash_key,
) -> dict[str, str]:
    """Fetch a URL and return ``{signal_type: hash}``. Bastion judges content by its bytes, so
    ``content_type`` is checked but does not change which hashes are computed."""
    _content_type(content_type)
    wanted = _type_filter(types)
    data, name = _fetch(rt, url)
    return {hma_signal_name(st): value for st, value in _hash(rt, data, name, wanted)}


@router.post(
    "/h/hash",
    summary="Hash an uploaded file (HMA)",
    openapi_extra=_UPLOAD_DOC,
    responses=_UPLOAD,
)
async def hash_upload(
    request: Request, rt: RuntimeDep, types: str | None = None, principal: Principal = _hash_key
) -> dict[str, str]:
    """Hash one file sent as multipart/form-data under the field ``photo`` or ``video``."""
    wanted = _type_filter(types)
    _, data, name, _ = await _upload(request, rt)
    signals = await run_in_threadpool(_hash, rt, data, name, wanted)
    return {hma_signal_name(st): value for st, value in signals}


# ---------------------------------------------------------------------------------------------
# /m: matching


@router.get("/m/raw_lookup", summary="Look up one hash (HMA)", responses=_BAD)
def raw_lookup(
    request: Request,
    rt: RuntimeDep,
    signal_type: Annotated[str, Query(json_schema_extra=_HMA_TYPE_DOC)],
    signal: Annotated[str, Query(min_length=1)],
    banks: str | None = None,
    include_distance: bool = False,
    principal: Principal = _match_key,
) -> dict[str, list[Any]]:
    """``{"matches": [content ids]}``, or with ``include_distance`` a list of
    ``{bank_content_id, distance}``. Only enabled entries of enabled banks are in the index.
    Without `export`, a PDQ distance is its band's number and probing is refused (docs/hma.md)."""
    query = _query_signal(signal_type_from_hma(signal_type), signal)
    rows: list[dict[str, Any]] = []
    for bank_rows in _lookup_query(rt, request, principal, query, _bank_filter(banks)).values():
        rows.extend(bank_rows)
    if include_distance:
        return {"matches": rows}
    ids = list(dict.fromkeys(row["bank_content_id"] for row in rows))
    return {"matches": ids}


@router.get("/m/lookup", summary="Look up content by URL or hash (HMA)", responses=_FETCH)
def lookup_get(
    request: Request,
    rt: RuntimeDep,
    url: str | None = None,
    content_type: str | None = None,
    types: str | None = None,
    signal: str | None = None,
    signal_type: str | None = None,
    banks: str | None = None,
    seed: str | None = None,
    bypass_coinflip: bool = False,
    principal: Principal = _match_key,
) -> dict[str, Any]:
    """With ``url``: ``{signal_type: {BANK: [matches]}}`` (just ``{BANK: [...]}`` if
    ``signal_type`` picks one). With ``signal`` and ``signal_type``: ``{BANK: [matches]}``.
    ``seed`` and ``bypass_coinflip`` are accepted and ignored: Bastion banks never sample."""
    wanted_banks = _bank_filter(banks)
    if url:
        _content_type(content_type)
        data, name = _fetch(rt, url)
        looked = _lookup_signals(rt, _hash(rt, data, name, _type_filter(types)), wanted_banks)
        result = _by_signal(rt, looked, principal)
        if signal_type is not None:
            return result.get(hma_signal_name(signal_type_from_hma(signal_type)), {})
        return result
    if not signal or not signal_type:
        raise _error(400, "Either url or both signal and signal_type are required")
    query = _query_signal(signal_type_from_hma(signal_type), signal)
    return _lookup_query(rt, request, principal, query, wanted_banks)


@router.post(
    "/m/lookup",
    summary="Look up an uploaded file (HMA)",
    openapi_extra=_UPLOAD_DOC,
    responses=problem_responses(400, 413, 422, 503),
)
async def lookup_post(
    request: Request,
    rt: RuntimeDep,
    banks: str | None = None,
    types: str | None = None,
    seed: str | None = None,
    bypass_coinflip: bool = False,
    principal: Principal = _match_key,
) -> dict[str, Any]:
    """Hash one uploaded file (field ``photo`` or ``video``) and look up each of its signals."""
    wanted = _type_filter(types)
    _, data, name, _ = await _upload(request, rt)

    def work() -> dict[str, Any]:
        kind, signals = _hash_kind(rt, data, name, wanted)
        looked = _lookup_signals(rt, signals, _bank_filter(banks))
        _record_scan(rt, principal, kind, signals, _by_signal(rt, looked, None))
        return _by_signal(rt, looked, principal)

    return await run_in_threadpool(work)


def _record_scan(
    rt: Runtime,
    principal: Principal,
    kind: str,
    signals: list[tuple[SignalType, str]],
    result: dict[str, dict[str, list[Any]]],
) -> None:
    """Store a matching upload as /v1/scan does, before answering: a match is never reported
    that has not been recorded."""
    matches = [
        {"signal_type": sig_name, "bank": bank, **row}
        for sig_name, by_bank in result.items()
        for bank, rows in by_bank.items()
        for row in rows
    ]
    if not matches:
        return
    try:
        rt.store.record_scan(
            actor=f"key:{principal.name}",
            content_kind=kind,
            context={},
            signals=[{"type": str(st), "value": value} for st, value in signals if value],
            matches=matches,
            verdict="review",
        )
    except StoreError as exc:
        raise Problem(
            503, "Store unavailable", detail="the matching scan could not be recorded"
        ) from exc


@router.post(
    "/m/compare",
    summary="Compare pairs of hashes (HMA)",
    responses=problem_responses(400, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "propertyNames": _HMA_TYPE_DOC,
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": "string"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    }
                }
            },
        }
    },
)
def compare(
    request: Request,
    body: Annotated[dict[str, Any], Body()],
    principal: Principal = _match_key,
) -> dict[str, Any]:
    """``{type: [hash_a, hash_b]}`` → ``{type: [is_match, {"distance": d}]}``.

    PDQ matches at distance <= 31; vPDQ gives ``query_match_percent`` and
    ``compared_match_percent`` and matches when the first is at least 80; exact types give an
    empty object, as HMA does.
    """
    out: dict[str, Any] = {}
    for name, pair in body.items():
        st = signal_type_from_hma(name)
        if not isinstance(pair, list):
            raise _error(400, f"Comparison hashes for {name} was not a list")
        if len(pair) != 2:
            raise _error(400, "Comparison hash list length must be exactly 2")
        if not all(isinstance(h, str) for h in pair):
            raise _error(400, f"Invalid {name} hash: hashes must be strings")
        left, right = (_query_signal(st, h) for h in pair)
        if st is SignalType.VPDQ and max(len(left.frames), len(right.frames)) > MAX_COMPARE_FRAMES:
            raise _error(
                413, f"vPDQ hashes to compare may have at most {MAX_COMPARE_FRAMES} frames each"
            )
        if st is SignalType.PDQ:
            dist = hamming(left.value, right.value)
            out[name] = [dist <= DEFAULT_PDQ_THRESHOLD, {"distance": dist}]
        elif st is SignalType.VPDQ:
            q_pct, c_pct = video_match_score(
                left.frames, right.frames, distance=DEFAULT_PDQ_THRESHOLD
            )
            out[name] = [
                q_pct >= DEFAULT_VIDEO_MATCH_PERCENT,
                {"query_match_percent": q_pct, "compared_match_percent": c_pct},
            ]
        else:
            out[name] = [left.value == right.value, {}]
    return out


def _index_sizes(rt: Runtime) -> dict[SignalType, int]:
    with rt.index.read() as m:
        sizes = {
            SignalType.PDQ: len(m.pdq),
            SignalType.MD5: len(m.exact[SignalType.MD5]),
            SignalType.SHA256: len(m.exact[SignalType.SHA256]),
            SignalType.URL: len(m.urls),
            SignalType.TEXT: len(m.text),
        }
        sizes[SignalType.VPDQ] = len(m) - sum(sizes.values())
    return sizes


@router.get("/m/index/status", summary="Index status (HMA)", responses=_BAD)
def index_status(
    rt: RuntimeDep,
    signal_type: Annotated[str | None, Query(json_schema_extra=_HMA_TYPE_DOC)] = None,
    principal: Principal = _match_key,
) -> dict[str, dict[str, Any]]:
    """``{type: {present, built_to, size}}``. ``built_to`` is when the live index last caught up
    with the store (Unix seconds; -1 before the first load)."""
    types = list(_ORDER) if signal_type is None else [signal_type_from_hma(signal_type)]
    sizes = _index_sizes(rt)
    built = int(rt.index.refreshed_at) if rt.index.loaded and rt.index.refreshed_at else -1
    return {
        hma_signal_name(st): {"present": rt.index.loaded, "built_to": built, "size": sizes[st]}
        for st in types
    }


# ---------------------------------------------------------------------------------------------
# /status


@router.get(
    "/status",
    response_class=PlainTextResponse,
    summary="Health check (HMA)",
    responses={
        503: {
            "description": "INDEX-NOT-LOADED or INDEX-STALE",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def status(rt: RuntimeDep, principal: Principal = _any_key) -> PlainTextResponse:
    """``I-AM-ALIVE`` (200) when the index is loaded and current, else ``INDEX-NOT-LOADED`` or
    ``INDEX-STALE`` (503), as HMA answers."""
    if not rt.index.loaded:
        return PlainTextResponse("INDEX-NOT-LOADED", status_code=503)
    if not rt.index.is_current(max(5.0, 3 * rt.settings.index_poll_seconds)):
        return PlainTextResponse("INDEX-STALE", status_code=503)
    return PlainTextResponse("I-AM-ALIVE")


@router.get("/status/live", response_class=PlainTextResponse, summary="Liveness (HMA)")
def status_live(principal: Principal = _any_key) -> PlainTextResponse:
    return PlainTextResponse("I-AM-ALIVE")


# ---------------------------------------------------------------------------------------------
# /c: banks


def _bank_json(bank: Bank) -> dict[str, Any]:
    return {
        "name": hma_bank_name(bank.name),
        "matching_enabled_ratio": 1.0 if bank.enabled else 0.0,
    }


def _get_bank(rt: Runtime, name: str) -> Bank:
    """The bank, or 404; any other store failure is left to the 503 handler."""
    try:
        return rt.store.get_bank(bank_key(name))
    except BankNotFound:
        raise _error(404, f"bank '{name}' not found") from None
    except InvalidInput as exc:
        raise _error(400, str(exc)) from None


def _enabled_from(body: dict[str, Any]) -> bool | None:
    """HMA's ``enabled_ratio`` (0.0-1.0, possibly sent as text) or ``enabled``, as on/off.

    Bastion banks are on or off: a fractional ratio (HMA's per-request coin flip) is refused
    rather than rounded, because either rounding would match differently than asked.
    """
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise _error(400, "enabled must be true or false")  # even beside enabled_ratio
    ratio = body.get("enabled_ratio")
    if ratio is not None:
        # A number, or text that spells one (as the document's pattern says); never a boolean.
        if isinstance(ratio, bool) or (isinstance(ratio, str) and not _RATIO_TEXT.match(ratio)):
            raise _error(400, f"Invalid float: '{ratio}'")
        try:
            value = float(ratio)
        except (TypeError, ValueError):
            raise _error(400, f"Invalid float: '{ratio}'") from None
        if value not in (0.0, 1.0):
            raise _error(
                400,
                f"enabled_ratio {value} is not supported: Bastion banks are enabled (1) or "
                "disabled (0) and never sample matches",
            )
        return value == 1.0
    return enabled


@router.get("/c/banks", summary="List banks (HMA)")
def banks_index(rt: RuntimeDep, principal: Principal = _curate_key) -> list[dict[str, Any]]:
    return [_bank_json(b) for b in rt.store.list_banks()]


@router.post(
    "/c/banks",
    status_code=201,
    summary="Create a bank (HMA)",
    responses=problem_responses(400, 403, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            # HMA's rule and Bastion's (a letter first, at most 64).
                            "name": {"type": "string", "pattern": r"^[A-Z][A-Z0-9_]{0,63}$"},
                            "enabled": {"type": ["boolean", "null"]},
                            "enabled_ratio": {
                                "anyOf": [
                                    {"enum": [0, 1]},
                                    {"type": "string", "pattern": r"^(0+(\.0*)?|0*1(\.0*)?)$"},
                                    {"type": "null"},
                                ],
                                "description": "HMA's ratio: 0 or 1 (Bastion never samples)",
                            },
                        },
                    }
                }
            },
        }
    },
)
def bank_create(
    request: Request,
    rt: RuntimeDep,
    body: Annotated[dict[str, Any], Body()],
    principal: Principal = _curate_key,
) -> dict[str, Any]:
    key = _new_bank_key(body.get("name"))
    enabled = _enabled_from(body)
    try:
        bank = rt.store.create_bank(key, enabled=True if enabled is None else enabled)
    except BankExists:
        raise _error(403, "Bank already exists") from None
    rt.audit(request, principal, "hma.bank.create", f"bank:{bank.name}", enabled=bank.enabled)
    return _bank_json(bank)


@router.get("/c/bank/{bank_name}", summary="Get a bank (HMA)", responses=_BANK)
def bank_show(rt: RuntimeDep, bank_name: str, principal: Principal = _curate_key) -> dict[str, Any]:
    return _bank_json(_get_bank(rt, bank_name))


@router.put(
    "/c/bank/{bank_name}",
    summary="Update or rename a bank (HMA)",
    responses=problem_responses(400, 403, 404, 422),
)
def bank_update(
    request: Request,
    rt: RuntimeDep,
    bank_name: str,
    body: Annotated[dict[str, Any], Body()],
    principal: Principal = _curate_key,
) -> dict[str, Any]:
    bank = _get_bank(rt, bank_name)
    fields: dict[str, Any] = {}
    if body.get("name") is not None:
        fields["name"] = _new_bank_key(body["name"])
    enabled = _enabled_from(body)
    if enabled is not None:
        fields["enabled"] = enabled
    if fields:
        try:
            bank = rt.store.update_bank(bank.name, **fields)
        except BankExists:
            raise _error(403, "Bank name already exists") from None
        rt.index.refresh()
        rt.audit(request, principal, "hma.bank.update", f"bank:{bank_key(bank_name)}", **fields)
    return _bank_json(bank)


@router.delete("/c/bank/{bank_name}", summary="Delete a bank and its content (HMA)", responses=_BAD)
def bank_delete(
    request: Request, rt: RuntimeDep, bank_name: str, principal: Principal = _curate_key
) -> dict[str, str]:
    """As in HMA, deleting a bank that does not exist succeeds."""
    try:
        rt.store.delete_bank(bank_key(bank_name))
    except (BankNotFound, InvalidInput):  # no such bank: nothing to delete
        return {"message": "Done"}
    rt.index.refresh()
    rt.audit(request, principal, "hma.bank.delete", f"bank:{bank_key(bank_name)}")
    return {"message": "Done"}


# ---------------------------------------------------------------------------------------------
# /c: content


def _note(value: Any) -> str | None:
    if not value:
        return None
    if not isinstance(value, str):
        raise _error(400, "note should be a string")
    if len(value) > _MAX_NOTE:
        raise _error(400, f"note must be at most {_MAX_NOTE} characters")
    return value


def _metadata(raw: Any) -> dict[str, Any] | None:
    """HMA's content metadata: an object with optional ``content_id``, ``content_uri``, ``json``."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise _error(400, "metadata form field must be valid JSON") from None
    if not isinstance(raw, dict):
        raise _error(400, "metadata should be a json object")
    raw = {k: v for k, v in raw.items() if k != "collab"}  # provenance is not the caller's
    unknown = sorted(set(raw) - set(_METADATA_KEYS))
    if unknown:
        raise _error(
            400,
            f"Invalid metadata: unknown field(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(_METADATA_KEYS)})",
        )
    for key in ("content_id", "content_uri"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise _error(400, f"Invalid metadata: {key} must be a string")
    if raw.get("json") is not None and not isinstance(raw["json"], dict):
        raise _error(400, "Invalid metadata: json must be an object")
    return {k: v for k, v in raw.items() if v is not None} or None


def _content_metadata(
    raw: Any, content_id: str | None, content_uri: str | None
) -> dict[str, Any] | None:
    """Metadata from HMA's ``metadata`` object, plus ``content_id``/``content_uri`` given as
    separate fields (as ROOST Coop sends them), the object winning where both are given."""
    meta = _metadata(raw) or {}
    for key, value in (("content_id", content_id), ("content_uri", content_uri)):
        if value and key not in meta:
            meta[key] = value
    return meta or None


def _add_content(
    rt: Runtime,
    request: Request,
    principal: Principal,
    bank: Bank,
    signals: list[tuple[SignalType, str]],
    metadata: dict[str, Any] | None,
    note: str | None,
) -> dict[str, Any]:
    """Store signals as one content; returns HMA's ``{"id", "signals"}``.

    The first signal becomes the head entry and its id the content id; the rest are stored with
    the head's marker as external id. A signal already in the bank is not stored twice: if the
    head is, the new signals join the content it already belongs to.
    """
    if not signals:
        raise _error(400, "No signals given")
    extra: dict[str, Any] = {}
    if metadata:
        extra["metadata"] = metadata
    if note:
        extra["note"] = note
    entries: list[NewEntry] = []
    for st, value in _ordered(signals):
        try:
            entries.append(
                normalize_entry(
                    NewEntry(signal_type=st, value=value, metadata={"hma": extra} if extra else {})
                )
            )
        except ValueError as exc:
            raise _error(400, f"Invalid {hma_signal_name(st)} signal: {exc}") from None
    head, rest = entries[0], entries[1:]
    report = rt.store.add_entries(bank.name, [head])
    if not report.ok:
        raise _error(400, "; ".join(report.errors))
    stored = rt.store.find_entries(bank.name, value=head.value, signal_type=head.signal_type)
    stored = [e for e in stored if e.url_match == head.url_match] or stored
    if not stored:  # removed between our insert and read: a concurrent delete won
        raise _error(409, "the content was removed while it was being added")
    cid = content_id_of(stored[0].id, stored[0].external_id)
    if rest:
        report = rt.store.add_entries(
            bank.name, [replace(e, external_id=_marker(cid)) for e in rest]
        )
        if not report.ok:
            raise _error(400, "; ".join(report.errors))
    rt.index.refresh()
    out = {hma_signal_name(e.signal_type): e.value for e in entries}
    rt.audit(
        request,
        principal,
        "hma.content.add",
        f"bank:{bank.name}/content:{cid}",
        signal_types=sorted(out),
    )
    return {"id": cid, "signals": out}


_MAX_JSON_BODY = 1 << 20


async def _json_body(request: Request) -> dict[str, Any]:
    if "json" not in request.headers.get("content-type", "").lower():
        return {}
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_JSON_BODY:
            raise _error(413, f"the JSON body is over the limit of {_MAX_JSON_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise _error(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _error(400, "the request body must be a JSON object")
    return body


@router.post(
    "/c/bank/{bank_name}/content",
    summary="Add content to a bank (HMA)",
    openapi_extra=_CONTENT_DOC,
    responses=problem_responses(400, 404, 409, 413, 422, 502, 504),
)
async def bank_add_content(
    request: Request,
    rt: RuntimeDep,
    bank_name: str,
    url: str | None = None,
    content_type: str | None = None,
    types: str | None = None,
    metadata: str | None = None,
    note: str | None = None,
    content_id: str | None = None,
    content_uri: str | None = None,
    principal: Principal = _curate_key,
) -> dict[str, Any]:
    """Hash content given by ``url`` (query) or a multipart upload (field ``photo`` or
    ``video``) and bank its signals as one content. Metadata and note come from a JSON body,
    form fields, or query parameters."""
    bank = await run_in_threadpool(_get_bank, rt, bank_name)
    wanted = _type_filter(types)
    _content_type(content_type)
    data, name = b"", ""
    if url:
        fields = await _json_body(request)
    elif _is_multipart(request):
        _, data, name, fields = await _upload(request, rt)
    else:
        raise _error(400, "Neither `url` nor multipart file upload was received")
    raw_meta = fields.get("metadata", metadata)
    meta = _content_metadata(
        raw_meta,
        fields.get("content_id", content_id),
        fields.get("content_uri", content_uri),
    )
    note_text = _note(fields.get("note", note))

    def work() -> dict[str, Any]:
        if url:
            content, fname = _fetch(rt, url)
        else:
            content, fname = data, name
        signals = _usable(_hash(rt, content, fname, wanted))
        return _add_content(rt, request, principal, bank, signals, meta, note_text)

    return await run_in_threadpool(work)


@router.post(
    "/c/bank/{bank_name}/signal",
    summary="Add hashes to a bank as one content (HMA)",
    responses=problem_responses(400, 404, 409, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "{signal_type: hash, ...}, and an optional note",
                        "propertyNames": {"enum": [*sorted(PYTX_TO_BASTION), "note"]},
                        "properties": {"note": {"type": "string", "maxLength": 255}},
                        "additionalProperties": {"type": "string", "minLength": 1},
                        "minProperties": 1,
                    }
                }
            },
        }
    },
)
def bank_add_signals(
    request: Request,
    rt: RuntimeDep,
    bank_name: str,
    body: Annotated[dict[str, Any], Body()],
    principal: Principal = _curate_key,
) -> dict[str, Any]:
    """Body ``{signal_type: hash, ..., "note": optional}``; returns ``{"id", "signals"}``."""
    bank = _get_bank(rt, bank_name)
    data = dict(body)
    note_text = _note(data.pop("note", None))
    signals: dict[SignalType, str] = {}
    for name, value in data.items():
        st = signal_type_from_hma(name)
        if st in signals:
            raise _error(400, f"signal type {hma_signal_name(st)} given twice")
        if not isinstance(value, str):
            raise _error(400, f"Invalid {name} signal: expected a string")
        signals[st] = value
    return _add_content(rt, request, principal, bank, list(signals.items()), None, note_text)


def _content_entries(rt: Runtime, bank: Bank, content_id: int) -> list[BankEntry]:
    """Every entry of one content: the head entry (if still there) and those marked with it."""
    entries = list(rt.store.find_entries(bank.name, external_id=_marker(content_id)))
    try:
        head = rt.store.get_entry(content_id)
    except EntryNotFound:
        head = None
    if (
        head is not None
        and head.bank == bank.name
        and content_id_of(head.id, head.external_id) == content_id
    ):
        entries.append(head)
    return sorted(entries, key=lambda e: e.id)


def _require_content(rt: Runtime, bank: Bank, content_id: int) -> list[BankEntry]:
    entries = _content_entries(rt, bank, content_id)
    if not entries:
        raise _error(404, f"content '{content_id}' not found")
    return entries


def _hma_extra(entries: list[BankEntry]) -> dict[str, Any]:
    for e in entries:
        extra = e.metadata.get("hma") if isinstance(e.metadata, dict) else None
        if isinstance(extra, dict):
            return extra
    return {}


def _disable_until(entries: list[BankEntry]) -> int:
    return _HMA_ENABLED if any(e.enabled for e in entries) else _HMA_DISABLED


@router.get(
    "/c/bank/{bank_name}/content/{content_id}",
    summary="Get content (HMA)",
    responses=problem_responses(400, 403, 404, 422),
)
def bank_get_content(
    request: Request,
    rt: RuntimeDep,
    bank_name: str,
    content_id: IdPath,
    include_signals: str | None = None,
    include_metadata: str | None = None,
    principal: Principal = _curate_key,
) -> dict[str, Any]:
    """``include_signals=true`` returns the stored hashes: that needs the `export` scope as well
    (403 without it), and each such read is audited."""
    want_signals = _flag(include_signals, False)
    if want_signals and not sees_values(principal):
        raise _error(403, "this API key lacks the 'export' scope, which include_signals needs")
    bank = _get_bank(rt, bank_name)
    entries = _require_content(rt, bank, content_id)
    extra = _hma_extra(entries)
    out: dict[str, Any] = {
        "id": content_id,
        "disable_until_ts": _disable_until(entries),
        "original_media_uri": None,
        "bank": _bank_json(bank),
    }
    if want_signals:
        signals: dict[str, str] = {}
        shown: list[int] = []
        for e in entries:
            if hma_signal_name(e.signal_type) not in signals:
                signals[hma_signal_name(e.signal_type)] = e.value
                shown.append(e.id)
        out["signals"] = signals
        audit_values(
            rt,
            request,
            principal,
            "hma.content.read",
            f"bank:{bank.name}/content:{content_id}",
            shown,
            bank=bank.name,
            signal_types=sorted(signals),
        )
    if _flag(include_metadata, True) and extra.get("metadata"):
        out["metadata"] = extra["metadata"]
    if extra.get("note"):
        out["note"] = extra["note"]
    return out


def _disable_value(raw: Any) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise _error(400, f"Invalid int: '{raw}'") from None
    if value < 0:
        raise _error(400, "disable_until_ts must be a non-negative integer")
    if value > time.time():
        raise _error(
            400,
            "disable_until_ts in the future is not supported: Bastion does not re-enable "
            "content on a timer; send 0 to disable or 1 to enable",
        )
    return value


@router.put(
    "/c/bank/{bank_name}/content/{content_id}",
    summary="Enable or disable content (HMA)",
    responses=problem_responses(400, 404, 422, 501),
)
def bank_update_content(
    request: Request,
    rt: RuntimeDep,
    bank_name: str,
    content_id: IdPath,
    body: Annotated[dict[str, Any], Body()],
    principal: Principal = _curate_key,
) -> dict[str, Any]:
    """``{"disable_until_ts": 0}`` disables the content, ``1`` (or any past time) enables it."""
    bank = _get_bank(rt, bank_name)
    entries = _require_content(rt, bank, content_id)
    if "note" in body and _note(body["note"]) != _hma_extra(entries).get("note"):
        raise _error(501, "changing the note of banked content is not supported by Bastion")
    if "disable_until_ts" in body:
        enable = _disable_value(body["disable_until_ts"]) != _HMA_DISABLED
        for e in entries:
            if e.enabled == enable:
                continue
            if enable:
                rt.store.enable_entry(bank.name, e.id)
            else:
                rt.store.disable_entry(bank.name, e.id, "disabled through the HMA API")
        rt.index.refresh()
        rt.audit(
            request,
            principal,
            "hma.content.enable" if enable else "hma.content.disable",
            f"bank:{bank.name}/content:{content_id}",
        )
        entries = _require_content(rt, bank, content_id)
    extra = _hma_extra(entries)
    return {
        "id": content_id,
        "disable_until_ts": _disable_until(entries),
        "collab_metadata": {},
        "original_media_uri": None,
        "bank": _bank_json(bank),
        "user_metadata": extra.get("metadata"),
        "note": extra.get("note"),
    }


@router.delete(
    "/c/bank/{bank_name}/content/{content_id}", summary="Remove content (HMA)", responses=_BANK
)
def bank_delete_content(
    request: Request,
    rt: RuntimeDep,
    bank_name: str,
    content_id: IdPath,
    principal: Principal = _curate_key,
) -> dict[str, int]:
    """``{"deleted": 1}``, or ``{"deleted": 0}`` when there was no such content (as HMA)."""
    bank = _get_bank(rt, bank_name)
    entries = _content_entries(rt, bank, content_id)
    removed = 0
    for e in entries:
        try:
            removed += len(rt.store.remove_entry(bank.name, e.id))
        except EntryNotFound:
            continue
    if removed:
        rt.index.refresh()
        rt.audit(
            request,
            principal,
            "hma.content.delete",
            f"bank:{bank.name}/content:{content_id}",
            entries=removed,
        )
    return {"deleted": 1 if removed else 0}

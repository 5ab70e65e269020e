"""Bastion API v1: scan content, look up precomputed signals, curate banks.

Every route needs an API key with the right scope; curate, export and admin calls are audited.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import tempfile
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from bastion import pipeline
from bastion.api.auth import require
from bastion.api.disclosure import (
    audit_values,
    observe_probes,
    pinned_threshold,
    refuse_probes,
    refuse_watch,
    sees_values,
    shown_matches,
    shown_reason,
    watch_answered,
    watched_pdq,
)
from bastion.api.openapi import BANK_NAME, HTTP_URL, NO_NUL, Label, WholeInt, whole_int
from bastion.api.problems import (
    AUTH_RESPONSES,
    BodyTooLarge,
    Problem,
    problem_for,
    problem_responses,
)
from bastion.banks import Bank, BankEntry, BankFormat, NewEntry, normalize_entry
from bastion.banks.errors import ImportAborted
from bastion.banks.hygiene import BankRules, screen, search_threshold
from bastion.banks.keywords import screen_text
from bastion.banks.model import (
    MAX_BANK_THRESHOLD,
    MAX_EXPECTED_RATE,
    ImportReport,
    validate_value,
)
from bastion.fetch import FetchError, fetch
from bastion.http_auth import Principal
from bastion.identity.model import MAX_IDENTIFIER, Identifier, IdentifierError
from bastion.identity.model import digest as identity_digest
from bastion.identity.model import normalize as normalize_identifier
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD, Match
from bastion.index.probing import ProbeVerdict, WatchVerdict, band
from bastion.runtime import Runtime, RuntimeDep, runtime
from bastion.signals import FileSignals, hash_bytes
from bastion.signals.base import DEFAULT_MIN_QUALITY, Signal, SignalType
from bastion.store import StoreError
from bastion.vocab import AgeBand

router = APIRouter(prefix="/v1", responses=AUTH_RESPONSES)
log = logging.getLogger("bastion.api")

MAX_LOOKUP = 1000
#: Identifiers one account scan takes.
MAX_IDENTIFIERS = 100
#: Highest Hamming threshold a caller may ask for: PDQ practice is 31, sometimes up to ~52-63;
#: beyond that a hash matches a large share of any bank.
MAX_THRESHOLD = 64
#: Matches returned per signal (closest first); a result that was cut says ``truncated``.
MAX_MATCHES = 100
#: Lookups cheaper than this run on the event loop; heavier ones in the thread pool.
_LIGHT_SIGNALS = 32
MAX_ENTRIES_PER_CALL = 10_000
#: Errors of the routes that name a bank (and maybe an entry) in the path.
_STORE = problem_responses(503)
_BANK = problem_responses(404, 422, 503)
#: ... and that take a JSON body, which may not even parse (400).
_BANK_BODY = problem_responses(400, 404, 422, 503)

HashKey = Annotated[Principal, Depends(require("hash"))]
MatchKey = Annotated[Principal, Depends(require("match"))]
CurateKey = Annotated[Principal, Depends(require("curate"))]
ExportKey = Annotated[Principal, Depends(require("export"))]


# -- models -----------------------------------------------------------------------------------
#: A platform's id for something: stored with a matching scan, so no NUL (PostgreSQL refuses it).
PlatformId = Annotated[str, Field(max_length=512, pattern=r"^[^\x00]*$")]


class Context(BaseModel):
    """The platform's ids for the content, so a match can be traced back and acted on."""

    model_config = ConfigDict(extra="forbid")
    content_id: PlatformId | None = None
    uploader_id: PlatformId | None = None
    conversation_id: PlatformId | None = None
    age_band: AgeBand | None = None
    source: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_.-]*$",
        description="Where the content came from on the platform (e.g. upload, message, profile); "
        "policy rules can test it.",
    )


class ScanUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., min_length=1, max_length=8192, pattern=HTTP_URL)
    context: Context = Field(default_factory=Context)
    threshold: WholeInt = Field(DEFAULT_PDQ_THRESHOLD, ge=0, le=MAX_THRESHOLD)
    dihedral: StrictBool = False


#: Where a scanned text was written on the platform (policy sees it as the scan's format).
TextKind = Literal["post", "comment", "message", "bio", "username", "search_query", "other"]
#: Longest text one scan takes (characters); JSON bodies for text may be up to 1 MiB.
MAX_SCAN_TEXT = 200_000
_TEXT_BODY = 1024 * 1024
#: Texts up to this long are matched on the event loop (a short post takes microseconds).
_LIGHT_TEXT = 2_000


class ScanText(BaseModel):
    """Text to match against keyword entries. It is never stored: a scan that matched keeps
    the matches, their spans (offsets into ``text``) and the SHA-256 of the text's UTF-8."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=MAX_SCAN_TEXT)
    kind: TextKind = Field("post", description="Where the text was written on the platform.")
    context: Context = Field(default_factory=Context)


class IdentifierIn(BaseModel):
    """One account identifier. It is hashed under every identity group's key as it arrives and
    never stored: the scan record keeps the keyed hashes (docs/identity-signals.md)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["email", "username", "phone", "ip"]
    value: str = Field(..., min_length=1, max_length=MAX_IDENTIFIER)
    platform: str | None = Field(
        None, max_length=64, description="Required for a username: where it is used."
    )
    region: str | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="For a national phone number: the country it was written in (GB).",
    )


class ScanIdentifiers(BaseModel):
    """An account's identifiers, matched against the identity banks (leads, not proof)."""

    model_config = ConfigDict(extra="forbid")
    identifiers: list[IdentifierIn] = Field(..., min_length=1, max_length=MAX_IDENTIFIERS)
    context: Context = Field(default_factory=Context)


class SignalOut(BaseModel):
    type: SignalType
    value: str
    quality: int | None = None


class MatchOut(BaseModel):
    bank: str
    entry: int
    signal_type: SignalType
    distance: int = Field(
        description="Hamming distance (PDQ; for vPDQ the closest frame's). A key without the "
        "`export` scope gets the band's representative value instead: 0, `match_near_distance` "
        "or the threshold."
    )
    band: Literal["exact", "near", "far"] = Field(
        description="exact (0), near (up to `match_near_distance`) or far (up to the threshold)."
    )
    external_id: str | None = None
    labels: list[str] = []
    score: float | None = None
    variant: str | None = None
    url_match: str | None = None
    spans: list[list[int]] | None = Field(
        None,
        description="Keyword matches: where in the text (character offsets into the text as "
        "sent, end exclusive), the first ten.",
    )
    normalisations: list[str] | None = Field(
        None,
        description="Keyword matches: the normalisation steps the match took (nfkc, case, marks, "
        "invisible, confusables, leetspeak, separators, repeats).",
    )
    occurrences: int | None = Field(None, description="Keyword matches: how many in the text.")
    bank_version: int | None = Field(
        None, description="The bank's version when it matched: the list as the decision saw it."
    )
    quarantined: bool | None = Field(
        None,
        description="The entry matched more than its bank's expected rate an hour: its matches "
        "go to review and act on nothing by themselves (docs/banks.md).",
    )


class Verdict(BaseModel):
    """What the active policy decided; anything but ``allow`` opened (or joined) a case."""

    decision: Literal["allow", "review", "block"]
    reason: str
    rule: str | None = Field(None, description="The policy rule that decided, if any.")
    priority: Literal["critical", "high", "normal", "low"] | None = None
    case_id: int | None = Field(None, description="The case the content was queued in.")


class ScanResponse(BaseModel):
    scan_id: int | None = Field(None, description="Set when the scan matched and was recorded.")
    kind: str
    format: str | None = None
    size: int
    signals: list[SignalOut]
    matches: list[MatchOut]
    verdict: Verdict
    warnings: list[str] = []
    truncated: bool = Field(False, description=f"More than {MAX_MATCHES} matches; closest kept.")


class SignalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(..., max_length=32)
    value: str = Field(..., max_length=1_500_000)


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signals: list[SignalIn] = Field(..., min_length=1, max_length=MAX_LOOKUP)
    threshold: WholeInt = Field(DEFAULT_PDQ_THRESHOLD, ge=0, le=MAX_THRESHOLD)
    banks: list[str] | None = None


class LookupResult(BaseModel):
    type: str
    value: str
    matches: list[MatchOut]
    error: str | None = None
    truncated: bool = Field(False, description=f"More than {MAX_MATCHES} matches; closest kept.")


class LookupResponse(BaseModel):
    results: list[LookupResult]
    threshold: int = Field(
        description="The PDQ threshold the lookup ran at: the requested one for a key with "
        "`export`, else the server's `match_threshold` (the request's is ignored)."
    )


#: ``block`` lists what to find; ``allow`` lists known benign items (docs/banks.md).
BankKind = Literal["block", "allow"]
ThresholdType = Literal["pdq", "vpdq"]
_THRESHOLDS = (
    "Largest distance that counts as a match of this bank's entries, per signal type; it "
    "replaces the scan's threshold for this bank."
)
_RATE = (
    "Matches per entry and hour past which an entry is quarantined from automatic actions "
    "(null: no flood limit)."
)


class BankIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64, pattern=BANK_NAME)
    description: str = Field("", max_length=10_000, pattern=NO_NUL)
    labels: list[Label] = Field(default_factory=list, max_length=64)
    source: str = Field("", max_length=255, pattern=NO_NUL)
    is_demo: StrictBool = False
    enabled: StrictBool = True
    kind: BankKind = "block"
    thresholds: dict[ThresholdType, whole_int(0, MAX_BANK_THRESHOLD)] = Field(  # type: ignore[valid-type]
        default_factory=dict, description=_THRESHOLDS
    )
    expected_rate: whole_int(1, MAX_EXPECTED_RATE) | None = Field(  # type: ignore[valid-type]
        None, description=_RATE
    )


class BankPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=10_000, pattern=NO_NUL)
    labels: list[Label] | None = Field(None, max_length=64)
    source: str | None = Field(None, max_length=255, pattern=NO_NUL)
    enabled: StrictBool | None = None
    kind: BankKind | None = None
    thresholds: dict[ThresholdType, whole_int(0, MAX_BANK_THRESHOLD)] | None = Field(  # type: ignore[valid-type]
        None, description=_THRESHOLDS
    )
    expected_rate: whole_int(1, MAX_EXPECTED_RATE) | None = Field(  # type: ignore[valid-type]
        None, description=_RATE
    )


class BankOut(BaseModel):
    name: str
    description: str
    labels: list[str]
    source: str
    enabled: bool
    is_demo: bool
    version: int
    entries: int | None
    created_at: datetime
    updated_at: datetime
    kind: BankKind = "block"
    thresholds: dict[str, int] = {}
    expected_rate: int | None = None


def _iso_text(value: Any) -> Any:
    """A time in JSON is ISO 8601 text (as the document says), never a bare number."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("added_at must be an ISO 8601 date-time string")
    return value


class EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    signal_type: str = Field(..., max_length=32)
    value: str = Field(..., max_length=1_500_000)
    quality: whole_int(0, 100) | None = None  # type: ignore[valid-type]
    url_match: Literal["url", "prefix", "domain"] | None = None
    external_id: str | None = Field(None, max_length=512)
    source: str = Field("", max_length=1000)
    list_name: str = Field("", max_length=1000, alias="list")
    added_at: Annotated[datetime, BeforeValidator(_iso_text)] | None = None
    labels: list[str] = Field(default_factory=list, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)


class EntriesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[EntryIn] = Field(..., min_length=1, max_length=MAX_ENTRIES_PER_CALL)


class EntryOut(BaseModel):
    id: int
    bank: str
    signal_type: SignalType
    value: str | None = Field(
        description="The stored hash or URL: null unless the key has the `export` scope (each "
        "read of a value is audited)."
    )
    quality: int | None
    url_match: str | None
    external_id: str | None
    source: str
    list_name: str = Field(serialization_alias="list")
    added_at: datetime
    labels: list[str]
    enabled: bool
    disabled_reason: str
    metadata: dict[str, Any]


class EntryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool
    reason: str = Field("", max_length=2000)


class ImportOut(BaseModel):
    added: int
    duplicates: int
    rejected: int
    errors: list[str]
    aborted: str | None = Field(
        None,
        description="Set when an import stopped midway (e.g. the database went away): the "
        "counts cover the batches stored before that, which are live; re-send the file to "
        "finish (duplicates are skipped).",
    )


class EntryPage(BaseModel):
    entries: list[EntryOut]
    next_after: int | None = Field(None, description="Pass as `after` for the next page.")


# -- helpers ----------------------------------------------------------------------------------


def _match_out(m: Match, near: int) -> MatchOut:
    return MatchOut.model_validate({**m.as_dict(), "band": band(m.distance, near)})


def _bank_out(b: Bank) -> BankOut:
    return BankOut(
        name=b.name,
        description=b.description,
        labels=list(b.labels),
        source=b.source,
        enabled=b.enabled,
        is_demo=b.is_demo,
        version=b.version,
        entries=b.entry_count,
        created_at=b.created_at,
        updated_at=b.updated_at,
        kind="allow" if b.kind == "allow" else "block",
        thresholds=dict(b.thresholds),
        expected_rate=b.expected_rate,
    )


def _entry_out(e: BankEntry) -> EntryOut:
    return EntryOut.model_validate(e, from_attributes=True)


def _entries_shown(
    rt: Runtime, request: Request, principal: Principal, bank: str, entries: list[BankEntry]
) -> list[EntryOut]:
    """Entries as this key may see them: values only with ``export``, and then audited
    (``bank.entry.read``); without it, the metadata a curator needs and no value."""
    out = [_entry_out(e) for e in entries]
    if not sees_values(principal):
        return [e.model_copy(update={"value": None}) for e in out]
    if entries:
        audit_values(rt, request, principal, "bank.entry.read", bank, (e.id for e in entries))
    return out


def _media_type(fs: FileSignals, name: str | None) -> str:
    """A MIME type for review media: the sniffed kind and format, else the name's guess."""
    if fs.kind in ("image", "video") and fs.format:
        return f"{fs.kind}/{fs.format.lower()}"
    return (mimetypes.guess_type(name or "")[0]) or "application/octet-stream"


def _count_matches(request: Request, matches: list[Match]) -> None:
    counter = runtime(request).metrics.matches
    for m in matches:
        counter.labels(str(m.signal_type)).inc()


# -- scan -------------------------------------------------------------------------------------
_SCAN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "minLength": 1},
                        "context": {
                            "$ref": "#/components/schemas/Context",
                            "description": "The platform's ids, as a JSON object",
                        },
                        "threshold": {"type": "integer", "minimum": 0, "maximum": MAX_THRESHOLD},
                        "dihedral": {"type": "boolean"},
                    },
                },
                "encoding": {"context": {"contentType": "application/json"}},
            },
            "application/json": {
                "schema": {
                    "oneOf": [
                        ScanUrl.model_json_schema(),
                        ScanText.model_json_schema(),
                        ScanIdentifiers.model_json_schema(),
                    ],
                }
            },
        },
    }
}


@router.post(
    "/scan",
    response_model=ScanResponse,
    tags=["scan"],
    openapi_extra=_SCAN_BODY,
    responses=problem_responses(400, 413, 415, 422, 502, 503, 504),
)
async def scan(request: Request, rt: RuntimeDep, principal: MatchKey) -> ScanResponse:
    """Hash an upload (multipart `file`) or a URL Bastion fetches, and match it against every
    enabled bank; or match text (JSON with `text`: a post, comment, bio, username or search
    query) against every keyword entry, the text itself never stored (docs/text-signals.md). A
    scan that matches is stored durably before this answers."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        data, name, ctx, threshold, dihedral = await _read_upload(request, rt.settings)
    elif ctype == "application/json":
        body = await _read_limited(request, _TEXT_BODY)
        if _is_text_body(body):
            try:
                text_req = ScanText.model_validate_json(body)
            except ValidationError as exc:
                raise _validation_problem(exc) from exc
            return await _scan_text(request, rt, principal, text_req)
        if _json_has(body, "identifiers"):
            try:
                id_req = ScanIdentifiers.model_validate_json(body)
            except ValidationError as exc:
                raise _validation_problem(exc) from exc
            return await run_in_threadpool(_scan_identifiers, rt, principal, id_req)
        if len(body) > 64 * 1024:
            raise Problem(413, detail="body is over the limit of 65536 bytes")
        try:
            req = ScanUrl.model_validate_json(body)
        except ValidationError as exc:
            raise _validation_problem(exc) from exc
        try:
            fetched = await run_in_threadpool(fetch, req.url, rt.settings.fetch_policy)
        except FetchError as exc:
            raise Problem(exc.status, "Fetch failed", detail=str(exc), code=exc.code) from exc
        data, name, ctx = fetched.data, fetched.url, req.context
        threshold, dihedral = req.threshold, req.dihedral
    else:
        raise Problem(
            415,
            detail="send multipart/form-data with a 'file' part, or JSON with a 'url' or 'text'",
        )
    threshold = pinned_threshold(rt, principal, threshold)  # without `export`: the server's
    fs: FileSignals = await run_in_threadpool(
        hash_bytes, data, name=name, dihedral=dihedral, options=rt.settings.hash_options
    )
    # Media that would not decode, or nothing at all, is the client's problem to hear about;
    # other files are still matched on their exact hashes, with the error as a warning.
    perceptual = any(s.type in (SignalType.PDQ, SignalType.VPDQ) for s in fs.signals)
    if fs.error and not perceptual and (fs.kind in ("image", "video") or fs.size == 0):
        raise Problem(422, "Content could not be hashed", detail=fs.error)

    # Banks may set their own distance (docs/banks.md): search at the widest, then screen.
    radius = search_threshold(threshold, rt.store.search_rules().values())

    rules: dict[str, BankRules] = {}

    def match() -> list[Match]:
        with rt.index.read() as matcher:
            found = matcher.match(
                fs.signals,
                threshold=radius,
                min_quality=DEFAULT_MIN_QUALITY,
                dihedral=fs.pdq_dihedral if dihedral else (),
            )
        if not found:
            return found
        rules.update(rt.store.bank_rules())  # fresh: each match records its bank's version
        return screen(found, threshold, rules).kept

    heavy = radius > DEFAULT_PDQ_THRESHOLD or dihedral or fs.kind == "video"
    matches = await run_in_threadpool(match) if heavy else match()
    truncated = len(matches) > MAX_MATCHES
    matches = matches[:MAX_MATCHES]
    _count_matches(request, matches)
    signals = [SignalOut(type=s.type, value=s.value, quality=s.quality) for s in fs.signals]
    # Recorded (and decided on) with exact distances; answered as this key may see them.
    match_out = [_match_out(m, rt.settings.match_near_distance) for m in matches]
    shown = [MatchOut.model_validate(d) for d in shown_matches(rt, principal, matches, threshold)]
    warnings = [fs.error] if fs.error else []
    for s in fs.signals:
        if s.type == SignalType.PDQ and s.quality is not None and s.quality < DEFAULT_MIN_QUALITY:
            warnings.append(f"pdq quality {s.quality} < {DEFAULT_MIN_QUALITY}: not matched")
    scanned = pipeline.Scanned(
        kind=fs.kind,
        format=fs.format,
        context=ctx.model_dump(exclude_none=True),
        signals=[s.model_dump(mode="json", exclude_none=True) for s in signals],
        matches=[m.model_dump(mode="json", exclude_none=True, exclude={"band"}) for m in match_out],
        media=data,
        media_type=_media_type(fs, name),
        filename=name,
    )
    actor = f"key:{principal.name}"
    try:
        decided, scan_id, case_id, held = await run_in_threadpool(
            _decide_and_record, rt, scanned, matches, rules, actor
        )
    except StoreError as exc:  # a match that cannot be recorded is not answered as one
        raise Problem(
            503, "Store unavailable", detail="the scan could not be recorded or queued for review"
        ) from exc
    if held:
        marked = [replace(m, quarantined=True) if m.entry_id in held else m for m in matches]
        shown = [
            MatchOut.model_validate(d) for d in shown_matches(rt, principal, marked, threshold)
        ]
    verdict = Verdict(
        decision=decided.decision,
        reason=shown_reason(rt, principal, decided.reason),
        rule=decided.rule,
        priority=None if decided.decision == "allow" else decided.priority,
        case_id=case_id,
    )
    return ScanResponse(
        scan_id=scan_id,
        kind=fs.kind,
        format=fs.format,
        size=fs.size,
        signals=signals,
        matches=shown,
        verdict=verdict,
        warnings=warnings,
        truncated=truncated,
    )


def _decide_and_record(
    rt: Runtime,
    scanned: pipeline.Scanned,
    matches: list[Match],
    rules: dict[str, BankRules],
    actor: str,
) -> tuple[pipeline.Verdict, int | None, int | None, set[int]]:
    """The policy's verdict on scanned content, the scan recorded when it matched (or the
    policy acts on it anyway) and the case opened when the verdict is not allow; and the
    entries held back for flooding."""
    # Flood protection counts each match; quarantined entries' matches go to review only.
    held = set(rt.store.note_matches({m.entry_id: m.bank for m in matches}, rules))
    for m in scanned.matches:
        if m["entry"] in held:
            m["quarantined"] = True
    verdict = pipeline.held_verdict(rt, scanned, held)
    if not matches and verdict.decision == "allow":
        return verdict, None, None, held
    scan_id = rt.store.record_scan(
        actor=actor,
        content_kind=scanned.kind,
        context=dict(scanned.context),
        signals=scanned.signals,
        matches=scanned.matches,
        verdict=verdict.decision,
    )
    if verdict.decision == "allow":
        return verdict, scan_id, None, held
    case = pipeline.open_case(rt, scanned, verdict, actor=actor, scan_id=scan_id)
    return verdict, scan_id, case.case_id, held


def _json_has(body: bytes, key: str) -> bool:
    """Whether a JSON scan body is an object with ``key``."""
    if f'"{key}"'.encode() not in body:
        return False
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False  # the URL model reports it
    return isinstance(doc, dict) and key in doc


def _scan_identifiers(rt: Runtime, principal: Principal, req: ScanIdentifiers) -> ScanResponse:
    """Match an account's identifiers: each normalised, then hashed under every sharing group's
    key and looked up; only the keyed hashes reach the index, the record and the answer. A bad
    identifier is a warning and the others are still matched; when none is usable, 422."""
    warnings: list[str] = []
    canonical: list[tuple[SignalType, str]] = []
    for i, item in enumerate(req.identifiers):
        ident = Identifier(SignalType(item.type), item.value, item.platform, item.region)
        try:
            canonical.append((ident.type, normalize_identifier(ident)))
        except IdentifierError as exc:
            warnings.append(f"identifiers[{i}]: {exc}")
    if not canonical:
        raise Problem(422, "Invalid request", detail="; ".join(warnings))
    keys = rt.identity.keys()
    if not keys:
        warnings.append("no identity group is set up: nothing to match against")
    signals: list[Signal] = []
    recorded: list[dict[str, Any]] = []
    for group, key in sorted(keys.items()):
        for st, form in canonical:
            value = identity_digest(key, st, form)
            signals.append(Signal(st, value))
            recorded.append({"type": st.value, "value": value, "group": group})
    rules: dict[str, BankRules] = {}
    with rt.index.read() as matcher:
        found = matcher.match(signals) if signals else []
    if found:
        rules = rt.store.bank_rules()
        found = screen(found, DEFAULT_PDQ_THRESHOLD, rules).kept
    truncated = len(found) > MAX_MATCHES
    matches = found[:MAX_MATCHES]
    for m in matches:
        rt.metrics.matches.labels(str(m.signal_type)).inc()
    match_out = [_match_out(m, rt.settings.match_near_distance) for m in matches]
    scanned = pipeline.Scanned(
        kind="account",
        format=None,
        context=req.context.model_dump(exclude_none=True),
        signals=recorded,
        matches=[m.model_dump(mode="json", exclude_none=True, exclude={"band"}) for m in match_out],
        media=None,
        media_type=None,
        filename=None,
    )
    try:
        decided, scan_id, case_id, held = _decide_and_record(
            rt, scanned, matches, rules, f"key:{principal.name}"
        )
    except StoreError as exc:
        raise Problem(
            503, "Store unavailable", detail="the scan could not be recorded or queued for review"
        ) from exc
    marked = [replace(m, quarantined=True) if m.entry_id in held else m for m in matches]
    threshold = pinned_threshold(rt, principal, DEFAULT_PDQ_THRESHOLD)
    shown = [MatchOut.model_validate(d) for d in shown_matches(rt, principal, marked, threshold)]
    return ScanResponse(
        scan_id=scan_id,
        kind="account",
        size=len(req.identifiers),
        signals=[SignalOut(type=SignalType(r["type"]), value=r["value"]) for r in recorded],
        matches=shown,
        verdict=Verdict(
            decision=decided.decision,
            reason=shown_reason(rt, principal, decided.reason),
            rule=decided.rule,
            priority=None if decided.decision == "allow" else decided.priority,
            case_id=case_id,
        ),
        warnings=warnings,
        truncated=truncated,
    )


def _is_text_body(body: bytes) -> bool:
    """Whether a JSON scan body asks for text (it has ``text``) rather than a URL."""
    if b'"text"' not in body:
        return False
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False  # the URL model reports it
    return isinstance(doc, dict) and "text" in doc


async def _scan_text(
    request: Request, rt: Runtime, principal: Principal, req: ScanText
) -> ScanResponse:
    """Match text against every keyword entry; the text itself is never stored or logged."""
    text = req.text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    signal = Signal(SignalType.TEXT, text)
    threshold = pinned_threshold(rt, principal, DEFAULT_PDQ_THRESHOLD)
    rules: dict[str, BankRules] = {}

    def match() -> list[Match]:
        with rt.index.read() as matcher:
            found = matcher.match([signal])
        if not found:
            return found
        rules.update(rt.store.bank_rules())  # fresh: each match records its bank's version
        return screen_text(found, rules).kept

    matches = await run_in_threadpool(match) if len(text) > _LIGHT_TEXT else match()
    truncated = len(matches) > MAX_MATCHES
    matches = matches[:MAX_MATCHES]
    _count_matches(request, matches)
    signals = [SignalOut(type=SignalType.TEXT, value=digest)]
    match_out = [_match_out(m, rt.settings.match_near_distance) for m in matches]
    context = req.context.model_dump(exclude_none=True)
    scanned = pipeline.Scanned(
        kind="text",
        format=req.kind,
        context=context,
        signals=[{"type": "text", "value": digest, "length": len(text)}],
        matches=[m.model_dump(mode="json", exclude_none=True, exclude={"band"}) for m in match_out],
        media=None,
        media_type=None,
        filename=None,
    )
    try:
        decided, scan_id, case_id, held = await run_in_threadpool(
            _decide_and_record, rt, scanned, matches, rules, f"key:{principal.name}"
        )
    except StoreError as exc:
        raise Problem(
            503, "Store unavailable", detail="the scan could not be recorded or queued for review"
        ) from exc
    marked = [replace(m, quarantined=True) if m.entry_id in held else m for m in matches]
    shown = [MatchOut.model_validate(d) for d in shown_matches(rt, principal, marked, threshold)]
    return ScanResponse(
        scan_id=scan_id,
        kind="text",
        format=req.kind,
        size=len(text.encode("utf-8", "surrogatepass")),
        signals=signals,
        matches=shown,
        verdict=Verdict(
            decision=decided.decision,
            reason=shown_reason(rt, principal, decided.reason),
            rule=decided.rule,
            priority=None if decided.decision == "allow" else decided.priority,
            case_id=case_id,
        ),
        truncated=truncated,
    )


def _validation_problem(exc: ValidationError) -> Problem:
    errors = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"]) or "body"
    # JSON that does not parse is malformed (400, as FastAPI answers for its own bodies);
    # JSON that parses but breaks the schema is invalid (422).
    if first.get("type") == "json_invalid":
        return Problem(400, "Malformed JSON", detail=f"{where}: {first['msg']}", errors=errors)
    return Problem(422, "Invalid request", detail=f"{where}: {first['msg']}", errors=errors)


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, detail=f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, detail=f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_upload(request: Request, settings: Any) -> tuple[bytes, str, Context, int, bool]:
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise Problem(413, detail=f"upload of {declared} bytes is over the limit of {limit}")
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=64 * 1024)
    except BodyTooLarge:
        raise
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise Problem(400, "Malformed multipart body", detail=str(exc)) from exc
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise Problem(422, "Invalid request", detail="multipart body needs a 'file' part")
    data = await upload.read(limit + 1)
    await form.close()
    if len(data) > limit:
        raise Problem(413, detail=f"upload is over the limit of {limit} bytes")
    raw_ctx = form.get("context")
    try:
        ctx = Context.model_validate_json(raw_ctx) if isinstance(raw_ctx, str) else Context()
    except ValidationError as exc:
        raise _validation_problem(exc) from exc
    threshold = _form_int(
        form.get("threshold"), DEFAULT_PDQ_THRESHOLD, "threshold", 0, MAX_THRESHOLD
    )
    dihedral = _form_bool(form.get("dihedral"), "dihedral")
    return data, upload.filename or "upload", ctx, threshold, dihedral


def _form_bool(value: Any, name: str) -> bool:
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise Problem(422, "Invalid request", detail=f"{name}: expected true or false")


def _form_int(value: Any, default: int, name: str, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise Problem(422, "Invalid request", detail=f"{name}: not an integer") from None
    if not lo <= number <= hi:
        raise Problem(422, "Invalid request", detail=f"{name}: must be {lo}..{hi}")
    return number


# -- lookup -----------------------------------------------------------------------------------
@router.post(
    "/lookup", response_model=LookupResponse, tags=["scan"], responses=problem_responses(400, 422)
)
async def lookup(
    body: LookupRequest, request: Request, rt: RuntimeDep, principal: MatchKey
) -> JSONResponse:
    """Match precomputed signals (for platforms that hash on their own side), up to 1,000 a call.
    A malformed signal gets its own error; the others are still matched. Each signal gets at
    most 100 matches, closest first (``truncated`` is set on a result that was cut).

    A key without `export` sees distances as bands, at the server's threshold
    (`match_threshold`, given back as `threshold`; the request's is ignored). Lookups near one
    bank entry from such a key are counted, and near-identical ones get the earlier answer; past
    the limits the key's lookups get 429 with Retry-After (docs/hma.md, "Probing").

    A `text` signal is text to match against keyword entries (docs/text-signals.md); its
    result's `value` is the text's SHA-256, never the text.
    """
    results: list[dict[str, Any]] = []
    pdq_rows: list[tuple[int, str]] = []
    parsed: list[Signal | None] = []
    for i, sig in enumerate(body.signals):
        try:
            stype = SignalType(sig.type.lower())
        except ValueError:
            stype = None
        try:
            if stype is None:
                raise ValueError(f"unknown signal type {sig.type[:40]!r}")
            if stype is SignalType.TEXT:
                # Text to match, not a keyword: answered under its SHA-256, never echoed.
                if not sig.value or len(sig.value) > MAX_SCAN_TEXT:
                    raise ValueError(f"text must be 1 to {MAX_SCAN_TEXT} characters")
                digest = hashlib.sha256(sig.value.encode("utf-8", "surrogatepass")).hexdigest()
                results.append({"type": "text", "value": digest, "matches": [], "error": None})
                parsed.append(Signal(stype, sig.value, quality=None))
                continue
            value = validate_value(stype, sig.value)
        except ValueError as exc:
            shown = "" if stype is SignalType.TEXT else sig.value[:200]
            results.append({"type": sig.type, "value": shown, "matches": [], "error": str(exc)})
            parsed.append(None)
            continue
        results.append({"type": str(stype), "value": value, "matches": [], "error": None})
        parsed.append(Signal(stype, value, quality=None))
        if stype is SignalType.PDQ:
            pdq_rows.append((i, value))
    banks = body.banks
    found: dict[int, list[Match]] = {}
    threshold = pinned_threshold(rt, principal, body.threshold)

    def match() -> tuple[WatchVerdict | None, ProbeVerdict | None]:
        with rt.index.read() as matcher:
            hits, watched = watched_pdq(
                rt, principal, matcher, [v for _, v in pdq_rows], threshold=threshold, banks=banks
            )
            if watched is not None and watched.refused:
                return watched, None
            for (i, _), ms in zip(pdq_rows, hits, strict=True):
                found[i] = ms
            for i, sig in enumerate(parsed):
                if sig is not None and sig.type is not SignalType.PDQ:
                    found[i] = matcher.match([sig], threshold=threshold, banks=banks)
        if any(found.values()):
            # Each signal on its own: a bank's tighter threshold and an allow entry of the same
            # signal apply as in a scan, and each match says its bank's version (a lookup
            # searches at its own threshold: a bank's wider one does not widen it).
            rules = rt.store.bank_rules()
            for i, ms in found.items():
                parsed_sig = parsed[i]
                if not ms or parsed_sig is None:
                    continue
                if parsed_sig.type is SignalType.TEXT:
                    found[i] = screen_text(ms, rules).kept
                else:
                    found[i] = screen(ms, threshold, rules).kept
        looked = [(sig, bool(found.get(i))) for i, sig in enumerate(parsed) if sig is not None]
        return watched, observe_probes(rt, principal, looked)

    # One or a few hashes at a normal threshold take ~0.1 ms each, less than a thread hop; a
    # wide threshold or a big batch would hold up every other request on the event loop.
    heavy = threshold > DEFAULT_PDQ_THRESHOLD or len(body.signals) > _LIGHT_SIGNALS
    heavy = heavy or (len(pdq_rows) > 1 and not sees_values(principal))  # a wider watch radius
    heavy = heavy or any(s is not None and s.type is SignalType.VPDQ for s in parsed)
    heavy = heavy or sum(len(s.value) for s in parsed if s and s.type is SignalType.TEXT) > 2_000
    watched, probing = await run_in_threadpool(match) if heavy else match()
    if watched is not None and watched.refused:
        await run_in_threadpool(refuse_watch, rt, request, principal, watched)
    if probing is not None and (probing.detected or probing.refused):
        await run_in_threadpool(refuse_probes, rt, request, principal, probing)
    for i, ms in found.items():
        _set_matches(request, principal, threshold, results[i], ms)
    watch_answered(rt, principal, sum(1 for ms in found.values() if ms))
    return JSONResponse({"results": results, "threshold": threshold})


def _set_matches(
    request: Request,
    principal: Principal,
    threshold: int,
    result: dict[str, Any],
    matches: list[Match],
) -> None:
    if len(matches) > MAX_MATCHES:
        matches = matches[:MAX_MATCHES]
        result["truncated"] = True
    result["matches"] = shown_matches(runtime(request), principal, matches, threshold)
    _count_matches(request, matches)


# -- banks ------------------------------------------------------------------------------------
@router.get("/banks", response_model=list[BankOut], tags=["banks"], responses=_STORE)
def list_banks(rt: RuntimeDep, _: CurateKey) -> list[BankOut]:
    return [_bank_out(b) for b in rt.store.list_banks()]


@router.post(
    "/banks",
    response_model=BankOut,
    status_code=201,
    tags=["banks"],
    responses=problem_responses(400, 409, 422, 503),
)
def create_bank(body: BankIn, request: Request, rt: RuntimeDep, principal: CurateKey) -> BankOut:
    try:
        bank = rt.store.create_bank(
            body.name,
            description=body.description,
            labels=body.labels,
            source=body.source,
            is_demo=body.is_demo,
            enabled=body.enabled,
            kind=body.kind,
            thresholds={str(k): int(v) for k, v in body.thresholds.items()},
            expected_rate=body.expected_rate,
        )
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    rt.audit(
        request,
        principal,
        "bank.create",
        bank.name,
        kind=bank.kind,
        thresholds=bank.thresholds,
        expected_rate=bank.expected_rate,
    )
    return _bank_out(bank)


def _get_bank(rt: Runtime, name: str) -> Bank:
    try:
        return rt.store.get_bank(name)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc


@router.get("/banks/{name}", response_model=BankOut, tags=["banks"], responses=_BANK)
def get_bank(name: str, rt: RuntimeDep, _: CurateKey) -> BankOut:
    bank = _get_bank(rt, name)
    counts = {b.name: b.entry_count for b in rt.store.list_banks()}
    bank.entry_count = counts.get(bank.name)
    return _bank_out(bank)


@router.patch("/banks/{name}", response_model=BankOut, tags=["banks"], responses=_BANK_BODY)
def update_bank(
    name: str, body: BankPatch, request: Request, rt: RuntimeDep, principal: CurateKey
) -> BankOut:
    fields = body.model_dump(exclude_none=True)
    if "expected_rate" in body.model_fields_set:  # null turns flood protection off
        fields["expected_rate"] = body.expected_rate
    try:
        bank = rt.store.update_bank(name, **fields) if fields else rt.store.get_bank(name)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    rt.audit(request, principal, "bank.update", bank.name, **fields)
    rt.index.refresh()
    return _bank_out(bank)


@router.delete("/banks/{name}", status_code=204, tags=["banks"], responses=_BANK)
def delete_bank(name: str, request: Request, rt: RuntimeDep, principal: CurateKey) -> None:
    try:
        rt.store.delete_bank(name)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    rt.audit(request, principal, "bank.delete", name)
    rt.index.refresh()


@router.get("/banks/{name}/entries", response_model=EntryPage, tags=["banks"], responses=_BANK)
def list_entries(
    name: str,
    request: Request,
    rt: RuntimeDep,
    principal: ExportKey,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Entries with a larger id than this.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EntryPage:
    bank = _get_bank(rt, name)
    page = rt.store.list_entries(bank.name, after=after, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    rt.audit(
        request,
        principal,
        "bank.entries.read",
        bank.name,
        after=after,
        limit=limit,
        entries=len(page),
        ids=[e.id for e in page],
        first=page[0].id if page else None,
        last=page[-1].id if page else None,
    )
    return EntryPage(
        entries=[_entry_out(e) for e in page], next_after=page[-1].id if more else None
    )


@router.post(
    "/banks/{name}/entries", response_model=ImportOut, tags=["banks"], responses=_BANK_BODY
)
def add_entries(
    name: str, body: EntriesIn, request: Request, rt: RuntimeDep, principal: CurateKey
) -> ImportOut:
    """Add up to 10,000 entries; each bad one gets its own error and the rest are added."""
    bank = _get_bank(rt, name)
    errors: list[str] = []
    good: list[NewEntry] = []
    for i, e in enumerate(body.entries):
        try:
            good.append(
                normalize_entry(
                    NewEntry(
                        signal_type=e.signal_type,  # type: ignore[arg-type]
                        value=e.value,
                        quality=e.quality,
                        url_match=e.url_match,
                        source=e.source,
                        list_name=e.list_name,
                        external_id=e.external_id,
                        added_at=e.added_at,
                        labels=e.labels,
                        metadata=e.metadata,
                    )
                )
            )
        except ValueError as exc:
            errors.append(f"entries[{i}]: {exc}")
    try:
        report = rt.store.add_entries(bank.name, good)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    rt.audit(request, principal, "bank.entries.add", bank.name, added=report.added)
    rt.index.refresh()
    return ImportOut(
        added=report.added,
        duplicates=report.duplicates,
        rejected=len(errors) + report.error_count,
        errors=(errors + list(report.errors))[:100],
    )


def _entry(rt: Runtime, bank: str, ref: str) -> list[BankEntry]:
    try:
        found = rt.store.find_entries(bank, external_id=ref) or rt.store.find_entries(
            bank, value=ref
        )
        if not found and ref.isdigit():
            entry = rt.store.get_entry(int(ref))
            found = [entry] if entry.bank == bank else []
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    if not found:
        raise Problem(404, "Not found", detail=f"no entry {ref!r} in bank {bank!r}")
    return found


@router.get(
    "/banks/{name}/entries/{ref}", response_model=list[EntryOut], tags=["banks"], responses=_BANK
)
def get_entry(
    name: str, ref: str, request: Request, rt: RuntimeDep, principal: CurateKey
) -> list[EntryOut]:
    """Entries named by id, external id or value (an external id can name several). The stored
    value is shown only to a key that also has `export`, and each such read is audited."""
    bank = _get_bank(rt, name)
    return _entries_shown(rt, request, principal, bank.name, _entry(rt, bank.name, ref))


@router.patch(
    "/banks/{name}/entries/{ref}",
    response_model=list[EntryOut],
    tags=["banks"],
    responses=_BANK_BODY,
)
def update_entry(
    name: str, ref: str, body: EntryPatch, request: Request, rt: RuntimeDep, principal: CurateKey
) -> list[EntryOut]:
    """Enable or disable: takes effect for the next lookup on every replica. The entries come
    back as `GET` shows them (values only with `export`)."""
    bank = _get_bank(rt, name)
    _entry(rt, bank.name, ref)
    try:
        if body.enabled:
            changed = rt.store.enable_entry(bank.name, ref)
        else:
            changed = rt.store.disable_entry(bank.name, ref, reason=body.reason)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    action = "bank.entry.enable" if body.enabled else "bank.entry.disable"
    rt.audit(request, principal, action, f"{bank.name}/{ref}", reason=body.reason)
    rt.index.refresh()
    return _entries_shown(rt, request, principal, bank.name, list(changed))


@router.delete("/banks/{name}/entries/{ref}", status_code=204, tags=["banks"], responses=_BANK)
def delete_entry(
    name: str, ref: str, request: Request, rt: RuntimeDep, principal: CurateKey
) -> None:
    bank = _get_bank(rt, name)
    _entry(rt, bank.name, ref)
    try:
        rt.store.remove_entry(bank.name, ref)
    except (StoreError, ValueError) as exc:
        raise problem_for(exc) from exc
    rt.audit(request, principal, "bank.entry.delete", f"{bank.name}/{ref}")
    rt.index.refresh()


@router.post(
    "/banks/{name}/import",
    response_model=ImportOut,
    tags=["banks"],
    responses=problem_responses(404, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary", "minLength": 1}
                },
                "text/csv": {"schema": {"type": "string", "minLength": 1}},
                "text/plain": {"schema": {"type": "string", "minLength": 1}},
                "application/x-ndjson": {"schema": {"type": "string", "minLength": 1}},
            },
        }
    },
)
async def import_bank(
    name: str,
    request: Request,
    rt: RuntimeDep,
    principal: CurateKey,
    format: Annotated[BankFormat | None, Query(description="Default: detect")] = None,
) -> ImportOut:
    """Bulk import a hash list sent as the raw request body (Bastion CSV, JSON lines, or pytx
    `pdq <hex>` lines). The body is spooled to disk and parsed as a stream, so a 10M-line file
    never needs 10M rows in memory."""
    bank = await run_in_threadpool(_get_bank, rt, name)
    limit = rt.settings.max_import_bytes
    report: ImportReport | None = None
    aborted: str | None = None
    fd, path = tempfile.mkstemp(prefix="bastion-import-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Problem(413, detail=f"import is over the limit of {limit} bytes")
                out.write(chunk)
        if size == 0:
            raise Problem(422, "Invalid request", detail="the request body is empty")
        failed = True
        try:
            report = await run_in_threadpool(rt.store.import_file, bank.name, path, format)
            failed = False
        except ImportAborted as exc:
            # Batches before the failure are stored and will match: say so, with the count.
            report, aborted, failed = exc.report, str(exc), False
        except (StoreError, ValueError) as exc:
            aborted = str(exc)
            raise problem_for(exc) from exc
        finally:
            await _after_import(rt, request, principal, bank.name, report, aborted, failed)
    finally:
        os.unlink(path)
    assert report is not None  # set unless an exception is on its way out
    return ImportOut(
        added=report.added,
        duplicates=report.duplicates,
        rejected=report.error_count,
        errors=list(report.errors)[:100],
        aborted=aborted,
    )


async def _after_import(
    rt: Runtime,
    request: Request,
    principal: Principal,
    bank: str,
    report: ImportReport | None,
    aborted: str | None,
    failed: bool,
) -> None:
    """Audit and refresh after an import, whatever its outcome: batches committed before a
    failure are live. When the import failed outright (its error is on the way to the caller),
    a failure to audit is only logged, so it cannot hide that error."""
    detail: dict[str, Any] = {"added": report.added if report else 0}
    if aborted is not None:
        detail["aborted"] = aborted[:500]
    try:
        await run_in_threadpool(rt.audit, request, principal, "bank.import", bank, **detail)
    except Exception:
        if not failed:
            raise
        log.warning("could not audit a failed import into %s", bank, exc_info=True)
    finally:
        try:
            await run_in_threadpool(rt.index.refresh)
        except Exception:
            if not failed:
                raise
            log.warning("could not refresh the index after an import", exc_info=True)


@router.get(
    "/banks/{name}/export",
    tags=["banks"],
    response_class=FileResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}, "text/plain": {}}},
        **_BANK,
    },
)
def export_bank(
    name: str,
    request: Request,
    rt: RuntimeDep,
    principal: ExportKey,
    format: Annotated[BankFormat, Query()] = BankFormat.JSONL,
) -> FileResponse:
    """Export a bank's enabled entries (needs the `export` scope; audited)."""
    bank = _get_bank(rt, name)
    fd, path = tempfile.mkstemp(prefix="bastion-export-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            count = rt.store.export(bank.name, format, out)
    except (StoreError, ValueError) as exc:
        os.unlink(path)
        raise problem_for(exc) from exc
    rt.audit(request, principal, "bank.export", bank.name, format=str(format), entries=count)
    media = {"csv": "text/csv", "jsonl": "application/x-ndjson", "pytx": "text/plain"}
    return FileResponse(
        path,
        media_type=media[str(format)],
        filename=f"{bank.name}.{'txt' if format == BankFormat.PYTX else str(format)}",
        background=BackgroundTask(os.unlink, path),
    )

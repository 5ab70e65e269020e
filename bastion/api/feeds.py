"""``/v1/feeds``: this Bastion's published feeds, as another Bastion reads them (scope ``feed``).

A subscriber holds a ``feed``-scoped API key issued by the publisher (``bastion key create NAME
--scopes feed --feed FEED``), which reads only the feeds granted to it (admin keys read every
feed). A feed the key was not granted is answered 404, exactly as a feed that does not exist, so
a key cannot learn what else this instance publishes. It reads the feed's metadata and latest
signed version statement, pages the signed records up to that version's revision, and sends
disputes (false positives) and confirmations back. Every record and statement is signed with
this instance's Ed25519 key (``bastion feed key`` prints the public half, to be given to
subscribers out of band); the dispute counts travel beside the signed part, since they change as
subscribers report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import require
from bastion.api.problems import AUTH_RESPONSES, problem_for, problem_responses
from bastion.feeds.store import (
    CONFIRM,
    DISPUTE,
    FEED_SCOPE,
    MAX_PAGE,
    FeedRecord,
    FeedStore,
    FeedVersion,
    format_cursor,
    parse_cursor,
)
from bastion.http_auth import Principal, client_address
from bastion.keys import ADMIN
from bastion.runtime import Runtime, RuntimeDep, runtime
from bastion.store import StoreError

SCOPE = FEED_SCOPE
router = APIRouter(prefix="/v1/feeds", tags=["feeds"], responses=AUTH_RESPONSES)
FeedKey = Annotated[Principal, Depends(require(SCOPE))]
FeedName = Annotated[str, Path(max_length=64)]
_LIST = problem_responses(503)
_ONE = problem_responses(404, 422, 503)
_BODY = problem_responses(400, 404, 422, 503)


class VersionOut(BaseModel):
    """A signed version statement: ``statement`` is the exact canonical JSON text that
    ``signature`` (Ed25519, base64) covers; the other fields repeat it for convenience."""

    version: int
    revision: int
    root: str
    count: int
    statement: str
    signature: str
    key_fingerprint: str
    created_at: datetime


class FeedSummary(BaseModel):
    name: str
    description: str
    publisher: str
    latest_version: int | None


class FeedsOut(BaseModel):
    feeds: list[FeedSummary]


class FeedOut(BaseModel):
    name: str
    description: str
    publisher: str
    #: Ed25519 public key, base64 of the 32 raw bytes; subscribers pin it out of band.
    public_key: str
    fingerprint: str
    latest: VersionOut | None


class RecordOut(BaseModel):
    key: str
    op: str
    #: Canonical JSON text of the record; ``sig`` is the Ed25519 signature over it (base64).
    record: str
    sig: str
    #: Outside the signed part: how many subscribers disputed / confirmed this record.
    disputes: int
    confirmations: int


class RecordsOut(BaseModel):
    records: list[RecordOut]
    #: Cursor for the next page (pass as ``after``); null once every change up to ``upto`` was
    #: served.
    next: str | None
    upto: int
    #: No change to the feed after ``upto``: the records up to it are the current list.
    complete: bool


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=64)
    #: A short code (``not_abusive``, ``wrong_classification`` ...), never free text.
    reason: str = Field(default="", max_length=64)


class FeedbackOut(BaseModel):
    key: str
    created: bool
    count: int


class KeyFeedbackOut(BaseModel):
    key: str
    disputes: int
    confirmations: int
    #: The current signed record when the entry is published and unchanged since ``upto``.
    record: RecordOut | None


class FeedbackPageOut(BaseModel):
    items: list[KeyFeedbackOut]
    #: Pass as ``after`` next time.
    next: int


def _feeds(rt: Runtime) -> FeedStore:
    return rt.feeds


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except StoreError as exc:
        raise problem_for(exc) from None


async def _granted(store: FeedStore, key: Principal, name: str) -> None:
    """404 (as for an unknown feed) unless ``key`` may read feed ``name``. Every route under a
    feed's name calls this before it reads or records anything."""
    await _call(store.authorize, name, key.name, key.scopes)


def _version(v: FeedVersion | None) -> VersionOut | None:
    if v is None:
        return None
    return VersionOut(**{k: getattr(v, k) for k in VersionOut.model_fields})


def _record(r: FeedRecord) -> RecordOut:
    return RecordOut(**{k: getattr(r, k) for k in RecordOut.model_fields})


@router.get("", response_model=FeedsOut, responses=_LIST)
async def list_feeds(rt: RuntimeDep, key: FeedKey) -> FeedsOut:
    """The feeds this Bastion publishes that the key may read."""
    store = rt.feeds

    def run() -> FeedsOut:
        out = []
        for f in store.list(readable_by=None if ADMIN in key.scopes else key.name):
            latest = store.latest_version(f.name)
            out.append(
                FeedSummary(
                    name=f.name,
                    description=f.description,
                    publisher=f.organisation,
                    latest_version=None if latest is None else latest.version,
                )
            )
        return FeedsOut(feeds=out)

    return await _call(run)


@router.get("/{name}", response_model=FeedOut, responses=_ONE)
async def get_feed(rt: RuntimeDep, key: FeedKey, name: FeedName) -> FeedOut:
    """A feed's publisher, public key and latest signed version statement."""
    store = rt.feeds
    await _granted(store, key, name)

    def run() -> FeedOut:
        feed = store.get(name)
        public = store.public_key()
        return FeedOut(
            name=feed.name,
            description=feed.description,
            publisher=feed.organisation,
            public_key=public.text,
            fingerprint=public.fingerprint,
            latest=_version(store.latest_version(feed.name)),
        )

    return await _call(run)


@router.get("/{name}/entries", response_model=RecordsOut, responses=_ONE)
async def feed_entries(
    rt: RuntimeDep,
    key: FeedKey,
    name: FeedName,
    after: Annotated[str, Query(max_length=64)] = "",
    upto: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> RecordsOut:
    """Signed add and remove records of the changes after ``after`` up to revision ``upto``
    (default: the latest version's), oldest first. Disabled entries appear as removals."""
    store = rt.feeds
    await _granted(store, key, name)

    def run() -> RecordsOut:
        page = store.records(name, after=parse_cursor(after), upto=upto, limit=limit)
        return RecordsOut(
            records=[_record(r) for r in page.records],
            next=None if page.next is None else format_cursor(page.next),
            upto=page.upto,
            complete=page.complete,
        )

    return await _call(run)


@router.get("/{name}/versions/{version}", response_model=VersionOut, responses=_ONE)
async def feed_version(
    rt: RuntimeDep,
    key: FeedKey,
    name: FeedName,
    version: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> VersionOut:
    """One signed version statement."""
    store = rt.feeds
    await _granted(store, key, name)
    return _version(await _call(store.version, name, version))  # type: ignore[return-value]


async def _feedback(
    request: Request, key: Principal, name: str, body: FeedbackIn, kind: str
) -> JSONResponse:

    rt = runtime(request)
    await _granted(_feeds(rt), key, name)
    created, count = await _call(
        _feeds(rt).add_feedback,
        name,
        body.key,
        subscriber=key.name,
        kind=kind,
        reason=body.reason,
        remote_addr=client_address(request, rt.settings),
    )
    return JSONResponse(
        FeedbackOut(key=body.key, created=created, count=count).model_dump(), status_code=202
    )


@router.post("/{name}/disputes", status_code=202, response_model=FeedbackOut, responses=_BODY)
async def dispute(request: Request, key: FeedKey, name: FeedName, body: FeedbackIn) -> Any:
    """A subscriber's reviewer found a match of this record not abusive. Recorded once per
    subscriber (its API key) and record; sending it again changes nothing."""
    return await _feedback(request, key, name, body, DISPUTE)


@router.post("/{name}/confirmations", status_code=202, response_model=FeedbackOut, responses=_BODY)
async def confirm(request: Request, key: FeedKey, name: FeedName, body: FeedbackIn) -> Any:
    """A subscriber's reviewer confirmed a match of this record. Once per subscriber and
    record."""
    return await _feedback(request, key, name, body, CONFIRM)


@router.get("/{name}/disputes", response_model=FeedbackPageOut, responses=_ONE)
async def dispute_counts(
    rt: RuntimeDep,
    key: FeedKey,
    name: FeedName,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    upto: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> FeedbackPageOut:
    """Dispute and confirmation counts of the records whose feedback changed after ``after``.
    With ``upto``, each carries its current signed record if unchanged since that revision."""
    store = rt.feeds
    await _granted(store, key, name)

    def run() -> FeedbackPageOut:
        items, nxt = store.feedback_since(name, after=after, upto=upto, limit=limit)
        return FeedbackPageOut(
            items=[
                KeyFeedbackOut(
                    key=i.key,
                    disputes=i.disputes,
                    confirmations=i.confirmations,
                    record=None if i.record is None else _record(i.record),
                )
                for i in items
            ],
            next=nxt,
        )

    return await _call(run)

"""``Client`` and ``AsyncClient``: Bastion's HTTP API as typed Python calls.

Each operation is described once, as a request and a parser of its answer (the ``_ops``
functions below); the two clients differ only in how they send it (httpx's ``Client`` or
``AsyncClient``). Errors become the exceptions of :mod:`bastion.sdk.errors`, carrying the
server's problem details.

The API key is a bearer secret, so plain ``http://`` is refused except to a loopback address
(pass ``allow_insecure=True`` to override, e.g. behind a TLS-terminating sidecar).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from bastion import __version__
from bastion.sdk.errors import TransportError, error_for
from bastion.sdk.models import (
    Bank,
    Case,
    CasePage,
    CaseSummary,
    DecisionResult,
    DetectorPrecision,
    Draft,
    EntriesAdded,
    Entry,
    Lease,
    LookupResult,
    Media,
    QueueCount,
    Report,
    Revealed,
    ScanResult,
    Signal,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: What ``scan`` accepts: the bytes themselves, a path, or an open binary file.
Content = bytes | str | os.PathLike[str] | IO[bytes]
#: What ``lookup`` accepts per signal: a Signal, a ``(type, value)`` pair or a mapping with
#: ``type`` and ``value``.
SignalLike = Signal | tuple[str, str] | Mapping[str, Any]
DecisionKind = Literal["confirmed", "not_abusive", "escalate"]
StateFilter = Literal["active", "open", "awaiting_second", "confirmed", "not_abusive", "closed"]
Priority = Literal["critical", "high", "normal", "low"]
Subject = Literal["content", "account"]
USER_AGENT = f"bastion-sdk/{__version__}"
DEFAULT_TIMEOUT = 60.0


# -- requests, described once -------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    expect: tuple[int, ...] = field(default=(200,))


def _one(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda r: model.model_validate(r.json())


def _many(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
    return lambda r: adapter.validate_python(r.json())


def _nothing(_: httpx.Response) -> None:
    return None


def _seg(value: str | int) -> str:
    """One path segment, escaped (bank names and entry references are caller input)."""
    return quote(str(value), safe="")


def _params(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def _read(content: Content, filename: str | None) -> tuple[str, bytes]:
    if isinstance(content, bytes | bytearray | memoryview):
        return filename or "upload", bytes(content)
    if isinstance(content, str | os.PathLike):
        path = Path(content)
        return filename or path.name, path.read_bytes()
    data = content.read()
    if not isinstance(data, bytes):
        raise TypeError("scan() needs bytes, a path or a file opened in binary mode")
    return filename or Path(str(getattr(content, "name", "upload"))).name, data


def _signal(item: SignalLike) -> dict[str, str]:
    if isinstance(item, Signal):
        return {"type": item.type, "value": item.value}
    if isinstance(item, tuple):
        kind, value = item
        return {"type": str(kind), "value": str(value)}
    return {"type": str(item["type"]), "value": str(item["value"])}


class _ops:
    """Every operation as a request and its parser: the one description both clients send."""

    # -- scan and lookup --
    @staticmethod
    def scan(
        content: Content,
        filename: str | None,
        context: Mapping[str, Any] | None,
        threshold: int | None,
        dihedral: bool | None,
    ) -> _Call[ScanResult]:
        name, data = _read(content, filename)
        form: dict[str, str] = {}
        if context:
            form["context"] = json.dumps(dict(context))
        if threshold is not None:
            form["threshold"] = str(int(threshold))
        if dihedral is not None:
            form["dihedral"] = "true" if dihedral else "false"
        return _Call("POST", "/v1/scan", _one(ScanResult), data=form, files={"file": (name, data)})

    @staticmethod
    def scan_url(
        url: str,
        context: Mapping[str, Any] | None,
        threshold: int | None,
        dihedral: bool | None,
    ) -> _Call[ScanResult]:
        body: dict[str, Any] = {"url": url}
        if context:
            body["context"] = dict(context)
        if threshold is not None:
            body["threshold"] = threshold
        if dihedral is not None:
            body["dihedral"] = dihedral
        return _Call("POST", "/v1/scan", _one(ScanResult), json=body)

    @staticmethod
    def lookup(
        signals: Iterable[SignalLike], threshold: int | None, banks: Iterable[str] | None
    ) -> _Call[list[LookupResult]]:
        body: dict[str, Any] = {"signals": [_signal(s) for s in signals]}
        if threshold is not None:
            body["threshold"] = threshold
        if banks is not None:
            body["banks"] = list(banks)
        results = TypeAdapter(list[LookupResult])
        return _Call(
            "POST",
            "/v1/lookup",
            lambda r: results.validate_python(r.json()["results"]),
            json=body,
        )

    # -- banks --
    @staticmethod
    def list_banks() -> _Call[list[Bank]]:
        return _Call("GET", "/v1/banks", _many(Bank))

    @staticmethod
    def get_bank(name: str) -> _Call[Bank]:
        return _Call("GET", f"/v1/banks/{_seg(name)}", _one(Bank))

    @staticmethod
    def create_bank(
        name: str,
        description: str,
        labels: Iterable[str],
        source: str,
        is_demo: bool,
        enabled: bool,
    ) -> _Call[Bank]:
        body = {
            "name": name,
            "description": description,
            "labels": list(labels),
            "source": source,
            "is_demo": is_demo,
            "enabled": enabled,
        }
        return _Call("POST", "/v1/banks", _one(Bank), json=body, expect=(201,))

    @staticmethod
    def add_entries(bank: str, entries: Iterable[Mapping[str, Any]]) -> _Call[EntriesAdded]:
        body = {"entries": [dict(e) for e in entries]}
        return _Call("POST", f"/v1/banks/{_seg(bank)}/entries", _one(EntriesAdded), json=body)

    @staticmethod
    def set_entry(bank: str, ref: str | int, enabled: bool, reason: str) -> _Call[list[Entry]]:
        body = {"enabled": enabled, "reason": reason}
        path = f"/v1/banks/{_seg(bank)}/entries/{_seg(ref)}"
        return _Call("PATCH", path, _many(Entry), json=body)

    # -- cases --
    @staticmethod
    def list_cases(
        queue: str | None,
        state: StateFilter,
        priority: Priority | None,
        overdue: bool | None,
        after: int | None,
        limit: int,
        subject: Subject | None = None,
    ) -> _Call[CasePage]:
        params = _params(
            queue=queue,
            state=state,
            priority=priority,
            overdue=overdue,
            after=after,
            limit=limit,
            subject=subject,
        )
        return _Call("GET", "/v1/cases", _one(CasePage), params=params)

    @staticmethod
    def detector_precision() -> _Call[list[DetectorPrecision]]:
        return _Call("GET", "/v1/cases/detectors", _many(DetectorPrecision))

    @staticmethod
    def queues() -> _Call[list[QueueCount]]:
        return _Call("GET", "/v1/cases/queues", _many(QueueCount))

    @staticmethod
    def get_case(case_id: int) -> _Call[Case]:
        return _Call("GET", f"/v1/cases/{int(case_id)}", _one(Case))

    @staticmethod
    def claim(case_id: int) -> _Call[Lease]:
        return _Call("POST", f"/v1/cases/{int(case_id)}/claim", _one(Lease))

    @staticmethod
    def release(case_id: int) -> _Call[None]:
        return _Call("POST", f"/v1/cases/{int(case_id)}/release", _nothing, expect=(204,))

    @staticmethod
    def decide(
        case_id: int,
        decision: DecisionKind,
        classification: str | None,
        labels: Iterable[str],
        note: str,
        reason: str,
        disable_entries: bool,
        detectors: Iterable[str] = (),
    ) -> _Call[DecisionResult]:
        body: dict[str, Any] = {"decision": decision}
        if note:
            body["note"] = note
        if decision == "confirmed":
            body.update(classification=classification, labels=list(labels))
        elif decision == "not_abusive":
            body.update(reason=reason, disable_entries=disable_entries)
            if detectors:
                body["detectors"] = list(detectors)
        path = f"/v1/cases/{int(case_id)}/decide"
        return _Call("POST", path, _one(DecisionResult), json=body)

    @staticmethod
    def reveal(
        case_id: int, item_id: int, continue_past_limit: bool, reason: str = ""
    ) -> _Call[Revealed]:
        path = f"/v1/cases/{int(case_id)}/items/{int(item_id)}/reveal"
        params = _params(continue_past_limit=continue_past_limit or None, reason=reason or None)
        return _Call("POST", path, _one(Revealed), params=params)

    @staticmethod
    def media(case_id: int, item_id: int, clear: bool) -> _Call[Media]:
        path = f"/v1/cases/{int(case_id)}/items/{int(item_id)}/media"

        def parse(r: httpx.Response) -> Media:
            media_type = r.headers.get("content-type", "application/octet-stream")
            return Media(data=r.content, media_type=media_type.split(";")[0].strip())

        return _Call("GET", path, parse, params=_params(clear=clear or None))

    # -- reports --
    @staticmethod
    def list_reports(state: str | None, authority: str | None, limit: int) -> _Call[list[Report]]:
        params = _params(state=state, authority=authority, limit=limit)
        return _Call("GET", "/v1/reports", _many(Report), params=params)

    @staticmethod
    def get_report(report_id: int) -> _Call[Report]:
        return _Call("GET", f"/v1/reports/{int(report_id)}", _one(Report))

    @staticmethod
    def draft_report(
        case_id: int, jurisdictions: Iterable[str], fields: dict[str, Any]
    ) -> _Call[Draft]:
        body = {"case_id": int(case_id), "jurisdictions": list(jurisdictions)}
        body.update({k: v for k, v in fields.items() if v is not None})
        return _Call("POST", "/v1/reports", _one(Draft), json=body, expect=(201,))


# -- sending ------------------------------------------------------------------------------------


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _base_url(url: str, allow_insecure: bool) -> httpx.URL:
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base_url must be an http(s) URL with a host, not {url!r}")
    if parsed.scheme == "http" and not allow_insecure and not _loopback(parsed.host):
        raise ValueError(
            f"refusing to send an API key over plain http to {parsed.host}: use https "
            "(or allow_insecure=True if TLS ends in front of this client)"
        )
    return parsed


def _headers(api_key: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError("an API key is required (bastion key create NAME --scopes ...)")
    return {
        "Authorization": f"Bearer {api_key.strip()}",
        "User-Agent": USER_AGENT,
        "Accept": "application/json, application/problem+json;q=0.9, */*;q=0.5",
        **(extra or {}),
    }


def _finish(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code in call.expect:
        return call.parse(response)
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {
            "title": response.reason_phrase or "HTTP error",
            "status": response.status_code,
            "detail": response.text[:500],
        }
    raise error_for(
        response.status_code,
        problem,
        method=call.method,
        url=call.path,
        headers={k.lower(): v for k, v in response.headers.items()},
    )


def _request_args(call: _Call[Any]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if call.params:
        args["params"] = call.params
    if call.json is not None:
        args["json"] = call.json
    if call.data is not None:
        args["data"] = call.data
    if call.files is not None:
        args["files"] = call.files
    return args


class Client:
    """A synchronous client: ``with Client(url, api_key) as bastion: bastion.scan(...)``.

    Calls raise :class:`bastion.sdk.ApiError` subclasses for error answers and
    :class:`bastion.sdk.TransportError` when no answer came.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        allow_insecure: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=_base_url(base_url, allow_insecure),
            headers=_headers(api_key, headers),
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **_request_args(call))
        except httpx.HTTPError as exc:
            raise TransportError(f"{call.method} {call.path}: {exc}") from exc
        return _finish(call, response)

    # -- scan and lookup --
    def scan(
        self,
        content: Content,
        *,
        filename: str | None = None,
        context: Mapping[str, Any] | None = None,
        threshold: int | None = None,
        dihedral: bool | None = None,
    ) -> ScanResult:
        """Upload content (bytes, a path or a binary file) to ``/v1/scan`` (scope ``match``):
        its signals, matches and the policy's verdict, with the case it opened. ``context``:
        ``content_id``, ``uploader_id``, ``conversation_id``, ``age_band``, ``source``."""
        return self._run(_ops.scan(content, filename, context, threshold, dihedral))

    def scan_url(
        self,
        url: str,
        *,
        context: Mapping[str, Any] | None = None,
        threshold: int | None = None,
        dihedral: bool | None = None,
    ) -> ScanResult:
        """Have Bastion fetch ``url`` (with its SSRF protections) and scan what it gets."""
        return self._run(_ops.scan_url(url, context, threshold, dihedral))

    def lookup(
        self,
        signals: Iterable[SignalLike],
        *,
        threshold: int | None = None,
        banks: Iterable[str] | None = None,
    ) -> list[LookupResult]:
        """Match precomputed hashes (``("pdq", hex)``, ``("md5", hex)``, ...; up to 1,000) with
        ``/v1/lookup`` (scope ``match``): one result per signal, in order."""
        return self._run(_ops.lookup(signals, threshold, banks))

    def lookup_file(
        self, path: str | os.PathLike[str], *, threshold: int | None = None
    ) -> list[LookupResult]:
        """Hash a file here (md5, sha256 and PDQ or vPDQ) and look up only its hashes: the
        content never leaves this machine."""
        return self.lookup(hashes(path), threshold=threshold)

    # -- banks (scope curate) --
    def list_banks(self) -> list[Bank]:
        return self._run(_ops.list_banks())

    def get_bank(self, name: str) -> Bank:
        return self._run(_ops.get_bank(name))

    def create_bank(
        self,
        name: str,
        *,
        description: str = "",
        labels: Iterable[str] = (),
        source: str = "",
        is_demo: bool = False,
        enabled: bool = True,
    ) -> Bank:
        return self._run(_ops.create_bank(name, description, labels, source, is_demo, enabled))

    def add_entries(self, bank: str, entries: Iterable[Mapping[str, Any]]) -> EntriesAdded:
        """Add up to 10,000 entries (``{"signal_type": "pdq", "value": hex, "external_id":
        ..., "labels": [...]}``); each bad one is reported in ``errors``, the rest added."""
        return self._run(_ops.add_entries(bank, entries))

    def disable_entry(self, bank: str, ref: str | int, *, reason: str = "") -> list[Entry]:
        """Disable entries named by id, external id or value (stops matching everywhere)."""
        return self._run(_ops.set_entry(bank, ref, False, reason))

    def enable_entry(self, bank: str, ref: str | int) -> list[Entry]:
        return self._run(_ops.set_entry(bank, ref, True, ""))

    # -- cases (scope review; the key acts as the console user it is bound to) --
    def list_cases(
        self,
        *,
        queue: str | None = None,
        state: StateFilter = "active",
        priority: Priority | None = None,
        overdue: bool | None = None,
        after: int | None = None,
        limit: int = 50,
        subject: Subject | None = None,
    ) -> CasePage:
        """One page of the queue, most urgent first; pass ``next_after`` as ``after``;
        ``subject`` keeps content or account cases."""
        return self._run(_ops.list_cases(queue, state, priority, overdue, after, limit, subject))

    def iter_cases(
        self,
        *,
        queue: str | None = None,
        state: StateFilter = "active",
        priority: Priority | None = None,
        overdue: bool | None = None,
        page_size: int = 100,
        subject: Subject | None = None,
    ) -> Iterator[CaseSummary]:
        """Every matching case, page by page."""
        after = None
        while True:
            page = self.list_cases(
                queue=queue,
                state=state,
                priority=priority,
                overdue=overdue,
                after=after,
                limit=page_size,
                subject=subject,
            )
            yield from page.cases
            if page.next_after is None:
                return
            after = page.next_after

    def queues(self) -> list[QueueCount]:
        return self._run(_ops.queues())

    def detector_precision(self) -> list[DetectorPrecision]:
        """Each risk detector's record in account-case decisions, and its precision."""
        return self._run(_ops.detector_precision())

    def get_case(self, case_id: int) -> Case:
        """The case with items, matches and history (audited as the key's user viewing it)."""
        return self._run(_ops.get_case(case_id))

    def claim(self, case_id: int) -> Lease:
        """Take the case's lease (raises :class:`CaseLeased` when another user holds it)."""
        return self._run(_ops.claim(case_id))

    def release(self, case_id: int) -> None:
        return self._run(_ops.release(case_id))

    def decide(
        self,
        case_id: int,
        decision: DecisionKind,
        *,
        classification: str | None = None,
        labels: Iterable[str] = (),
        note: str = "",
        reason: str = "",
        disable_entries: bool = False,
        detectors: Iterable[str] = (),
    ) -> DecisionResult:
        """Decide a claimed case; :meth:`confirm`, :meth:`not_abusive` and :meth:`escalate`
        are the same with only the fields each takes. An account case is confirmed as
        ``grooming`` or ``sextortion``; its not-abusive finding may name ``detectors``."""
        call = _ops.decide(
            case_id, decision, classification, labels, note, reason, disable_entries, detectors
        )
        return self._run(call)

    def confirm(
        self, case_id: int, classification: str, *, labels: Iterable[str] = (), note: str = ""
    ) -> DecisionResult:
        return self.decide(
            case_id, "confirmed", classification=classification, labels=labels, note=note
        )

    def not_abusive(
        self,
        case_id: int,
        reason: str,
        *,
        disable_entries: bool = False,
        note: str = "",
        detectors: Iterable[str] = (),
    ) -> DecisionResult:
        return self.decide(
            case_id,
            "not_abusive",
            reason=reason,
            disable_entries=disable_entries,
            note=note,
            detectors=detectors,
        )

    def escalate(self, case_id: int, *, note: str = "") -> DecisionResult:
        return self.decide(case_id, "escalate", note=note)

    def reveal(
        self, case_id: int, item_id: int, *, continue_past_limit: bool = False, reason: str = ""
    ) -> Revealed:
        """Reveal one item to the key's user (scope ``media``; counts towards their exposure).
        Needs the user's claim on an active case; a decided case needs ``reason`` (audited)."""
        return self._run(_ops.reveal(case_id, item_id, continue_past_limit, reason))

    def media(self, case_id: int, item_id: int, *, clear: bool = False) -> Media:
        """An item's media (scope ``media``): blurred unless ``clear`` after a reveal."""
        return self._run(_ops.media(case_id, item_id, clear))

    # -- reports (scope report) --
    def list_reports(
        self, *, state: str | None = None, authority: str | None = None, limit: int = 100
    ) -> list[Report]:
        return self._run(_ops.list_reports(state, authority, limit))

    def get_report(self, report_id: int) -> Report:
        return self._run(_ops.get_report(report_id))

    def draft_report(
        self, case_id: int, *, jurisdictions: Iterable[str] = ("US",), **fields: Any
    ) -> Draft:
        """Draft the reports of a confirmed case (``incident_type``, ``first_name``,
        ``last_name`` and ``email`` for US; ``nca={...}`` for UK): see docs/reports.md."""
        return self._run(_ops.draft_report(case_id, jurisdictions, fields))


class AsyncClient:
    """The same operations as :class:`Client`, awaited:
    ``async with AsyncClient(url, api_key) as bastion: await bastion.scan(...)``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        allow_insecure: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=_base_url(base_url, allow_insecure),
            headers=_headers(api_key, headers),
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **_request_args(call))
        except httpx.HTTPError as exc:
            raise TransportError(f"{call.method} {call.path}: {exc}") from exc
        return _finish(call, response)

    async def scan(
        self,
        content: Content,
        *,
        filename: str | None = None,
        context: Mapping[str, Any] | None = None,
        threshold: int | None = None,
        dihedral: bool | None = None,
    ) -> ScanResult:
        return await self._run(_ops.scan(content, filename, context, threshold, dihedral))

    async def scan_url(
        self,
        url: str,
        *,
        context: Mapping[str, Any] | None = None,
        threshold: int | None = None,
        dihedral: bool | None = None,
    ) -> ScanResult:
        return await self._run(_ops.scan_url(url, context, threshold, dihedral))

    async def lookup(
        self,
        signals: Iterable[SignalLike],
        *,
        threshold: int | None = None,
        banks: Iterable[str] | None = None,
    ) -> list[LookupResult]:
        return await self._run(_ops.lookup(signals, threshold, banks))

    async def lookup_file(
        self, path: str | os.PathLike[str], *, threshold: int | None = None
    ) -> list[LookupResult]:
        return await self.lookup(hashes(path), threshold=threshold)

    async def list_banks(self) -> list[Bank]:
        return await self._run(_ops.list_banks())

    async def get_bank(self, name: str) -> Bank:
        return await self._run(_ops.get_bank(name))

    async def create_bank(
        self,
        name: str,
        *,
        description: str = "",
        labels: Iterable[str] = (),
        source: str = "",
        is_demo: bool = False,
        enabled: bool = True,
    ) -> Bank:
        call = _ops.create_bank(name, description, labels, source, is_demo, enabled)
        return await self._run(call)

    async def add_entries(self, bank: str, entries: Iterable[Mapping[str, Any]]) -> EntriesAdded:
        return await self._run(_ops.add_entries(bank, entries))

    async def disable_entry(self, bank: str, ref: str | int, *, reason: str = "") -> list[Entry]:
        return await self._run(_ops.set_entry(bank, ref, False, reason))

    async def enable_entry(self, bank: str, ref: str | int) -> list[Entry]:
        return await self._run(_ops.set_entry(bank, ref, True, ""))

    async def list_cases(
        self,
        *,
        queue: str | None = None,
        state: StateFilter = "active",
        priority: Priority | None = None,
        overdue: bool | None = None,
        after: int | None = None,
        limit: int = 50,
        subject: Subject | None = None,
    ) -> CasePage:
        return await self._run(
            _ops.list_cases(queue, state, priority, overdue, after, limit, subject)
        )

    async def iter_cases(
        self,
        *,
        queue: str | None = None,
        state: StateFilter = "active",
        priority: Priority | None = None,
        overdue: bool | None = None,
        page_size: int = 100,
        subject: Subject | None = None,
    ) -> AsyncIterator[CaseSummary]:
        after = None
        while True:
            page = await self.list_cases(
                queue=queue,
                state=state,
                priority=priority,
                overdue=overdue,
                after=after,
                limit=page_size,
                subject=subject,
            )
            for case in page.cases:
                yield case
            if page.next_after is None:
                return
            after = page.next_after

    async def queues(self) -> list[QueueCount]:
        return await self._run(_ops.queues())

    async def detector_precision(self) -> list[DetectorPrecision]:
        return await self._run(_ops.detector_precision())

    async def get_case(self, case_id: int) -> Case:
        return await self._run(_ops.get_case(case_id))

    async def claim(self, case_id: int) -> Lease:
        return await self._run(_ops.claim(case_id))

    async def release(self, case_id: int) -> None:
        return await self._run(_ops.release(case_id))

    async def decide(
        self,
        case_id: int,
        decision: DecisionKind,
        *,
        classification: str | None = None,
        labels: Iterable[str] = (),
        note: str = "",
        reason: str = "",
        disable_entries: bool = False,
        detectors: Iterable[str] = (),
    ) -> DecisionResult:
        call = _ops.decide(
            case_id, decision, classification, labels, note, reason, disable_entries, detectors
        )
        return await self._run(call)

    async def confirm(
        self, case_id: int, classification: str, *, labels: Iterable[str] = (), note: str = ""
    ) -> DecisionResult:
        return await self.decide(
            case_id, "confirmed", classification=classification, labels=labels, note=note
        )

    async def not_abusive(
        self,
        case_id: int,
        reason: str,
        *,
        disable_entries: bool = False,
        note: str = "",
        detectors: Iterable[str] = (),
    ) -> DecisionResult:
        return await self.decide(
            case_id,
            "not_abusive",
            reason=reason,
            disable_entries=disable_entries,
            note=note,
            detectors=detectors,
        )

    async def escalate(self, case_id: int, *, note: str = "") -> DecisionResult:
        return await self.decide(case_id, "escalate", note=note)

    async def reveal(
        self, case_id: int, item_id: int, *, continue_past_limit: bool = False, reason: str = ""
    ) -> Revealed:
        return await self._run(_ops.reveal(case_id, item_id, continue_past_limit, reason))

    async def media(self, case_id: int, item_id: int, *, clear: bool = False) -> Media:
        return await self._run(_ops.media(case_id, item_id, clear))

    async def list_reports(
        self, *, state: str | None = None, authority: str | None = None, limit: int = 100
    ) -> list[Report]:
        return await self._run(_ops.list_reports(state, authority, limit))

    async def get_report(self, report_id: int) -> Report:
        return await self._run(_ops.get_report(report_id))

    async def draft_report(
        self, case_id: int, *, jurisdictions: Iterable[str] = ("US",), **fields: Any
    ) -> Draft:
        return await self._run(_ops.draft_report(case_id, jurisdictions, fields))


def hashes(path: str | os.PathLike[str]) -> list[Signal]:
    """The signals Bastion would compute for a file (md5, sha256, and PDQ for an image or vPDQ
    for a video), computed here: for :meth:`Client.lookup` without uploading the content."""
    from bastion.signals import hash_file  # numpy, PDQ and FFmpeg: only when asked for

    found = hash_file(path)
    if found.error and not found.signals:
        raise ValueError(f"{path}: {found.error}")
    return [Signal(type=str(s.type), value=s.value, quality=s.quality) for s in found.signals]


__all__ = ["AsyncClient", "Client", "hashes"]

"""A fake NCMEC Hash Sharing API (v2) on a real loopback port, written from NCMEC's documentation
as transcribed by python-threatexchange's client and its test fixtures.

What it models:

* HTTP Basic auth on every call (401 otherwise).
* ``GET /v2/status``: ``<status>`` with ``ipAddress``, ``username``, ``<member id=...>``.
* ``GET /v2/entries?from=&to=`` (``from`` exclusive, ``to`` inclusive, as NCMEC's behaves):
  a ``<queryResult>`` with ``<images>``/``<videos>`` (``count``, ``maxTimestamp``) holding
  ``image``/``video`` entries and ``deletedImage``/``deletedVideo`` tombstones, **not in time
  order**, and ``<paging><next>`` URLs (``start``, ``size``, ``max``, relative to the base URL)
  while more remain. An entry's timestamp is its last change; deleting it turns it into a
  tombstone stamped with the deletion time.
* ``GET /v2/feedback/{TYPE}/reasons`` and ``PUT /v2/entries/{member}/{id}/{TYPE}/feedback``
  (``<feedbackSubmission>`` with ``<affirmative/>`` or ``<negative><reasonIds><guid>``),
  validated and recorded.
* Injectable faults per entries request: ``500``, ``429`` (with ``Retry-After``), ``401``, ``403``,
  ``404``, ``badxml``, ``doctype``, ``doctype16`` (the same entity declarations in a UTF-16
  document), ``deep`` (an entry nested 100,000 elements deep), ``wrongroot``, ``badnext``,
  ``stucknext`` (the page's next URL is the URL just fetched), ``backnext`` (it points one page
  back), ``timeout``.

All hashes are synthetic random hex.
"""

from __future__ import annotations

import base64
import random
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

NS = "https://hashsharing.ncmec.org/hashsharing/v2"
USER, PASSWORD = "bastion-test", "s3cret-hash-sharing-pw"
MEMBER_ID, MEMBER_NAME = 7, "Bastion Test ESP"
BASE_PATH = "/hashsharing"
DEFAULT_SIZE = 1000
REASONS = {
    "MD5": [("3f1c2a9e-1111-4a5b-9c0d-000000000001", "Not CSAM")],
    "PDQ": [
        ("3f1c2a9e-2222-4a5b-9c0d-000000000002", "Not CSAM"),
        ("3f1c2a9e-3333-4a5b-9c0d-000000000003", "Hash collision"),
    ],
    "SHA256": [],
}


def fmt(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rand_hex(n: int) -> str:
    return secrets.token_hex(n // 2)


@dataclass
class Record:
    member_id: int
    id: str
    media: str  # image | video
    timestamp: datetime
    classification: str | None = "A1"
    fingerprints: dict[str, str] = field(default_factory=dict)
    deleted: bool = False
    #: Replaces the whole element when set: for malformed entries.
    raw: str | None = None

    @property
    def key(self) -> str:
        return f"{self.member_id}-{self.id}"


@dataclass
class FeedbackCall:
    member: str
    entry_id: str
    fp_type: str
    vote: str  # affirmative | negative
    reasons: list[str]
    content_type: str


class FakeNcmec:
    def __init__(self, *, seed: int = 6) -> None:
        self.records: dict[str, Record] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.feedback: list[FeedbackCall] = []
        #: (mode, predicate on the query) consumed by the next matching entries request.
        self.faults: list[tuple[str, Any]] = []
        self.timeout_seconds = 2.0
        self._rng = random.Random(seed)
        self._order: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- data -------------------------------------------------------------------------------------

    def add(
        self,
        ts: datetime,
        *,
        member_id: int = 42,
        media: str = "image",
        classification: str | None = "A1",
        fingerprints: dict[str, str] | None = None,
        id: str | None = None,
    ) -> Record:
        if fingerprints is None:
            fingerprints = {"md5": rand_hex(32), "sha1": rand_hex(40), "pdna": rand_hex(288)}
            if media == "image":
                fingerprints["pdq"] = rand_hex(64)
        rec = Record(member_id, id or secrets.token_hex(6), media, ts, classification, fingerprints)
        self._put(rec)
        return rec

    def add_raw(self, ts: datetime, xml: str, *, media: str = "image") -> Record:
        rec = Record(0, "raw-" + secrets.token_hex(4), media, ts, raw=xml)
        self._put(rec)
        return rec

    def update(self, key: str, ts: datetime, **changes: Any) -> Record:
        rec = self.records[key]
        for name, value in changes.items():
            setattr(rec, name, value)
        rec.timestamp = ts
        self._put(rec)
        return rec

    def delete(self, key: str, ts: datetime) -> None:
        rec = self.records[key]
        rec.deleted, rec.timestamp, rec.fingerprints = True, ts, {}
        self._put(rec)

    def _put(self, rec: Record) -> None:
        with self._lock:
            self.records[rec.key] = rec
            self._order[rec.key] = self._rng.random()  # NCMEC's order is not time order

    def fault(self, mode: str, *, when: Any = None) -> None:
        """Fail the next entries request (matching ``when(query)``, if given) with ``mode``."""
        self.faults.append((mode, when))

    def entries_requests(self) -> list[dict[str, list[str]]]:
        return [q for m, p, q in self.requests if m == "GET" and p.endswith("/v2/entries")]

    # -- server -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{BASE_PATH}"

    def start(self) -> FakeNcmec:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- request handling -------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append((method, parts.path, query))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            return _send(h, 401, b"<html>Unauthorized</html>", {"WWW-Authenticate": "Basic"})
        if not parts.path.startswith(BASE_PATH + "/v2/"):
            return _send(h, 404, b"")
        path = parts.path[len(BASE_PATH) :].split("/")[1:]  # ["v2", ...]
        if method == "GET" and path == ["v2", "status"]:
            return _send(h, 200, self._status())
        if method == "GET" and path == ["v2", "entries"]:
            return self._entries(h, query)
        if method == "GET" and len(path) == 4 and path[1] == "feedback" and path[3] == "reasons":
            if path[2] not in REASONS:
                return _send(h, 404, b"")
            return _send(h, 200, _reasons(path[2]))
        if method == "PUT" and len(path) == 6 and path[1] == "entries" and path[5] == "feedback":
            return self._feedback(h, path[2], path[3], path[4], body)
        return _send(h, 404, b"")

    def _status(self) -> bytes:
        root = ET.Element("status", {"xmlns": NS})
        ET.SubElement(root, "ipAddress").text = "127.0.0.1"
        ET.SubElement(root, "username").text = USER
        ET.SubElement(root, "member", {"id": str(MEMBER_ID)}).text = MEMBER_NAME
        return _xml(root)

    def _take_fault(self, query: dict[str, list[str]]) -> str | None:
        with self._lock:
            for i, (mode, when) in enumerate(self.faults):
                if when is None or when(query):
                    del self.faults[i]
                    return mode
        return None

    def _entries(self, h: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        mode = self._take_fault(query)
        if mode == "500":
            return _send(h, 500, b"<html>Internal Server Error</html>")
        if mode == "429":
            return _send(h, 429, b"", {"Retry-After": "7"})
        if mode in ("401", "403", "404"):
            return _send(h, int(mode), b"")
        if mode == "timeout":
            time.sleep(self.timeout_seconds)
            return _send(h, 500, b"")
        if mode == "badxml":
            return _send(h, 200, b'<?xml version="1.0"?><queryResult xmlns="x"><images><image>')
        if mode == "doctype":
            bomb = (
                b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "aaaaaaaaaa">'
                b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><queryResult>&b;</queryResult>'
            )
            return _send(h, 200, bomb)
        if mode == "doctype16":
            bomb16 = (
                '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE q [<!ENTITY a "aaaaaaaaaa">'
                '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><queryResult>&b;</queryResult>'
            )
            return _send(h, 200, bomb16.encode("utf-16"))
        if mode == "deep":
            depth = 100_000
            deep = (
                f'<?xml version="1.0"?><queryResult xmlns="{NS}"><images count="1"><image>'
                '<id>deep1</id><member id="42">M</member>'
                + "<x>" * depth
                + "</x>" * depth
                + "</image></images></queryResult>"
            )
            return _send(h, 200, deep.encode())
        if mode == "wrongroot":
            return _send(h, 200, b'<?xml version="1.0"?><error>maintenance</error>')
        try:
            lo = _parse_ts(query["from"][0])
            hi = _parse_ts(query["to"][0])
            start = int(query.get("start", ["1"])[0])
            size = int(query.get("size", [str(DEFAULT_SIZE)])[0])
        except (KeyError, ValueError):
            return _send(h, 400, b"<error>bad request</error>")
        if start < 1 or size < 1 or hi < lo:
            return _send(h, 400, b"<error>bad request</error>")
        with self._lock:
            matching = [r for r in self.records.values() if lo < r.timestamp <= hi]
            matching.sort(key=lambda r: self._order[r.key])
        total = len(matching)
        page = matching[start - 1 : start - 1 + size]
        root = ET.Element("queryResult", {"xmlns": NS})
        for media in ("image", "video"):
            recs = [r for r in page if r.media == media]
            container = ET.SubElement(root, media + "s", {"count": str(len(recs))})
            if recs:
                container.set("maxTimestamp", fmt(max(r.timestamp for r in recs)))
            for rec in recs:
                container.append(_record(rec))
        nxt = start + size
        if mode == "stucknext":
            nxt = start
        elif mode == "backnext":
            nxt = max(1, start - size)
        if nxt <= total:
            params = {
                "from": query["from"][0],
                "to": query["to"][0],
                "start": nxt,
                "size": size,
                "max": total,
            }
            link = "/v2/entries?" + urlencode(params)
            if mode == "badnext":
                link = "https://elsewhere.example/v2/entries?start=1"
            ET.SubElement(ET.SubElement(root, "paging"), "next").text = link
        return _send(h, 200, _xml(root))

    def _feedback(
        self, h: BaseHTTPRequestHandler, member: str, entry_id: str, fp_type: str, body: bytes
    ) -> None:
        content_type = h.headers.get("Content-Type", "")
        if "xml" not in content_type:
            return _send(h, 415, b"")
        rec = self.records.get(f"{member}-{entry_id}")
        if rec is None or rec.deleted or fp_type.lower() not in rec.fingerprints:
            return _send(h, 404, b"<error>no such entry or fingerprint</error>")
        if b"<!DOCTYPE" in body.upper():
            return _send(h, 400, b"")
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return _send(h, 400, b"<error>malformed</error>")
        if root.tag != f"{{{NS}}}feedbackSubmission" or len(root) != 1:
            return _send(h, 400, b"<error>invalid submission</error>")
        vote = root[0]
        kind = vote.tag.removeprefix(f"{{{NS}}}")
        reasons: list[str] = []
        if kind == "negative":
            reasons = [(g.text or "") for g in vote.iter(f"{{{NS}}}guid")]
            valid = {guid for guid, _ in REASONS.get(fp_type, [])}
            if not reasons or any(r not in valid for r in reasons):
                return _send(h, 400, b"<error>invalid reason</error>")
        elif kind != "affirmative" or len(vote):
            return _send(h, 400, b"<error>invalid submission</error>")
        with self._lock:
            self.feedback.append(
                FeedbackCall(member, entry_id, fp_type, kind, reasons, content_type)
            )
        root = ET.Element("submissionResult", {"xmlns": NS})
        return _send(h, 200, _xml(root))


def _record(rec: Record) -> ET.Element:
    if rec.raw is not None:
        return ET.fromstring(rec.raw)
    tag = rec.media if not rec.deleted else "deleted" + rec.media.capitalize()
    el = ET.Element(tag)
    ET.SubElement(el, "member", {"id": str(rec.member_id)}).text = f"Member {rec.member_id}"
    ET.SubElement(el, "timestamp").text = fmt(rec.timestamp)
    ET.SubElement(el, "id").text = rec.id
    if rec.deleted:
        return el
    if rec.classification:
        ET.SubElement(el, "classification").text = rec.classification
    fps = ET.SubElement(el, "fingerprints")
    for name, value in rec.fingerprints.items():
        if value.startswith("href:"):  # large fingerprints come as links
            ET.SubElement(fps, name, {"rel": "self", "href": value[5:]})
        else:
            ET.SubElement(fps, name).text = value
    return el


def _reasons(fp_type: str) -> bytes:
    root = ET.Element("availableFeedbackReasons", {"xmlns": NS})
    for guid, name in REASONS[fp_type]:
        ET.SubElement(root, "reason", {"guid": guid, "name": name, "type": fp_type.title()})
    return _xml(root)


def _parse_ts(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        raise ValueError("naive time")
    return ts.astimezone(UTC)


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + ET.tostring(root)


def _send(
    h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    try:
        h.send_response(status)
        h.send_header("Content-Type", "application/xml; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
        pass

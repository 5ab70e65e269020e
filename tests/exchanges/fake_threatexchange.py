"""A fake Meta ThreatExchange Graph API on loopback, written from the public reference
(developers.facebook.com/docs/threat-exchange: apis/threat-updates, reacting, privacy) and
python-threatexchange's client (see docs/exchanges-threatexchange.md).

- ``GET /{version}/{privacy_group}/threat_updates?access_token=&types=&fields=&limit=
  &start_time=&stop_time=&after=``: the group's indicators updated in ``[start_time, stop_time)``,
  ordered by ``last_updated``; Graph API paging (``paging.cursors.after`` and a ``paging.next``
  URL that carries the access token, as Graph API's do). Deleted indicators stay listed with
  ``should_delete: true`` (and no descriptors). Only the requested top-level ``fields`` are sent.
- ``POST /{version}/{descriptor_id}`` with ``reactions=A,B`` (form body or query): records
  reactions on another app's descriptor; ``{"success": true}``.
- Broken-server switches: ``next_origin`` (paging.next on another scheme/host), ``stuck_next``
  (paging.next is the page just served, so it never advances), ``no_content_length`` (bodies
  delimited by closing the connection, so a client cannot size them before reading).
- Errors have Graph API's shape ``{"error": {"message", "type", "code", "fbtrace_id"}}``; a bad
  token is HTTP 400 with code 190 (OAuthException).

Indicators in tests are random hex or example.org URLs: no real data.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

APP_ID = "1234567890123"
TOKEN = f"{APP_ID}|{'s3cr' * 8}"
OTHER_APP = "9876543210987"
VERSION = "v21.0"
GROUP = "303636684709969"
REACTIONS = {
    "SAW_THIS_TOO",
    "NON_MALICIOUS",
    "DISAGREE_WITH_TAGS",
    "HELPFUL",
    "NOT_HELPFUL",
    "OUTDATED",
    "WANT_MORE_INFO",
    "INGESTED",
    "ALREADY_KNOWN",
    "IN_REVIEW",
    "REVIEWED",
}


def graph_error(message: str, code: int, kind: str = "OAuthException") -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": kind,
            "code": code,
            "fbtrace_id": secrets.token_hex(6),
        }
    }


@dataclass
class Fault:
    endpoint: str  # "threat_updates" or "reaction"
    status: int
    body: Any = None
    headers: dict[str, str] | None = None


class FakeThreatExchange:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clock = 1_700_000_000
        self._next_id = 100_000
        #: indicator id -> indicator record (with all fields).
        self.indicators: dict[str, dict[str, Any]] = {}
        #: descriptor id -> (indicator id, owner app id)
        self.descriptors: dict[str, tuple[str, str]] = {}
        #: Records served verbatim at the start of the first page (malformed-record tests).
        self.extra_records: list[Any] = []
        self.faults: deque[Fault] = deque()
        self.reactions: list[tuple[str, list[str]]] = []
        self.requests: list[tuple[str, str, str]] = []
        #: Override the scheme://host of paging.next URLs (to test a hostile next link).
        self.next_origin: str | None = None
        self.stuck_next = False
        self.no_content_length = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeThreatExchange:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls ---------------------------------------------------------------------

    def _id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def tick(self, seconds: int = 1) -> int:
        self.clock += seconds
        return self.clock

    def add(
        self,
        indicator: str | None = None,
        *,
        type: str = "HASH_PDQ",
        owner: str = OTHER_APP,
        status: str = "MALICIOUS",
        tags: tuple[str, ...] = ("test_fixture",),
        descriptors: int = 1,
    ) -> str:
        """A new indicator with ``descriptors`` descriptors; returns the indicator id."""
        with self.lock:
            self.clock += 1
            ident = self._id()
            rows = []
            for _ in range(descriptors):
                d_id = self._id()
                self.descriptors[d_id] = (ident, owner)
                rows.append(
                    {
                        "id": d_id,
                        "owner": {"id": owner, "name": f"App {owner[-4:]}"},
                        "status": status,
                        "tags": list(tags),
                    }
                )
            self.indicators[ident] = {
                "id": ident,
                "indicator": indicator or secrets.token_hex(32),
                "type": type,
                "last_updated": self.clock,
                "should_delete": False,
                "descriptors": {"data": rows},
            }
        return ident

    def update(self, ident: str, **descriptor_fields: Any) -> None:
        """Change the indicator's descriptors (moves it to the end of the update list)."""
        with self.lock:
            self.clock += 1
            record = self.indicators[ident]
            for row in record["descriptors"]["data"]:
                row.update(descriptor_fields)
            record["last_updated"] = self.clock

    def delete(self, ident: str) -> None:
        with self.lock:
            self.clock += 1
            record = self.indicators[ident]
            record["should_delete"] = True
            record.pop("descriptors", None)
            record["last_updated"] = self.clock

    def fail_next(
        self, endpoint: str, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.faults.append(Fault(endpoint, status, body, headers))

    # -- the API ----------------------------------------------------------------------------

    def threat_updates(self, group: str, query: dict[str, str]) -> tuple[int, Any]:
        if group != GROUP:
            return 400, graph_error(
                f"Unsupported get request. Object with ID '{group}' does not exist",
                100,
                "GraphMethodException",
            )
        try:
            start = int(query["start_time"]) if "start_time" in query else None
            stop = int(query["stop_time"]) if "stop_time" in query else None
            limit = int(query.get("limit", "25"))
        except ValueError:
            return 400, graph_error("Invalid parameter", 100, "OAuthException")
        types = set(query["types"].split(",")) if query.get("types") else None
        fields = _top_fields(query.get("fields", "id"))
        after = None
        if "after" in query:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(query["after"])))
            except ValueError:
                return 400, graph_error("Invalid cursor", 100)
        with self.lock:
            rows = [
                r
                for r in self.indicators.values()
                if (start is None or r["last_updated"] >= start)
                and (stop is None or r["last_updated"] < stop)
                and (types is None or r["type"] in types)
            ]
            rows.sort(key=lambda r: (r["last_updated"], int(r["id"])))
            if after is not None:
                rows = [r for r in rows if (r["last_updated"], int(r["id"])) > after]
            page = [
                {k: json.loads(json.dumps(v)) for k, v in r.items() if k in fields}
                for r in rows[:limit]
            ]
            if after is None and self.extra_records:
                page = list(self.extra_records) + page
        body: dict[str, Any] = {"data": page}
        if len(rows) > limit:
            last = rows[limit - 1]
            cursor = base64.urlsafe_b64encode(
                json.dumps([last["last_updated"], int(last["id"])]).encode()
            ).decode()
            next_query = {k: v for k, v in query.items() if k != "after"}
            next_query["after"] = cursor
            if self.stuck_next and "after" in query:
                next_query["after"] = query["after"]
            origin = self.next_origin or self.origin
            body["paging"] = {
                "cursors": {"before": "", "after": cursor},
                "next": f"{origin}/{VERSION}/{group}/threat_updates/?{urlencode(next_query)}",
            }
        return 200, body

    def react(self, descriptor_id: str, params: dict[str, str]) -> tuple[int, Any]:
        known = self.descriptors.get(descriptor_id)
        if known is None:
            return 400, graph_error("Unsupported post request.", 100, "GraphMethodException")
        if known[1] == APP_ID:
            return 400, graph_error("You cannot react to your own descriptor", 100)
        names = [n for n in params.get("reactions", "").split(",") if n]
        if not names or any(n not in REACTIONS for n in names):
            return 400, graph_error("Invalid reaction type", 100)
        with self.lock:
            self.reactions.append((descriptor_id, names))
        return 200, {"success": True}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if not fake.no_content_length:
                    self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                if method == "POST":
                    params.update({k: v[-1] for k, v in parse_qs(raw).items()})
                fake.requests.append((method, self.path, raw))
                segments = [s for s in parts.path.split("/") if s]
                if segments[:1] != [VERSION]:
                    self._send(400, graph_error("Unknown path components", 2500))
                    return
                if method == "GET" and len(segments) == 3 and segments[2] == "threat_updates":
                    endpoint = "threat_updates"
                elif method == "POST" and len(segments) == 2:
                    endpoint = "reaction"
                else:
                    self._send(400, graph_error("Unknown path components", 2500))
                    return
                with fake.lock:
                    fault = fake.faults[0] if fake.faults else None
                    if fault is not None and fault.endpoint == endpoint:
                        fake.faults.popleft()
                    else:
                        fault = None
                if fault is not None:
                    self._send(fault.status, fault.body or {}, fault.headers)
                    return
                if params.get("access_token") != TOKEN:
                    self._send(400, graph_error("Invalid OAuth access token data.", 190))
                    return
                if endpoint == "threat_updates":
                    self._send(*fake.threat_updates(segments[1], params))
                else:
                    self._send(*fake.react(segments[1], params))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler


def _top_fields(spec: str) -> set[str]:
    """Top-level names of a Graph API ``fields`` selector (``a,b{c,d{e}},f`` -> a, b, f)."""
    out: set[str] = set()
    depth = 0
    name = ""
    for ch in spec + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            if name.strip():
                out.add(name.strip())
            name = ""
        elif depth == 0:
            name += ch
    return out

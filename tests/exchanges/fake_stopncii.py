"""A fake StopNCII.org hash API on loopback, written from the wire format documented by
python-threatexchange's StopNCII client and its tests (see docs/exchanges-stopncii.md).

- ``GET /v1/FetchHashes?startTimestamp=&pageSize=&nextPageToken=``: records modified at or after
  ``startTimestamp``, oldest first, ``pageSize`` at a time; an opaque page token names the last
  record served, so records changing mid-pass do not shift pages. Answers ``count``,
  ``nextPageToken``, ``nextSetTimestamp``, ``hasMoreRecords``, ``hashRecords``.
- ``POST /v1/SubmitFeedback`` with ``{"count", "hashFeedbacks": [{hashValue, feedbackValue,
  tags}]}``: validated and recorded in ``feedback``.
- Both need ``Ocp-Apim-Subscription-Key`` and the endpoint's ``x-functions-key`` (401 otherwise,
  as Azure API Management answers).

Faults are scripted with :meth:`FakeStopNCII.fail_next` (answered instead of the next FetchHashes
or SubmitFeedback call). Two switches model broken servers: ``stuck_tokens`` answers a page
token with the same token again (a server that never advances), and ``no_content_length``
sends bodies without ``Content-Length`` (delimited by closing the connection), so a client
cannot size them before reading. Hash values in tests are random hex: no real hashes.
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
from urllib.parse import parse_qs, urlsplit

SUBSCRIPTION_KEY = "sub-" + "a1" * 8
FETCH_KEY = "fetch-" + "b2" * 8
FEEDBACK_KEY = "feedback-" + "c3" * 8

FEEDBACK_VALUES = {
    "Unknown",
    "None",
    "QualityUnknown",
    "PendingReview",
    "Blocked",
    "NotBlocked",
    "Withdrawn",
    "Deleted",
}


def random_pdq() -> str:
    return secrets.token_hex(32)


def random_md5() -> str:
    return secrets.token_hex(16)


@dataclass
class Fault:
    """What to answer instead of the next call of ``endpoint``: ``status`` with ``body``
    (``bytes`` verbatim, else JSON) and extra ``headers``."""

    endpoint: str
    status: int
    body: Any = None
    headers: dict[str, str] | None = None


class FakeStopNCII:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: hashValue -> record, as StopNCII would serve it.
        self.records: dict[str, dict[str, Any]] = {}
        #: Records served verbatim on the first page, before the real ones (malformed-record
        #: tests): they have no place in the ordering.
        self.extra_records: list[Any] = []
        self.clock = 1_700_000_000
        self.faults: deque[Fault] = deque()
        #: Page tokens issued; ``expire_tokens()`` forgets them (the API's tokens are short-lived).
        self.tokens: dict[str, tuple[int, int, str]] = {}
        self.feedback: list[dict[str, Any]] = []
        self.stuck_tokens = False
        self.no_content_length = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- test controls ---------------------------------------------------------------------

    def __enter__(self) -> FakeStopNCII:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def tick(self, seconds: int = 1) -> int:
        self.clock += seconds
        return self.clock

    def add(
        self,
        value: str | None = None,
        *,
        signal_type: str = "ImagePDQ",
        status: str = "Active",
        cases: int = 1,
        feedbacks: list[dict[str, Any]] | None = None,
    ) -> str:
        """Add or replace a hash record; returns its value."""
        value = value or (random_pdq() if signal_type == "ImagePDQ" else random_md5())
        with self.lock:
            self.clock += 1
            self.records[value] = {
                "lastModtimestamp": self.clock,
                "signalType": signal_type,
                "hashValue": value,
                "hashStatus": status,
                "caseNumbers": {f"case-{secrets.token_hex(4)}": status for _ in range(cases)},
                "CSPFeedbacks": list(feedbacks or []),
            }
        return value

    def set_status(self, value: str, status: str, *, cases_too: bool = True) -> None:
        """Change a hash's aggregate status (a withdrawal or deletion moves it to the end)."""
        with self.lock:
            self.clock += 1
            record = self.records[value]
            record["hashStatus"] = status
            record["lastModtimestamp"] = self.clock
            if cases_too:
                record["caseNumbers"] = {k: status for k in record["caseNumbers"]}

    def fail_next(
        self,
        endpoint: str,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.faults.append(Fault(endpoint, status, body, headers))

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    # -- the API ----------------------------------------------------------------------------

    def _ordered(self, start: int) -> list[dict[str, Any]]:
        rows = [r for r in self.records.values() if r["lastModtimestamp"] >= start]
        return sorted(rows, key=lambda r: (r["lastModtimestamp"], r["hashValue"]))

    def fetch_hashes(self, query: dict[str, str]) -> tuple[int, Any]:
        try:
            start = int(query.get("startTimestamp", "0"))
            size = int(query.get("pageSize", "800"))
        except ValueError:
            return 400, {"message": "startTimestamp and pageSize must be integers"}
        if size < 1:
            return 400, {"message": "pageSize must be positive"}
        token = query.get("nextPageToken")
        with self.lock:
            after: tuple[int, str] | None = None
            first = not token
            if token:
                known = self.tokens.get(token)
                if known is None or known[0] != start:
                    return 400, {"message": "invalid or expired nextPageToken"}
                after = (known[1], known[2])
            rows = self._ordered(start)
            if after is not None:
                rows = [r for r in rows if (r["lastModtimestamp"], r["hashValue"]) > after]
            page = [json.loads(json.dumps(r)) for r in rows[:size]]
            has_more = len(rows) > size
            next_token = None
            if token and self.stuck_tokens:
                has_more, next_token = True, token
            elif has_more:
                last = page[-1]
                next_token = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
                self.tokens[next_token] = (start, last["lastModtimestamp"], last["hashValue"])
            if first and self.extra_records:
                page = list(self.extra_records) + page
            newest = max((r["lastModtimestamp"] for r in rows), default=start)
        return 200, {
            "count": len(page),
            "nextPageToken": next_token,
            "nextSetTimestamp": newest,
            "hasMoreRecords": has_more,
            "hashRecords": page,
        }

    def submit_feedback(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"message": "body must be a JSON object"}
        items = body.get("hashFeedbacks")
        if not isinstance(items, list) or body.get("count") != len(items):
            return 400, {"message": "count must equal the number of hashFeedbacks"}
        for item in items:
            if not isinstance(item, dict) or set(item) - {"hashValue", "feedbackValue", "tags"}:
                return 400, {"message": "unexpected feedback fields"}
            if not isinstance(item.get("hashValue"), str) or not item["hashValue"]:
                return 400, {"message": "hashValue is required"}
            if item.get("feedbackValue") not in FEEDBACK_VALUES:
                return 400, {"message": "unknown feedbackValue"}
            tags = item.get("tags", [])
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                return 400, {"message": "tags must be a list of strings"}
        with self.lock:
            self.feedback.extend(items)
        return 200, {"count": len(items)}

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
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append((method, self.path, headers))
                endpoints = {
                    ("GET", "/v1/FetchHashes"): ("FetchHashes", FETCH_KEY),
                    ("POST", "/v1/SubmitFeedback"): ("SubmitFeedback", FEEDBACK_KEY),
                }
                route = endpoints.get((method, parts.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if route is None:
                    self._send(404, {"message": "Resource not found"})
                    return
                name, function_key = route
                with fake.lock:
                    fault = fake.faults[0] if fake.faults else None
                    if fault is not None and fault.endpoint == name:
                        fake.faults.popleft()
                    else:
                        fault = None
                if fault is not None:
                    self._send(fault.status, fault.body or {}, fault.headers)
                    return
                if headers.get("ocp-apim-subscription-key") != SUBSCRIPTION_KEY:
                    self._send(
                        401,
                        {
                            "statusCode": 401,
                            "message": "Access denied due to invalid subscription key.",
                        },
                    )
                    return
                if headers.get("x-functions-key") != function_key:
                    self._send(401, {"message": "Unauthorized"})
                    return
                if name == "FetchHashes":
                    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                    self._send(*fake.fetch_hashes(query))
                    return
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    self._send(400, {"message": "body is not JSON"})
                    return
                self._send(*fake.submit_feedback(body))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler

"""A real webhook receiver for tests: a threaded HTTP server on a free loopback port that checks
signatures and honours Idempotency-Key the way the docs ask platforms to (apply the first time,
acknowledge repeats with 200 without applying again).

``plan(key, nth)`` scripts the answer to the ``nth`` request carrying ``key``: an int status to
answer with (without applying), ``("stall", seconds)`` to hold the request before applying (and
set ``stalled``), or None for the normal behaviour.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bastion.actions import SignatureError, verify_signature

Plan = Callable[[str, int], "int | tuple[str, float] | None"]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


class Receiver:
    def __init__(self, secret: bytes | str, plan: Plan | None = None) -> None:
        self.secret = secret
        self.plan = plan or (lambda key, nth: None)
        self.requests: list[Received] = []
        self.received: Counter[str] = Counter()
        #: key -> the body applied (once).
        self.applied: dict[str, bytes] = {}
        self.duplicates: Counter[str] = Counter()
        self.stalled = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, answer = receiver.handle(self.path, dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status in (301, 302, 307, 308):
                        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender is gone (killed, or gave up after its timeout)

        return Handler

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            verify_signature(self.secret, lower.get("bastion-signature", ""), body)
            ok = True
        except SignatureError:
            ok = False
        key = lower.get("idempotency-key", "")
        with self.lock:
            self.requests.append(Received(path, lower, body, ok))
            self.received[key] += 1
            nth = self.received[key]
        if not ok:
            return 401, {"error": "bad signature"}
        step = self.plan(key, nth)
        if isinstance(step, int):
            return step, {"error": "scripted"}
        if isinstance(step, tuple) and step[0] == "stall":
            self.stalled.set()
            time.sleep(step[1])
        with self.lock:
            if key in self.applied:
                self.duplicates[key] += 1
                return 200, {"status": "duplicate"}
            self.applied[key] = body
        return 200, {"status": "applied"}

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running(secret: bytes | str, plan: Plan | None = None) -> Iterator[Receiver]:
    receiver = Receiver(secret, plan).start()
    try:
        yield receiver
    finally:
        receiver.stop()

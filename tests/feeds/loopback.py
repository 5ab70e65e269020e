"""Real publishers on loopback for the subscriber tests: the Bastion app served by uvicorn in a
thread, and a proxy that can alter what passes through (a man in the middle)."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.feeds.store import FeedStore
from bastion.server import create_app
from tests.fixtures.servers import AppServer


class Publisher:
    """A publishing Bastion: its own store, served on loopback, with a feed of bank ``bank``."""

    def __init__(self, store: Store, organisation: str, *, bank: str = "pub") -> None:
        self.store = store
        secret = base64.b64encode(uuid.uuid4().bytes * 2).decode()
        self.feeds = FeedStore(store, MasterKey.from_base64(secret))
        settings = Settings(rate_limit_per_minute=0, index_poll_seconds=0.2, secret_key=secret)
        self.server = AppServer(create_app(settings, store=store)).start()
        self.url = self.server.url
        store.create_bank(bank)
        self.bank = bank
        self.feeds.create("shared", [bank], organisation=organisation)
        key, self.token = store.create_api_key(f"sub-{uuid.uuid4().hex[:6]}", {"feed"})
        self.key_name = key.name
        self.feeds.grant(key.name, ["shared"])
        self.public_key = self.feeds.public_key().text

    def config(self, url: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "url": url or self.url,
            "feed": "shared",
            "publisher_key": self.public_key,
            "page_size": 3,
            **extra,
        }

    def stop(self) -> None:
        self.server.stop()


class TamperProxy:
    """Forwards every request to ``upstream``; ``tamper(path, doc)`` may rewrite JSON answers
    on the way back, as an attacker between the two Bastions could."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.tamper: Callable[[str, Any], Any] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type", "accept")
                }
                r = httpx.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body
                )
                data = r.content
                if proxy.tamper is not None and r.headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    doc = proxy.tamper(self.path, json.loads(data))
                    data = json.dumps(doc).encode()
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "text/plain"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _forward
            do_POST = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

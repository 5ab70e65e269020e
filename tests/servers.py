"""A real `bastion serve` (the installed command) on a free loopback port, for the end-to-end and
browser tests: started like an operator starts it, ready once /readyz says so."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

BASTION = str(Path(sys.executable).with_name("bastion"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``bastion serve`` in ``tmp`` (its working directory and log folder). ``db_url`` None means
    the embedded default; ``env`` adds settings (``BASTION_*``); ``args`` go to ``serve``."""

    def __init__(
        self,
        db_url: str | None,
        tmp: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "BASTION_INDEX_POLL_SECONDS": "0.5", **(env or {})}
        full_env.pop("BASTION_DATABASE_URL", None)
        if db_url is not None:
            full_env["BASTION_DATABASE_URL"] = db_url
        self.log = (tmp / f"server-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [BASTION, "serve", "--port", str(self.port), "--log-level", "warning", *args],
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    @property
    def output(self) -> str:
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

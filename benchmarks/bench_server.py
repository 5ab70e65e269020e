"""Load on `/v1/lookup`: wrk on loopback against `bastion serve`, beside an in-process baseline.

`python -m benchmarks.bench_server [--size 1000000] [--seconds 15] [--connections 8] [--quick]`.
The bank is N random PDQ hashes in a fresh SQLite store; each request carries one hash (half are
bank hashes with 10 bits flipped, half random). The baseline is the same lookups made in-process
through the matcher, with no HTTP, so the ratio shows what the HTTP layer costs. wrk (Debian's
package; `make bench` installs it) and the server share the machine's two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from bastion.banks import NewEntry
from bastion.db import Store
from bastion.index.matcher import Matcher
from bastion.signals.base import SignalType

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "server.md"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BASTION_BENCH_TOKEN")
local bodies = {}
for line in io.lines(os.getenv("BASTION_BENCH_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "/v1/lookup", nil, bodies[(i % #bodies) + 1])
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data(size: int, nqueries: int) -> tuple[np.ndarray, list[str], int]:
    rng = np.random.default_rng(23)
    bank = rng.integers(0, 256, size=(size, 32), dtype=np.uint8)
    half = nqueries // 2
    q = np.empty((nqueries, 32), dtype=np.uint8)
    q[:half] = bank[rng.choice(size, half, replace=False)]
    for row in q[:half]:
        for bit in rng.choice(256, 10, replace=False):
            row[bit // 8] ^= 1 << (7 - bit % 8)
    q[half:] = rng.integers(0, 256, size=(nqueries - half, 32), dtype=np.uint8)
    return bank, [r.tobytes().hex() for r in q], half


def in_process(store: Store, queries: list[str]) -> tuple[float, float, float, int]:
    matcher = Matcher.from_entries(store.iter_index_entries())
    matcher.pdq.compact()
    times = []
    hits = 0
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        hits += bool(matcher.lookup_pdq([q])[0])
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    times.sort()
    return len(queries) / total, statistics.median(times), times[int(len(times) * 0.99)], hits


def parse_wrk(text: str) -> dict[str, float]:
    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", text)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "requests": float(total.group(1)) if total else 0.0,
        "p50": ms("50"),
        "p99": ms("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="100k hashes, 5 s of load")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.size, args.seconds = 100_000, 5
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (make bench installs it: apt-get install wrk)")
        return 1
    bastion = str(Path(sys.executable).with_name("bastion"))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        url = f"sqlite:///{tmp / 'bastion.db'}"
        bank, queries, planted = make_data(args.size, 2000)
        with Store.open(url) as store:
            store.create_bank("bench", labels=["demo"], is_demo=True)
            t0 = time.perf_counter()
            store.add_entries(
                "bench",
                (NewEntry(SignalType.PDQ, r.tobytes().hex()) for r in bank),
                batch_size=20_000,
            )
            setup = time.perf_counter() - t0
            _, token = store.create_api_key("bench", {"match"})
            base_rps, base_p50, base_p99, base_hits = in_process(store, queries)
        bodies = tmp / "bodies.txt"
        bodies.write_text(
            "".join(json.dumps({"signals": [{"type": "pdq", "value": q}]}) + "\n" for q in queries)
        )
        script = tmp / "lookup.lua"
        script.write_text(LUA)
        port = free_port()
        env = {
            **os.environ,
            "BASTION_DATABASE_URL": url,
            "BASTION_RATE_LIMIT_PER_MINUTE": "0",
            "BASTION_BENCH_TOKEN": token,
            "BASTION_BENCH_BODIES": str(bodies),
        }
        log = (tmp / "server.log").open("w")
        server = subprocess.Popen(
            [bastion, "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            t0 = time.perf_counter()
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.perf_counter() - t0 > 300:
                    print((tmp / "server.log").read_text())
                    return 1
                time.sleep(0.5)
            ready = time.perf_counter() - t0
            http_hits = 0
            for chunk in (queries[:1000], queries[1000:]):  # the API takes 1,000 a call
                check = httpx.post(
                    f"http://127.0.0.1:{port}/v1/lookup",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"signals": [{"type": "pdq", "value": q} for q in chunk]},
                ).json()
                http_hits += sum(bool(r["matches"]) for r in check["results"])
            out = subprocess.run(
                [
                    wrk,
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{args.seconds}s",
                    "--latency",
                    "-s",
                    str(script),
                    f"http://127.0.0.1:{port}",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            w = parse_wrk(out.stdout)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            log.close()

    n = args.size
    lines = [
        f"# `/v1/lookup` under load: {n:,}-hash bank, one PDQ hash per request",
        "",
        f"wrk -t1 -c{args.connections} -d{args.seconds}s on loopback; one `bastion serve` worker;"
        f" bank loaded in {setup:.0f} s, server ready in {ready:.0f} s.",
        "",
        "| path | lookups/s | p50 ms | p99 ms | failed |",
        "| --- | --- | --- | --- | --- |",
        f"| HTTP `POST /v1/lookup` (auth, validation, JSON, metrics) | {w['rps']:,.0f} | "
        f"{w['p50']:.2f} | {w['p99']:.2f} | {int(w['non2xx'] + w['socket_errors'])} of "
        f"{int(w['requests']):,} |",
        f"| in-process `Matcher.lookup_pdq`, one hash a call (baseline) | {base_rps:,.0f} | "
        f"{base_p50 * 1000:.2f} | {base_p99 * 1000:.2f} | - |",
        "",
        f"Matches among the 2,000 distinct queries ({planted:,} planted): in-process "
        f"{base_hits:,}, over HTTP {http_hits:,}.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    ok = w["non2xx"] == 0 and w["socket_errors"] == 0 and http_hits == base_hits == planted
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Load on `/v1/contact/decide`: wrk on loopback against `bastion serve`, beside same-run baselines.

`python -m benchmarks.bench_decide [--accounts 1000000] [--seconds 15] [--connections 8] [--quick]
[--database-url URL]`. The store knows N accounts: their facts and stored risk rows are written
straight into the contact tables (``contact_accounts``, ``contact_risk``, ``contact_state``, as
the event intake leaves them), 1% of them at a ``high`` band and 2% at ``medium``. Each request
is one of 4,000 decisions between random accounts (a tenth with a high-risk actor), over every
action and age band, connected or not. Baselines in the same run: `GET /healthz` under the same
wrk settings (the HTTP floor of the same server: no auth, no body), and :func:`decide` called
in-process over the same requests. wrk and the server share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bastion.contact.decide import ACTIONS, AccountFacts, Relationship, decide
from bastion.contact.rows import ContactAccountRow, ContactRiskRow, ContactStateRow
from bastion.db import Store
from bastion.vocab import AGE_BANDS
from benchmarks.bench_server import free_port, parse_wrk

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "decide.md"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BASTION_BENCH_TOKEN")
local bodies = {}
for line in io.lines(os.getenv("BASTION_BENCH_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "/v1/contact/decide", nil, bodies[(i % #bodies) + 1])
end
"""
HEALTH_LUA = """
wrk.method = "GET"
"""
NREQUESTS = 4000


def band_of(i: int) -> str:
    """Account i's stored band: 1% high, 2% medium, the rest low (deterministic)."""
    r = (i * 2654435761) % 100
    return "high" if r == 0 else "medium" if r in (1, 2) else "low"


def seed(store: Store, accounts: int) -> float:
    """Write ``accounts`` accounts' facts and risk rows; returns the seconds it took."""
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    batch = 20_000
    with store.engine.begin() as conn:
        for start in range(0, accounts, batch):
            ids = range(start, min(accounts, start + batch))
            conn.execute(
                sa.insert(ContactAccountRow),
                [
                    {
                        "account": f"acct-{i}",
                        "age_band": AGE_BANDS[i % len(AGE_BANDS)],
                        "age_source": "self_declared",
                        "age_confidence": None,
                        "country": "GB",
                        "created_at": now,
                        "banned": False,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                sa.insert(ContactRiskRow),
                [
                    {
                        "account": f"acct-{i}",
                        "score": {"high": 75, "medium": 40, "low": 0}[band_of(i)],
                        "band": band_of(i),
                        "contributions": [],
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
        conn.execute(  # the migration made the one state row
            sa.update(ContactStateRow)
            .where(ContactStateRow.id == 1)
            .values(applied_seq=accounts, generation=ContactStateRow.generation + 1)
        )
    return time.perf_counter() - t0


def make_requests(accounts: int) -> list[dict[str, Any]]:
    rng = random.Random(15)
    high = [i for i in range(min(accounts, 200_000)) if band_of(i) == "high"]
    out = []
    for n in range(NREQUESTS):
        actor = rng.choice(high) if n % 10 == 0 else rng.randrange(accounts)
        target = rng.randrange(accounts)
        out.append(
            {
                "actor": {"account": f"acct-{actor}", "age_band": rng.choice(AGE_BANDS)},
                "target": {"account": f"acct-{target}", "age_band": rng.choice(AGE_BANDS)},
                "action": rng.choice(ACTIONS),
                "relationship": {
                    "connected": rng.random() < 0.3,
                    "mutual_connections": rng.choice((0, 0, 1, 3)),
                },
            }
        )
    return out


def expected(body: dict[str, Any]) -> dict[str, Any]:
    actor = int(body["actor"]["account"].split("-")[1])
    return decide(
        AccountFacts(body["actor"]["account"], body["actor"]["age_band"]),
        AccountFacts(body["target"]["account"], body["target"]["age_band"]),
        Relationship(body["relationship"]["connected"], body["relationship"]["mutual_connections"]),
        band_of(actor),  # type: ignore[arg-type]
        body["action"],
    ).model_dump(mode="json")


def in_process(requests: list[dict[str, Any]]) -> tuple[float, float, float]:
    times = []
    t0 = time.perf_counter()
    for body in requests * 5:
        t = time.perf_counter()
        expected(body)
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    times.sort()
    return len(times) / total, statistics.median(times), times[int(len(times) * 0.99)]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_wrk(
    wrk: str, script: Path, port: int, args: argparse.Namespace, env: dict[str, str], path: str
) -> dict[str, float]:
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return parse_wrk(out.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="`bastion serve --workers`")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--quick", action="store_true", help="100k accounts, 5 s of load")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.accounts, args.seconds = 100_000, 5
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (make bench installs it: apt-get install wrk)")
        return 1
    bastion = str(Path(sys.executable).with_name("bastion"))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        url = args.database_url or f"sqlite:///{tmp / 'bastion.db'}"
        with Store.open(url) as store:
            setup = seed(store, args.accounts)
            _, token = store.create_api_key("bench-decide", {"contact"})
        requests = make_requests(args.accounts)
        base_rps, base_p50, base_p99 = in_process(requests)
        bodies = tmp / "bodies.txt"
        bodies.write_text("".join(json.dumps(b) + "\n" for b in requests))
        script = tmp / "decide.lua"
        script.write_text(LUA)
        health = tmp / "health.lua"
        health.write_text(HEALTH_LUA)
        port = free_port()
        env = {
            **os.environ,
            "BASTION_DATABASE_URL": url,
            "BASTION_RATE_LIMIT_PER_MINUTE": "0",
            "BASTION_DATA_DIR": str(tmp / "data"),
            "BASTION_BENCH_TOKEN": token,
            "BASTION_BENCH_BODIES": str(bodies),
        }
        log = (tmp / "server.log").open("w")
        server = subprocess.Popen(
            [
                bastion,
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-worker",
                "--workers",
                str(args.workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
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
            headers = {"Authorization": f"Bearer {token}"}
            wrong = 0
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
                for body in requests[:500]:
                    got = http.post("/v1/contact/decide", json=body).json()
                    wrong += got != expected(body)
            rss_before = rss_mb(server.pid)
            w = run_wrk(wrk, script, port, args, env, "/v1/contact/decide")
            h = run_wrk(wrk, health, port, args, env, "/healthz")
            rss_after = rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            log.close()

    n = args.accounts
    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    lines = [
        f"# `/v1/contact/decide` under load: {n:,} accounts known ({kind})",
        "",
        f"wrk -t1 -c{args.connections} -d{args.seconds}s --latency on loopback; `bastion serve`"
        f" with {args.workers} worker(s); {n:,} accounts' facts and risk rows written in"
        f" {setup:.0f} s (1% high, 2% medium); server ready in {ready:.0f} s;"
        f" server RSS {rss_before:.0f} MB before the load, {rss_after:.0f} MB after.",
        "",
        "| path | requests/s | p50 ms | p99 ms | failed |",
        "| --- | --- | --- | --- | --- |",
        f"| HTTP `POST /v1/contact/decide` (Bearer auth, validation, stored band, JSON) | "
        f"{w['rps']:,.0f} | {w['p50']:.2f} | {w['p99']:.2f} | "
        f"{int(w['non2xx'] + w['socket_errors'])} of {int(w['requests']):,} |",
        f"| HTTP `GET /healthz` (baseline: same server and wrk settings, no auth or body) | "
        f"{h['rps']:,.0f} | {h['p50']:.2f} | {h['p99']:.2f} | "
        f"{int(h['non2xx'] + h['socket_errors'])} of {int(h['requests']):,} |",
        f"| in-process `decide()` (baseline) | {base_rps:,.0f} | {base_p50 * 1000:.3f} | "
        f"{base_p99 * 1000:.3f} | - |",
        "",
        f"Answers over HTTP that differ from in-process `decide()` with the stored band "
        f"(500 checked): {wrong}.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    ok = wrong == 0 and w["non2xx"] == 0 and w["socket_errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

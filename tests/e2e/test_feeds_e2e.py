"""Bastion-to-Bastion sharing end to end: three real `bastion serve` processes on loopback, each
with its own SQLite database, data directory and worker child. Two publish a feed; the third
subscribes to both with the publishers' keys pinned and k-of-n vouching (2 of 2).

A PDQ hash of a benign test photo added on both publishers is matched by the subscriber's
/v1/scan within a minute; a photo only one publisher lists does not match; the subscriber's
reviewer finds the match not abusive and the dispute reaches the publishers (and the count comes
back); and the Merkle root the subscriber recorded equals the publisher's."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bastion.accounts.store import AccountStore
from bastion.client import hash_image
from bastion.db import Store
from tests.fixtures.servers import BASTION, Server
from tests.web.seed import PASSWORD, fast_hasher

BOTH = "images/bridge-mods/aaa-orig.jpg"  # listed by both publishers
ONLY_A = "images/misc-images/wee.jpg"  # listed by publisher A only
POLICY = """\
version: 1
queues:
  default:
    description: First review
  senior:
    senior: true
    description: Escalations
sla: {critical: 1h, high: 4h, normal: 24h, low: 72h}
review:
  four_eyes: false
  lease: 15m
  escalation_queue: senior
  on_confirmed: []
  on_block: []
rules:
  - name: shared-feeds
    description: Matches of entries other Bastions shared (test photos)
    when:
      banks: [from-a, from-b]
    verdict: review
    priority: high
    view_required: false
otherwise:
  verdict: allow
"""


def _wait(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


class Instance:
    """One Bastion: data directory, database, master key, and (once started) its server."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.db = f"sqlite:///{self.dir / 'bastion.db'}"
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.env = {
            "BASTION_SECRET_KEY": self.secret,
            "BASTION_RATE_LIMIT_PER_MINUTE": "0",
            "BASTION_FEED_VERSION_SECONDS": "1",
            "BASTION_EXCHANGE_POLL_SECONDS": "1",
            # A transient failure (a busy machine) retries within seconds, not a minute.
            "BASTION_EXCHANGE_BACKOFF_SECONDS": "1",
            "BASTION_EXCHANGE_LEASE_SECONDS": "10",
        }
        self.server: Server | None = None
        with Store.open(self.db) as store:
            _, token = store.create_api_key("admin", {"admin"})
        self.admin = {"Authorization": f"Bearer {token}"}

    def cli(self, *args: str) -> str:
        r = subprocess.run(
            [BASTION, "--db", self.db, *args],
            env={**os.environ, **self.env},
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def start(self, **env: str) -> None:
        self.env.update(env)
        self.server = Server(self.db, self.dir, env=self.env)

    @property
    def base(self) -> str:
        assert self.server is not None
        return self.server.base

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def _publisher(tmp: Path, name: str, organisation: str) -> tuple[Instance, str, str]:
    """A publishing instance with a feed of bank `known`; returns its public key and the
    `feed` API key it issued to the subscriber (granted that feed alone)."""
    pub = Instance(tmp, name)
    with Store.open(pub.db) as store:
        store.create_bank("known", description="benign test photos (demo)")
    pub.cli("feed", "create", "shared", "--bank", "known", "--organisation", organisation)
    out = pub.cli("key", "create", "subscriber-s", "--scopes", "feed", "--feed", "shared")
    sub_token = out.strip().splitlines()[-1]
    (key,) = json.loads(pub.cli("feed", "key", "--format", "json"))
    pub.start()
    return pub, key["public_key"], sub_token


def _login(base: str, name: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    r = client.post(
        "/login", data={"name": name, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert r.status_code == 303, r.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]*)"', client.get("/cases").text)
    assert csrf
    return client, csrf.group(1)


def test_two_publishers_one_subscriber(tmp_path: Path, testdata: Path) -> None:
    photos = {p: (testdata / p).read_bytes() for p in (BOTH, ONLY_A)}
    pdq = {p: hash_image(data).hex for p, data in photos.items()}
    instances: list[Instance] = []
    try:
        a, key_a, token_a = _publisher(tmp_path, "pub-a", "Org A")
        instances.append(a)
        b, key_b, token_b = _publisher(tmp_path, "pub-b", "Org B")
        instances.append(b)
        s = Instance(tmp_path, "sub")
        instances.append(s)
        (s.dir / "policy.yaml").write_text(POLICY)
        with Store.open(s.db) as store:
            AccountStore(store, hasher=fast_hasher()).create_user(
                "rex", "reviewer", PASSWORD, ["default"], actor="system"
            )
        s.start(BASTION_POLICY_FILE=str(s.dir / "policy.yaml"))
        for name, pub, key, token in (("from-a", a, key_a, token_a), ("from-b", b, key_b, token_b)):
            creds = s.dir / f"{name}.json"
            creds.write_text(json.dumps({"api_key": token}))
            s.cli(
                "exchange", "add", name, "--type", "bastion",
                "--set", f"url={pub.base}", "--set", "feed=shared", "--set", f"publisher_key={key}",
                "--credentials-file", str(creds), "--interval", "2",
                "--vouch-group", "shared-photos", "--min-vouchers", "2",
            )  # fmt: skip

        # Hashes added on the publishers through their API.
        added = time.monotonic()
        for pub, paths in ((a, (BOTH, ONLY_A)), (b, (BOTH,))):
            r = httpx.post(
                f"{pub.base}/v1/banks/known/entries",
                headers=pub.admin,
                json={
                    "entries": [
                        {"signal_type": "pdq", "value": pdq[p], "labels": ["test-photo"]}
                        for p in paths
                    ]
                },
            )
            assert r.status_code in (200, 201), r.text

        def scan(path: str) -> dict:
            r = httpx.post(
                f"{s.base}/v1/scan",
                headers=s.admin,
                files={"file": ("photo.jpg", photos[path])},
                data={"context": json.dumps({"content_id": f"item-{uuid.uuid4().hex[:6]}"})},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            return r.json()

        def scan_matches() -> dict | None:
            doc = scan(BOTH)
            return doc if doc["matches"] else None

        matched = _wait("the subscriber to match", scan_matches)
        assert time.monotonic() - added < 60
        assert {m["bank"] for m in matched["matches"]} == {"from-a", "from-b"}
        case_id = matched["verdict"]["case_id"]
        assert case_id

        # The photo only publisher A lists is held back for a second voucher: no match.
        def held(bank: str, path: str) -> dict | None:
            r = httpx.get(f"{s.base}/v1/banks/{bank}/entries", headers=s.admin, timeout=30)
            assert r.status_code == 200, r.text
            return next((e for e in r.json()["entries"] if e["value"] == pdq[path]), None)

        def held_back() -> bool:
            entry = held("from-a", ONLY_A)
            return entry is not None and "awaiting vouchers" in entry["disabled_reason"]

        _wait("publisher A's single-vouched entry", held_back)
        assert scan(ONLY_A)["matches"] == []

        # The reviewer finds the match not abusive; the dispute travels back to both publishers.
        rex, csrf = _login(s.base, "rex")
        r = rex.post(f"/cases/{case_id}/claim", data={"csrf_token": csrf})
        assert r.status_code == 303, r.text
        r = rex.post(
            f"/cases/{case_id}/decide",
            data={"csrf_token": csrf, "decision": "not_abusive", "reason": "a test photo"},
        )
        assert r.status_code == 303 and "not_abusive" in r.headers["location"], r.text

        def disputes_at(pub: Instance, token: str) -> list[dict]:
            r = httpx.get(
                f"{pub.base}/v1/feeds/shared/disputes",
                headers={"Authorization": f"Bearer {token}"},
            )
            return [i for i in r.json()["items"] if i["disputes"] >= 1]

        (dispute_a,) = _wait("the dispute at publisher A", lambda: disputes_at(a, token_a))
        (dispute_b,) = _wait("the dispute at publisher B", lambda: disputes_at(b, token_b))
        rows = json.loads(a.cli("feed", "disputes", "shared", "--format", "json"))
        assert [(r["key"], r["kind"], r["subscriber"], r["reason"]) for r in rows] == [
            (dispute_a["key"], "dispute", "subscriber-s", "not_abusive")
        ]
        for pub, dispute in ((a, dispute_a), (b, dispute_b)):
            with Store.open(pub.db) as store:
                (entry,) = store.find_entries("known", value=pdq[BOTH])
            assert dispute["key"] == str(entry.id) and dispute["disputes"] == 1

        # The count comes back to the subscriber with its next sync.
        def count_back() -> bool:
            entry = held("from-a", BOTH)
            return entry is not None and entry["metadata"].get("disputes") == 1

        _wait("the dispute count at the subscriber", count_back)

        # The root the subscriber recorded equals the publisher's latest signed root.
        for name, pub, token in (("from-a", a, token_a), ("from-b", b, token_b)):

            def agreed(name: str = name, pub: Instance = pub, token: str = token) -> bool:
                latest = httpx.get(
                    f"{pub.base}/v1/feeds/shared", headers={"Authorization": f"Bearer {token}"}
                ).json()["latest"]
                status = httpx.get(f"{s.base}/v1/exchanges/{name}", headers=s.admin).json()
                atts = status["attestations"]
                return (
                    bool(atts)
                    and atts[0]["version"] == latest["version"]
                    and (
                        atts[0]["agrees"]
                        and atts[0]["root"] == atts[0]["computed"] == latest["root"]
                    )
                )

            _wait(f"{name}'s attestation of the latest version", agreed)
    except BaseException:
        for instance in instances:  # what each server and worker said, for the failure report
            if instance.server is not None:
                print(f"--- {instance.dir.name} ---\n{instance.server.output[-6000:]}")
        raise
    finally:
        for instance in reversed(instances):
            instance.stop()

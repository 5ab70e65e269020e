"""Seed data for the console tests and screenshots: users, banks and a policy, written straight
into a store; cases then come from scanning benign test photos through the real /v1/scan API.

All images are the benign ThreatExchange test photos in tests/data (see its SOURCES.md).
Bank names and labels here are neutral test names: the policy below routes by bank, not by any
abuse label.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.accounts.model import PasswordHasher
from bastion.accounts.store import AccountStore
from bastion.banks import NewEntry
from bastion.db import Store
from bastion.signals import SignalType

PASSWORD = "correct horse battery staple"

#: name -> (role, queues)
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ada": ("admin", ("default",)),
    "rex": ("reviewer", ("default",)),
    "sue": ("senior_reviewer", ("default",)),
    "aud": ("auditor", ("default",)),
}

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
  on_confirmed: [remove_content, preserve]
  on_block: [remove_content]
rules:
  - name: exact-known
    description: Byte-identical copy of a listed item
    when:
      banks: [exact]
      signal_types: [md5]
    verdict: review
    priority: high
    view_required: false
  - name: senior-only
    description: Matches of this bank go to senior reviewers
    when:
      banks: [senior-bank]
    verdict: review
    priority: critical
    queue: senior
otherwise:
  verdict: review
  priority: normal
"""

#: The photos each case is made from: (bank, photo in the bank, photo scanned, uploader).
BRIDGE_BANKED = "images/bridge-mods/aaa-orig.jpg"
BRIDGE_SCANNED = "images/bridge-mods/shrink-a-lot.jpg"
SENIOR_PHOTO = "images/reg-test-input/labelme-subset/q2821.jpg"
EXACT_PHOTO = "images/misc-images/wee.jpg"
VIDEO = "videos/doorknob-hd-no-bar.mp4"

#: name -> (file scanned, uploader); every uploader differs, so each scan opens its own case.
SCANS = {
    "bridge": (BRIDGE_SCANNED, "uploader-1"),
    "senior": (SENIOR_PHOTO, "uploader-2"),
    "exact": (EXACT_PHOTO, "uploader-3"),
    "video": (VIDEO, "uploader-4"),
}


@dataclass
class Seeded:
    """What was scanned: case ids by name."""

    cases: dict[str, int]
    token: str


def fast_hasher() -> PasswordHasher:
    """argon2id with small parameters: the stored hashes carry them, so logins verify fast."""
    return PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


def reference_pdq(testdata: Path, name: str) -> str:
    with (testdata / "reference-pdq.csv").open() as f:
        for row in csv.reader(f):
            if row and row[0] == name:
                return row[1]
    raise KeyError(name)


def seed_store(store: Store, testdata: Path) -> str:
    """Users, three banks, and an API key for scanning (its token is returned)."""
    accounts = AccountStore(store, hasher=fast_hasher())
    for name, (role, queues) in USERS.items():
        accounts.create_user(name, role, PASSWORD, queues, actor="system")
    store.create_bank("bridge", description="Test bank", labels=["test"], source="test-suite")
    store.add_entries(
        "bridge",
        [
            NewEntry(
                signal_type=SignalType.PDQ,
                value=reference_pdq(testdata, BRIDGE_BANKED),
                source="test-suite",
                list_name="bridges",
                external_id="ext-bridge-1",
                labels=["photo"],
            )
        ],
    )
    store.create_bank("senior-bank", labels=["test"], source="test-suite")
    store.add_entries(
        "senior-bank",
        [
            NewEntry(
                signal_type=SignalType.PDQ,
                value=reference_pdq(testdata, SENIOR_PHOTO),
                external_id="ext-senior-1",
            )
        ],
    )
    store.create_bank("exact", labels=["test"], source="test-suite")
    store.add_entries(
        "exact",
        [
            NewEntry(
                signal_type=SignalType.MD5,
                value=hashlib.md5((testdata / path).read_bytes()).hexdigest(),
                external_id=f"ext-exact-{n}",
            )
            for n, path in enumerate((EXACT_PHOTO, VIDEO), 1)
        ],
    )
    _, token = store.create_api_key("scanner", {"match"})
    return token


def scan_cases(
    post: Any, testdata: Path, token: str, names: tuple[str, ...] = ("bridge", "senior", "exact")
) -> dict[str, int]:
    """Scan test media (SCANS) through /v1/scan; ``post(path, **kwargs)`` is an HTTP client's
    post. Returns the case ids the verdicts name."""
    headers = {"Authorization": f"Bearer {token}"}
    cases: dict[str, int] = {}
    for name in names:
        photo, uploader = SCANS[name]
        data = (testdata / photo).read_bytes()
        r = post(
            "/v1/scan",
            headers=headers,
            files={"file": (Path(photo).name, data)},
            data={
                "context": json.dumps({"content_id": f"content-{name}", "uploader_id": uploader})
            },
        )
        assert r.status_code == 200, r.text
        verdict = r.json()["verdict"]
        assert verdict["case_id"], r.text
        cases[name] = verdict["case_id"]
    return cases

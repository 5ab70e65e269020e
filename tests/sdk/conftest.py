"""A real `bastion serve` on a loopback port for the SDK tests (one per module), with console
users, a platform key and a key bound to each user, and two banks made through the SDK itself:
``bridge`` (the PDQ of a benign bridge photo) and ``exact`` (the MD5 of another photo)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.accounts.store import AccountStore
from bastion.db import Store
from bastion.sdk import Client, hashes
from tests.fixtures.servers import Server
from tests.web.seed import POLICY, fast_hasher

BANKED = "images/bridge-mods/aaa-orig.jpg"
#: A re-encoded, shrunk copy of BANKED: a PDQ match at a small distance, never byte-identical.
SCANNED = "images/bridge-mods/shrink-a-lot.jpg"
#: Banked by its MD5: the policy (tests/web/seed.py) lets a reviewer decide it from the match.
EXACT = "images/misc-images/wee.jpg"
#: name -> (role, queues)
USERS = {
    "ada": ("admin", ("default",)),
    "sue": ("senior_reviewer", ("default",)),
    "rex": ("reviewer", ("default",)),
    "aud": ("auditor", ("default",)),
}


@dataclass
class Stack:
    server: Server
    db_url: str
    platform: str
    keys: dict[str, str]
    testdata: Path

    @property
    def base(self) -> str:
        return self.server.base

    def client(self, user: str | None = None) -> Client:
        return Client(self.base, self.keys[user] if user else self.platform, timeout=30)

    def scan(self, photo: str = SCANNED) -> int:
        """Scan a photo as a new uploader: the case it opened."""
        uploader = f"uploader-{uuid.uuid4().hex[:8]}"
        with self.client() as bastion:
            result = bastion.scan(
                self.testdata / photo, context={"uploader_id": uploader, "content_id": photo}
            )
        assert result.verdict.case_id, result
        return result.verdict.case_id


def seed(db_url: str) -> tuple[str, dict[str, str]]:
    """Console users, a platform key (admin scope, bound to nobody) and a review+media key bound
    to each user (``rex@sdk``); returns the tokens."""
    with Store.open(db_url) as store:
        accounts = AccountStore(store, hasher=fast_hasher())
        for name, (role, queues) in USERS.items():
            accounts.create_user(name, role, "a long test password", queues, actor="system")
        _, platform = store.create_api_key("platform", {"admin"})
        keys = {
            user: store.create_api_key(f"{user}@sdk", {"review", "media"}, user=user)[1]
            for user in USERS
        }
        keys["ada"] = store.create_api_key("ada@sdk-all", {"admin"}, user="ada")[1]
    return platform, keys


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("sdk")
    db_url = f"sqlite:///{tmp / 'bastion.db'}"
    (tmp / "policy.yaml").write_text(POLICY)
    platform, keys = seed(db_url)
    server = Server(
        db_url,
        tmp,
        env={"BASTION_POLICY_FILE": str(tmp / "policy.yaml"), "BASTION_RATE_LIMIT_PER_MINUTE": "0"},
    )
    try:
        with Client(server.base, platform) as bastion:
            bastion.create_bank("bridge", labels=["test"], source="test-suite")
            pdq = next(s for s in hashes(testdata / BANKED) if s.type == "pdq")
            bastion.add_entries("bridge", [{"signal_type": "pdq", "value": pdq.value}])
            bastion.create_bank("exact", labels=["test"], source="test-suite")
            md5 = next(s for s in hashes(testdata / EXACT) if s.type == "md5")
            bastion.add_entries("exact", [{"signal_type": "md5", "value": md5.value}])
        yield Stack(server, db_url, platform, keys, testdata)
    finally:
        server.stop()

"""Fuzz every operation of the app's own OpenAPI document with schemathesis: no 5xx, ever.

The app runs in-process (ASGI) over a seeded SQLite store. Each operation gets a fixed,
derandomized budget of schema-valid and schema-invalid requests with an admin key, and a
smaller one with no key, an unknown key and a key lacking the scope.

Checks: no server error; the status code, content type and body match what the document
declares; and schema-invalid requests are refused. "Schema-valid requests are accepted" is not
checked: a hash, a URL or a bank name can be a valid string and still not a valid hash, a
fetchable URL or an existing bank, and those get a precise 4xx on purpose.

What the fuzzing found is pinned down at the end of this file by plain tests that run on SQLite
and PostgreSQL (some of it, NUL in lookups, only ever failed on PostgreSQL).

URL fetching never leaves the machine: name resolution is stubbed (only ``localhost`` resolves)
and connections may only go to loopback, which the fetch policy refuses anyway.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import bastion.fetch
from bastion.api.app import create_app
from bastion.banks import NewEntry
from bastion.config import Settings
from bastion.policy import Verdict
from bastion.review import NewItem, Viewer
from bastion.signals.base import SignalType
from bastion.store import BankNotFound, Store
from bastion.store.accounts import AccountStore
from tests.api.conftest import bearer
from tests.web.seed import fast_hasher

PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
BANK = "fuzz_bank"
#: The console user the admin key acts as on /v1/cases.
FUZZ_VIEWER = Viewer("fuzz-admin", "admin")

#: Requests per operation; set BASTION_FUZZ_EXAMPLES higher for a deeper run by hand.
ADMIN_EXAMPLES = int(os.environ.get("BASTION_FUZZ_EXAMPLES", "40"))
DENIED_EXAMPLES = 8

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
#: A refused request is checked for shape only: schema-valid or not, it never reached the route.
DENIED_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: For bodies that are text on the wire (multipart fields, CSV, raw bytes), a "schema-violating"
#: value such as a number where a string is declared is still valid text once sent, so whether
#: such a request is refused is not checked.
TEXT_BODY_CHECKS = [c for c in CHECKS if c is not negative_data_rejection]
#: Operations a key with only the ``hash`` scope may call (the rest must answer 403).
HASH_SCOPE_OPERATIONS = {
    ("/h/hash", "get"),
    ("/h/hash", "post"),
    ("/status", "get"),
    ("/status/live", "get"),
    ("/metrics", "get"),
}


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


@dataclass
class FuzzEnv:
    app: Any
    store: Store
    admin: dict[str, str]
    hash_only: dict[str, str]


#: Ids of the seeded entries (refreshed before each test: a fuzzed DELETE may remove them).
SEEDED_IDS: list[int] = []
#: (case id, item id) of a seeded open case (a fuzzed decision may close or escalate it).
SEEDED_CASE: list[int] = []


def _seed(store: Store) -> None:
    """(Re)create the seeded bank and its entries if a previous test deleted any of them."""
    try:
        store.get_bank(BANK)
    except BankNotFound:
        store.create_bank(BANK, description="seeded for the fuzz tests", labels=["test"])
    store.update_bank(BANK, enabled=True)
    store.add_entries(
        BANK,
        [
            NewEntry(signal_type=SignalType.PDQ, value=PDQ, external_id="ext-1"),
            NewEntry(signal_type=SignalType.MD5, value=MD5, external_id="ext-1"),
            NewEntry(signal_type=SignalType.SHA256, value=SHA256),
            NewEntry(signal_type=SignalType.URL, value="https://example.com/a", url_match="url"),
        ],
    )
    SEEDED_IDS[:] = [e.id for e in store.list_entries(BANK)]
    for entry_id in SEEDED_IDS:
        store.enable_entry(BANK, entry_id)


def _seed_case(rt: Any) -> None:
    """An open case in the default queue, with media, matching the seeded PDQ entry (opened
    anew whenever a fuzzed decision closed or escalated the last one)."""
    if SEEDED_CASE:
        row = rt.review.list_cases(FUZZ_VIEWER, limit=500)
        if any(c.id == SEEDED_CASE[0] and c.queue == "default" for c in row):
            return
    image = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 160)).save(image, "PNG")
    verdict = Verdict("review", "fuzz", "seeded for the fuzz tests", "normal", "default", (), True)
    match = {"bank": BANK, "entry": SEEDED_IDS[0], "signal_type": "pdq", "distance": 0}
    item = NewItem(kind="image", format="PNG", media=image.getvalue(), matches=[match])
    sub = rt.review.submit(verdict, item, actor="system")
    SEEDED_CASE[:] = [sub.case_id, sub.item_id]


def _no_dns(host: str, port: int) -> list[str]:
    """Only loopback names resolve; anything else fails as if it did not exist."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return ["127.0.0.1"]
    raise socket.gaierror(socket.EAI_NONAME, "name resolution is disabled in the fuzz tests")


_real_connect = bastion.fetch._connect


def _loopback_only(ip: str, port: int, timeout: float) -> httpcore.NetworkStream:
    if not ipaddress.ip_address(ip).is_loopback:
        raise httpcore.ConnectError(f"the fuzz tests never leave loopback (asked for {ip})")
    return _real_connect(ip, port, timeout)


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEnv]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "bastion.db"
    store = Store.open(f"sqlite:///{path}")
    _seed(store)
    assert len(SEEDED_IDS) == 4
    # The admin key acts as an admin console user, so /v1/cases answers it (a key bound to no
    # user is refused there).
    AccountStore(store, hasher=fast_hasher()).create_user(
        FUZZ_VIEWER.name, "admin", "fuzz password for the tests", actor="system"
    )
    _, admin_token = store.create_api_key(f"{FUZZ_VIEWER.name}@fuzz", {"admin"})
    _, hash_token = store.create_api_key("fuzz-hash", {"hash"})
    app = create_app(
        Settings(
            index_poll_seconds=0.2,
            rate_limit_per_minute=0,
            max_upload_bytes=256 * 1024,
            max_import_bytes=1024 * 1024,
            fetch_timeout=2.0,
        ),
        store=store,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bastion.fetch, "_getaddrinfo", _no_dns)
        mp.setattr(bastion.fetch, "_connect", _loopback_only)
        try:
            yield FuzzEnv(
                app=app,
                store=store,
                admin={"Authorization": f"Bearer {admin_token}"},
                hash_only={"Authorization": f"Bearer {hash_token}"},
            )
        finally:
            asgi.shutdown_lifespans()  # schemathesis keeps the app started until told
            store.close()


def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the time, point path parameters at the seeded bank and its entries.

    Only values of the declared type are replaced, so a case made invalid on purpose stays so.
    """
    if not path_parameters:
        return st.just(path_parameters)
    seeded = dict(path_parameters)
    for key, value in (("name", BANK), ("bank_name", BANK.upper())):
        if isinstance(seeded.get(key), str):
            seeded[key] = value
    choice: st.SearchStrategy[dict[str, Any]] = st.just(seeded)
    if isinstance(seeded.get("ref"), str):
        refs = [*map(str, SEEDED_IDS), "ext-1", MD5, "999999"]
        choice = st.sampled_from(refs).map(lambda r: {**seeded, "ref": r})
    if type(seeded.get("content_id")) is int:
        ids = [*SEEDED_IDS, 999999]
        choice = st.sampled_from(ids).map(lambda c: {**seeded, "content_id": c})
    if type(seeded.get("case_id")) is int and SEEDED_CASE:
        seeded["case_id"] = SEEDED_CASE[0]
        if type(seeded.get("item_id")) is int:
            seeded["item_id"] = SEEDED_CASE[1]
        choice = st.just(seeded)
    return st.one_of(st.just(path_parameters), choice)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_env: FuzzEnv) -> Any:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", fuzz_env.app)
    loaded.hook(flatmap_path_parameters)
    return loaded


@pytest.fixture
def seeded(fuzz_env: FuzzEnv) -> FuzzEnv:
    _seed(fuzz_env.store)
    _seed_case(fuzz_env.app.state.runtime)
    fuzz_env.app.state.runtime.index.refresh()
    return fuzz_env


def _operations() -> list[tuple[str, str]]:
    """Every operation in the document, read from an app that is never started."""
    doc = create_app(Settings()).openapi()
    return [(path, method) for path, item in doc["paths"].items() for method in item]


OPERATIONS = _operations()
IDS = [f"{method.upper()} {path}" for path, method in OPERATIONS]


def _cases(operation: Any, headers: dict[str, str]) -> st.SearchStrategy[schemathesis.Case]:
    """Schema-valid and schema-invalid requests (an operation with nothing to break has none
    of the latter), all with the given Authorization header: fixed, so never the part that
    is broken on purpose."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE, headers=headers)]
    with contextlib.suppress(Exception):  # schemathesis will not negate an operation
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, headers=headers))
    return st.one_of(strategies)


def _needs_key(operation: Any) -> bool:
    return "401" in operation.definition.raw.get("responses", {})


def test_the_document_lists_every_route(fuzz_schema: Any) -> None:
    assert len(OPERATIONS) >= 30
    assert ("/v1/scan", "post") in OPERATIONS and ("/c/bank/{bank_name}", "put") in OPERATIONS
    for path, method in OPERATIONS:
        operation = fuzz_schema[path][method]
        if path not in ("/healthz", "/readyz"):
            assert _needs_key(operation), f"{method.upper()} {path} documents no 401"


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=IDS)
def test_fuzz_with_admin_key(path: str, method: str, fuzz_schema: Any, seeded: FuzzEnv) -> None:
    operation = fuzz_schema[path][method]

    @_settings(ADMIN_EXAMPLES)
    @given(case=_cases(operation, seeded.admin))
    def run(case: schemathesis.Case) -> None:
        json_body = case.media_type is None or case.media_type == "application/json"
        case.call_and_validate(checks=CHECKS if json_body else TEXT_BODY_CHECKS)

    run()


OPEN_OPERATIONS = {("/healthz", "get"), ("/readyz", "get")}
DENIED = [
    (path, method, who)
    for path, method in OPERATIONS
    if (path, method) not in OPEN_OPERATIONS
    for who in ("no key", "wrong key", "hash scope")
    if not (who == "hash scope" and (path, method) in HASH_SCOPE_OPERATIONS)
]


def test_only_health_probes_are_open(fuzz_schema: Any) -> None:
    open_ops = {(p, m) for p, m in OPERATIONS if not _needs_key(fuzz_schema[p][m])}
    assert open_ops == OPEN_OPERATIONS


@pytest.mark.parametrize(
    ("path", "method", "who"), DENIED, ids=[f"{m.upper()} {p} {w}" for p, m, w in DENIED]
)
def test_fuzz_without_access(
    path: str, method: str, who: str, fuzz_schema: Any, seeded: FuzzEnv
) -> None:
    operation = fuzz_schema[path][method]
    headers = {
        "no key": {"Authorization": ""},
        "wrong key": {"Authorization": "Bearer bst_unknown_key"},
        "hash scope": seeded.hash_only,
    }[who]

    @_settings(DENIED_EXAMPLES)
    @given(case=_cases(operation, headers))
    def run(case: schemathesis.Case) -> None:
        response = case.call()
        case.validate_response(response, checks=DENIED_CHECKS)
        assert response.status_code == (403 if who == "hash scope" else 401), response.text

    run()


# -- what the fuzzing found, pinned down on both databases -------------------------------------
PROBLEM = "application/problem+json"


def test_a_body_error_does_not_outrank_a_missing_key(
    client: TestClient, api_store: Store, admin: dict[str, str]
) -> None:
    """FastAPI parses a JSON body before it runs dependencies; the key must still come first."""
    hasher = bearer(api_store, "hasher", "hash")
    broken = {"content": b'{"name": ', "headers": {"Content-Type": "application/json"}}
    for method, path in [("post", "/v1/banks"), ("put", "/c/bank/X"), ("post", "/v1/lookup")]:
        send = getattr(client, method)
        assert send(path, **broken).status_code == 401, path
        bad_key = {**broken["headers"], "Authorization": "Bearer bst_nope_nope"}
        assert send(path, content=broken["content"], headers=bad_key).status_code == 401, path
        r = send(path, content=broken["content"], headers={**broken["headers"], **hasher})
        assert r.status_code == 403, path
        r = send(path, content=broken["content"], headers={**broken["headers"], **admin})
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, path
        assert r.json()["title"] == "Malformed JSON"


def test_an_entry_cursor_beyond_any_id(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post("/v1/banks", headers=admin, json={"name": "b"}).status_code == 201
    r = client.get(f"/v1/banks/b/entries?after={2**63}", headers=admin)
    assert r.status_code == 422 and "after" in r.json()["detail"]
    r = client.get(f"/v1/banks/b/entries?after={2**63 - 1}", headers=admin)
    assert r.status_code == 200 and r.json() == {"entries": [], "next_after": None}


def test_text_no_database_can_hold_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    """NUL (PostgreSQL refuses it) and lone surrogates (JSON's "\\ud800") give a 4xx, never 500."""
    assert client.post("/v1/banks", headers=admin, json={"name": "b"}).status_code == 201
    for path in ("/v1/banks/a%00b", "/v1/banks/b/entries/a%00b", "/c/bank/A%00B"):
        assert client.get(path, headers=admin).status_code == 404, path
    json_headers = {**admin, "Content-Type": "application/json"}
    r = client.post("/v1/banks", headers=json_headers, content=b'{"name":"c","labels":["\\ud800"]}')
    assert r.status_code == 422 and "lone surrogate" in r.json()["detail"]
    entry = b'{"entries":[{"signal_type":"md5","value":"%s","metadata":{"k":"\\udc00"}}]}'
    r = client.post("/v1/banks/b/entries", headers=json_headers, content=entry % (b"0" * 32))
    assert r.status_code == 200 and r.json()["rejected"] == 1
    assert "lone surrogate" in r.json()["errors"][0]
    r = client.post(
        "/v1/scan",
        headers=admin,
        files={"file": ("a.bin", b"hello")},
        data={"context": json.dumps({"content_id": "a\x00b"})},
    )
    assert r.status_code == 422 and "content_id" in r.json()["detail"]


def test_json_nested_deeper_than_python_recurses(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post("/c/banks", headers=admin, json={"name": "B"}).status_code == 201
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    r = client.post(
        "/c/bank/B/content?url=http://example.com/a.jpg",
        headers={**admin, "Content-Type": "application/json"},
        content=deep,
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]


def test_booleans_and_integers_are_not_guessed(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(
        "/v1/lookup",
        headers=admin,
        json={"signals": [{"type": "md5", "value": "0"}], "threshold": True},
    )
    assert r.status_code == 422 and "threshold" in r.json()["detail"]
    upload = {"file": ("a.bin", b"hello")}
    r = client.post("/v1/scan", headers=admin, files=upload, data={"dihedral": "maybe"})
    assert r.status_code == 422 and "dihedral" in r.json()["detail"]
    r = client.post("/v1/scan", headers=admin, files=upload, data={"dihedral": "off"})
    assert r.status_code == 200
    assert (
        client.post("/v1/banks", headers=admin, json={"name": "b", "enabled": 1}).status_code == 422
    )


def test_the_document_describes_errors_and_keys(fuzz_schema: Any) -> None:
    doc = fuzz_schema.raw_schema
    assert doc["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    scan = doc["paths"]["/v1/scan"]["post"]
    assert scan["security"] == [{"apiKey": []}]
    for status in ("400", "401", "403", "413", "415", "422", "429"):
        assert PROBLEM in scan["responses"][status]["content"], status
    assert "Retry-After" in scan["responses"]["429"]["headers"]
    assert "409" in doc["paths"]["/v1/banks"]["post"]["responses"]
    assert "404" in doc["paths"]["/c/bank/{bank_name}/content/{content_id}"]["get"]["responses"]
    assert "security" not in doc["paths"]["/healthz"]["get"]

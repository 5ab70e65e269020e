"""Fuzz every operation of the app's own OpenAPI document with schemathesis: no 5xx, ever.

The app runs in-process (ASGI) over a seeded SQLite store (a bank with entries, an open case
with media, a console user the admin key acts as), so operations reach their logic rather than
404. ``test_fuzz_all_checks`` runs schemathesis's own pytest integration (``parametrize``) with
every check it has, as ``schemathesis run --checks all`` does: no server error; status code,
content type, headers and body as documented; schema-invalid requests refused; schema-valid
requests accepted; unsupported methods answered 405 with an ``Allow`` header; and the examples,
coverage and fuzzing phases (BASTION_FUZZ_EXAMPLES requests per operation in the fuzzing phase).
The few (operation, check) pairs left out are listed in ``EXCLUDED`` with the reason each
cannot hold. Requests with no key, an unknown key and a key lacking the scope get a smaller
budget each.

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
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

import bastion.fetch
from bastion.accounts.store import AccountStore
from bastion.api.openapi import DB_INT_MAX
from bastion.banks import NewEntry
from bastion.config import Settings
from bastion.db import Store
from bastion.policy import Verdict
from bastion.review import NewItem, Viewer
from bastion.server import create_app
from bastion.signals.base import SignalType
from bastion.store import BankNotFound
from tests.api.conftest import bearer
from tests.web.seed import fast_hasher

PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
BANK = "fuzz_bank"
#: The console user the admin key acts as on /v1/cases.
FUZZ_VIEWER = Viewer("fuzz-admin", "admin")

#: Requests per operation in the fuzzing phase; set BASTION_FUZZ_EXAMPLES higher for a deeper
#: run by hand (the default keeps the whole run within a few minutes on two cores).
ADMIN_EXAMPLES = int(os.environ.get("BASTION_FUZZ_EXAMPLES", "30"))
DENIED_EXAMPLES = 8

#: A refused request is checked for shape only: schema-valid or not, it never reached the route.
DENIED_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
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
    _, admin_token = store.create_api_key(
        f"{FUZZ_VIEWER.name}@fuzz", {"admin"}, user=FUZZ_VIEWER.name
    )
    _, hash_token = store.create_api_key("fuzz-hash", {"hash"})
    keys = path.parent / "keys"
    app = create_app(
        Settings(
            # Pinned: each test has its own BASTION_KEY_DIR, and this app lives for the module.
            key_dir=str(keys),
            secret_key_file=str(keys / "secret.key"),
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
            ADMIN_TOKEN[:] = [admin_token]
            yield FuzzEnv(
                app=app,
                store=store,
                admin={"Authorization": f"Bearer {admin_token}"},
                hash_only={"Authorization": f"Bearer {hash_token}"},
            )
        finally:
            asgi.shutdown_lifespans()  # schemathesis keeps the app started until told
            store.close()


def _an_id(value: Any) -> bool:
    """An int in the documented id range: a value made invalid on purpose is left as it is."""
    return type(value) is int and 1 <= value <= DB_INT_MAX


def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the time, point path parameters at the seeded bank and its entries.

    Only values of the declared type (ids: in the documented range) are replaced, so a case
    made invalid on purpose stays so.
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
    if type(seeded.get("content_id")) is int and 1 <= seeded["content_id"] <= DB_INT_MAX:
        ids = [*SEEDED_IDS, 999999]
        choice = st.sampled_from(ids).map(lambda c: {**seeded, "content_id": c})
    if _an_id(seeded.get("case_id")) and _an_id(seeded.get("item_id", 1)) and SEEDED_CASE:
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


#: The document, from an app that is never started.
DOCUMENT = create_app(Settings()).openapi()


def _operations() -> list[tuple[str, str]]:
    """Every operation in the document."""
    return [(path, method) for path, item in DOCUMENT["paths"].items() for method in item]


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


#: (operation, check) pairs that cannot hold, each with the reason. Everything else runs.
_VALIDITY_BEYOND_SCHEMA = (
    "whether a hash is valid for its signal type (HMA names types by key, values are free "
    "text), or a URL can be fetched (name resolution is off here), is not a schema matter"
)
EXCLUDED: dict[tuple[str, Any], str] = {
    **{
        (label, positive_data_acceptance): _VALIDITY_BEYOND_SCHEMA
        for label in (
            "GET /h/hash",
            "POST /h/hash",
            "GET /m/raw_lookup",
            "POST /m/lookup",
            "POST /m/compare",
            "POST /c/bank/{bank_name}/signal",
            "POST /c/bank/{bank_name}/content",
            "POST /v1/scan",
        )
    },
    ("GET /m/lookup", positive_data_acceptance): "HMA's lookup needs url, or signal and "
    "signal_type together: OpenAPI cannot make query parameters depend on each other",
    ("POST /v1/franking/reports", positive_data_acceptance): "a report must carry the "
    "platform's valid MAC over its fields: no schema can state that",
}


def _excluded(case: schemathesis.Case) -> list[Any]:
    label = case.operation.label
    out = [check for (op, check) in EXCLUDED if op == label]
    if case.media_type not in (None, "application/json"):
        # Text on the wire (multipart fields, CSV, raw bytes): a number where a string is
        # declared is still valid text once sent, so "refused" cannot be asked of it.
        out.append(negative_data_rejection)
    return out


#: The document of an app never started (pytest collects the operations from it); each case is
#: sent to the seeded app of ``fuzz_env``, in-process.
fuzz_all = schemathesis.openapi.from_dict(DOCUMENT)
fuzz_all.config.update(base_url="http://localhost")  # in-process: the host is never resolved
#: A fixed seed: every run of `make test` sends the same requests (BASTION_FUZZ_SEED for others).
fuzz_all.config.seed = int(os.environ.get("BASTION_FUZZ_SEED", "14"))
#: The admin key's token, once ``fuzz_env`` has made it.
ADMIN_TOKEN: list[str] = []


@fuzz_all.auth()
class _AdminKey:
    """The admin key on every request, as an auth provider: schemathesis then knows the key is
    supplied (its own no-key probes still run, in the ignored_auth check)."""

    def get(self, case: schemathesis.Case, ctx: Any) -> str:
        # Collection generates the explicit examples before any fixture ran; the test body
        # puts the real key on those.
        return ADMIN_TOKEN[0] if ADMIN_TOKEN else "bst_not_yet"

    def set(self, case: schemathesis.Case, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


fuzz_all.hook(flatmap_path_parameters)
#: The operation the last case was for: the store is reseeded whenever it changes, since a
#: fuzzed DELETE or decision may have removed what the next operation needs.
_LAST_OPERATION: list[str] = [""]
#: Operations and requests the run made (checked at the end: every operation was called).
CALLED: dict[str, int] = {}


@fuzz_all.parametrize()
@settings(max_examples=ADMIN_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_all_checks(case: schemathesis.Case, fuzz_env: FuzzEnv, fuzz_schema: Any) -> None:
    # fuzz_schema loaded the document from the app in-process, which started it.
    label = case.operation.label
    if _LAST_OPERATION[0] != label:
        _seed(fuzz_env.store)
        _seed_case(fuzz_env.app.state.runtime)
        fuzz_env.app.state.runtime.index.refresh()
        _LAST_OPERATION[0] = label
    CALLED[label] = CALLED.get(label, 0) + 1
    # The checks that send probes of their own (ignored_auth, ...) go through the schema's app.
    case.operation.schema.app = case.operation.app = fuzz_env.app
    if (case.headers or {}).get("Authorization") == "Bearer bst_not_yet":
        case.headers = {**(case.headers or {}), **fuzz_env.admin}  # made at collection
    case.call_and_validate(excluded_checks=_excluded(case))


def test_fuzz_reached_every_operation() -> None:
    """Runs after the all-checks run (pytest keeps file order): each operation was called."""
    expected = {f"{m.upper()} {p}" for p, m in OPERATIONS}
    assert expected <= set(CALLED), sorted(expected - set(CALLED))
    total = sum(CALLED.values())
    print(f"schemathesis all checks: {len(CALLED)} operations, {total} requests")
    assert total >= len(expected) * 5


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
    # Refused by the label's documented pattern before the store's own check.
    assert r.status_code == 422 and "labels" in r.json()["detail"]
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

"""List exchanges (kind ``list``): local files and a real HTTP server on loopback, every format,
malformed lines, conditional requests, SSRF refusals, size caps, snapshot removal and resuming a
snapshot from a mid-file checkpoint, directly and through ``ExchangeStore.sync`` on SQLite and
PostgreSQL. Hash values are random hex."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bastion.config import Settings
from bastion.db import Store
from bastion.exchanges import ExchangeContext, exchange_type
from bastion.exchanges.base import Page, PermanentError, Poisoned, TransientError, Upsert
from bastion.exchanges.lists import ListConfig, ListExchange
from bastion.exchanges.store import ExchangeStore
from bastion.fetch import FetchPolicy

LOOPBACK = FetchPolicy(allow_networks=("127.0.0.1/32",))


def pdq() -> str:
    return secrets.token_hex(32)


def md5() -> str:
    return secrets.token_hex(16)


def sha256() -> str:
    return secrets.token_hex(32)


def make(source: str | Path, policy: FetchPolicy | None = LOOPBACK, **config: Any) -> ListExchange:
    cfg = ListConfig(source=str(source), **config)
    return ListExchange(cfg, None, ExchangeContext(fetch_policy=policy))


def run(ex: ListExchange, cp: dict[str, Any] | None = None) -> list[Page]:
    return list(ex.fetch(cp))


def upserts(pages: list[Page]) -> dict[str, Upsert]:
    return {i.key: i for p in pages for i in p.items if isinstance(i, Upsert)}


def poisoned(pages: list[Page]) -> list[Poisoned]:
    return [i for p in pages for i in p.items if isinstance(i, Poisoned)]


def key_of(signal_type: str, value: str) -> str:
    return f"{signal_type}:{hashlib.sha256(value.encode()).hexdigest()}"


# ---------------------------------------------------------------------------------------------
# formats, local files


def test_registered_as_list() -> None:
    assert exchange_type("list") is ListExchange


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="scheme"):
        ListConfig(source="ftp://example.org/list.txt")
    with pytest.raises(ValueError):
        ListConfig(source="list.txt", labels=("a;b",))
    with pytest.raises(ValueError):
        ListConfig(source="list.txt", format="xml")  # type: ignore[arg-type]


def test_pytx_file_one_snapshot_with_keys_and_provenance(tmp_path: Path) -> None:
    values = [pdq() for _ in range(7)]
    path = tmp_path / "list.txt"
    path.write_text("# a comment\n" + "".join(f"pdq {v.upper()}\n" for v in values))
    pages = run(make(path, labels=("csam",), organisation="Example NGO (demo)", page_size=3))
    assert len(pages) == 3
    assert {p.snapshot for p in pages} == {pages[0].snapshot}
    assert [p.snapshot_complete for p in pages] == [False, False, True]
    found = upserts(pages)
    assert set(found) == {key_of("pdq", v) for v in values}
    entry = found[key_of("pdq", values[0])].entries[0]
    assert entry.value == values[0]  # canonical: lower case
    assert (entry.source, entry.list_name, entry.labels) == (
        "Example NGO (demo)",
        "list.txt",
        ["csam"],
    )
    last = pages[-1].checkpoint
    assert last["complete"] is True and last["snapshot"] is None and last["records"] == 7
    assert pages[-1].progress == (path.stat().st_size, path.stat().st_size)


def test_csv_lines_sharing_an_external_id_are_one_record(tmp_path: Path) -> None:
    a_md5, a_pdq, b_pdq = md5(), pdq(), pdq()
    path = tmp_path / "list.csv"
    path.write_text(
        "signal_type,value,external_id,labels,source\n"
        f"md5,{a_md5},item-1,csam;A1,NGO\n"
        f"pdq,{a_pdq},item-1,csam;A1,NGO\n"
        f"pdq,{b_pdq},,,\n"
    )
    found = upserts(run(make(path, labels=("default-label",), organisation="Config Org")))
    assert set(found) == {"item-1", key_of("pdq", b_pdq)}
    item = found["item-1"]
    assert {(e.signal_type.value, e.value) for e in item.entries} == {
        ("md5", a_md5),
        ("pdq", a_pdq),
    }
    assert all(e.labels == ["csam", "A1"] and e.source == "NGO" for e in item.entries)
    other = found[key_of("pdq", b_pdq)].entries[0]
    assert other.labels == ["default-label"] and other.source == "Config Org"


def test_jsonl_file_and_malformed_lines(tmp_path: Path) -> None:
    good = [pdq() for _ in range(3)]
    path = tmp_path / "list.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"signal_type": "pdq", "value": good[0], "external_id": "x1"}),
                "{not json",
                json.dumps({"signal_type": "pdq", "value": "nothex", "external_id": "x2"}),
                json.dumps({"signal_type": "pdq", "value": good[1]}),
                json.dumps({"signal_type": "sha1", "value": "ab"}),
                json.dumps({"signal_type": "pdq", "value": good[2], "labels": ["ncii"]}),
            ]
        )
        + "\n"
    )
    pages = run(make(path))
    found = upserts(pages)
    assert set(found) == {"x1", key_of("pdq", good[1]), key_of("pdq", good[2])}
    bad = poisoned(pages)
    assert [p.error.split(":")[0] for p in bad] == ["line 2", "line 3", "line 5"]
    assert "not valid JSON" in bad[0].error and bad[0].raw == "{not json"
    # A bad line naming its record keeps the key, so the engine never deletes that record.
    assert bad[1].key == "x2" and bad[0].key is None


def test_iwf_jsonl_categories_and_skipped_hash_types(tmp_path: Path) -> None:
    r1 = {"id": "r1", "category": "A", "md5": md5(), "sha1": "aa" * 20, "pdq": pdq()}
    r2 = {"id": "r2", "category": "Category C", "sha256": sha256(), "added": "2024-03-01"}
    r3 = {"id": "r3", "category": "B", "photodna": "opaque", "sha1": "bb" * 20}
    r4 = {"id": "r4", "category": "Z", "md5": md5()}
    path = tmp_path / "iwf-list.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (r1, r2, r3, r4)))
    pages = run(make(path, organisation="IWF"))
    found = upserts(pages)
    assert set(found) == {"r1", "r2"}  # r3 has only hashes Bastion cannot match
    assert {e.signal_type.value for e in found["r1"].entries} == {"md5", "pdq"}
    e2 = found["r2"].entries[0]
    assert e2.labels == ["csam", "iwf:category-c"] and e2.source == "IWF"
    assert e2.added_at is not None and e2.added_at.year == 2024
    assert found["r1"].entries[0].labels == ["csam", "iwf:category-a"]
    bad = poisoned(pages)
    assert len(bad) == 1 and bad[0].key == "r4" and "category" in bad[0].error
    assert pages[-1].checkpoint["skipped"] == {"sha1": 2, "photodna": 1}
    assert pages[-1].checkpoint["format"] == "iwf"


def test_iwf_csv_detected_by_header(tmp_path: Path) -> None:
    a, b = md5(), pdq()
    path = tmp_path / "hashes.dat"
    path.write_text(f"id,category,md5,sha1,pdq\nh1,B,{a},{'cc' * 20},{b}\nh2,A,,,\n")
    pages = run(make(path))
    assert pages[-1].checkpoint["format"] == "iwf"
    assert {(e.signal_type.value, e.value) for e in upserts(pages)["h1"].entries} == {
        ("md5", a),
        ("pdq", b),
    }
    assert [p.error for p in poisoned(pages)] == [
        "line 3: no hash (expected one of md5, sha256, pdq, sha1, photodna)"
    ]


def test_format_by_extension_when_content_is_ambiguous(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("# nothing yet\n")
    pages = run(make(path))
    assert pages[-1].checkpoint["format"] == "csv" and upserts(pages) == {}
    odd = tmp_path / "odd.bin"
    odd.write_text("???\n")
    with pytest.raises(PermanentError, match="format"):
        run(make(odd))


def test_unchanged_file_is_a_no_op_and_a_change_starts_a_new_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("".join(f"md5 {md5()}\n" for _ in range(4)))
    ex = make(path)
    first = run(ex)
    assert run(ex, first[-1].checkpoint) == []
    path.write_text(path.read_text() + f"md5 {md5()}\n")
    second = run(ex, first[-1].checkpoint)
    assert len(upserts(second)) == 5 and second[-1].snapshot_complete
    assert second[0].snapshot != first[0].snapshot


def test_resume_from_a_mid_file_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    rows = [(f"id-{i}", pdq()) for i in range(35)]
    path.write_text("signal_type,value,external_id\n" + "".join(f"pdq,{v},{k}\n" for k, v in rows))
    ex = make(path, page_size=10)
    full = run(ex)
    cp = full[1].checkpoint  # after two pages: 20 records, lines 1..21 done
    assert cp["line"] == 21 and cp["records"] == 20 and not cp["complete"]
    resumed = run(ex, cp)
    assert [p.snapshot for p in resumed] == [full[0].snapshot] * 2
    keys = [i.key for p in resumed for i in p.items]
    assert keys == [k for k, _ in rows[20:]]  # starts right after the checkpoint, header kept
    assert resumed[-1].snapshot_complete and resumed[-1].checkpoint["records"] == 35
    # Line numbers in errors stay those of the file after resuming.
    path.write_text(path.read_text() + "pdq,bad,id-x\n")
    grown = run(ex)
    again = run(ex, grown[2].checkpoint)
    assert [p.error for p in poisoned(again)] == [
        "line 37: pdq value must be 64 hexadecimal characters, got 3 characters: 'bad'"
    ]


def test_a_checkpoint_of_another_list_version_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("".join(f"pdq {pdq()}\n" for _ in range(30)))
    ex = make(path, page_size=10)
    cp = run(ex)[0].checkpoint
    path.write_text("".join(f"pdq {pdq()}\n" for _ in range(30)))
    os.utime(path, ns=(1, 1))
    pages = run(ex, cp)
    assert pages[0].snapshot != cp["snapshot"] and len(upserts(pages)) == 30


def test_missing_file_is_transient_and_dirs_are_enforced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TransientError):
        run(make(tmp_path / "nope.txt"))
    outside = tmp_path / "outside.txt"
    outside.write_text(f"pdq {pdq()}\n")
    allowed = tmp_path / "lists"
    allowed.mkdir()
    monkeypatch.setenv("BASTION_LIST_DIRS", str(allowed))
    with pytest.raises(PermanentError, match="BASTION_LIST_DIRS"):
        run(make(outside))
    (allowed / "in.txt").write_text(f"pdq {pdq()}\n")
    assert len(upserts(run(make(allowed / "in.txt")))) == 1


# ---------------------------------------------------------------------------------------------
# HTTP on loopback


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Send the body without Content-Length (the connection close ends it).
    unsized: bool = False


@dataclass
class ListServer:
    """A list host: ``routes`` by path; honours If-None-Match against an ``ETag`` route header."""

    base: str
    routes: dict[str, Route]
    requests: list[dict[str, str]]


@pytest.fixture
def server() -> Iterator[ListServer]:
    routes: dict[str, Route] = {}
    requests: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            route = routes.get(self.path)
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = route.headers.get("ETag")
            if etag and self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(route.status)
            for k, v in route.headers.items():
                self.send_header(k, v)
            if not route.unsized:
                self.send_header("Content-Length", str(len(route.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield ListServer(f"http://127.0.0.1:{httpd.server_address[1]}", routes, requests)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_url_list_with_etag_then_304_is_a_no_op(server: ListServer) -> None:
    values = [pdq() for _ in range(5)]
    server.routes["/list.txt"] = Route(
        body="".join(f"pdq {v}\n" for v in values).encode(), headers={"ETag": '"v1"'}
    )
    ex = make(f"{server.base}/list.txt")
    pages = run(ex)
    assert set(upserts(pages)) == {key_of("pdq", v) for v in values}
    cp = pages[-1].checkpoint
    assert cp["fingerprint"]["etag"] == '"v1"' and cp["complete"]
    assert run(ex, cp) == []
    assert server.requests[-1]["if-none-match"] == '"v1"'
    # A new version: downloaded again, a new snapshot without the dropped value.
    server.routes["/list.txt"] = Route(
        body="".join(f"pdq {v}\n" for v in values[1:]).encode(), headers={"ETag": '"v2"'}
    )
    second = run(ex, cp)
    assert set(upserts(second)) == {key_of("pdq", v) for v in values[1:]}
    assert second[-1].snapshot_complete and second[-1].checkpoint["fingerprint"]["etag"] == '"v2"'


def test_url_without_validators_is_a_no_op_when_its_bytes_are_the_same(
    server: ListServer,
) -> None:
    server.routes["/l.jsonl"] = Route(
        body=(json.dumps({"signal_type": "md5", "value": md5()}) + "\n").encode()
    )
    ex = make(f"{server.base}/l.jsonl")
    cp = run(ex)[-1].checkpoint
    assert cp["fingerprint"]["sha256"] and cp["fingerprint"]["etag"] is None
    assert run(ex, cp) == []
    assert len(server.requests) == 2 and "if-none-match" not in server.requests[-1]


def test_url_resume_mid_snapshot_downloads_and_skips_to_the_line(server: ListServer) -> None:
    values = [md5() for _ in range(25)]
    server.routes["/list.txt"] = Route(body="".join(f"md5 {v}\n" for v in values).encode())
    ex = make(f"{server.base}/list.txt", page_size=10)
    cp = run(ex)[0].checkpoint
    resumed = run(ex, cp)
    assert resumed[0].snapshot == cp["snapshot"]
    assert [i.key for p in resumed for i in p.items] == [key_of("md5", v) for v in values[10:]]


def test_redirect_to_a_blocked_address_is_refused(server: ListServer) -> None:
    server.routes["/moved"] = Route(status=302, headers={"Location": "http://127.0.0.2:9/x.txt"})
    server.routes["/meta"] = Route(
        status=301, headers={"Location": "http://169.254.169.254/latest/meta-data"}
    )
    for path in ("/moved", "/meta"):
        with pytest.raises(PermanentError, match="not a public address"):
            run(make(f"{server.base}{path}"))
    assert [r["path"] for r in server.requests] == ["/moved", "/meta"]  # nothing else contacted


def test_loopback_is_refused_without_an_allowance(server: ListServer) -> None:
    server.routes["/list.txt"] = Route(body=f"md5 {md5()}\n".encode())
    with pytest.raises(PermanentError, match="not a public address"):
        run(make(f"{server.base}/list.txt", policy=FetchPolicy()))
    assert server.requests == []


def test_redirects_are_followed_when_allowed(server: ListServer) -> None:
    value = md5()
    server.routes["/old"] = Route(status=301, headers={"Location": "/new.txt"})
    server.routes["/new.txt"] = Route(body=f"md5 {value}\n".encode())
    assert set(upserts(run(make(f"{server.base}/old")))) == {key_of("md5", value)}


def test_oversized_lists_are_refused(server: ListServer) -> None:
    body = "".join(f"md5 {md5()}\n" for _ in range(100)).encode()
    server.routes["/sized.txt"] = Route(body=body)
    server.routes["/unsized.txt"] = Route(body=body, unsized=True)
    for path in ("/sized.txt", "/unsized.txt"):
        with pytest.raises(PermanentError, match="limit"):
            run(make(f"{server.base}{path}", max_bytes=1000))
    assert len(upserts(run(make(f"{server.base}/unsized.txt", max_bytes=len(body))))) == 100


def test_server_errors_are_transient_and_missing_lists_permanent(server: ListServer) -> None:
    server.routes["/busy"] = Route(status=503, headers={"Retry-After": "120"})
    with pytest.raises(TransientError) as info:
        run(make(f"{server.base}/busy"))
    assert info.value.retry_after == 120
    with pytest.raises(PermanentError, match="404"):
        run(make(f"{server.base}/missing.txt"))


# ---------------------------------------------------------------------------------------------
# through the engine, on SQLite and PostgreSQL


@pytest.fixture
def xs(store: Store) -> ExchangeStore:
    settings = Settings(fetch_allow_networks=("127.0.0.1/32",))
    return ExchangeStore(store, None, settings)


def _state(store: Store, bank: str) -> dict[str, tuple[bool, str]]:
    return {
        e.value: (e.enabled, e.disabled_reason)
        for e in store.iter_entries(banks=[bank], enabled_only=False)
    }


def test_engine_sync_removes_what_left_the_list(
    xs: ExchangeStore, store: Store, tmp_path: Path
) -> None:
    values = [pdq() for _ in range(12)]
    path = tmp_path / "list.txt"
    path.write_text("".join(f"pdq {v}\n" for v in values) + "pdq nothex\n")
    xs.add("demo-list", "list", config={"source": str(path), "page_size": 5, "labels": ["csam"]})
    result = xs.sync("demo-list")
    assert result.error is None and result.complete, result
    assert (result.added, result.poisoned, result.pages) == (12, 1, 3)
    assert _state(store, "demo-list") == {v: (True, "") for v in values}
    entry = store.find_entries("demo-list", value=values[0])[0]
    assert entry.external_id == key_of("pdq", values[0]) and entry.labels == ["csam"]

    again = xs.sync("demo-list")  # unchanged file: no pages at all
    assert (again.pages, again.added, again.disabled) == (0, 0, 0)

    path.write_text("".join(f"pdq {v}\n" for v in values[3:]))
    third = xs.sync("demo-list")
    assert third.error is None and third.disabled == 3
    state = _state(store, "demo-list")
    assert all(not state[v][0] and state[v][1].startswith("upstream:") for v in values[:3])
    assert all(state[v] == (True, "") for v in values[3:])


def test_engine_resumes_an_interrupted_snapshot(
    xs: ExchangeStore, store: Store, tmp_path: Path
) -> None:
    old, new = [md5() for _ in range(6)], [md5() for _ in range(20)]
    path = tmp_path / "list.txt"
    path.write_text("".join(f"md5 {v}\n" for v in old))
    xs.add("l", "list", config={"source": str(path), "page_size": 4})
    assert xs.sync("l").added == 6
    path.write_text("".join(f"md5 {v}\n" for v in new))
    partial = xs.sync("l", max_pages=2)  # as if the worker stopped after two pages
    assert not partial.complete and partial.checkpoint and partial.checkpoint["line"] == 8
    assert all(_state(store, "l")[v] == (True, "") for v in old)  # no sweep yet
    rest = xs.sync("l")
    assert rest.error is None and rest.complete
    assert rest.added == 12 and rest.pages == 3  # lines 9..20 only, no re-reading of 1..8
    state = _state(store, "l")
    assert all(state[v] == (True, "") for v in new)
    assert all(not state[v][0] for v in old)


def test_engine_syncs_a_url_list(xs: ExchangeStore, store: Store, server: ListServer) -> None:
    rows = [{"id": f"r{i}", "category": "ABC"[i % 3], "md5": md5()} for i in range(9)]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    server.routes["/iwf.jsonl"] = Route(body=body, headers={"ETag": '"1"'})
    xs.add("iwf-demo", "list", config={"source": f"{server.base}/iwf.jsonl", "page_size": 4})
    result = xs.sync("iwf-demo")
    assert result.error is None and result.added == 9
    entries = {e.external_id: e for e in store.iter_entries(banks=["iwf-demo"])}
    assert entries["r1"].labels == ["csam", "iwf:category-b"]
    assert xs.sync("iwf-demo").pages == 0
    assert server.requests[-1]["if-none-match"] == '"1"'

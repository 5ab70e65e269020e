"""The SDK against a real `bastion serve` on loopback: every operation, sync and async, and the
server's errors as typed exceptions carrying the problem details."""

from __future__ import annotations

import asyncio
import io
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bastion.config import Settings
from bastion.sdk import (
    ApiError,
    AsyncClient,
    BastionError,
    CaseClosed,
    CaseLeased,
    Client,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotLeased,
    RevealRequired,
    TransportError,
    Unauthorized,
    hashes,
    models,
)
from bastion.server import create_app
from tests.sdk.conftest import BANKED, EXACT, SCANNED, Stack

# -- scan, lookup, banks ----------------------------------------------------------------------


def test_scan_bytes_paths_and_files(stack: Stack) -> None:
    photo = stack.testdata / SCANNED
    with stack.client() as bastion:
        by_path = bastion.scan(photo, context={"uploader_id": "u-scan", "content_id": "c-1"})
        by_bytes = bastion.scan(photo.read_bytes(), filename="x.jpg")
        with photo.open("rb") as f:
            by_file = bastion.scan(f, dihedral=True, threshold=20)
    for result in (by_path, by_bytes, by_file):
        assert result.kind == "image" and result.size == photo.stat().st_size
        assert {s.type for s in result.signals} >= {"pdq", "md5", "sha256"}
        (match,) = [m for m in result.matches if m.bank == "bridge"]
        assert 0 < match.distance <= 20 and match.signal_type == "pdq"  # exact: admin key
        assert match.band == ("near" if match.distance <= 15 else "far")
        assert result.verdict.decision == "review" and result.verdict.case_id
        assert result.matched
    assert by_path.scan_id is not None
    plain = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(plain, "PNG")
    with stack.client() as bastion:
        unmatched = bastion.scan(plain.getvalue())
    assert unmatched.matches == [] and unmatched.verdict.decision == "allow"
    assert unmatched.verdict.case_id is None and unmatched.scan_id is None


def test_lookup_hashes_and_files_without_uploading(stack: Stack) -> None:
    banked = hashes(stack.testdata / BANKED)
    pdq = next(s for s in banked if s.type == "pdq")
    with stack.client() as bastion:
        results = bastion.lookup([("pdq", pdq.value), {"type": "md5", "value": "0" * 32}, pdq])
        assert [r.type for r in results] == ["pdq", "md5", "pdq"]
        assert results[0].matches[0].bank == "bridge" and results[0].matches[0].distance == 0
        assert results[1].matches == [] and results[1].error is None
        bad = bastion.lookup([("pdq", "not-hex")])
        assert bad[0].error and bad[0].matches == []
        near = bastion.lookup_file(stack.testdata / SCANNED)
        assert any(m.bank == "bridge" for r in near for m in r.matches)
        exact = bastion.lookup_file(stack.testdata / EXACT)
        assert any(m.bank == "exact" and m.signal_type == "md5" for r in exact for m in r.matches)


def test_banks(stack: Stack) -> None:
    with stack.client() as bastion:
        bank = bastion.create_bank("sdk-bank", description="made by the SDK", labels=["x"])
        assert bank.name == "sdk-bank" and bank.labels == ["x"] and bank.enabled
        added = bastion.add_entries(
            "sdk-bank",
            [
                {"signal_type": "md5", "value": "a" * 32, "external_id": "ext-a"},
                {"signal_type": "md5", "value": "nope"},
            ],
        )
        assert (added.added, added.rejected) == (1, 1) and "entries[1]" in added.errors[0]
        assert "sdk-bank" in {b.name for b in bastion.list_banks()}
        assert bastion.get_bank("sdk-bank").entries == 1
        (entry,) = bastion.disable_entry("sdk-bank", "ext-a", reason="withdrawn")
        assert not entry.enabled and entry.disabled_reason == "withdrawn"
        assert entry.external_id == "ext-a" and entry.list_name == ""
        assert bastion.lookup([("md5", "a" * 32)])[0].matches == []
        (entry,) = bastion.enable_entry("sdk-bank", entry.id)
        assert entry.enabled
        with pytest.raises(NotFound) as missing:
            bastion.get_bank("no-such-bank")
        assert missing.value.status == 404 and "no-such-bank" in missing.value.detail
        with pytest.raises(ApiError) as taken:
            bastion.create_bank("sdk-bank")
        assert taken.value.status == 409 and taken.value.problem["status"] == 409


# -- errors -----------------------------------------------------------------------------------


def test_errors_carry_the_problem_details(stack: Stack) -> None:
    with (
        Client(stack.base, "bst_nothere_" + "x" * 43) as stranger,
        pytest.raises(Unauthorized) as denied,
    ):
        stranger.list_banks()
    assert denied.value.status == 401 and denied.value.title == "Unauthorized"
    assert "unknown, revoked or expired" in denied.value.detail
    assert "www-authenticate" in denied.value.headers
    with stack.client("rex") as rex:
        with pytest.raises(Forbidden) as scope:
            rex.list_banks()  # review and media only
        assert "'curate' scope" in scope.value.detail
        with pytest.raises(InvalidRequest) as invalid:
            rex.list_cases(limit=0)
        assert invalid.value.status == 422 and invalid.value.errors
        assert invalid.value.errors[0]["loc"][-1] == "limit"
    with stack.client() as platform, pytest.raises(Forbidden) as unbound:
        platform.list_cases()
    assert unbound.value.code == "not_bound" and isinstance(unbound.value, BastionError)


def test_transport_errors_and_insecure_urls() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with Client(f"http://127.0.0.1:{port}", "k") as nowhere, pytest.raises(TransportError):
        nowhere.list_banks()
    with pytest.raises(ValueError, match="plain http"):
        Client("http://bastion.example.org", "k")
    Client("http://bastion.example.org", "k", allow_insecure=True).close()
    Client("https://bastion.example.org", "k").close()
    with pytest.raises(ValueError, match="API key is required"):
        Client("https://bastion.example.org", " ")


# -- cases ------------------------------------------------------------------------------------


def test_review_a_case_through_the_sdk(stack: Stack, testdata: Path) -> None:
    case_id = stack.scan()
    with stack.client("rex") as rex, stack.client("sue") as sue:
        listed = {c.id: c for c in rex.iter_cases(page_size=1)}
        assert case_id in listed and listed[case_id].queue == "default"
        assert any(q.queue == "default" and q.open >= 1 for q in rex.queues())
        case = rex.get_case(case_id)
        (item,) = case.items
        assert item.matches[0]["bank"] == "bridge" and case.must_reveal == [item.id]
        assert item.media_url == f"/v1/cases/{case_id}/items/{item.id}/media"
        with pytest.raises(NotLeased):
            rex.confirm(case_id, "A1")
        lease = rex.claim(case_id)
        assert lease.lease_holder == "rex" and lease.lease_until is not None
        with pytest.raises(CaseLeased) as taken:
            sue.claim(case_id)
        assert taken.value.holder == "rex" and taken.value.until is not None
        with pytest.raises(RevealRequired) as reveal_first:
            rex.confirm(case_id, "A1")
        assert reveal_first.value.items == [item.id]
        blurred = rex.media(case_id, item.id)
        assert blurred.media_type == "image/jpeg"
        assert blurred.data != (testdata / SCANNED).read_bytes()
        with pytest.raises(Forbidden):
            rex.media(case_id, item.id, clear=True)
        shown = rex.reveal(case_id, item.id)
        assert shown.count >= 1 and shown.media_url.endswith("clear=true")
        clear = rex.media(case_id, item.id, clear=True)
        assert clear.data == (testdata / SCANNED).read_bytes()
        done = rex.confirm(case_id, "A2", labels=["bridge-test"], note="checked")
        assert done.event == "confirmed" and done.final and done.classification == "A2"
        assert done.actions == ["remove_content", "preserve"]
        with pytest.raises(CaseClosed):
            rex.claim(case_id)
        closed = {c.id for c in rex.iter_cases(state="confirmed")}
        assert case_id in closed
        history = [e.kind for e in sue.get_case(case_id).history]
        assert history[:2] == ["open", "claim"] and history[-1] == "decide"


def test_release_escalate_and_not_abusive(stack: Stack) -> None:
    first, second = stack.scan(EXACT), stack.scan(EXACT)
    with stack.client("rex") as rex, stack.client("sue") as sue:
        rex.claim(first)
        rex.release(first)
        assert rex.get_case(first).lease_holder is None
        rex.claim(first)
        escalated = rex.escalate(first, note="unsure")
        assert escalated.event == "escalated" and escalated.queue == "senior"
        with pytest.raises(Forbidden):
            rex.get_case(first)  # a reviewer does not see the senior queue
        assert sue.get_case(first).queue == "senior"
        sue.claim(second)
        cleared = sue.not_abusive(second, "a landscape, not abuse")
        assert cleared.event == "not_abusive" and cleared.disputed and not cleared.disabled


def test_reports_through_the_sdk(stack: Stack) -> None:
    case_id = stack.scan(EXACT)
    with stack.client("ada") as ada:
        ada.claim(case_id)
        ada.confirm(case_id, "B1")
        draft = ada.draft_report(
            case_id,
            incident_type="Child Pornography (possession, manufacture, and distribution)",
            first_name="Test",
            last_name="Reporter",
            email="reports@example.org",
        )
        assert draft.case_id == case_id and draft.authority == "ncmec"
        assert draft.state == "drafted" and [r.id for r in draft.reports] == [draft.id]
        assert ada.get_report(draft.id).id == draft.id
        assert draft.id in {r.id for r in ada.list_reports(state="drafted")}
        with pytest.raises(ApiError) as again:
            ada.draft_report(
                case_id,
                incident_type="Child Sex Trafficking",
                first_name="T",
                last_name="R",
                email="r@example.org",
            )
        assert again.value.status == 409 and again.value.problem["report_id"] == draft.id


# -- async ------------------------------------------------------------------------------------


def test_the_async_client(stack: Stack, testdata: Path) -> None:
    async def run() -> dict[str, Any]:
        async with (
            AsyncClient(stack.base, stack.platform) as platform,
            AsyncClient(stack.base, stack.keys["sue"]) as sue,
        ):
            scanned = await platform.scan(
                testdata / SCANNED, context={"uploader_id": "async-1", "content_id": "a"}
            )
            case_id = scanned.verdict.case_id
            assert case_id is not None
            looked = await platform.lookup([("md5", "0" * 32)])
            banks = await platform.list_banks()
            seen = [c.id async for c in sue.iter_cases(page_size=2)]
            page = await sue.list_cases(priority="normal")
            case = await sue.get_case(case_id)
            await sue.claim(case_id)
            item = case.items[0].id
            await sue.reveal(case_id, item)
            media = await sue.media(case_id, item, clear=True)
            done = await sue.not_abusive(case_id, "a bridge", disable_entries=False)
            with pytest.raises(CaseClosed):
                await sue.claim(case_id)
            return {
                "case_id": case_id,
                "looked": looked,
                "banks": banks,
                "seen": seen,
                "page": page,
                "media": media,
                "done": done,
            }

    out = asyncio.run(run())
    assert out["looked"][0].matches == [] and {"bridge", "exact"} <= {b.name for b in out["banks"]}
    assert out["case_id"] in out["seen"] and out["case_id"] in {c.id for c in out["page"].cases}
    assert out["media"].data == (testdata / SCANNED).read_bytes()
    assert out["done"].event == "not_abusive" and out["done"].disputed


# -- the models follow the document -----------------------------------------------------------

#: SDK model -> the server's response schema it mirrors.
MIRRORS = {
    models.ScanResult: "ScanResponse",
    models.Match: "MatchOut",
    models.Signal: "SignalOut",
    models.Verdict: "Verdict",
    models.LookupResult: "LookupResult",
    models.Bank: "BankOut",
    models.Entry: "EntryOut",
    models.EntriesAdded: "ImportOut",
    models.CaseSummary: "CaseSummaryOut",
    models.CasePage: "CasePage",
    models.QueueCount: "QueueOut",
    models.Case: "CaseOut",
    models.CaseItem: "ItemOut",
    models.CaseEvent: "EventOut",
    models.Lease: "LeaseOut",
    models.DecisionResult: "DecisionOut",
    models.Revealed: "RevealOut",
    models.Report: "ReportOut",
    models.ReportFile: "FileOut",
    models.Draft: "DraftOut",
    models.DetectorPrecision: "DetectorOut",
}


def test_every_sdk_field_is_in_the_servers_document() -> None:
    doc = create_app(Settings()).openapi()
    schemas = doc["components"]["schemas"]
    for model, name in MIRRORS.items():
        properties = set(schemas[name]["properties"])
        fields = {f.alias or key for key, f in model.model_fields.items()}
        assert fields <= properties, (model.__name__, sorted(fields - properties))
        # What the SDK cannot do without, the server must always send.
        required = {f.alias or key for key, f in model.model_fields.items() if f.is_required()}
        assert required <= set(schemas[name].get("required", ())), (model.__name__, required)


def test_requests_are_built_as_the_server_expects() -> None:
    """The exact requests, seen by a transport (the server side is covered above)."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    with Client("https://b.example", "k", transport=httpx.MockTransport(handler)) as bastion:
        bastion.release(7)
        with pytest.raises(ApiError):
            bastion.get_bank("a b/c")
    assert sent[0].url.path == "/v1/cases/7/release" and sent[0].method == "POST"
    assert sent[0].headers["authorization"] == "Bearer k"
    assert sent[0].headers["user-agent"].startswith("bastion-sdk/")
    assert sent[1].url.raw_path == b"/v1/banks/a%20b%2Fc"

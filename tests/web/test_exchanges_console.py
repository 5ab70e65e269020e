"""The console's exchange pages: status an admin can act on, and a sync request the worker
carries out (the page itself never syncs)."""

from __future__ import annotations

from datetime import UTC, datetime

from bastion.exchanges.base import Poisoned, Upsert
from tests.exchanges.scripted import SCRIPTS, Script, Step, entry, md5
from tests.web.conftest import Console


def _scripted(console: Console, name: str) -> None:
    SCRIPTS[name] = Script(
        steps=[
            Step(items=[Upsert("rec-1", (entry(md5(f"{name}-1")),)), Poisoned("bad hex", "rec-2")]),
            Step(items=[Upsert("rec-3", (entry(md5(f"{name}-3")),))]),
        ]
    )
    console.rt.exchanges.add(
        name, "scripted", config={"script": name}, interval=3600, labels=["test"], actor="test"
    )
    console.rt.exchanges.sync(name)


def test_exchange_list_and_detail_show_what_the_last_sync_did(console: Console) -> None:
    _scripted(console, "console-list")
    ada = console.login("ada")
    page = ada.get("/admin/exchanges")
    assert page.status_code == 200
    assert 'data-exchange="console-list"' in page.text
    assert "scripted" in page.text
    detail = ada.get("/admin/exchanges/console-list")
    assert detail.status_code == 200
    assert "bad hex" in detail.text  # the poisoned record, with its key
    assert "rec-2" in detail.text
    runs = detail.text.split('id="runs"')[1].split("</table>")[0]
    assert "<td>2</td>" in runs  # two pages applied
    assert ada.get("/admin/exchanges/nowhere").status_code == 404


def test_sync_now_only_schedules_and_is_audited(console: Console) -> None:
    _scripted(console, "console-sync")
    fetched = list(SCRIPTS["console-sync"].fetched)
    before = console.rt.exchanges.get("console-sync").next_sync_at
    assert before is not None and before > datetime.now(UTC)
    ada = console.login("ada")
    r = ada.post_form("/admin/exchanges/console-sync/sync")
    assert r.status_code == 303
    after = console.rt.exchanges.get("console-sync").next_sync_at
    assert after is not None and after <= datetime.now(UTC)
    # The request did not sync in the web process: nothing more was fetched.
    assert SCRIPTS["console-sync"].fetched == fetched
    assert any(a.startswith("exchange.") and "sync" in a for a in console.audit_actions("exchange"))
    r = ada.post_form("/admin/exchanges/console-sync/enabled", {"enabled": "0"})
    assert r.status_code == 303
    assert not console.rt.exchanges.get("console-sync").enabled
    # A disabled exchange would never sync: asking for one is refused, not silently accepted.
    assert ada.post_form("/admin/exchanges/console-sync/sync").status_code == 409
    bad = ada.post_form("/admin/exchanges/console-sync/enabled", {"enabled": "x"})
    assert bad.status_code == 400


def test_non_admins_cannot_see_or_trigger_exchanges(console: Console) -> None:
    _scripted(console, "console-roles")
    rex = console.login("rex")
    assert rex.get("/admin/exchanges").status_code == 403
    assert rex.get("/admin/exchanges/console-roles").status_code == 403
    assert rex.post_form("/admin/exchanges/console-roles/sync").status_code == 403
    assert console.rt.exchanges.get("console-roles").next_sync_at > datetime.now(UTC)

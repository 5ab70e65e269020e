"""`bastion exchange` end to end on SQLite and PostgreSQL: types, add (credentials from a file,
the environment or the command line), list, status, a real sync through the engine with a fake
exchange kind registered here (pages, checkpoints, a poisoned record, a rejected token), errors,
update, set-credentials, enable/disable and remove. Bad input is an `error:` and exit 2.

The fake kind serves synthetic MD5 values (digests of generated text), nothing else."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from bastion.banks import NewEntry
from bastion.cli import app
from bastion.db import Store
from bastion.exchanges import (
    Checkpoint,
    Exchange,
    ExchangeConfig,
    ExchangeCredentials,
    Page,
    PermanentError,
    Poisoned,
    Upsert,
    Verdict,
    register,
)
from bastion.signals.base import SignalType
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()
TOKEN = "open-sesame-edges-7f3a"
KIND = "test-edges"


def synthetic_md5(page: int, i: int) -> str:
    return hashlib.md5(f"bastion edges test {page}/{i}".encode()).hexdigest()


class EdgeConfig(ExchangeConfig):
    """Pages of synthetic records; optionally one malformed record on the first page."""

    pages: int = 2
    per_page: int = 3
    poison: bool = False
    list_name: str = "edges"
    #: Press Ctrl-C (send ourselves SIGINT) while fetching the first page.
    interrupt: bool = False


class EdgeCredentials(ExchangeCredentials):
    token: str


@register
class EdgeExchange(Exchange):
    """A test exchange: `pages` pages of `per_page` synthetic MD5 records."""

    kind = KIND
    Config = EdgeConfig
    Credentials = EdgeCredentials
    feedback = frozenset({Verdict.NEGATIVE})
    default_interval = 600.0

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        assert isinstance(self.config, EdgeConfig)
        if self.credentials is None or getattr(self.credentials, "token", None) != TOKEN:
            raise PermanentError("the test server refused the token")
        start = int((checkpoint or {}).get("page", 0))
        for page in range(start, self.config.pages):
            items: list[Upsert | Poisoned] = [
                Upsert(
                    key=f"rec-{page}-{i}",
                    entries=(
                        NewEntry(
                            signal_type=SignalType.MD5,
                            value=synthetic_md5(page, i),
                            source="Edges Test Org",
                            list_name=self.config.list_name,
                            labels=["demo"],
                        ),
                    ),
                )
                for i in range(self.config.per_page)
            ]
            if self.config.interrupt and page == start:
                # Only into the CLI's own handler: the default one would stop the test run.
                assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
                os.kill(os.getpid(), signal.SIGINT)
            if self.config.poison and page == 0:
                items.append(Poisoned("hash is not hex", key="rec-bad", raw='{"md5": "zz"}'))
            yield Page(items, checkpoint={"page": page + 1}, progress=(page + 1, self.config.pages))


def bastion(db: str, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["--db", db, *args], input=input, catch_exceptions=False)


def ok(db: str, *args: str) -> Result:
    result = bastion(db, *args)
    assert result.exit_code == 0, result.output
    return result


def said(text: str) -> str:
    """Messages with Rich's line wrapping undone."""
    return " ".join(text.split())


def status(db: str, name: str = "edges") -> dict:
    return json.loads(ok(db, "exchange", "status", name, "--format", "json").stdout)


def entries(db: str, bank: str = "edges") -> list:
    with Store.open(db) as store:
        return list(store.iter_entries(banks=[bank], enabled_only=False))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    monkeypatch.chdir(tmp_path)  # PostgreSQL's master key lives in ./bastion-data
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_SECRET_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        with postgres_schema_url("t_xcli") as url:
            yield url


@pytest.fixture
def creds_file(tmp_path: Path) -> Path:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"token": TOKEN}))
    return path


def add(db: str, creds_file: Path, *args: str, name: str = "edges") -> Result:
    return ok(
        db, "exchange", "add", name, "--type", KIND, "--credentials-file", str(creds_file), *args
    )


def test_types_lists_config_and_credential_fields(db: str) -> None:
    rows = json.loads(ok(db, "exchange", "types", "--format", "json").stdout)
    row = next(r for r in rows if r["kind"] == KIND)
    config = {f["name"]: f for f in row["config"]}
    assert set(config) == {"pages", "per_page", "poison", "list_name", "interrupt"}
    assert config["per_page"]["default"] == 3 and config["per_page"]["required"] is False
    assert row["credentials"] == [
        {"name": "token", "type": "str", "required": True, "description": ""}
    ]
    assert row["feedback"] == ["negative"] and row["interval"] == 600.0
    table = said(ok(db, "exchange", "types").stdout)
    assert KIND in table and "token (str, required)" in table


def test_add_list_status_never_show_credentials(db: str, creds_file: Path) -> None:
    result = add(db, creds_file, "--set", "per_page=4", "--set", "list_name=123", "-l", "demo")
    assert "credentials sealed" in said(result.stderr)
    st = status(db)
    assert st["kind"] == KIND and st["bank"] == "edges" and st["enabled"] is True
    # typed by the kind's model: an int where it takes an int, text where it takes text
    assert st["config"] == {
        "pages": 2,
        "per_page": 4,
        "poison": False,
        "list_name": "123",
        "interrupt": False,
    }
    assert st["has_credentials"] is True and st["checkpoint"] is None
    assert st["interval_seconds"] == 600.0 and st["send_feedback"] is True
    listed = json.loads(ok(db, "exchange", "list", "--format", "json").stdout)
    assert [(r["name"], r["kind"], r["bank"]) for r in listed] == [("edges", KIND, "edges")]
    banks = json.loads(ok(db, "bank", "list", "--format", "json").stdout)
    assert [(b["name"], b["labels"]) for b in banks] == [("edges", ["demo"])]
    table = ok(db, "exchange", "status", "edges").stdout
    for text in (ok(db, "exchange", "list").stdout, table, json.dumps(st), json.dumps(listed)):
        assert TOKEN not in text
    assert "has_credentials" in table and KIND in table
    with Store.open(db) as store:
        events = [(e.actor, e.action, e.target) for e in store.iter_audit()]
        assert ("cli:alice", "exchange.add", "edges") in events
        assert all(TOKEN not in json.dumps(e.detail) for e in store.iter_audit())
    if db.startswith("sqlite:///"):
        assert TOKEN.encode() not in Path(db.removeprefix("sqlite:///")).read_bytes()


def test_sync_applies_pages_and_resumes_from_the_checkpoint(db: str, creds_file: Path) -> None:
    add(db, creds_file, "--set", "pages=3")
    first = bastion(db, "exchange", "sync", "edges", "--max-pages", "1")
    assert first.exit_code == 0, first.output
    assert "1 pages: 3 added" in said(first.stderr)
    assert "more remains" in said(first.stderr)
    assert status(db)["checkpoint"] == {"page": 1}
    assert len(entries(db)) == 3

    rest = bastion(db, "exchange", "sync", "edges", "--format", "json")
    assert rest.exit_code == 0, rest.output
    [counts] = json.loads(rest.stdout)
    assert counts["pages"] == 2 and counts["added"] == 6 and counts["complete"] is True
    assert counts["error"] is None and counts["checkpoint"] == {"page": 3}
    stored = entries(db)
    assert sorted(e.value for e in stored) == sorted(
        synthetic_md5(p, i) for p in range(3) for i in range(3)
    )
    assert {e.external_id for e in stored} == {f"rec-{p}-{i}" for p in range(3) for i in range(3)}
    st = status(db)
    assert st["state"] == "idle" and st["last_error"] is None
    assert st["totals"]["added"] == 9 and st["last_success_at"] is not None
    assert st["runs"], "each sync is recorded as a run"

    # Nothing new upstream: the next sync repeats nothing.
    again = json.loads(ok(db, "exchange", "sync", "edges", "--format", "json").stdout)[0]
    assert again["added"] == 0 and again["error"] is None
    assert len(entries(db)) == 9


def test_poisoned_record_is_recorded_and_the_rest_applied(db: str, creds_file: Path) -> None:
    add(db, creds_file, "--set", "poison=true")
    result = bastion(db, "exchange", "sync", "edges")
    assert result.exit_code == 0, result.output
    assert "1 poisoned" in said(result.stderr)
    assert "bastion exchange errors edges" in said(result.stderr)
    assert len(entries(db)) == 6
    errors = json.loads(ok(db, "exchange", "errors", "edges", "--format", "json").stdout)
    assert len(errors) == 1
    assert "hash is not hex" in json.dumps(errors[0]) and "rec-bad" in json.dumps(errors[0])
    assert status(db)["errors"] == errors
    assert "hash is not hex" in said(ok(db, "exchange", "errors", "edges").stdout)


def test_rejected_token_fails_the_sync_and_set_credentials_fixes_it(
    db: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"token": "not-the-token"}))
    ok(db, "exchange", "add", "edges", "--type", KIND, "--credentials-file", str(wrong))
    failed = bastion(db, "exchange", "sync", "edges")
    assert failed.exit_code == 1, failed.output
    assert "error: sync of edges failed" in said(failed.stderr)
    assert "refused the token" in said(failed.stderr)
    assert "Traceback" not in failed.output
    st = status(db)
    assert st["state"] in ("error", "stalled") and "refused the token" in st["last_error"]
    assert entries(db) == []

    fixed = bastion(db, "exchange", "set-credentials", "edges", "--credential", f"token={TOKEN}")
    assert fixed.exit_code == 0, fixed.output
    assert "shell history" in said(fixed.stderr)
    assert TOKEN not in fixed.output
    ok(db, "exchange", "sync", "edges")
    assert len(entries(db)) == 6
    with Store.open(db) as store:
        assert ("cli:alice", "exchange.credentials") in [
            (e.actor, e.action) for e in store.iter_audit()
        ]


def test_credentials_from_the_environment(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGES_TOKEN", TOKEN)
    ok(db, "exchange", "add", "edges", "--type", KIND, "--credentials-env", "EDGES")
    assert status(db)["has_credentials"] is True
    ok(db, "exchange", "sync", "edges")
    assert len(entries(db)) == 6


def test_update_enable_disable_remove(db: str, creds_file: Path) -> None:
    add(db, creds_file, "--set", "pages=1", "--vouch-group", "g1", "--min-vouchers", "2")
    ok(
        db, "exchange", "update", "edges", "--set", "per_page=5", "--unset", "pages",
        "--interval", "60", "--on-delete", "remove", "--no-feedback", "--no-vouch-group",
    )  # fmt: skip
    st = status(db)
    assert st["config"]["per_page"] == 5 and st["config"]["pages"] == 2, "pages back to default"
    assert st["interval_seconds"] == 60.0 and st["on_delete"] == "remove"
    assert st["send_feedback"] is False and st["vouch_group"] is None
    assert st["has_credentials"] is True, "an update keeps the credentials"

    ok(db, "exchange", "disable", "edges")
    assert status(db)["enabled"] is False
    ok(db, "exchange", "enable", "edges")
    assert status(db)["enabled"] is True

    ok(db, "exchange", "sync", "edges")
    assert len(entries(db)) == 10 and status(db)["checkpoint"] == {"page": 2}
    ok(db, "exchange", "update", "edges", "--reset-checkpoint")
    assert status(db)["checkpoint"] is None
    again = json.loads(ok(db, "exchange", "sync", "edges", "--format", "json").stdout)[0]
    assert again["pages"] == 2 and again["added"] == 0, "a resync finds what it holds"
    assert len(entries(db)) == 10
    refused = bastion(db, "exchange", "remove", "edges")
    assert refused.exit_code == 2 and "--yes" in said(refused.stderr)
    gone = ok(db, "exchange", "remove", "edges", "--yes")
    assert "keeps its entries" in said(gone.stderr)
    assert json.loads(ok(db, "exchange", "list", "--format", "json").stdout) == []
    assert len(entries(db)) == 10, "the bank and its entries stay"
    with Store.open(db) as store:
        actions = [e.action for e in store.iter_audit() if e.target == "edges"]
    assert {"exchange.add", "exchange.update", "exchange.remove"} <= set(actions)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "x", "--type", "no-such-kind"], "unknown exchange type 'no-such-kind'"),
        (["add", "x", "--type", KIND, "--set", "per_page"], "--set 'per_page': expected key=value"),
        (["add", "x", "--type", KIND, "--set", "per_page=lots"], "per_page"),
        (["add", "x", "--type", KIND, "--set", "nonsense=1"], "nonsense"),
        (["add", "x", "--type", KIND, "--on-delete", "shred"], "--on-delete must be one of"),
        (["add", "x", "--type", KIND, "--min-vouchers", "2"], "--min-vouchers needs --vouch-group"),
        (["add", "x", "--type", KIND, "--credentials-env", "NOPE_X"], "NOPE_X_TOKEN is set"),
        (["add", "x", "--type", KIND, "--credentials-file", "/nonexistent/c.json"], "cannot read"),
        (["status", "ghost"], "ghost"),
        (["sync", "ghost"], "ghost"),
        (["errors", "ghost"], "ghost"),
        (["update", "ghost", "--interval", "60"], "ghost"),
        (["enable", "ghost"], "ghost"),
        (["remove", "ghost", "--yes"], "ghost"),
        (["set-credentials", "ghost", "--credential", "token=x"], "ghost"),
    ],
)
def test_bad_input_is_a_usage_error(db: str, args: list[str], message: str) -> None:
    result = bastion(db, "exchange", *args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and message in said(result.stderr)
    assert "Traceback" not in result.output
    assert json.loads(ok(db, "exchange", "list", "--format", "json").stdout) == []


def test_conflicts_and_malformed_credentials(db: str, creds_file: Path, tmp_path: Path) -> None:
    add(db, creds_file)
    again = bastion(db, "exchange", "add", "edges", "--type", KIND)
    assert again.exit_code == 2 and "error:" in again.stderr
    not_json = tmp_path / "bad.json"
    not_json.write_text("token: " + TOKEN)
    bad = bastion(db, "exchange", "set-credentials", "edges", "--credentials-file", str(not_json))
    assert bad.exit_code == 2 and "is not JSON" in said(bad.stderr)
    assert TOKEN not in bad.output, "the file's content is not echoed"
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"token": TOKEN, "password": "x"}))
    refused = bastion(db, "exchange", "set-credentials", "edges", "--credentials-file", str(extra))
    assert refused.exit_code == 2 and "password" in said(refused.stderr)
    assert TOKEN not in refused.output
    wrong_type = tmp_path / "wrong-type.json"
    wrong_type.write_text(json.dumps({"token": ["sekrit-in-a-list"]}))
    typed = bastion(
        db, "exchange", "set-credentials", "edges", "--credentials-file", str(wrong_type)
    )
    assert typed.exit_code == 2 and "invalid credentials: token" in said(typed.stderr)
    assert "sekrit-in-a-list" not in typed.output, "a bad value is not echoed"
    nothing = bastion(db, "exchange", "update", "edges")
    assert nothing.exit_code == 2 and "nothing to change" in said(nothing.stderr)
    # the exchange is as it was: the good credentials still work
    ok(db, "exchange", "sync", "edges")
    assert len(entries(db)) == 6


def test_a_second_sync_is_refused_while_one_holds_the_lease(db: str, creds_file: Path) -> None:
    from bastion.config import Settings
    from bastion.exchanges.store import ExchangeStore

    add(db, creds_file)
    inner: list[Result] = []

    class Reentrant(EdgeExchange):
        """Runs `bastion exchange sync` while the outer sync holds the exchange."""

        def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
            inner.append(bastion(db, "exchange", "sync", "edges"))
            yield from super().fetch(checkpoint)

    with Store.open(db) as store:
        xs = ExchangeStore(store, None, Settings())
        outer = xs.sync(
            "edges",
            exchange=Reentrant(EdgeConfig(), EdgeCredentials(token=TOKEN)),
            worker_id="test-outer",
        )
    assert outer.error is None and outer.added == 6
    [second] = inner
    assert second.exit_code == 2, second.output
    assert "error:" in second.stderr and "test-outer" in said(second.stderr)
    assert len(entries(db)) == 6


def test_sync_without_the_master_key_fails_clearly(
    db: str, creds_file: Path, key_dir: Path
) -> None:
    add(db, creds_file)
    key_file = key_dir / "secret.key"  # the key directory, not beside the database
    key_file.unlink()
    assert status(db)["has_credentials"] is True, "reading needs no key"
    result = bastion(db, "exchange", "sync", "edges")
    assert result.exit_code == 1, result.output
    assert "no master key" in said(result.stderr) and "Traceback" not in result.output
    assert not key_file.exists(), "a sync never creates a key that could not open anything"
    assert entries(db) == []


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_ctrl_c_stops_after_the_current_page(db: str, creds_file: Path) -> None:
    add(db, creds_file, "--set", "pages=3", "--set", "interrupt=true")
    before = signal.getsignal(signal.SIGINT)
    result = bastion(db, "exchange", "sync", "edges")
    assert signal.getsignal(signal.SIGINT) is before, "the CLI puts the old handler back"
    assert result.exit_code == 0, result.output
    text = said(result.stderr)
    assert "stopping after this page" in text and "stopped: more remains" in text
    assert status(db)["checkpoint"] == {"page": 1}
    assert len(entries(db)) == 3, "the page in hand was applied whole, no later one"
    ok(db, "exchange", "update", "edges", "--set", "interrupt=false")
    ok(db, "exchange", "sync", "edges")
    assert status(db)["checkpoint"] == {"page": 3} and len(entries(db)) == 9

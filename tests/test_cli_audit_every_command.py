"""Finding 10 of the security review: every command-line command that changes state (or reads
sensitive values out, as `bank export` and `vault show` do) records an audit event with actor
``cli:<os user>``, in the same transaction as the change.

Each command runs through Typer's CliRunner against a real database (SQLite and PostgreSQL).
Then the same command runs with the audit log unable to take its record (the audit key file
replaced by a foreign one): the command fails and nothing it would have changed has changed,
which is what one transaction for the change and its record means. Commands that only read
(`bank list`, `scan`, `match`, `hash`, `url check`, `key list`, `user list`, `user
throttled`, `audit tail`/`verify`, `policy check`/`show`/`test`, `exchange
types`/`list`/`status`/`errors`, `feed list`/`versions`/`disputes`/`grants`, `vault list`) are
not in the table; `serve` and `worker` run services whose work is audited where it is done.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from typer.testing import CliRunner

from bastion.accounts.model import PasswordHasher
from bastion.accounts.store import AccountStore
from bastion.audit_keys import AuditKeyring
from bastion.banks import NewEntry
from bastion.cli import app
from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.exchanges.store import ExchangeStore
from bastion.feeds.store import FeedStore
from bastion.review.store import ReviewStore
from bastion.signals import hash_file
from bastion.signals.base import SignalType
from bastion.vault.store import Vault
from tests.exchanges.test_cli_exchange import KIND, TOKEN
from tests.fixtures.clock import Clock
from tests.fixtures.stores import postgres_schema_url
from tests.review.conftest import item, verdict
from tests.vault.conftest import IMAGE

runner = CliRunner()
OS_USER = "audit-tester"
ACTOR = f"cli:{OS_USER}"
PASSWORD = "correct horse battery staple"
MASTER = MasterKey(bytes(range(32)))


@dataclass(frozen=True)
class Command:
    """A command line (``{name}`` fields filled from the seeded database), the audit action it
    must record and its target, and what the database must hold before it runs."""

    args: tuple[str, ...]
    action: str
    target: str | None
    needs: frozenset[str] = field(default_factory=frozenset)
    stdin: str | None = None


def cmd(*args: str, action: str, target: str | None, needs: str = "", stdin: str | None = None):  # type: ignore[no-untyped-def]
    return Command(args, action, target, frozenset(needs.split()), stdin)


COMMANDS = {
    "bank create": cmd("bank", "create", "b2", "-l", "demo", action="bank.create", target="b2"),
    "bank import": cmd(
        "bank", "import", "b1", "{csv}", action="bank.entries.add", target="b1", needs="bank"
    ),
    "bank add": cmd(
        "bank", "add", "b1", "{image}", action="bank.entries.add", target="b1", needs="bank"
    ),
    "bank disable": cmd(
        "bank",
        "disable",
        "b1",
        "{entry}",
        "--reason",
        "false positive",
        action="bank.entry.disable",
        target="b1/{entry}",
        needs="bank",
    ),
    "bank enable": cmd(
        "bank",
        "enable",
        "b1",
        "{disabled}",
        action="bank.entry.enable",
        target="b1/{disabled}",
        needs="bank",
    ),
    "bank rm": cmd("bank", "rm", "b1", "--yes", action="bank.delete", target="b1", needs="bank"),
    "bank set": cmd(
        "bank",
        "set",
        "b1",
        "--threshold",
        "pdq=16",
        "--expected-rate",
        "50",
        action="bank.update",
        target="b1",
        needs="bank",
    ),
    "bank export": cmd(
        "bank", "export", "b1", "-o", "{out}", action="bank.export", target="b1", needs="bank"
    ),
    "key create": cmd("key", "create", "k2", "--scopes", "match", action="key.create", target="k2"),
    "key revoke": cmd("key", "revoke", "k1", action="key.revoke", target="k1", needs="key"),
    "user create": cmd(
        "user",
        "create",
        "u2",
        "--role",
        "reviewer",
        "--password-stdin",
        action="user.create",
        target="u2",
        stdin=PASSWORD + "\n",
    ),
    "user passwd": cmd(
        "user",
        "passwd",
        "rev1",
        "--password-stdin",
        action="user.password",
        target="rev1",
        needs="user",
        stdin="another horse battery staple\n",
    ),
    "user role": cmd(
        "user", "role", "rev1", "senior_reviewer", action="user.role", target="rev1", needs="user"
    ),
    "user queues": cmd(
        "user",
        "queues",
        "rev1",
        "default",
        "ncii",
        action="user.queues",
        target="rev1",
        needs="user",
    ),
    "user disable": cmd(
        "user", "disable", "rev1", action="user.disable", target="rev1", needs="user"
    ),
    "user enable": cmd(
        "user", "enable", "rev1", action="user.enable", target="rev1", needs="user disabled"
    ),
    "user logout": cmd("user", "logout", "rev1", action="session.end", target="rev1", needs="user"),
    "user unthrottle": cmd(
        "user", "unthrottle", "192.0.2.7", action="login.unthrottle", target="192.0.2.7"
    ),
    "audit rotate-key": cmd("audit", "rotate-key", action="audit.rotate-key", target=None),
    "exchange add": cmd(
        "exchange",
        "add",
        "x2",
        "--type",
        KIND,
        "--credentials-file",
        "{creds}",
        action="exchange.add",
        target="x2",
    ),
    "exchange update": cmd(
        "exchange",
        "update",
        "x1",
        "--interval",
        "7200",
        action="exchange.update",
        target="x1",
        needs="exchange",
    ),
    "exchange set-credentials": cmd(
        "exchange",
        "set-credentials",
        "x1",
        "--credentials-file",
        "{creds}",
        action="exchange.credentials",
        target="x1",
        needs="exchange",
    ),
    "exchange disable": cmd(
        "exchange", "disable", "x1", action="exchange.update", target="x1", needs="exchange"
    ),
    "exchange enable": cmd(
        "exchange", "enable", "x1", action="exchange.update", target="x1", needs="exchange"
    ),
    "exchange remove": cmd(
        "exchange",
        "remove",
        "x1",
        "--yes",
        action="exchange.remove",
        target="x1",
        needs="exchange",
    ),
    "exchange sync": cmd(
        "exchange", "sync", "x1", action="exchange.sync.request", target="x1", needs="exchange"
    ),
    "feed key": cmd("feed", "key", action="feed.key.create", target=None),
    "feed create": cmd(
        "feed",
        "create",
        "f2",
        "--bank",
        "b1",
        "--organisation",
        "Test Org",
        action="feed.create",
        target="f2",
        needs="bank",
    ),
    "feed publish": cmd("feed", "publish", "f1", action="feed.version", target="f1", needs="feed"),
    "feed remove": cmd("feed", "remove", "f1", action="feed.remove", target="f1", needs="feed"),
    "feed grant": cmd(
        "feed", "grant", "k1", "f1", action="feed.grant", target=None, needs="feed key"
    ),
    "feed revoke": cmd(
        "feed",
        "revoke",
        "k1",
        "f1",
        action="feed.grant.revoke",
        target=None,
        needs="feed key granted",
    ),
    "pdata build": cmd("pdata", "build", action="pdata.request", target=None, needs="bank"),
    "vault hold": cmd(
        "vault",
        "hold",
        "{evidence}",
        "--reason",
        "court order",
        action="evidence.hold",
        target=None,
        needs="evidence",
    ),
    "vault release": cmd(
        "vault",
        "release",
        "{evidence}",
        "--reason",
        "order lifted",
        action="evidence.release",
        target=None,
        needs="evidence held",
    ),
    "vault verify": cmd("vault", "verify", action="evidence.verify", target=None, needs="evidence"),
    "vault show": cmd(
        "vault", "show", "{evidence}", action="evidence.show", target=None, needs="evidence"
    ),
    "vault purge": cmd("vault", "purge", action="evidence.purge", target=None, needs="evidence"),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setattr(getpass, "getuser", lambda: OS_USER)
    monkeypatch.chdir(tmp_path)
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BASTION_SECRET_KEY", base64.b64encode(MASTER._key).decode())
    monkeypatch.setenv("BASTION_AUDIT_KEY_FILE", str(tmp_path / "keys" / "audit.key"))
    monkeypatch.setenv("BASTION_AUDIT_SIGNING_KEY_FILE", str(tmp_path / "keys" / "signing.key"))
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        with postgres_schema_url("t_cliaudit") as pg:
            yield pg


def seed(url: str, needs: frozenset[str], tmp: Path) -> dict[str, str]:
    """What the command needs in the database; returns the values its arguments name."""
    fields = {"out": str(tmp / "export.jsonl"), "image": str(IMAGE)}
    csv = tmp / "list.csv"
    csv.write_text("signal_type,value\nmd5," + hashlib.md5(b"cli import").hexdigest() + "\n")
    creds = tmp / "creds.json"
    creds.write_text(json.dumps({"token": TOKEN}))
    fields.update(csv=str(csv), creds=str(creds))
    with Store.open(url) as store:
        store.record_audit(actor="test:seed", action="test.seed")  # the log is keyed from here
        if needs & {"bank", "feed"}:
            store.create_bank("b1", labels=["demo"], is_demo=True)
            pdq = next(s for s in hash_file(IMAGE).signals if s.type is SignalType.PDQ)
            store.add_entries(
                "b1",
                [
                    NewEntry(
                        SignalType.MD5, hashlib.md5(b"seed one").hexdigest(), external_id="e1"
                    ),
                    NewEntry(
                        SignalType.MD5, hashlib.md5(b"seed two").hexdigest(), external_id="e2"
                    ),
                    NewEntry(SignalType.PDQ, pdq.value, quality=pdq.quality, external_id="e3"),
                ],
            )
            store.disable_entry("b1", "e2", reason="seeded disabled")
            ids = {
                e.external_id: e.id for e in store.iter_entries(banks=["b1"], enabled_only=False)
            }
            fields.update(entry=str(ids["e1"]), disabled=str(ids["e2"]))
        if "key" in needs:
            store.create_api_key("k1", ["feed"])
        if needs & {"user", "disabled"}:
            accounts = AccountStore(
                store, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
            )
            accounts.create_user("rev1", "reviewer", PASSWORD, actor="test:seed")
            if "disabled" in needs:
                accounts.set_disabled("rev1", True, actor="test:seed")
        if "exchange" in needs:
            xs = ExchangeStore(store, MASTER, Settings())
            xs.add("x1", KIND, credentials={"token": TOKEN}, config={"pages": 1}, actor="t:s")
        if "feed" in needs:
            feeds = FeedStore(store, MASTER, Settings(feed_organisation="Test Org"))
            feeds.create("f1", ["b1"], actor="test:seed")
            if "granted" in needs:
                feeds.grant("k1", ["f1"], actor="test:seed")
        if "evidence" in needs:
            clock = Clock(datetime(2020, 1, 1, tzinfo=UTC))
            sub = ReviewStore(store, MASTER, now=clock).submit(
                verdict(),
                item("u1", media=IMAGE.read_bytes(), media_type="image/jpeg"),
                actor="key:t",
            )
            vault = Vault(store, MASTER, now=clock)
            [evidence] = vault.preserve(sub.case_id, actor="system", reason="blocked")
            if "held" in needs:
                vault.hold(evidence, actor="test:seed", reason="seeded hold")
            fields["evidence"] = str(evidence)
    return fields


def run(url: str, command: Command, fields: dict[str, str]) -> Result:
    args = [a.format(**fields) for a in command.args]
    return runner.invoke(app, ["--db", url, *args], input=command.stdin, catch_exceptions=False)


def audit_after(url: str, after: int) -> list:  # type: ignore[type-arg]
    with Store.open(url) as store:
        return store.iter_audit(since_id=after)


def head(url: str) -> tuple[int, str, str | None]:
    with Store.open(url) as store:
        return store.audit_head()


def snapshot(url: str) -> dict[str, list[str]]:
    """Every row of every table but the audit log's own, as text."""
    with Store.open(url) as store, store.engine.connect() as conn:
        tables = [
            t for t in sa.inspect(conn).get_table_names() if t not in ("audit_log", "audit_head")
        ]
        return {
            t: sorted(
                repr(tuple(r))
                for r in conn.execute(sa.select(sa.text("*")).select_from(sa.text(f'"{t}"')))
            )
            for t in tables
        }


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_command_is_audited_as_the_os_user(url: str, name: str, tmp_path: Path) -> None:
    command = COMMANDS[name]
    fields = seed(url, command.needs, tmp_path)
    before = head(url)[0]
    result = run(url, command, fields)
    assert result.exit_code == 0, result.output
    mine = [e for e in audit_after(url, before) if e.actor == ACTOR]
    assert command.action in [e.action for e in mine], [(e.actor, e.action) for e in mine]
    if command.target is not None:
        target = command.target.format(**fields)
        assert target in [e.target for e in mine if e.action == command.action]
    with Store.open(url) as store:
        assert store.check_audit_chain().ok


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_change_and_its_record_commit_together(
    url: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the record cannot be written, the change is not made either."""
    command = COMMANDS[name]
    fields = seed(url, command.needs, tmp_path)
    state, before = snapshot(url), head(url)
    foreign = tmp_path / "foreign" / "audit.key"
    AuditKeyring.create(foreign, None)  # holds none of the keys the log is chained under
    monkeypatch.setenv("BASTION_AUDIT_KEY_FILE", str(foreign))
    result = run(url, command, fields)
    assert result.exit_code != 0, result.output
    assert "does not hold" in " ".join(result.output.split())
    monkeypatch.setenv("BASTION_AUDIT_KEY_FILE", str(tmp_path / "keys" / "audit.key"))
    assert head(url) == before
    assert snapshot(url) == state
    assert not Path(fields["out"]).exists()  # an export that could not be audited wrote nothing


@pytest.mark.parametrize(
    ("args", "needs"),
    [
        (("bank", "create", "b1"), "bank"),  # exists
        (("bank", "disable", "b1", "no-such-entry"), "bank"),
        (("bank", "rm", "nope", "--yes"), ""),
        (("key", "revoke", "nope"), ""),
        (("user", "role", "nobody", "admin"), ""),
        (("feed", "create", "f9", "--bank", "no-such-bank"), ""),
    ],
)
def test_a_change_that_fails_leaves_no_record(
    url: str, args: tuple[str, ...], needs: str, tmp_path: Path
) -> None:
    fields = seed(url, frozenset(needs.split()), tmp_path)
    before = head(url)
    result = run(url, Command(args, "", None), fields)
    assert result.exit_code == 2, result.output
    assert head(url) == before


def test_serve_demo_audits_what_it_sets_up_as_the_os_user(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bastion serve --demo` makes the demo bank, an admin key and the demo user (the server
    itself is not started here)."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    seed(url, frozenset(), tmp_path)
    serve = ["--db", url, "serve", "--demo", "--no-worker"]
    for expected in (
        {"bank.create", "bank.entries.add", "key.create", "user.create"},
        {"key.revoke", "key.create", "user.password"},  # a second run: a fresh key and password
    ):
        before = head(url)[0]
        result = runner.invoke(app, serve, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        events = audit_after(url, before)
        assert {e.action for e in events} == expected
        assert {e.actor for e in events} == {ACTOR}

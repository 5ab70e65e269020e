"""`bastion user`: create (hidden prompt twice, or --password-stdin), list, passwd, role,
queues, disable/enable, unlock, logout; bad input is a usage error; every change audited with
the OS user."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from bastion.accounts import model as acc
from bastion.accounts.model import LoginFailed, LoginThrottled, PasswordHasher
from bastion.accounts.store import AccountStore
from bastion.cli import app
from bastion.db import Store
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()
PASSWORD = "correct horse battery"


def bastion(db: str, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["--db", db, *args], input=input, catch_exceptions=False)


def said(text: str) -> str:
    """Messages with Rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2 parameters for the CLI's default hasher (one test keeps the real ones)."""
    monkeypatch.setattr(
        acc, "_default_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: None) -> str:
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    return f"sqlite:///{tmp_path / 'bastion.db'}"


@pytest.fixture
def pg_db(monkeypatch: pytest.MonkeyPatch, fast: None) -> Iterator[str]:
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    with postgres_schema_url("t_user") as url:
        yield url


def create(db: str, name: str, role: str, *args: str, password: str = PASSWORD) -> Result:
    result = bastion(
        db, "user", "create", name, "--role", role, *args, "--password-stdin", input=password + "\n"
    )
    assert result.exit_code == 0, result.output
    return result


def users(db: str) -> list[dict[str, object]]:
    result = bastion(db, "user", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def audit(db: str) -> list[tuple[str, str, str, dict[str, object]]]:
    with Store.open(db) as store:
        assert store.verify_audit_chain() is None
        return [(e.actor, e.action, e.target, e.detail) for e in store.iter_audit()]


def login(db: str, name: str, password: str) -> str:
    with Store.open(db) as store:
        return AccountStore(store).authenticate(name, password).name


def test_create_from_stdin_and_list(db: str) -> None:
    result = create(db, "Rev1", "reviewer", "--queue", "default", "-q", "urgent")
    assert "created user rev1 (role reviewer, queues default,urgent)" in said(result.stderr)
    assert result.stdout == ""
    create(db, "boss", "admin")
    rows = users(db)
    assert [(r["name"], r["role"], r["queues"], r["status"]) for r in rows] == [
        ("boss", "admin", ["default"], "active"),
        ("rev1", "reviewer", ["default", "urgent"], "active"),
    ]
    listing = bastion(db, "user", "list")
    assert listing.exit_code == 0 and "rev1" in listing.stdout
    for out in (json.dumps(rows), listing.stdout):
        assert PASSWORD not in out and "argon2" not in out
    assert audit(db) == [
        ("cli:alice", "user.create", "rev1", {"role": "reviewer", "queues": ["default", "urgent"]}),
        ("cli:alice", "user.create", "boss", {"role": "admin", "queues": ["default"]}),
    ]
    assert login(db, "rev1", PASSWORD) == "rev1"


def test_create_prompts_twice_without_echo(db: str) -> None:
    result = bastion(
        db, "user", "create", "ana", "-r", "auditor", input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "New password for ana" in result.output and "Repeat the password" in result.output
    assert PASSWORD not in result.output
    assert login(db, "ana", PASSWORD) == "ana"


def test_the_real_hasher_is_argon2id_with_default_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    url = f"sqlite:///{tmp_path / 'real.db'}"
    result = bastion(
        url, "user", "create", "ben", "-r", "admin", "--password-stdin", input=PASSWORD
    )
    assert result.exit_code == 0, result.output
    with Store.open(url) as store, store.engine.connect() as conn:
        [stored] = conn.exec_driver_sql("SELECT password_hash FROM users").scalars()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["carl", "-r", "reviewer"], "tooshort\n", "the password is 8 characters; use at least 12"),
        (["carl", "-r", "reviewer"], "a-good-long-pass\nanother-long-pass\n", "passwords differ"),
        (["carlotta", "-r", "reviewer"], "carlotta-rules-ok\ncarlotta-rules-ok\n", "user name"),
        (["carl", "-r", "reviewer", "--password-stdin"], "", "standard input is empty"),
        (["carl", "-r", "reviewer", "--password-stdin"], "short\n", "use at least 12"),
        (["carl", "-r", "root"], "", "unknown role 'root' (expected one of: admin,"),
        (["carl jr", "-r", "reviewer"], "", "invalid user name"),
        (["carl", "-r", "reviewer", "-q", "bad queue"], "", "invalid queue name"),
    ],
)
def test_bad_input_creates_nothing(db: str, args: list[str], stdin: str, message: str) -> None:
    result = bastion(db, "user", "create", *args, input=stdin)
    assert result.exit_code == 2, result.output
    assert message in said(result.stderr)
    assert users(db) == []


def test_role_is_required(db: str) -> None:
    result = bastion(db, "user", "create", "dee", input=PASSWORD)
    assert result.exit_code == 2 and "--role" in result.output


def test_duplicate_is_refused_before_asking_for_a_password(db: str) -> None:
    create(db, "eve", "reviewer")
    again = bastion(db, "user", "create", "EVE", "-r", "admin")
    assert again.exit_code == 2 and "a user named 'eve' already exists" in said(again.stderr)
    assert "password" not in again.output.lower()
    assert [r["role"] for r in users(db)] == ["reviewer"]


def test_passwd_role_queues(db: str) -> None:
    create(db, "boss", "admin")
    create(db, "fox", "reviewer")
    with Store.open(db) as store:
        accounts = AccountStore(store)
        token, _ = accounts.create_session(
            accounts.get_user("fox"), remote_addr=None, hours=1, idle_minutes=30
        )
    new = "a different passphrase"
    result = bastion(db, "user", "passwd", "fox", "--password-stdin", input=new + "\n")
    assert result.exit_code == 0 and "their sessions ended" in said(result.stderr)
    with pytest.raises(LoginFailed):
        login(db, "fox", PASSWORD)
    assert login(db, "fox", new) == "fox"
    with Store.open(db) as store:
        assert AccountStore(store).get_session(token) is None
    prompted = bastion(db, "user", "passwd", "fox", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0 and login(db, "fox", PASSWORD) == "fox"
    result = bastion(db, "user", "role", "fox", "senior_reviewer")
    assert result.exit_code == 0 and "fox is now senior_reviewer" in said(result.stderr)
    result = bastion(db, "user", "queues", "fox", "urgent", "Default")
    assert result.exit_code == 0 and "works queues urgent, default" in said(result.stderr)
    [fox] = [r for r in users(db) if r["name"] == "fox"]
    assert (fox["role"], fox["queues"]) == ("senior_reviewer", ["urgent", "default"])
    actions = [(a, t, d) for _, a, t, d in audit(db) if a.startswith("user.")][2:]
    assert actions == [
        ("user.password", "fox", {"sessions_ended": 1}),
        ("user.password", "fox", {"sessions_ended": 0}),
        ("user.role", "fox", {"from": "reviewer", "to": "senior_reviewer"}),
        ("user.queues", "fox", {"from": ["default"], "to": ["urgent", "default"]}),
    ]


def test_disable_enable_unthrottle_logout(db: str) -> None:
    create(db, "boss", "admin")
    create(db, "gus", "reviewer")
    with Store.open(db) as store:
        accounts = AccountStore(store)
        token, _ = accounts.create_session(
            accounts.get_user("gus"), remote_addr=None, hours=1, idle_minutes=30
        )
    result = bastion(db, "user", "disable", "gus")
    assert result.exit_code == 0 and "disabled gus; their sessions ended" in said(result.stderr)
    assert [r["status"] for r in users(db)] == ["active", "disabled"]
    with pytest.raises(LoginFailed):
        login(db, "gus", PASSWORD)
    assert bastion(db, "user", "enable", "gus").exit_code == 0
    with Store.open(db) as store:
        assert AccountStore(store).get_session(token) is None  # ended for good
    for _ in range(4):
        with pytest.raises(LoginFailed):
            login(db, "gus", "not the password")
    # Failed logins hold back the address they came from (here: none), never the account.
    assert [r["status"] for r in users(db)] == ["active", "active"]
    with pytest.raises(LoginThrottled):
        login(db, "gus", PASSWORD)
    listed = bastion(db, "user", "throttled", "--format", "json")
    assert [r["address"] for r in json.loads(listed.stdout)] == ["unknown"]
    result = bastion(db, "user", "unthrottle", "unknown")
    assert result.exit_code == 0 and "cleared unknown" in said(result.stderr)
    assert json.loads(bastion(db, "user", "throttled", "--format", "json").stdout) == []
    assert login(db, "gus", PASSWORD) == "gus"
    assert ("cli:" in audit(db)[-2][0]) and audit(db)[-2][1:3] == ("login.unthrottle", "unknown")
    with Store.open(db) as store:
        accounts = AccountStore(store)
        for _ in range(2):
            accounts.create_session(
                accounts.get_user("gus"), remote_addr=None, hours=1, idle_minutes=30
            )
    result = bastion(db, "user", "logout", "gus")
    assert result.exit_code == 0 and "ended 2 session(s) of gus" in said(result.stderr)
    actions = [a for _, a, t, _ in audit(db) if t == "gus" and not a.startswith("login")]
    assert actions == [
        "user.create",
        "user.disable",
        "user.enable",
        "session.end",
    ]


def test_unknown_users_and_the_last_admin(db: str) -> None:
    for args in (
        ["passwd", "ghost", "--password-stdin"],
        ["role", "ghost", "admin"],
        ["queues", "ghost", "default"],
        ["disable", "ghost"],
        ["enable", "ghost"],
        ["logout", "ghost"],
    ):
        result = bastion(db, "user", *args, input=PASSWORD)
        assert result.exit_code == 2, args
        assert "no user named 'ghost'" in said(result.stderr)
    create(db, "solo", "admin")
    result = bastion(db, "user", "role", "solo", "reviewer")
    assert result.exit_code == 2 and "it is the last active admin" in said(result.stderr)
    assert bastion(db, "user", "disable", "solo").exit_code == 2
    bad_role = bastion(db, "user", "role", "solo", "king")
    assert bad_role.exit_code == 2 and "unknown role 'king'" in said(bad_role.stderr)
    assert [(r["role"], r["status"]) for r in users(db)] == [("admin", "active")]


@pytest.mark.postgres
def test_users_on_postgres(pg_db: str) -> None:
    create(pg_db, "boss", "admin")
    create(pg_db, "hana", "reviewer", "-q", "urgent")
    assert bastion(pg_db, "user", "role", "hana", "auditor").exit_code == 0
    assert bastion(pg_db, "user", "disable", "hana").exit_code == 0
    assert [(r["name"], r["role"], r["status"]) for r in users(pg_db)] == [
        ("boss", "admin", "active"),
        ("hana", "auditor", "disabled"),
    ]
    assert [a for _, a, _, _ in audit(pg_db)] == [
        "user.create",
        "user.create",
        "user.role",
        "user.disable",
    ]

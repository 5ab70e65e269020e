"""`bastion worker` from the command line, and `bastion serve` refusing a bad webhook config."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bastion.actions.outbox import Outbox
from bastion.cli import app
from bastion.db import Store

from .receiver import running

SECRET = "cli-receiver-secret-0123456789"
runner = CliRunner()


def config(tmp_path: Path, url: str, secret: str = SECRET) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(f'webhook_url = "{url}"\nwebhook_secret = "{secret}"\n')
    return path


def test_worker_once_delivers_what_is_due_and_exits(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'bastion.db'}"
    with Store.open(db) as store:
        outbox = Outbox(store)
        for i in range(3):
            outbox.enqueue(action="preserve", payload={"i": i}, idempotency_key=f"k{i}")
    with running(SECRET, lambda key, nth: 410 if key == "k2" else None) as rx:
        result = runner.invoke(
            app, ["worker", "--db", db, "--config", str(config(tmp_path, rx.url)), "--once"]
        )
    assert result.exit_code == 0, result.output
    assert "3 attempted: 2 delivered, 0 to retry, 1 dead" in result.output
    assert sorted(rx.applied) == ["k0", "k1"]
    with Store.open(db) as store:
        assert Outbox(store).stats().counts["dead"] == 1


def test_worker_takes_the_database_from_the_global_option(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'other.db'}"
    with Store.open(db) as store:
        Outbox(store).enqueue(action="preserve", payload={}, idempotency_key="only")
    with running(SECRET) as rx:
        result = runner.invoke(
            app, ["--db", db, "worker", "--config", str(config(tmp_path, rx.url)), "--once"]
        )
    assert result.exit_code == 0, result.output
    assert list(rx.applied) == ["only"]


def test_worker_refuses_bad_config_and_unreachable_databases(tmp_path: Path) -> None:
    bad = config(tmp_path, "https://p.example/", secret="short")
    result = runner.invoke(app, ["worker", "--config", str(bad), "--once"])
    assert result.exit_code == 2
    assert "webhook_secret is 5 bytes; use at least 16" in result.output
    good = config(tmp_path, "https://p.example/")
    result = runner.invoke(
        app,
        ["worker", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", "--config", str(good)],
    )
    assert result.exit_code == 2 and "cannot open the store" in result.output


def test_serve_refuses_a_bad_webhook_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[webhooks.preserve]\nurl = "gopher://x"\nsecret = "0123456789abcdef"\n')
    result = runner.invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2
    assert "[webhooks.preserve] url" in result.output and "http://" in result.output

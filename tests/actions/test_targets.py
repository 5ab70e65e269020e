"""Webhook targets and worker settings from real config files: routing and clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bastion.actions import load_targets
from bastion.actions.worker import WorkerConfig
from bastion.config import ConfigError, Settings

SECRET = "0123456789abcdef0123"


def settings_from(tmp_path: Path, toml: str, **overrides: object) -> Settings:
    path = tmp_path / "bastion.toml"
    path.write_text(toml)
    return Settings.load(path, **overrides)


def test_no_webhooks_configured_routes_nothing() -> None:
    targets = load_targets(Settings())
    assert targets.for_action("remove_content") is None
    assert targets.routable == frozenset()


def test_default_target_takes_every_action(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path, f'webhook_url = "https://platform.example/hooks"\nwebhook_secret = "{SECRET}"\n'
    )
    targets = load_targets(s)
    t = targets.for_action("anything_custom")
    assert t is not None and t.url == "https://platform.example/hooks"
    assert t.secret == SECRET.encode() and t.timeout == 10
    assert targets.routable is None
    assert SECRET not in repr(t) and SECRET not in str(targets.describe())


def test_tables_route_by_name_or_by_actions_list(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRUST_SAFETY_SECRET", "from-the-environment-0123")
    s = settings_from(
        tmp_path,
        f"""
webhook_url = "https://platform.example/default"
webhook_secret = "{SECRET}"

[webhooks.preserve]
url = "https://legal.example/preserve"
secret = "{SECRET}-legal"
timeout = 30

[webhooks.trust_safety]
url = "http://10.0.0.5:8080/ts"
secret_env = "TRUST_SAFETY_SECRET"
actions = ["restrict_account", "notify.ops"]
""",
    )
    targets = load_targets(s)
    assert targets.for_action("preserve").url == "https://legal.example/preserve"
    assert targets.for_action("preserve").timeout == 30
    ts = targets.for_action("notify.ops")
    assert ts.name == "trust_safety" and ts.secret == b"from-the-environment-0123"
    assert targets.for_action("restrict_account") is ts
    assert targets.for_action("remove_content").name == "default"
    assert targets.max_timeout == 30
    assert {d["name"] for d in targets.describe()} == {"default", "preserve", "trust_safety"}


def test_descriptions_leave_out_secrets_and_query_strings() -> None:
    s = Settings(webhook_url="https://p.example/hook?token=abc123", webhook_secret=SECRET)
    (shown,) = load_targets(s).describe()
    assert shown["url"] == "https://p.example/hook?…"
    assert "abc123" not in str(shown) and SECRET not in str(shown)
    assert load_targets(s).default.url == "https://p.example/hook?token=abc123"


def test_without_default_only_configured_actions_are_routable(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path,
        f'[webhooks.remove_content]\nurl = "https://p.example/r"\nsecret = "{SECRET}"\n',
    )
    targets = load_targets(s)
    assert targets.routable == frozenset({"remove_content"})
    assert targets.for_action("preserve") is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('webhook_url = "https://p.example/"\n', "needs webhook_secret"),
        (f'webhook_secret = "{SECRET}"\n', "webhook_url is not"),
        (f'webhook_url = "ftp://p.example/"\nwebhook_secret = "{SECRET}"\n', "http:// or https://"),
        (f'webhook_url = "https:///nohost"\nwebhook_secret = "{SECRET}"\n', "with a host"),
        (f'webhook_url = "https://u:pw@p.example/"\nwebhook_secret = "{SECRET}"\n', "user:pass"),
        (f'webhook_url = "https://p.example:99999/"\nwebhook_secret = "{SECRET}"\n', "not a valid"),
        ('webhook_url = "https://p.example/"\nwebhook_secret = "short"\n', "at least 16"),
        (
            f'webhook_url = "https://p.example/"\nwebhook_secret = "{SECRET}"\n'
            "webhook_timeout = 0\n",
            "webhook_timeout must be more than 0",
        ),
        ('[webhooks.x]\nsecret = "0123456789abcdef"\n', r"\[webhooks.x\] needs url"),
        ('[webhooks.x]\nurl = "https://p.example/"\n', "exactly one of secret or secret_env"),
        (
            f'[webhooks.x]\nurl = "https://p.example/"\nsecret = "{SECRET}"\nsecret_env = "A"\n',
            "exactly one of",
        ),
        (
            '[webhooks.x]\nurl = "https://p.example/"\nsecret_env = "BASTION_TEST_UNSET_VAR"\n',
            "BASTION_TEST_UNSET_VAR is not set",
        ),
        (
            f'[webhooks.x]\nurl = "https://p.example/"\nsecret = "{SECRET}"\nretries = 3\n',
            "unknown keys retries",
        ),
        (
            f'[webhooks.x]\nurl = "https://p.example/"\nsecret = "{SECRET}"\nactions = "x"\n',
            "non-empty list",
        ),
        (
            f'[webhooks.x]\nurl = "https://p.example/"\nsecret = "{SECRET}"\nactions = ["Bad"]\n',
            "invalid action name",
        ),
        (
            f'[webhooks.x]\nurl = "https://p.example/"\nsecret = "{SECRET}"\ntimeout = 500\n',
            "at most 120",
        ),
        (
            f'[webhooks.a]\nurl = "https://p.example/a"\nsecret = "{SECRET}"\n'
            f'actions = ["preserve"]\n[webhooks.b]\nurl = "https://p.example/b"\n'
            f'secret = "{SECRET}"\nactions = ["preserve"]\n',
            r"routed by both \[webhooks.a\] and \[webhooks.b\]",
        ),
        ('webhooks = "nope"\n', "webhooks: environment value is not JSON"),
        ("webhooks = 3\n", "must be a table"),
    ],
)
def test_bad_webhook_config_is_refused_with_a_clear_message(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_targets(settings_from(tmp_path, toml))


def test_webhooks_from_the_environment_as_json(monkeypatch) -> None:
    monkeypatch.setenv(
        "BASTION_WEBHOOKS",
        f'{{"preserve": {{"url": "https://p.example/p", "secret": "{SECRET}"}}}}',
    )
    targets = load_targets(Settings.load())
    assert targets.for_action("preserve").url == "https://p.example/p"


def test_worker_config_defaults_and_lease(tmp_path: Path) -> None:
    s = settings_from(
        tmp_path,
        f'webhook_url = "https://p.example/"\nwebhook_secret = "{SECRET}"\nwebhook_timeout = 20\n',
    )
    cfg = WorkerConfig.from_settings(s, load_targets(s))
    assert cfg.lease == timedelta(seconds=50)  # longest timeout + 30 s
    assert cfg.concurrency == 4 and cfg.poll == 1.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"outbox_lease_seconds": 10.0}, r"outbox_lease_seconds \(10\) must exceed .* \(20 s\)"),
        ({"outbox_concurrency": 0}, "outbox_concurrency"),
        ({"outbox_poll_seconds": 0.0}, "outbox_poll_seconds"),
        ({"outbox_max_attempts": 0}, "outbox_max_attempts"),
        ({"outbox_backoff_seconds": 100.0, "outbox_backoff_max_seconds": 10.0}, "at least"),
        ({"outbox_heartbeat_seconds": float("nan")}, "outbox_heartbeat_seconds"),
    ],
)
def test_worker_config_errors(values: dict[str, object], message: str) -> None:
    s = Settings(
        webhook_url="https://p.example/", webhook_secret=SECRET, webhook_timeout=20.0, **values
    )
    with pytest.raises(ConfigError, match=message):
        WorkerConfig.from_settings(s, load_targets(s))


def test_outbox_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("BASTION_OUTBOX_CONCURRENCY", "not-a-number")
    with pytest.raises(ConfigError, match="outbox_concurrency"):
        Settings.load()

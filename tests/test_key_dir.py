"""Issue 12, finding 14: the master key lives outside the data directory by default.

``secret.key`` used to be created beside the SQLite database, so one backup of the data folder
held both the sealed data and the key that opens it. ``bastion.config.key_dir`` now names the
key directory; an old key beside the database is still used (with a warning) so existing
installs keep reading what they sealed.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion import config
from bastion.config import Settings, is_loopback_host
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.server import create_app


def test_the_default_key_file_is_not_in_the_data_directory(
    tmp_path: Path, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started on a fresh SQLite database, settings left alone, as `make run` does."""
    monkeypatch.chdir(tmp_path)
    keys = key_dir / "bastion"  # not there yet: made private when the key is written
    monkeypatch.setenv("BASTION_KEY_DIR", str(keys))
    data = tmp_path / "bastion-data"
    with (
        Store.open(f"sqlite:///{data / 'bastion.db'}") as store,
        TestClient(create_app(Settings(rate_limit_per_minute=0), store=store)) as client,
    ):
        placed = Path(client.app.state.runtime.settings.secret_key_file)  # type: ignore[attr-defined]
    assert placed == keys / "secret.key" and placed.stat().st_mode & 0o777 == 0o600
    assert data not in placed.parents
    assert not list(data.rglob("*.key")), "a copy of the data directory carries no key"
    assert keys.stat().st_mode & 0o777 == 0o700


def test_key_dir_setting_then_environment_then_system_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_KEY_DIR", str(tmp_path / "env"))
    assert config.key_dir(Settings(key_dir=str(tmp_path / "set"))) == tmp_path / "set"
    assert config.key_dir(Settings()) == config.key_dir() == tmp_path / "env"
    assert Settings.load().key_dir == str(tmp_path / "env")  # BASTION_KEY_DIR is a setting too
    monkeypatch.delenv("BASTION_KEY_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert config.key_dir() == Path("/etc/bastion")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.key_dir() == tmp_path / "xdg" / "bastion"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.key_dir() == tmp_path / "home" / ".config" / "bastion"


def test_an_old_key_beside_the_database_is_kept_and_warned_about(
    tmp_path: Path, key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old = MasterKey.generate()
    legacy = data / "secret.key"
    legacy.write_bytes(old._key)
    legacy.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="bastion.config"):
        placed = Settings().in_data_dir(data)
    assert placed.secret_key_file == str(legacy)
    assert MasterKey.load(placed).key_id == old.key_id  # sealed data stays readable
    assert not (key_dir / "secret.key").exists(), "no second, new key was made"
    assert "beside the database" in caplog.text and str(key_dir / "secret.key") in caplog.text


def test_explicit_key_settings_still_win(tmp_path: Path, key_dir: Path) -> None:
    data = tmp_path / "data"
    own = tmp_path / "vault" / "master.key"
    assert Settings(secret_key_file=str(own)).in_data_dir(data).secret_key_file == str(own)
    raw = MasterKey.generate()
    text = base64.b64encode(raw._key).decode()
    settings = Settings(secret_key=text).in_data_dir(data)
    assert MasterKey.load(settings).key_id == raw.key_id
    assert not (key_dir / "secret.key").exists() and not data.exists()


def test_secure_cookies_follow_the_bind_address() -> None:
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.53", "app.localhost"):
        assert is_loopback_host(host), host
        assert not Settings(host=host).secure_cookies
    for host in ("0.0.0.0", "::", "192.0.2.10", "bastion.example.org", "10.0.0.5"):
        assert not is_loopback_host(host), host
        assert Settings(host=host).secure_cookies
    assert not Settings(host="0.0.0.0", cookie_secure=False).secure_cookies
    assert Settings(host="127.0.0.1", cookie_secure=True).secure_cookies


def test_cookie_secure_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_HOST", "0.0.0.0")
    monkeypatch.setenv("BASTION_COOKIE_SECURE", "false")
    assert Settings.load().cookie_secure is False and not Settings.load().secure_cookies
    monkeypatch.delenv("BASTION_COOKIE_SECURE")
    assert Settings.load().cookie_secure is None and Settings.load().secure_cookies

"""Settings.load: environment, TOML file, precedence, and precise errors for bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.config import ConfigError, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own BASTION_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(text)
    return path


def test_defaults_without_env_or_file() -> None:
    settings = Settings.load()
    assert settings == Settings()
    assert settings.max_video_seconds == 3600.0
    assert settings.hash_options.max_video_seconds == 3600.0


def test_env_variables_are_coerced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MAX_VIDEO_SECONDS", "10")
    monkeypatch.setenv("BASTION_PORT", "9001")
    monkeypatch.setenv("BASTION_FETCH_ALLOW_HOSTS", "cdn.example, media.example,")
    settings = Settings.load()
    assert settings.max_video_seconds == 10.0 and isinstance(settings.max_video_seconds, float)
    assert settings.port == 9001
    assert settings.fetch_allow_hosts == ("cdn.example", "media.example")
    options = settings.hash_options
    assert options.max_video_seconds == 10.0
    assert options.max_pixels == settings.max_pixels
    assert options.max_image_bytes == settings.max_upload_bytes


def test_zero_switches_the_video_limit_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MAX_VIDEO_SECONDS", "0")
    assert Settings.load().hash_options.max_video_seconds == 0


def test_toml_file_by_argument_and_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(
        tmp_path,
        'host = "0.0.0.0"\nport = 8080\nmax_video_seconds = 120.5\n'
        'fetch_allow_networks = ["10.1.0.0/16"]\n',
    )
    by_arg = Settings.load(path)
    assert (by_arg.host, by_arg.port, by_arg.max_video_seconds) == ("0.0.0.0", 8080, 120.5)
    assert by_arg.fetch_allow_networks == ("10.1.0.0/16",)
    assert by_arg.hash_options.max_video_seconds == 120.5
    monkeypatch.setenv("BASTION_CONFIG", str(path))
    assert Settings.load() == by_arg


def test_precedence_overrides_then_env_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, "port = 8080\nmax_video_seconds = 100\nmax_pixels = 1000\n")
    monkeypatch.setenv("BASTION_MAX_VIDEO_SECONDS", "200")
    monkeypatch.setenv("BASTION_PORT", "8081")
    settings = Settings.load(path, port=8082, host=None)
    assert settings.port == 8082  # explicit argument beats env and file
    assert settings.max_video_seconds == 200.0  # env beats file
    assert settings.max_pixels == 1000  # file beats default
    assert settings.host == "127.0.0.1"  # a None override means "not given"


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, "port = 8080\nmax_video_secs = 10\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"^unknown settings: bogus, max_video_secs$"):
        Settings.load(path)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown settings: colour"):
        Settings.load(colour="blue")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BASTION_PORT", "eighty", "setting port: 'eighty' is not a valid int"),
        ("BASTION_MAX_UPLOAD_BYTES", "1.5", "setting max_upload_bytes: '1.5' is not a valid int"),
        (
            "BASTION_MAX_VIDEO_SECONDS",
            "an hour",
            "setting max_video_seconds: 'an hour' is not a valid float",
        ),
    ],
)
def test_bad_env_value_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert str(info.value) == message


def test_bad_value_in_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="setting port: 'x' is not a valid int"):
        Settings.load(_toml(tmp_path, 'port = "x"\n'))


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        Settings.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(_toml(tmp_path, "port = = 1\n"))


@pytest.mark.parametrize("setting", ["fetch_allow_networks", "trusted_proxies"])
def test_bad_network_is_a_config_error_naming_the_setting(setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        Settings.load(**{setting: "10.0.0.0/8, not-a-network"})
    with pytest.raises(ConfigError, match=setting):
        Settings(**{setting: ("300.1.2.3",)})


def test_good_networks_load_and_build_the_fetch_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_FETCH_ALLOW_NETWORKS", "10.0.0.0/8, 192.168.1.7")
    settings = Settings.load()
    assert [str(n) for n in settings.fetch_policy.allow_networks] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
    ]


def test_max_json_bytes_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_json_bytes == 16 * 2**20
    monkeypatch.setenv("BASTION_MAX_JSON_BYTES", "1000")
    assert Settings.load().max_json_bytes == 1000

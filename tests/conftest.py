"""Shared fixtures: the benign reference media live in tests/data (see tests/data/SOURCES.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.clock",
    "tests.fixtures.markers",
    "tests.fixtures.servers",
    "tests.fixtures.stores",
]

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA


@pytest.fixture(scope="session", autouse=True)
def audit_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run's audit keyring, in a temporary directory: stores opened without settings find it
    through BASTION_AUDIT_KEY_FILE, as do the CLI and servers started for a module, so a log one
    of them keyed is checked with the same keys by the others. Tests of key handling point the
    variable at their own file."""
    path = tmp_path_factory.mktemp("audit-keys") / "audit.key"
    old = os.environ.get("BASTION_AUDIT_KEY_FILE")
    os.environ["BASTION_AUDIT_KEY_FILE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BASTION_AUDIT_KEY_FILE", None)
    else:
        os.environ["BASTION_AUDIT_KEY_FILE"] = old


@pytest.fixture(scope="session", autouse=True)
def _run_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Key files of the whole run (servers started for a module included) go to a temporary
    directory, never the machine's /etc/bastion or ~/.config/bastion (bastion.config.key_dir)."""
    old = os.environ.get("BASTION_KEY_DIR")
    os.environ["BASTION_KEY_DIR"] = str(tmp_path_factory.mktemp("run-keys"))
    yield
    if old is None:
        os.environ.pop("BASTION_KEY_DIR", None)
    else:
        os.environ["BASTION_KEY_DIR"] = old


@pytest.fixture(autouse=True)
def key_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own key directory (BASTION_KEY_DIR), so a key one test made is never found
    by another."""
    path = tmp_path_factory.mktemp("keys")
    monkeypatch.setenv("BASTION_KEY_DIR", str(path))
    return path

"""The demo (`python -m bastion.demo`, and the bank `make run` serves): a labelled demo bank
from the photo shipped inside the package, then a scan of the packaged photos."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import bastion
from bastion import demo
from bastion.db import Store


def test_demo_builds_labelled_bank_and_is_rerunnable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    assert demo.main() == 0
    assert "scan exit code 1" in capsys.readouterr().out
    assert (tmp_path / "bastion-data" / "bastion.db").is_file()
    with Store.open(None) as store:
        bank = store.get_bank(demo.DEMO_BANK)
        assert bank.is_demo and "demo" in bank.labels
        assert {b.name: b.entry_count for b in store.list_banks()} == {demo.DEMO_BANK: 3}
        md5 = hashlib.md5(demo.DEMO_PHOTO.read_bytes()).hexdigest()
        assert store.find_entries(demo.DEMO_BANK, value=md5, signal_type="md5")
    assert demo.main() == 0  # a second run reuses the bank instead of failing
    with Store.open(None) as store:
        assert store.list_banks()[0].entry_count == 3


def test_demo_media_and_licence_are_package_data() -> None:
    package = Path(bastion.__file__).resolve().parent
    for path in (demo.DEMO_PHOTO, demo.DEMO_EDIT):
        assert path.parent == package / "demo" and path.stat().st_size > 10_000
    licence = (package / "demo" / "LICENSE-ThreatExchange.txt").read_text()
    assert licence.startswith("BSD License") and "Meta Platforms" in licence


def test_python_m_bastion_demo_runs(tmp_path: Path) -> None:
    # A bare environment, but the same bastion as this run imports (a clone's, not whichever is
    # installed) and key files in the temporary folder, never the machine's /etc/bastion.
    package_root = Path(bastion.__file__).resolve().parents[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(package_root),
        "BASTION_KEY_DIR": str(tmp_path / "keys"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bastion.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "scan exit code 1" in done.stdout and "demo-bridge" in done.stdout

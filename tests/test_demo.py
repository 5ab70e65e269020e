"""`make run` (until the server lands): a labelled demo bank, then a scan of the test photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import demo
from bastion.store import Store


def test_demo_builds_labelled_bank_and_is_rerunnable(
    tmp_path: Path, testdata: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    monkeypatch.setenv("BASTION_TESTDATA", str(testdata))
    assert demo.main() == 0
    assert "scan exit code 1" in capsys.readouterr().out
    assert (tmp_path / "bastion-data" / "bastion.db").is_file()
    with Store.open(None) as store:
        bank = store.get_bank(demo.DEMO_BANK)
        assert bank.is_demo and "demo" in bank.labels
        assert {b.name: b.entry_count for b in store.list_banks()} == {demo.DEMO_BANK: 3}
    assert demo.main() == 0  # a second run reuses the bank instead of failing
    with Store.open(None) as store:
        assert store.list_banks()[0].entry_count == 3

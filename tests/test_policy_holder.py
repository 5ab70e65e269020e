"""PolicyHolder: the live policy file. Created from the default when missing, reloaded on change,
an invalid edit never replaces a working policy, saves are validated and atomic."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from bastion import policy as policy_mod
from bastion.policy import PolicyError, PolicyHolder, default_policy_text
from tests.fixtures.clock import Clock

ONE = """\
version: 1
rules:
  - name: one
    when: {labels_any: [csam]}
    verdict: review
"""
TWO = (
    ONE.replace("one", "two")
    + """\
  - name: three
    when: {labels_any: [ncii]}
    verdict: review
"""
)
BROKEN = ONE.replace("verdict: review", "verdict: hide")


def replace_file(path: Path, text: str) -> None:
    """Write as an editor or deploy tool would: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_missing_file_is_created_from_the_default_with_its_directories(tmp_path: Path) -> None:
    path = tmp_path / "data" / "conf" / "policy.yaml"
    holder = PolicyHolder(path)
    assert path.read_text() == default_policy_text()
    assert holder.current().rule_names[0] == "csam-exact"
    assert holder.last_error is None
    assert os.listdir(path.parent) == ["policy.yaml"]  # no temporary file left behind


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    assert PolicyHolder(path).current().rule_names == ("one",)
    assert path.read_text() == ONE


def test_an_invalid_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BROKEN)
    with pytest.raises(PolicyError) as info:
        PolicyHolder(path)
    assert info.value.errors[0][0] == 5


def test_a_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)
    first = holder.current()
    assert holder.current() is first  # unchanged file: not parsed again
    replace_file(path, TWO)
    assert holder.current().rule_names == ("two", "three")
    assert holder.last_error is None


def test_an_in_place_edit_of_the_same_size_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)
    st = os.stat(path)
    with open(path, "r+") as f:  # same inode, same size: only the mtime tells
        f.write(ONE.replace("csam", "ncii"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert holder.current().rules[0].when.labels_any == frozenset({"ncii"})


def test_the_file_is_checked_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    clock = Clock()
    holder = PolicyHolder(path, clock=clock.monotonic)
    replace_file(path, TWO)
    clock.advance(0.5)
    assert holder.current().rule_names == ("one",)
    clock.advance(0.5)
    assert holder.current().rule_names == ("two", "three")
    # refresh() checks at once, whatever the interval.
    replace_file(path, ONE)
    assert holder.refresh().rule_names == ("one",)


def test_an_invalid_edit_keeps_the_old_policy_until_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)
    good = holder.current()
    replace_file(path, BROKEN)
    with caplog.at_level(logging.ERROR, logger="bastion.policy"):
        assert holder.current() is good
        assert holder.current() is good
    assert holder.last_error is not None
    assert "line 5: rule 'one' verdict 'hide' is not one of" in holder.last_error
    # Logged once per bad version, not on every check.
    assert len([r for r in caplog.records if "keeping the previous policy" in r.message]) == 1
    replace_file(path, TWO)
    assert holder.current().rule_names == ("two", "three")
    assert holder.last_error is None


def test_edits_on_disk_are_reported_to_the_reload_hook_and_saves_are_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)
    seen: list[tuple[str, ...]] = []
    holder.on_reload = lambda p: seen.append(p.rule_names)
    holder.current()
    assert seen == []  # unchanged
    replace_file(path, TWO)
    holder.current()
    holder.current()
    assert seen == [("two", "three")]  # once per change
    replace_file(path, BROKEN)
    holder.current()
    assert seen == [("two", "three")]  # a refused edit is not a reload
    holder.save(ONE, actor="user:alice")
    holder.current()
    assert seen == [("two", "three")]  # the saver audits its own save

    def broken_hook(_: object) -> None:
        raise RuntimeError("audit store down")

    holder.on_reload = broken_hook
    replace_file(path, TWO)
    with caplog.at_level(logging.ERROR, logger="bastion.policy"):
        assert holder.current().rule_names == ("two", "three")  # a failing hook changes nothing
    assert any("reload hook failed" in r.message for r in caplog.records)


def test_a_deleted_file_keeps_the_old_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)
    path.unlink()
    assert holder.current().rule_names == ("one",)
    assert holder.last_error is not None and "cannot read" in holder.last_error


def test_save_validates_writes_and_puts_in_force(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    path.chmod(0o640)
    holder = PolicyHolder(path, check_interval=0)
    inode = os.stat(path).st_ino
    saved = holder.save(TWO, actor="user:alice")
    assert saved.rule_names == ("two", "three")
    assert holder.current() is saved  # no re-read of its own write
    assert path.read_text() == TWO
    assert os.stat(path).st_ino != inode  # a new file renamed into place, not rewritten
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["policy.yaml"]


def test_save_of_an_invalid_policy_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)
    with pytest.raises(PolicyError) as info:
        holder.save(BROKEN, actor="user:alice")
    assert info.value.errors[0][0] == 5
    assert path.read_text() == ONE
    assert holder.current().rule_names == ("one",)
    assert sorted(os.listdir(tmp_path)) == ["policy.yaml"]


def test_a_failed_save_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(policy_mod.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        holder.save(TWO, actor="user:alice")
    monkeypatch.undo()
    assert path.read_text() == ONE
    assert holder.current().rule_names == ("one",)
    assert sorted(os.listdir(tmp_path)) == ["policy.yaml"]


def test_concurrent_readers_and_savers_always_see_a_whole_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    holder = PolicyHolder(path, check_interval=0)
    seen: set[tuple[str, ...]] = set()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(200):
                seen.add(holder.current().rule_names)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    def write() -> None:
        try:
            for i in range(50):
                holder.save(TWO if i % 2 else ONE, actor="user:alice")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert seen <= {("one",), ("two", "three")}
    assert holder.last_error is None
    assert holder.current().rule_names == ("two", "three")

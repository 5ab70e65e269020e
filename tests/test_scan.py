"""The scan pipeline survives workers that crash or hang on one file."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import bastion.scan as scan_mod
from bastion.signals import hash_file


def _hostile_hash_file(path, **kwargs):
    name = Path(path).name
    if name.startswith("crash"):
        os._exit(3)  # what a segfault in a native decoder looks like to the pool
    if name.startswith("hang"):
        time.sleep(60)
    return hash_file(path, **kwargs)


@pytest.fixture
def folder(tmp_path: Path, testdata: Path) -> Path:
    src = testdata / "images/bridge-mods"
    for i, name in enumerate(sorted(os.listdir(src))[:6]):
        shutil.copy(src / name, tmp_path / f"{i:02d}-{name}")
    return tmp_path


def test_worker_crash_costs_one_file(monkeypatch, folder: Path) -> None:
    (folder / "crash.jpg").write_bytes(b"x")
    monkeypatch.setattr(scan_mod, "hash_file", _hostile_hash_file)  # inherited by forked workers
    results = list(scan_mod.hash_paths([folder], workers=2))
    assert len(results) == 7
    by_name = {Path(r.path).name: r for r in results}
    assert by_name["crash.jpg"].error == "hashing crashed its worker process"
    good = [r for n, r in by_name.items() if n != "crash.jpg"]
    assert all(r.error is None and any(s.type == "pdq" for s in r.signals) for r in good)
    assert [r.path for r in results] == sorted(r.path for r in results)  # input order kept


def test_worker_hang_is_stopped(monkeypatch, folder: Path) -> None:
    (folder / "hang.jpg").write_bytes(b"x")
    monkeypatch.setattr(scan_mod, "hash_file", _hostile_hash_file)
    results = list(scan_mod.hash_paths([folder], workers=2, timeout=5))
    by_name = {Path(r.path).name: r for r in results}
    assert len(results) == 7
    assert "longer than 5s" in (by_name["hang.jpg"].error or "")
    assert sum(1 for r in results if r.error is None) == 6


def test_single_worker_mode_matches_pool(folder: Path) -> None:
    one = [(r.path, [s.value for s in r.signals]) for r in scan_mod.hash_paths([folder], workers=1)]
    two = [(r.path, [s.value for s in r.signals]) for r in scan_mod.hash_paths([folder], workers=2)]
    assert one == two and len(one) == 6


def test_unreadable_directory_is_reported(monkeypatch, folder: Path) -> None:
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        # Root reads every directory, so simulate the permission error os.walk would report.
        onerror(PermissionError(13, "Permission denied", str(Path(top) / "locked")))
        yield from real_walk(top, onerror=onerror, **kw)

    monkeypatch.setattr(scan_mod.os, "walk", walk)
    results = list(scan_mod.hash_paths([folder], workers=1))
    errors = {Path(r.path).name: r.error for r in results if r.error}
    assert errors == {"locked": "cannot read directory: Permission denied"}
    assert len(results) == 7


def test_numba_cache_falls_back_to_a_private_temp_dir(monkeypatch, tmp_path: Path) -> None:
    from bastion.index import _kernels

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(_kernels.os, "access", lambda *a: False)  # package and home read-only
    monkeypatch.setattr(_kernels.tempfile, "gettempdir", lambda: str(tmp_path))
    _kernels._ensure_numba_cache_dir()
    cache = Path(os.environ["NUMBA_CACHE_DIR"])
    assert cache.parent == tmp_path and cache.is_dir()
    assert cache.stat().st_mode & 0o777 == 0o700

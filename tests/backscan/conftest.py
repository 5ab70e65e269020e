"""Benign synthetic archives for back-scan tests: smooth coloured gradients and shapes, PNG and
JPEG, plus files that cannot be hashed (the error rows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bastion.banks import NewEntry
from bastion.db import Store
from bastion.signals import SignalType, hash_file

REPO = Path(__file__).resolve().parents[2]
BASTION = [sys.executable, "-m", "bastion.cli"]


def make_image(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> Path:
    """A benign picture: coloured sine waves with a few rectangles (distinct PDQ per seed, PDQ
    quality 100)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float32)
    for c in range(3):
        fx, fy = rng.uniform(1, 6, 2)
        phase = rng.uniform(0, 6.3)
        img[..., c] = 127 + 100 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + phase)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        dy, dx = int(rng.integers(10, h // 3)), int(rng.integers(10, w // 3))
        img[y0 : y0 + dy, x0 : x0 + dx] = rng.integers(0, 255, 3)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90, compress_level=1)
    return path


def make_archive(
    root: Path, n: int, *, bad: bool = True, size: tuple[int, int] = (320, 240)
) -> list[Path]:
    """``n`` images in two sub-folders (PNG and JPEG alternately), plus, with ``bad``, a corrupt
    JPEG and an empty file."""
    files = []
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        files.append(make_image(sub / f"img{i:04d}.{'png' if i % 2 else 'jpg'}", i, size))
    if bad:
        (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        (root / "empty.png").write_bytes(b"")
        files += [root / "corrupt.jpg", root / "empty.png"]
    return files


def bank_with(store: Store, *paths: Path, bank: str = "demo") -> list[int]:
    """A bank holding the PDQ of each of ``paths`` (labelled demo data); returns entry ids."""
    store.create_bank(bank, description="demo data for tests", labels=["demo"], is_demo=True)
    entries = []
    for p in paths:
        pdq = hash_file(p).get(SignalType.PDQ)
        assert pdq is not None
        entries.append(NewEntry(SignalType.PDQ, pdq.value, pdq.quality, external_id=p.name))
    store.add_entries(bank, entries)
    return [e.id for e in store.list_entries(bank, limit=1000)]


def rows(out: Path) -> list[dict[str, Any]]:
    """Every row of a back-scan dataset (read the way a user would, as one Parquet dataset)."""
    return list(pq.read_table(out / "data").to_pylist())


def run_cli(
    *args: str, db: str, check: bool = True, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    env = {**(env or os.environ), "BASTION_DATABASE_URL": db, "COLUMNS": "200"}
    proc = subprocess.run(
        [*BASTION, *args], env=env, capture_output=True, text=True, cwd=REPO, timeout=600, **kw
    )
    if check and proc.returncode not in (0, 1):
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(proc.stdout))


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "archive"
    return root, make_archive(root, 12)

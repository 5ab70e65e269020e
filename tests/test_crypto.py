"""Envelope encryption: round trips, tamper detection, key loading and key file permissions."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from bastion.config import Settings
from bastion.crypto import (
    OVERHEAD,
    MasterKey,
    MasterKeyError,
    UnsealError,
    seal,
    unseal,
)

AAD = b"case=1:item=2"


@pytest.mark.parametrize("size", [0, 1, 1000, 3 * 2**20])
def test_round_trip(size: int) -> None:
    key = MasterKey.generate()
    data = os.urandom(size)
    blob = seal(key, data, AAD)
    assert len(blob) == size + OVERHEAD
    assert unseal(key, blob, AAD) == data
    if size >= 16:
        assert data[:16] not in blob  # not stored in the clear


def test_each_seal_uses_fresh_keys_and_nonces() -> None:
    key = MasterKey.generate()
    a, b = seal(key, b"same", AAD), seal(key, b"same", AAD)
    assert a != b
    assert a[:12] == b[:12]  # magic, version, key id: the only shared part
    assert a[12:] != b[12:]


def test_every_flipped_byte_is_detected() -> None:
    key = MasterKey.generate()
    blob = seal(key, b"benign test payload", AAD)
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            damaged = bytearray(blob)
            damaged[i] ^= bit
            with pytest.raises(UnsealError):
                unseal(key, bytes(damaged), AAD)


def test_truncated_and_extended_blobs_are_refused() -> None:
    key = MasterKey.generate()
    blob = seal(key, b"payload", AAD)
    for bad in (blob[:-1], blob[: OVERHEAD - 1], blob + b"\x00", b"", b"not a blob at all" * 5):
        with pytest.raises(UnsealError):
            unseal(key, bad, AAD)


def test_wrong_aad_and_wrong_key() -> None:
    key = MasterKey.generate()
    blob = seal(key, b"payload", AAD)
    with pytest.raises(UnsealError, match="authentication"):
        unseal(key, blob, b"case=1:item=3")
    with pytest.raises(UnsealError, match="another master key"):
        unseal(MasterKey.generate(), blob, AAD)


def test_unknown_version_is_named() -> None:
    key = MasterKey.generate()
    blob = bytearray(seal(key, b"payload", AAD))
    blob[3] = 9
    with pytest.raises(UnsealError, match="unknown format version 9"):
        unseal(key, bytes(blob), AAD)


def test_repr_never_shows_the_key() -> None:
    raw = os.urandom(32)
    key = MasterKey(raw)
    assert raw.hex() not in repr(key) and base64.b64encode(raw).decode() not in repr(key)
    with pytest.raises(MasterKeyError):
        MasterKey(b"short")


def test_load_from_secret_key_setting(tmp_path: Path) -> None:
    raw = os.urandom(32)
    missing = str(tmp_path / "never-created.key")
    text = base64.b64encode(raw).decode()
    key = MasterKey.load(Settings(secret_key=text, secret_key_file=missing))
    assert unseal(MasterKey(raw), seal(key, b"x", AAD), AAD) == b"x"
    assert not Path(missing).exists()  # the setting wins; no file is made
    with pytest.raises(MasterKeyError, match="not valid base64"):
        MasterKey.load(Settings(secret_key="not base64!!", secret_key_file=missing))
    with pytest.raises(MasterKeyError, match="exactly 32 bytes, got 16"):
        MasterKey.load(Settings(secret_key=base64.b64encode(raw[:16]).decode()))


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "secret.key"
    settings = Settings(secret_key_file=str(path))
    first = MasterKey.load(settings)
    assert path.stat().st_size == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left
    second = MasterKey.load(settings)
    assert first.key_id == second.key_id
    assert unseal(second, seal(first, b"kept", AAD), AAD) == b"kept"


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(os.urandom(32))
    for mode in (0o644, 0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(MasterKeyError, match="chmod 600"):
            MasterKey.load(Settings(secret_key_file=str(path)))
    path.chmod(0o400)
    MasterKey.load(Settings(secret_key_file=str(path)))


def test_key_file_of_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    for size in (0, 16, 31, 33, 64):
        path.write_bytes(os.urandom(size))
        path.chmod(0o600)
        with pytest.raises(MasterKeyError, match=f"holds {size} bytes"):
            MasterKey.load(Settings(secret_key_file=str(path)))


def test_key_file_may_hold_base64(tmp_path: Path) -> None:
    raw = os.urandom(32)
    path = tmp_path / "secret.key"
    path.write_text(base64.b64encode(raw).decode() + "\n")
    path.chmod(0o600)
    assert MasterKey.load(Settings(secret_key_file=str(path))).key_id == MasterKey(raw).key_id


def test_key_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="not a regular file"):
        MasterKey.load(Settings(secret_key_file=str(tmp_path)))


def test_a_key_file_left_unset_is_refused_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MasterKeyError, match="set secret_key or secret_key_file"):
        MasterKey.load(Settings())
    assert list(tmp_path.iterdir()) == []  # no file named "None", or anything else
    placed = Settings().in_data_dir(tmp_path / "data")
    assert MasterKey.load(placed).key_id == MasterKey.load(placed).key_id
    # In the key directory, not beside the database (docs/security.md).
    assert (key_dir / "secret.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "data").exists()

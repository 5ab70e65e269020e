"""Exact hashes (MD5, SHA-256), streamed so a multi-gigabyte file never sits in memory.

MD5 is cryptographically broken but is still what NCMEC and most industry hash lists carry, so
we compute it next to SHA-256 in the same pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bastion.signals.base import Signal, SignalType

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class ExactHashes:
    md5: str
    sha256: str
    size: int

    def signals(self) -> list[Signal]:
        return [Signal(SignalType.MD5, self.md5), Signal(SignalType.SHA256, self.sha256)]


def hash_stream(
    stream: BinaryIO,
    *,
    chunk_size: int = CHUNK_SIZE,
    on_chunk: Callable[[bytes], None] | None = None,
) -> ExactHashes:
    """Hash a binary stream chunk by chunk; ``on_chunk`` sees each chunk (to keep or sniff it)."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    while chunk := stream.read(chunk_size):
        md5.update(chunk)
        sha256.update(chunk)
        size += len(chunk)
        if on_chunk is not None:
            on_chunk(chunk)
    return ExactHashes(md5.hexdigest(), sha256.hexdigest(), size)


def exact_from_path(path: str | Path) -> ExactHashes:
    with open(path, "rb") as f:
        return hash_stream(f)


def exact_from_bytes(data: bytes) -> ExactHashes:
    return ExactHashes(
        hashlib.md5(data, usedforsecurity=False).hexdigest(),
        hashlib.sha256(data).hexdigest(),
        len(data),
    )

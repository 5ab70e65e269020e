"""A stored scan, as the store hands it back. Pure: no database imports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """A stored scan: who asked, about what content (platform ids in ``context``), what it hashed
    to, what it matched and what was decided."""

    id: int
    at: datetime
    actor: str
    content_kind: str
    context: dict[str, Any]
    signals: list[dict[str, Any]]
    matches: list[dict[str, Any]]
    verdict: str

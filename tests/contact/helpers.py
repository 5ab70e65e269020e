"""Event builders for the contact tests (flags and metadata only, never text)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from bastion.contact.model import Event, parse_event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = itertools.count()


def at(minutes: float = 0, hours: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, hours=hours, days=days)


def ev(type_: str, time: datetime, eid: str | None = None, **fields: object) -> Event:
    return parse_event(
        {"event_id": eid or f"t{next(_ids)}", "time": time.isoformat(), "type": type_, **fields}
    )


def account(acc: str, band: str, time: datetime | None = None, **fields: object) -> Event:
    fields.setdefault("created_at", (T0 - timedelta(days=400)).isoformat())
    return ev("account", time or T0 - timedelta(days=1), account=acc, age_band=band, **fields)


def message(a: str, b: str, time: datetime) -> Event:
    return ev("message", time, actor=a, target=b, conversation=f"{min(a, b)}|{max(a, b)}")


def connect(a: str, b: str, time: datetime) -> list[Event]:
    """``a`` requests, ``b`` accepts a minute later."""
    return [
        ev("connection_request", time, actor=a, target=b),
        ev("connection_accept", time + timedelta(minutes=1), actor=b, target=a),
    ]

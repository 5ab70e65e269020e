"""A scripted exchange for engine tests: a real :class:`Exchange` subclass whose pages are
prepared by the test (synthetic hashes only), registered as kind ``scripted``.

Tests name a script in the exchange's config (``{"script": "..."}``); :data:`SCRIPTS` maps the
name to a :class:`Script` holding the pages (or exceptions to raise at that point), and logs of
what was fetched and what feedback was sent, so tests can count that each page was applied once.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion.banks.model import NewEntry
from bastion.exchanges.base import (
    Attestation,
    Checkpoint,
    Exchange,
    ExchangeConfig,
    ExchangeCredentials,
    FeedbackItem,
    Item,
    Page,
    Upsert,
    Verdict,
    register,
)
from bastion.signals.base import SignalType


class ScriptConfig(ExchangeConfig):
    script: str = "default"
    #: Items per page of a generated list (see :func:`synthetic`).
    page_size: int = 100


class ScriptCredentials(ExchangeCredentials):
    token: str


@dataclass
class Step:
    """One page, or an exception raised when the engine asks for it."""

    items: list[Item] = field(default_factory=list)
    raises: BaseException | None = None
    snapshot: str | None = None
    snapshot_complete: bool = False
    attestation: Attestation | None = None
    #: Raise ``raises`` only this many times, then deliver the page.
    times: int = 1_000_000


@dataclass
class Script:
    steps: list[Step] = field(default_factory=list)
    fetched: list[int] = field(default_factory=list)
    sent: list[FeedbackItem] = field(default_factory=list)
    #: Exceptions to raise from send_feedback, in order, before succeeding.
    feedback_errors: list[BaseException] = field(default_factory=list)
    raised: dict[int, int] = field(default_factory=dict)
    credentials_seen: list[str] = field(default_factory=list)


SCRIPTS: dict[str, Script] = {}


@register
class ScriptedExchange(Exchange):
    kind = "scripted"
    Config = ScriptConfig
    Credentials = ScriptCredentials
    feedback = frozenset({Verdict.POSITIVE, Verdict.NEGATIVE})
    default_interval = 60.0

    @property
    def script(self) -> Script:
        return SCRIPTS[self.config.script]  # type: ignore[attr-defined]

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        script = self.script
        if self.credentials is not None:
            script.credentials_seen.append(self.credentials.token)  # type: ignore[attr-defined]
        start = int((checkpoint or {}).get("i", 0))
        for i in range(start, len(script.steps)):
            step = script.steps[i]
            script.fetched.append(i)
            if step.raises is not None and script.raised.get(i, 0) < step.times:
                script.raised[i] = script.raised.get(i, 0) + 1
                raise step.raises
            yield Page(
                items=step.items,
                checkpoint={"i": i + 1},
                snapshot=step.snapshot,
                snapshot_complete=step.snapshot_complete,
                attestation=step.attestation,
                progress=(i + 1, len(script.steps)),
            )

    def send_feedback(self, item: FeedbackItem) -> None:
        script = self.script
        if script.feedback_errors:
            raise script.feedback_errors.pop(0)
        script.sent.append(item)

    def verify_state(self, attestation: Attestation, entries: Iterable[Any]) -> str | None:
        return state_root(entries)


def state_root(entries: Iterable[Any]) -> str:
    """A digest of (key, type, value, enabled) of every entry, in a fixed order."""
    parts = sorted(f"{e.external_id}|{e.signal_type}|{e.value}|{int(e.enabled)}" for e in entries)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def md5(seed: object) -> str:
    """A synthetic MD5-shaped hex value (a hash of a counter, not of any content)."""
    return hashlib.md5(f"synthetic-{seed}".encode()).hexdigest()


def pdq(seed: object) -> str:
    return hashlib.sha256(f"synthetic-pdq-{seed}".encode()).hexdigest()


def entry(value: str, signal_type: SignalType = SignalType.MD5, **kw: Any) -> NewEntry:
    kw.setdefault("source", "Synthetic test list")
    kw.setdefault("list_name", "test")
    kw.setdefault("added_at", datetime(2024, 1, 1, tzinfo=UTC))
    return NewEntry(signal_type, value, **kw)


def synthetic(n: int, page_size: int, *, seed: int = 0, snapshot: str | None = None) -> Script:
    """``n`` records over pages of ``page_size``, each with one MD5 (and every tenth a PDQ)."""
    rng = random.Random(seed)
    steps = []
    for start in range(0, n, page_size):
        items: list[Item] = []
        for k in range(start, min(n, start + page_size)):
            entries = [entry(md5(f"{seed}-{k}"), labels=["test"], metadata={"n": k})]
            if k % 10 == 0:
                q = rng.randint(50, 100)
                entries.append(entry(pdq(f"{seed}-{k}"), SignalType.PDQ, quality=q))
            items.append(Upsert(f"rec-{k}", tuple(entries)))
        steps.append(Step(items=items, snapshot=snapshot))
    if snapshot is not None and steps:
        steps[-1].snapshot_complete = True
    return Script(steps=steps)

"""Back-scan and re-match findings into review, without a flood.

Each matched row goes through the active policy exactly as a ``/v1/scan`` would
(:func:`bastion.pipeline.verdict_for`); what the policy does not allow becomes a finding in the
backlog (``backscan_intake``), unique by content key and matched entries. :func:`drain` then
opens cases through :func:`bastion.pipeline.open_case` at ``backscan_cases_per_hour`` per
queue, highest priority first, marking each finding opened in the case's own transaction.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bastion import pipeline
from bastion.backscan.model import content_key
from bastion.backscan.store import AlreadyOpened, BackscanStore, Finding, dedupe_key
from bastion.banks.model import utcnow
from bastion.policy import Verdict
from bastion.review import Submitted
from bastion.review.model import PRIORITY_RANK

if TYPE_CHECKING:
    from bastion.runtime import Runtime

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system:backscan"


def scanned_of(row: dict[str, Any], matches: list[dict[str, Any]], origin: str) -> pipeline.Scanned:
    """A dataset row as the pipeline sees content: the platform's ids, signals and matches."""
    context: dict[str, Any] = {"source": origin}
    for key in ("content_id", "uploader_id", "age_band"):
        if row.get(key):
            context[key] = row[key]
    if not row.get("content_id"):
        context["content_id"] = str(row["uri"])[:255]
    signals: list[dict[str, Any]] = []
    for t in ("md5", "sha256"):
        if row.get(t):
            signals.append({"type": t, "value": row[t]})
    if row.get("pdq"):
        signals.append({"type": "pdq", "value": row["pdq"], "quality": row.get("pdq_quality")})
    if row.get("vpdq"):
        signals.append({"type": "vpdq", "value": row["vpdq"]})
    return pipeline.Scanned(
        kind=str(row.get("kind") or "other"),
        format=row.get("format"),
        context=context,
        signals=signals,
        matches=matches,
        media=None,  # the archive keeps the media; the case carries the uri and the signals
        media_type=None,
        filename=None,
    )


def findings(
    rt: Runtime,
    rows: Iterable[dict[str, Any]],
    *,
    origin: str,
    label: str,
    would: Counter[str],
) -> Iterator[Finding]:
    """Findings for the matched rows the policy does not allow; ``would`` counts what the
    policy decided (``decision/queue/priority``) for the summary and ``--dry-run``."""
    for row in rows:
        matches = row["matches"] if isinstance(row["matches"], list) else json.loads(row["matches"])
        if not matches:
            continue
        scanned = scanned_of(row, matches, origin)
        verdict = pipeline.verdict_for(rt, scanned)
        if verdict.decision == "allow":
            would["allow"] += 1
            continue
        would[f"{verdict.decision}/{verdict.queue}/{verdict.priority}"] += 1
        if origin == "rematch":  # the reviewer sees why old content is here now
            revision = row.get("bank_revision")
            reason = f"retroactive match (bank revision {revision}): {verdict.reason}"
            verdict = replace(verdict, reason=reason[:1000])
        payload = {
            "scanned": {
                "kind": scanned.kind,
                "format": scanned.format,
                "context": dict(scanned.context),
                "signals": scanned.signals,
                "matches": scanned.matches,
            },
            "verdict": {**asdict(verdict), "actions": list(verdict.actions)},
            "uri": str(row["uri"]),
        }
        yield Finding(
            dedupe=dedupe_key(content_key(row), (int(m["entry"]) for m in matches)),
            origin=origin,
            label=label,
            queue=verdict.queue,
            priority=PRIORITY_RANK[verdict.priority],
            bank_revision=row.get("bank_revision"),
            payload=payload,
        )


def enqueue(
    rt: Runtime, rows: Iterable[dict[str, Any]], *, origin: str, label: str, dry_run: bool
) -> dict[str, Any]:
    """Put the rows' findings in the backlog (or, with ``dry_run``, only count them)."""
    store = BackscanStore(rt.store)
    would: Counter[str] = Counter()
    added = known = 0
    batch: list[Finding] = []
    for f in findings(rt, rows, origin=origin, label=label, would=would):
        if dry_run:
            continue
        batch.append(f)
        if len(batch) >= 500:
            a, k = store.enqueue(batch)
            added, known, batch = added + a, known + k, []
    if batch:
        a, k = store.enqueue(batch)
        added, known = added + a, known + k
    return {
        "dry_run": dry_run,
        "would": dict(sorted(would.items())),
        "added": added,
        "known": known,
    }


def drain(rt: Runtime, *, per_hour: int | None = None) -> dict[str, int]:
    """Open the cases the rate allows now, per queue, highest priority first; returns how many
    opened per queue. Safe to run in several workers at once (each finding opens once)."""
    rate = rt.settings.backscan_cases_per_hour if per_hour is None else per_hour
    store = BackscanStore(rt.store)
    opened: dict[str, int] = {}
    since = utcnow() - timedelta(hours=1)
    for q in store.backlog(rate):
        room = rate - store.opened_since(q.queue, since)
        for item in store.due(q.queue, room):
            sc = item.payload["scanned"]
            v = dict(item.payload["verdict"])
            v["actions"] = tuple(v.get("actions") or ())
            verdict = Verdict(**v)
            scanned = pipeline.Scanned(
                kind=sc["kind"],
                format=sc.get("format"),
                context=sc["context"],
                signals=sc["signals"],
                matches=sc["matches"],
                media=None,
                media_type=None,
                filename=None,
            )

            def mark(conn: Connection, sub: Submitted, intake_id: int = item.id) -> None:
                store.mark_opened_in(conn, intake_id, sub.case_id)

            try:
                pipeline.open_case(
                    rt, scanned, verdict, actor=SYSTEM_ACTOR, scan_id=None, also=mark
                )
            except AlreadyOpened:
                continue
            opened[q.queue] = opened.get(q.queue, 0) + 1
    if opened:
        log.info("backscan backlog: opened %s", opened)
    return opened

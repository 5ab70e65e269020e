"""Case history as sentences a reviewer reads at a glance (issue 19, item 10), and the decision
summary of a decided case. Pure functions over :class:`bastion.review.CaseEvent`; no content,
only what the history already holds (who, when, what, the reason and note they gave)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion.review import Case, CaseEvent

OUTCOMES = {
    "first_confirm": "confirmed it; a second reviewer must agree",
    "first_not_abusive": "found it not abusive; a second reviewer must agree",
    "confirmed": "confirmed it",
    "not_abusive": "closed it as not abusive",
    "escalated": "escalated it",
    "disagreed": "disagreed with the first review; the case went to the senior queue",
}


def describe(ev: CaseEvent) -> str:
    """One history line, without the actor and time (the page shows those beside it)."""
    d: dict[str, Any] = ev.detail
    item = f"item {ev.item_id}" if ev.item_id else "an item"
    if ev.kind == "open":
        return (
            f"opened the case: {d.get('verdict', 'review')} by rule {d.get('rule') or '-'}, "
            f"priority {d.get('priority', '-')}, queue {d.get('queue', '-')}"
        )
    if ev.kind == "join":
        moved = f"; moved from queue {d['moved_from']}" if d.get("moved_from") else ""
        return f"added item {d.get('item', '')} ({d.get('verdict', 'review')}){moved}"
    if ev.kind == "claim":
        return "renewed the claim" if d.get("renewed") else "claimed the case"
    if ev.kind == "release":
        if d.get("forced"):
            return f"released {d.get('holder')}'s claim"
        return "released the claim"
    if ev.kind == "reveal":
        if d.get("closed"):
            return f"revealed {item} of the decided case, because: {d.get('reason', '')}"
        return f"revealed {item}"
    if ev.kind == "view":
        return f"viewed {item} unblurred"
    if ev.kind in ("decide", "escalate"):
        text = OUTCOMES.get(str(d.get("outcome")), str(d.get("outcome", "decided")))
        if d.get("classification"):
            text += f" as {d['classification']}"
        if d.get("labels"):
            text += f" (labels {', '.join(map(str, d['labels']))})"
        if d.get("reason"):
            text += f"; reason: {d['reason']}"
        if d.get("disable_entries"):
            text += "; disabling the matched entries"
        if d.get("from_queue"):
            text += f"; from queue {d['from_queue']} to {d.get('queue')}"
        if d.get("note"):
            text += f"; note: {d['note']}"
        return text
    if ev.kind == "note":
        return f"noted: {d.get('note', '')}"
    rest = ", ".join(f"{k} {v}" for k, v in d.items())
    return f"{ev.kind.replace('_', ' ')}{': ' + rest if rest else ''}"


@dataclass(frozen=True)
class Finding:
    """One reviewer's decision on the case, from its history."""

    who: str
    at: datetime
    text: str
    reason: str
    note: str


def summary(case: Case) -> list[Finding]:
    """The decisions that made a decided case what it is, in order (with four-eyes, both
    findings; after an escalation, the senior's), for the summary card."""
    out = [
        Finding(
            who=ev.actor.removeprefix("user:"),
            at=ev.at,
            text=OUTCOMES.get(str(ev.detail.get("outcome")), str(ev.detail.get("outcome"))),
            reason=str(ev.detail.get("reason") or ""),
            note=str(ev.detail.get("note") or ""),
        )
        for ev in case.events
        if ev.kind in ("decide", "escalate")
    ]
    return out


__all__ = ["Finding", "describe", "summary"]

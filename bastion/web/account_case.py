"""What the case page shows for an account case (an item of kind ``account``): the detectors'
reasons, the account's facts, its event timeline, a summary of its contact graph, reports about
it, and its earlier cases. Never message content: events carry metadata and flag kinds only, and
franked reports are shown by their size and digest, not their text.

Reading the timeline is audited (``contact.timeline``, the console user as actor) by
:meth:`ContactStore.timeline` itself, and happens only after ``get_case`` let this viewer open
the case (which audits ``case.view``), so a role without the case's queue reads no timeline.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion.contact.model import MINOR_BANDS
from bastion.contact.store import AccountRisk, ContactStore, TimelineEvent
from bastion.psi.records import FrankingReport
from bastion.review import Case, CaseItem, InvalidDecision
from bastion.review.history import UploaderCase, uploader_cases
from bastion.review.model import ACCOUNT, ACCOUNT_CLASSIFICATIONS, ACCOUNT_KIND
from bastion.web.base import Ctx

#: The events read for the page (the newest; one audited read). The API pages through the rest.
TIMELINE_LIMIT = 1000
#: Counterparts whose facts are looked up for the summary and the timeline.
MAX_COUNTERPARTS = 300
#: Events that are the account reaching out to someone.
OUTREACH = ("message", "connection_request", "gift", "payment")
UNKNOWN = "unknown"
__all__ = ["ACCOUNT_CLASSIFICATIONS", "AccountView", "account_item", "build", "wrong_detectors"]


def wrong_detectors(posted: list[str] | None) -> tuple[str, ...]:
    """The detectors a not-abusive finding names, from the account form's checkboxes (one per
    fired detector, all ticked at first). The form always posts one empty value as well, so a
    form with every box unticked is told apart from a content case's form (no field at all):
    review reads "no detectors" as "every detector that fired", so that is refused here rather
    than recorded as the opposite of what the reviewer ticked."""
    if posted is None:
        return ()
    named = tuple(dict.fromkeys(d.strip() for d in posted if d.strip()))
    if not named:
        raise InvalidDecision(
            "tick the detectors that were wrong here (at least one: the account was not abusive)"
        )
    return named


@dataclass
class DetectorRow:
    detector: str
    fired: bool
    points: int
    explanation: str
    evidence: dict[str, int]
    #: Points when the case opened (from the item's risk snapshot), if it recorded them.
    points_at_open: int | None = None
    fired_at_open: bool | None = None
    #: How final decisions went on the account cases this detector fired in (confirmed, judged).
    record: tuple[int, int] | None = None


@dataclass
class TimelineRow:
    at: str
    type: str
    event_id: str
    #: "out" (the account did it), "in" (done to the account) or "self" (about the account).
    direction: str
    counterpart: str | None
    counterpart_band: str | None
    counterpart_country: str | None
    details: list[str]


@dataclass
class GraphSummary:
    contacted: int = 0
    contacted_by_band: dict[str, int] = field(default_factory=dict)
    contacted_by_country: dict[str, int] = field(default_factory=dict)
    contacted_minors: int = 0
    requests_sent: int = 0
    requests_accepted: int = 0
    connections_now: int = 0
    blocks_received: int = 0
    blocks_by_minors: int = 0
    reports_received: int = 0
    #: Contacted accounts sharing no connection with it now, and the shared connections in all.
    contacted_without_mutuals: int = 0
    mutual_connections: int = 0
    counterparts_looked_up: int = 0
    counterparts_total: int = 0


@dataclass
class ReportRow:
    at: str
    reporter: str
    reporter_band: str | None
    category: str


@dataclass
class AccountView:
    account: str
    item: CaseItem
    facts: dict[str, Any] | None
    account_age_days: int | None
    risk: AccountRisk | None
    snapshot_score: int | None
    snapshot_band: str | None
    detectors: list[DetectorRow]
    fired: list[str]
    timeline: list[TimelineRow]
    timeline_truncated: bool
    graph: GraphSummary
    reports: list[ReportRow]
    #: Verified reports of end-to-end encrypted messages it sent (metadata; the text stays sealed).
    franked: list[FrankingReport]
    previous: list[UploaderCase]


def account_item(case: Case) -> CaseItem | None:
    """The case's account item (its newest), if it is an account case."""
    if case.subject != ACCOUNT and not any(i.kind == ACCOUNT_KIND for i in case.items):
        return None
    for item in reversed(case.items):
        if item.kind == ACCOUNT_KIND and item.uploader_id:
            return item
    return None


def _snapshot(case: Case) -> tuple[int | None, str | None, dict[str, dict[str, Any]]]:
    """Score, band and per-detector contributions of the case's latest risk snapshot (what the
    risk engine recorded when it opened or joined the case), read leniently."""
    doc = case.risk or {}
    score = doc.get("score") if isinstance(doc.get("score"), int) else None
    band = doc.get("band") if isinstance(doc.get("band"), str) else None
    by_detector: dict[str, dict[str, Any]] = {}
    for c in doc.get("contributions") or ():
        if isinstance(c, dict) and isinstance(c.get("detector"), str):
            by_detector.setdefault(c["detector"], c)
    return score, band, by_detector


def _when(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def _counterpart(account: str, event: dict[str, Any]) -> tuple[str, str | None]:
    actor = event.get("actor", event.get("account"))
    target = event.get("target")
    if actor == account:
        return ("out" if target else "self"), target
    if target == account:
        return "in", actor
    return "self", None


def _details(event: dict[str, Any]) -> list[str]:
    """What the event says beyond who and when: flags and metadata only (there is no text)."""
    kind = event.get("type")
    out: list[str] = []
    if kind == "message":
        if event.get("has_media"):
            out.append("with media")
        if event.get("first_contact"):
            out.append("first contact")
        if event.get("conversation"):
            out.append(f"conversation {event['conversation']}")
    elif kind == "flag":
        out.append(f"flag: {event.get('kind')}")
        if event.get("source"):
            out.append(f"from {event['source']}")
        if event.get("confidence") is not None:
            out.append(f"confidence {event['confidence']}")
    elif kind == "report":
        out.append(f"category: {event.get('category')}")
    elif kind in ("gift", "payment"):
        out.append(f"amount: {event.get('amount_band')}")
    elif kind == "account":
        out.append(f"age band {event.get('age_band')} ({event.get('age_source')})")
        if event.get("country"):
            out.append(f"country {event['country']}")
        if event.get("created_at"):
            out.append(f"created {_when(event['created_at'])}")
        hashes = len(event.get("device_hashes") or ()) + len(event.get("identifier_hashes") or ())
        if hashes:
            out.append(f"{hashes} device/identifier hash(es)")
    elif kind == "profile_change":
        out.append("changed " + ", ".join(event.get("changed") or ()))
        if event.get("age_band"):
            out.append(f"age band now {event['age_band']}")
        if event.get("country"):
            out.append(f"country now {event['country']}")
    elif kind == "ban":
        out.append("ban lifted" if event.get("lifted") else "banned")
    return out


def _facts_of(store: ContactStore, accounts: list[str]) -> dict[str, dict[str, Any] | None]:
    return {a: store.facts(a) for a in accounts}


def _is_minor(facts: dict[str, Any] | None) -> bool:
    return bool(facts) and facts is not None and facts.get("age_band") in MINOR_BANDS


def build(ctx: Ctx, case: Case, item: CaseItem) -> AccountView:
    """Everything the account panel shows. Reads the timeline (audited) once."""
    account = str(item.uploader_id)
    store = ContactStore.for_runtime(ctx.rt)
    events: list[TimelineEvent] = store.timeline(
        account, actor=ctx.actor, limit=TIMELINE_LIMIT, remote_addr=ctx.remote_addr
    )
    facts = store.facts(account)
    risk = store.risk(account)

    # Counterparts, most recent first, looked up up to a bound.
    order: dict[str, None] = {}
    for e in events:
        _, other = _counterpart(account, e.event)
        if other:
            order.setdefault(other, None)
    looked_up = list(order)[:MAX_COUNTERPARTS]
    others = _facts_of(store, looked_up)
    mine = set(store.connections(account))

    graph = GraphSummary(counterparts_total=len(order), counterparts_looked_up=len(looked_up))
    graph.connections_now = len(mine)
    contacted: dict[str, None] = {}
    reports: list[ReportRow] = []
    rows: list[TimelineRow] = []
    for e in events:
        ev = e.event
        kind = str(ev.get("type"))
        direction, other = _counterpart(account, ev)
        of = others.get(other) if other else None
        rows.append(
            TimelineRow(
                at=_when(ev.get("time")),
                type=kind,
                event_id=str(ev.get("event_id")),
                direction=direction,
                counterpart=other,
                counterpart_band=(of or {}).get("age_band") if other else None,
                counterpart_country=(of or {}).get("country") if other else None,
                details=_details(ev),
            )
        )
        if direction == "out" and other:
            if kind in OUTREACH:
                contacted.setdefault(other, None)
            if kind == "connection_request":
                graph.requests_sent += 1
        elif direction == "in" and other:
            if kind == "connection_accept":
                graph.requests_accepted += 1
            elif kind == "block":
                graph.blocks_received += 1
                graph.blocks_by_minors += _is_minor(of)
            elif kind == "report":
                graph.reports_received += 1
                reports.append(
                    ReportRow(
                        at=_when(ev.get("time")),
                        reporter=other,
                        reporter_band=(of or {}).get("age_band"),
                        category=str(ev.get("category")),
                    )
                )
    bands: Counter[str] = Counter()
    countries: Counter[str] = Counter()
    for other in contacted:
        of = others.get(other)
        bands[(of or {}).get("age_band") or UNKNOWN] += 1
        countries[(of or {}).get("country") or UNKNOWN] += 1
        graph.contacted_minors += _is_minor(of)
        if other in others:
            shared = len(mine & set(store.connections(other)))
            graph.mutual_connections += shared
            graph.contacted_without_mutuals += shared == 0
    graph.contacted = len(contacted)
    graph.contacted_by_band = dict(bands.most_common())
    graph.contacted_by_country = dict(countries.most_common())

    score, band, at_open = _snapshot(case)
    detectors: list[DetectorRow] = []
    seen: set[str] = set()
    for c in risk.contributions if risk else ():
        snap = at_open.get(c.detector, {})
        detectors.append(
            DetectorRow(
                c.detector,
                c.fired,
                c.points,
                c.explanation,
                dict(c.evidence),
                snap.get("points") if isinstance(snap.get("points"), int) else None,
                snap.get("fired") if isinstance(snap.get("fired"), bool) else None,
            )
        )
        seen.add(c.detector)
    for name, snap in at_open.items():  # detectors no longer in the current result
        if name in seen:
            continue
        found = snap.get("evidence")
        evidence: dict[str, Any] = found if isinstance(found, dict) else {}
        detectors.append(
            DetectorRow(
                name,
                False,
                0,
                str(snap.get("explanation", "")),
                {str(k): int(v) for k, v in evidence.items() if isinstance(v, int)},
                snap.get("points") if isinstance(snap.get("points"), int) else None,
                snap.get("fired") if isinstance(snap.get("fired"), bool) else None,
            )
        )
    # Each detector's track record in review: a reviewer weighs a signal by how often it held.
    records = {p.detector: p for p in ctx.rt.review.detector_precision()}
    for d in detectors:
        p = records.get(d.detector)
        if p is not None and p.confirmed + p.not_abusive:
            d.record = (p.confirmed, p.confirmed + p.not_abusive)
    fired = list(
        dict.fromkeys([*case.detectors_fired, *(d.detector for d in detectors if d.fired)])
    )

    age_days: int | None = None
    created = (facts or {}).get("created_at")
    if isinstance(created, datetime):
        stamp = created if created.tzinfo else created.replace(tzinfo=UTC)
        age_days = max(0, (datetime.now(UTC) - stamp).days)

    previous = uploader_cases(ctx.rt.review, ctx.viewer, account, exclude=case.id)
    return AccountView(
        account=account,
        item=item,
        facts=facts,
        account_age_days=age_days,
        risk=risk,
        snapshot_score=score,
        snapshot_band=band,
        detectors=detectors,
        fired=fired,
        timeline=rows,
        timeline_truncated=len(events) >= TIMELINE_LIMIT,
        graph=graph,
        reports=reports,
        franked=ctx.rt.vouchers.reports_about(account, limit=50),
        previous=previous,
    )

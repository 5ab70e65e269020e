"""A synthetic population of contact events with planted bad actors, for testing and benchmarks.

:func:`simulate` builds, deterministically from a seed: children of every age band in families
and schools, parents, coaches and teachers connected to many children, popular teens; and
planted actors:

- ``fanout_groomer``: contacts many unknown children in a few hours, few respond, pushes the
  responders to another app quickly;
- ``slow_groomer``: an old account that contacts one or two children and escalates over days;
- ``sextortion_ring``: groups of new accounts in another country, contacting many teens within
  hours and quickly asking for images and payment;
- ``ban_evader``: a new account on the device of a banned account, contacting children;

and benign lookalikes that share some of those traits (a coach adding a new season's players, a
popular teen, a new relative, a sibling on a banned sibling's device, a teen with pen pals
abroad, a parent who sends gifts). Events carry flags and metadata only, never text. Countries
``XA``-``XC`` are synthetic (user-assigned ISO codes).

:func:`evaluate` replays the events hour by hour through :class:`~bastion.contact.risk.RiskState`
and measures recall (planted actors reaching the case band within a window of their first
contact with a child), precision among accounts that reached it, and the share of lookalikes
that did, overall and per detector. Synthetic figures are not field figures.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bastion.contact.model import (
    MINOR_BANDS,
    AccountEvent,
    BanEvent,
    BlockEvent,
    ConnectionAccept,
    ConnectionRequest,
    Event,
    FlagEvent,
    FlagKind,
    GiftEvent,
    MessageEvent,
    ReportCategory,
    ReportEvent,
    RiskBand,
    event_to_json,
)
from bastion.contact.risk import DETECTORS, RiskSettings, RiskState
from bastion.vocab import AgeBand

PLANTED_KINDS = ("fanout_groomer", "slow_groomer", "sextortion_ring", "ban_evader")
LOOKALIKE_KINDS = (
    "coach",
    "popular_teen",
    "new_relative",
    "shared_device_sibling",
    "penpal_teen",
    "gifting_parent",
)
START = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Label:
    account: str
    kind: str
    planted: bool = False
    lookalike: bool = False
    first_child_contact: datetime | None = None

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        fcc = self.first_child_contact
        out["first_child_contact"] = fcc.isoformat() if fcc else None
        return out


@dataclass(slots=True)
class _Person:
    id: str
    band: AgeBand
    country: str
    school: int = -1


@dataclass
class _Gen:
    rng: random.Random
    start: datetime
    days: int
    events: list[Event] = field(default_factory=list)
    people: dict[str, _Person] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    links: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    first_child_contact: dict[str, datetime] = field(default_factory=dict)
    _n: int = 0

    # -- primitives ---------------------------------------------------------------------

    def _eid(self) -> str:
        self._n += 1
        return f"ev{self._n:09d}"

    def person(
        self,
        kind: str,
        band: AgeBand,
        country: str = "GB",
        created: datetime | None = None,
        devices: Sequence[str] = (),
        school: int = -1,
    ) -> str:
        pid = f"u{len(self.people):06d}"
        self.people[pid] = _Person(pid, band, country, school)
        self.kinds[pid] = kind
        # existing accounts are older than any connection made before the period (300 days)
        created = created or self.start - timedelta(days=self.rng.randrange(400, 2000))
        self.events.append(
            AccountEvent(
                event_id=self._eid(),
                time=min(created, self.start - timedelta(days=1))
                if created < self.start
                else created,
                type="account",
                account=pid,
                created_at=created,
                age_band=band,
                age_source=self.rng.choice(["self_declared", "estimated"]),
                country=country,
                device_hashes=tuple(devices) or (f"dev:{pid}{self.rng.randrange(1 << 30):08x}",),
            )
        )
        return pid

    def _note_contact(self, a: str, b: str, t: datetime) -> None:
        if self.people[b].band in MINOR_BANDS and (
            a not in self.first_child_contact or t < self.first_child_contact[a]
        ):
            self.first_child_contact[a] = t

    def message(self, a: str, b: str, t: datetime) -> None:
        self._note_contact(a, b, t)
        conv = f"c:{min(a, b)}:{max(a, b)}"
        self.events.append(
            MessageEvent(
                event_id=self._eid(),
                time=t,
                type="message",
                actor=a,
                target=b,
                conversation=conv,
                has_media=self.rng.random() < 0.1,
            )
        )

    def request(self, a: str, b: str, t: datetime, accept_p: float, delay_h: float = 3) -> bool:
        self._note_contact(a, b, t)
        self.events.append(
            ConnectionRequest(
                event_id=self._eid(), time=t, type="connection_request", actor=a, target=b
            )
        )
        if self.rng.random() >= accept_p:
            return False
        at = t + timedelta(minutes=self.rng.uniform(2, 60 * delay_h))
        self.events.append(
            ConnectionAccept(
                event_id=self._eid(), time=at, type="connection_accept", actor=b, target=a
            )
        )
        self.links[a].add(b)
        self.links[b].add(a)
        return True

    def connect_before(self, a: str, b: str) -> None:
        """A connection made before the simulated period."""
        if b in self.links[a] or a == b:
            return
        t = self.start - timedelta(
            days=self.rng.randrange(2, 300), minutes=self.rng.randrange(1440)
        )
        self.events.append(
            ConnectionRequest(
                event_id=self._eid(), time=t, type="connection_request", actor=a, target=b
            )
        )
        self.events.append(
            ConnectionAccept(
                event_id=self._eid(),
                time=t + timedelta(minutes=5),
                type="connection_accept",
                actor=b,
                target=a,
            )
        )
        self.links[a].add(b)
        self.links[b].add(a)

    def flag(self, a: str, b: str, t: datetime, kind: FlagKind) -> None:
        self.events.append(
            FlagEvent(event_id=self._eid(), time=t, type="flag", account=a, target=b, kind=kind)
        )

    def chat(self, a: str, b: str, t: datetime, n: int, gap_min: float = 4) -> datetime:
        """``n`` messages alternating from ``a``; returns the time of the last one."""
        for i in range(n):
            t += timedelta(minutes=self.rng.uniform(0.5, 2 * gap_min))
            self.message(a, b, t) if i % 2 == 0 else self.message(b, a, t)
        return t

    def block_or_report(
        self,
        child: str,
        actor: str,
        t: datetime,
        block_p: float,
        report_p: float,
        category: ReportCategory,
    ) -> None:
        when = t + timedelta(minutes=self.rng.uniform(10, 300))
        if self.rng.random() < block_p:
            self.events.append(
                BlockEvent(event_id=self._eid(), time=when, type="block", actor=child, target=actor)
            )
        if self.rng.random() < report_p:
            self.events.append(
                ReportEvent(
                    event_id=self._eid(),
                    time=when + timedelta(minutes=1),
                    type="report",
                    actor=child,
                    target=actor,
                    category=category,
                )
            )

    def day_time(self, day: int, first_hour: int = 7, last_hour: int = 22) -> datetime:
        return self.start + timedelta(days=day, hours=self.rng.uniform(first_hour, last_hour))

    def planted_day(self) -> int:
        return self.rng.randrange(0, max(1, self.days - 1))


def _count(users: int, per: int, minimum: int = 1) -> int:
    return max(minimum, users // per)


def simulate(users: int, days: int, seed: int) -> tuple[list[Event], list[Label]]:
    """The events (sorted by time, then id) and a label for every account."""
    if users < 100 or days < 1:
        raise ValueError("simulate needs at least 100 users and one day")
    g = _Gen(random.Random(seed), START, days)
    rng = g.rng
    n_fanout, n_slow = _count(users, 200), _count(users, 300)
    n_rings, n_evaders = _count(users, 400), _count(users, 300)
    planted_accounts = n_fanout + n_slow + 3 * n_rings + 2 * n_evaders
    pool = users - planted_accounts
    n_children = int(pool * 0.55)

    # -- families and schools -----------------------------------------------------------
    children: list[str] = []
    schools: defaultdict[int, list[str]] = defaultdict(list)
    n_schools = max(2, n_children // 40)
    school_country = [rng.choices(["GB", "IE", "FR"], [85, 10, 5])[0] for _ in range(n_schools)]
    parents: list[str] = []
    families: list[tuple[list[str], list[str]]] = []
    while len(children) < n_children:
        school = rng.randrange(n_schools)
        country = school_country[school]
        kids = []
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            band: AgeBand = rng.choices(MINOR_BANDS, [35, 35, 30])[0]
            kid = g.person("child", band, country, school=school)
            kids.append(kid)
            children.append(kid)
            schools[school].append(kid)
        adults = [g.person("parent", "adult", country) for _ in range(rng.choice([1, 2, 2]))]
        parents.extend(adults)
        families.append((adults, kids))
        for a in adults:
            for k in kids:
                g.connect_before(a, k)
        for i, a in enumerate(adults):
            for b in adults[i + 1 :]:
                g.connect_before(a, b)
        for i, k in enumerate(kids):
            for k2 in kids[i + 1 :]:
                g.connect_before(k, k2)
    for members in schools.values():
        for kid in members:
            for other in rng.sample(members, min(len(members), rng.randrange(3, 9))):
                g.connect_before(kid, other)
    other_adults = [
        g.person("adult", "adult", rng.choice(["GB", "GB", "IE"]))
        for _ in range(max(0, pool - len(g.people) - 2 * _count(users, 100, 2)))
    ]
    for a in other_adults:
        for b in rng.sample(parents + other_adults, 6):
            g.connect_before(a, b)

    # -- lookalikes ---------------------------------------------------------------------
    coaches = []
    for _ in range(_count(users, 100, 2)):
        school = rng.randrange(n_schools)
        coach = g.person("coach", "adult", school_country[school])
        coaches.append((coach, school))
        members = schools[school]
        for kid in rng.sample(members, len(members) // 2):
            g.connect_before(coach, kid)
    popular = [k for k in children if g.people[k].band != "under13"][: _count(users, 100, 2)]
    for k in popular:
        g.kinds[k] = "popular_teen"
    relatives: list[tuple[str, list[str], list[str], int]] = []
    siblings: list[str] = []
    penpals: list[str] = []
    gifters: list[tuple[str, list[str]]] = []
    for _ in range(_count(users, 200)):
        adults, kids = rng.choice(families)
        day = g.planted_day()
        rel = g.person(
            "new_relative", "adult", g.people[kids[0]].country, created=g.day_time(day, 8, 12)
        )
        relatives.append((rel, adults, kids, day))
    for _ in range(_count(users, 300)):
        adults, kids = rng.choice(families)
        kid = kids[0]
        g.kinds[kid] = "shared_device_sibling"
        banned = g.person(
            "banned_account",
            g.people[kid].band,
            g.people[kid].country,
            devices=(f"dev:shared{kid}",),
        )
        g.events.append(
            BanEvent(event_id=g._eid(), time=START - timedelta(days=20), type="ban", account=banned)
        )
        g.events.append(
            AccountEvent(
                event_id=g._eid(),
                time=START - timedelta(days=5),
                type="account",
                account=kid,
                created_at=START - timedelta(days=900),
                age_band=g.people[kid].band,
                country=g.people[kid].country,
                device_hashes=(f"dev:shared{kid}",),
            )
        )
        siblings.append(kid)
    teens = [k for k in children if g.people[k].band != "under13" and g.kinds[k] == "child"]
    for kid in rng.sample(teens, min(len(teens), _count(users, 200))):
        g.kinds[kid] = "penpal_teen"
        penpals.append(kid)
    for adults, kids in families:
        if len(gifters) < _count(users, 200) and g.kinds[adults[0]] == "parent":
            g.kinds[adults[0]] = "gifting_parent"
            gifters.append((adults[0], kids))

    # -- planted actors ------------------------------------------------------------------
    groomers = [
        g.person(
            "fanout_groomer",
            rng.choices(["adult", "16-17"], [80, 20])[0],  # type: ignore[arg-type]
            "GB",
            created=START - timedelta(days=rng.choice([1, 2, 400])),
        )
        for _ in range(n_fanout)
    ]
    slow = [g.person("slow_groomer", "adult", "GB") for _ in range(n_slow)]
    rings = []
    for r in range(n_rings):
        day = g.planted_day()
        country = ("XA", "XB", "XC")[r % 3]
        members = [
            g.person(
                "sextortion_ring",
                rng.choice(["16-17", "adult"]),
                country,
                created=START + timedelta(days=day) - timedelta(hours=rng.uniform(2, 40)),
            )
            for _ in range(3)
        ]
        rings.append((members, day))
    evaders = []
    for _ in range(n_evaders):
        day = g.planted_day()
        device = f"dev:ev{rng.randrange(1 << 40):010x}"
        old = g.person("banned_account", "adult", "GB", devices=(device,))
        g.events.append(
            BanEvent(
                event_id=g._eid(),
                time=START + timedelta(days=day) - timedelta(days=rng.uniform(1, 10)),
                type="ban",
                account=old,
            )
        )
        created = START + timedelta(days=day, hours=rng.uniform(6, 12))
        evaders.append(
            (g.person("ban_evader", "adult", "GB", created=created, devices=(device,)), day)
        )

    # -- everyday traffic ------------------------------------------------------------------
    everyone = list(g.people)
    for day in range(days):
        for p in everyone:
            friends = sorted(g.links[p])
            if not friends or g.kinds[p] in ("banned_account", *PLANTED_KINDS):
                continue
            rate = 1.5 if g.people[p].band in MINOR_BANDS else 0.8
            for _ in range(_poisson(rng, rate)):
                friend = rng.choice(friends)
                g.chat(p, friend, g.day_time(day), rng.randrange(1, 5), gap_min=6)
            if g.people[p].band in MINOR_BANDS and rng.random() < 0.004:
                # everyday friction: a child blocks or reports someone they know
                g.block_or_report(p, rng.choice(friends), g.day_time(day), 1.0, 0.3, "harassment")
            if g.people[p].band in MINOR_BANDS and rng.random() < 0.01:
                classmates = schools.get(g.people[p].school, [])
                others = [k for k in classmates if k not in g.links[p] and k != p]
                if others:
                    g.request(p, rng.choice(others), g.day_time(day), 0.8)

    for coach, school in coaches:
        day = g.planted_day()
        t = g.day_time(day, 16, 19)
        new = [k for k in schools[school] if k not in g.links[coach]]
        for kid in rng.sample(new, min(len(new), rng.randrange(6, 13))):
            if g.request(coach, kid, t, 0.85, delay_h=4):
                g.chat(coach, kid, t + timedelta(hours=5), 2, gap_min=30)
            t += timedelta(minutes=rng.uniform(1, 8))
    for teen in popular:
        day = g.planted_day()
        t = g.day_time(day, 15, 20)
        peers = [
            k
            for k in children
            if g.people[k].band != "under13" and k not in g.links[teen] and k != teen
        ]
        for kid in rng.sample(peers, min(len(peers), rng.randrange(8, 16))):
            if g.request(teen, kid, t, 0.7, delay_h=2):
                g.chat(teen, kid, t + timedelta(hours=2), 4)
            t += timedelta(minutes=rng.uniform(1, 10))
    for rel, adults, kids, day in relatives:
        t = g.day_time(day, 12, 14)
        for a in adults:
            g.request(rel, a, t, 1.0, delay_h=1)
        for kid in kids:
            t2 = t + timedelta(hours=rng.uniform(2, 4))
            if g.request(rel, kid, t2, 0.9, delay_h=2):
                g.chat(rel, kid, t2 + timedelta(hours=3), 4)
    for kid in penpals:
        day = g.planted_day()
        abroad = [
            k
            for k in children
            if g.people[k].country != g.people[kid].country and g.people[k].band != "under13"
        ]
        for pal in rng.sample(abroad, min(len(abroad), 3)):
            t = g.day_time(day)
            g.chat(kid, pal, t, rng.randrange(4, 10))
    for parent, kids in gifters:
        for day in range(days):
            if rng.random() < 0.3:
                kid = rng.choice(kids)
                g.events.append(
                    GiftEvent(
                        event_id=g._eid(),
                        time=g.day_time(day),
                        type="gift",
                        actor=parent,
                        target=kid,
                        amount_band="low",
                    )
                )

    minors = [k for k in children if g.kinds[k] in ("child", "penpal_teen")]
    teens_only = [k for k in minors if g.people[k].band != "under13"]
    for groomer in groomers:
        day = g.planted_day()
        t = g.day_time(day, 15, 19)
        for kid in rng.sample(minors, min(len(minors), rng.randrange(10, 31))):
            t += timedelta(minutes=rng.uniform(2, 12))
            if rng.random() < 0.5:
                answered = g.request(groomer, kid, t, 0.15, delay_h=2)
            else:
                g.message(groomer, kid, t)
                answered = rng.random() < 0.12
            if answered:
                end = g.chat(groomer, kid, t + timedelta(hours=2), rng.randrange(4, 14))
                if rng.random() < 0.7:
                    g.flag(groomer, kid, end, "offplatform_handle")
                if rng.random() < 0.3:
                    g.flag(groomer, kid, end + timedelta(minutes=5), "image_request")
            g.block_or_report(kid, groomer, t, 0.12, 0.05, "grooming")
    for groomer in slow:
        day = g.planted_day()
        for kid in rng.sample(minors, rng.randrange(1, 3)):
            t = g.day_time(day)
            g.message(groomer, kid, t)
            for d in range(day, days):
                t = g.chat(groomer, kid, g.day_time(d), rng.randrange(2, 7))
                if d == day + 2:
                    g.flag(groomer, kid, t, "secrecy_request")
                if d == day + 3:
                    g.events.append(
                        GiftEvent(
                            event_id=g._eid(),
                            time=t,
                            type="gift",
                            actor=groomer,
                            target=kid,
                            amount_band="medium",
                        )
                    )
                if d == day + 4:
                    g.flag(groomer, kid, t, "offplatform_handle")
    for members, day in rings:
        for member in members:
            t = g.day_time(day, 17, 20)
            for kid in rng.sample(teens_only, min(len(teens_only), rng.randrange(15, 31))):
                t += timedelta(minutes=rng.uniform(1, 6))
                if g.request(member, kid, t, 0.3, delay_h=1):
                    end = g.chat(member, kid, t + timedelta(hours=1), rng.randrange(4, 10), 2)
                    g.flag(member, kid, end, "image_request")
                    g.flag(
                        member, kid, end + timedelta(minutes=rng.uniform(10, 90)), "payment_request"
                    )
                    g.flag(member, kid, end + timedelta(minutes=95), "threat")
                    g.block_or_report(kid, member, end, 0.5, 0.4, "sextortion")
    for evader, day in evaders:
        t = g.day_time(day, 13, 18)
        for kid in rng.sample(minors, rng.randrange(4, 11)):
            t += timedelta(minutes=rng.uniform(3, 30))
            if g.request(evader, kid, t, 0.2):
                g.chat(evader, kid, t + timedelta(hours=3), rng.randrange(2, 8))

    end = START + timedelta(days=days)
    events = sorted((e for e in g.events if e.time < end), key=lambda e: (e.time, e.event_id))
    labels = [
        Label(
            account=pid,
            kind=kind,
            planted=kind in PLANTED_KINDS,
            lookalike=kind in LOOKALIKE_KINDS,
            first_child_contact=g.first_child_contact.get(pid),
        )
        for pid, kind in sorted(g.kinds.items())
    ]
    return events, labels


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: fine for the small means used here.
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def write_events(events: Iterable[Event], path: Path) -> int:
    """Write events as JSON lines; returns how many."""
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event_to_json(event), separators=(",", ":")) + "\n")
            n += 1
    return n


def write_labels(labels: Iterable[Label], path: Path) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for label in labels:
            out.write(json.dumps(label.to_json(), separators=(",", ":")) + "\n")
            n += 1
    return n


@dataclass(frozen=True, slots=True)
class DetectorFigures:
    detector: str
    #: Planted actors for whom this detector fired within the window of their first contact
    #: with a child, over all planted actors.
    recall: float
    #: Of the flagged accounts this detector fired for, the share that were planted.
    precision: float
    #: Lookalikes this detector fired for at any point (whatever their band), over all lookalikes.
    lookalike_rate: float
    #: The counts behind the ratios (so figures can be pooled over seeds).
    caught: int = 0
    cases: int = 0
    cases_planted: int = 0
    lookalikes_fired: int = 0


@dataclass(frozen=True, slots=True)
class Evaluation:
    planted: int
    caught_in_time: int
    flagged: int
    flagged_planted: int
    lookalikes: int
    lookalikes_flagged: int
    recall: float
    precision: float
    lookalike_rate: float
    recall_by_kind: dict[str, float]
    detectors: tuple[DetectorFigures, ...]
    flagged_at: dict[str, datetime]
    #: kind -> (caught in time, planted of that kind)
    caught_by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)


def evaluate(
    events: Sequence[Event],
    labels: Sequence[Label],
    settings: RiskSettings | None = None,
    within: timedelta = timedelta(hours=24),
    step: timedelta = timedelta(hours=1),
    case_band: RiskBand = "high",
    since: datetime | None = START,
) -> Evaluation:
    """Replay ``events`` in time order, rescoring every ``step``; an account is *flagged* at the
    end of the first step where it reaches ``case_band`` (so detection times are never early).

    Events before ``since`` (the simulated history: accounts and old connections) are applied in
    one go and scored once at ``since``; ``None`` steps from the first event."""
    state = RiskState(settings)
    flagged_at: dict[str, datetime] = {}
    first_fired: dict[str, dict[str, datetime]] = {}  # account -> detector -> first fired
    levels = ("low", "medium", "high")
    threshold = levels.index(case_band)
    ordered = sorted(events, key=lambda e: (e.time, e.event_id))
    i = 0
    if ordered:
        boundary = ordered[0].time + step
        if since is not None and ordered[0].time < since:
            boundary = since
        while i < len(ordered):
            while i < len(ordered) and ordered[i].time < boundary:
                state.apply(ordered[i])
                i += 1
            for acc, result in state.rescore().items():
                for det in result.fired():
                    first_fired.setdefault(acc, {}).setdefault(det, boundary)
                if acc not in flagged_at and levels.index(result.band) >= threshold:
                    flagged_at[acc] = boundary
            boundary += step
            if i < len(ordered) and ordered[i].time >= boundary:  # skip hours without events
                boundary += step * ((ordered[i].time - boundary) // step + 1)
    by_account = {lab.account: lab for lab in labels}
    planted = [lab for lab in labels if lab.planted and lab.first_child_contact is not None]
    lookalikes = [lab for lab in labels if lab.lookalike]

    def in_time(lab: Label) -> bool:
        when = flagged_at.get(lab.account)
        fcc = lab.first_child_contact
        return when is not None and fcc is not None and when <= fcc + within

    caught = [lab for lab in planted if in_time(lab)]
    flagged_planted = [a for a in flagged_at if a in by_account and by_account[a].planted]
    flagged_look = [lab for lab in lookalikes if lab.account in flagged_at]
    by_kind: dict[str, float] = {}
    counts_by_kind: dict[str, tuple[int, int]] = {}
    for kind in PLANTED_KINDS:
        of_kind = [lab for lab in planted if lab.kind == kind]
        if of_kind:
            hit = sum(1 for lab in of_kind if in_time(lab))
            by_kind[kind] = hit / len(of_kind)
            counts_by_kind[kind] = (hit, len(of_kind))
    figures = []
    for det in DETECTORS:
        fired = {a for a, dets in first_fired.items() if det in dets}
        in_time_det = sum(
            1
            for lab in planted
            if lab.account in fired
            and lab.first_child_contact is not None
            and first_fired[lab.account][det] <= lab.first_child_contact + within
        )
        flagged_with = [a for a in flagged_at if a in fired]
        planted_with = [a for a in flagged_with if a in by_account and by_account[a].planted]
        look_fired = sum(1 for lab in lookalikes if lab.account in fired)
        figures.append(
            DetectorFigures(
                det,
                recall=_ratio(in_time_det, len(planted)),
                precision=_ratio(len(planted_with), len(flagged_with)),
                lookalike_rate=_ratio(look_fired, len(lookalikes)),
                caught=in_time_det,
                cases=len(flagged_with),
                cases_planted=len(planted_with),
                lookalikes_fired=look_fired,
            )
        )
    return Evaluation(
        planted=len(planted),
        caught_in_time=len(caught),
        flagged=len(flagged_at),
        flagged_planted=len(flagged_planted),
        lookalikes=len(lookalikes),
        lookalikes_flagged=len(flagged_look),
        recall=_ratio(len(caught), len(planted)),
        precision=_ratio(len(flagged_planted), len(flagged_at)),
        lookalike_rate=_ratio(len(flagged_look), len(lookalikes)),
        recall_by_kind=by_kind,
        detectors=tuple(figures),
        flagged_at=flagged_at,
        caught_by_kind=counts_by_kind,
    )


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def run(
    users: int, days: int, seed: int, out: Path, labels_out: Path | None = None
) -> tuple[int, int]:
    """Simulate and write ``out`` (events) and the labels beside it (``<out>.labels.jsonl``)."""
    events, labels = simulate(users, days, seed)
    labels_out = labels_out or out.with_name(out.stem + ".labels.jsonl")
    return write_events(events, out), write_labels(labels, labels_out)

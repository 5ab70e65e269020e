"""Behavioural risk per account from contact events: named detectors, a score and a band.

Each detector looks at what an account (the *actor*) did towards children and returns a
:class:`Contribution`: points, whether it fired, a plain explanation and its evidence counts.
They see metadata only (who contacted whom and when, connections, blocks, reports, gifts,
flag kinds, device and identifier hashes), never content. Signals are not proof: a band at or
above the policy's threshold opens an account case for a human, it never acts on its own.

A minor's contact is *cold* when the actor was not connected to the child at the actor's first
contact (message, connection request or gift), and the child is a *stranger* when, in addition,
the two shared at most ``max_mutuals`` connections at that moment.

Detectors (parameters in :class:`RiskSettings`):

- ``fanout``: many stranger minors first contacted within a sliding window, few of them
  responding (accepting a request or writing back);
- ``age_gap``: stranger minors much younger than the actor (an adult, or a child two bands older);
- ``new_account``: an account only days old contacting stranger minors;
- ``blocked_reported``: minors blocking or reporting the account (count and rate);
- ``cross_country``: stranger minors in another country;
- ``fast_escalation``: an ``offplatform_handle``, ``image_request`` or ``payment_request`` flag
  within N messages or M minutes of the first contact with a minor;
- ``gifts_to_minors``: gifts or payments to minors the actor shares no connections with;
- ``ban_evasion``: a device or identifier hash shared with a banned account;
- ``stranger_conversation``: an adult (or a much older child) keeping up a two-way conversation
  it started with a minor who is still neither connected to it nor shares a connection with it
  (the isolation a slow groomer with few targets shows before any flag arrives).

:class:`RiskState` is incremental: :meth:`RiskState.apply` takes events one at a time, in any
order, each at most once by ``event_id`` (a re-sent event changes nothing), updates compact
per-account indexes and marks the accounts whose score may have changed; :meth:`RiskState.rescore`
recomputes only those. Every score is a function of the *set* of events seen, with no wall
clock: windows are measured between event times, and the only "now" (for the response grace and
the lookback) is the latest event time seen, the *watermark*; an account whose score changes when
the watermark passes a time is queued to be woken then. So the result is the same whatever the
arrival order, and equal to :func:`recompute` over the same events from scratch.

Only a hash of each applied event is kept (to tell a re-sent event from a conflicting one), and
each account's indexes hold times and counterpart ids, never content.
"""

from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.contact.decide import AccountFacts, Relationship
from bastion.contact.model import (
    MINOR_BANDS,
    AccountEvent,
    BanEvent,
    BlockEvent,
    ConnectionAccept,
    ConnectionRemove,
    ConnectionRequest,
    Event,
    FlagEvent,
    FlagKind,
    GiftEvent,
    MessageEvent,
    PaymentEvent,
    ProfileChange,
    ReportEvent,
    RiskBand,
)
from bastion.vocab import AgeBand

DETECTORS = (
    "fanout",
    "age_gap",
    "new_account",
    "blocked_reported",
    "cross_country",
    "fast_escalation",
    "gifts_to_minors",
    "ban_evasion",
    "stranger_conversation",
)
#: Report categories ``blocked_reported`` counts as serious.
_SERIOUS = frozenset({"grooming", "sextortion", "csam"})
#: A minor band's position, youngest 0 (``age_gap`` compares them).
_BAND_INDEX: Mapping[str, int] = {b: i for i, b in enumerate(MINOR_BANDS)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FanOutSettings(_Strict):
    enabled: bool = True
    window_hours: float = Field(default=24.0, gt=0)
    min_targets: int = Field(default=5, ge=1)
    max_response_rate: float = Field(default=0.5, ge=0, le=1)
    #: A contact counts towards the response rate once it is this old (measured against the
    #: latest event time seen) or has been answered: children take time to answer.
    response_grace_hours: float = Field(default=6.0, ge=0)
    points: int = Field(default=30, ge=0)
    points_per_extra: int = Field(default=2, ge=0)
    max_points: int = Field(default=40, ge=0)


class AgeGapSettings(_Strict):
    enabled: bool = True
    #: A child actor counts only towards children at least this many bands younger.
    minor_band_gap: int = Field(default=2, ge=1)
    min_targets: int = Field(default=1, ge=1)
    points_per_target: int = Field(default=10, ge=0)
    max_points: int = Field(default=30, ge=0)


class NewAccountSettings(_Strict):
    enabled: bool = True
    max_age_days: float = Field(default=7.0, gt=0)
    min_targets: int = Field(default=2, ge=1)
    points: int = Field(default=15, ge=0)


class BlockedReportedSettings(_Strict):
    enabled: bool = True
    min_count: int = Field(default=2, ge=1)
    min_rate: float = Field(default=0.1, ge=0, le=1)
    points: int = Field(default=25, ge=0)
    points_per_extra: int = Field(default=5, ge=0)
    max_points: int = Field(default=40, ge=0)


class CrossCountrySettings(_Strict):
    enabled: bool = True
    min_targets: int = Field(default=2, ge=1)
    points: int = Field(default=20, ge=0)


class EscalationSettings(_Strict):
    enabled: bool = True
    kinds: frozenset[FlagKind] = frozenset(
        {"offplatform_handle", "image_request", "payment_request"}
    )
    within_messages: int = Field(default=20, ge=0)
    within_minutes: float = Field(default=120.0, ge=0)
    points: int = Field(default=35, ge=0)
    points_per_extra: int = Field(default=10, ge=0)
    max_points: int = Field(default=55, ge=0)


class GiftSettings(_Strict):
    enabled: bool = True
    #: Count gifts from accounts that are themselves children (games: teens gift each other).
    from_minors: bool = False
    min_targets: int = Field(default=1, ge=1)
    points: int = Field(default=15, ge=0)
    points_per_extra: int = Field(default=5, ge=0)
    max_points: int = Field(default=30, ge=0)


class BanEvasionSettings(_Strict):
    enabled: bool = True
    points: int = Field(default=45, ge=0)


class StrangerConversationSettings(_Strict):
    enabled: bool = True
    #: A child actor counts only towards children at least this many bands younger.
    minor_band_gap: int = Field(default=2, ge=1)
    #: Messages both ways in the pair, and of them from the child, that make a conversation.
    min_messages: int = Field(default=6, ge=1)
    min_replies: int = Field(default=2, ge=1)
    min_targets: int = Field(default=1, ge=1)
    points: int = Field(default=50, ge=0)
    points_per_extra: int = Field(default=10, ge=0)
    max_points: int = Field(default=60, ge=0)


class RiskSettings(_Strict):
    """The risk section of the policy YAML."""

    #: Count accounts of ``unknown`` age as minors when they are the ones contacted.
    unknown_age_as_minor: bool = False
    #: At most this many shared connections at first contact still makes a minor a stranger.
    max_mutuals: int = Field(default=0, ge=0)
    #: Contacts with minors first made longer ago than this (before the latest event time seen)
    #: no longer count: an account is judged on its recent behaviour. Blocks and reports count
    #: for as long as the events are kept.
    lookback_days: float = Field(default=30.0, gt=0)
    medium_at: int = Field(default=30, ge=1)
    high_at: int = Field(default=60, ge=1)
    max_score: int = Field(default=100, ge=1)
    fanout: FanOutSettings = FanOutSettings()
    age_gap: AgeGapSettings = AgeGapSettings()
    new_account: NewAccountSettings = NewAccountSettings()
    blocked_reported: BlockedReportedSettings = BlockedReportedSettings()
    cross_country: CrossCountrySettings = CrossCountrySettings()
    fast_escalation: EscalationSettings = EscalationSettings()
    gifts_to_minors: GiftSettings = GiftSettings()
    ban_evasion: BanEvasionSettings = BanEvasionSettings()
    stranger_conversation: StrangerConversationSettings = StrangerConversationSettings()


class Contribution:
    """One detector's part of a score. The explanation is formatted only when read: a rescoring
    keeps its template and arguments (most rescored rows are never shown, and formatting every
    detector's text was a large part of a rescoring's cost). Two contributions are equal when
    their fields are, the explanation compared as text (as its template and arguments when both
    have them: equal arguments give equal text)."""

    __slots__ = ("_args", "_text", "detector", "evidence", "fired", "points")

    def __init__(
        self,
        detector: str,
        points: int,
        fired: bool,
        explanation: str,
        evidence: Mapping[str, int],
        args: tuple[object, ...] | None = None,
    ) -> None:
        """``explanation`` is the text, or with ``args`` a :meth:`str.format` template."""
        self.detector = detector
        self.points = points
        self.fired = fired
        self.evidence = evidence
        self._text = explanation
        self._args = args

    @property
    def explanation(self) -> str:
        if self._args is not None:
            self._text = self._text.format(*self._args)
            self._args = None
        return self._text

    def text_key(self) -> tuple[str, tuple[object, ...] | None]:
        """What the explanation is made of, without formatting it (a memo's key)."""
        return self._text, self._args

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Contribution):
            return NotImplemented
        if (
            self.detector != other.detector
            or self.points != other.points
            or self.fired != other.fired
            or self.evidence != other.evidence
        ):
            return False
        if (
            self._args is not None
            and other._args is not None
            and self._text == other._text
            and self._args == other._args
        ):
            return True
        return self.explanation == other.explanation

    def __hash__(self) -> int:
        return hash((self.detector, self.points, self.fired, self.explanation))

    def __repr__(self) -> str:
        return (
            f"Contribution(detector={self.detector!r}, points={self.points!r}, "
            f"fired={self.fired!r}, explanation={self.explanation!r}, "
            f"evidence={self.evidence!r})"
        )


@dataclass(frozen=True, slots=True)
class RiskResult:
    account: str
    score: int
    band: RiskBand
    contributions: tuple[Contribution, ...]

    def fired(self) -> tuple[str, ...]:
        return tuple(c.detector for c in self.contributions if c.fired)


@dataclass(frozen=True, slots=True)
class Facts:
    """An account's current facts, folded from its ``account`` and ``profile_change`` events
    (latest time wins, ties by event id) and its ``ban`` events."""

    age_band: AgeBand = "unknown"
    country: str | None = None
    created_at: datetime | None = None
    banned: bool = False
    hashes: frozenset[str] = frozenset()


#: The facts of an account no account, profile or ban event named (shared: it is frozen).
_NO_FACTS = Facts()

_Key = tuple[datetime, str]  # (time, event_id): the order events are folded in


@dataclass(slots=True)
class _Out:
    """What one actor did towards one target."""

    first: datetime | None = None
    messages: list[datetime] = field(default_factory=list)  # sorted
    gifts: list[datetime] = field(default_factory=list)
    flags: list[tuple[datetime, FlagKind]] = field(default_factory=list)

    def contact(self, time: datetime) -> None:
        if self.first is None or time < self.first:
            self.first = time


def _points(n: int, minimum: int, base: int, per_extra: int, cap: int) -> int:
    return min(cap, base + per_extra * (n - minimum)) if n >= minimum else 0


class RiskState:
    """Incremental per-account risk over a set of events (see the module docstring)."""

    def __init__(self, settings: RiskSettings | None = None) -> None:
        self.settings = settings or RiskSettings()
        s = self.settings
        # the settings' spans, built once (a rescoring would otherwise build them every time)
        self._lookback = timedelta(days=s.lookback_days)
        self._grace = timedelta(hours=s.fanout.response_grace_hours)
        self._fanout_window = timedelta(hours=s.fanout.window_hours)
        self._new_account_age = timedelta(days=s.new_account.max_age_days)
        self._escalation_window = timedelta(minutes=s.fast_escalation.within_minutes)
        self._seen: dict[str, int] = {}  # event id -> hash of the event first applied under it
        self._profile: defaultdict[str, list[tuple[_Key, AccountEvent | ProfileChange]]] = (
            defaultdict(list)
        )
        self._bans: defaultdict[str, list[tuple[_Key, bool]]] = defaultdict(list)
        self._facts: dict[str, Facts] = {}
        self._hash_accounts: defaultdict[str, set[str]] = defaultdict(set)
        self._out: defaultdict[str, dict[str, _Out]] = defaultdict(dict)
        # unordered pair -> sorted (key, kind, actor) of its connection events
        self._conn: dict[tuple[str, str], list[tuple[_Key, str, str]]] = {}
        self._neighbours: defaultdict[str, set[str]] = defaultdict(set)  # ever accepted
        self._blockers: defaultdict[str, set[str]] = defaultdict(set)
        self._reporters: defaultdict[str, dict[str, set[str]]] = defaultdict(dict)
        self._untargeted_flags: defaultdict[str, int] = defaultdict(int)
        self._related: defaultdict[str, set[str]] = defaultdict(set)
        self._accounts: set[str] = set()
        self._dirty: set[str] = set()
        self._results: dict[str, RiskResult] = {}
        #: actor -> target -> the pair's :class:`_Target` (None: not a minor contacted), kept
        #: until an event changes what it is computed from (see :meth:`_forget`).
        self._targets: dict[str, dict[str, _Target | None]] = {}
        #: The latest event time seen: the only "now" a score depends on (response grace).
        self.watermark: datetime | None = None
        #: (time, account): the account's score changes when the watermark reaches time.
        self._wakeups: list[tuple[datetime, str]] = []
        self._scheduled: dict[str, datetime] = {}  # each account's earliest wake-up queued

    # -- intake ---------------------------------------------------------------------------

    def apply(self, event: Event) -> Literal["applied", "duplicate", "conflict"]:
        """Take one event. A re-sent event id changes nothing (``duplicate``; ``conflict`` when
        its content differs from the first one seen under that id)."""
        digest = hash(event)
        prior = self._seen.get(event.event_id)
        if prior is not None:
            return "duplicate" if prior == digest else "conflict"
        self._seen[event.event_id] = digest
        if self.watermark is None or event.time > self.watermark:
            self.watermark = event.time
            while self._wakeups and self._wakeups[0][0] <= event.time:
                when, account = heapq.heappop(self._wakeups)
                if self._scheduled.get(account) == when:
                    del self._scheduled[account]
                self._dirty.add(account)
        key = (event.time, event.event_id)
        if isinstance(event, AccountEvent | ProfileChange):
            self._know(event.account)
            bisect.insort(self._profile[event.account], (key, event), key=lambda kv: kv[0])
            self._refold(event.account)
        elif isinstance(event, BanEvent):
            self._know(event.account)
            bisect.insort(self._bans[event.account], (key, event.lifted), key=lambda kv: kv[0])
            self._refold(event.account)
        elif isinstance(event, FlagEvent):
            self._know(event.account)
            if event.target is None:
                self._untargeted_flags[event.account] += 1
                self._dirty.add(event.account)
            else:
                self._pair(event.account, event.target).flags.append((event.time, event.kind))
        elif isinstance(event, MessageEvent):
            out = self._pair(event.actor, event.target)
            out.contact(event.time)
            bisect.insort(out.messages, event.time)
        elif isinstance(event, ConnectionRequest):
            self._pair(event.actor, event.target).contact(event.time)
            self._connection(event, key, "request")
        elif isinstance(event, ConnectionAccept):
            self._connection(event, key, "accept")
        elif isinstance(event, ConnectionRemove):
            self._connection(event, key, "remove")
        elif isinstance(event, GiftEvent | PaymentEvent):
            out = self._pair(event.actor, event.target)
            out.contact(event.time)
            out.gifts.append(event.time)
        elif isinstance(event, BlockEvent):
            self._relate(event.actor, event.target)
            self._blockers[event.target].add(event.actor)
        elif isinstance(event, ReportEvent):
            self._relate(event.actor, event.target)
            cats = self._reporters[event.target].setdefault(event.actor, set())
            cats.add(event.category)
        return "applied"

    def _know(self, account: str) -> None:
        if account not in self._accounts:
            self._accounts.add(account)
            self._dirty.add(account)

    def _relate(self, a: str, b: str) -> None:
        self._know(a)
        self._know(b)
        self._related[a].add(b)
        self._related[b].add(a)
        self._dirty.update((a, b))

    def _pair(self, actor: str, target: str) -> _Out:
        self._relate(actor, target)
        # the pair's first contact, and the other way round its response, may have changed
        self._targets.get(actor, {}).pop(target, None)
        self._targets.get(target, {}).pop(actor, None)
        pairs = self._out[actor]
        found = pairs.get(target)
        if found is None:  # (setdefault would build an _Out for every event)
            found = pairs[target] = _Out()
        return found

    def _connection(
        self, event: ConnectionRequest | ConnectionAccept | ConnectionRemove, key: _Key, kind: str
    ) -> None:
        a, b = event.actor, event.target
        self._relate(a, b)
        pair = (a, b) if a < b else (b, a)
        bisect.insort(self._conn.setdefault(pair, []), (key, kind, a), key=lambda e: e[0])
        if kind == "accept":
            self._neighbours[a].add(b)
            self._neighbours[b].add(a)
        # both are marked (by _relate), and whoever has a pair with either whose mutual
        # connections may have changed
        self._forget(a, b)
        self._forget(b, a)

    def _forget(self, account: str, other: str) -> None:
        """After a connection event between ``account`` and ``other``: drop the cached targets
        it may change, their own pair and every pair of ``account`` with an account ``other``
        was ever connected to (``other`` may be, or have been, a mutual connection of the two),
        and mark those accounts for rescoring. Other pairs' connections and mutual connections
        are unchanged, so no other account's score can change."""
        neighbours = self._neighbours
        row = self._targets.get(account)
        if other not in neighbours.get(account, ()):
            # never connected (a request): ``other`` is no mutual connection of any pair of
            # ``account``'s, only their own pair changed
            if row:
                row.pop(other, None)
            return
        if row:
            for q in [q for q in row if q == other or other in neighbours.get(q, ())]:
                del row[q]
        for q in self._related.get(account, ()):  # every account it has a pair with
            if q == other or other in neighbours.get(q, ()):
                self._dirty.add(q)
                row = self._targets.get(q)
                if row:
                    row.pop(account, None)

    def _refold(self, account: str) -> None:
        band: AgeBand = "unknown"
        country: str | None = None
        created: datetime | None = None  # the latest stated creation time
        first_seen: datetime | None = None  # else the first account event's time
        hashes: set[str] = set()
        for (time, _), ev in self._profile[account]:
            if isinstance(ev, AccountEvent):
                band, country = ev.age_band, ev.country
                created = ev.created_at or created
                first_seen = first_seen or time
            else:
                band = ev.age_band or band
                country = ev.country or country
            hashes.update(ev.device_hashes, ev.identifier_hashes)
        banned = False
        for _, lifted in self._bans[account]:
            banned = not lifted
        old = self._facts.get(account, Facts())
        new = Facts(band, country, created or first_seen, banned, frozenset(hashes))
        self._facts[account] = new
        for h in new.hashes - old.hashes:
            self._hash_accounts[h].add(account)
        if new == old:
            return
        for other in self._related.get(account, ()):  # whether it is a minor may have changed
            self._targets.get(other, {}).pop(account, None)
        self._dirty.add(account)
        self._dirty.update(self._related[account])
        if new.banned != old.banned or new.hashes != old.hashes:
            for h in new.hashes:
                self._dirty.update(self._hash_accounts[h])

    # -- queries --------------------------------------------------------------------------

    def facts(self, account: str) -> Facts:
        return self._facts.get(account, _NO_FACTS)

    def _connected_at(self, a: str, b: str, before: datetime | None) -> bool:
        """Whether ``a`` and ``b`` were connected just before ``before`` (now, when None)."""
        state = False
        for (time, _), kind, _actor in self._conn.get((a, b) if a < b else (b, a), ()):
            if before is not None and time >= before:
                break
            if kind == "accept":
                state = True
            elif kind == "remove":
                state = False
        return state

    def connected(self, a: str, b: str) -> bool:
        return self._connected_at(a, b, None)

    def mutual_connections(self, a: str, b: str, at: datetime | None = None) -> int:
        common = self._neighbours.get(a, set()) & self._neighbours.get(b, set())
        return sum(
            1
            for x in common - {a, b}
            if self._connected_at(a, x, at) and self._connected_at(b, x, at)
        )

    def relationship(self, actor: str, target: str) -> Relationship:
        """The two accounts' relationship now, as :func:`~bastion.contact.decide.decide` wants."""
        return Relationship(
            connected=self.connected(actor, target),
            mutual_connections=self.mutual_connections(actor, target),
            blocked=actor in self._blockers.get(target, ())
            or target in self._blockers.get(actor, ()),
        )

    def account_facts(self, account: str) -> AccountFacts:
        """The account's facts as :func:`~bastion.contact.decide.decide` takes them (the defaults a
        child turned off are platform settings, not events: the caller adds them)."""
        return AccountFacts(account, self.facts(account).age_band)

    def _accepted_by(self, a: str, b: str) -> bool:
        """Whether ``b`` ever accepted a connection with ``a``."""
        pair = (a, b) if a < b else (b, a)
        return any(k == "accept" and actor == b for _, k, actor in self._conn.get(pair, ()))

    def is_minor(self, account: str) -> bool:
        band = self.facts(account).age_band
        return band in MINOR_BANDS or (band == "unknown" and self.settings.unknown_age_as_minor)

    @property
    def accounts(self) -> frozenset[str]:
        return frozenset(self._accounts)

    # -- scoring --------------------------------------------------------------------------

    def rescore(self) -> dict[str, RiskResult]:
        """Recompute the accounts marked since the last call; returns their new results."""
        changed = {a: self._score(a) for a in sorted(self._dirty)}
        self._results.update(changed)
        self._dirty.clear()
        return changed

    def result(self, account: str) -> RiskResult:
        if account in self._dirty or account not in self._results:
            self._results[account] = self._score(account)
            self._dirty.discard(account)
        return self._results[account]

    def results(self) -> dict[str, RiskResult]:
        self.rescore()
        return dict(self._results)

    def _settled(self, first: datetime) -> bool:
        """Whether a contact made at ``first`` is past the response grace period."""
        return self.watermark is not None and first + self._grace <= self.watermark

    def _score(self, account: str) -> RiskResult:
        s = self.settings
        lookback, grace, watermark = self._lookback, self._grace, self.watermark
        targets = _minor_targets(self, account)
        if watermark is not None:
            targets = [t for t in targets if t.first + lookback > watermark]
        if targets:
            # the score changes again when a contact leaves the grace period or the lookback
            when = min(t.first for t in targets) + lookback
            for t in targets:
                if t.stranger and not t.responded:
                    due = t.first + grace
                    if (watermark is None or due > watermark) and due < when:
                        when = due
            scheduled = self._scheduled.get(account)
            if scheduled is None or when < scheduled:  # else a wake-up at or before is due
                self._scheduled[account] = when
                heapq.heappush(self._wakeups, (when, account))
        contributions = tuple(detect(self, account, targets))
        total = 0
        for c in contributions:
            total += c.points
        score = min(s.max_score, total)
        band: RiskBand = (
            "high" if score >= s.high_at else "medium" if score >= s.medium_at else "low"
        )
        return RiskResult(account, score, band, contributions)


@dataclass(frozen=True, slots=True)
class _Target:
    account: str
    first: datetime
    cold: bool
    stranger: bool
    responded: bool


def _minor_targets(state: RiskState, actor: str) -> list[_Target]:
    """The minors ``actor`` contacted, each computed once and cached until an event changes
    its inputs (the pair's events either way, either side's connections, the target's facts)."""
    cache = state._targets.setdefault(actor, {})
    out: list[_Target] = []
    for target, pair in state._out.get(actor, {}).items():
        if target in cache:
            found = cache[target]
        else:
            found = cache[target] = _minor_target(state, actor, target, pair)
        if found is not None:
            out.append(found)
    return out


def _minor_target(state: RiskState, actor: str, target: str, pair: _Out) -> _Target | None:
    if pair.first is None or not state.is_minor(target):
        return None
    first = pair.first
    cold = not state._connected_at(actor, target, first)
    stranger = cold and state.mutual_connections(actor, target, first) <= (
        state.settings.max_mutuals
    )
    back = state._out.get(target, {}).get(actor)
    replied = back is not None and bool(back.messages) and back.messages[-1] >= first
    responded = replied or state._accepted_by(actor, target)
    return _Target(target, first, cold, stranger, responded)


def _contribution(
    name: str,
    points: int,
    fired_text: str,
    quiet_text: str,
    evidence: dict[str, int],
    args: tuple[object, ...] = (),
) -> Contribution:
    """``fired_text`` and ``quiet_text`` are :meth:`str.format` templates over ``args``,
    formatted only when the explanation is read."""
    text = fired_text if points else quiet_text
    return Contribution(name, points, points > 0, text, evidence, args if args else None)


def detect(
    state: RiskState, actor: str, targets: list[_Target] | None = None
) -> list[Contribution]:
    """Every enabled detector's contribution for ``actor``."""
    s = state.settings
    facts = state.facts(actor)
    if targets is None:
        targets = _minor_targets(state, actor)
    strangers = sorted((t for t in targets if t.stranger), key=lambda t: t.first)
    found: list[Contribution] = []

    if s.fanout.enabled:
        p = s.fanout
        window = state._fanout_window
        best = lo = responded = settled = 0
        watermark, grace = state.watermark, state._grace
        for hi, t in enumerate(strangers):
            while t.first - strangers[lo].first > window:
                lo += 1
            if hi - lo + 1 > best:
                best = hi - lo + 1
            if t.responded:
                responded += 1
                settled += 1
            elif watermark is not None and t.first + grace <= watermark:  # state._settled
                settled += 1
        pts = 0
        if settled and responded / settled <= p.max_response_rate:
            pts = _points(best, p.min_targets, p.points, p.points_per_extra, p.max_points)
        found.append(
            _contribution(
                "fanout",
                pts,
                "first contacted {0} stranger minors within {1:g} h; "
                "{2} of {3} past the grace period responded",
                "at most {0} stranger minors within {1:g} h",
                {
                    "max_in_window": best,
                    "stranger_minors": len(strangers),
                    "settled": settled,
                    "responded": responded,
                },
                (best, p.window_hours, responded, settled),
            )
        )

    if s.age_gap.enabled:
        p2 = s.age_gap
        younger = [
            t
            for t in strangers
            if _gap(facts.age_band, state.facts(t.account).age_band, p2.minor_band_gap)
        ]
        pts = min(p2.max_points, p2.points_per_target * len(younger))
        if len(younger) < p2.min_targets:
            pts = 0
        found.append(
            _contribution(
                "age_gap",
                pts,
                "a {0} account contacted {1} much younger stranger minors",
                "no much younger stranger minors contacted",
                {"younger_stranger_minors": len(younger)},
                (facts.age_band, len(younger)),
            )
        )

    if s.new_account.enabled:
        p3 = s.new_account
        age_hours = -1
        pts = 0
        if facts.created_at is not None and strangers:
            age = strangers[0].first - facts.created_at
            age_hours = max(0, int(age.total_seconds() // 3600))
            # a contact before the stated creation time is inconsistent data: not counted
            new = timedelta(0) <= age <= state._new_account_age
            if new and len(strangers) >= p3.min_targets:
                pts = p3.points
        found.append(
            _contribution(
                "new_account",
                pts,
                "an account {0} h old at its first contact with {1} stranger minors",
                "not a new account contacting stranger minors",
                {"account_age_hours": age_hours, "stranger_minors": len(strangers)},
                (age_hours, len(strangers)),
            )
        )

    if s.blocked_reported.enabled:
        p4 = s.blocked_reported
        blockers = {b for b in state._blockers.get(actor, ()) if state.is_minor(b)}
        reports = {r: c for r, c in state._reporters.get(actor, {}).items() if state.is_minor(r)}
        minors = blockers | reports.keys() if reports else blockers
        contacted = max(len(targets), len(minors))
        rate = len(minors) / contacted if contacted else 0.0
        pts = 0
        if rate >= p4.min_rate:
            pts = _points(len(minors), p4.min_count, p4.points, p4.points_per_extra, p4.max_points)
        serious = sum(1 for c in reports.values() if c & _SERIOUS) if reports else 0
        found.append(
            _contribution(
                "blocked_reported",
                pts,
                "{0} minors blocked or reported the account ({0} of {1} minors it dealt with)",
                "{0} minors blocked or reported the account",
                {
                    "minors": len(minors),
                    "blocked": len(blockers),
                    "reported": len(reports),
                    "reported_grooming_or_sextortion": serious,
                    "minors_contacted": len(targets),
                },
                (len(minors), contacted),
            )
        )

    if s.cross_country.enabled:
        p5 = s.cross_country
        abroad = [
            t
            for t in strangers
            if facts.country
            and state.facts(t.account).country
            and state.facts(t.account).country != facts.country
        ]
        pts = p5.points if len(abroad) >= p5.min_targets else 0
        found.append(
            _contribution(
                "cross_country",
                pts,
                "contacted {0} stranger minors in other countries",
                "{0} stranger minors in other countries",
                {"stranger_minors_abroad": len(abroad)},
                (len(abroad),),
            )
        )

    if s.fast_escalation.enabled:
        found.append(_escalation(state, actor, targets))

    if s.gifts_to_minors.enabled:
        p7 = s.gifts_to_minors
        gifted = 0
        gifts = 0
        if p7.from_minors or facts.age_band not in MINOR_BANDS:
            for target, pair in state._out.get(actor, {}).items():
                if not pair.gifts or not state.is_minor(target):
                    continue
                n = sum(
                    1
                    for g in pair.gifts
                    if state.mutual_connections(actor, target, g) <= s.max_mutuals
                )
                gifts += n
                gifted += 1 if n else 0
        pts = _points(gifted, p7.min_targets, p7.points, p7.points_per_extra, p7.max_points)
        found.append(
            _contribution(
                "gifts_to_minors",
                pts,
                "{0} gifts or payments to {1} minors it shares no connections with",
                "no gifts to unconnected minors",
                {"minors": gifted, "gifts": gifts},
                (gifts, gifted),
            )
        )

    if s.ban_evasion.enabled:
        shared_hashes = 0
        banned: set[str] = set()
        if not facts.banned:
            for h in facts.hashes:
                hit = {
                    a
                    for a in state._hash_accounts.get(h, ())
                    if a != actor and state.facts(a).banned
                }
                if hit:
                    shared_hashes += 1
                    banned |= hit
        pts = s.ban_evasion.points if banned else 0
        found.append(
            _contribution(
                "ban_evasion",
                pts,
                "shares {0} device or identifier hashes with {1} banned accounts",
                "shares no hash with a banned account",
                {"shared_hashes": shared_hashes, "banned_accounts": len(banned)},
                (shared_hashes, len(banned)),
            )
        )

    if s.stranger_conversation.enabled:
        found.append(_stranger_conversation(state, actor, facts.age_band, strangers))
    return found


def _stranger_conversation(
    state: RiskState, actor: str, actor_band: str, strangers: list[_Target]
) -> Contribution:
    """Conversations ``actor`` started with stranger minors that are still outside any
    connection: the pair is not connected now and shares at most ``max_mutuals`` connections
    now (a relative who then connects the parents, a coach whose player accepts, stop counting),
    the child did not write first, and both sides wrote (``min_messages``, ``min_replies``)."""
    s = state.settings
    p = s.stranger_conversation
    talks = replies_seen = 0
    for t in strangers:
        if not _gap(actor_band, state.facts(t.account).age_band, p.minor_band_gap):
            continue
        back = state._out.get(t.account, {}).get(actor)
        if back is None or back.first is None or back.first < t.first:
            continue  # no reply, or the child made the first contact
        sent = len(state._out[actor][t.account].messages)
        replies = len(back.messages)
        if replies < p.min_replies or sent + replies < p.min_messages:
            continue
        if state.connected(actor, t.account):
            continue
        if state.mutual_connections(actor, t.account) > s.max_mutuals:
            continue
        talks += 1
        replies_seen += replies
    pts = _points(talks, p.min_targets, p.points, p.points_per_extra, p.max_points)
    return _contribution(
        "stranger_conversation",
        pts,
        "a {0} account keeps up conversations it started with {1} much younger "
        "minors it is not connected to and shares no connections with ({2} replies)",
        "no conversation with a much younger minor outside any connection",
        {"minors": talks, "replies": replies_seen},
        (actor_band, talks, replies_seen),
    )


def _gap(actor_band: str, target_band: str, minor_gap: int) -> bool:
    if target_band not in _BAND_INDEX:
        return actor_band == "adult"  # an unknown-age target counted as a minor
    if actor_band == "adult":
        return True
    if actor_band in _BAND_INDEX:
        return _BAND_INDEX[actor_band] - _BAND_INDEX[target_band] >= minor_gap
    return False


def _escalation(state: RiskState, actor: str, targets: list[_Target]) -> Contribution:
    p = state.settings.fast_escalation
    window = state._escalation_window
    fast = 0
    kinds: dict[str, int] = {}
    pairs = state._out[actor] if targets else {}
    for t in targets:
        pair = pairs[t.account]
        if not pair.flags:
            continue
        hit = False
        for time, kind in pair.flags:
            if kind not in p.kinds:
                continue
            messages = bisect.bisect_right(pair.messages, time) - bisect.bisect_left(
                pair.messages, t.first
            )
            if messages <= p.within_messages or time - t.first <= window:
                hit = True
                kinds[kind] = kinds.get(kind, 0) + 1
        fast += hit
    pts = _points(fast, 1, p.points, p.points_per_extra, p.max_points)
    return _contribution(
        "fast_escalation",
        pts,
        "{0} within {1} messages or {2:g} min of first contact with {3} minors",
        "no fast escalation to minors",
        {"minors": fast, **{f"flags_{k}": n for k, n in sorted(kinds.items())}}
        if kinds
        else {"minors": fast},
        (", ".join(sorted(kinds)), p.within_messages, p.within_minutes, fast) if fast else (),
    )


def recompute(
    events: Iterable[Event], settings: RiskSettings | None = None
) -> dict[str, RiskResult]:
    """Every account's result from scratch over ``events`` (duplicates by id ignored)."""
    state = RiskState(settings)
    for event in sorted(events, key=lambda e: (e.time, e.event_id)):
        state.apply(event)
    return state.results()

"""Stream intake: the same events ``POST /v1/events`` takes, read from a log with consumer groups.

A :class:`Transport` is the small interface a log offers: read a batch for this consumer,
acknowledge entries (dead-lettering the poison ones), claim the entries a dead consumer left
pending, and deliver this consumer's unacknowledged entries again.
:class:`RedisStream` implements it on a Redis stream (``XREADGROUP``, ``XACK``, ``XAUTOCLAIM``,
``XADD`` to ``<stream>:dead``); a Kafka consumer would implement the same calls (poll,
commit offsets, partition rebalancing gives a dead consumer's partitions to another, a dead-letter
topic).

:class:`StreamConsumer` is the loop, the same for every transport:

1. read a batch (entries this consumer left unacknowledged first, then stale entries of dead
   consumers when a claim is due, then new ones);
2. decode each entry's ``event`` field (JSON) and validate it; an entry that cannot be decoded or
   validated is *poison*: it gets a per-event error and is dead-lettered, never retried;
3. hand the valid events, in stream order, to ``apply`` (the store's ingest), which commits them;
   events it refuses are recorded and dead-lettered like poison;
4. only then acknowledge every entry of the batch, dead-lettering the poison in the same step.
   A consumer killed before step 4 leaves its entries pending; another consumer claims them
   after ``claim_idle_ms`` and applies them again, which changes nothing for the events already
   committed (ingest is idempotent by event id). So nothing is lost and nothing is applied twice.

Order: a batch keeps stream order, so one consumer applies an account's events in the order they
were written. Entries claimed from a dead consumer are older than the ones read after them and are
applied in a batch of their own first. Across consumers sharing a group, an account's events may
be applied concurrently out of stream order; the contact state does not depend on the order it
sees events in (latest time wins for facts, ties by event id; risk is recomputed from the
events), so the result is the same as in stream order.

Events carry metadata and flags, never message text (see :mod:`bastion.contact.model`); a
dead-lettered entry keeps its raw payload for the operator to inspect, nothing more.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from bastion.contact.model import Event, EventError, parse_event

__all__ = [
    "CONSUMER_GC_THRESHOLDS",
    "EVENT_FIELD",
    "Apply",
    "BatchOutcome",
    "DeadLetter",
    "Delivery",
    "RedisStream",
    "StreamConsumer",
    "Transport",
    "decode",
    "ingest_apply",
    "tune_gc",
]

log = logging.getLogger(__name__)

#: The entry field holding one event as JSON.
EVENT_FIELD = "event"
#: The most bytes of an entry kept in its dead letter.
_DEAD_PAYLOAD_MAX = 64 * 1024
#: The cyclic garbage collector's thresholds in a consumer process (:func:`tune_gc`).
CONSUMER_GC_THRESHOLDS = (50_000, 20, 10)
#: The most per-entry errors :meth:`StreamConsumer.run` keeps in its totals (a long run would
#: otherwise grow without bound; the dead-letter stream has them all).
_KEEP_ERRORS = 1000


#: A poison entry and why it was refused.
DeadLetter = tuple["Delivery", tuple[dict[str, str], ...]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry as the transport delivered it: its position in the log and its raw payload
    (``None`` when the entry has no event field)."""

    position: str
    payload: bytes | None
    #: How many times the log has delivered it (claims included), where the log counts them.
    attempts: int = 1


class Transport(Protocol):
    """What the consumer loop needs from a log with consumer groups."""

    #: A name for logs and dead letters (``redis:<stream>/<group>/<consumer>``).
    name: str

    def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Up to ``count`` entries for this consumer: first those it was given earlier and has
        not acknowledged, then new ones (waiting up to ``block_ms`` when there are none)."""
        ...

    def claim_stale(self, min_idle_ms: int, count: int) -> list[Delivery]:
        """Up to ``count`` entries other consumers were given and have not acknowledged for
        ``min_idle_ms``, now given to this consumer (oldest first)."""
        ...

    def ack(self, positions: Sequence[str], dead: Sequence[DeadLetter] = ()) -> None:
        """Acknowledge entries (they are done and never delivered again), keeping the ``dead``
        ones, with why they were refused, where an operator can look at them. Both in one step
        where the log can (a Redis transaction), so a poison entry is kept once."""
        ...

    def redeliver(self) -> None:
        """Deliver this consumer's unacknowledged entries again on the next :meth:`read` (after
        a batch failed)."""
        ...

    def close(self) -> None: ...


#: Applies valid events in the order given and commits them before returning; returns an error
#: for each event it refused (``index`` into the sequence it was given). Raising leaves the whole
#: batch unacknowledged, to be read again.
Apply = Callable[[Sequence[Event]], Sequence[EventError]]


class _Result(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def errors(self) -> tuple[dict[str, str], ...]: ...


def ingest_apply(ingest: Callable[[Sequence[Event]], Sequence[_Result]]) -> Apply:
    """An :data:`Apply` over the store's ingest (``ContactStore.ingest``: one transaction per
    call, one result per event): its ``error`` results become the refused events."""

    def apply(events: Sequence[Event]) -> list[EventError]:
        refused = []
        for result in ingest(events):
            if result.status == "error":
                errors = result.errors or (
                    {"loc": "", "type": "refused", "msg": result.error or "refused"},
                )
                refused.append(
                    EventError(index=result.index, event_id=result.event_id, errors=errors)
                )
        return refused

    return apply


def decode(delivery: Delivery) -> Event | tuple[dict[str, str], ...]:
    """The entry's event, or the errors that make it poison."""
    if delivery.payload is None:
        return ({"loc": EVENT_FIELD, "type": "missing", "msg": "the entry has no event field"},)
    try:
        raw: Any = json.loads(delivery.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return ({"loc": EVENT_FIELD, "type": "json_invalid", "msg": str(exc)[:200]},)
    try:
        return parse_event(raw)
    except ValidationError as exc:
        return tuple(
            {
                "loc": ".".join(str(part) for part in err["loc"]),
                "type": err["type"],
                "msg": err["msg"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        )


@dataclass(slots=True)
class BatchOutcome:
    """What one batch did."""

    #: Entries delivered (claimed ones included).
    entries: int = 0
    #: Of those, entries claimed from another consumer.
    claimed: int = 0
    #: Valid events handed to ``apply``.
    applied: int = 0
    #: Entries dead-lettered: undecodable, invalid, or refused by ``apply``.
    poison: int = 0
    #: Why each poison entry was refused: ``(position, event_id or None, errors)``.
    errors: list[tuple[str, str | None, tuple[dict[str, str], ...]]] = field(default_factory=list)


@dataclass
class StreamConsumer:
    """The intake loop over any :class:`Transport` (see the module docstring)."""

    transport: Transport
    apply: Apply
    batch: int = 500
    block_ms: int = 1000
    #: An entry another consumer has held unacknowledged this long is claimed (its consumer is
    #: taken to be dead). Longer than the slowest batch, so a live consumer is not robbed.
    claim_idle_ms: int = 30_000
    #: How often to look for stale entries (seconds).
    claim_every_s: float = 5.0
    #: An entry delivered more often than this (its consumers keep dying on it) is poison.
    max_attempts: int = 10
    clock: Callable[[], float] = time.monotonic
    _next_claim: float = field(default=0.0, init=False)

    def poll(self) -> BatchOutcome:
        """Read one batch (stale entries first when a claim is due) and process it."""
        deliveries: list[Delivery] = []
        claimed = 0
        now = self.clock()
        if now >= self._next_claim:
            deliveries = self.transport.claim_stale(self.claim_idle_ms, self.batch)
            claimed = len(deliveries)
            if len(deliveries) < self.batch:  # none left: look again later
                self._next_claim = now + self.claim_every_s
        if not deliveries:
            deliveries = self.transport.read(self.batch, self.block_ms)
        outcome = self.process(deliveries)
        outcome.claimed = claimed
        return outcome

    def process(self, deliveries: Sequence[Delivery]) -> BatchOutcome:
        """Apply a batch, dead-letter its poison, then acknowledge all of it (in that order: an
        entry is acknowledged only after its effects are committed)."""
        outcome = BatchOutcome(entries=len(deliveries))
        if not deliveries:
            return outcome
        events: list[Event] = []
        sources: list[Delivery] = []
        poison: list[tuple[Delivery, str | None, tuple[dict[str, str], ...]]] = []
        for delivery in deliveries:
            if delivery.attempts > self.max_attempts:
                errors: tuple[dict[str, str], ...] = (
                    {
                        "loc": EVENT_FIELD,
                        "type": "too_many_deliveries",
                        "msg": f"delivered {delivery.attempts} times without being acknowledged",
                    },
                )
                poison.append((delivery, _event_id(delivery.payload), errors))
                continue
            decoded = decode(delivery)
            if isinstance(decoded, tuple):
                poison.append((delivery, _event_id(delivery.payload), decoded))
            else:
                events.append(decoded)
                sources.append(delivery)
        refused = 0
        if events:
            try:
                refusals = self.apply(events)
            except BaseException:
                self.transport.redeliver()  # the batch stays pending: read it again next
                raise
            for err in refusals:
                poison.append((sources[err.index], events[err.index].event_id, err.errors))
                refused += 1
            outcome.applied = len(events) - refused
        for delivery, event_id, errors in poison:
            outcome.errors.append((delivery.position, event_id, errors))
            log.warning(
                "%s: entry %s (event %s) refused and dead-lettered: %s",
                self.transport.name,
                delivery.position,
                event_id,
                "; ".join(f"{e.get('loc')}: {e.get('msg')}" for e in errors),
            )
        outcome.poison = len(poison)
        self.transport.ack(
            [d.position for d in deliveries], [(delivery, errors) for delivery, _, errors in poison]
        )
        return outcome

    def run(
        self,
        stop: Callable[[], bool] = lambda: False,
        until_idle: bool = False,
        on_batch: Callable[[BatchOutcome], None] | None = None,
        retry_s: float = 1.0,
    ) -> BatchOutcome:
        """Poll until ``stop()`` says so (checked between batches: a batch in flight finishes),
        or, with ``until_idle``, until neither a read nor a claim of stale entries finds
        anything. A failing ``apply`` (the database unreachable) leaves its batch pending; the
        loop waits ``retry_s`` and reads it again. Returns the totals."""
        total = BatchOutcome()
        while not stop():
            try:
                outcome = self.poll()
                if until_idle and not outcome.entries:
                    self._next_claim = 0.0  # one last look for stale entries
                    outcome = self.poll()
            except Exception:
                if until_idle:
                    raise
                log.exception("%s: batch failed; it stays pending for a retry", self.transport.name)
                time.sleep(retry_s)
                continue
            total.entries += outcome.entries
            total.claimed += outcome.claimed
            total.applied += outcome.applied
            total.poison += outcome.poison
            total.errors.extend(outcome.errors[: max(0, _KEEP_ERRORS - len(total.errors))])
            if on_batch is not None and outcome.entries:
                on_batch(outcome)
            if until_idle and not outcome.entries:
                break
        return total


def tune_gc() -> None:
    """Collect the young generation after 50,000 allocations instead of 700, for a process that
    consumes a stream (``bastion events consume``). The risk state it keeps grows with the
    events (hundreds of thousands of containers), and at the default thresholds Python walks
    all of it in a full collection every few batches: a quarter to a third of the consumer's
    CPU in ``benchmarks/bench_stream.py``. Cycles are still collected, later; only the process that
    runs the consumer loop calls this (it changes the whole interpreter)."""
    gc.set_threshold(*CONSUMER_GC_THRESHOLDS)


def _event_id(payload: bytes | None) -> str | None:
    """The event id of an undecodable entry, when it can be found at all (for the error)."""
    if payload is None:
        return None
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    candidate = raw.get("event_id") if isinstance(raw, dict) else None
    return candidate if isinstance(candidate, str) and len(candidate) <= 128 else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStream:
    """A Redis stream read through a consumer group (created, with the stream, when missing).

    Entries hold one event each, as JSON in the ``event`` field (:meth:`publish` writes them so).
    Poison entries go to ``<stream>:dead`` with the original entry id, the errors and the
    consumer that refused them."""

    def __init__(
        self,
        url: str,
        stream: str,
        group: str,
        consumer: str,
        *,
        dead_stream: str | None = None,
        dead_maxlen: int = 100_000,
    ) -> None:
        import redis

        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_stream = dead_stream or f"{stream}:dead"
        self.dead_maxlen = dead_maxlen
        self.name = f"redis:{stream}/{group}/{consumer}"
        self.redis: Any = redis.Redis.from_url(url, decode_responses=False)
        #: Read this consumer's own pending entries (id "0") before new ones (">"): after a
        #: restart under the same name, or a batch that failed.
        self._backlog = True
        self._claim_cursor = "0-0"
        self.ensure_group()

    def ensure_group(self) -> None:
        import redis

        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _deliveries(self, entries: Sequence[Any]) -> list[Delivery]:
        out = []
        for entry_id, fields in entries:
            payload = fields.get(EVENT_FIELD.encode()) if fields else None
            out.append(Delivery(_text(entry_id), payload))
        return out

    def read(self, count: int, block_ms: int) -> list[Delivery]:
        if self._backlog:
            reply = self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: "0"}, count=count
            )
            entries = reply[0][1] if reply else []
            if entries:
                return self._deliveries(entries)
            self._backlog = False
        reply = self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms or None
        )
        return self._deliveries(reply[0][1]) if reply else []

    def claim_stale(self, min_idle_ms: int, count: int) -> list[Delivery]:
        cursor, entries, *_ = self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        self._claim_cursor = _text(cursor)
        # Entries deleted from the stream while pending come back as None (Redis 6.2).
        claimed = self._deliveries([e for e in entries if e is not None and e[1] is not None])
        if not claimed:
            return claimed
        counts = {
            _text(p["message_id"]): int(p["times_delivered"])
            for p in self.redis.xpending_range(
                self.stream,
                self.group,
                min=claimed[0].position,
                max=claimed[-1].position,
                count=len(claimed) + 1000,  # its own in between too
                consumername=self.consumer,
            )
        }
        return [Delivery(d.position, d.payload, counts.get(d.position, 1)) for d in claimed]

    def ack(self, positions: Sequence[str], dead: Sequence[DeadLetter] = ()) -> None:
        if not positions:
            return
        pipe = self.redis.pipeline(transaction=True)
        for delivery, errors in dead:
            pipe.xadd(
                self.dead_stream,
                {
                    EVENT_FIELD: (delivery.payload or b"")[:_DEAD_PAYLOAD_MAX],
                    "source_id": delivery.position,
                    "errors": json.dumps(list(errors), separators=(",", ":")),
                    "consumer": self.name,
                    "at": str(time.time()),
                },
                maxlen=self.dead_maxlen,
                approximate=True,
            )
        pipe.xack(self.stream, self.group, *positions)
        pipe.execute()

    def redeliver(self) -> None:
        self._backlog = True

    def publish(self, payloads: Sequence[bytes | str], chunk: int = 1000) -> list[str]:
        """Append events (JSON each) to the stream in order; returns their entry ids."""
        ids: list[str] = []
        for start in range(0, len(payloads), chunk):
            pipe = self.redis.pipeline(transaction=False)
            for payload in payloads[start : start + chunk]:
                pipe.xadd(self.stream, {EVENT_FIELD: payload})
            ids.extend(_text(i) for i in pipe.execute())
        return ids

    def pending(self) -> int:
        """Entries of the group delivered and not yet acknowledged (all consumers)."""
        return int(self.redis.xpending(self.stream, self.group)["pending"])

    def close(self) -> None:
        self.redis.close()

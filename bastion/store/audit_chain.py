"""The audit chain's records and their verification: what a record is (:class:`AuditEvent`), how
its hash is computed (:func:`audit_hash`) and the walk that checks a whole log
(:class:`ChainWalk`, used by :meth:`~bastion.store.audit.AuditLog.check_audit_chain`)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Row,
)

from bastion.audit_keys import AuditKeyring
from bastion.store.errors import (
    AuditKeyUnavailable,
)

#: prev_hash of the first audit row (also the head's hash while the log is empty).
AUDIT_GENESIS = "0" * 64


#: The action of the record that starts a new audit key's epoch (:meth:`Store.rotate_audit_key`).
AUDIT_ROTATE_ACTION = "audit.rotate-key"


#: Domain tag in front of every keyed record's HMAC input.
_AUDIT_HMAC_TAG = b"bastion/audit/v2\x00"


#: Audit keys this process has loaded, by key id, so :func:`audit_hash` can recompute a keyed
#: record's hash (as tests and tools do) without being handed the key.
LOADED_AUDIT_KEYS: dict[str, bytes] = {}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit log row. ``hash`` chains it to the row before; see :meth:`Store.record_audit`."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    remote_addr: str | None
    prev_hash: str
    hash: str
    #: The audit key the record is chained under (HMAC-SHA256); None for a legacy record chained
    #: with the old unkeyed SHA-256 before the upgrade.
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """What :meth:`Store.check_audit_chain` found. ``checked`` counts the records verified intact
    (all of them when ``ok``); ``head_id`` and ``head_hash`` are what the head row says the log
    ends with. On a problem, ``kind`` is one of ``edited``, ``deleted``, ``reordered``,
    ``unlinked``, ``inserted``, ``truncated``, ``head``, ``extra``, ``unkeyed`` (a record
    chained without a key where the audit key file accepts none) or ``key`` (a record under a
    key the file lacks, or a key change without a rotation record); ``record_id`` is the first
    record concerned; ``missing`` is the (first, last) id missing for ``deleted`` and
    ``truncated``; ``problem`` says it all in one sentence. ``legacy`` counts the verified
    records chained before the upgrade without a key; ``key_id`` is the key the log's last
    verified record is chained under."""

    ok: bool
    checked: int
    head_id: int
    head_hash: str
    problem: str | None = None
    kind: str | None = None
    record_id: int | None = None
    missing: tuple[int, int] | None = None
    legacy: int = 0
    key_id: str | None = None


def remember_audit_keys(ring: AuditKeyring) -> None:
    for key in ring.keys:
        LOADED_AUDIT_KEYS[key.key_id] = key.secret


def canon_numbers(value: Any) -> Any:
    """Floats, and ints beyond 2**53, as float reprs: PostgreSQL's jsonb may hand ``1e300`` back
    as a 301-digit integer, which is the same number but not the same JSON text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) or (isinstance(value, int) and abs(value) > 2**53):
        return {"$float": repr(float(value))}
    if isinstance(value, dict):
        return {k: canon_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canon_numbers(v) for v in value]
    return value


def audit_hash(event: AuditEvent, key: bytes | None = None) -> str:
    """The chain hash of ``event``, as hex.

    Keyed (``event.key_id`` set): HMAC-SHA256 under that audit key (``key``, else the one this
    process loaded under that id) of a domain tag, ``prev_hash`` and the canonical JSON of the
    event's other fields, the key id included. Legacy (no key id): sha256(prev_hash + canonical
    JSON), as records were chained before the audit key; ``key`` is then ignored."""
    body = {
        "id": event.id,
        "at": event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "detail": canon_numbers(event.detail),
        "remote_addr": event.remote_addr,
    }
    if event.key_id is None:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256((event.prev_hash + text).encode("utf-8")).hexdigest()
    if key is None:
        key = LOADED_AUDIT_KEYS.get(event.key_id)
        if key is None:
            raise AuditKeyUnavailable(f"audit key {event.key_id} is not loaded in this process")
    body["key_id"] = event.key_id
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = _AUDIT_HMAC_TAG + (event.prev_hash + text).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def to_audit(r: Row[Any]) -> AuditEvent:
    return AuditEvent(
        id=r.id,
        at=r.at,
        actor=r.actor,
        action=r.action,
        target=r.target,
        detail=dict(r.detail or {}),
        remote_addr=r.remote_addr,
        prev_hash=r.prev_hash,
        hash=r.hash,
        key_id=r.key_id,
    )


#: How far either side of a row the check looks for the id its contents were written under.
_MOVE_SEARCH = 1000


class ChainWalk:
    """The state of :meth:`Store.check_audit_chain` as it reads rows in id order."""

    def __init__(
        self,
        head_id: int,
        head_hash: str,
        ring: AuditKeyring | None = None,
        head_key: str | None = None,
        key_file: str = "",
    ) -> None:
        self.head_id, self.head_hash = head_id, head_hash
        self.expected, self.prev, self.checked = 1, AUDIT_GENESIS, 0
        self.ring, self.head_key, self.key_file = ring, head_key, key_file
        #: The key the last verified record is chained under, and how many were unkeyed.
        self.key: str | None = None
        self.legacy = 0

    def fail(
        self, kind: str, record_id: int | None, problem: str, missing: tuple[int, int] | None = None
    ) -> AuditCheck:
        return AuditCheck(
            ok=False,
            checked=self.checked,
            head_id=self.head_id,
            head_hash=self.head_hash,
            problem=problem,
            kind=kind,
            record_id=record_id,
            missing=missing,
            legacy=self.legacy,
            key_id=self.key,
        )

    def _key_for(self, event: AuditEvent) -> tuple[bytes | None, AuditCheck | None]:
        """The secret to check ``event`` with (None for a legacy record), or the problem that
        its key, or its lack of one, is."""
        rid, ring = event.id, self.ring
        if event.key_id is None:
            if self.key is not None:
                return None, self.fail(
                    "unkeyed",
                    rid,
                    f"record {rid} is chained without a key after keyed records: it was "
                    "rewritten by someone without the audit key",
                )
            if ring is not None and (ring.legacy is None or rid > ring.legacy.last_id):
                upto = (
                    f"after record {ring.legacy.last_id}" if ring.legacy is not None else "at all"
                )
                return None, self.fail(
                    "unkeyed",
                    rid,
                    f"record {rid} is chained without a key, but the audit key file accepts no "
                    f"unkeyed records {upto}: the log was rewritten by someone without the "
                    "audit key (or written by a Bastion older than the audit key)",
                )
            return None, None
        if ring is None:
            return None, self.fail(
                "key",
                rid,
                f"record {rid} is chained under audit key {event.key_id}, but there is no "
                f"audit key file at {self.key_file!r} to check it with",
            )
        secret = ring.secret(event.key_id)
        if secret is None:
            return None, self.fail(
                "key",
                rid,
                f"record {rid} is chained under audit key {event.key_id}, which the audit key "
                f"file {self.key_file!r} does not hold",
            )
        if self.key is not None and event.key_id != self.key:
            detail = event.detail
            old, new = ring.position(self.key), ring.position(event.key_id)
            if not (
                event.action == AUDIT_ROTATE_ACTION
                and detail.get("from") == self.key
                and detail.get("to") == event.key_id
                and old is not None
                and new is not None
                and new > old
            ):
                return None, self.fail(
                    "key",
                    rid,
                    f"record {rid} is chained under audit key {event.key_id} but record "
                    f"{rid - 1} under {self.key}, with no rotation to a newer key between "
                    "them: records were forged with an old or foreign key",
                )
        return secret, None

    def step(self, row: Row[Any]) -> AuditCheck | None:
        rid, expected = row.id, self.expected
        if not isinstance(rid, int) or isinstance(rid, bool) or rid < expected:
            # Ids are unique and sorted, so only a non-number or one below 1 can come first.
            return self.fail(
                "inserted",
                rid if isinstance(rid, int) else None,
                f"a record with id {rid!r} was inserted: ids start at 1",
            )
        if rid > expected:
            where = f"jumps from record {expected - 1}" if expected > 1 else "starts"
            span = _span(expected, rid - 1)
            return self.fail(
                "deleted",
                expected,
                f"{span} missing (deleted): the log {where} to record {rid}",
                (expected, rid - 1),
            )
        try:
            event = _raw_audit(row)
        except (ValueError, TypeError) as exc:
            return self.fail("edited", rid, f"record {rid} was edited: {exc}")
        secret, key_problem = self._key_for(event)
        if key_problem is not None:
            return key_problem
        if audit_hash(event, secret) != event.hash:
            moved = _written_as(event, self.head_id, secret)
            if moved is not None:
                return self.fail(
                    "reordered",
                    rid,
                    f"record {rid} holds the event written as record {moved}: records were "
                    "reordered, or inserted or deleted with the ids renumbered",
                )
            return self.fail(
                "edited", rid, f"record {rid} was edited: its contents do not match its hash"
            )
        if event.prev_hash != self.prev:
            if rid == 1:
                problem = (
                    "record 1 does not start the chain: its prev_hash is not the genesis hash, "
                    "so records were inserted or reordered before it"
                )
            else:
                problem = (
                    f"record {rid} does not follow record {rid - 1}: its prev_hash is not "
                    f"record {rid - 1}'s hash, so record {rid - 1} was replaced, or records "
                    f"were inserted or reordered between ids {rid - 1} and {rid}"
                )
            return self.fail("unlinked", rid, problem)
        legacy = self.ring.legacy if self.ring is not None else None
        if legacy is not None and rid == legacy.last_id and event.hash != legacy.last_hash:
            return self.fail(
                "edited",
                rid,
                f"records 1-{rid}, chained without a key before the upgrade, were rewritten: "
                f"record {rid}'s hash is not the one the audit key file recorded",
            )
        self.checked += 1
        self.expected, self.prev = rid + 1, event.hash
        self.key = event.key_id
        self.legacy += event.key_id is None
        return None

    def finish(self) -> AuditCheck | None:
        last = self.expected - 1
        if last < self.head_id:
            missing = (self.expected, self.head_id)
            return self.fail(
                "truncated",
                self.expected,
                f"the log ends at record {last} but the head says it ends at record "
                f"{self.head_id}: {_span(*missing)} missing (deleted from the end)",
                missing,
            )
        if self.prev != self.head_hash:
            return self.fail(
                "head",
                last or None,
                f"the head's hash does not match record {last}'s: record {last} was replaced "
                "(with records after it deleted), or the head row was altered",
            )
        legacy = self.ring.legacy if self.ring is not None else None
        if legacy is not None and last < legacy.last_id:
            missing = (last + 1, legacy.last_id)
            return self.fail(
                "truncated",
                last + 1,
                f"the log ends at record {last} but held {legacy.last_id} records when the "
                f"audit key file was created: {_span(*missing)} missing (deleted from the end)",
                missing,
            )
        if self.head_key != self.key:
            return self.fail(
                "head",
                last or None,
                f"the head names audit key {self.head_key} but record {last} is chained under "
                f"{self.key}: the head row was altered",
            )
        return None


def _span(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first}-{last} are"


def _raw_audit(r: Row[Any]) -> AuditEvent:
    """An event from a row read with ``at`` (SQLite) and ``detail`` as raw text; ValueError
    saying which field cannot be read."""
    at = r.at
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise ValueError(f"its time {at[:40]!r} is not a timestamp") from None
    if not isinstance(at, datetime):
        raise ValueError("its time is not a timestamp")
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    try:
        detail = json.loads(r.detail) if isinstance(r.detail, str) else r.detail
    except ValueError:
        raise ValueError("its detail is not valid JSON") from None
    if not isinstance(detail, dict):
        raise ValueError("its detail is not a JSON object")
    for name in ("actor", "action", "target", "prev_hash", "hash"):
        if not isinstance(getattr(r, name), str):
            raise ValueError(f"its {name} is not text")
    for name in ("remote_addr", "key_id"):
        if getattr(r, name) is not None and not isinstance(getattr(r, name), str):
            raise ValueError(f"its {name} is not text")
    return AuditEvent(
        id=r.id,
        at=at,
        actor=r.actor,
        action=r.action,
        target=r.target,
        detail=detail,
        remote_addr=r.remote_addr,
        prev_hash=r.prev_hash,
        hash=r.hash,
        key_id=r.key_id,
    )


def _written_as(event: AuditEvent, last_id: int, key: bytes | None) -> int | None:
    """The id under which ``event``'s fields hash to its hash, when that is not its own id (a
    row moved to another id), searching nearby ids; None when it was edited instead."""
    low, high = max(1, event.id - _MOVE_SEARCH), min(last_id, event.id + _MOVE_SEARCH)
    for other in sorted(range(low, high + 1), key=lambda i: abs(i - event.id)):
        if other != event.id and audit_hash(replace(event, id=other), key) == event.hash:
            return other
    return None

"""Publishing banks as Bastion-to-Bastion feeds: signing key, feeds, signed versions, disputes.

A feed shares selected banks with other Bastions. Every record it serves is signed with this
instance's Ed25519 key (:mod:`bastion.feeds`); each version is a signed statement of the Merkle
root of the feed's add records at one store revision, computed from one consistent snapshot (the
revision and the entries read in one read transaction). Subscribers send disputes (false
positives) and confirmations back; every subscriber sees how many each record has.

The private key is sealed with the master key (AAD ``feed-signing-key``); only its public half
and fingerprint are stored in the clear. Records are built from the bank entries on request,
not stored twice: a record's key is its entry id, which is never reused.
"""

from __future__ import annotations

import builtins
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, case, func, insert, select
from sqlalchemy.exc import IntegrityError

from bastion.accounts.rows import ApiKeyRow
from bastion.banks.model import BANK_NAME_RE, utcnow, validate_bank_name
from bastion.banks.sql import banks_t, entries_t, tomb_t, value_hash
from bastion.crypto import CryptoError, MasterKey, seal, unseal
from bastion.feeds import (
    AddRecord,
    RemoveRecord,
    SigningKey,
    VerifyKey,
    VersionStatement,
    add_record,
    leaf_hash,
)
from bastion.feeds.merkle import root_of_leaves
from bastion.feeds.records import Record
from bastion.feeds.rows import FeedFeedbackRow, FeedKeyGrantRow, FeedKeyRow, FeedRow, FeedVersionRow
from bastion.keys import ADMIN, validate_key_name
from bastion.store.audit import append_audit
from bastion.store.bulk import keyset_page
from bastion.store.errors import InvalidInput, KeyNotFound, StoreError
from bastion.store.tables import state_t

if TYPE_CHECKING:
    from bastion.db import Store

keys_t = FeedKeyRow.__table__
feeds_t = FeedRow.__table__
versions_t = FeedVersionRow.__table__
feedback_t = FeedFeedbackRow.__table__
grants_t = FeedKeyGrantRow.__table__
api_keys_t = ApiKeyRow.__table__

KEY_AAD = b"feed-signing-key"
DISPUTE = "dispute"
CONFIRM = "confirm"
KINDS = (DISPUTE, CONFIRM)
#: The API key scope of subscribers; such a key reads only the feeds granted to it.
FEED_SCOPE = "feed"
MAX_PAGE = 5000
_REASON_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
_KEY_RE = re.compile(r"^[1-9][0-9]{0,18}$")

#: A records cursor: after every change of a revision (int), or after (revision, entry id).
Cursor = int | tuple[int, int]


class FeedNotFound(StoreError):
    pass


class FeedExists(StoreError):
    pass


class RecordNotFound(StoreError):
    """Feedback about a key the feed never published (or whose entry is gone)."""


class FeedKeyUnavailable(StoreError):
    """No master key, or the sealed signing key does not open with it."""


@dataclass(frozen=True, slots=True)
class Feed:
    id: int
    name: str
    description: str
    organisation: str
    banks: list[str]
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """A signed version: ``statement`` is the canonical text ``signature`` covers."""

    feed: str
    version: int
    revision: int
    root: str
    count: int
    statement: str
    signature: str
    key_fingerprint: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One signed record as served: ``record`` is the canonical text ``sig`` covers. The
    counts are outside the signed part (they change as subscribers report)."""

    key: str
    op: str
    record: str
    sig: str
    revision: int
    disputes: int = 0
    confirmations: int = 0


@dataclass(frozen=True, slots=True)
class RecordsPage:
    records: list[FeedRecord]
    #: Cursor for the next page; None once every change up to ``upto`` was served.
    next: Cursor | None
    upto: int
    #: No change to the feed's banks after ``upto``: the records up to it are the current list.
    complete: bool


@dataclass(frozen=True, slots=True)
class KeyFeedback:
    """A record whose feedback changed: its counts, and its current signed record when the
    entry is published and unchanged since ``upto`` (so a subscriber may refresh its copy)."""

    key: str
    disputes: int
    confirmations: int
    last_id: int
    record: FeedRecord | None


@dataclass(frozen=True, slots=True)
class FeedGrant:
    """API key ``key`` (public id ``key_id``) may read feed ``feed``."""

    key: str
    key_id: str
    feed: str
    granted_by: str
    granted_at: datetime


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    id: int
    key: str
    subscriber: str
    kind: str
    reason: str
    created_at: datetime


def format_cursor(cursor: Cursor) -> str:
    return str(cursor) if isinstance(cursor, int) else f"{cursor[0]}.{cursor[1]}"


def parse_cursor(text: str | None) -> Cursor:
    """``""``/None (from the start), ``"R"`` (after revision R) or ``"R.ID"``."""
    text = (text or "").strip()
    if not text:
        return 0
    rev, dot, entry = text.partition(".")
    try:
        r = int(rev)
        cursor: Cursor = (r, int(entry)) if dot else r
    except ValueError:
        raise InvalidInput(f"invalid cursor {text[:40]!r}: expected R or R.ID") from None
    if r < 0 or r >= 2**63 or (dot and not 0 <= int(entry) < 2**63):
        raise InvalidInput(f"invalid cursor {text[:40]!r}: out of range")
    return cursor


class FeedGrants:
    """Which subscriber API keys read which feeds: the access half of :class:`FeedStore`.
    A ``feed``-scoped key reads only the feeds granted to it; an admin key reads every feed."""

    store: Store

    def authorize(self, name: str, key: str, scopes: Iterable[str]) -> None:
        """Raise :class:`FeedNotFound` unless API key ``key`` (holding ``scopes``) may read feed
        ``name``: an admin key reads every feed, a feed key the feeds granted to it. A feed the
        key was not granted gets the very answer of a feed that does not exist, so a key cannot
        learn which other feeds this instance publishes."""
        with self.store.engine.connect() as conn:
            feed = _require_feed(conn, name)
            if ADMIN in set(scopes):
                return
            granted = conn.execute(
                select(grants_t.c.feed_id).where(
                    grants_t.c.feed_id == feed.id, grants_t.c.key_id.in_(_key_ids(key))
                )
            ).first()
        if granted is None:
            raise FeedNotFound(f"no feed named {str(name)[:64]!r}")

    def grant(
        self,
        key: str,
        feeds: Sequence[str],
        *,
        actor: str = "system",
        remote_addr: str | None = None,
    ) -> list[str]:
        """Let API key ``key`` read ``feeds`` and send feedback on them. The key must hold the
        ``feed`` scope and not be revoked, and every feed must exist. Returns the feeds newly
        granted (a grant held already stays as it was); each is audited (``feed.grant``) in the
        transaction that makes it."""
        names = sorted({_feed_name(f) for f in feeds})
        if not names:
            raise InvalidInput("name at least one feed to grant")
        for _attempt in range(3):
            try:
                with self.store.begin_write() as conn:
                    row = _grantee(conn, key)
                    scopes = set(row.scopes or ())
                    if row.revoked_at is not None:
                        raise InvalidInput(f"API key {row.name!r} is revoked")
                    if FEED_SCOPE not in scopes:
                        why = (
                            "an admin key reads every feed without grants"
                            if ADMIN in scopes
                            else f"it lacks the {FEED_SCOPE!r} scope"
                        )
                        raise InvalidInput(f"cannot grant feeds to API key {row.name!r}: {why}")
                    wanted = [_require_feed(conn, n) for n in names]
                    held = set(
                        conn.execute(
                            select(grants_t.c.feed_id).where(grants_t.c.key_id == row.id)
                        ).scalars()
                    )
                    made = []
                    for feed in wanted:
                        if feed.id in held:
                            continue
                        conn.execute(
                            insert(grants_t).values(
                                key_id=row.id,
                                feed_id=feed.id,
                                granted_by=actor,
                                granted_at=utcnow(),
                            )
                        )
                        append_audit(
                            conn,
                            actor=actor,
                            action="feed.grant",
                            target=feed.name,
                            detail={"key": row.name, "key_id": row.key_id},
                            remote_addr=remote_addr,
                        )
                        made.append(feed.name)
                return made
            except IntegrityError:
                continue  # the same grant made at the same moment: read again
        raise StoreError("the grant kept conflicting with concurrent changes; retry")

    def revoke_grant(
        self,
        key: str,
        feeds: Sequence[str],
        *,
        actor: str = "system",
        remote_addr: str | None = None,
    ) -> list[str]:
        """Take ``feeds`` away from API key ``key``: its next request to them is answered as if
        they did not exist. Returns the feeds whose grant went (each audited,
        ``feed.grant.revoke``); a feed the key was not granted changes nothing."""
        names = sorted({_feed_name(f) for f in feeds})
        if not names:
            raise InvalidInput("name at least one feed to revoke")
        with self.store.begin_write() as conn:
            row = _grantee(conn, key)
            wanted = [_require_feed(conn, n) for n in names]
            gone = []
            for feed in wanted:
                deleted = conn.execute(
                    grants_t.delete().where(
                        grants_t.c.key_id == row.id, grants_t.c.feed_id == feed.id
                    )
                ).rowcount
                if deleted:
                    append_audit(
                        conn,
                        actor=actor,
                        action="feed.grant.revoke",
                        target=feed.name,
                        detail={"key": row.name, "key_id": row.key_id},
                        remote_addr=remote_addr,
                    )
                    gone.append(feed.name)
        return gone

    def grants(self, *, key: str | None = None, feed: str | None = None) -> list[FeedGrant]:
        """Grants by feed and key name, of one key or one feed (which must exist) or all."""
        stmt = (
            select(
                api_keys_t.c.name,
                api_keys_t.c.key_id,
                feeds_t.c.name.label("feed"),
                grants_t.c.granted_by,
                grants_t.c.granted_at,
            )
            .join(api_keys_t, api_keys_t.c.id == grants_t.c.key_id)
            .join(feeds_t, feeds_t.c.id == grants_t.c.feed_id)
            .order_by(feeds_t.c.name, api_keys_t.c.name)
        )
        with self.store.engine.connect() as conn:
            if key is not None:
                stmt = stmt.where(api_keys_t.c.id == _grantee(conn, key).id)
            if feed is not None:
                stmt = stmt.where(feeds_t.c.id == _require_feed(conn, feed).id)
            rows = conn.execute(stmt).all()
        return [FeedGrant(r.name, r.key_id, r.feed, r.granted_by, r.granted_at) for r in rows]

    def ungranted_keys(self) -> list[str]:
        """Names of unrevoked keys with the ``feed`` scope and no grant: they read no feed (such
        as the feed keys made before grants existed, until an operator grants them)."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                select(api_keys_t.c.name, api_keys_t.c.scopes)
                .where(
                    api_keys_t.c.revoked_at.is_(None),
                    ~api_keys_t.c.id.in_(select(grants_t.c.key_id)),
                )
                .order_by(api_keys_t.c.name)
            ).all()
        return [r.name for r in rows if FEED_SCOPE in (r.scopes or ()) and ADMIN not in r.scopes]


class FeedStore(FeedGrants):
    """Feeds of one Bastion instance. Anything that signs (versions, records) needs the master
    key; with ``master_key`` None it raises :class:`FeedKeyUnavailable`, while listing feeds and
    recording feedback still work. ``actor`` is who a signing key made on first use is audited
    as (the CLI passes ``cli:<user>``)."""

    def __init__(
        self,
        store: Store,
        master_key: MasterKey | None,
        settings: Any = None,
        *,
        actor: str = "system",
    ) -> None:
        self.store = store
        self.master_key = master_key
        self.actor = actor
        self.default_organisation = str(getattr(settings, "feed_organisation", "") or "")
        self._key: SigningKey | None = None
        self._lock = threading.Lock()

    # -- the signing key -----------------------------------------------------------------------

    def signing_key(self) -> SigningKey:
        """This instance's feed key, generated (and audited) on first use."""
        with self._lock:
            if self._key is None:
                self._key = self._load_or_create_key()
            return self._key

    def public_key(self) -> VerifyKey:
        return self.signing_key().public

    def has_signing_key(self) -> bool:
        """Whether this instance has made its feed key (sealed under some master key)."""
        with self.store.engine.connect() as conn:
            return conn.execute(select(keys_t.c.id).where(keys_t.c.id == 1)).first() is not None

    def _load_or_create_key(self) -> SigningKey:
        if self.master_key is None:
            raise FeedKeyUnavailable("the feed signing key needs the master key (secret_key)")
        with self.store.engine.connect() as conn:
            row = conn.execute(select(keys_t).where(keys_t.c.id == 1)).first()
        if row is None:
            fresh = SigningKey.generate()
            try:
                with self.store.begin_write() as conn:
                    conn.execute(
                        insert(keys_t).values(
                            id=1,
                            public_key=fresh.public.text,
                            fingerprint=fresh.public.fingerprint,
                            sealed_private=seal(self.master_key, fresh.raw(), KEY_AAD),
                            created_at=utcnow(),
                        )
                    )
                    append_audit(
                        conn,
                        actor=self.actor,
                        action="feed.key.create",
                        target=fresh.public.fingerprint,
                    )
            except IntegrityError:
                pass  # another process created it first: use theirs
            with self.store.engine.connect() as conn:
                row = conn.execute(select(keys_t).where(keys_t.c.id == 1)).one()
        try:
            key = SigningKey.from_raw(unseal(self.master_key, row.sealed_private, KEY_AAD))
        except (CryptoError, ValueError) as exc:
            raise FeedKeyUnavailable(f"the feed signing key does not open: {exc}") from None
        if key.public.text != row.public_key:
            raise FeedKeyUnavailable("the feed signing key does not match its public key")
        return key

    # -- feeds ---------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        banks: Sequence[str],
        *,
        description: str = "",
        organisation: str | None = None,
        actor: str = "system",
    ) -> Feed:
        """Publish ``banks`` (which must exist) as feed ``name``."""
        name = _feed_name(name)
        bank_names = sorted({_bank(b) for b in banks})
        if not bank_names:
            raise InvalidInput("a feed publishes at least one bank (--bank)")
        org = (organisation if organisation is not None else self.default_organisation).strip()
        if not org or len(org) > 255 or "\x00" in org:
            raise InvalidInput(
                "name the publishing organisation (1-255 characters): --organisation, or the "
                "feed_organisation setting"
            )
        if not isinstance(description, str) or len(description) > 2000:
            raise InvalidInput("description must be text of at most 2000 characters")
        now = utcnow()
        try:
            with self.store.begin_write() as conn:
                known = set(
                    conn.execute(
                        select(banks_t.c.name).where(banks_t.c.name.in_(bank_names))
                    ).scalars()
                )
                missing = [b for b in bank_names if b not in known]
                if missing:
                    raise InvalidInput(f"no bank named {', '.join(map(repr, missing))}")
                if _feed_row(conn, name) is not None:
                    raise FeedExists(f"feed {name!r} already exists")
                conn.execute(
                    insert(feeds_t).values(
                        name=name,
                        description=description,
                        organisation=org,
                        banks=bank_names,
                        created_by=actor,
                        created_at=now,
                        updated_at=now,
                    )
                )
                append_audit(
                    conn,
                    actor=actor,
                    action="feed.create",
                    target=name,
                    detail={"banks": bank_names, "organisation": org},
                )
        except IntegrityError:
            raise FeedExists(f"feed {name!r} already exists") from None
        return self.get(name)

    def get(self, name: str) -> Feed:
        with self.store.engine.connect() as conn:
            return _to_feed(_require_feed(conn, name))

    def list(self, *, readable_by: str | None = None) -> list[Feed]:
        """Every feed, or with ``readable_by`` only those granted to that API key."""
        stmt = select(feeds_t).order_by(feeds_t.c.name)
        if readable_by is not None:
            stmt = stmt.where(feeds_t.c.id.in_(_granted_ids(readable_by)))
        with self.store.engine.connect() as conn:
            return [_to_feed(r) for r in conn.execute(stmt)]

    def remove(self, name: str, *, actor: str = "system") -> None:
        """Stop publishing: the feed, its versions and feedback go; the banks stay."""
        with self.store.begin_write() as conn:
            row = _require_feed(conn, name)
            conn.execute(feeds_t.delete().where(feeds_t.c.id == row.id))
            append_audit(conn, actor=actor, action="feed.remove", target=row.name)

    # -- versions ------------------------------------------------------------------------------

    def latest_version(self, name: str) -> FeedVersion | None:
        with self.store.engine.connect() as conn:
            feed = _require_feed(conn, name)
            row = conn.execute(
                select(versions_t)
                .where(versions_t.c.feed_id == feed.id)
                .order_by(versions_t.c.version.desc())
                .limit(1)
            ).first()
        return None if row is None else _to_version(feed.name, row)

    def version(self, name: str, version: int) -> FeedVersion:
        with self.store.engine.connect() as conn:
            feed = _require_feed(conn, name)
            row = None
            if 0 < version < 2**63:
                row = conn.execute(
                    select(versions_t).where(
                        versions_t.c.feed_id == feed.id, versions_t.c.version == version
                    )
                ).first()
        if row is None:
            raise FeedNotFound(f"feed {feed.name!r} has no version {version}")
        return _to_version(feed.name, row)

    def versions(self, name: str, *, limit: int = 50) -> builtins.list[FeedVersion]:
        with self.store.engine.connect() as conn:
            feed = _require_feed(conn, name)
            rows = conn.execute(
                select(versions_t)
                .where(versions_t.c.feed_id == feed.id)
                .order_by(versions_t.c.version.desc())
                .limit(max(1, min(limit, 10_000)))
            ).all()
        return [_to_version(feed.name, r) for r in rows]

    def changed_since(self, name: str, revision: int) -> bool:
        """Whether any entry of the feed's banks changed after ``revision`` (a range scan of
        the revision indexes: cheap however large the banks)."""
        with self.store.engine.connect() as conn:
            feed = _require_feed(conn, name)
            return _changed_after(conn, feed.banks, revision)

    def publish(
        self, name: str, *, force: bool = False, actor: str = "system"
    ) -> FeedVersion | None:
        """Make a new signed version if the feed's banks changed since the last one (or none
        exists, or ``force``); return it, or None when nothing changed."""
        key = self.signing_key()
        latest = self.latest_version(name)
        if latest is not None and not force and not self.changed_since(name, latest.revision):
            return None
        with self._snapshot() as conn:
            feed = _require_feed(conn, name)
            revision = int(conn.execute(select(state_t.c.revision)).scalar_one())
            leaves = [leaf_hash(r.encode()) for r in _current_records(conn, feed)]
        count = len(leaves)
        root = root_of_leaves(leaves)
        del leaves
        number = 1 if latest is None else latest.version + 1
        statement = VersionStatement(
            feed=feed.name,
            publisher=feed.organisation,
            version=number,
            revision=revision,
            root=root,
            count=count,
        ).encode()
        signature = key.sign_statement(statement)
        try:
            with self.store.begin_write() as conn:
                _require_feed(conn, name)  # removed meanwhile: FeedNotFound
                conn.execute(
                    insert(versions_t).values(
                        feed_id=feed.id,
                        version=number,
                        revision=revision,
                        root=root,
                        count=count,
                        statement=statement.decode("utf-8"),
                        signature=signature,
                        key_fingerprint=key.public.fingerprint,
                        created_at=utcnow(),
                    )
                )
                append_audit(
                    conn,
                    actor=actor,
                    action="feed.version",
                    target=feed.name,
                    detail={"version": number, "revision": revision, "root": root, "count": count},
                )
        except IntegrityError:
            return None  # another worker made this version number first
        return self.version(name, number)

    def publish_due(self, *, actor: str = "system") -> builtins.list[FeedVersion]:
        """A new version of every feed whose banks changed (what the worker runs)."""
        made = []
        for feed in self.list():
            try:
                version = self.publish(feed.name, actor=actor)
            except FeedNotFound:
                continue
            if version is not None:
                made.append(version)
        return made

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one consistent state throughout: SQLite's read
        transaction already does (WAL); PostgreSQL needs REPEATABLE READ."""
        with self.store.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    # -- serving records -----------------------------------------------------------------------

    def records(
        self, name: str, *, after: Cursor = 0, upto: int | None = None, limit: int = 1000
    ) -> RecordsPage:
        """Signed add and remove records of changes after ``after``, up to revision ``upto``
        (default: the latest version's; never past the current revision), oldest first.
        A disabled entry, or one of a disabled bank, is served as a removal."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        key = self.signing_key()
        rev, after_id = (after, None) if isinstance(after, int) else after
        with self._snapshot() as conn:
            feed = _to_feed(_require_feed(conn, name))
            current = int(conn.execute(select(state_t.c.revision)).scalar_one())
            if upto is None:
                upto = conn.execute(
                    select(func.max(versions_t.c.revision)).where(versions_t.c.feed_id == feed.id)
                ).scalar()
                if upto is None:
                    raise FeedNotFound(f"feed {feed.name!r} has no version yet")
            upto = min(int(upto), current)
            rows: list[tuple[int, int, Any, Any]] = []
            if rev < upto or (after_id is not None and rev == upto):
                window = (rev, after_id, upto, limit)
                entry_rows = keyset_page(
                    conn,
                    _entry_columns().where(banks_t.c.name.in_(feed.banks)),
                    (entries_t.c.revision, entries_t.c.id),
                    window,
                )
                tomb_rows = keyset_page(
                    conn,
                    select(
                        tomb_t.c.entry_id,
                        tomb_t.c.revision,
                        tomb_t.c.signal_type,
                        tomb_t.c.value,
                    ).where(tomb_t.c.bank_name.in_(feed.banks)),
                    (tomb_t.c.revision, tomb_t.c.entry_id),
                    window,
                )
                rows = [(r.revision, r.id, r, None) for r in entry_rows]
                rows += [(t.revision, t.entry_id, None, t) for t in tomb_rows]
                rows.sort(key=lambda x: (x[0], x[1]))
                del rows[limit:]
            complete = not _changed_after(conn, feed.banks, upto)
            served = _serve(conn, feed, rows, upto)
            counts = _counts(conn, feed.id, [k for k, _op, _rec, _rev in served])
        out = []
        for k, op, record, revision in served:
            d, c = counts.get(k, (0, 0))
            data = record.encode()
            out.append(
                FeedRecord(k, op, data.decode("utf-8"), key.sign_record(data), revision, d, c)
            )
        nxt: Cursor | None = None
        if len(rows) >= limit:
            nxt = (int(rows[-1][0]), int(rows[-1][1]))
        return RecordsPage(out, nxt, upto, complete)

    # -- feedback ------------------------------------------------------------------------------

    def add_feedback(
        self,
        name: str,
        key: str,
        *,
        subscriber: str,
        kind: str = DISPUTE,
        reason: str = "",
        remote_addr: str | None = None,
    ) -> tuple[bool, int]:
        """Record a subscriber's dispute (or confirmation) of record ``key``, once per
        subscriber, key and kind. Returns (newly recorded, the key's count of that kind)."""
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
        reason = (reason or kind).strip().lower()
        if not _REASON_RE.match(reason):
            raise InvalidInput(
                "reason must be a short code (1-64 of a-z, 0-9, '_', '.', ':', '-'), not text"
            )
        key = str(key).strip()
        if not _is_key(key):
            raise RecordNotFound(f"no record {key[:40]!r} in this feed")
        if not subscriber or len(subscriber) > 64:
            raise InvalidInput("subscriber must be 1-64 characters")
        created = True
        try:
            with self.store.begin_write() as conn:
                feed = _require_feed(conn, name)
                if not _published_key(conn, feed.banks, int(key)):
                    raise RecordNotFound(f"no record {key!r} in feed {feed.name!r}")
                conn.execute(
                    insert(feedback_t).values(
                        feed_id=feed.id,
                        key=key,
                        subscriber=subscriber,
                        kind=kind,
                        reason=reason,
                        created_at=utcnow(),
                    )
                )
                append_audit(
                    conn,
                    actor=f"key:{subscriber}",
                    action=f"feed.{kind}",
                    target=f"{feed.name}/{key}",
                    detail={"reason": reason},
                    remote_addr=remote_addr,
                )
        except IntegrityError:
            created = False  # this subscriber said so before: idempotent
        with self.store.engine.connect() as conn:
            feed = _require_feed(conn, name)
            d, c = _counts(conn, feed.id, [key]).get(key, (0, 0))
        return created, d if kind == DISPUTE else c

    def feedback_since(
        self, name: str, *, after: int = 0, upto: int | None = None, limit: int = 1000
    ) -> tuple[builtins.list[KeyFeedback], int]:
        """Records whose feedback changed after feedback id ``after``, with their current
        counts; and the id to ask from next. With ``upto``, each carries its current signed
        record when the entry is published and has not changed after ``upto``."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if not 0 <= after < 2**63:
            raise InvalidInput("after must be a feedback id (0 or more)")
        signer = self.signing_key() if upto is not None else None
        with self._snapshot() as conn:
            feed = _to_feed(_require_feed(conn, name))
            changed = conn.execute(
                select(feedback_t.c.key, func.max(feedback_t.c.id).label("last"))
                .where(feedback_t.c.feed_id == feed.id, feedback_t.c.id > after)
                .group_by(feedback_t.c.key)
                .order_by(func.max(feedback_t.c.id))
                .limit(limit)
            ).all()
            keys = [r.key for r in changed]
            counts = _counts(conn, feed.id, keys)
            current: dict[str, tuple[AddRecord, int]] = {}
            if signer is not None and keys:
                ids = [int(k) for k in keys if _is_key(k)]
                current = _current_of(conn, feed, ids, upto)  # type: ignore[arg-type]
        out = []
        for r in changed:
            d, c = counts.get(r.key, (0, 0))
            rec = None
            found = current.get(r.key)
            if found is not None and signer is not None:
                data = found[0].encode()
                rec = FeedRecord(
                    r.key, "add", data.decode(), signer.sign_record(data), found[1], d, c
                )
            out.append(KeyFeedback(r.key, d, c, int(r.last), rec))
        nxt = max((k.last_id for k in out), default=after)
        return out, nxt

    def feedback_rows(self, name: str, *, limit: int = 100) -> builtins.list[FeedbackRow]:
        """The latest disputes and confirmations, newest first (for the publisher's eyes)."""
        with self.store.engine.connect() as conn:
            feed = _require_feed(conn, name)
            rows = conn.execute(
                select(feedback_t)
                .where(feedback_t.c.feed_id == feed.id)
                .order_by(feedback_t.c.id.desc())
                .limit(max(1, min(limit, 10_000)))
            ).all()
        return [
            FeedbackRow(r.id, r.key, r.subscriber, r.kind, r.reason, r.created_at) for r in rows
        ]


# -- helpers -------------------------------------------------------------------------------------


def _is_key(key: str) -> bool:
    """Whether ``key`` can be an entry id: digits, and below 2**63 (a BIGINT), so a larger
    number is "no such record" rather than a database overflow."""
    return bool(_KEY_RE.match(key)) and int(key) < 2**63


def _feed_name(name: object) -> str:
    """Feed names follow bank names' rules: they appear in URLs and commands."""
    try:
        return validate_bank_name(name if isinstance(name, str) else "")
    except ValueError:
        raise InvalidInput(
            f"invalid feed name {str(name)[:40]!r}: use 1-64 letters, digits, '_', '.' or '-'"
        ) from None


def _bank(name: object) -> str:
    try:
        return validate_bank_name(str(name))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _feed_row(conn: Connection, name: str) -> Any:
    if not isinstance(name, str) or not BANK_NAME_RE.match(name):  # then no feed has it
        return None
    return conn.execute(select(feeds_t).where(feeds_t.c.name == name.lower())).first()


def _key_ids(key: str) -> Any:
    """The id of API key ``key`` (by name), as a subquery."""
    return select(api_keys_t.c.id).where(api_keys_t.c.name == str(key).lower())


def _granted_ids(key: str) -> Any:
    """The ids of the feeds granted to API key ``key``, as a subquery."""
    return select(grants_t.c.feed_id).where(grants_t.c.key_id.in_(_key_ids(key)))


def _grantee(conn: Connection, key: str) -> Any:
    try:
        name = validate_key_name(key)
    except ValueError:
        name = None  # then no key has it
    row = None
    if name is not None:
        row = conn.execute(select(api_keys_t).where(api_keys_t.c.name == name)).first()
    if row is None:
        raise KeyNotFound(f"no API key named {str(key)[:64]!r}")
    return row


def _require_feed(conn: Connection, name: str) -> Any:
    row = _feed_row(conn, name)
    if row is None:
        raise FeedNotFound(f"no feed named {str(name)[:64]!r}")
    return row


def _to_feed(r: Any) -> Feed:
    return Feed(
        id=r.id,
        name=r.name,
        description=r.description,
        organisation=r.organisation,
        banks=list(r.banks or ()),
        created_by=r.created_by,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _to_version(feed: str, r: Any) -> FeedVersion:
    return FeedVersion(
        feed=feed,
        version=int(r.version),
        revision=int(r.revision),
        root=r.root,
        count=int(r.count),
        statement=r.statement,
        signature=r.signature,
        key_fingerprint=r.key_fingerprint,
        created_at=r.created_at,
    )


def _entry_columns() -> Any:
    return select(
        entries_t.c.id,
        banks_t.c.name.label("bank"),
        entries_t.c.signal_type,
        entries_t.c.value,
        entries_t.c.value_hash,
        entries_t.c.url_match,
        entries_t.c.source,
        entries_t.c.list_name,
        entries_t.c.added_at,
        entries_t.c.labels,
        entries_t.c.enabled,
        entries_t.c.revision,
        banks_t.c.enabled.label("bank_enabled"),
    ).join(banks_t, banks_t.c.id == entries_t.c.bank_id)


def _add_record(feed: Feed, row: Any, revision: int) -> AddRecord:
    return add_record(
        feed=feed.name,
        publisher=feed.organisation,
        key=str(row.id),
        signal_type=row.signal_type,
        value=row.value,
        url_match=row.url_match or None,
        labels=list(row.labels or ()),
        list_name=row.list_name or row.bank,
        source=row.source,
        added_at=row.added_at,
        revision=revision,
    )


# One record per signal. A subscriber's bank holds one entry per (signal type, value, URL
# match), so a value shared by two entries of a feed's banks is published once: the *canonical*
# entry is the one with the lowest id among the published entries with that identity, and the
# others are served as removals. The canonical record's ``revision`` is the group's last change:
# the highest revision among the group's entries (published or not) and the tombstones of its
# value, so when the canonical entry changes (disabled, removed, or a lower id re-enabled) the
# newly canonical record is served again as a change at that revision, and the version root
# covers the same bytes. For a value held once, this is simply the entry's own revision.

#: A signal's identity: (signal type, value hash, URL match).
Identity = tuple[str, str, str]
#: What tombstones match on (they carry no URL match): (signal type, value hash).
Pair = tuple[str, str]


def _identity(row: Any) -> Identity:
    return (row.signal_type, row.value_hash, row.url_match or "")


def _published(row: Any) -> bool:
    return bool(row.enabled) and bool(row.bank_enabled)


def _members(
    conn: Connection, banks: Sequence[str], pairs: set[Pair], upto: int | None
) -> dict[Pair, list[Any]]:
    """The entries of ``banks`` with the signal types and values of ``pairs``, up to revision
    ``upto`` (later ones are left out: their state at ``upto`` is unknown). Indexed by value."""
    out: dict[Pair, list[Any]] = {}
    hashes = sorted({vh for _st, vh in pairs})
    for i in range(0, len(hashes), 500):
        stmt = _entry_columns().where(
            banks_t.c.name.in_(list(banks)), entries_t.c.value_hash.in_(hashes[i : i + 500])
        )
        if upto is not None:
            stmt = stmt.where(entries_t.c.revision <= upto)
        for row in conn.execute(stmt):
            pair = (row.signal_type, row.value_hash)
            if pair in pairs:
                out.setdefault(pair, []).append(row)
    return out


def _serve(
    conn: Connection, feed: Feed, rows: Sequence[tuple[int, int, Any, Any]], upto: int
) -> list[tuple[str, str, Record, int]]:
    """The records of one page of changes ``rows`` (entries and tombstones in (revision, id)
    order): for each identity they touch, a removal of every changed or published entry that is
    not canonical, then the canonical add record; a tombstone is a removal of its key.
    Returns (key, op, record, revision) in that order, each key once."""
    pairs: set[Pair] = set()
    for _rev, _id, entry, tomb in rows:
        if entry is not None:
            pairs.add((entry.signal_type, entry.value_hash))
        else:
            pairs.add((tomb.signal_type, value_hash(tomb.value)))
    members = _members(conn, feed.banks, pairs, upto) if pairs else {}
    # The identities touched, in order, with the highest revision of a change that touched them.
    touched: dict[Identity, int] = {}
    changed_ids: set[int] = set()
    out: dict[str, tuple[str, str, Record, int]] = {}
    for revision, entry_id, entry, tomb in rows:
        if entry is not None:
            changed_ids.add(int(entry.id))
            ident = _identity(entry)
            touched[ident] = max(touched.get(ident, 0), int(revision))
            continue
        k = str(entry_id)
        out[k] = (
            k,
            "remove",
            RemoveRecord(feed.name, feed.organisation, k, int(revision)),
            int(revision),
        )
        for m in members.get((tomb.signal_type, value_hash(tomb.value)), ()):
            ident = _identity(m)
            touched[ident] = max(touched.get(ident, 0), int(revision))
    for ident, trigger in touched.items():
        group = [m for m in members.get(ident[:2], ()) if _identity(m) == ident]
        published = [m for m in group if _published(m)]
        canon = min(published, key=lambda m: int(m.id)) if published else None
        revision = max([trigger, *(int(m.revision) for m in group)])
        for m in group:
            if m is canon or not (_published(m) or int(m.id) in changed_ids):
                continue
            k = str(m.id)
            removal = RemoveRecord(feed.name, feed.organisation, k, revision)
            out[k] = (k, "remove", removal, revision)
        if canon is not None:
            k = str(canon.id)
            out.pop(k, None)
            out[k] = (k, "add", _add_record(feed, canon, revision), revision)
    return list(out.values())


def _tomb_max(
    conn: Connection, banks: Sequence[str], values: Sequence[str] | None
) -> dict[Pair, int]:
    """The latest tombstone revision per (signal type, value hash) in ``banks``: of ``values``,
    or of every value (for a version's root; memory grows with the distinct removed values)."""
    out: dict[Pair, int] = {}
    base = (
        select(tomb_t.c.signal_type, tomb_t.c.value, func.max(tomb_t.c.revision))
        .where(tomb_t.c.bank_name.in_(list(banks)))
        .group_by(tomb_t.c.signal_type, tomb_t.c.value)
    )
    if values is None:
        chunks: list[Any] = [base]
    else:
        distinct = sorted(set(values))
        chunks = [
            base.where(tomb_t.c.value.in_(distinct[i : i + 500]))
            for i in range(0, len(distinct), 500)
        ]
    for stmt in chunks:
        for st, value, rev in conn.execution_options(yield_per=10_000).execute(stmt):
            pair = (st, value_hash(value))
            out[pair] = max(out.get(pair, 0), int(rev))
    return out


def _current_of(
    conn: Connection, feed: Feed, ids: Sequence[int], upto: int
) -> dict[str, tuple[AddRecord, int]]:
    """The current add record (and its revision) of each of ``ids`` that is published,
    canonical, and whose group did not change after ``upto``."""
    rows = [
        r
        for r in conn.execute(_entry_columns().where(entries_t.c.id.in_(list(ids))))
        if r.bank in feed.banks and _published(r)
    ]
    if not rows:
        return {}
    members = _members(conn, feed.banks, {(r.signal_type, r.value_hash) for r in rows}, None)
    tombs = _tomb_max(conn, feed.banks, [r.value for r in rows])
    out = {}
    for r in rows:
        group = [
            m
            for m in members.get((r.signal_type, r.value_hash), ())
            if _identity(m) == _identity(r)
        ]
        canon = min((m for m in group if _published(m)), key=lambda m: int(m.id))
        revision = max(
            [tombs.get((r.signal_type, r.value_hash), 0), *(int(m.revision) for m in group)]
        )
        if int(canon.id) == int(r.id) and revision <= upto:
            out[str(r.id)] = (_add_record(feed, r, revision), revision)
    return out


def _current_records(conn: Connection, feed_row: Any) -> Iterator[AddRecord]:
    """The feed's add records: one per identity, the canonical published entry's."""
    feed = _to_feed(feed_row)
    banks = banks_t.c.name.in_(feed.banks)
    published = and_(entries_t.c.enabled.is_(True), banks_t.c.enabled.is_(True))
    # Identities held by more than one entry (few): their canonical id and last change.
    shared: dict[Identity, tuple[int | None, int]] = {}
    stmt = (
        select(
            entries_t.c.signal_type,
            entries_t.c.value_hash,
            entries_t.c.url_match,
            func.min(case((published, entries_t.c.id))),
            func.max(entries_t.c.revision),
        )
        .join(banks_t, banks_t.c.id == entries_t.c.bank_id)
        .where(banks)
        .group_by(entries_t.c.signal_type, entries_t.c.value_hash, entries_t.c.url_match)
        .having(func.count() > 1)
    )
    for st, vh, um, canon, rev in conn.execute(stmt):
        shared[(st, vh, um or "")] = (None if canon is None else int(canon), int(rev))
    tombs = _tomb_max(conn, feed.banks, None)
    stmt = _entry_columns().where(banks, published)
    for row in conn.execution_options(yield_per=10_000).execute(stmt):
        ident = _identity(row)
        revision = int(row.revision)
        if ident in shared:
            canon, revision = shared[ident]
            if canon != int(row.id):
                continue
        revision = max(revision, tombs.get(ident[:2], 0))
        yield _add_record(feed, row, revision)


def _changed_after(conn: Connection, banks: Sequence[str], revision: int) -> bool:
    bank_ids = select(banks_t.c.id).where(banks_t.c.name.in_(list(banks)))
    entry = conn.execute(
        select(entries_t.c.id)
        .where(entries_t.c.revision > revision, entries_t.c.bank_id.in_(bank_ids))
        .limit(1)
    ).first()
    if entry is not None:
        return True
    tomb = conn.execute(
        select(tomb_t.c.entry_id)
        .where(tomb_t.c.revision > revision, tomb_t.c.bank_name.in_(list(banks)))
        .limit(1)
    ).first()
    return tomb is not None


def _published_key(conn: Connection, banks: Sequence[str], entry_id: int) -> bool:
    """Whether the feed ever served ``entry_id``: an entry of its banks, or a tombstone."""
    live = conn.execute(
        select(entries_t.c.id)
        .join(banks_t, banks_t.c.id == entries_t.c.bank_id)
        .where(entries_t.c.id == entry_id, banks_t.c.name.in_(list(banks)))
    ).first()
    if live is not None:
        return True
    gone = conn.execute(
        select(tomb_t.c.entry_id).where(
            tomb_t.c.entry_id == entry_id, tomb_t.c.bank_name.in_(list(banks))
        )
    ).first()
    return gone is not None


def _counts(conn: Connection, feed_id: int, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(disputes, confirmations) of each of ``keys`` that has any."""
    if not keys:
        return {}
    out: dict[str, list[int]] = {}
    for chunk in range(0, len(keys), 500):
        rows = conn.execute(
            select(feedback_t.c.key, feedback_t.c.kind, func.count())
            .where(feedback_t.c.feed_id == feed_id, feedback_t.c.key.in_(keys[chunk : chunk + 500]))
            .group_by(feedback_t.c.key, feedback_t.c.kind)
        ).all()
        for key, kind, n in rows:
            out.setdefault(key, [0, 0])[0 if kind == DISPUTE else 1] = int(n)
    return {k: (v[0], v[1]) for k, v in out.items()}


__all__ = [
    "CONFIRM",
    "DISPUTE",
    "FEED_SCOPE",
    "Feed",
    "FeedExists",
    "FeedGrant",
    "FeedGrants",
    "FeedKeyUnavailable",
    "FeedNotFound",
    "FeedRecord",
    "FeedStore",
    "FeedVersion",
    "FeedbackRow",
    "KeyFeedback",
    "RecordNotFound",
    "RecordsPage",
    "format_cursor",
    "parse_cursor",
]

"""The evidence vault's pure rules: who may read evidence, how long it is kept, legal holds.

No database or web imports. :mod:`bastion.vault.store` applies these rules inside transactions.

Retention: each jurisdiction has a period (the US's is at least 365 days under the REPORT Act,
18 U.S.C. § 2258A(h)); a jurisdiction without its own period uses the default. Before any report
the clock runs from preservation, over the longest period of the item's jurisdictions; a report
restarts it: ``retain_until = reported_at + period(report's jurisdiction)`` (a later report in
another jurisdiction can only lengthen it). A legal hold stops the clock: nothing held is purged,
and on release the time spent on hold (after the clock started) is added back, so the item has
as long left as it had when the hold began.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bastion.review.model import Forbidden
from bastion.vocab import ADMIN

#: Roles that may read preserved evidence (content and metadata) through :meth:`Vault.read`.
#: Only admins: senior reviewers decide from the review copy, auditors never see content.
EVIDENCE_ROLES: tuple[str, ...] = (ADMIN,)

#: One year from the report: the REPORT Act's preservation period for US providers.
DEFAULT_RETENTION_DAYS = 365
#: Periods a configuration may not go below (days).
STATUTORY_MINIMUM_DAYS: Mapping[str, int] = {"US": 365}
#: Jurisdictions with a built-in period; any other (e.g. UK) uses the configured default.
DEFAULT_JURISDICTIONS: Mapping[str, int] = {"US": 365}
#: About a century: a bound that catches typos (days entered as hours, say) without limiting use.
MAX_RETENTION_DAYS = 36_500

_CODE_RE = re.compile(r"^[A-Z]{2,8}$")

#: Evidence states shown by listings.
ACTIVE, HELD, EXPIRED, PURGED = "active", "held", "expired", "purged"
STATES = (ACTIVE, HELD, EXPIRED, PURGED)


class VaultError(Exception):
    """Base for vault errors; messages are meant for the operator."""


class RetentionError(VaultError, ValueError):
    """A retention setting is malformed or below a statutory minimum."""


class EvidenceNotFound(VaultError, LookupError):
    """No evidence with that id."""


class EvidencePurged(VaultError, LookupError):
    """The evidence's content was purged at the end of its retention (its hashes remain)."""


class EvidenceDamaged(VaultError):
    """Stored evidence does not decrypt or no longer matches its recorded hashes."""


class HoldConflict(VaultError, ValueError):
    """Holding evidence already on hold, or releasing evidence that is not."""


def jurisdiction_code(value: object) -> str:
    """``"us"`` → ``"US"``; a code is 2 to 8 letters (ISO 3166 alpha-2, or e.g. ``EU``)."""
    text = str(value).strip().upper() if isinstance(value, str) else ""
    if not _CODE_RE.match(text):
        raise RetentionError(f"jurisdiction must be a 2-8 letter code like 'US', not {value!r}")
    return text


def _days(what: str, value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise RetentionError(f"{what} must be a whole number of days, not {value!r}")
    if not 1 <= value <= MAX_RETENTION_DAYS:
        raise RetentionError(f"{what} must be from 1 to {MAX_RETENTION_DAYS} days, not {value}")
    return value


def parse_jurisdictions(value: object) -> dict[str, int]:
    """Jurisdiction → days, from a mapping (TOML table) or ``"US=365,UK=730"`` (environment)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        pairs: list[tuple[str, str]] = []
        for part in value.split(","):
            if not part.strip():
                continue
            code, sep, days = part.partition("=")
            if not sep:
                raise RetentionError(f"vault_jurisdictions: expected CODE=DAYS, not {part!r}")
            pairs.append((code, days))
        items: Sequence[tuple[Any, Any]] = pairs
    elif isinstance(value, Mapping):
        items = list(value.items())
    else:
        raise RetentionError("vault_jurisdictions must be a table of CODE = days")
    out: dict[str, int] = {}
    for code, days in items:
        name = jurisdiction_code(code)
        out[name] = _days(f"retention for {name}", days)
    return out


@dataclass(frozen=True)
class RetentionRules:
    """Retention periods per jurisdiction, checked against statutory minimums."""

    default_days: int = DEFAULT_RETENTION_DAYS
    jurisdictions: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_JURISDICTIONS))

    def __post_init__(self) -> None:
        default = _days("vault_retention_days", self.default_days)
        periods = {**DEFAULT_JURISDICTIONS, **parse_jurisdictions(self.jurisdictions)}
        for code, minimum in STATUTORY_MINIMUM_DAYS.items():
            days = periods.get(code, default)
            if days < minimum:
                raise RetentionError(
                    f"retention for {code} must be at least {minimum} days (statutory minimum), "
                    f"not {days}"
                )
        object.__setattr__(self, "default_days", default)
        object.__setattr__(self, "jurisdictions", periods)

    @classmethod
    def from_settings(cls, settings: Any) -> RetentionRules:
        return cls(
            default_days=getattr(settings, "vault_retention_days", DEFAULT_RETENTION_DAYS),
            jurisdictions=getattr(settings, "vault_jurisdictions", None) or {},
        )

    def period(self, jurisdiction: str) -> timedelta:
        code = jurisdiction_code(jurisdiction)
        return timedelta(days=self.jurisdictions.get(code, self.default_days))

    def preserved_until(self, preserved_at: datetime, jurisdictions: Sequence[str]) -> datetime:
        """Before any report: from preservation, over the longest of the jurisdictions' periods
        (the default period when none is named)."""
        codes = list(jurisdictions) or []
        longest = max((self.period(j) for j in codes), default=timedelta(days=self.default_days))
        return preserved_at + longest

    def reported_until(
        self,
        reported_at: datetime,
        jurisdiction: str,
        *,
        current: datetime,
        already_reported: bool,
    ) -> datetime:
        """After a report: the first report restarts the clock from its time; later reports
        (another jurisdiction, say) only ever lengthen retention."""
        until = reported_at + self.period(jurisdiction)
        return max(until, current) if already_reported else until


def released_until(
    retain_until: datetime, *, held_at: datetime, released_at: datetime, clock_start: datetime
) -> datetime:
    """Retention after a legal hold ends: the time held after the clock started is added back."""
    paused = released_at - max(held_at, clock_start)
    return retain_until + paused if paused > timedelta(0) else retain_until


def purgeable(
    *, retain_until: datetime, legal_hold: bool, purged_at: datetime | None, now: datetime
) -> bool:
    """Content is purged once its retention has passed, unless held or already purged."""
    return not legal_hold and purged_at is None and retain_until <= now


def state_of(
    *, retain_until: datetime, legal_hold: bool, purged_at: datetime | None, now: datetime
) -> str:
    if purged_at is not None:
        return PURGED
    if legal_hold:
        return HELD
    return EXPIRED if retain_until <= now else ACTIVE


def require_evidence_role(role: str) -> None:
    if role not in EVIDENCE_ROLES:
        raise Forbidden(
            f"reading evidence needs the role {' or '.join(EVIDENCE_ROLES)}, not {role!r}"
        )


def evidence_aad(evidence_id: int, case_id: int, item_id: int) -> bytes:
    """What an evidence blob is bound to: copied onto another evidence row, it does not open."""
    return f"bastion/evidence/v1:id={evidence_id}:case={case_id}:item={item_id}".encode()


@dataclass(frozen=True)
class EvidenceManifest:
    """Everything recorded about one preserved item, without its content.

    ``sha256``/``md5`` are of the plaintext content (None for a metadata-only item);
    ``metadata_sha256`` is the SHA-256 of ``metadata_json`` exactly as stored, so edits to the
    preserved metadata are caught by verification too."""

    id: int
    case_id: int
    item_id: int
    content_id: str | None
    uploader_id: str | None
    conversation_id: str | None
    media_type: str | None
    size: int | None
    sha256: str | None
    md5: str | None
    has_content: bool
    metadata: dict[str, Any]
    metadata_sha256: str
    jurisdictions: tuple[str, ...]
    preserved_at: datetime
    preserved_by: str
    reason: str
    retain_until: datetime
    reported_at: datetime | None
    reports: tuple[dict[str, Any], ...]
    legal_hold: bool
    hold_reason: str | None
    held_at: datetime | None
    purged_at: datetime | None
    state: str


@dataclass(frozen=True)
class EvidenceSummary:
    """A listing row: no metadata, no content."""

    id: int
    case_id: int
    item_id: int
    content_id: str | None
    media_type: str | None
    size: int | None
    sha256: str | None
    has_content: bool
    preserved_at: datetime
    retain_until: datetime
    reported_at: datetime | None
    legal_hold: bool
    purged_at: datetime | None
    state: str


@dataclass(frozen=True)
class Evidence:
    """A read of evidence: the manifest and the content (None for a metadata-only item)."""

    manifest: EvidenceManifest
    data: bytes | None


@dataclass(frozen=True)
class VerifyReport:
    """``bastion vault verify``'s result: failures name the evidence id and the problem."""

    checked: int
    ok: int
    failures: list[tuple[int, str]]

    @property
    def intact(self) -> bool:
        return not self.failures

"""What the voucher store hands out and takes in: tables, build jobs, opened items and accounts,
intake results, rate counts, group states and franking reports; its errors, its constants and
the protocol parameters from settings. No SQL here; :mod:`bastion.psi.store` keeps the state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bastion.client.pdata import MODES, Params, PDataError
from bastion.store.errors import StoreError

#: pdq hex -> bank entries within the verify distance (``Match.as_dict`` shapes); [] = none.
Verify = Callable[[str], list[dict[str, Any]]]
#: Detection is linear algebra over the distinct matched shares; beyond this many it is not
#: attempted (an honest client never gets near it: t real + at most s synthetic are needed).
MAX_DETECT_ROWS = 2000
MAX_MESSAGE = 16 * 2**20


class NoTable(StoreError):
    """No pdata table has been built yet."""


class LeaseLost(StoreError):
    """A build job's lease passed to another worker; this worker's table was not published."""


#: Build job states: recorded, claimed by a worker, published, given up.
PENDING, BUILDING, DONE, FAILED = "pending", "building", "done", "failed"
#: A job whose worker vanished this many times (lease expired mid-build) is failed, not retried.
MAX_BUILD_ATTEMPTS = 3


def params_from_settings(settings: Any) -> Params:
    """Protocol parameters from the ``voucher_*`` settings (validated by :class:`Params`)."""
    mode = str(settings.voucher_mode).lower()
    if mode not in MODES:
        raise PDataError(f"voucher_mode must be one of {', '.join(MODES)}, not {mode!r}")
    locality: dict[str, int] = {}
    if mode != "exact":
        if int(settings.voucher_probes) > 0:
            locality["probes"] = int(settings.voucher_probes)
        if int(settings.voucher_max_flips) >= 0:
            locality["max_flips"] = int(settings.voucher_max_flips)
    if mode == "near":
        locality["chunks"] = int(settings.voucher_chunks)
    if mode == "compact":
        locality["key_bits"] = int(settings.voucher_key_bits)
    return Params.for_mode(
        mode,
        **locality,
        min_quality=int(settings.voucher_min_quality),
        threshold=int(settings.voucher_threshold),
        dhf_dim=int(settings.voucher_max_synthetic),
        synthetic_ppm=round(float(settings.voucher_synthetic_rate) * 1_000_000),
        epoch_seconds=round(float(settings.voucher_epoch_days) * 86400),
        ad_bytes=int(settings.voucher_ad_bytes),
    )


@dataclass(frozen=True)
class TableInfo:
    id: int
    root: str
    created_at: datetime
    params: dict[str, Any]
    stats: dict[str, Any]
    banks: list[str] | None
    size: int


@dataclass(frozen=True)
class BuildJob:
    """A pdata build request and where it is; ``table_id``/``root`` once done."""

    id: int
    state: str
    banks: list[str] | None
    params: dict[str, int]
    requested_by: str
    requested_at: datetime
    remote_addr: str | None
    attempts: int
    lease_owner: str | None
    lease_until: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress: float
    table_id: int | None
    root: str | None
    error: str | None


def build_job(row: Any) -> BuildJob:
    return BuildJob(
        row.id,
        row.state,
        row.banks,
        dict(row.params),
        row.requested_by,
        row.requested_at,
        row.remote_addr,
        row.attempts,
        row.lease_owner,
        row.lease_until,
        row.started_at,
        row.finished_at,
        float(row.progress),
        row.table_id,
        row.root,
        row.error,
    )


@dataclass(frozen=True)
class OpenedItem:
    """An item revealed by a threshold crossing. ``media`` (the derivative) is filled when it is
    handed out by :meth:`VoucherStore.submit` and the hook, never in listings."""

    id: int
    account: str
    epoch: int
    item_id: str
    pdq: str
    quality: int
    matches: list[dict[str, Any]]
    media_type: str
    media_size: int
    media_sha256: str
    opened_at: datetime
    media: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class OpenedAccount:
    """What one submit opened for one account's epoch. ``first``: this submit crossed the
    threshold (else these items joined an account opened before)."""

    account: str
    epoch: int
    items: tuple[OpenedItem, ...]
    first: bool
    real: int
    synthetic: int
    verified: int
    #: Distinct bank pictures the verified items covered when the threshold was crossed.
    images: int = 0


@dataclass(frozen=True)
class ItemResult:
    """What became of voucher ``index`` of a batch: 202 queued; 422 refused (``error``
    ``invalid``: malformed, unknown table, stale epoch; ``account_mismatch``: sealed for another
    account than its sender); 429 refused, its account is over the hourly limit
    (``retry_after`` seconds). Never whether it matched: that is not known yet."""

    index: int
    status: int
    error: str | None = None
    detail: str | None = None
    retry_after: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202


@dataclass(frozen=True)
class ProcessResult:
    """One step of the worker: how many queued vouchers it processed, and what opened."""

    processed: int
    opened: tuple[OpenedAccount, ...]


@dataclass(frozen=True)
class SubmitResult:
    accepted: int
    opened: tuple[OpenedAccount, ...]
    results: tuple[ItemResult, ...] = ()


@dataclass(frozen=True)
class HourCount:
    hour: datetime
    accepted: int
    rejected: int


@dataclass(frozen=True)
class GroupInfo:
    account: str
    epoch: int
    state: str
    shares: int
    real: int
    synthetic: int
    verified: int
    opened_at: datetime | None
    note: str
    discarded: int = 0


@dataclass(frozen=True)
class FrankingReport:
    id: int
    at: datetime
    reporter: str
    sender: str
    recipient: str
    sent_at: datetime
    commitment: str
    message_size: int
    message_sha256: str
    context: dict[str, Any]
    message: bytes = field(default=b"", repr=False)


def params_to_doc(params: Params) -> dict[str, int]:
    return {
        "mode": params.mode,
        "chunks": params.chunks,
        "probes": params.probes,
        "max_flips": params.max_flips,
        "weak_bits": params.weak_bits,
        "key_bits": params.key_bits,
        "min_quality": params.min_quality,
        "threshold": params.threshold,
        "dhf_dim": params.dhf_dim,
        "synthetic_ppm": params.synthetic_ppm,
        "epoch_seconds": params.epoch_seconds,
        "ad_bytes": params.ad_bytes,
        "bucket_size": params.bucket_size,
    }

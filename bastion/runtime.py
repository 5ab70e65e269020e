"""One process's services, built once: the server, the worker and the CLI all start here.

``build_runtime(settings, store)`` opens every domain service over one store and one master key;
the API and the console reach the result through the typed dependency :data:`RuntimeDep`, the
worker builds its loops from it (:mod:`bastion.worker`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bastion import pipeline
from bastion.accounts.store import AccountStore
from bastion.actions.outbox import Outbox
from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.exchanges.store import ExchangeStore
from bastion.feeds.store import FeedStore
from bastion.http_auth import KeyCache, Principal, RateLimiter, client_address
from bastion.identity.store import IdentityGroups
from bastion.index.live import LiveIndex
from bastion.index.pdq import HASH_BITS
from bastion.index.probing import EntryWatch, ProbeDetector
from bastion.policy import Policy, PolicyHolder
from bastion.psi.store import VoucherStore
from bastion.reports.store import ReportStore
from bastion.review.store import ReviewStore
from bastion.vault.store import Vault

if TYPE_CHECKING:
    from bastion.db import Store
    from bastion.psi.records import OpenedAccount


class Metrics:
    """Prometheus metrics in a registry of the app's own, so several apps can live in a process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bastion_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bastion_http_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.matches = Counter(
            "bastion_matches", "Matches returned", ["signal_type"], registry=self.registry
        )
        self.index_entries = Gauge(
            "bastion_index_entries", "Entries in the live index", registry=self.registry
        )
        self.index_age = Gauge(
            "bastion_index_age_seconds",
            "Seconds since the index caught up with the store",
            registry=self.registry,
        )
        self.index_revision = Gauge(
            "bastion_index_revision", "Store revision the index reflects", registry=self.registry
        )


@dataclass(eq=False)
class Runtime:
    """Everything a request handler or a worker loop needs (the server keeps it on
    ``app.state.runtime``). Built by :func:`build_runtime`, never field by field."""

    settings: Settings
    store: Store
    index: LiveIndex
    keys: KeyCache
    limiter: RateLimiter
    probes: ProbeDetector
    watch: EntryWatch
    metrics: Metrics
    master_key: MasterKey
    policy: PolicyHolder
    bank_labels: pipeline.BankLabels
    review: ReviewStore
    accounts: AccountStore
    outbox: Outbox
    vault: Vault
    reports: ReportStore
    vouchers: VoucherStore
    exchanges: ExchangeStore
    #: One per process: it caches the unsealed feed signing key.
    feeds: FeedStore
    #: Identity sharing groups; caches their unsealed HMAC keys briefly.
    identity: IdentityGroups
    started_at: float = field(default_factory=time.time)

    def verify_key(self, token: str) -> Principal | None:
        key = self.store.verify_api_key(token)
        if key is None:
            return None
        return Principal(
            name=key.name,
            scopes=frozenset(key.scopes),
            user=key.user,
            key_id=key.key_id,
            created_by=key.created_by,
        )

    def audit(
        self, request: Request, principal: Principal, action: str, target: str = "", **detail: Any
    ) -> None:
        """Record who did what to what, from where, before the response goes out."""
        self.store.record_audit(
            actor=f"key:{principal.name}",
            action=action,
            target=target,
            detail=detail or None,
            remote_addr=client_address(request, self.settings),
        )


def build_runtime(settings: Settings, store: Store) -> Runtime:
    """Every service of one process over ``store``. Raises ValueError on settings out of range
    or an invalid policy file, OSError or ValueError when the master key cannot be loaded."""
    store.use_settings_audit_keys(settings)
    settings = settings.in_data_dir(store.data_dir)
    index = LiveIndex(store)
    keys = KeyCache()
    limiter = RateLimiter(settings.rate_limit_per_minute)
    probes = ProbeDetector(
        radius=settings.probe_radius,
        limit=settings.probe_limit,
        window=settings.probe_window_seconds,
        memory=settings.probe_memory,
    )
    if not 0 <= settings.match_threshold <= HASH_BITS:
        raise ValueError(f"match_threshold must be 0..{HASH_BITS}")
    watch = EntryWatch(
        same_radius=settings.probe_same_radius,
        limit=settings.probe_entry_limit,
        window=settings.probe_entry_window_seconds,
        match_limit=settings.probe_match_limit,
        match_window=settings.probe_match_window_seconds,
        max_pairs=settings.probe_entry_memory,
    )
    metrics = Metrics()
    master_key = MasterKey.load(settings)
    policy_file = settings.policy_file
    if policy_file is None:  # in_data_dir names one in the data directory when none is set
        raise ValueError("no policy file")
    policy = PolicyHolder(policy_file)
    policy.on_reload = partial(_audit_policy_reload, store, policy_file)
    vault = Vault.from_settings(store, master_key, settings)
    rt = Runtime(
        settings=settings,
        store=store,
        index=index,
        keys=keys,
        limiter=limiter,
        probes=probes,
        watch=watch,
        metrics=metrics,
        master_key=master_key,
        policy=policy,
        bank_labels=pipeline.BankLabels(store),
        review=ReviewStore(store, master_key, policy=policy.current),
        accounts=AccountStore(store),
        outbox=Outbox.from_settings(store, settings),
        vault=vault,
        reports=ReportStore(store, master_key, settings=settings, vault=vault),
        vouchers=VoucherStore(store, master_key, settings),
        exchanges=ExchangeStore(store, master_key, settings),
        feeds=FeedStore(store, master_key, settings),
        identity=IdentityGroups(store, master_key),
    )

    def open_cases(opened: OpenedAccount) -> None:
        pipeline.open_voucher_cases(rt, opened)

    rt.vouchers.on_open = open_cases
    return rt


def _audit_policy_reload(store: Store, path: str | None, policy: Policy) -> None:
    """An edit of the policy file made on disk, picked up by this process."""
    store.record_audit(
        actor="system",
        action="policy.reload",
        target=str(path),
        detail={"digest": policy.digest, "rules": len(policy.rules)},
    )


def runtime(request: Request) -> Runtime:
    """The app's runtime (set by the server's lifespan), for handlers and dependencies."""
    rt: Runtime = request.app.state.runtime
    return rt


async def _runtime_dependency(request: Request) -> Runtime:
    # async: FastAPI runs it on the event loop, not in a thread of the pool.
    return runtime(request)


#: A handler parameter typed ``RuntimeDep`` receives the app's :class:`Runtime`.
RuntimeDep = Annotated[Runtime, Depends(_runtime_dependency)]

"""Settings for the server, from environment variables and an optional TOML file.

Precedence: explicit arguments, then ``BASTION_*`` environment variables, then the file named by
``BASTION_CONFIG`` (or ``--config``), then defaults. Keys in the file are the field names below.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bastion.fetch import FetchPolicy
from bastion.signals import HashOptions


class ConfigError(ValueError):
    """A setting has a bad value; the message names it."""


@dataclass(frozen=True)
class CoreSettings:
    """Storage, limits, fetching, keys: what every part of the server needs."""

    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    #: Largest upload accepted by /v1/scan and the HMA hash endpoints.
    max_upload_bytes: int = 100 * 2**20
    max_pixels: int = 120_000_000
    #: Longer uploaded videos are refused before hashing (0 = no limit).
    max_video_seconds: float = 3600.0
    #: Largest bank file accepted by an import upload (streamed; this bounds disk, not memory).
    max_import_bytes: int = 2 * 2**30
    #: Largest body of any other request (JSON), checked before it is read.
    max_json_bytes: int = 16 * 2**20
    #: Requests per minute per API key (0 = unlimited).
    rate_limit_per_minute: int = 6000
    #: How often a replica polls the store for bank changes made elsewhere.
    index_poll_seconds: float = 1.0
    fetch_timeout: float = 10.0
    fetch_max_bytes: int = 50 * 2**20
    #: Networks URL fetching may reach although they are private (e.g. an intranet CDN).
    fetch_allow_networks: tuple[str, ...] = ()
    fetch_allow_hosts: tuple[str, ...] = ()
    #: Trust X-Forwarded-For from these proxies for the audit log's remote address.
    trusted_proxies: tuple[str, ...] = ()
    #: Master key (base64 of 32 bytes) for data Bastion encrypts at rest (review media, later
    #: evidence and partner credentials). Unset: read ``secret_key_file``, created on first use.
    secret_key: str | None = None
    #: Default: ``secret.key`` in :func:`key_dir`, never beside the database (see
    #: :meth:`in_data_dir`; a key file an older install left there is still used).
    secret_key_file: str | None = None
    #: Where key files live when their own settings leave them unset (see :func:`key_dir`).
    key_dir: str | None = None
    #: Keyring (JSON, mode 0600) of the HMAC keys the audit log is chained with; never in the
    #: database. Default: ``audit.key`` beside an explicit ``secret_key_file``, else in
    #: :func:`key_dir`. Created on first use.
    audit_key_file: str | None = None
    #: Ed25519 key that signs audit checkpoints. Default: ``audit-signing.key`` beside
    #: ``audit_key_file``; created by the first ``bastion audit checkpoint``.
    audit_signing_key_file: str | None = None


@dataclass(frozen=True)
class PolicySettings:
    """The policy (:mod:`bastion.policy`)."""

    #: The rules file; created from the packaged default policy on first start if missing.
    #: Default: ``policy.yaml`` in the data directory.
    policy_file: str | None = None


@dataclass(frozen=True)
class ConsoleSettings:
    """Accounts and the console (:mod:`bastion.accounts`, :mod:`bastion.web`)."""

    session_hours: float = 12.0
    session_idle_minutes: float = 60.0
    #: Mark the console's cookies Secure and send HSTS. Unset: on, unless ``host`` is a
    #: loopback address (or a request arrives over HTTPS; see ``bastion.web.base``).
    cookie_secure: bool | None = None
    #: Items a reviewer may reveal in a day before the console asks them to take a break.
    exposure_soft_limit: int = 60


@dataclass(frozen=True)
class ActionSettings:
    """Actions and their webhooks (:mod:`bastion.actions`)."""

    #: Default webhook target for every action; ``webhooks`` (TOML table, name -> {url, secret})
    #: can route actions by name to other targets.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhooks: dict[str, Any] = field(default_factory=dict)
    outbox_max_attempts: int = 12
    #: Seconds the default target may take to answer (``[webhooks.x] timeout`` for others).
    webhook_timeout: float = 10.0
    #: Retry n waits min(outbox_backoff_max_seconds, outbox_backoff_seconds * 2**(n-1)), jittered.
    outbox_backoff_seconds: float = 10.0
    outbox_backoff_max_seconds: float = 3600.0
    #: How long a worker holds a row it is delivering before another may take it over
    #: (0 = the longest target timeout + 30 s). Must exceed every target's timeout.
    outbox_lease_seconds: float = 0.0
    #: Deliveries one worker makes at once, and how often it looks for due rows when idle.
    outbox_concurrency: int = 4
    outbox_poll_seconds: float = 1.0
    #: Seconds between the worker's "alive" log lines (0 = none).
    outbox_heartbeat_seconds: float = 60.0


@dataclass(frozen=True)
class VoucherSettings:
    """Private matching for E2EE messaging (:mod:`bastion.psi`)."""

    #: Private matching for E2EE messaging (docs/e2ee.md). "compact" (default) finds edited
    #: copies with one table key per entry (a low-frequency projection probed by the client);
    #: "near" too, with 5 chunk keys per entry (5x the table); "exact" only identical hashes.
    voucher_mode: str = "compact"
    #: Matches (distinct items) an account needs before any of its items opens for review.
    voucher_threshold: int = 10
    #: Chance that a client sends a synthetic voucher, and the most it sends per epoch.
    voucher_synthetic_rate: float = 0.05
    voucher_max_synthetic: int = 32
    #: Shares only combine within an epoch of this many days.
    voucher_epoch_days: float = 30.0
    #: Locality: keys probed per item and bits flipped at most per probe (0 / -1: the mode's
    #: default, 12 / 3 compact, 8 / 2 near); near mode's chunks; compact mode's projection bits.
    voucher_chunks: int = 5
    voucher_probes: int = 0
    voucher_max_flips: int = -1
    voucher_key_bits: int = 52
    #: A background table build (bastion worker) holds its job this long between renewals.
    voucher_build_lease_seconds: float = 300.0
    #: Bytes inside every voucher for the item id and its low-resolution derivative.
    voucher_ad_bytes: int = 8192
    #: Banks whose PDQ entries go into pdata (empty: every enabled bank).
    voucher_banks: tuple[str, ...] = ()
    #: Vouchers accepted per account per hour; more are refused (429) and counted.
    voucher_rate_per_hour: int = 500
    voucher_max_batch: int = 100
    #: An opened item must also be within this PDQ distance of a bank entry (server re-check).
    voucher_verify_distance: int = 31
    voucher_min_quality: int = 50
    voucher_cuckoo_load: float = 0.85
    #: Published tables whose vouchers are still accepted (the newest included).
    voucher_keep_tables: int = 3
    #: How often an idle worker looks for queued vouchers (the API only queues them).
    voucher_queue_poll_seconds: float = 1.0


@dataclass(frozen=True)
class VaultSettings:
    """The evidence vault (:mod:`bastion.vault`)."""

    #: Evidence retention in days for jurisdictions without their own period (docs/vault.md).
    vault_retention_days: int = 365
    #: Jurisdiction code -> retention days (TOML table, or "US=365,UK=730" in the environment).
    #: US defaults to 365 (REPORT Act) and may not be set lower.
    vault_jurisdictions: dict[str, Any] = field(default_factory=dict)
    #: Also preserve evidence when content is blocked on a match, not only on confirmation.
    vault_on_block: bool = False
    #: Seconds between the worker's purges of evidence past its retention (0 = never).
    vault_purge_interval_seconds: float = 3600.0


@dataclass(frozen=True)
class ContactEventSettings:
    """Contact events (:mod:`bastion.contact.store`, docs/contact-events.md)."""

    #: Days contact events are kept; older ones are purged by the worker, except those of
    #: accounts under legal hold or review (an account case).
    contact_retention_days: int = 90
    #: Seconds between the worker's purges of expired contact events (0 = never).
    contact_purge_interval_seconds: float = 3600.0
    #: Seconds between the worker's passes opening and joining account cases from the stored
    #: risk (:mod:`bastion.contact.cases`; 0 = never).
    contact_case_interval_seconds: float = 30.0


@dataclass(frozen=True)
class BackscanSettings:
    """Back-scans and re-matching (:mod:`bastion.backscan`, docs/backscan.md)."""

    #: Cases the back-scan and re-match backlog may open per queue per hour, highest priority
    #: first; the rest wait in the backlog (0 = hold everything there).
    backscan_cases_per_hour: int = 60
    #: Seconds between the worker's passes over the backlog and, when banks have grown, its
    #: re-match of the stored signals against the new entries (0 = never).
    rematch_interval_seconds: float = 300.0


@dataclass(frozen=True)
class ReportSettings:
    """Mandatory reports (:mod:`bastion.reports`)."""

    #: NCMEC CyberTipline Reporting API. Unset URL: the documented base URI of
    #: ``ncmec_environment`` (test: exttest.cybertip.org, production: report.cybertip.org).
    #: Set here (BASTION_NCMEC_*), these override what the admin console stored (sealed).
    ncmec_url: str | None = None
    ncmec_username: str | None = None
    ncmec_password: str | None = None
    ncmec_environment: str = "test"
    #: Consecutive failed attempts before an unfinished report is retracted.
    ncmec_max_attempts: int = 8
    ncmec_timeout: float = 60.0
    #: Retry n waits min(max, base * 2**(n-1)) seconds, jittered.
    ncmec_backoff_seconds: float = 30.0
    ncmec_backoff_max_seconds: float = 3600.0
    #: How often the worker looks for reports that are due (each also waits out its backoff).
    report_poll_seconds: float = 10.0
    #: UK NCA reports (OSA s.66): deadline from confirmation per priority, in minutes. P1 (threat
    #: to life or of serious harm) is "immediately": one hour is our working definition; P3's
    #: seven days is an assumption (the regulations give no number). See docs/reports.md.
    nca_p1_minutes: int = 60
    nca_p2_minutes: int = 24 * 60
    nca_p3_minutes: int = 7 * 24 * 60
    #: The platform name written into NCA reports when the caller gives none.
    nca_platform: str = "Bastion"
    #: The service's reporting contact (the CyberTipline's reporting person). When first name,
    #: last name and email are all set, confirming an account case drafts its text-only
    #: CyberTipline report and its NCA report (drafts: a person still sends them); unset, a
    #: person drafts them (docs/reports.md). Set all three or none.
    report_first_name: str | None = None
    report_last_name: str | None = None
    report_email: str | None = None
    report_phone: str | None = None


@dataclass(frozen=True)
class ExchangeSettings:
    """Hash exchanges (:mod:`bastion.exchanges`)."""

    #: How often the worker looks for exchanges due to sync and feedback due to send.
    exchange_poll_seconds: float = 10.0
    #: How long a worker holds an exchange it syncs (renewed with every page applied).
    exchange_lease_seconds: float = 300.0
    #: Consecutive unreadable pages at one checkpoint before the sync skips past it (when the
    #: exchange names a checkpoint past it) or is marked stalled.
    exchange_poison_attempts: int = 3
    #: Retry n waits min(max, base * 2**(n-1)) seconds, jittered; a partner's Retry-After wins.
    exchange_backoff_seconds: float = 60.0
    exchange_backoff_max_seconds: float = 6 * 3600.0
    #: Seconds a partner may take to answer one request.
    exchange_timeout: float = 60.0
    #: Pages one scheduled run applies before letting other exchanges go (0 = no limit).
    exchange_page_limit: int = 0
    #: Attempts to send one finding upstream before it is marked failed.
    exchange_feedback_max_attempts: int = 10
    #: Our organisation's name, sent to partners that ask who is calling.
    exchange_organisation: str = ""


@dataclass(frozen=True)
class FeedSettings:
    """Bastion-to-Bastion feeds (:mod:`bastion.feeds`)."""

    #: The organisation named as publisher of this instance's feeds (``bastion feed create``
    #: may name another per feed).
    feed_organisation: str = ""
    #: How often the worker checks published banks for changes and signs a new feed version.
    feed_version_seconds: float = 5.0


@dataclass(frozen=True)
class DisclosureSettings:
    """What match answers disclose, and the probing limits (:mod:`bastion.index.probing`,
    :mod:`bastion.api.disclosure`)."""

    #: Keys without ``export`` see match distances as bands: ``exact`` (0), ``near`` (1 to this),
    #: ``far`` (above it, up to the lookup's threshold), never the exact number.
    match_near_distance: int = 15
    #: Near-duplicate probing: a hash lookup within this many bits (not 0) of another recent one
    #: by the same key, where either matched a bank entry, is a probe.
    probe_radius: int = 16
    #: Probes a key without ``export`` may make per window before further probing requests are
    #: refused (429, audited as ``match.probing``); 0 turns detection off.
    probe_limit: int = 64
    probe_window_seconds: float = 600.0
    #: Matched lookups remembered per key to compare against (41 bytes each, per process).
    probe_memory: int = 1024
    #: The PDQ threshold for keys without ``export``: the one a lookup or scan asks for is
    #: ignored (answers at several thresholds would measure distances). docs/hma.md, "Probing".
    match_threshold: int = 31
    #: Per-entry watch: a lookup within ``match_threshold`` + this of an entry is a look at it.
    probe_watch_margin: int = 16
    #: A look within this many bits of an earlier look by the key at the same entry is the same
    #: picture again (a re-upload): it gets that look's answer and is not counted.
    probe_same_radius: int = 8
    #: Distinct looks a key without ``export`` may make at one entry per window; past it the key's
    #: lookups are refused (429, audited) until that entry has room. 0 turns the count off.
    probe_entry_limit: int = 8
    probe_entry_window_seconds: float = 7 * 86400.0
    #: Matched answers (signals with a match) per key without ``export`` per window; 0: no cap.
    probe_match_limit: int = 2000
    probe_match_window_seconds: float = 3600.0
    #: (key, entry) pairs the watch remembers (at most ``probe_entry_limit`` looks each).
    probe_entry_memory: int = 65_536


@dataclass(frozen=True)
class Settings(
    DisclosureSettings,
    FeedSettings,
    ExchangeSettings,
    ReportSettings,
    ContactEventSettings,
    BackscanSettings,
    VaultSettings,
    VoucherSettings,
    ActionSettings,
    ConsoleSettings,
    PolicySettings,
    CoreSettings,
):
    """Every setting. Each section is its own class (a feature adds its settings in one
    place); the field order, and so the TOML keys listed by the docs, is the sections'."""

    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # A bad network would otherwise surface as a 500 on every URL scan, long after start-up.
        for name in ("fetch_allow_networks", "trusted_proxies"):
            for value in getattr(self, name):
                try:
                    ipaddress.ip_network(str(value).strip(), strict=False)
                except ValueError as exc:
                    raise ConfigError(f"setting {name}: {value!r} is not an IP network") from exc
        contact = ("report_first_name", "report_last_name", "report_email")
        given = [n for n in contact if (getattr(self, n) or "").strip()]
        if given and len(given) != len(contact):
            missing = ", ".join(n for n in contact if n not in given)
            raise ConfigError(f"the reporting contact needs {missing} too (set all or none)")
        if given and "@" not in str(self.report_email):
            raise ConfigError(f"setting report_email: {self.report_email!r} is not an email")

    def in_data_dir(self, data_dir: str | Path) -> Settings:
        """These settings with the files left unset placed in ``data_dir`` (the embedded SQLite
        database's directory), so one folder holds an instance's database, key and policy.
        Replicas sharing PostgreSQL must share the key and policy: set both explicitly."""
        base = Path(data_dir)
        audit_key_file, audit_signing_key_file = self._audit_key_files()
        return replace(
            self,
            secret_key_file=self.secret_key_file or str(self._master_key_file(base)),
            policy_file=self.policy_file or str(base / "policy.yaml"),
            audit_key_file=audit_key_file,
            audit_signing_key_file=audit_signing_key_file,
        )

    def _audit_key_files(self) -> tuple[str, str]:
        """The audit key files left unset: beside an explicitly set ``secret_key_file``, else in
        :func:`key_dir`; never beside the database (not even where an old master key still is),
        since whoever holds the database and the audit key can rewrite the log (docs/audit.md).
        Each key has its own file, so each can be guarded and rotated on its own."""
        keys = (
            Path(self.secret_key_file).expanduser().parent
            if self.secret_key_file
            else key_dir(self)
        )
        audit = self.audit_key_file or str(keys / "audit.key")
        signing = self.audit_signing_key_file or str(Path(audit).parent / "audit-signing.key")
        return audit, signing

    def _master_key_file(self, data_dir: Path) -> Path:
        """``secret.key`` in :func:`key_dir`; but a key file an older install keeps beside its
        database is used where it is (with a warning), because a new key would leave everything
        sealed under the old one unreadable."""
        legacy = data_dir / MASTER_KEY_FILE
        if legacy.exists() or legacy.is_symlink():
            if not self.secret_key:
                log.warning(
                    "the master key %s is in the data directory, beside the database, so one "
                    "backup holds both; move it to %s (or set secret_key_file) when you can "
                    "(docs/security.md)",
                    legacy,
                    key_dir(self) / MASTER_KEY_FILE,
                )
            return legacy
        return key_dir(self) / MASTER_KEY_FILE

    @property
    def secure_cookies(self) -> bool:
        """``cookie_secure`` when set; else on unless Bastion serves on a loopback address."""
        if self.cookie_secure is not None:
            return self.cookie_secure
        return not is_loopback_host(self.host)

    @property
    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            max_bytes=self.fetch_max_bytes,
            timeout=self.fetch_timeout,
            allow_hosts=frozenset(h.lower() for h in self.fetch_allow_hosts),
            allow_networks=tuple(
                ipaddress.ip_network(n.strip(), strict=False) for n in self.fetch_allow_networks
            ),
        )

    @property
    def hash_options(self) -> HashOptions:
        return HashOptions(
            max_pixels=self.max_pixels,
            max_image_bytes=self.max_upload_bytes,
            max_video_seconds=self.max_video_seconds,
        )

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        path = config_file or os.environ.get("BASTION_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    values.update(tomllib.load(fh))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for f in fields(cls):
            env = os.environ.get(f"BASTION_{f.name.upper()}")
            if env is not None and f.name != "extra":
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**{k: _coerce(k, v) for k, v in values.items()})


_DEFAULTS = {f.name: f for f in fields(Settings)}


log = logging.getLogger("bastion.config")
MASTER_KEY_FILE = "secret.key"


def key_dir(settings: Settings | None = None) -> Path:
    """The directory Bastion keeps its key files in (the master key, the audit log's keys) when
    their own settings do not name a file. Deliberately not the data directory: a backup or
    copy of the database must not carry the keys that open what is sealed in it.

    In order: the ``key_dir`` setting; ``BASTION_KEY_DIR``; ``/etc/bastion`` when running as
    root; else ``$XDG_CONFIG_HOME/bastion`` (``~/.config/bastion``). Files are created there
    0600 in a 0700 directory (``bastion.crypto``)."""
    chosen = (settings.key_dir if settings is not None else None) or os.environ.get(
        "BASTION_KEY_DIR"
    )
    if chosen:
        return Path(chosen).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/etc/bastion")
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "bastion"


def is_loopback_host(host: str) -> bool:
    """Whether serving on ``host`` reaches this machine only (``127.0.0.1``, ``::1``,
    ``localhost``). ``0.0.0.0``, ``::`` and names are not: they are reached from elsewhere."""
    text = str(host).strip().strip("[]").lower().rstrip(".")
    if text == "localhost" or text.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _coerce(name: str, value: Any) -> Any:
    """Environment values arrive as strings; give each its field's type or name the problem."""
    kind = type(getattr(Settings, name, None)) if hasattr(Settings, name) else None
    if name in _DEFAULTS and _DEFAULTS[name].type == "bool | None":
        kind = bool  # unset (None) means "derive it"; a given value is a plain boolean
    try:
        if kind is bool:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if kind is tuple:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(value)
    except (TypeError, ValueError) as exc:
        what = kind.__name__ if kind is not None else "value"
        raise ConfigError(f"setting {name}: {value!r} is not a valid {what}") from exc
    return value

"""Where each action is sent: webhook targets from the settings, validated at start-up.

``webhook_url``/``webhook_secret`` is the default target for every action; each
``[webhooks.<name>]`` table is another target for the actions it lists (``actions = [...]``) or,
without that list, for the action called ``<name>``. Secrets come from the config file or the
environment (``secret_env``) and are never written to the database.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bastion.actions.model import validate_action
from bastion.config import ConfigError, Settings

MIN_SECRET_BYTES = 16
MAX_TIMEOUT = 120.0
_TABLE_KEYS = frozenset({"url", "secret", "secret_env", "timeout", "actions"})


@dataclass(frozen=True, slots=True)
class Target:
    """One receiver. ``actions`` is empty for the default target, which takes every action no
    other target claims."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    timeout: float = 10.0
    actions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Targets:
    default: Target | None = None
    routes: Mapping[str, Target] = field(default_factory=dict)

    def for_action(self, action: str) -> Target | None:
        """The target for ``action``, or None when none is configured (the row then waits)."""
        return self.routes.get(action) or self.default

    @property
    def routable(self) -> frozenset[str] | None:
        """Actions some target takes; None means every action (a default target exists)."""
        return None if self.default is not None else frozenset(self.routes)

    @property
    def max_timeout(self) -> float:
        timeouts = [t.timeout for t in self.all()]
        return max(timeouts, default=10.0)

    def all(self) -> list[Target]:
        seen: dict[str, Target] = {}
        if self.default is not None:
            seen[self.default.name] = self.default
        for t in self.routes.values():
            seen.setdefault(t.name, t)
        return list(seen.values())

    def describe(self) -> list[dict[str, Any]]:
        """Targets without their secrets, for logs and status pages."""
        return [
            {
                "name": t.name,
                "url": _shown(t.url),
                "timeout": t.timeout,
                "actions": sorted(t.actions) if t.actions else ["*"],
            }
            for t in self.all()
        ]


def load_targets(settings: Settings, environ: Mapping[str, str] | None = None) -> Targets:
    """Build and check every target, or raise ConfigError naming the setting at fault."""
    env = os.environ if environ is None else environ
    default = None
    if settings.webhook_url or settings.webhook_secret:
        if not settings.webhook_url:
            raise ConfigError("setting webhook_secret is set but webhook_url is not")
        if not settings.webhook_secret:
            raise ConfigError(
                "setting webhook_url needs webhook_secret (or BASTION_WEBHOOK_SECRET) to sign "
                "requests with"
            )
        default = Target(
            name="default",
            url=_url("setting webhook_url", settings.webhook_url),
            secret=_secret("setting webhook_secret", settings.webhook_secret),
            timeout=_timeout("setting webhook_timeout", settings.webhook_timeout),
        )
    tables = settings.webhooks
    if isinstance(tables, str):  # from BASTION_WEBHOOKS: JSON of the same shape as the TOML
        try:
            tables = json.loads(tables) if tables.strip() else {}
        except ValueError:
            raise ConfigError("setting webhooks: environment value is not JSON") from None
    if not isinstance(tables, dict):
        raise ConfigError("setting webhooks must be a table of [webhooks.<name>] tables")
    routes: dict[str, Target] = {}
    for name, table in tables.items():
        target = _table(str(name), table, env)
        for action in target.actions:
            if action in routes:
                raise ConfigError(
                    f"action {action!r} is routed by both [webhooks.{routes[action].name}] and "
                    f"[webhooks.{name}]"
                )
            routes[action] = target
    return Targets(default=default, routes=routes)


def _table(name: str, table: object, env: Mapping[str, str]) -> Target:
    where = f"[webhooks.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table with url and secret")
    unknown = set(table) - _TABLE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(sorted(_TABLE_KEYS))})"
        )
    if "url" not in table:
        raise ConfigError(f"{where} needs url")
    if ("secret" in table) == ("secret_env" in table):
        raise ConfigError(f"{where} needs exactly one of secret or secret_env")
    if "secret_env" in table:
        var = table["secret_env"]
        if not isinstance(var, str) or not var:
            raise ConfigError(f"{where} secret_env must name an environment variable")
        if not env.get(var):
            raise ConfigError(f"{where} secret_env: environment variable {var} is not set")
        secret = _secret(f"{where} secret (from {var})", env[var])
    else:
        secret = _secret(f"{where} secret", table["secret"])
    actions = table.get("actions", [name])
    if isinstance(actions, str) or not isinstance(actions, list) or not actions:
        raise ConfigError(f"{where} actions must be a non-empty list of action names")
    try:
        names = frozenset(validate_action(a) for a in actions)
    except ValueError as exc:
        raise ConfigError(f"{where} actions: {exc}") from None
    return Target(
        name=name,
        url=_url(f"{where} url", table["url"]),
        secret=secret,
        timeout=_timeout(f"{where} timeout", table.get("timeout", 10.0)),
        actions=names,
    )


def _shown(url: str) -> str:
    """The URL for logs and pages, without a query string (some receivers put tokens there)."""
    parts = urlsplit(url)
    return parts._replace(query="…" if parts.query else "").geturl()


def _url(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be an http or https URL")
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: {value!r} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{what} must not contain user:password (URLs appear in logs); requests are "
            "authenticated by their signature"
        )
    if parts.fragment:
        raise ConfigError(f"{what}: {value!r} must not have a #fragment")
    return value


def _secret(what: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string")
    raw = value.encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{what} is {len(raw)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
            "(e.g. `openssl rand -hex 32`)"
        )
    return raw


def _timeout(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{what} must be a number of seconds")
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{what} must be a number of seconds, not {value!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise ConfigError(f"{what} must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    return seconds

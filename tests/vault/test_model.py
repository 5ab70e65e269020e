"""The vault's pure rules: retention periods, statutory minimums, hold arithmetic, roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.review import Forbidden
from bastion.vault import (
    RetentionError,
    RetentionRules,
    parse_jurisdictions,
    purgeable,
    released_until,
    require_evidence_role,
    state_of,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_default_is_one_year_and_uk_uses_the_default_unless_configured() -> None:
    rules = RetentionRules()
    assert rules.period("US") == 365 * DAY and rules.period("uk") == 365 * DAY
    rules = RetentionRules(default_days=500, jurisdictions={"uk": 730})
    assert rules.period("UK") == 730 * DAY and rules.period("US") == 365 * DAY
    assert rules.period("FR") == 500 * DAY


def test_the_us_period_cannot_go_below_the_report_act() -> None:
    with pytest.raises(RetentionError, match="at least 365"):
        RetentionRules(jurisdictions={"US": 90})
    # A short default leaves the US at its own period.
    assert RetentionRules(default_days=30).period("US") == 365 * DAY
    assert RetentionRules(default_days=30, jurisdictions={"US": 400}).period("US") == 400 * DAY


@pytest.mark.parametrize(
    "value", ["US", "US=0", "US=abc", {"U S": 1}, {"US": True}, {"US": 10**6}, 42]
)
def test_bad_jurisdiction_settings_are_refused(value: object) -> None:
    with pytest.raises(RetentionError):
        parse_jurisdictions(value)


def test_jurisdictions_from_the_environment() -> None:
    assert parse_jurisdictions("us=365, UK=730,") == {"US": 365, "UK": 730}
    assert parse_jurisdictions("") == {}


def test_settings_feed_the_rules() -> None:
    from bastion.config import Settings

    rules = RetentionRules.from_settings(
        Settings(vault_retention_days=400, vault_jurisdictions={"UK": 800})
    )
    assert rules.period("UK") == 800 * DAY and rules.period("DE") == 400 * DAY


def test_retain_until_before_and_after_reports() -> None:
    rules = RetentionRules(jurisdictions={"UK": 730})
    assert rules.preserved_until(T0, ["US"]) == T0 + 365 * DAY
    assert rules.preserved_until(T0, ["US", "UK"]) == T0 + 730 * DAY
    r = T0 + 10 * DAY
    assert rules.reported_until(r, "US", current=T0 + 730 * DAY, already_reported=False) == (
        r + 365 * DAY
    )
    assert rules.reported_until(r, "US", current=T0 + 730 * DAY, already_reported=True) == (
        T0 + 730 * DAY
    )


def test_release_adds_back_the_time_held_after_the_clock_started() -> None:
    until = T0 + 365 * DAY
    assert (
        released_until(until, held_at=T0 + 100 * DAY, released_at=T0 + 150 * DAY, clock_start=T0)
        == until + 50 * DAY
    )
    # Held before a report that restarted the clock: only time after the report counts.
    assert (
        released_until(until, held_at=T0 - 5 * DAY, released_at=T0 + 10 * DAY, clock_start=T0)
        == until + 10 * DAY
    )
    assert released_until(until, held_at=T0, released_at=T0 - DAY, clock_start=T0) == until


def test_purgeable_and_state() -> None:
    now = T0
    assert purgeable(retain_until=now, legal_hold=False, purged_at=None, now=now)
    assert not purgeable(retain_until=now, legal_hold=True, purged_at=None, now=now)
    assert not purgeable(retain_until=now + DAY, legal_hold=False, purged_at=None, now=now)
    assert not purgeable(retain_until=now, legal_hold=False, purged_at=now, now=now)
    assert state_of(retain_until=now + DAY, legal_hold=False, purged_at=None, now=now) == "active"
    assert state_of(retain_until=now, legal_hold=False, purged_at=None, now=now) == "expired"
    assert state_of(retain_until=now, legal_hold=True, purged_at=None, now=now) == "held"
    assert state_of(retain_until=now, legal_hold=True, purged_at=now, now=now) == "purged"


@pytest.mark.parametrize("role", ["senior_reviewer", "reviewer", "auditor", "nobody"])
def test_only_admins_read_evidence(role: str) -> None:
    require_evidence_role("admin")
    with pytest.raises(Forbidden):
        require_evidence_role(role)

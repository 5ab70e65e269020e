"""The policy's ``contact`` section: defaults, overrides, and clear errors with line numbers."""

from __future__ import annotations

import pytest

from bastion.contact.decide import ContactSettings
from bastion.contact.risk import RiskSettings
from bastion.policy import ContactPolicy, PolicyError, default_policy, parse_policy

BASE = """version: 1
rules:
  - name: any
    when: {labels_any: [csam]}
    verdict: review
"""


def errors(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(BASE + text)
    return exc.value.errors


def test_defaults_without_a_section_and_in_the_default_file() -> None:
    assert parse_policy(BASE).contact == ContactPolicy()
    # The default file writes every default out, so an operator sees what there is to change.
    assert default_policy().contact == ContactPolicy()
    assert "contact:" in default_policy().text
    summary = default_policy().as_dict()["contact"]
    assert summary["decide"]["spam_band"] == "high"
    assert summary["risk"]["fanout"]["window_hours"] == 24.0
    assert summary["case_band"] == "high"


def test_overrides() -> None:
    p = parse_policy(
        BASE
        + """contact:
  decide:
    unknown_age_as_child: false
    relaxable: [suggest]
  risk:
    max_mutuals: 2
    fanout: {min_targets: 8}
    fast_escalation: {kinds: [payment_request]}
  case_band: medium
"""
    )
    assert p.contact.decide == ContactSettings(
        unknown_age_as_child=False, relaxable=frozenset({"suggest"})
    )
    assert p.contact.risk.max_mutuals == 2
    assert p.contact.risk.fanout.min_targets == 8
    assert p.contact.risk.fanout.window_hours == RiskSettings().fanout.window_hours
    assert p.contact.risk.fast_escalation.kinds == frozenset({"payment_request"})
    assert p.contact.case_band == "medium"


def test_every_bad_value_is_reported_with_its_line() -> None:
    got = errors(
        """contact:
  decide:
    unknown_age_as_child: maybe
    spam_band: hihg
    relaxable: [suggest, everything]
    spam_bnad: low
  risk:
    fanout:
      windw_hours: 3
      min_targets: 0
    lookback_days: -1
  case_band: urgent
"""
    )
    first = BASE.count("\n") + 1  # the line of 'contact:'
    by_line = dict(got)
    assert "contact.decide.unknown_age_as_child" in by_line[first + 2]
    assert "'maybe'" in by_line[first + 2]
    assert "contact.decide.spam_band" in by_line[first + 3]
    assert "'low', 'medium' or 'high'" in by_line[first + 3]
    assert "contact.decide.relaxable" in by_line[first + 4]
    assert "'everything'" in by_line[first + 4]
    assert "unknown key 'spam_bnad' (did you mean 'spam_band'?)" in by_line[first + 5]
    assert (
        "contact.risk.fanout: unknown key 'windw_hours' (did you mean 'window_hours'?)"
        in (by_line[first + 8])
    )
    assert "contact.risk.fanout.min_targets" in by_line[first + 9]
    assert "greater than or equal to 1" in by_line[first + 9]
    assert "contact.risk.lookback_days" in by_line[first + 10]
    assert "contact.case_band 'urgent' is not one of: low, medium, high" in by_line[first + 11]
    assert len(got) == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contact: 5\n", "contact must be a mapping"),
        ("contact:\n  decide: [a]\n", "contact.decide must be a mapping"),
        ("contact:\n  deicde: {}\n", "unknown key 'deicde' (did you mean 'decide'?)"),
        (
            "contact:\n  risk: {medium_at: 70, high_at: 60}\n",
            "medium_at < high_at <= max_score, not 70, 60, 100",
        ),
        (
            "contact:\n  risk: {high_at: 120}\n",
            "medium_at < high_at <= max_score, not 30, 120, 100",
        ),
        ("contact:\n  risk: {fanout: {enabled: yes, enabled: no}}\n", "'enabled' is given twice"),
        ("contact:\n  decide: {spam_band: !!python/name:os.system ''}\n", "must be a value"),
        ("contact:\n  risk: {fanout: {max_response_rate: 1.5}}\n", "max_response_rate"),
        ("contact:\n  risk: {fanout: {points: ten}}\n", "contact.risk.fanout.points"),
    ],
)
def test_clear_errors(text: str, message: str) -> None:
    got = errors(text)
    assert any(message in m for _, m in got), got
    assert all(line is not None for line, _ in got)


def test_an_error_elsewhere_still_reports_the_contact_errors() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy("version: 1\nrules: []\ncontact: {decide: {spam_band: x}}\n")
    text = str(exc.value)
    assert "rules is empty" in text and "contact.decide.spam_band" in text


def test_text_flags_map_defaults_overrides_and_errors() -> None:
    """``contact.text_flags`` (keyword label -> flag kind, for ``text`` events): every flag kind
    maps to itself by default; a given map replaces it whole; ``{}`` turns it off; an unknown
    kind is an error on its line."""
    assert dict(parse_policy(BASE).contact.text_flags)["secrecy_request"] == "secrecy_request"
    assert default_policy().as_dict()["contact"]["text_flags"]["offplatform_handle"] == (
        "offplatform_handle"
    )
    custom = parse_policy(BASE + "contact:\n  text_flags: {grooming: secrecy_request}\n")
    assert custom.contact.text_flags == (("grooming", "secrecy_request"),)
    assert parse_policy(BASE + "contact:\n  text_flags: {}\n").contact.text_flags == ()
    (err,) = errors("contact:\n  text_flags:\n    grooming: secrets\n")
    assert (
        err[0] is not None
        and "contact.text_flags.grooming: 'secrets' is not a flag kind" in (err[1])
    )
    (err,) = errors("contact:\n  text_flags: [grooming]\n")
    assert "contact.text_flags must be a mapping" in err[1]

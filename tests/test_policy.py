"""Policy rules: parsing, line-numbered validation, every condition, rule order, the default
policy's decisions, and the hostile-YAML guards."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.policy import (
    MAX_POLICY_BYTES,
    MatchFacts,
    Policy,
    PolicyError,
    PolicyInput,
    QueueSpec,
    Verdict,
    default_policy,
    default_policy_text,
    load_policy,
    match_facts,
    parse_policy,
    policy_input,
)

REPO = Path(__file__).resolve().parents[1]


def policy(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text))


def errors_of(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(textwrap.dedent(text))
    return info.value.errors


def one_rule(when: str, extra: str = "") -> Policy:
    """A policy whose single rule 'r' blocks when ``when`` (a flow mapping) holds; other matched
    content gets ``otherwise`` (review)."""
    return policy(f"""\
        version: 1
        rules:
          - name: r
            when: {when}
            verdict: block
        {extra}""")


def m(
    bank: str = "hotline",
    entry: int = 1,
    stype: str = "pdq",
    distance: int = 0,
    labels: tuple[str, ...] = ("csam",),
) -> MatchFacts:
    return MatchFacts(bank, entry, stype, distance, frozenset(labels))


def image(*matches: MatchFacts, **kw: object) -> PolicyInput:
    return PolicyInput(kind=str(kw.pop("kind", "image")), matches=tuple(matches), **kw)  # type: ignore[arg-type]


def fires(p: Policy, inp: PolicyInput) -> bool:
    return p.decide(inp).rule == "r"


# -- parsing -----------------------------------------------------------------------------------

MINIMAL = """\
version: 1
rules:
  - name: anything-csam
    when: {labels_any: [csam]}
    verdict: review
"""


def test_minimal_policy_gets_every_default() -> None:
    p = parse_policy(MINIMAL, name="mini.yaml")
    assert p.rule_names == ("anything-csam",)
    assert p.name == "mini.yaml" and p.version == 1
    assert p.queues == {
        "default": QueueSpec("default", False, "Everything not routed elsewhere"),
        "senior": QueueSpec("senior", True, "Escalations: senior reviewers only"),
    }
    assert p.sla == {
        "critical": timedelta(hours=1),
        "high": timedelta(hours=4),
        "normal": timedelta(hours=24),
        "low": timedelta(hours=72),
    }
    r = p.review
    assert (r.four_eyes, r.lease, r.escalation_queue) == (False, timedelta(minutes=15), "senior")
    assert r.on_confirmed == ("remove_content", "restrict_account", "preserve")
    assert r.on_block == ("remove_content", "preserve")
    rule = p.rules[0]
    assert rule.line == 3
    out = rule.outcome
    assert (out.decision, out.priority, out.queue, out.actions, out.view_required) == (
        "review",
        "normal",
        "default",
        (),
        True,
    )
    assert (p.otherwise.decision, p.otherwise.priority) == ("review", "normal")


def test_every_setting_is_read() -> None:
    p = policy("""\
        version: 1
        queues:
          default: {description: First look}
          ncii-team: {description: Trained on NCII}
          leads: {senior: true}
        sla: {critical: 30m, high: 2h, normal: 1d, low: 1h30m}
        review:
          four_eyes: true
          lease: 90s
          escalation_queue: leads
          on_confirmed: [remove_content, notify_trust_team]
          on_block: [hide_pending]
        rules:
          - name: ncii
            description: Intimate images shared without consent
            when: {labels_any: [ncii]}
            verdict: review
            priority: high
            queue: ncii-team
            actions: [preserve]
            view_required: true
          - name: csam
            when: {labels_any: [csam]}
            verdict: block
        otherwise: {verdict: allow}
        """)
    assert p.queues["ncii-team"] == QueueSpec("ncii-team", False, "Trained on NCII")
    assert p.queues["leads"].senior and p.queues["senior"].senior
    assert p.queues["default"].description == "First look"
    assert p.sla["critical"] == timedelta(minutes=30)
    assert p.sla["low"] == timedelta(hours=1, minutes=30)
    assert p.review.four_eyes and p.review.lease == timedelta(seconds=90)
    assert p.review.escalation_queue == "leads"
    assert p.review.on_confirmed == ("remove_content", "notify_trust_team")
    ncii, csam = p.rules
    assert ncii.description == "Intimate images shared without consent"
    assert (ncii.outcome.priority, ncii.outcome.queue, ncii.outcome.actions) == (
        "high",
        "ncii-team",
        ("preserve",),
    )
    # A block rule without actions takes review.on_block; without a priority, high.
    assert (csam.outcome.actions, csam.outcome.priority) == (("hide_pending",), "high")
    assert p.otherwise.decision == "allow"
    assert p.decide(image(m(labels=("own",)))).decision == "allow"


def test_words_yaml_would_turn_into_booleans_or_numbers_stay_words() -> None:
    p = one_rule("{labels_any: [no, yes, 2023], banks: [2024-list], sources: [on]}")
    assert fires(p, image(m(bank="2024-list", labels=("2023",)), source="on"))
    assert fires(p, image(m(bank="2024-list", labels=("no",)), source="ON"))


# -- validation: every error with its line -----------------------------------------------------

HEADER = "version: 1\nrules:\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # the document
        ("- a\n- b\n", 1, "the policy must be a mapping of keys to values"),
        ("rules: []\n", 1, "the policy needs 'version: 1'"),
        ("version: 1\n", 1, "the policy needs a 'rules' list"),
        ("version: 2\nrules: []\n", 1, "version 2 is not supported"),
        ("version: one\n", 1, "version must be a whole number, not 'one'"),
        ("version: 1\nrule: []\n", 2, "unknown key 'rule' (did you mean 'rules'?)"),
        ("version: 1\nversion: 1\nrules: []\n", 2, "'version' is given twice"),
        ("version: 1\nrules: {a: 1}\n", 2, "rules must be a list of rules, not a mapping"),
        ("version: 1\nrules: []\n", 2, "rules is empty: give at least one rule"),
        ("version: 1\nrules: [\n", 3, "invalid YAML"),
        ("version: 1\n  rules: x\n", 2, "invalid YAML"),
        # a rule
        (HEADER + "  - just-a-name\n", 3, "rule 1 must be a mapping"),
        (HEADER + "  - {when: {labels_any: [x]}, verdict: review}\n", 3, "rule 1 needs a name"),
        (
            HEADER + "  - {name: Big Rule, when: {labels_any: [x]}, verdict: review}\n",
            3,
            "rule 1 name 'Big Rule' is not valid",
        ),
        (HEADER + "  - {name: a, verdict: review}\n", 3, "rule 'a' needs 'when' conditions"),
        (HEADER + "  - {name: a, when: {}, verdict: review}\n", 3, "rule 'a' has no conditions"),
        (
            HEADER + "  - {name: a, when: [labels_any], verdict: review}\n",
            3,
            "rule 'a' when must be a mapping",
        ),
        (HEADER + "  - {name: a, when: {labels_any: [x]}}\n", 3, "rule 'a' needs a verdict"),
        (
            HEADER + "  - name: a\n    when: {labels_any: [x]}\n    verdict: hide\n",
            5,
            "rule 'a' verdict 'hide' is not one of: allow, review, block",
        ),
        (
            HEADER
            + "  - name: a\n    when: {labels_any: [x]}\n    verdict: review\n    colour: red\n",
            6,
            "rule 'a': unknown key 'colour'",
        ),
        (
            HEADER
            + "  - name: a\n    when: {labels_any: [x]}\n    verdict: review\n    priority: p1\n",
            6,
            "rule 'a' priority 'p1' is not one of: critical, high, normal, low",
        ),
        (
            HEADER
            + "  - name: a\n    when: {labels_any: [x]}\n    verdict: review\n    queue: vip\n",
            6,
            "rule 'a' queue 'vip' is not a defined queue",
        ),
        (
            HEADER + "  - name: a\n    when: {labels_any: [x]}\n    verdict: block\n"
            "    actions: remove_content\n",
            6,
            "rule 'a' actions must be a list",
        ),
        (
            HEADER + "  - name: a\n    when: {labels_any: [x]}\n    verdict: block\n"
            "    actions: [Remove-Content]\n",
            6,
            "actions value 'Remove-Content' is not valid",
        ),
        (
            HEADER + "  - name: a\n    when: {labels_any: [x]}\n    verdict: block\n"
            "    view_required: sometimes\n",
            6,
            "view_required must be true or false",
        ),
        (
            HEADER
            + "  - name: a\n    when: {labels_any: [x]}\n    verdict: allow\n    priority: high\n",
            6,
            "'priority' does not apply to an allow verdict",
        ),
        (
            HEADER + "  - name: a\n    when: {labels_any: [x]}\n    verdict: review\n"
            "  - name: b\n    when: {labels_any: [y]}\n    verdict: review\n"
            "  - name: a\n    when: {labels_any: [z]}\n    verdict: review\n",
            9,
            "rule name 'a' is used twice (first on line 3)",
        ),
        # conditions
        (
            HEADER + "  - name: a\n    when:\n      label_any: [x]\n    verdict: review\n",
            5,
            "unknown key 'label_any' (did you mean 'labels_any'?)",
        ),
        (
            HEADER + "  - name: a\n    when:\n      labels_any: csam\n    verdict: review\n",
            5,
            "when.labels_any must be a list, e.g. [a, b], not 'csam'",
        ),
        (
            HEADER + "  - name: a\n    when:\n      labels_any: []\n    verdict: review\n",
            5,
            "when.labels_any is an empty list",
        ),
        (
            HEADER + "  - name: a\n    when:\n      labels_all: [x, x]\n    verdict: review\n",
            5,
            "when.labels_all: 'x' is listed twice",
        ),
        (
            HEADER + "  - name: a\n    when:\n      labels_any:\n        - x\n        - ''\n"
            "    verdict: review\n",
            7,
            "when.labels_any value must not be empty",
        ),
        (
            HEADER
            + "  - name: a\n    when:\n      signal_types: [pdq, phash]\n    verdict: review\n",
            5,
            "when.signal_types value 'phash' is not one of: pdq, vpdq, md5, sha256, url",
        ),
        (
            HEADER + "  - name: a\n    when:\n      kinds: [photo]\n    verdict: review\n",
            5,
            "when.kinds value 'photo' is not one of: image, video, file, url",
        ),
        (
            HEADER + "  - name: a\n    when:\n      age_bands: [child]\n    verdict: review\n",
            5,
            "when.age_bands value 'child' is not one of: under13, 13-15, 16-17, adult, unknown",
        ),
        (
            HEADER + "  - name: a\n    when:\n      banks: [no spaces]\n    verdict: review\n",
            5,
            "when.banks value 'no spaces' is not valid",
        ),
        (
            HEADER + "  - name: a\n    when:\n      max_distance: 257\n    verdict: review\n",
            5,
            "when.max_distance must be from 0 to 256, not 257",
        ),
        (
            HEADER + "  - name: a\n    when:\n      min_distance: -1\n    verdict: review\n",
            5,
            "when.min_distance must be from 0 to 256, not -1",
        ),
        (
            HEADER + "  - name: a\n    when:\n      max_distance: ten\n    verdict: review\n",
            5,
            "when.max_distance must be a whole number, not 'ten'",
        ),
        (
            HEADER + "  - name: a\n    when:\n      max_distance: 10.5\n    verdict: review\n",
            5,
            "when.max_distance must be a whole number, not '10.5'",
        ),
        (
            HEADER + "  - name: a\n    when:\n      max_distance: 5\n      min_distance: 9\n"
            "    verdict: review\n",
            6,
            "min_distance 9 is above max_distance 5",
        ),
        (
            HEADER + "  - name: a\n    when:\n      labels_any: [csam]\n      labels_none: [CSAM]\n"
            "    verdict: review\n",
            6,
            "labels csam are both required and excluded",
        ),
        (
            HEADER + "  - name: a\n    when:\n      matched: false\n      banks: [x]\n"
            "    verdict: review\n",
            6,
            "when.banks tests a match, but matched is false",
        ),
        (
            HEADER + "  - name: a\n    when:\n      matched: maybe\n    verdict: review\n",
            5,
            "when.matched must be true or false",
        ),
        (
            HEADER + "  - name: a\n    when:\n      uploader_confirmed_at_least: 0\n"
            "    verdict: review\n",
            5,
            "uploader_confirmed_at_least must be from 1 to 1000000",
        ),
        (
            HEADER + "  - name: a\n    when:\n      labels_any: [x]\n      labels_any: [y]\n"
            "    verdict: review\n",
            6,
            "'labels_any' is given twice",
        ),
        # otherwise
        (MINIMAL + "otherwise: review\n", 6, "otherwise must be a mapping"),
        (MINIMAL + "otherwise: {priority: high}\n", 6, "otherwise needs a verdict"),
        (MINIMAL + "otherwise: {verdict: review, when: {}}\n", 6, "otherwise: unknown key 'when'"),
        # queues, sla, review
        (
            "version: 1\nqueues:\n  Bad Queue: {}\n" + MINIMAL[11:],
            3,
            "queue name 'Bad Queue' is not valid",
        ),
        (
            "version: 1\nqueues:\n  senior: {senior: false}\n" + MINIMAL[11:],
            3,
            "the 'senior' queue is always a senior queue",
        ),
        (
            "version: 1\nqueues:\n  default: {senior: true}\n" + MINIMAL[11:],
            3,
            "the 'default' queue cannot be a senior queue",
        ),
        (
            "version: 1\nqueues:\n  vip: {seniors: true}\n" + MINIMAL[11:],
            3,
            "queue 'vip': unknown key 'seniors' (did you mean 'senior'?)",
        ),
        ("version: 1\nqueues: [vip]\n" + MINIMAL[11:], 2, "queues must be a mapping"),
        ("version: 1\nsla:\n  urgent: 1h\n" + MINIMAL[11:], 3, "sla: unknown key 'urgent'"),
        (
            "version: 1\nsla:\n  high: 4 hours\n" + MINIMAL[11:],
            3,
            "sla high '4 hours' is not a duration like 90s, 15m, 4h, 3d or 1h30m",
        ),
        ("version: 1\nsla:\n  high: 30s\n" + MINIMAL[11:], 3, "sla high must be from 1m to 365d"),
        ("version: 1\nsla:\n  high: 4\n" + MINIMAL[11:], 3, "sla high '4' is not a duration"),
        (
            "version: 1\nreview:\n  lease: 2d\n" + MINIMAL[11:],
            3,
            "review lease must be from 1m to 1d, not 2d",
        ),
        (
            "version: 1\nreview:\n  four_eyes: 2\n" + MINIMAL[11:],
            3,
            "review four_eyes must be true or false, not '2'",
        ),
        (
            "version: 1\nreview:\n  escalation_queue: default\n" + MINIMAL[11:],
            3,
            "review escalation_queue 'default' must be a senior queue",
        ),
        (
            "version: 1\nreview:\n  escalation_queue: seniors\n" + MINIMAL[11:],
            3,
            "review escalation_queue 'seniors' is not a defined queue (did you mean 'senior'?)",
        ),
        (
            "version: 1\nreview:\n  on_confirmed: [remove content]\n" + MINIMAL[11:],
            3,
            "review on_confirmed value 'remove content' is not valid",
        ),
        (
            "version: 1\nreview:\n  four_eye: true\n" + MINIMAL[11:],
            3,
            "review: unknown key 'four_eye' (did you mean 'four_eyes'?)",
        ),
    ],
)
def test_each_error_names_its_line(text: str, line: int, message: str) -> None:
    errors = errors_of(text)
    assert any(ln == line and message in msg for ln, msg in errors), errors


def test_all_errors_are_collected_in_line_order() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(
            textwrap.dedent("""\
                version: 1
                sla: {high: soon}
                rules:
                  - name: a
                    when: {labels_any: [x], max_distance: 999}
                    verdict: block
                    priority: urgent
                  - name: b
                    when: {kinds: [photo]}
                    verdict: review
                otherwise: {verdict: maybe}
                """),
            name="edited.yaml",
        )
    exc = info.value
    assert [line for line, _ in exc.errors] == [2, 5, 7, 9, 11]
    assert exc.name == "edited.yaml"
    lines = str(exc).splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("line 2: sla high 'soon' is not a duration")
    assert lines[4].startswith("line 11: otherwise verdict 'maybe'")
    assert isinstance(exc, ValueError)


# -- hostile YAML ------------------------------------------------------------------------------

BILLION_LAUGHS = """\
version: 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
rules: *i
"""


def test_billion_laughs_is_refused_before_anything_expands() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(BILLION_LAUGHS)
    assert info.value.errors == [(2, "anchor &a: anchors and aliases are not allowed in a policy")]


def test_an_alias_alone_is_refused_with_its_line() -> None:
    errors = errors_of("version: 1\nrules:\n  - name: a\n    when: *w\n    verdict: review\n")
    assert errors == [(4, "alias *w: anchors and aliases are not allowed in a policy")]


def test_merge_keys_are_refused() -> None:
    text = (
        "version: 1\nrules:\n  - name: a\n    when: {labels_any: [x]}\n    verdict: review\n"
        "  - <<: {verdict: block}\n    name: b\n    when: {labels_any: [y]}\n"
    )
    errors = errors_of(text)
    assert any(line == 6 and "merge keys (<<) are not allowed" in msg for line, msg in errors), (
        errors
    )


def test_python_tags_are_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (
        f"version: !!python/object/apply:os.system ['touch {marker}']\n"
        "rules:\n  - name: a\n    when: {labels_any: [x]}\n    verdict: !!python/name:os.getcwd\n"
    )
    errors = errors_of(text)
    assert not marker.exists()
    assert [line for line, _ in errors] == [1, 5]


def test_deep_nesting_is_refused() -> None:
    errors = errors_of("version: 1\nrules: " + "[" * 500 + "]" * 500 + "\n")
    assert errors == [(2, "nested deeper than 20 levels")]


def test_too_big_is_refused_before_parsing(tmp_path: Path) -> None:
    big = MINIMAL + "# " + "x" * MAX_POLICY_BYTES + "\n"
    with pytest.raises(PolicyError, match=f"the limit is {MAX_POLICY_BYTES}"):
        parse_policy(big)
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(PolicyError, match=f"the policy is over {MAX_POLICY_BYTES} bytes"):
        load_policy(path)


def test_empty_non_utf8_and_multi_document_files() -> None:
    assert errors_of("") == [(None, "the policy is empty: it needs at least version and rules")]
    assert errors_of("# only a comment\n")[0][1].startswith("the policy is empty")
    with pytest.raises(PolicyError) as info:
        parse_policy(b"version: 1\nrules:\n  - name: caf\xe9\n")
    assert info.value.errors == [(3, "not valid UTF-8 text")]
    assert errors_of("version: 1\nrules:\n  - name: a\x07\n") == [
        (3, "invalid YAML: special characters are not allowed")
    ]
    errors = errors_of(MINIMAL + "---\n" + MINIMAL)
    assert errors[0][0] == 6 and "invalid YAML" in errors[0][1]


# -- conditions --------------------------------------------------------------------------------


def test_banks_compare_case_insensitively() -> None:
    p = one_rule("{banks: [Hotline, partner.list]}")
    assert fires(p, image(m(bank="hotline")))
    assert fires(p, image(m(bank="partner.list")))
    assert not fires(p, image(m(bank="own")))


def test_labels_any_all_none() -> None:
    any_ = one_rule("{labels_any: [csam, A1]}")
    assert fires(any_, image(m(labels=("a1",))))
    assert fires(any_, image(m(labels=("CSAM", "other"))))
    assert not fires(any_, image(m(labels=("ncii",))))
    assert not fires(any_, image(m(labels=())))

    all_ = one_rule("{labels_all: [csam, verified]}")
    assert fires(all_, image(m(labels=("csam", "verified", "x"))))
    assert not fires(all_, image(m(labels=("csam",))))

    none = one_rule("{labels_none: [demo]}")
    assert fires(none, image(m(labels=("csam",))))
    assert fires(none, image(m(labels=())))
    assert not fires(none, image(m(labels=("demo", "csam"))))


def test_signal_types() -> None:
    p = one_rule("{signal_types: [md5, sha256]}")
    assert fires(p, image(m(stype="md5")))
    assert fires(p, image(m(stype="sha256")))
    assert not fires(p, image(m(stype="pdq")))


def test_distance_bounds_are_inclusive() -> None:
    p = one_rule("{min_distance: 11, max_distance: 31}")
    assert [fires(p, image(m(distance=d))) for d in (10, 11, 20, 31, 32)] == [
        False,
        True,
        True,
        True,
        False,
    ]
    exact = one_rule("{max_distance: 0}")
    assert fires(exact, image(m(distance=0)))
    assert not fires(exact, image(m(distance=1)))


def test_match_conditions_must_hold_for_the_same_match() -> None:
    p = one_rule("{labels_any: [csam], max_distance: 10}")
    far_csam = m(bank="hotline", entry=1, distance=30, labels=("csam",))
    near_other = m(bank="own", entry=2, distance=2, labels=("own",))
    assert not fires(p, image(far_csam, near_other))
    near_csam = m(bank="hotline", entry=3, distance=9, labels=("csam",))
    assert fires(p, image(far_csam, near_other, near_csam))


def test_kinds_with_other_counting_as_file() -> None:
    p = one_rule("{kinds: [video, file]}")
    assert fires(p, image(m(), kind="video"))
    assert fires(p, image(m(), kind="file"))
    assert fires(p, image(m(), kind="other"))  # what content sniffing calls non-media
    assert not fires(p, image(m(), kind="image"))


def test_sources_compare_case_insensitively_and_need_a_source() -> None:
    p = one_rule("{sources: [direct_message, Profile_Photo]}")
    assert fires(p, image(m(), source="direct_message"))
    assert fires(p, image(m(), source="profile_photo"))
    assert not fires(p, image(m(), source="public_post"))
    assert not fires(p, image(m()))


def test_age_bands_with_missing_counting_as_unknown() -> None:
    p = one_rule("{age_bands: [under13, 13-15, 16-17]}")
    assert fires(p, image(m(), age_band="13-15"))
    assert not fires(p, image(m(), age_band="adult"))
    assert not fires(p, image(m()))
    unknown = one_rule("{age_bands: [unknown]}")
    assert fires(unknown, image(m()))
    assert fires(unknown, image(m(), age_band="unknown"))


def test_uploader_confirmed_at_least() -> None:
    p = one_rule("{uploader_confirmed_at_least: 2}")
    assert [fires(p, image(m(), uploader_confirmed=n)) for n in (0, 1, 2, 9)] == [
        False,
        False,
        True,
        True,
    ]


def test_matched_false_acts_only_on_unmatched_content() -> None:
    p = one_rule("{matched: false, uploader_confirmed_at_least: 3}")
    v = p.decide(image(uploader_confirmed=3))
    assert (v.decision, v.rule) == ("block", "r")
    assert v.reason == "rule 'r': no match; uploader has 3 confirmed case(s)"
    assert p.decide(image(uploader_confirmed=2)).decision == "allow"
    # A matched upload from the same uploader is not this rule's business.
    assert p.decide(image(m(), uploader_confirmed=3)).rule is None


def test_rules_without_matched_need_a_match() -> None:
    p = one_rule("{kinds: [image]}")
    assert fires(p, image(m()))
    assert p.decide(image()) == Verdict("allow", None, "no match", "low", "default", (), True)


# -- decisions ---------------------------------------------------------------------------------

ORDERED = """\
version: 1
rules:
  - name: first
    when: {labels_any: [csam]}
    verdict: review
    priority: low
  - name: second
    when: {labels_any: [csam], max_distance: 5}
    verdict: block
    priority: critical
"""


def test_the_first_rule_that_fits_wins() -> None:
    inp = image(m(distance=2))
    assert policy(ORDERED).decide(inp).rule == "first"
    head, first, second = ORDERED.split("  - ")
    v = policy(f"{head}  - {second}  - {first}").decide(inp)
    assert (v.rule, v.decision, v.priority) == ("second", "block", "critical")
    # The second rule does not fit a far match, so the first still catches that.
    assert policy(f"{head}  - {second}  - {first}").decide(image(m(distance=9))).rule == "first"


def test_otherwise_catches_matches_no_rule_caught() -> None:
    p = policy(ORDERED + "otherwise: {verdict: review, priority: high, queue: senior}\n")
    v = p.decide(
        image(m(bank="own", entry=4, distance=20, labels=("own",)), m(distance=0, labels=()))
    )
    assert (v.decision, v.rule, v.priority, v.queue) == ("review", None, "high", "senior")
    assert v.reason == "no rule caught it; closest match: bank 'hotline' entry 1 pdq distance 0"
    assert p.decide(image()).decision == "allow"


def test_reason_names_the_rule_and_the_closest_fitting_match() -> None:
    p = one_rule("{labels_any: [csam]}")
    v = p.decide(
        image(
            m(bank="own", entry=9, distance=0, labels=()),
            m(bank="hotline", entry=12, distance=14),
            m(bank="hotline", entry=7, distance=6, stype="vpdq"),
        )
    )
    assert v.reason == "rule 'r': match: bank 'hotline' entry 7 vpdq distance 6"
    assert v == Verdict(
        "block", "r", v.reason, "high", "default", ("remove_content", "preserve"), True
    )


def test_an_allow_rule_stops_later_rules() -> None:
    p = policy("""\
        version: 1
        rules:
          - name: ignore-demo
            when: {banks: [demo]}
            verdict: allow
          - name: anything
            when: {labels_none: [nothing]}
            verdict: block
        """)
    v = p.decide(image(m(bank="demo", labels=("demo",))))
    assert (v.decision, v.rule, v.actions) == ("allow", "ignore-demo", ())
    assert p.decide(image(m(bank="hotline"))).rule == "anything"


# -- the default policy ------------------------------------------------------------------------


def test_packaged_default_is_the_file_in_the_repository() -> None:
    assert default_policy_text() == (REPO / "bastion" / "default_policy.yaml").read_text()
    p = default_policy()
    assert p.rule_names == (
        "csam-exact",
        "csam-confident",
        "csam-url",
        "keyword-urgent",
        "keyword",
        "identity-lead",
        "repeat-uploader",
        "csam-possible",
        "ncii",
    )


@pytest.mark.parametrize(
    ("facts", "uploader", "expect"),
    [
        # An exact copy of known material: hide, preserve, decide without viewing.
        (
            {"signal_type": "md5", "distance": 0},
            0,
            ("block", "csam-exact", "critical", ("remove_content", "preserve"), False),
        ),
        (
            {"signal_type": "sha256", "distance": 0},
            0,
            ("block", "csam-exact", "critical", ("remove_content", "preserve"), False),
        ),
        # Near copies: hide at once, but a person views them to confirm.
        (
            {"signal_type": "pdq", "distance": 0},
            0,
            ("block", "csam-confident", "critical", ("remove_content", "preserve"), True),
        ),
        (
            {"signal_type": "pdq", "distance": 16},
            0,
            ("block", "csam-confident", "critical", ("remove_content", "preserve"), True),
        ),
        (
            {"signal_type": "vpdq", "distance": 9},
            0,
            ("block", "csam-confident", "critical", ("remove_content", "preserve"), True),
        ),
        (
            {"signal_type": "url", "distance": 0},
            0,
            ("block", "csam-url", "critical", ("remove_content", "preserve"), True),
        ),
        # Weaker: a person decides before anything is hidden.
        ({"signal_type": "pdq", "distance": 17}, 0, ("review", "csam-possible", "high", (), True)),
        ({"signal_type": "pdq", "distance": 31}, 0, ("review", "csam-possible", "high", (), True)),
        # A repeat uploader's weak match is hidden too.
        (
            {"signal_type": "pdq", "distance": 25},
            1,
            ("block", "repeat-uploader", "high", ("remove_content", "preserve"), True),
        ),
        # An exact match still goes to the top priority for a repeat uploader.
        (
            {"signal_type": "md5", "distance": 0},
            4,
            ("block", "csam-exact", "critical", ("remove_content", "preserve"), False),
        ),
    ],
)
def test_default_policy_on_csam_bank_matches(
    facts: dict[str, object], uploader: int, expect: tuple[object, ...]
) -> None:
    match = {"bank": "hotline", "entry": 41, "external_id": "H-1", "labels": [], **facts}
    inp = policy_input(
        "image", {"uploader_id": "u1"}, [match], {"hotline": ["csam"]}, uploader_confirmed=uploader
    )
    v = default_policy().decide(inp)
    assert (v.decision, v.rule, v.priority, v.actions, v.view_required) == expect
    assert v.queue == "default"
    assert "bank 'hotline' entry 41" in v.reason and f"distance {facts['distance']}" in v.reason


def test_default_policy_on_other_banks_and_no_match() -> None:
    p = default_policy()
    banks = {"partner": [], "stopncii": ["ncii"], "demo": ["demo"]}

    def decide(match: dict[str, object] | None, uploader: int = 0) -> Verdict:
        base = {"entry": 5, "signal_type": "pdq", "distance": 4, "labels": []}
        matches = [{**base, **match}] if match else []
        return p.decide(policy_input("image", {}, matches, banks, uploader_confirmed=uploader))

    # Industry classification on the entry counts as CSAM in an unlabelled bank.
    v = decide({"bank": "partner", "labels": ["B2"], "signal_type": "md5", "distance": 0})
    assert (v.decision, v.rule, v.view_required) == ("block", "csam-exact", False)
    v = decide({"bank": "stopncii"})
    assert (v.decision, v.rule, v.priority, v.actions) == ("review", "ncii", "high", ())
    v = decide({"bank": "demo"})
    assert (v.decision, v.rule, v.priority) == ("review", None, "normal")
    v = decide({"bank": "demo"}, uploader=1)
    assert (v.decision, v.rule, v.priority) == ("block", "repeat-uploader", "high")
    assert "uploader has 1 confirmed case(s)" in v.reason
    assert decide(None).decision == "allow"
    assert decide(None, uploader=5).decision == "allow"


# -- inputs ------------------------------------------------------------------------------------


def test_match_facts_adds_bank_labels_and_skips_malformed_matches() -> None:
    facts = match_facts(
        [
            {"bank": "Hotline", "entry": 3, "signal_type": "pdq", "distance": 7, "labels": ["A1"]},
            {"bank": "own", "entry_id": 4, "signal_type": "md5", "distance": 0},
            {"bank": "own", "entry": "5", "signal_type": "md5", "distance": 0},
            {"bank": "own", "entry": 6, "signal_type": "md5", "distance": True},
            {"entry": 7, "signal_type": "md5", "distance": 0},
        ],
        {"hotline": ["csam"], "own": []},
    )
    assert facts == (
        MatchFacts("Hotline", 3, "pdq", 7, frozenset({"A1", "csam"})),
        MatchFacts("own", 4, "md5", 0, frozenset()),
    )


def test_policy_input_reads_the_context() -> None:
    inp = policy_input(
        "video",
        {"content_id": "c1", "uploader_id": "u", "source": "dm", "age_band": "16-17"},
        [],
        uploader_confirmed=2,
    )
    assert inp == PolicyInput("video", "dm", "16-17", 2, ())
    assert policy_input("image", {"source": 5}, []).source is None
    assert policy_input("image", None, []).age_band is None


def test_summary_and_digest() -> None:
    p = default_policy()
    d = p.as_dict()
    assert d["sla"] == {"critical": "1h", "high": "4h", "normal": "1d", "low": "3d"}
    assert d["review"]["lease"] == "15m"
    first = d["rules"][0]
    assert first["when"] == {
        "labels_any": ["csam", "A1", "A2", "B1", "B2"],
        "signal_types": ["md5", "sha256"],
    }
    line = default_policy_text().splitlines().index("  - name: csam-exact") + 1
    assert (first["verdict"], first["view_required"], first["line"]) == ("block", False, line)
    assert d["otherwise"] == {
        "verdict": "review",
        "priority": "normal",
        "queue": "default",
        "actions": [],
        "view_required": True,
    }
    assert len(p.digest) == 64
    assert parse_policy(MINIMAL).digest != parse_policy(MINIMAL + "# edit\n").digest


def test_uploader_history_is_needed_only_where_a_rule_can_use_it() -> None:
    default = default_policy()
    assert default.needs_uploader_history(True)  # the repeat-uploader rule
    assert not default.needs_uploader_history(False)  # no rule acts on unmatched content
    unmatched = policy(
        """\
        version: 1
        rules:
          - name: watch-repeat-uploaders
            when: {matched: false, uploader_confirmed_at_least: 2}
            verdict: review
        """
    )
    assert unmatched.needs_uploader_history(False)
    assert not unmatched.needs_uploader_history(True)

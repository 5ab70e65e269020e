"""Policy: matches and context → verdict, by rules in a YAML file.

Pure: no web or database imports, so the API, the console, the worker and ``bastion policy test``
all decide with the same code. The file is parsed with PyYAML's safe composer, so every value keeps
its line number and every mistake is reported at once as ``line N: message``
(:class:`PolicyError`). Anchors and aliases are refused (no "billion laughs"), as are files over
:data:`MAX_POLICY_BYTES`.

File shape (docs/policy.md explains each field; ``bastion/default_policy.yaml`` is an example)::

    version: 1                                  # required
    queues:                                     # 'default' and 'senior' always exist
      default: {description: text}
      senior: {senior: true, description: text} # senior: only senior reviewers and admins
    sla: {critical: 1h, high: 4h, normal: 24h, low: 72h}
    review:
      four_eyes: false                          # a second reviewer must agree (either way)
      lease: 15m                                # how long a claimed case stays with its reviewer
      escalation_queue: senior                  # must be a senior queue
      on_confirmed: [remove_content, restrict_account, preserve]
      on_block: [remove_content, preserve]      # actions of a block rule that names none
    rules:                                      # the first rule whose conditions hold wins
      - name: csam-exact
        description: text
        when: {labels_any: [csam], signal_types: [md5, sha256]}
        verdict: block                          # allow | review | block
        priority: critical                      # critical | high | normal | low
        queue: default
        actions: [remove_content, preserve]
        view_required: false
    otherwise: {verdict: review, priority: normal}

Conditions in ``when`` must all hold. Match conditions (``banks``, ``labels_any``, ``labels_all``,
``labels_none``, ``signal_types``, ``max_distance``, ``min_distance``) must all hold for one and
the same match. Content conditions: ``kinds``, ``sources``, ``age_bands``,
``uploader_confirmed_at_least`` and ``matched`` (default true: the content matched at least one
bank entry; false: it matched none, e.g. for uploads from repeat offenders). Content that matched
but that no rule caught gets ``otherwise``; content that matched nothing and that no rule caught
is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeGuard, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import SafeConstructor
from yaml.events import Event, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from bastion.contact.decide import ContactSettings
from bastion.contact.model import FLAG_KINDS, RISK_BANDS, FlagKind, RiskBand
from bastion.contact.risk import RiskSettings
from bastion.contact.textflags import DEFAULT_TEXT_FLAGS
from bastion.vocab import AGE_BANDS, DEFAULT_SLA, PRIORITIES, Priority

log = logging.getLogger("bastion.policy")

Decision = Literal["allow", "review", "block"]

DECISIONS: tuple[Decision, ...] = ("allow", "review", "block")
#: Highest first: queues are worked in this order.
SIGNAL_TYPES: tuple[str, ...] = ("pdq", "vpdq", "md5", "sha256", "url", "text")
#: Account identifiers, matched as keyed hashes (docs/identity-signals.md): leads, not proof.
IDENTITY_SIGNAL_TYPES: tuple[str, ...] = ("email", "username", "phone", "ip")
SIGNAL_TYPES += IDENTITY_SIGNAL_TYPES
#: Content kinds a rule can name. A scan's sniffed kind ``other`` counts as ``file``; ``text`` is
#: text scanned for keywords (a post, comment, bio, username or search query); ``account`` is
#: an account's identifiers scanned against identity banks.
KINDS: tuple[str, ...] = ("image", "video", "file", "url", "text", "account")
_KIND_ALIASES = {"other": "file"}
BUILTIN_ACTIONS: tuple[str, ...] = ("remove_content", "restrict_account", "preserve")
DEFAULT_QUEUE = "default"
SENIOR_QUEUE = "senior"

MAX_POLICY_BYTES = 1_000_000
MAX_RULES = 1000
MAX_LIST = 1000
_MAX_DEPTH = 20
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_BANK_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$", re.IGNORECASE)
_QUEUE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_MAX_DISTANCE = 256

_DEFAULT_ON_CONFIRMED = ("remove_content", "restrict_account", "preserve")
_DEFAULT_ON_BLOCK = ("remove_content", "preserve")
_DEFAULT_REVERSALS = (
    ("remove_content", "restore_content"),
    ("restrict_account", "unrestrict_account"),
)

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"
_KNOWN_TAGS = {_STR, _INT, _BOOL, _NULL, _FLOAT, "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


class PolicyError(ValueError):
    """A policy file that cannot be used. ``errors`` holds every problem found as
    ``(line, message)`` (line 1-based, None when it is about the file as a whole)."""

    def __init__(self, errors: list[tuple[int | None, str]], name: str = "<policy>") -> None:
        self.errors = sorted(errors, key=lambda e: e[0] or 0)
        self.name = name
        super().__init__("\n".join(_error_line(line, msg) for line, msg in self.errors))


def _error_line(line: int | None, message: str) -> str:
    return f"line {line}: {message}" if line is not None else message


# -- inputs and outputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchFacts:
    """What policy knows of one match. ``labels`` are the entry's labels and its bank's."""

    bank: str
    entry_id: int
    signal_type: str
    distance: int
    labels: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """One piece of content as policy sees it: no bytes, only facts."""

    kind: str
    source: str | None = None
    age_band: str | None = None
    uploader_confirmed: int = 0
    matches: tuple[MatchFacts, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one piece of content. ``actions`` fire at once; ``view_required`` False
    lets a reviewer decide from match metadata without revealing media."""

    decision: Decision
    rule: str | None
    reason: str
    priority: Priority
    queue: str
    actions: tuple[str, ...]
    view_required: bool


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    senior: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class ReviewSettings:
    four_eyes: bool = False
    lease: timedelta = timedelta(minutes=15)
    escalation_queue: str = SENIOR_QUEUE
    #: Actions fired when a case is finally confirmed.
    on_confirmed: tuple[str, ...] = _DEFAULT_ON_CONFIRMED
    #: Actions of a block rule that names none.
    on_block: tuple[str, ...] = _DEFAULT_ON_BLOCK
    #: What undoes an action (action -> its reversal): sent for every such action already
    #: queued for a case when the case is finally found not abusive.
    reversals: tuple[tuple[str, str], ...] = _DEFAULT_REVERSALS

    def reversal_of(self, action: str) -> str | None:
        return dict(self.reversals).get(action)


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    """The ``contact`` section: child-contact decisions (ICU F1/F2) and behavioural risk."""

    #: The contact-decision settings (:func:`bastion.contact.decide.decide`).
    decide: ContactSettings = field(default_factory=ContactSettings)
    #: The risk detectors' parameters, score thresholds and bands (:mod:`bastion.contact.risk`).
    risk: RiskSettings = field(default_factory=RiskSettings)
    #: A risk band at or above this opens an account case for review; risk never acts alone.
    case_band: RiskBand = "high"
    #: The queue and priority of account cases (the worker's account-case loop opens them).
    case_queue: str = DEFAULT_QUEUE
    case_priority: Priority = "high"
    #: After a not-abusive decision an account gets a new case only if a detector fired that
    #: had not, or its score rose by at least this many points.
    case_reopen_margin: int = 10
    #: Keyword labels whose matches in a ``text`` event become flags, and the flag kind each
    #: becomes (:mod:`bastion.contact.textflags`); as pairs, sorted, so the policy stays hashable.
    text_flags: tuple[tuple[str, FlagKind], ...] = tuple(sorted(DEFAULT_TEXT_FLAGS.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "decide": _plain(self.decide),
            "risk": _plain(self.risk),
            "case_band": self.case_band,
            "case_queue": self.case_queue,
            "case_priority": self.case_priority,
            "case_reopen_margin": self.case_reopen_margin,
            "text_flags": dict(self.text_flags),
        }


def _plain(model: BaseModel) -> dict[str, Any]:
    """A settings model as JSON-ready data, sets as sorted lists (stable for pages and diffs)."""

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, frozenset | set):
            return sorted(value)
        return value

    return fix(model.model_dump())  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Conditions:
    """A rule's ``when``. None means "not tested". Names and labels are casefolded for
    comparison; ``written`` keeps them as the file wrote them, for display."""

    banks: frozenset[str] | None = None
    labels_any: frozenset[str] | None = None
    labels_all: frozenset[str] | None = None
    labels_none: frozenset[str] | None = None
    signal_types: frozenset[str] | None = None
    max_distance: int | None = None
    min_distance: int | None = None
    kinds: frozenset[str] | None = None
    sources: frozenset[str] | None = None
    age_bands: frozenset[str] | None = None
    uploader_confirmed_at_least: int | None = None
    matched: bool = True
    written: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def fits_content(self, inp: PolicyInput) -> bool:
        if self.matched != bool(inp.matches):
            return False
        if self.kinds is not None:
            kind = _KIND_ALIASES.get(inp.kind, inp.kind)
            if kind not in self.kinds:
                return False
        if self.sources is not None and (inp.source or "").casefold() not in self.sources:
            return False
        if self.age_bands is not None and (inp.age_band or "unknown") not in self.age_bands:
            return False
        at_least = self.uploader_confirmed_at_least
        return at_least is None or inp.uploader_confirmed >= at_least

    def fits_match(self, m: MatchFacts, labels: frozenset[str]) -> bool:
        """``labels`` are ``m.labels`` casefolded (done once per decision, not per rule)."""
        if self.banks is not None and m.bank.casefold() not in self.banks:
            return False
        if self.signal_types is not None and m.signal_type not in self.signal_types:
            return False
        if self.max_distance is not None and m.distance > self.max_distance:
            return False
        if self.min_distance is not None and m.distance < self.min_distance:
            return False
        if self.labels_any is not None and not labels & self.labels_any:
            return False
        if self.labels_all is not None and not self.labels_all <= labels:
            return False
        return self.labels_none is None or not labels & self.labels_none

    def as_dict(self) -> dict[str, Any]:
        """The conditions given, as the policy file wrote them."""
        if self.written is not None:
            return {
                k: list(v) if isinstance(v, list | tuple) else v for k, v in self.written.items()
            }
        out: dict[str, Any] = {}
        for name in _CONDITION_KEYS:
            value = getattr(self, name)
            if name == "matched":
                if not value:
                    out["matched"] = False
            elif isinstance(value, frozenset):
                out[name] = sorted(value)
            elif value is not None:
                out[name] = value
        return out

    def describe(self) -> str:
        """One line for logs and tables: ``labels_any=csam signal_types=md5,sha256``."""
        parts = [
            f"{k}={','.join(v) if isinstance(v, list) else str(v).lower()}"
            for k, v in self.as_dict().items()
        ]
        return " ".join(parts) or "any match"


_MATCH_KEYS = (
    "banks",
    "labels_any",
    "labels_all",
    "labels_none",
    "signal_types",
    "max_distance",
    "min_distance",
)
_CONTENT_KEYS = ("kinds", "sources", "age_bands", "uploader_confirmed_at_least", "matched")
_CONDITION_KEYS = _MATCH_KEYS + _CONTENT_KEYS


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    priority: Priority = "normal"
    queue: str = DEFAULT_QUEUE
    actions: tuple[str, ...] = ()
    view_required: bool = True


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: Conditions
    outcome: Outcome
    description: str = ""
    line: int | None = None


_NO_MATCH = Verdict("allow", None, "no match", "low", DEFAULT_QUEUE, (), True)


@dataclass(frozen=True)
class Policy:
    """A validated policy. Build it with :func:`parse_policy` or :func:`load_policy`."""

    rules: tuple[Rule, ...]
    otherwise: Outcome = Outcome("review")
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    sla: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_SLA))
    review: ReviewSettings = ReviewSettings()
    contact: ContactPolicy = ContactPolicy()
    version: int = 1
    name: str = "<policy>"
    text: str = ""

    def needs_uploader_history(self, matched: bool) -> bool:
        """Whether deciding on content (matched or not) can depend on the uploader's confirmed
        cases, so callers look that up only when some rule could use it."""
        return any(
            r.when.uploader_confirmed_at_least is not None and r.when.matched == matched
            for r in self.rules
        )

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    @property
    def digest(self) -> str:
        """SHA-256 of the file's text: names this version of the policy in audit records."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (durations as text like ``4h``), for ``policy show`` and pages."""

        def outcome(o: Outcome) -> dict[str, Any]:
            if o.decision == "allow":
                return {"verdict": "allow"}
            return {
                "verdict": o.decision,
                "priority": o.priority,
                "queue": o.queue,
                "actions": list(o.actions),
                "view_required": o.view_required,
            }

        return {
            "version": self.version,
            "digest": self.digest,
            "queues": {
                q.name: {"senior": q.senior, "description": q.description}
                for q in self.queues.values()
            },
            "sla": {p: format_duration(self.sla[p]) for p in PRIORITIES},
            "review": {
                "four_eyes": self.review.four_eyes,
                "lease": format_duration(self.review.lease),
                "escalation_queue": self.review.escalation_queue,
                "on_confirmed": list(self.review.on_confirmed),
                "on_block": list(self.review.on_block),
                "reversals": dict(self.review.reversals),
            },
            "rules": [
                {
                    "name": r.name,
                    "description": r.description,
                    "when": r.when.as_dict(),
                    **outcome(r.outcome),
                    "line": r.line,
                }
                for r in self.rules
            ],
            "otherwise": outcome(self.otherwise),
            "contact": self.contact.as_dict(),
        }

    def decide(self, inp: PolicyInput) -> Verdict:
        """The verdict of the first rule that fits ``inp``; else ``otherwise`` for content that
        matched, and allow for content that did not."""
        folded = [(m, frozenset(label.casefold() for label in m.labels)) for m in inp.matches]
        for rule in self.rules:
            cond = rule.when
            if not cond.fits_content(inp):
                continue
            deciding: MatchFacts | None = None
            if folded:
                fitting = [m for m, labels in folded if cond.fits_match(m, labels)]
                if not fitting:
                    continue
                deciding = _closest(fitting)
            return _verdict(rule.outcome, rule.name, _reason(rule, deciding, inp))
        if not folded:
            return _NO_MATCH
        best = _closest([m for m, _ in folded])
        return _verdict(self.otherwise, None, f"no rule caught it; closest {_describe(best)}")


def _closest(matches: list[MatchFacts]) -> MatchFacts:
    return min(matches, key=lambda m: (m.distance, m.bank, m.entry_id))


def _describe(m: MatchFacts) -> str:
    return f"match: bank {m.bank!r} entry {m.entry_id} {m.signal_type} distance {m.distance}"


def _reason(rule: Rule, deciding: MatchFacts | None, inp: PolicyInput) -> str:
    text = f"rule {rule.name!r}: " + (_describe(deciding) if deciding else "no match")
    if rule.when.uploader_confirmed_at_least is not None:
        text += f"; uploader has {inp.uploader_confirmed} confirmed case(s)"
    return text


def _verdict(out: Outcome, rule: str | None, reason: str) -> Verdict:
    return Verdict(
        out.decision, rule, reason, out.priority, out.queue, out.actions, out.view_required
    )


# -- building inputs ---------------------------------------------------------------------------


def match_facts(
    matches: Iterable[Mapping[str, Any]], bank_labels: Mapping[str, Iterable[str]] | None = None
) -> tuple[MatchFacts, ...]:
    """MatchOut-shaped dicts (``bank``, ``entry``, ``signal_type``, ``distance``, ``labels``) as
    :class:`MatchFacts`, each with its bank's labels added. Malformed dicts are skipped."""
    banks = {k.casefold(): frozenset(v) for k, v in (bank_labels or {}).items()}
    out = []
    for m in matches:
        bank, stype, dist = m.get("bank"), m.get("signal_type"), m.get("distance")
        entry = m.get("entry", m.get("entry_id"))
        if not isinstance(bank, str) or not isinstance(stype, str):
            continue
        if not _is_int(entry) or not _is_int(dist):
            continue
        labels = frozenset(x for x in m.get("labels") or () if isinstance(x, str))
        out.append(
            MatchFacts(bank, entry, stype, dist, labels | banks.get(bank.casefold(), frozenset()))
        )
    return tuple(out)


def policy_input(
    kind: str,
    context: Mapping[str, Any] | None,
    matches: Iterable[Mapping[str, Any]],
    bank_labels: Mapping[str, Iterable[str]] | None = None,
    uploader_confirmed: int = 0,
) -> PolicyInput:
    """A :class:`PolicyInput` from a scan's kind, its context dict (``source``, ``age_band``)
    and its MatchOut dicts."""
    ctx = context or {}
    source, band = ctx.get("source"), ctx.get("age_band")
    return PolicyInput(
        kind=kind,
        source=source if isinstance(source, str) else None,
        age_band=band if isinstance(band, str) else None,
        uploader_confirmed=uploader_confirmed,
        matches=match_facts(matches, bank_labels),
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# -- parsing -----------------------------------------------------------------------------------

#: One of a fixed set of words (a Decision, a Priority): what ``choice`` hands back.
_Choice = TypeVar("_Choice", bound=str)


class _AliasFound(Exception):
    def __init__(self, line: int, what: str) -> None:
        self.line, self.what = line, what


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _event_line(event: Event) -> int:
    """The 1-based line an event starts on (the parser gives every event its marks)."""
    assert event.start_mark is not None
    return event.start_mark.line + 1


class _Loader(yaml.SafeLoader):
    """The safe composer, refusing anchors and aliases (so nothing expands) and deep nesting."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        if isinstance(event, yaml.AliasEvent):
            raise _AliasFound(_event_line(event), f"alias *{event.anchor}")
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise _AliasFound(_event_line(event), f"anchor &{event.anchor}")
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise _TooDeep(_event_line(event))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str) -> Node | None:
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def parse_policy(text: str | bytes, name: str = "<policy>") -> Policy:
    """Validate and build a policy, or raise :class:`PolicyError` listing every problem."""
    if isinstance(text, bytes):
        raw = text
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyError([(None, _too_big(len(raw)))], name)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise PolicyError([(line, "not valid UTF-8 text")], name) from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        raise PolicyError([(None, _too_big(size))], name)
    try:
        root = _compose(text)
    except _AliasFound as exc:
        raise PolicyError(
            [(exc.line, f"{exc.what}: anchors and aliases are not allowed in a policy")], name
        ) from None
    except _TooDeep as exc:
        raise PolicyError([(exc.line, f"nested deeper than {_MAX_DEPTH} levels")], name) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        mark_line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyError([(mark_line, f"invalid YAML: {problem}")], name) from None
    except ReaderError as exc:  # a control character the reader refuses
        line = text[: exc.position].count("\n") + 1
        raise PolicyError([(line, f"invalid YAML: {exc.reason}")], name) from None
    except yaml.YAMLError as exc:
        raise PolicyError([(None, f"invalid YAML: {exc}")], name) from None
    if root is None:
        raise PolicyError(
            [(None, "the policy is empty: it needs at least version and rules")], name
        )
    builder = _Builder()
    policy = builder.policy(root, name=name, text=text)
    if builder.errors or policy is None:
        raise PolicyError(builder.errors, name)
    return policy


def _too_big(size: int | None) -> str:
    what = f"{size} bytes" if size is not None else f"over {MAX_POLICY_BYTES} bytes"
    return f"the policy is {what}; the limit is {MAX_POLICY_BYTES}"


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and parse a policy file. OSError when it cannot be read; PolicyError when invalid."""
    with open(path, "rb") as f:
        data = f.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError([(None, _too_big(None))], str(path))
    return parse_policy(data, name=str(path))


def default_policy_text() -> str:
    """The packaged default policy (bastion/default_policy.yaml)."""
    return resources.files("bastion").joinpath("default_policy.yaml").read_text(encoding="utf-8")


def default_policy() -> Policy:
    return parse_policy(default_policy_text(), name="default_policy.yaml")


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(choices)


class _Builder:
    """Walks the composed nodes, collecting every error with its line instead of stopping at
    the first."""

    def __init__(self) -> None:
        self.errors: list[tuple[int | None, str]] = []
        self._constructor = SafeConstructor()

    def error(self, node: Node | int | None, message: str) -> None:
        line = _line(node) if isinstance(node, Node) else node
        self.errors.append((line, message))

    # -- node helpers --

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...]) -> dict[str, Node] | None:
        """Keys to value nodes; unknown and repeated keys are errors."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping of keys to values")
            return None
        out: dict[str, Node] = {}
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.tag == _MERGE:
                self.error(key, f"{what}: merge keys (<<) are not allowed in a policy")
                continue
            if not isinstance(key, ScalarNode) or key.tag not in (_STR, _INT, _BOOL, _NULL):
                self.error(key, f"{what}: keys must be plain words, not {_shape(key)}")
                continue
            name = key.value
            if name not in allowed:
                self.error(
                    key,
                    f"{what}: unknown key {name!r}{_suggest(name, allowed)}; "
                    f"expected one of: {_one_of(allowed)}",
                )
                continue
            if name in out:
                self.error(key, f"{what}: {name!r} is given twice")
                continue
            out[name] = value
        return out

    def _scalar(self, node: Node, what: str, tag: str, expected: str) -> Any:
        if not isinstance(node, ScalarNode) or node.tag != tag:
            self.error(node, f"{what} must be {expected}, not {_shape(node)}")
            return None
        if tag == _BOOL:
            return self._constructor.construct_yaml_bool(node)
        if tag == _INT:
            return self._constructor.construct_yaml_int(node)
        return node.value

    def text(
        self,
        node: Node,
        what: str,
        *,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
        limit: int = 1000,
        empty: bool = False,
    ) -> str | None:
        """A scalar's text as written (so ``no`` or ``2023`` stay words, not booleans/numbers)."""
        if not isinstance(node, ScalarNode) or node.tag not in (_STR, _INT, _BOOL, _FLOAT):
            self.error(node, f"{what} must be text, not {_shape(node)}")
            return None
        value = str(node.value)
        if "\x00" in value or len(value) > limit:
            self.error(node, f"{what} must be at most {limit} characters, without NUL")
            return None
        if not value.strip() and not empty:
            self.error(node, f"{what} must not be empty")
            return None
        if pattern is not None and not pattern.match(value):
            self.error(node, f"{what} {value!r} is not valid: {rule}")
            return None
        return value

    def boolean(self, node: Node, what: str) -> bool | None:
        value = self._scalar(node, what, _BOOL, "true or false")
        return None if value is None else bool(value)

    def integer(self, node: Node, what: str, lo: int, hi: int) -> int | None:
        value = self._scalar(node, what, _INT, "a whole number")
        if value is None:
            return None
        if not lo <= value <= hi:
            self.error(node, f"{what} must be from {lo} to {hi}, not {value}")
            return None
        return int(value)

    def choice(self, node: Node, what: str, choices: tuple[_Choice, ...]) -> _Choice | None:
        value = self.text(node, what)
        if value is None:
            return None
        for choice in choices:
            if choice == value:
                return choice
        self.error(
            node,
            f"{what} {value!r} is not one of: {_one_of(choices)}{_suggest(value, choices)}",
        )
        return None

    def text_list(
        self,
        node: Node,
        what: str,
        *,
        choices: tuple[str, ...] | None = None,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
        empty: bool = False,
    ) -> list[str] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list, e.g. [a, b], not {_shape(node)}")
            return None
        if not node.value and not empty:
            self.error(node, f"{what} is an empty list: give at least one value or leave it out")
            return None
        if len(node.value) > MAX_LIST:
            self.error(node, f"{what} has more than {MAX_LIST} values")
            return None
        out: list[str] = []
        ok = True
        for item in node.value:
            value = (
                self.choice(item, f"{what} value", choices)
                if choices
                else self.text(item, f"{what} value", pattern=pattern, rule=rule, limit=255)
            )
            if value is None:
                ok = False
            elif value in out:
                self.error(item, f"{what}: {value!r} is listed twice")
                ok = False
            else:
                out.append(value)
        return out if ok else None

    def duration(self, node: Node, what: str, lo: timedelta, hi: timedelta) -> timedelta | None:
        text = self.text(node, what)
        if text is None:
            return None
        m = _DURATION_RE.match(text.strip().lower())
        if not text.strip() or m is None:
            self.error(node, f"{what} {text!r} is not a duration like 90s, 15m, 4h, 3d or 1h30m")
            return None
        d, h, mi, s = (int(g or 0) for g in m.groups())
        if max(d, h, mi, s) > 1_000_000:
            self.error(node, f"{what} {text!r} is too long")
            return None
        value = timedelta(days=d, hours=h, minutes=mi, seconds=s)
        if not lo <= value <= hi:
            self.error(
                node,
                f"{what} must be from {format_duration(lo)} to {format_duration(hi)}, not {text}",
            )
            return None
        return value

    # -- the document --

    def policy(self, root: Node, *, name: str, text: str) -> Policy | None:
        top = self.mapping(
            root,
            "the policy",
            ("version", "queues", "sla", "review", "rules", "otherwise", "contact"),
        )
        if top is None:
            return None
        version = None
        if "version" not in top:
            self.error(root, "the policy needs 'version: 1' at the top")
        else:
            version = self.integer(top["version"], "version", 1, 1_000_000)
            if version is not None and version != 1:
                self.error(top["version"], f"version {version} is not supported (only 1)")
        queues = self.queues(top.get("queues"))
        sla = self.sla(top.get("sla"))
        review = self.review(top.get("review"), queues)
        on_block = review.on_block if review else _DEFAULT_ON_BLOCK
        rules: list[Rule] = []
        if "rules" not in top:
            self.error(root, "the policy needs a 'rules' list (the first rule that fits wins)")
        else:
            rules = self.rules(top["rules"], queues, on_block)
        otherwise = Outcome("review")
        if "otherwise" in top:
            otherwise = (
                self.outcome(top["otherwise"], "otherwise", {}, queues, on_block) or otherwise
            )
        contact = ContactPolicy()
        if "contact" in top:
            contact = contact_section(self, top["contact"], queues) or contact
        if self.errors or review is None:
            return None
        return Policy(
            rules=tuple(rules),
            otherwise=otherwise,
            queues=queues,
            sla=sla,
            review=review,
            contact=contact,
            version=1,
            name=name,
            text=text,
        )

    def queues(self, node: Node | None) -> dict[str, QueueSpec]:
        out = {
            DEFAULT_QUEUE: QueueSpec(DEFAULT_QUEUE, False, "Everything not routed elsewhere"),
            SENIOR_QUEUE: QueueSpec(SENIOR_QUEUE, True, "Escalations: senior reviewers only"),
        }
        if node is None:
            return out
        if not isinstance(node, MappingNode):
            self.error(
                node, f"queues must be a mapping of queue names to settings, not {_shape(node)}"
            )
            return out
        seen: set[str] = set()
        for key, value in node.value:
            qname = self.text(key, "queue name", pattern=_QUEUE_RE, rule=_QUEUE_RULE)
            if qname is None:
                continue
            if qname in seen:
                self.error(key, f"queue {qname!r} is defined twice")
                continue
            seen.add(qname)
            what = f"queue {qname!r}"
            base = out.get(qname, QueueSpec(qname))
            if isinstance(value, ScalarNode) and value.tag == _NULL:  # `name:` alone
                out[qname] = base
                continue
            spec = self.mapping(value, what, ("senior", "description"))
            if spec is None:
                continue
            senior = base.senior
            description: str | None = base.description
            if "senior" in spec:
                senior = bool(self.boolean(spec["senior"], f"{what} senior"))
                if qname == SENIOR_QUEUE and not senior:
                    self.error(spec["senior"], "the 'senior' queue is always a senior queue")
                if qname == DEFAULT_QUEUE and senior:
                    self.error(spec["senior"], "the 'default' queue cannot be a senior queue")
            if "description" in spec:
                description = self.text(spec["description"], f"{what} description", empty=True)
            out[qname] = QueueSpec(qname, senior, description or "")
        return out

    def sla(self, node: Node | None) -> dict[str, timedelta]:
        out = dict(DEFAULT_SLA)
        if node is None:
            return out
        spec = self.mapping(node, "sla", PRIORITIES)
        for prio, value in (spec or {}).items():
            d = self.duration(value, f"sla {prio}", timedelta(minutes=1), timedelta(days=365))
            if d is not None:
                out[prio] = d
        return out

    def actions(self, node: Node, what: str) -> tuple[str, ...] | None:
        names = self.text_list(node, what, pattern=_ACTION_RE, rule=_ACTION_RULE, empty=True)
        return tuple(names) if names is not None else None

    def review(self, node: Node | None, queues: dict[str, QueueSpec]) -> ReviewSettings | None:
        if node is None:
            return ReviewSettings()
        keys = ("four_eyes", "lease", "escalation_queue", "on_confirmed", "on_block", "reversals")
        spec = self.mapping(node, "review", keys)
        if spec is None:
            return None
        values: dict[str, Any] = {}
        if "four_eyes" in spec:
            values["four_eyes"] = self.boolean(spec["four_eyes"], "review four_eyes")
        if "lease" in spec:
            values["lease"] = self.duration(
                spec["lease"], "review lease", timedelta(minutes=1), timedelta(hours=24)
            )
        if "escalation_queue" in spec:
            qnode = spec["escalation_queue"]
            q = self.queue_ref(qnode, "review escalation_queue", queues)
            if q is not None and not queues[q].senior:
                self.error(
                    qnode, f"review escalation_queue {q!r} must be a senior queue (senior: true)"
                )
            values["escalation_queue"] = q
        for key in ("on_confirmed", "on_block"):
            if key in spec:
                values[key] = self.actions(spec[key], f"review {key}")
        if "reversals" in spec:
            values["reversals"] = self.reversals(spec["reversals"])
        # A bad value is already an error; its default stands in so checking can go on.
        return ReviewSettings(**{k: v for k, v in values.items() if v is not None})

    def reversals(self, node: Node) -> tuple[tuple[str, str], ...] | None:
        """``{action: its reversal}``; ``{}`` sends no reversals."""
        what = "review reversals"
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping of an action to the action undoing it")
            return None
        out: dict[str, str] = {}
        for key, value in node.value:
            action = self.text(key, f"{what} key", pattern=_ACTION_RE, rule=_ACTION_RULE)
            undo = self.text(value, f"{what} {action}", pattern=_ACTION_RE, rule=_ACTION_RULE)
            if action is None or undo is None:
                continue
            if action in out:
                self.error(key, f"{what}: {action!r} is given twice")
            elif undo == action:
                self.error(value, f"{what}: {action!r} cannot undo itself")
            else:
                out[action] = undo
        return tuple(out.items())

    def queue_ref(self, node: Node, what: str, queues: dict[str, QueueSpec]) -> str | None:
        q = self.text(node, what)
        if q is not None and q not in queues:
            self.error(
                node,
                f"{what} {q!r} is not a defined queue{_suggest(q, queues)}; "
                f"queues: {_one_of(queues)} (define more under 'queues')",
            )
            return None
        return q

    def rules(
        self, node: Node, queues: dict[str, QueueSpec], on_block: tuple[str, ...]
    ) -> list[Rule]:
        if not isinstance(node, SequenceNode):
            self.error(node, f"rules must be a list of rules, not {_shape(node)}")
            return []
        if not node.value:
            self.error(
                node, "rules is empty: give at least one rule (catch-alls go in 'otherwise')"
            )
            return []
        if len(node.value) > MAX_RULES:
            self.error(node, f"more than {MAX_RULES} rules")
            return []
        out: list[Rule] = []
        names: dict[str, int] = {}
        for i, item in enumerate(node.value, start=1):
            name, rule = self.rule(item, i, queues, on_block)
            if name is not None and name in names:
                self.error(item, f"rule name {name!r} is used twice (first on line {names[name]})")
                continue
            if name is not None:
                names[name] = _line(item)
            if rule is not None:
                out.append(rule)
        return out

    def rule(
        self, node: Node, index: int, queues: dict[str, QueueSpec], on_block: tuple[str, ...]
    ) -> tuple[str | None, Rule | None]:
        """The rule's name (when valid, for the duplicate check) and the rule (when all valid)."""
        keys = (
            "name",
            "description",
            "when",
            "verdict",
            "priority",
            "queue",
            "actions",
            "view_required",
        )
        if not isinstance(node, MappingNode):
            self.error(node, f"rule {index} must be a mapping (name, when, verdict, ...)")
            return None, None
        # The name first, so every other message about this rule can use it.
        name_nodes = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "name"]
        name = None
        if not name_nodes:
            self.error(node, f"rule {index} needs a name")
        else:
            name = self.text(name_nodes[0], f"rule {index} name", pattern=_NAME_RE, rule=_NAME_RULE)
        what = f"rule {name!r}" if name else f"rule {index}"
        spec = self.mapping(node, what, keys)
        if spec is None:
            return name, None
        what = f"rule {name!r}" if name else f"rule {index}"
        description = ""
        if "description" in spec:
            description = self.text(spec["description"], f"{what} description", empty=True) or ""
        when = None
        if "when" not in spec:
            self.error(node, f"{what} needs 'when' conditions (catch-alls go in 'otherwise')")
        else:
            when = self.conditions(spec["when"], what)
        outcome_spec = {k: v for k, v in spec.items() if k not in ("name", "description", "when")}
        outcome = self.outcome(node, what, outcome_spec, queues, on_block, given=True)
        if name is None or when is None or outcome is None:
            return name, None
        return name, Rule(name, when, outcome, description, _line(node))

    def outcome(
        self,
        node: Node,
        what: str,
        spec: dict[str, Node],
        queues: dict[str, QueueSpec],
        on_block: tuple[str, ...],
        *,
        given: bool = False,
    ) -> Outcome | None:
        """A verdict and its settings: from ``spec`` when ``given`` (a rule's own keys), else
        from ``node`` as a mapping (``otherwise``)."""
        if not given:
            keys = ("verdict", "priority", "queue", "actions", "view_required")
            parsed = self.mapping(node, what, keys)
            if parsed is None:
                return None
            spec = parsed
        if "verdict" not in spec:
            self.error(node, f"{what} needs a verdict: {_one_of(DECISIONS)}")
            return None
        decision = self.choice(spec["verdict"], f"{what} verdict", DECISIONS)
        if decision is None:
            return None
        if decision == "allow":
            extra = [k for k in ("priority", "queue", "actions", "view_required") if k in spec]
            for k in extra:
                self.error(spec[k], f"{what}: {k!r} does not apply to an allow verdict")
            return None if extra else Outcome("allow", "low")
        priority: Priority | None = "high" if decision == "block" else "normal"
        queue = DEFAULT_QUEUE
        actions: tuple[str, ...] | None = on_block if decision == "block" else ()
        view_required: bool | None = True
        if "priority" in spec:
            priority = self.choice(spec["priority"], f"{what} priority", PRIORITIES)
        if "queue" in spec:
            queue = self.queue_ref(spec["queue"], f"{what} queue", queues) or ""
        if "actions" in spec:
            actions = self.actions(spec["actions"], f"{what} actions")
        if "view_required" in spec:
            view_required = self.boolean(spec["view_required"], f"{what} view_required")
        if priority is None or actions is None or view_required is None or not queue:
            return None
        return Outcome(decision, priority, queue, tuple(actions), bool(view_required))

    def conditions(self, node: Node, what: str) -> Conditions | None:
        if isinstance(node, MappingNode) and not node.value:
            self.error(node, f"{what} has no conditions (catch-alls go in 'otherwise')")
            return None
        spec = self.mapping(node, f"{what} when", _CONDITION_KEYS)
        if spec is None:
            return None
        w = f"{what} when."
        values: dict[str, Any] = {}
        written: dict[str, Any] = {}
        start = len(self.errors)
        lists: dict[str, tuple[tuple[str, ...] | None, re.Pattern[str] | None, str]] = {
            "banks": (None, _BANK_RE, _BANK_RULE),
            "labels_any": (None, None, ""),
            "labels_all": (None, None, ""),
            "labels_none": (None, None, ""),
            "signal_types": (SIGNAL_TYPES, None, ""),
            "kinds": (KINDS, None, ""),
            "sources": (None, None, ""),
            "age_bands": (AGE_BANDS, None, ""),
        }
        for key, (choices, pattern, rule) in lists.items():
            if key in spec:
                items = self.text_list(
                    spec[key], f"{w}{key}", choices=choices, pattern=pattern, rule=rule
                )
                if items is not None:
                    written[key] = tuple(items)
                    fold = choices is None  # names compare case-insensitively
                    values[key] = frozenset(x.casefold() if fold else x for x in items)
        for key in ("max_distance", "min_distance"):
            if key in spec:
                values[key] = self.integer(spec[key], f"{w}{key}", 0, _MAX_DISTANCE)
        if "uploader_confirmed_at_least" in spec:
            values["uploader_confirmed_at_least"] = self.integer(
                spec["uploader_confirmed_at_least"],
                f"{w}uploader_confirmed_at_least",
                1,
                1_000_000,
            )
        if "matched" in spec:
            values["matched"] = self.boolean(spec["matched"], f"{w}matched")
        if len(self.errors) > start or None in values.values():
            return None
        lo, hi = values.get("min_distance"), values.get("max_distance")
        if lo is not None and hi is not None and lo > hi:
            self.error(
                spec["min_distance"], f"{what}: min_distance {lo} is above max_distance {hi}"
            )
        both = values.get("labels_none", frozenset()) & (
            values.get("labels_any", frozenset()) | values.get("labels_all", frozenset())
        )
        if both:
            self.error(
                spec["labels_none"],
                f"{what}: labels {_one_of(sorted(both))} are both required and excluded",
            )
        if values.get("matched") is False:
            for key in _MATCH_KEYS:
                if key in spec:
                    self.error(spec[key], f"{what}: when.{key} tests a match, but matched is false")
        if len(self.errors) > start:
            return None
        written.update((k, v) for k, v in values.items() if k not in written)
        order = {k: i for i, k in enumerate(spec)}
        shown = dict(sorted(written.items(), key=lambda kv: order[kv[0]]))
        return Conditions(**values, written=shown)


# -- the contact section -----------------------------------------------------------------------

_CONTACT_KEYS = (
    "decide",
    "risk",
    "case_band",
    "case_queue",
    "case_priority",
    "case_reopen_margin",
    "text_flags",
)


def contact_section(
    builder: _Builder, node: Node, queues: dict[str, QueueSpec] | None = None
) -> ContactPolicy | None:
    """The ``contact`` section, validated by the contact settings models; every error names its
    line and the setting's path (``contact.risk.fanout.window_hours``)."""
    spec = builder.mapping(node, "contact", _CONTACT_KEYS)
    if spec is None:
        return None
    start = len(builder.errors)
    models: dict[str, Any] = {}
    for key, model in (("decide", ContactSettings), ("risk", RiskSettings)):
        if key not in spec:
            continue
        value = _plain_node(builder, spec[key], f"contact.{key}")
        if value is None:
            continue
        if not isinstance(value, dict):
            builder.error(spec[key], f"contact.{key} must be a mapping of settings")
            continue
        try:
            models[key] = model.model_validate(value)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                _settings_error(builder, spec[key], f"contact.{key}", model, err)
    case_band: RiskBand = "high"
    if "case_band" in spec:
        case_band = builder.choice(spec["case_band"], "contact.case_band", RISK_BANDS) or "high"
    cases: dict[str, Any] = {}
    if "case_queue" in spec:
        known = queues if queues is not None else {DEFAULT_QUEUE: QueueSpec(DEFAULT_QUEUE)}
        cases["case_queue"] = builder.queue_ref(spec["case_queue"], "contact.case_queue", known)
    if "case_priority" in spec:
        cases["case_priority"] = builder.choice(
            spec["case_priority"], "contact.case_priority", PRIORITIES
        )
    if "case_reopen_margin" in spec:
        cases["case_reopen_margin"] = builder.integer(
            spec["case_reopen_margin"], "contact.case_reopen_margin", 1, 1000
        )
    if "text_flags" in spec:
        flags = _text_flags(builder, spec["text_flags"])
        if flags is not None:
            cases["text_flags"] = flags
    risk = models.get("risk")
    if isinstance(risk, RiskSettings) and not risk.medium_at < risk.high_at <= risk.max_score:
        where = spec["risk"]
        builder.error(
            where,
            f"contact.risk: the bands need medium_at < high_at <= max_score, not "
            f"{risk.medium_at}, {risk.high_at}, {risk.max_score}",
        )
    if len(builder.errors) > start:
        return None
    return ContactPolicy(
        decide=models.get("decide", ContactSettings()),
        risk=models.get("risk", RiskSettings()),
        case_band=case_band,
        **{k: v for k, v in cases.items() if v is not None},
    )


def _text_flags(builder: _Builder, node: Node) -> tuple[tuple[str, FlagKind], ...] | None:
    """``contact.text_flags``: keyword label -> flag kind (replaces the default map whole)."""
    value = _plain_node(builder, node, "contact.text_flags")
    if value is None:
        return None
    if not isinstance(value, dict):
        builder.error(node, "contact.text_flags must be a mapping of keyword label: flag kind")
        return None
    out: dict[str, FlagKind] = {}
    ok = True
    for label, kind in value.items():
        if not isinstance(label, str) or not 1 <= len(label.strip()) <= 64:
            builder.error(node, f"contact.text_flags: {label!r} is not a label (1-64 characters)")
            ok = False
        elif kind not in FLAG_KINDS:
            builder.error(
                node,
                f"contact.text_flags.{label}: {kind!r} is not a flag kind "
                f"(one of {', '.join(FLAG_KINDS)})",
            )
            ok = False
        else:
            out[label.strip()] = kind
    return tuple(sorted(out.items())) if ok else None


def _plain_node(builder: _Builder, node: Node, what: str) -> Any:
    """A node as plain data (mappings with word keys, lists, scalars); None after an error."""
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or key.tag not in (_STR, _INT, _BOOL):
                builder.error(key, f"{what}: keys must be plain words, not {_shape(key)}")
                return None
            if key.tag == _MERGE:
                builder.error(key, f"{what}: merge keys (<<) are not allowed in a policy")
                return None
            if key.value in out:
                builder.error(key, f"{what}: {key.value!r} is given twice")
                return None
            item = _plain_node(builder, value, f"{what}.{key.value}")
            if item is None:
                return None
            out[key.value] = item
        return out
    if isinstance(node, SequenceNode):
        items = [_plain_node(builder, v, f"{what} value") for v in node.value]
        return None if any(i is None for i in items) else items
    if isinstance(node, ScalarNode) and node.tag in (_STR, _INT, _BOOL, _FLOAT):
        return builder._constructor.construct_object(node)
    builder.error(node, f"{what} must be a value, not {_shape(node)}")
    return None


def _settings_error(
    builder: _Builder, node: Node, what: str, model: type[BaseModel], err: Any
) -> None:
    """One pydantic error as ``line N: contact.risk.fanout.window_hours: ...``, at the line of
    the value (or of the unknown key) it is about."""
    loc = [p for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function"))]
    target: Node = node
    for part in loc:
        found = None
        if isinstance(target, MappingNode) and isinstance(part, str):
            for key, value in target.value:
                if isinstance(key, ScalarNode) and key.value == part:
                    found = key if err["type"] == "extra_forbidden" and part == loc[-1] else value
        elif (
            isinstance(target, SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(target.value)
        ):
            found = target.value[part]
        if found is None:
            break
        target = found
    if err["type"] == "extra_forbidden" and loc:
        owner: Any = model  # the settings model the unknown key sits in
        for part in loc[:-1]:
            sub = getattr(owner, "model_fields", {}).get(part)
            owner = sub.annotation if sub is not None else None
        choices: tuple[str, ...] = ()
        if isinstance(owner, type) and issubclass(owner, BaseModel):
            choices = tuple(owner.model_fields)
        name = str(loc[-1])
        parent_path = ".".join([what, *(str(p) for p in loc[:-1])])
        builder.error(
            target,
            f"{parent_path}: unknown key {name!r}{_suggest(name, choices)}; "
            f"expected one of: {_one_of(choices)}",
        )
        return
    path = ".".join([what, *(str(p) for p in loc)])
    given = err.get("input")
    shown = f", not {given!r}" if isinstance(given, str | int | float | bool) else ""
    builder.error(target, f"{path}: {err['msg']}{shown}")


_NAME_RULE = "use 1-64 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit"
_BANK_RULE = "bank names are 1-64 letters, digits, '_', '.' or '-'"
_QUEUE_RULE = "use 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit"
_ACTION_RULE = "use lowercase letters, digits and '_', starting with a letter"


def _shape(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    if node.tag not in _KNOWN_TAGS:
        return f"a value tagged {node.tag}"
    return repr(node.value) if len(str(node.value)) <= 40 else "a long text"


def format_duration(d: timedelta) -> str:
    """``4h``, ``15m``, ``90s``: the shortest whole unit, as a policy file writes it."""
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- the live policy ---------------------------------------------------------------------------


class PolicyHolder:
    """The policy in force, from a file an operator may edit at any time.

    ``current()`` re-reads the file when its size, mtime or inode change (checked with one stat
    at most every ``check_interval`` seconds). A new file that does not validate is not used: the
    previous policy stays in force and ``last_error`` says why (also logged) until the file is
    fixed. A missing file is created from the packaged default.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self.last_error: str | None = None
        #: Called with the new policy after an edit on disk was picked up (a ``save`` is not
        #: reported here: its caller knows who saved it). The server audits it.
        self.on_reload: Callable[[Policy], None] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        if not self.path.exists():
            self._create_default()
        st = os.stat(self.path)
        self._policy = load_policy(self.path)  # an invalid file at start-up is fatal
        self._stamp = _stamp(st)
        self._checked = clock()

    def _create_default(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_temp(self.path, default_policy_text(), 0o644)
        try:
            os.link(tmp, self.path)  # atomic create-if-absent: never overwrites a policy
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not self.path.exists():
                os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.info("created %s from the default policy", self.path)

    def current(self) -> Policy:
        """The policy in force, reloaded first if the file changed."""
        if self._clock() - self._checked < self.check_interval:
            return self._policy
        return self.refresh()

    def refresh(self) -> Policy:
        """Check the file now, whatever the interval."""
        policy, reloaded = self._refresh()
        if reloaded and self.on_reload is not None:
            try:
                self.on_reload(policy)
            except Exception:
                log.exception("policy reload hook failed")
        return policy

    def _refresh(self) -> tuple[Policy, bool]:
        with self._lock:
            self._checked = self._clock()
            try:
                st = os.stat(self.path)
            except OSError as exc:
                self._fail(f"cannot read {self.path}: {exc.strerror or exc}")
                return self._policy, False
            stamp = _stamp(st)
            if stamp == self._stamp:
                return self._policy, False
            try:
                policy = load_policy(self.path)
            except PolicyError as exc:
                self._stamp = stamp  # report once per change, not once a second
                self._fail(f"{self.path} is invalid:\n{exc}")
                return self._policy, False
            except OSError as exc:
                self._fail(f"cannot read {self.path}: {exc.strerror or exc}")
                return self._policy, False
            self._install(policy, stamp)
            log.info("policy reloaded from %s (%d rules)", self.path, len(policy.rules))
            return policy, True

    def _fail(self, message: str) -> None:
        if message != self.last_error:
            log.error("%s; keeping the previous policy", message)
        self.last_error = message

    def _install(self, policy: Policy, stamp: tuple[int, int, int]) -> None:
        self._policy, self._stamp, self.last_error = policy, stamp, None

    def save(self, text: str, actor: str) -> Policy:
        """Validate ``text`` (PolicyError if invalid: nothing is written), then replace the file
        atomically and put it in force. The caller audits the change (see ``Policy.digest``)."""
        policy = parse_policy(text, name=str(self.path))
        with self._lock:
            try:
                mode = os.stat(self.path).st_mode & 0o777
            except OSError:
                mode = 0o644
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _write_temp(self.path, text, mode)
            try:
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
            _fsync_dir(self.path.parent)
            self._install(policy, _stamp(os.stat(self.path)))
            self._checked = self._clock()
        log.info("policy %s saved by %s (%d rules)", policy.digest[:12], actor, len(policy.rules))
        return policy


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _write_temp(path: Path, text: str, mode: int) -> str:
    """Write ``text`` to a synced temporary file beside ``path``; returns its name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

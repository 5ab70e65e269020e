"""Contact decisions: Ofcom's ICU F1 safety defaults and F2 supportive prompts for child users.

:func:`decide` answers "may ``actor`` do ``action`` towards ``target``?" from the two accounts'
facts, their relationship and the actor's current risk band. The F1 defaults, for a target who
is a child (one of :data:`~bastion.contact.model.MINOR_BANDS`, or ``unknown`` when
:attr:`ContactSettings.unknown_age_as_child` is set):

- ``suggest``: the child is not suggested to anyone as a connection;
- ``show_in_connections``: the child does not appear in other users' connection lists and
  the child's own lists are hidden from other users;
- ``message`` / ``livestream_comment``: an account the child is not connected to cannot reach
  them directly: a message goes to the child's requests and the child confirms before seeing it
  (a live-stream comment is not shown at all);
- ``see_location``: the child's location is not shown;
- ``gift``: a gift from a non-connection is held for the child to confirm.

A child may turn a default off (``AccountFacts.relaxed``; :func:`moment_prompts` gives the F2
prompt for that moment). A relaxed default only ever opens the child to *other children* who are
not high risk; adults stay behind the default. An actor whose age is ``unknown`` never counts as
a child for what that would *allow*.

Risk (Meta's published sextortion responses): an actor at or above
:attr:`ContactSettings.spam_band` has its requests to children routed to spam, its message
button towards children hidden (``allow`` false), and it cannot see anyone's connection lists.

Every prompt id this module can emit is in :data:`PROMPT_IDS`; ``prompts.yaml`` holds their texts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bastion.contact.model import MINOR_BANDS, RISK_BANDS, RiskBand
from bastion.vocab import AgeBand

Action = Literal[
    "message",
    "connection_request",
    "suggest",
    "show_in_connections",
    "see_location",
    "livestream_comment",
    "gift",
]
ACTIONS: tuple[Action, ...] = (
    "message",
    "connection_request",
    "suggest",
    "show_in_connections",
    "see_location",
    "livestream_comment",
    "gift",
)
Route = Literal["inbox", "requests", "spam"]
#: The F1 defaults a child may turn off (each turn-off shows an F2 prompt).
ChildDefault = Literal[
    "suggest", "show_in_connections", "see_location", "message_from_non_connections"
]
CHILD_DEFAULTS: tuple[ChildDefault, ...] = (
    "suggest",
    "show_in_connections",
    "see_location",
    "message_from_non_connections",
)
Moment = Literal["default_off", "block", "report"]
Audience = Literal["actor", "target"]

#: Every prompt id :func:`decide` and :func:`moment_prompts` can emit.
PROMPT_IDS: tuple[str, ...] = (
    "request_unknown",
    "message_unknown",
    "gift_unknown",
    "contact_unknown_adult",
    "high_risk_request",
    *(f"default_off_{d}" for d in CHILD_DEFAULTS),
    "block",
    "report",
)


class ContactSettings(BaseModel):
    """The contact-decision settings (a section of the policy YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Treat an account of ``unknown`` age as a child when it is the one being protected.
    unknown_age_as_child: bool = True
    #: At or above this risk band, an actor's requests to children go to spam, its message
    #: button towards children is hidden and it sees no one's connection lists.
    spam_band: RiskBand = "high"
    #: Apply the risk rule to actors who say they are children too (sextortion accounts often
    #: claim to be teens).
    risk_rule_for_child_actors: bool = True
    #: The defaults a child may turn off; others stay on whatever the child's settings say.
    relaxable: frozenset[ChildDefault] = Field(default=frozenset(CHILD_DEFAULTS))
    #: Whether a child under 13 may turn any default off.
    under13_may_relax: bool = False


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What the decision needs about one account."""

    account: str
    age_band: AgeBand = "unknown"
    #: The F1 defaults this (child) account has turned off.
    relaxed: frozenset[ChildDefault] = frozenset()


@dataclass(frozen=True, slots=True)
class Relationship:
    """The actor's relationship to the target at the moment of the decision."""

    connected: bool = False
    mutual_connections: int = 0
    #: Either account has blocked the other.
    blocked: bool = False


class Prompt(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    audience: Audience


class Decision(BaseModel):
    """The answer of ``POST /v1/contact/decide``."""

    model_config = ConfigDict(frozen=True)

    allow: bool
    requires_confirmation: bool = False
    route_to: Route = "inbox"
    prompts: tuple[Prompt, ...] = ()
    reasons: tuple[str, ...] = ()


def is_child(band: AgeBand, settings: ContactSettings) -> bool:
    """Whether an account in ``band`` is protected as a child."""
    return band in MINOR_BANDS or (band == "unknown" and settings.unknown_age_as_child)


def at_or_above(band: RiskBand, threshold: RiskBand) -> bool:
    return RISK_BANDS.index(band) >= RISK_BANDS.index(threshold)


def _relaxed(target: AccountFacts, default: ChildDefault, settings: ContactSettings) -> bool:
    if default not in target.relaxed or default not in settings.relaxable:
        return False
    return target.age_band != "under13" or settings.under13_may_relax


def decide(
    actor: AccountFacts,
    target: AccountFacts,
    relationship: Relationship,
    actor_risk: RiskBand,
    action: Action,
    settings: ContactSettings | None = None,
) -> Decision:
    """The F1/F2 decision for ``actor`` doing ``action`` towards ``target``."""
    settings = settings or ContactSettings()
    if relationship.blocked:
        return Decision(allow=False, route_to="spam", reasons=("blocked",))
    child_target = is_child(target.age_band, settings)
    # Only a *known* child actor gets what a relaxed default opens to other children.
    child_actor = actor.age_band in MINOR_BANDS
    risky = at_or_above(actor_risk, settings.spam_band) and (
        not child_actor or settings.risk_rule_for_child_actors
    )
    if action == "show_in_connections":
        return _show_in_connections(
            child_target, child_actor, risky, relationship, target, settings
        )
    if not child_target:
        return _adult_target(action, actor, relationship, risky, settings)
    if action == "suggest":
        if risky:
            return Decision(allow=False, reasons=("risk.high_actor", "f1.child_not_suggested"))
        if _relaxed(target, "suggest", settings) and child_actor:
            return Decision(allow=True, reasons=("f1.relaxed_by_child",))
        return Decision(allow=False, reasons=("f1.child_not_suggested",))
    if action == "see_location":
        if relationship.connected and not risky and _relaxed(target, "see_location", settings):
            return Decision(allow=True, reasons=("f1.relaxed_by_child",))
        return Decision(allow=False, reasons=("f1.child_location_hidden",))
    if action == "connection_request":
        return _request_to_child(relationship, risky)
    if action == "message":
        return _message_to_child(relationship, risky, child_actor, target, settings)
    if action == "livestream_comment":
        if risky:
            return Decision(allow=False, route_to="spam", reasons=("risk.high_actor",))
        if relationship.connected:
            return Decision(allow=True, reasons=("connected",))
        if child_actor and _relaxed(target, "message_from_non_connections", settings):
            return Decision(allow=True, reasons=("f1.relaxed_by_child",))
        return Decision(allow=False, reasons=("f1.child_not_contactable_by_non_connection",))
    # gift
    if risky:
        return Decision(allow=False, route_to="spam", reasons=("risk.high_actor",))
    if relationship.connected:
        return Decision(allow=True, reasons=("connected",))
    return Decision(
        allow=True,
        requires_confirmation=True,
        route_to="requests",
        prompts=(Prompt(id="gift_unknown", audience="target"),),
        reasons=("f1.child_confirms_non_connection",),
    )


def _show_in_connections(
    child_target: bool,
    child_actor: bool,
    risky: bool,
    relationship: Relationship,
    target: AccountFacts,
    settings: ContactSettings,
) -> Decision:
    if risky:
        return Decision(allow=False, reasons=("risk.high_actor_lists_hidden",))
    if not child_target:
        return Decision(allow=True)
    if _relaxed(target, "show_in_connections", settings) and (
        child_actor or relationship.connected
    ):
        return Decision(allow=True, reasons=("f1.relaxed_by_child",))
    return Decision(allow=False, reasons=("f1.child_lists_hidden",))


def _request_to_child(relationship: Relationship, risky: bool) -> Decision:
    if relationship.connected:
        return Decision(allow=False, reasons=("already_connected",))
    if risky:
        return Decision(
            allow=True,
            requires_confirmation=True,
            route_to="spam",
            prompts=(Prompt(id="high_risk_request", audience="target"),),
            reasons=("risk.high_actor_request_to_spam",),
        )
    reasons: tuple[str, ...] = ("f1.child_confirms_non_connection",)
    if relationship.mutual_connections == 0:
        reasons = (*reasons, "no_mutual_connections")
    return Decision(
        allow=True,
        requires_confirmation=True,
        route_to="requests",
        prompts=(Prompt(id="request_unknown", audience="target"),),
        reasons=reasons,
    )


def _message_to_child(
    relationship: Relationship,
    risky: bool,
    child_actor: bool,
    target: AccountFacts,
    settings: ContactSettings,
) -> Decision:
    if risky and not relationship.connected:
        return Decision(
            allow=False, route_to="spam", reasons=("risk.high_actor_message_button_hidden",)
        )
    if risky:
        # Connected, but high risk: the child still confirms before seeing the message.
        return Decision(
            allow=True,
            requires_confirmation=True,
            route_to="requests",
            prompts=(Prompt(id="message_unknown", audience="target"),),
            reasons=("risk.high_actor_connected",),
        )
    if relationship.connected:
        return Decision(allow=True, reasons=("connected",))
    if child_actor and _relaxed(target, "message_from_non_connections", settings):
        return Decision(allow=True, reasons=("f1.relaxed_by_child",))
    return Decision(
        allow=True,
        requires_confirmation=True,
        route_to="requests",
        prompts=(Prompt(id="message_unknown", audience="target"),),
        reasons=("f1.child_confirms_non_connection",),
    )


def _adult_target(
    action: Action,
    actor: AccountFacts,
    relationship: Relationship,
    risky: bool,
    settings: ContactSettings,
) -> Decision:
    """F1 does not restrict contact with adults; a child contacting an unknown adult gets an
    F2 prompt."""
    if action == "connection_request":
        if relationship.connected:
            return Decision(allow=False, reasons=("already_connected",))
        prompts: tuple[Prompt, ...] = ()
        if is_child(actor.age_band, settings):
            prompts = (Prompt(id="contact_unknown_adult", audience="actor"),)
        return Decision(
            allow=True, requires_confirmation=True, route_to="requests", prompts=prompts
        )
    if action == "message" and not relationship.connected and is_child(actor.age_band, settings):
        return Decision(
            allow=True,
            prompts=(Prompt(id="contact_unknown_adult", audience="actor"),),
            reasons=("child_contacting_non_connection",),
        )
    if risky and action == "suggest":
        return Decision(allow=False, reasons=("risk.high_actor",))
    return Decision(allow=True)


def moment_prompts(
    moment: Moment,
    account: AccountFacts,
    default: ChildDefault | None = None,
    settings: ContactSettings | None = None,
) -> tuple[Prompt, ...]:
    """The F2 prompts for a child at ``moment``: turning ``default`` off, blocking, reporting.
    Adults get none (F2 is for child users)."""
    settings = settings or ContactSettings()
    if not is_child(account.age_band, settings):
        return ()
    if moment == "default_off":
        if default is None:
            raise ValueError("turning a default off needs the default")
        return (Prompt(id=f"default_off_{default}", audience="actor"),)
    return (Prompt(id=moment, audience="actor"),)


def may_relax(account: AccountFacts, default: ChildDefault, settings: ContactSettings) -> bool:
    """Whether this account may turn ``default`` off (adults have nothing to turn off)."""
    if not is_child(account.age_band, settings):
        return True
    if default not in settings.relaxable:
        return False
    return account.age_band != "under13" or settings.under13_may_relax


@dataclass(frozen=True, slots=True)
class PromptText:
    id: str
    audience: Audience
    text: str


@cache
def load_prompts() -> Mapping[str, PromptText]:
    """The prompt catalogue shipped in ``prompts.yaml`` (id -> audience and English text)."""
    raw = yaml.safe_load(
        resources.files("bastion.contact").joinpath("prompts.yaml").read_text("utf-8")
    )
    if not isinstance(raw, dict):
        raise ValueError("prompts.yaml must be a mapping of prompt ids")
    catalogue: dict[str, PromptText] = {}
    for pid, entry in raw.items():
        if not isinstance(entry, dict) or entry.get("audience") not in ("actor", "target"):
            raise ValueError(f"prompt {pid!r}: needs an audience (actor or target) and a text")
        text = entry.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt {pid!r}: needs a text")
        catalogue[str(pid)] = PromptText(id=str(pid), audience=entry["audience"], text=text)
    return catalogue

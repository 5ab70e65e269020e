"""``flag`` events computed by Bastion from text the platform may lawfully see (issue 16).

A platform that may read some text (a public post, a message a child reported) can send it in a
``text`` event beside its other events. Bastion matches it against the keyword banks, turns the
labels of what matched into flag kinds (the policy's ``contact.text_flags`` map) and stores only
the resulting ``flag`` events, ``source: bastion``. The text itself is never stored, logged or
echoed: a ``text`` event is not an :data:`~bastion.contact.model.Event` and never reaches the
events table, and its validation errors leave the input out.

A derived flag's ``event_id`` is the text event's id and the kind (:func:`derived_id`), so a
re-sent text event derives the same flags, which are then duplicates.

Pure: pydantic and the standard library; the caller supplies the matching.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.contact.model import FLAG_KINDS, FlagEvent, FlagKind, Ident, UTCTime

__all__ = [
    "DEFAULT_TEXT_FLAGS",
    "MAX_TEXT",
    "TextEvent",
    "TextPlan",
    "derived_id",
    "expand",
    "flag_kinds",
]

#: Longest text one ``text`` event may carry (characters).
MAX_TEXT = 20_000
#: The labels whose keyword matches become flags, and the kind each becomes: by default every
#: flag kind's own name.
DEFAULT_TEXT_FLAGS: Mapping[str, FlagKind] = {kind: kind for kind in FLAG_KINDS}


class TextEvent(BaseModel):
    """Text ``account`` wrote (to ``target``, in ``conversation``, when it was a message) that
    the platform may lawfully see, for Bastion to compute flags from. Never stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Ident
    time: UTCTime
    type: Literal["text"]
    account: Ident
    target: Ident | None = None
    conversation: Ident | None = None
    text: str = Field(min_length=1, max_length=MAX_TEXT)

    @model_validator(mode="after")
    def _two_accounts(self) -> Self:
        if self.target is not None and self.target == self.account:
            raise ValueError("account and target must be different accounts")
        return self


def derived_id(event_id: str, kind: str) -> str:
    """The id of the flag of ``kind`` derived from text event ``event_id``: ``<id>:<kind>``, or
    a SHA-256 of the id in its place when that would pass 128 characters."""
    out = f"{event_id}:{kind}"
    if len(out) <= 128:
        return out
    return f"sha256-{hashlib.sha256(event_id.encode('utf-8', 'surrogatepass')).hexdigest()}:{kind}"


def flag_kinds(labels: Iterable[str], text_flags: Mapping[str, FlagKind]) -> list[FlagKind]:
    """The flag kinds the matched ``labels`` map to, in :data:`FLAG_KINDS` order, each once."""
    kinds = {text_flags[label] for label in labels if label in text_flags}
    return [k for k in FLAG_KINDS if k in kinds]


@dataclass(frozen=True, slots=True)
class TextPlan:
    """What became of a text event at ``index``: the positions of its derived flags in the
    expanded batch, their kinds, or ``errors`` when it did not validate."""

    index: int
    event_id: str | None
    positions: tuple[int, ...] = ()
    kinds: tuple[FlagKind, ...] = ()
    errors: tuple[dict[str, str], ...] = ()


def _is_text(raw: object) -> bool:
    return isinstance(raw, dict) and raw.get("type") == "text"


def _errors(exc: ValidationError) -> tuple[dict[str, str], ...]:
    return tuple(
        {
            "loc": ".".join(str(part) for part in err["loc"]),
            "type": err["type"],
            "msg": err["msg"],
        }
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    )


def expand(
    batch: Sequence[object],
    labels_of: Callable[[str], Iterable[str]],
    text_flags: Mapping[str, FlagKind],
) -> tuple[list[object], list[int | TextPlan]]:
    """The batch with each ``text`` event replaced by the flag events its text derives (none
    when nothing matched), and for each original event either its position in the expanded
    batch or a :class:`TextPlan`. ``labels_of(text)`` gives the labels of the keyword entries
    the text matches."""
    out: list[object] = []
    plan: list[int | TextPlan] = []
    for index, raw in enumerate(batch):
        if not _is_text(raw):
            plan.append(len(out))
            out.append(raw)
            continue
        assert isinstance(raw, dict)
        candidate = raw.get("event_id")
        event_id = candidate if isinstance(candidate, str) and len(candidate) <= 128 else None
        try:
            event = TextEvent.model_validate(raw)
        except ValidationError as exc:
            plan.append(TextPlan(index, event_id, errors=_errors(exc)))
            continue
        kinds = flag_kinds(labels_of(event.text), text_flags) if text_flags else []
        positions = []
        for kind in kinds:
            positions.append(len(out))
            out.append(
                FlagEvent(
                    event_id=derived_id(event.event_id, kind),
                    time=event.time,
                    type="flag",
                    account=event.account,
                    target=event.target,
                    conversation=event.conversation,
                    kind=kind,
                    source="bastion",
                )
            )
        plan.append(TextPlan(index, event.event_id, tuple(positions), tuple(kinds)))
    return out, plan

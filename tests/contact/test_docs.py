"""docs/contact-safety.md stays true to the code: its event schema and its F1/F2 decision table
are what ``python -m bastion.contact.table`` renders now, and it names every detector, action,
prompt and setting."""

from __future__ import annotations

from pathlib import Path

from bastion.contact.decide import ACTIONS, PROMPT_IDS, ContactSettings, Decision, Prompt
from bastion.contact.model import EVENT_TYPES
from bastion.contact.risk import DETECTORS
from bastion.contact.table import (
    BEGIN,
    END,
    EVENTS_BEGIN,
    EVENTS_END,
    cell,
    render,
    render_events,
    replace,
    section,
)
from bastion.vocab import AGE_BANDS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "contact-safety.md"
STALE = "docs/contact-safety.md is stale: run `make docs` (python -m bastion.contact.table --write)"


def test_the_decision_table_is_current() -> None:
    assert section(DOC.read_text(encoding="utf-8")) == render().strip("\n"), STALE


def test_the_event_schema_is_current() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert section(doc, EVENTS_BEGIN, EVENTS_END) == render_events().strip("\n"), STALE


def test_the_table_covers_every_action_and_band_pair() -> None:
    table = render()
    for action in ACTIONS:
        assert f"#### `{action}`" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    body = [r for r in rows if not r.startswith("| actor |")]
    assert len(body) == len(ACTIONS) * len(AGE_BANDS) ** 2
    # A changed setting changes the table (so the test above would catch a changed default).
    assert render(ContactSettings(unknown_age_as_child=False)) != table


def test_cells() -> None:
    assert cell(Decision(allow=False)) == "no"
    assert cell(Decision(allow=False, route_to="spam")) == "no, spam"
    assert cell(Decision(allow=True)) == "yes"
    prompt = Prompt(id="request_unknown", audience="target")
    assert (
        cell(
            Decision(allow=True, requires_confirmation=True, route_to="requests", prompts=(prompt,))
        )
        == "confirm, requests · `request_unknown` (target)"
    )


def test_replace_round_trips() -> None:
    doc = f"intro\n{BEGIN}\nold\n{END}\nrest\n"
    assert section(replace(doc, "new table")) == "new table"
    assert replace(doc, "new table").endswith(f"{END}\nrest\n")


def test_the_doc_names_every_event_detector_prompt_and_setting() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name in (*EVENT_TYPES, *DETECTORS, *PROMPT_IDS, *ContactSettings.model_fields):
        assert f"`{name}`" in doc or f"{name}" in doc, name
    for detector in DETECTORS:
        assert f"| `{detector}` |" in doc, detector
    for word in ("No message text", "Retention", "Erasure", "Audited reads", "never acts"):
        assert word in doc


def test_linked_from_the_readme_and_architecture() -> None:
    for page in (ROOT / "README.md", ROOT / "docs" / "architecture.md"):
        assert "contact-safety.md" in page.read_text(encoding="utf-8"), page

"""The documentation covers the code, in the style of Datasette's documentation tests: every
setting and every command is documented, and docs/cli.md is the app's current help (regenerate
it with ``make docs``)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bastion.cli.docs import command_names, render
from bastion.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Not a setting: the TOML keys Settings does not know, kept for the features that read them.
NOT_SETTINGS = {"extra"}


def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))


DOCS_TEXT = _docs_text()


@pytest.mark.parametrize(
    "setting", [f.name for f in dataclasses.fields(Settings) if f.name not in NOT_SETTINGS]
)
def test_every_setting_is_documented(setting: str) -> None:
    assert re.search(rf"\b{re.escape(setting)}\b", DOCS_TEXT), (
        f"setting {setting!r} (bastion/config.py) is not mentioned in docs/*.md"
    )


@pytest.mark.parametrize("command", command_names())
def test_every_command_is_documented(command: str) -> None:
    assert re.search(rf"^#+ {re.escape(command)}$", DOCS_TEXT, re.M), (
        f"command {command!r} has no section in docs/*.md: run `make docs`"
    )


def test_cli_reference_is_current() -> None:
    checked_in = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert checked_in == render(), "docs/cli.md is stale: run `make docs` and commit it"


def test_cli_reference_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    first = render()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("TERMINAL_WIDTH", "40")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert render() == first

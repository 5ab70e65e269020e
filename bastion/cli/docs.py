"""Write the command reference from the Typer app: ``python -m bastion.cli.docs > docs/cli.md``
(``make docs``). ``tests/test_docs.py`` renders it again and fails when docs/cli.md is stale.

The text comes from the commands' own help (docstrings, options, defaults), never from a
terminal: no width, no colour, so the output is the same on every machine.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from typing import Any

import typer

from bastion.cli import app

HEADER = """# Command reference

Generated from the `bastion` command's own help by `make docs` (`python -m bastion.cli.docs`);
do not edit by hand. `bastion COMMAND --help` prints the same. Exit codes: 0 success (no
match), 1 matches found or a check failed (see each command), 2 usage error.
"""


def commands() -> Iterator[tuple[list[str], Any, typer.Context]]:
    """Every command and group of the app, depth first in help order: (path, command, context)."""
    root = typer.main.get_command(app)
    yield from _walk(root, typer.Context(root, info_name="bastion"), ["bastion"])


def _walk(cmd: Any, ctx: typer.Context, path: list[str]) -> Iterator[tuple[list[str], Any, Any]]:
    if getattr(cmd, "hidden", False):
        return
    yield path, cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            yield from _walk(sub, typer.Context(sub, info_name=name, parent=ctx), [*path, name])


def command_names() -> list[str]:
    """``bastion bank create`` and the like, for every command and group."""
    return [" ".join(path) for path, _, _ in commands()]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _usage(cmd: Any, ctx: Any, path: list[str]) -> str:
    pieces = [*path, "[OPTIONS]"]
    for param in cmd.get_params(ctx):
        if param.param_type_name != "argument":
            continue
        name = (param.metavar or param.name or "").upper()
        name += "..." if param.nargs == -1 else ""
        pieces.append(name if param.required else f"[{name}]")
    if hasattr(cmd, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _section(path: list[str], cmd: Any, ctx: Any) -> list[str]:
    title = " ".join(path)
    out = [f"{'#' * min(len(path) + 1, 4)} {title}", ""]
    text = inspect.cleandoc(cmd.help or "")
    if text:
        out += [text, ""]
    out += ["```", _usage(cmd, ctx, path), "```", ""]
    rows = []
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False) or param.name == "help":
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        name, help_text = record
        if param.param_type_name == "argument":
            name = (param.metavar or param.name or "").upper()
        rows.append(f"| `{_cell(name)}` | {_cell(help_text)} |")
    if rows:
        out += ["| Argument or option | Description |", "| --- | --- |", *rows, ""]
    if hasattr(cmd, "list_commands"):
        subs = []
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if getattr(sub, "hidden", False):
                continue
            summary = sub.get_short_help_str(limit=10_000)
            subs.append(f"| `{title} {name}` | {_cell(summary)} |")
        out += ["| Command | What it does |", "| --- | --- |", *subs, ""]
    return out


def render() -> str:
    """docs/cli.md, as text."""
    lines = [HEADER]
    for path, cmd, ctx in commands():
        lines += _section(path, cmd, ctx)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

"""``bastion url check``: match URLs against URL banks.

Exit codes: 0 no match, 1 matches found, 2 usage error.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from bastion.cli._context import CliContext, FormatOpt
from bastion.cli.scan import BankOpt, load_matcher
from bastion.render import OutputFormat, emit
from bastion.signals.base import Signal, SignalType

url_app = typer.Typer(help="Match URLs against URL banks.", no_args_is_help=True)


@url_app.command("check")
def url_check(
    ctx: typer.Context,
    urls: Annotated[list[str], typer.Argument(help="URLs to check.")],
    fmt: FormatOpt = OutputFormat.TABLE,
    bank: BankOpt = None,
) -> None:
    """Match URLs against URL banks (whole-URL, path-prefix and domain entries)."""
    from bastion.signals.url import normalize_url

    with CliContext.of(ctx).open_store() as store:
        matcher = load_matcher(store, bank, [SignalType.URL])
    any_match = False
    rows = []
    for url in urls:
        row: dict[str, Any] = {"url": url, "normalized": None, "matches": [], "error": None}
        try:
            row["normalized"] = normalize_url(url)
        except ValueError as exc:
            row["error"] = str(exc)
        else:
            ms = matcher.match([Signal(type=SignalType.URL, value=row["normalized"])], banks=bank)
            any_match = any_match or bool(ms)
            table = fmt is OutputFormat.TABLE
            row["matches"] = [
                f"{m.bank}#{m.entry_id} ({m.url_match})" if table else m.as_dict() for m in ms
            ]
        rows.append(row)
    emit(rows, fmt, ["url", "normalized", "matches", "error"], sys.stdout)
    raise typer.Exit(1 if any_match else 0)

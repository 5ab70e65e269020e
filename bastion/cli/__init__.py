"""The ``bastion`` command: hash, scan and match files; manage banks, keys, users, exchanges,
feeds and the evidence vault; check the audit log; serve the API and run the worker.

One module per command group; what they share (the database, error printing and exit codes,
progress bars, the audit actor) is the :class:`~bastion.cli._context.CliContext` in ``ctx.obj``.

Exit codes: 0 no match, 1 matches found (scan, match, url check), 2 usage error.
"""

from __future__ import annotations

import typer

from bastion.cli import backscan, scan, serve, worker
from bastion.cli._context import CliContext, DbOpt
from bastion.cli.audit import audit_app
from bastion.cli.backscan import backscan_app
from bastion.cli.bank import bank_app
from bastion.cli.contact import events_app, simulate_app
from bastion.cli.exchange import exchange_app
from bastion.cli.feed import feed_app
from bastion.cli.identity import identity_app
from bastion.cli.keys import key_app
from bastion.cli.pdata import pdata_app
from bastion.cli.policy import policy_app
from bastion.cli.url import url_app
from bastion.cli.users import user_app
from bastion.cli.vault import vault_app

app = typer.Typer(
    name="bastion",
    help="Find and stop child sexual exploitation and abuse: hash, match, review, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(ctx: typer.Context, db: DbOpt = None) -> None:
    CliContext.of(ctx)  # the option's callback has put --db in it


# The order of `bastion --help`: commands, then groups.
app.command("worker")(worker.worker)
app.command("hash")(scan.hash_cmd)
app.command("scan")(scan.scan)
app.command("match")(scan.match)
app.command("rematch")(backscan.rematch_cmd)
app.command("serve")(serve.serve)
app.add_typer(bank_app, name="bank")
app.add_typer(url_app, name="url")
app.add_typer(key_app, name="key")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(vault_app, name="vault")
app.add_typer(policy_app, name="policy")
app.add_typer(pdata_app, name="pdata")
app.add_typer(exchange_app, name="exchange")
app.add_typer(feed_app, name="feed")
app.add_typer(identity_app, name="identity")
app.add_typer(events_app, name="events")
app.add_typer(simulate_app, name="simulate")
app.add_typer(backscan_app, name="backscan")

__all__ = ["CliContext", "app"]

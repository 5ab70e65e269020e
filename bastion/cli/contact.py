"""``bastion events`` (contact events from a stream) and ``bastion simulate`` (a synthetic
contact population).

``bastion events consume`` reads events from a Redis stream through a consumer group and applies
them through the same ingest as ``POST /v1/events`` (:mod:`bastion.contact.stream`): start one
per core or machine with the same group and different consumer names. ``bastion events publish``
appends a JSON-lines file of events to a stream (a test feed, a replay). ``bastion simulate
contacts`` writes a synthetic population's events and, apart, the labels of its planted actors.

Exit codes: 0 done or stopped, 2 usage error (bad options, unreachable store or Redis).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from bastion.cli._context import CliContext, DbOpt, err, usage_error

events_app = typer.Typer(
    help="Contact-safety events: consume them from a Redis stream, publish a file to one.",
    no_args_is_help=True,
)
simulate_app = typer.Typer(
    help="Synthetic data for tests and benchmarks (flags and metadata only, never text).",
    no_args_is_help=True,
)

RedisOpt = Annotated[
    str,
    typer.Option("--redis", envvar="BASTION_REDIS_URL", help="Redis URL (redis://host:6379/0)."),
]
StreamOpt = Annotated[str, typer.Option("--stream", help="Stream name (key).")]


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@events_app.command("consume")
def events_consume(
    ctx: typer.Context,
    redis_url: RedisOpt,
    stream: StreamOpt,
    group: Annotated[str, typer.Option("--group", help="Consumer group (made if missing).")],
    consumer: Annotated[
        str | None,
        typer.Option(
            "--consumer", help="This consumer's name in the group (default: <host>-<pid>)."
        ),
    ] = None,
    db: DbOpt = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
    batch: Annotated[
        int,
        typer.Option(
            min=1,
            max=10_000,
            help="Entries per batch (one transaction; an account a batch touches several times "
            "is rescored and written once, so larger batches cost less per event).",
        ),
    ] = 2000,
    block_ms: Annotated[
        int, typer.Option(min=1, help="How long a read waits for new entries (ms).")
    ] = 1000,
    claim_idle_ms: Annotated[
        int,
        typer.Option(
            min=1,
            help="Claim another consumer's entries unacknowledged this long (ms): it is "
            "taken to be dead. Longer than your slowest batch.",
        ),
    ] = 30_000,
    max_deliveries: Annotated[
        int,
        typer.Option(
            min=1,
            help="An entry delivered more often than this without being acknowledged (its "
            "consumers keep dying on it) is dead-lettered.",
        ),
    ] = 10,
    until_idle: Annotated[
        bool,
        typer.Option("--until-idle", help="Exit when nothing is left to read or claim."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level (debug, info, warning).")] = "info",
) -> None:
    """Apply events from a Redis stream until stopped (SIGTERM or Ctrl-C: the batch in flight
    commits and is acknowledged first).

    Each entry holds one event as JSON in its `event` field. An entry is acknowledged only
    after its event is committed; one that cannot be read or validated is dead-lettered to
    `<stream>:dead` with the reason and acknowledged, so it never blocks the stream. Entries a
    dead consumer left pending are claimed after --claim-idle-ms. Prints the totals on stdout
    as `entries=N applied=N poison=N claimed=N` when it stops.
    """
    import redis

    from bastion.config import ConfigError, Settings
    from bastion.contact.store import ContactStore
    from bastion.contact.stream import RedisStream, StreamConsumer, ingest_apply, tune_gc
    from bastion.db import Store
    from bastion.policy import PolicyError, default_policy, load_policy
    from bastion.store import StoreError

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    try:
        settings = Settings.load(config, database_url=cli.db)
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    try:
        store = Store.open(settings.database_url)
    except StoreError as exc:
        raise usage_error(f"cannot open the store: {exc}") from exc
    try:
        policy_file = settings.in_data_dir(store.data_dir).policy_file
        try:
            policy = (
                load_policy(policy_file)
                if policy_file and Path(policy_file).exists()
                else default_policy()
            )
        except (OSError, PolicyError) as exc:
            raise usage_error(f"cannot load the policy: {exc}") from exc
        contact = ContactStore(store, policy.contact.risk)
        try:
            transport = RedisStream(redis_url, stream, group, consumer or _default_consumer())
        except redis.RedisError as exc:
            raise usage_error(f"cannot reach Redis: {exc}") from exc
        loop = StreamConsumer(
            transport,
            ingest_apply(functools.partial(contact.ingest, max_batch=batch)),
            batch=batch,
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
            claim_every_s=max(1.0, claim_idle_ms / 4000),
            max_attempts=max_deliveries,
        )
        tune_gc()
        stopping: list[int] = []

        def handler(signum: int, frame: FrameType | None) -> None:
            if stopping:  # a second signal: stop now (the batch stays pending, nothing is lost)
                raise KeyboardInterrupt
            stopping.append(signum)
            err.print(f"{signal.Signals(signum).name}: finishing the batch in flight")

        old_term = signal.signal(signal.SIGTERM, handler)
        old_int = signal.signal(signal.SIGINT, handler)
        err.print(f"consuming {escape(transport.name)}")
        try:
            total = loop.run(stop=lambda: bool(stopping), until_idle=until_idle)
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            transport.close()
    finally:
        store.close()
    typer.echo(
        f"entries={total.entries} applied={total.applied} poison={total.poison} "
        f"claimed={total.claimed}"
    )


@events_app.command("publish")
def events_publish(
    redis_url: RedisOpt,
    stream: StreamOpt,
    file: Annotated[
        Path, typer.Argument(help="JSON lines, one event a line (`-` for stdin).", allow_dash=True)
    ],
) -> None:
    """Append each line of FILE to the stream as one entry, in order (not validated here: the
    consumer dead-letters what is invalid). Prints how many on stdout."""
    import redis

    from bastion.contact.stream import EVENT_FIELD

    try:
        lines = (
            sys.stdin.buffer.read().splitlines()
            if str(file) == "-"
            else file.read_bytes().splitlines()
        )
    except OSError as exc:
        raise usage_error(f"cannot read {file}: {exc}") from exc
    lines = [line for line in lines if line.strip()]
    client = redis.Redis.from_url(redis_url)
    try:
        for start in range(0, len(lines), 1000):
            pipe = client.pipeline(transaction=False)
            for line in lines[start : start + 1000]:
                pipe.xadd(stream, {EVENT_FIELD: line})
            pipe.execute()
    except redis.RedisError as exc:
        raise usage_error(f"cannot publish to Redis: {exc}") from exc
    finally:
        client.close()
    typer.echo(len(lines))


@simulate_app.command("contacts")
def simulate_contacts(
    users: Annotated[int, typer.Option(min=100, help="Accounts in the population.")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=366, help="Simulated days.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same events).")] = 1,
    out: Annotated[Path, typer.Option("--out", help="Events file (JSON lines).")] = Path(
        "events.jsonl"
    ),
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="Labels file (JSON lines; default: <out stem>.labels.jsonl)."
        ),
    ] = None,
) -> None:
    """Write a synthetic contact population: children of each age band, parents, coaches and
    teachers, popular teens, planted groomers, sextortion rings and ban evaders, and benign
    lookalikes. Events carry flags and metadata only, never message text; the labels (who is
    planted, who is a lookalike) go to a separate file. Prints `events=N labels=N`."""
    from bastion.contact.simulate import run

    try:
        n_events, n_labels = run(users, days, seed, out, labels)
    except OSError as exc:
        raise usage_error(f"cannot write: {exc}") from exc
    typer.echo(f"events={n_events} labels={n_labels}")

"""The demo: a clearly labelled demo bank built from one benign photo shipped with the package.

`make run` serves Bastion with it (``bastion serve --demo``: the bank plus a fresh local admin
key); ``python -m bastion.demo`` walks through the command line with it instead. The bank holds the
hashes of a benign photo of a bridge from Meta's PDQ test set (``aaa-orig.jpg`` beside this file):
demo data, never a real hash list. ``blur-a-lot.jpg`` is Meta's blurred edit of it, the photo the
demo banner's and README's first scan sends. Both are package data, so the demo works from a bare
clone and from an installed wheel alike; their BSD licence is ``LICENSE-ThreatExchange.txt``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bastion.banks import NewEntry
from bastion.cli import app
from bastion.db import Store
from bastion.signals import hash_file
from bastion.store import BankNotFound

DEMO_BANK = "demo-bridge"
DEMO_SOURCE = "Bastion demo data: a benign photo from Meta's PDQ test set"


#: The package's demo media: the banked photo and an edit of it that the bank matches.
DEMO_DIR = Path(__file__).resolve().parent
DEMO_PHOTO = DEMO_DIR / "aaa-orig.jpg"
DEMO_EDIT = DEMO_DIR / "blur-a-lot.jpg"

DEMO_KEY = "local-admin"
DEMO_USER = "demo-admin"
DEMO_ACTOR = "cli:make-run"


def ensure_demo_bank(store: Store, actor: str | None = None) -> bool:
    """Create the demo bank from the bridge photo unless it exists; True if it was created.
    With ``actor``, the bank and its entries are audited as that actor."""
    try:
        store.get_bank(DEMO_BANK)
        return False
    except BankNotFound:
        pass
    photo = DEMO_PHOTO
    fs = hash_file(photo)
    if fs.error:
        raise RuntimeError(f"demo photo {photo}: {fs.error}")
    store.create_bank(
        DEMO_BANK,
        labels=["demo"],
        source=DEMO_SOURCE,
        is_demo=True,
        description="Demo data: hashes of a benign bridge photo, for trying Bastion out.",
        actor=actor,
    )
    store.add_entries(
        DEMO_BANK,
        [
            NewEntry(
                signal_type=s.type,
                value=s.value,
                quality=s.quality,
                source=DEMO_SOURCE,
                external_id="demo-bridge-photo",
                labels=["demo"],
                metadata={"filename": photo.name},
            )
            for s in fs.signals
        ],
        actor=actor,
    )
    return True


def prepare_server_demo(store: Store, actor: str = DEMO_ACTOR) -> tuple[str, str]:
    """The demo bank, a new admin key for this run (earlier runs' keys are revoked) and a fresh
    password for the console's ``demo-admin`` user, each change audited as ``actor`` in its own
    transaction (``bastion serve --demo`` passes ``cli:<os user>``). Returns (token, password)."""
    from bastion.accounts.store import AccountStore, UserNotFound

    ensure_demo_bank(store, actor)
    for key in store.list_api_keys():
        if key.name.startswith(DEMO_KEY) and key.revoked_at is None:
            store.revoke_api_key(key.name, actor=actor)
    # The time names the run; the random suffix keeps two runs within a second apart.
    name = f"{DEMO_KEY}-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    _, token = store.create_api_key(name, {"admin"}, actor=actor)
    accounts = AccountStore(store)
    password = secrets.token_urlsafe(12)
    try:
        accounts.get_user(DEMO_USER)
        accounts.set_password(DEMO_USER, password, actor=actor)
    except UserNotFound:
        accounts.create_user(DEMO_USER, "admin", password, actor=actor)
    return token, password


def run(args: list[str]) -> int:
    """Run one `bastion` command in-process and return its exit code."""
    # With standalone_mode off, click returns the code of a typer.Exit instead of exiting.
    return int(app(args=args, prog_name="bastion", standalone_mode=False) or 0)


def main() -> int:
    console = Console()
    console.rule("Bastion demo (benign test photos, demo bank)")
    with Store.open(None) as store:
        ensure_demo_bank(store, DEMO_ACTOR)
    console.print("$ bastion bank list")
    run(["bank", "list"])
    photos = [DEMO_PHOTO, DEMO_EDIT]
    console.print("$ bastion scan " + " ".join(str(p) for p in photos))
    code = run(["scan", *map(str, photos)])
    console.print(
        f"\nscan exit code {code} (1 = matches found). Try `.venv/bin/bastion --help`; "
        "the data lives in ./bastion-data/."
    )
    return 0

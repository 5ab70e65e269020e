"""`make run`: set up a clearly labelled demo bank and scan the benign test photos with it.

The demo bank holds the hashes of one benign photo of a bridge from Meta's PDQ test set. It is demo
data, never a real hash list. The HTTP server replaces this walk-through when it lands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

from bastion.cli import app

DEMO_BANK = "demo-bridge"
DEMO_SOURCE = "Bastion demo data: a benign photo from Meta's PDQ test set"


def testdata_dir() -> Path:
    env = os.environ.get("BASTION_TESTDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "testdata"


def run(args: list[str]) -> int:
    """Run one `bastion` command in-process and return its exit code."""
    # With standalone_mode off, click returns the code of a typer.Exit instead of exiting.
    return int(app(args=args, prog_name="bastion", standalone_mode=False) or 0)


def main() -> int:
    console = Console()
    data = testdata_dir()
    if not data.is_dir():
        console.print(f"[red]demo needs the benign test media at {data}[/red]")
        return 2
    photo = data / "images" / "bridge-mods" / "aaa-orig.jpg"
    console.rule("Bastion demo (benign test photos, demo bank)")
    from bastion.store import BankNotFound, Store

    store = Store.open(None)
    try:
        store.get_bank(DEMO_BANK)
        fresh = False
    except BankNotFound:
        fresh = True
    finally:
        store.close()
    if fresh:
        console.print(f"$ bastion bank create {DEMO_BANK} --label demo --demo")
        run(["bank", "create", DEMO_BANK, "--label", "demo", "--demo", "--source", DEMO_SOURCE])
        console.print(f"$ bastion bank add {DEMO_BANK} {photo}")
        run(["bank", "add", DEMO_BANK, str(photo), "--label", "demo"])
    console.print("$ bastion bank list")
    run(["bank", "list"])
    folders = [data / "images" / "bridge-mods", data / "images" / "reg-test-input" / "dih"]
    console.print("$ bastion scan --dihedral " + " ".join(str(f) for f in folders))
    code = run(["scan", "--dihedral", *map(str, folders)])
    console.print(
        f"\nscan exit code {code} (1 = matches found). Try `.venv/bin/bastion --help`; "
        "the data lives in ./bastion-data/."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The client library imports nothing of the server: checked in a fresh interpreter that refuses
to import any server module or web/database package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FORBIDDEN = [
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "uvicorn",
    "httpx",
    "psycopg",
    "typer",
    "jinja2",
    "prometheus_client",
    "yaml",
    "bastion.store",
    "bastion.api",
    "bastion.psi",
    "bastion.signals",
    "bastion.index",
    "bastion.banks",
    "bastion.config",
    "bastion.crypto",
    "bastion.web",
]
ALLOWED_THIRD_PARTY = {
    "PIL",
    "numpy",
    "pdqhash",
    "rbcl",
    "cryptography",
    "bastion",
    # what those pull in themselves
    "barriers",
    "_cffi_backend",
    "_openssl",
    "cython_runtime",
}

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    FORBIDDEN = {forbidden!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                raise ImportError(f"blocked import of {{name}}")
            return None

    sys.meta_path.insert(0, Blocker())
    before = set(sys.modules)
    import io, random
    from PIL import Image
    from bastion.client import Account, Client, CommittingAead, frank, hash_image, receive
    from bastion.client.pdata import Params, PData, pdata_root, serialize
    from bastion.client import group as g

    # Make a real voucher against a (client-built) table, end to end, without the server.
    params = Params()
    rng = random.Random(1)
    slots = b"".join(g.random_point(rng.randbytes) for _ in range(16 * 2))
    blob = serialize(params, n_buckets=16, seed=bytes(16), public=g.random_point(rng.randbytes),
                     created=0, label="isolation", slots=slots)
    pdata = PData.from_bytes(blob, expected_root=pdata_root(blob))
    buf = io.BytesIO()
    Image.radial_gradient("L").resize((300, 200)).save(buf, "JPEG")
    client = Client(pdata, "someone", Account.new())
    voucher = client.voucher_for_image(buf.getvalue(), "item-1")
    franked = frank(b"hi")
    assert receive(franked.payload, franked.commitment)[0] == b"hi"
    new = set(sys.modules) - before
    top = sorted({{m.split(".")[0] for m in new}} - set(sys.stdlib_module_names))
    mods = sorted(m for m in sys.modules if m.startswith("bastion"))
    print(json.dumps({{"top": top, "bastion": mods, "bytes": len(voucher.data)}}))
    """
)


def test_client_imports_only_its_allowed_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    extra = {m for m in report["top"] if not m.startswith("_cython_")} - ALLOWED_THIRD_PARTY
    assert not extra, report["top"]
    # bastion.imaging (the pixel preparation PDQ hashes, shared with the server) is pure.
    assert all(
        m in ("bastion", "bastion.imaging") or m.startswith("bastion.client")
        for m in report["bastion"]
    ), report["bastion"]
    assert "bastion.imaging" in report["bastion"]
    assert report["bytes"] > 1000


def test_the_blocker_really_blocks() -> None:
    script = SCRIPT.format(forbidden=FORBIDDEN).replace("import io, random", "import bastion.store")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "blocked import of bastion.store" in result.stderr

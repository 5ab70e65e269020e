"""The wheel stands on its own: built the way `make dist` builds it (an sdist, then a wheel from
the sdist), installed into a fresh virtualenv outside the repository, and `bastion serve --demo`
run from an empty folder. The console, its static files, the default policy, the migrations and
the demo bank must all come from the installed package, and `pip install` must pull every runtime
dependency and nothing of the ``dev`` or ``bench`` extras.

Slow (a virtualenv, an install and a server start): pip's caches and the machine's wheel
directory make repeated runs take a minute or two; a cold cache downloads every dependency.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.slow

#: Only these of the checkout go into the build, so the build never writes into the checkout.
BUILD_INPUTS = ("pyproject.toml", "MANIFEST.in", "README.md", "bastion")


def _name(requirement: str) -> str:
    """PEP 503 normalised project name of a requirement string."""
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert found, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that could make the venv see the checkout or its venv."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("BASTION_")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def _source_files() -> list[str]:
    """The checkout's build inputs: tracked files plus new ones not yet committed (never ignored
    ones such as caches), as a clone would hold them once committed."""
    listing = ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--"]
    out = subprocess.run(
        ["git", "-C", str(REPO), *listing, *BUILD_INPUTS],
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted(p for p in out.split("\0") if p and (REPO / p).is_file())


@dataclass
class Built:
    wheel: Path
    sdist: Path
    sources: list[str]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    src = tmp_path_factory.mktemp("src")
    sources = _source_files()
    for rel in sources:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=900,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return Built(wheel, sdist, sources)


@dataclass
class Venv:
    root: Path
    python: Path
    bastion: Path
    site: Path  # the installed package's directory


@pytest.fixture(scope="session")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("venv")
    empty = tmp_path_factory.mktemp("empty")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, env=_clean_env())
    python = root / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(built.wheel)],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=1800,
        env=_clean_env(),
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import bastion, pathlib; print(pathlib.Path(bastion.__file__).parent)",
        ],
        cwd=empty,
        check=True,
        capture_output=True,
        text=True,
        env=_clean_env(),
    ).stdout.strip()
    return Venv(root, python, root / "bin" / "bastion", Path(where))


def test_wheel_holds_every_package_file_and_nothing_else(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = set(whl.namelist())
    package = {p for p in built.sources if p.startswith("bastion/")}
    assert package - names == set()  # templates, static, yaml, migrations, demo photos, licence
    for must in (
        "bastion/demo/aaa-orig.jpg",
        "bastion/demo/blur-a-lot.jpg",
        "bastion/demo/LICENSE-ThreatExchange.txt",
        "bastion/default_policy.yaml",
        "bastion/store/alembic.ini",
        "bastion/web/templates/login.html",
        "bastion/web/static/console.css",
    ):
        assert must in names, must
    outside = {n for n in names if not n.startswith(("bastion/", "bastion_safety-"))}
    assert outside == set()  # no tests, benchmarks or test media
    assert not any("__pycache__" in n for n in names)
    with tarfile.open(built.sdist) as sdist:
        top = {Path(n).parts[1] for n in sdist.getnames() if len(Path(n).parts) > 1}
    assert {"bastion", "pyproject.toml", "README.md"} <= top
    assert not top & {"tests", "benchmarks"}  # the suite and its media stay in the repository


def test_install_pulls_runtime_dependencies_only(venv: Venv, built: Built) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    extras = {
        _name(r) for group in ("dev", "bench") for r in project["optional-dependencies"][group]
    }
    report = subprocess.run(
        [
            str(venv.python),
            "-c",
            "import json, importlib.metadata as m, sys; print(json.dumps({"
            "'dists': sorted(d.metadata['Name'] for d in m.distributions()),"
            "'direct_url': m.distribution('bastion-safety').read_text('direct_url.json'),"
            "'path': sys.path}))",
        ],
        cwd=venv.root,
        check=True,
        capture_output=True,
        text=True,
        env=_clean_env(),
    ).stdout
    got = json.loads(report)
    installed = {_name(n) for n in got["dists"]}
    assert runtime - installed == set()
    assert extras & installed == set()  # e.g. pytest, ruff, schemathesis, build, faiss-cpu
    assert {"pytest", "ruff", "faiss-cpu", "threatexchange"} & installed == set()
    # Installed from the wheel file, not an editable checkout; no path into the repository.
    direct = json.loads(got["direct_url"])
    assert direct["url"].endswith(built.wheel.name) and "dir_info" not in direct
    assert not any(p.startswith(str(REPO)) for p in got["path"])
    assert "include-system-site-packages = false" in (venv.root / "pyvenv.cfg").read_text()
    check = subprocess.run(
        [str(venv.python), "-m", "pip", "check"], capture_output=True, text=True, env=_clean_env()
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert venv.site.is_relative_to(venv.root) and "site-packages" in venv.site.parts
    assert not venv.site.is_relative_to(REPO)


@dataclass
class Served:
    base: str
    output: str
    run_dir: Path


@pytest.fixture(scope="session")
def served(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    run_dir = tmp_path_factory.mktemp("run")  # empty: no policy, database or key yet
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    log = (home / "server.log").open("w")
    env = _clean_env(HOME=str(home), BASTION_KEY_DIR=str(home / "keys"))
    serve = [
        "serve",
        "--demo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        [str(venv.bastion), *serve],
        cwd=run_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # numba compiles its kernels on a fresh install
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.3)
        yield Served(base, (home / "server.log").read_text(), run_dir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    assert proc.returncode in (0, -signal.SIGTERM)


def test_serve_demo_from_the_wheel(served: Served, venv: Venv) -> None:
    printed = served.output
    [token] = [ln for ln in printed.splitlines() if ln.startswith("bst_")]
    headers = {"Authorization": f"Bearer {token}"}

    # The banner's curl names the demo edit inside the installed package.
    curl = re.search(r"curl .* -F file=@(\S+) ", printed)
    assert curl, printed
    photo = Path(curl.group(1))
    assert photo == venv.site / "demo" / "blur-a-lot.jpg" and photo.is_file()
    r = httpx.post(
        f"{served.base}/v1/scan",
        headers=headers,
        files={"file": ("p.jpg", photo.read_bytes())},
        data={"context": json.dumps({"uploader_id": "demo-user"})},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matches"][0]["bank"] == "demo-bridge"
    assert body["verdict"]["decision"] == "review" and body["verdict"]["case_id"] >= 1
    banks = httpx.get(f"{served.base}/v1/banks", headers=headers).json()
    assert [(b["name"], b["is_demo"]) for b in banks] == [("demo-bridge", True)]

    # The console's templates and static files are the installed package's.
    login = httpx.get(f"{served.base}/login")
    assert login.status_code == 200 and 'name="csrf_token"' in login.text
    for name in re.findall(r'(?:href|src)="/static/([^"?]+)', login.text):
        static = httpx.get(f"{served.base}/static/{name}")
        assert static.status_code == 200, name
        assert static.content == (venv.site / "web" / "static" / name).read_bytes()
    assert "console.css" in login.text

    # The default policy was written from the package; the schema is the package's head.
    data = served.run_dir / "bastion-data"
    default = (venv.site / "default_policy.yaml").read_text()
    assert (data / "policy.yaml").read_text() == default
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(venv.site / "store" / "migrations")).get_current_head()
    with sqlite3.connect(data / "bastion.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]


def test_python_m_bastion_demo_from_the_wheel(
    venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("demo")
    home = tmp_path_factory.mktemp("demo-home")
    done = subprocess.run(
        [str(venv.python), "-m", "bastion.demo"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(HOME=str(home), BASTION_KEY_DIR=str(home / "keys")),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "scan exit code 1" in done.stdout
    assert "2 files scanned, 2 matched" in done.stderr  # the packaged photo and its edit
    assert (folder / "bastion-data" / "bastion.db").is_file()

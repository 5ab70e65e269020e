"""The repository stands on its own: nothing in it (code, tests, docs, Makefile, CI, packaging)
points at a sibling folder of the checkout, such as the development machines' shared test media.
A bare clone has nothing beside it: the test media live in tests/data, the demo's in bastion/demo.
"""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

#: The path forms a reference to the sibling folder takes. The word "shared" alone is common
#: (shared buffers, a feed named "shared"), so only paths are matched.
PATTERNS = re.compile(
    r"""\.\./shared\b                                  # the sibling folder, relatively
      | /work/shared\b                                 # an absolute path on the dev machines
      | \bshared/testdata\b                            # the media folder named relatively
      | (?:parents\[\d+\]|\.parent)\s*/\s*["']shared["']  # Path(__file__).parents[2] / "shared"
      | ["']shared["']\s*/\s*["']testdata["']          # ... / "shared" / "testdata"
      | BASTION_TESTDATA                               # the old variable naming that folder
    """,
    re.VERBOSE,
)


def _files() -> list[str]:
    """Tracked files, plus new ones not yet committed (never ignored ones)."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted(p for p in out.split("\0") if p)


def test_nothing_refers_to_a_folder_beside_the_checkout() -> None:
    files = _files()
    for expected in ("Makefile", "pyproject.toml", ".ci/run", "README.md", "tests/conftest.py"):
        assert expected in files  # the listing really covers code, docs, CI and packaging
    this = "tests/test_self_contained.py"
    hits = []
    for rel in files:
        path = REPO / rel
        if rel == this or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: photos, videos, screenshots
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if PATTERNS.search(line):
                hits.append(f"{rel}:{n}: {line.strip()}")
    assert hits == []


def test_the_patterns_catch_each_form() -> None:
    up = ".." + "/"  # spelled apart, so a plain grep of the repository finds no such path here
    for line in (
        f"-F file=@{up}shared/testdata/images/bridge-mods/blur-a-lot.jpg",
        'TESTDATA = REPO.parent / "shared" / "testdata"',
        'return Path(__file__).resolve().parents[2] / "shared" / "testdata"',
        'IMAGES = Path("/work/shared/testdata/images/misc-images")',
        "in `shared/testdata` (crop, flip,",
        'monkeypatch.setenv("BASTION_TESTDATA", str(testdata))',
        f"[the architecture]({up}shared/ARCHITECTURE.md)",
    ):
        assert PATTERNS.search(line), line
    for line in ('feeds.publish("shared")', "`shared_buffers` 128 MB", "these shared machines"):
        assert not PATTERNS.search(line), line

"""The README's scope table lists every scope a key can have (bastion/keys.py), so an
integrator learns which scope each route needs without reading the code."""

from __future__ import annotations

import re
from pathlib import Path

from bastion.keys import SCOPES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_lists_every_scope() -> None:
    rows = re.findall(r"^\| `([a-z]+)` \| ", README.read_text(), re.MULTILINE)
    assert set(SCOPES) <= set(rows), sorted(set(SCOPES) - set(rows))
    assert "`POST /v1/scan`" in README.read_text()

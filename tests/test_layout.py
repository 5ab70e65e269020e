"""The layout rules of docs/architecture.md that a reviewer would otherwise have to remember.

- no module in ``bastion/store/`` (the store core) over 800 lines;
- no class over 600 lines anywhere in ``bastion/``;
- no import of a private (``_name``) module or name from outside the package that owns it;
- no end-of-section markers (a comment of two dashes, ``end`` and a section's name) keeping
  edits apart in hub files, in ``bastion/`` and ``tests/``;
- the edges ``bastion.api`` and ``bastion.web`` never import each other.

``make lint`` checks the import contracts in pyproject.toml (``lint-imports``) as well; the
api/web rule is repeated here so ``make test`` alone catches it too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bastion"
STORE_MODULE_MAX_LINES = 800
CLASS_MAX_LINES = 600
#: Such a marker: a hash, two dashes, then the word ``end`` (and the section's name).
END_MARKER = re.compile(r"#\s*-{2}\s*end\b")
TEXT_SUFFIXES = {".py", ".html", ".js", ".css", ".md", ".yaml", ".yml", ".toml", ".txt", ".mako"}


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    """The package a file belongs to: itself for an ``__init__.py``, else its parent."""
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _is_package(module: str) -> bool:
    return (ROOT.joinpath(*module.split(".")) / "__init__.py").is_file()


def _private(segment: str) -> bool:
    return segment.startswith("_") and not segment.startswith("__")


def _inside(importer_package: str, owner: str) -> bool:
    return importer_package == owner or importer_package.startswith(owner + ".")


def _private_imports(source: str, importer: str) -> Iterator[tuple[int, str, str]]:
    """``(line, what, owner)`` for every private module or name the code ``source`` of a module
    in package ``importer`` imports from a package it is not part of; ``owner`` is the package
    the private thing belongs to. Function-level and ``TYPE_CHECKING`` imports count too."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importer's package
                base = importer.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] != "bastion":
                continue
            targets = [(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [
                (alias.name.rpartition(".")[0], alias.name.rpartition(".")[2])
                for alias in node.names
                if alias.name.split(".")[0] == "bastion"
            ]
        else:
            continue
        for module, name in targets:
            parts = module.split(".")
            for i, segment in enumerate(parts):
                if _private(segment):  # a private module: owned by the package holding it
                    owner = ".".join(parts[:i])
                    if not _inside(importer, owner):
                        yield node.lineno, f"{module} (import of {name})", owner
                    break
            else:
                if _private(name):
                    owner = module if _is_package(module) else module.rpartition(".")[0]
                    if not _inside(importer, owner):
                        yield node.lineno, f"{module}.{name}", owner


def test_store_modules_are_small() -> None:
    too_big = {
        str(p.relative_to(ROOT)): n
        for p in _python_files(PACKAGE / "store")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > STORE_MODULE_MAX_LINES
    }
    assert not too_big, f"store modules over {STORE_MODULE_MAX_LINES} lines: {too_big}"


def test_no_class_is_huge() -> None:
    too_big = {}
    for path in _python_files(PACKAGE):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > CLASS_MAX_LINES:
                    too_big[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert not too_big, f"classes over {CLASS_MAX_LINES} lines: {too_big}"


def test_no_private_import_across_packages() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what} is private to {owner}"
        for path in _python_files(PACKAGE)
        for line, what, owner in _private_imports(
            path.read_text(encoding="utf-8"), _package_of(path)
        )
    ]
    assert not found, "private names imported across packages:\n" + "\n".join(found)


def test_no_end_markers() -> None:
    found = []
    for top in ("bastion", "tests"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in TEXT_SUFFIXES or "__pycache__" in path.parts:
                continue
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if END_MARKER.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "edit-separating end markers:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("importer", "imported"), [("bastion.api", "bastion.web"), ("bastion.web", "bastion.api")]
)
def test_edges_do_not_import_each_other(importer: str, imported: str) -> None:
    graph = grimp.build_graph("bastion", cache_dir=None)
    chain = graph.find_shortest_chain(importer=importer, imported=imported, as_packages=True)
    assert chain is None, f"{importer} imports {imported}: {' -> '.join(chain or ())}"


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("bastion.web", "from bastion.store.bulk import _copy_rows\n", 1),
        ("bastion.store", "from bastion.store.engine import _helper\n", 0),
        ("bastion.store.migrations", "from bastion.store.engine import _helper\n", 0),
        ("bastion.client", "from bastion.client import _group as g\n", 0),
        ("bastion.api", "from bastion.client._group import DOMAIN\n", 1),
        ("bastion.api", "import bastion.client._group\n", 1),
        ("bastion.cli", "from ._context import CliContext\n", 0),
        ("bastion.cli", "from ..index._kernels import x\n", 1),
        ("bastion.cli", "from .._private_module import x\n", 0),
        ("bastion.api", "def f():\n    from bastion.cli import _state\n", 1),
        ("bastion.api", "from bastion.cli import __version__, state\n", 0),
    ],
)
def test_the_private_import_check_itself(importer: str, source: str, expected: int) -> None:
    assert len(list(_private_imports(source, importer))) == expected

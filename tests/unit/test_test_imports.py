"""Shared test helpers live in tests/support/: no test module (or conftest) imports another test
module or a conftest, where a helper would be found only by whoever knows where it was first written."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = "." * node.level + node.module
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, "." * node.level + alias.name) for alias in node.names]
    return found


def _is_test_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last.startswith("test_") or last == "conftest"


def test_no_test_module_imports_another() -> None:
    offending = []
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, name in _imported(tree):
            if (name.startswith(("tests.", ".")) or name == "tests") and _is_test_module(name):
                offending.append(f"{path.relative_to(TESTS.parent)}:{line}: {name}")
    assert not offending, "move shared helpers to tests/support/:\n" + "\n".join(offending)


def test_the_check_sees_both_forms() -> None:
    source = "from tests.integration.test_x import a\nfrom .conftest import b\nfrom . import test_y\n"
    names = [name for _, name in _imported(ast.parse(source)) if _is_test_module(name)]
    assert names == ["tests.integration.test_x", ".conftest", ".test_y"]

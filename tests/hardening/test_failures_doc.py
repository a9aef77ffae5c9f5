"""docs/failures.md stays true: each fault test has its row, and each row names a test that exists."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _fault_tests() -> set[tuple[str, str]]:
    """(file, test) of every test function decorated with ``pytest.mark.fault``."""
    found = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                for d in node.decorator_list:
                    target = d.func if isinstance(d, ast.Call) else d
                    if ast.unparse(target) == "pytest.mark.fault":
                        found.add((str(path.relative_to(ROOT)), node.name))
    return found


def _functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_fault_test_has_a_row_and_every_row_a_test():
    rows = set(ROW_TEST.findall((ROOT / "docs" / "failures.md").read_text()))
    missing = sorted(f"{f}::{t}" for f, t in rows if not (ROOT / f).exists() or t not in _functions(ROOT / f))
    assert not missing, f"docs/failures.md names tests that do not exist: {missing}"
    faults = _fault_tests()
    unlisted = sorted(f"{f}::{t}" for f, t in faults - rows)
    assert not unlisted, f"fault tests without a row in docs/failures.md: {unlisted}"
    unmarked = sorted(f"{f}::{t}" for f, t in rows - faults)
    assert not unmarked, f"rows whose test is not marked @pytest.mark.fault: {unmarked}"
    assert len(rows) >= 25

"""docs/reliability.md cannot drift from the fault-injection suite.

Every test the fault table names must exist in tests/integration (as a
module-level function of that file), and every test of the suite
(tests/integration/test_faults_*.py) must be named in the table.
"""

from __future__ import annotations

import ast
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "reliability.md")
INTEGRATION = os.path.join(ROOT, "tests", "integration")
SUITE = "test_faults_*.py"
TEST_REF = re.compile(r"`([A-Za-z0-9_]+\.py)::([A-Za-z0-9_]+)`")
HEADER = ["fault", "what the collection does", "what is guaranteed", "test"]


def table_rows(text: str) -> list[list[str]]:
    """The rows of the table under '## Faults' (cells stripped), header row excluded."""
    section = text.split("\n## Faults\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert cells and cells[0] == HEADER, f"the fault table must have the columns {HEADER}, got {cells[:1]}"
    assert set("".join(cells[1])) <= set("-: "), "the second line must be the table's separator"
    return cells[2:]


def functions_in(path: str) -> set[str]:
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def doc_refs() -> list[tuple[str, str]]:
    with open(DOC, encoding="utf-8") as handle:
        rows = table_rows(handle.read())
    refs = []
    for row in rows:
        assert len(row) == len(HEADER), f"a row of the fault table has {len(row)} cells: {row[0][:60]}"
        assert all(row), f"a row of the fault table has an empty cell: {row[0][:60]}"
        found = TEST_REF.findall(row[-1])
        assert found, f"the row {row[0][:60]!r} names no test (`file.py::test_name`)"
        refs += found
    return refs


def test_the_table_covers_the_nine_faults_of_issue_7():
    with open(DOC, encoding="utf-8") as handle:
        numbers = {re.match(r"(\d+)", row[0]).group(1) for row in table_rows(handle.read())}
    assert numbers == {str(n) for n in range(1, 10)}


def test_every_test_the_table_names_exists():
    missing = []
    for filename, name in doc_refs():
        path = os.path.join(INTEGRATION, filename)
        if not os.path.isfile(path) or name not in functions_in(path):
            missing.append(f"{filename}::{name}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


def test_every_fault_test_is_in_the_table():
    suite = sorted(glob.glob(os.path.join(INTEGRATION, SUITE)))
    assert suite, f"no {SUITE} under tests/integration"
    named = set(doc_refs())
    absent = [f"{os.path.basename(path)}::{name}" for path in suite for name in sorted(functions_in(path))
              if (os.path.basename(path), name) not in named]
    assert not absent, f"fault tests missing from the table in docs/reliability.md: {absent}"


def test_the_table_checker_catches_drift():
    """The parser is not vacuous: a renamed test or a broken table is caught."""
    text = "# x\n\n## Faults\n\n| fault | what the collection does | what is guaranteed | test |\n|---|---|---|---|\n"
    row = "| 1. a | b | c | `test_faults_rolling.py::test_no_such_test` |\n"
    rows = table_rows(text + row)
    assert TEST_REF.findall(rows[0][-1]) == [("test_faults_rolling.py", "test_no_such_test")]
    assert "test_no_such_test" not in functions_in(os.path.join(INTEGRATION, "test_faults_rolling.py"))
    try:
        table_rows(text.replace("| test |", "| tests |") + row)
    except AssertionError:
        pass
    else:
        raise AssertionError("a table with the wrong columns was accepted")

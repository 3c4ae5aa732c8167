"""The layers of docs/ARCHITECTURE.md, read from the source: a new leak fails here.

Every ``import`` and ``from ... import`` in src/dbstruct counts, including those under
``if TYPE_CHECKING:`` and inside functions: a type-only import is still a dependency a reader
has to follow, and a circle of them is still a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "dbstruct"

#: the runtime modules allowed to start the emulator: the command line (``dbstruct emulator``)
#: and the demo's wiring (a job file with ``emulator:``)
EMULATOR_USERS = {"dbstruct.cli", "dbstruct.jobs._demo"}
#: the client layer: what ``import dbstruct`` needs, with neither Spark nor pandas
CLIENT_EXCLUDES = ("dbstruct.spark", "dbstruct.jobs", "dbstruct.testing", "dbstruct.cli")
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> Iterator[str]:
    """Every dbstruct module (or other top-level package) ``name`` imports."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:  # `from dbstruct.spark import _udf` imports a module
                full = f"{base}.{alias.name}"
                yield full if full in MODULES else base


def internal(name: str) -> set[str]:
    return {m for m in imports(name) if m in MODULES and m != name}


def in_layer(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_spark_never_imports_jobs() -> None:
    leaks = {
        (m, d)
        for m in MODULES
        if in_layer(m, "dbstruct.spark")
        for d in internal(m)
        if in_layer(d, "dbstruct.jobs")
    }
    assert leaks == set()


def test_only_the_cli_and_the_demo_wiring_import_the_emulator() -> None:
    leaks = {
        (m, d)
        for m in MODULES
        if not in_layer(m, "dbstruct.testing") and m not in EMULATOR_USERS
        for d in internal(m)
        if in_layer(d, "dbstruct.testing")
    }
    assert leaks == set()


def test_the_emulator_imports_nothing_of_dbstruct_but_itself() -> None:
    """It keeps its own statement of the rules, so it can catch a client that breaks them."""
    leaks = {
        (m, d)
        for m in MODULES
        if in_layer(m, "dbstruct.testing")
        for d in internal(m)
        if not in_layer(d, "dbstruct.testing") and d != "dbstruct"
    }
    assert leaks == set()


def test_the_client_imports_neither_spark_nor_jobs_nor_the_emulator() -> None:
    client = [m for m in MODULES if not any(in_layer(m, p) for p in CLIENT_EXCLUDES)]
    leaks = {
        (m, d)
        for m in client
        for d in imports(m)
        if any(in_layer(d, p) for p in (*CLIENT_EXCLUDES, "pyspark", "pandas", "pyarrow"))
    }
    assert leaks == set()


def test_no_import_circles() -> None:
    graph = {m: internal(m) - {"dbstruct"} for m in MODULES}
    # a package's __init__ re-exporting its modules is not a circle through them
    graph = {m: {d for d in deps if not in_layer(m, d)} for m, deps in graph.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_500_lines(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def test_the_layer_reader_sees_imports_of_every_kind() -> None:
    """The rules above would pass on a reader that sees nothing: check it sees each form."""
    seen = set(imports("dbstruct.spark._udf"))
    assert "pyspark" in {m.split(".")[0] for m in seen}  # a function-level import
    assert any(in_layer(m, "dbstruct.spark") for m in seen)
    assert {"dbstruct.errors"} <= internal("dbstruct.providers")

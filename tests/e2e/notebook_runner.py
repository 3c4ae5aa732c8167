"""Run a Databricks notebook in source format against a local Spark session, as CI does.

A notebook in source format is a ``.py`` file whose first line is ``# Databricks notebook
source``, with cells separated by ``# COMMAND ----------`` lines and magic cells written as
``# MAGIC %md`` / ``%sql`` / ``%pip`` lines (the marker Databricks reads:
https://docs.databricks.com/en/repos/manage-assets.html).

    run = run_notebook("notebooks/01_quickstart.py", spark=spark,
                       dbutils=FakeDbutils(api_url=emu.host, api_token=emu.token))
    run.displayed[-1].rows

Python cells run in one namespace holding ``spark``, ``dbutils`` and ``display``, as a
notebook's do; ``%md`` cells are skipped; a ``%sql`` cell runs through ``spark.sql`` and its
result goes to ``display``; a ``%pip install`` cell runs pip for real, into a throwaway
folder (:class:`PipInstall`). While the notebook runs, the process looks
like a Databricks driver to dbstruct: ``DATABRICKS_RUNTIME_VERSION`` is set, every other
``DATABRICKS_*`` variable is removed and ``dbutils`` sits in ``__main__``, so credentials can
only come from the notebook context (:mod:`dbstruct.auth`, step 4). All of it is undone
afterwards. Python's working directory is the notebook's folder, as on Databricks.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import json
import linecache
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "Cell",
    "Displayed",
    "FakeDbutils",
    "NotebookError",
    "NotebookRun",
    "PipInstall",
    "parse_notebook",
    "run_notebook",
]

HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
MAGIC = "# MAGIC"
# "Table results are limited to 10,000 rows or 2 MB, whichever is lower."
# https://learn.microsoft.com/azure/databricks/notebooks/notebook-limitations
DISPLAY_MAX_ROWS = 10_000
#: the runtime version the driver claims; any value makes dbstruct look for a notebook context
RUNTIME_VERSION = "15.4"


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Cell:
    """One cell: ``kind`` is "python" or the magic's name ("md", "sql", "pip", ...)."""

    number: int  # 1-based, as the notebook UI counts
    kind: str
    source: str  # without the magic line prefix and the magic command itself

    @property
    def first_line(self) -> str:
        return next((line for line in self.source.splitlines() if line.strip()), "")


def parse_notebook(text: str, name: str = "notebook") -> list[Cell]:
    """The cells of a notebook in source format; blank cells are dropped."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise ValueError(f"{name}: not a Databricks notebook (first line is not {HEADER!r})")
    chunks: list[list[str]] = [[]]
    for line in lines[1:]:
        if line.strip() == SEPARATOR:
            chunks.append([])
        else:
            chunks[-1].append(line)
    cells = [_cell(chunk) for chunk in chunks]
    kept = [c for c in cells if c is not None]
    return [Cell(number, kind, source) for number, (kind, source) in enumerate(kept, start=1)]


def _cell(lines: list[str]) -> tuple[str, str] | None:
    # "# DBTITLE 1,<title>" is the cell title Databricks writes above a cell's code.
    body = [line for line in lines if not line.startswith("# DBTITLE")]
    if not any(line.strip() for line in body):
        return None
    code = [line for line in body if line.strip()]
    if not all(line.startswith(MAGIC) for line in code):
        return "python", "\n".join(body).strip("\n")
    text = "\n".join(line[len(MAGIC) :].removeprefix(" ") for line in body if line.strip())
    magic, _, rest = text.strip().partition("\n")
    command, _, argument = magic.partition(" ")
    if not command.startswith("%"):
        raise ValueError(f"a '# MAGIC' cell must start with a %command, got {magic!r}")
    kind = command[1:]
    if kind == "python":
        return "python", rest
    return kind, "\n".join(part for part in (argument, rest) if part).strip()


# ---------------------------------------------------------------- display


@dataclass
class Displayed:
    """What one ``display(...)`` call (or a ``%sql`` cell) showed."""

    cell: int
    columns: list[str]
    rows: list[Any]  # pyspark Rows for Spark DataFrames, dicts for pandas, [obj] otherwise
    text: str  # everything shown, as text: searched for secrets

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows]


class _Display:
    """The notebook's ``display``: records what it is given instead of rendering it."""

    def __init__(self) -> None:
        self.shown: list[Displayed] = []
        self.cell = 0

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> None:
        if hasattr(obj, "collect") and hasattr(obj, "schema"):  # a Spark DataFrame
            rows = obj.limit(DISPLAY_MAX_ROWS).collect()
            shown = Displayed(self.cell, list(obj.columns), rows, repr(rows))
        elif hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a pandas DataFrame
            records = obj.head(DISPLAY_MAX_ROWS).to_dict("records")
            shown = Displayed(self.cell, [str(c) for c in obj.columns], records, repr(records))
        else:
            shown = Displayed(self.cell, [], [obj], repr(obj))
        self.shown.append(shown)


# ---------------------------------------------------------------- dbutils


class _Option:
    """A Scala ``Option`` as py4j hands it to Python."""

    def __init__(self, value: str | None) -> None:
        self._value = value

    def get(self) -> str:
        if self._value is None:
            raise RuntimeError("None.get")  # what Scala raises
        return self._value


class _Context:
    def __init__(self, api_url: str, api_token: str) -> None:
        self._api_url = api_url
        self._api_token = api_token

    def apiUrl(self) -> _Option:
        return _Option(self._api_url)

    def apiToken(self) -> _Option:
        return _Option(self._api_token)

    def __repr__(self) -> str:
        return "CommandContext(...)"


class _NotebookUtils:
    """``dbutils.notebook``; ``entry_point.getDbutils().notebook().getContext()`` is the
    chain dbstruct (and databricks-sdk) read the notebook's host and token from."""

    def __init__(self, context: _Context) -> None:
        self._context = context
        self.entry_point = self

    def getDbutils(self) -> _NotebookUtils:
        return self

    def notebook(self) -> _NotebookUtils:
        return self

    def getContext(self) -> _Context:
        return self._context


class _Widgets:
    """``dbutils.widgets``: values given by the test win over defaults, as job parameters do.

    Widgets take strings only; reading one that was never defined fails
    (https://learn.microsoft.com/azure/databricks/notebooks/widgets).
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            if not isinstance(value, str):
                raise TypeError(f"widget {key!r}: widget values are strings, got {value!r}")
        self._given = dict(values)
        self._defined: dict[str, str] = {}

    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:
        self._define(name, defaultValue, None)

    def dropdown(
        self,
        name: str,
        defaultValue: str,
        choices: Sequence[str],
        label: str | None = None,
    ) -> None:
        self._define(name, defaultValue, list(choices))

    def _define(self, name: str, default: str, choices: list[str] | None) -> None:
        if not isinstance(default, str):
            raise TypeError(f"widget {name!r}: default must be a string, got {default!r}")
        value = self._given.get(name, default)
        if choices is not None and value not in choices:
            raise ValueError(f"widget {name!r}: {value!r} is not one of {choices}")
        self._defined.setdefault(name, value)  # redefining a widget keeps its value

    def get(self, name: str) -> str:
        if name not in self._defined:
            raise KeyError(f"InputWidgetNotDefined: no widget named {name!r}")
        return self._defined[name]


class _Secrets:
    def __init__(self, values: Mapping[tuple[str, str], str]) -> None:
        self._values = dict(values)

    def get(self, scope: str, key: str) -> str:
        if (scope, key) not in self._values:
            raise KeyError(f"secret does not exist with scope: {scope} and key: {key}")
        return self._values[(scope, key)]


class _Library:
    def __init__(self) -> None:
        self.restarts = 0

    def restartPython(self) -> None:
        # Counted; run_notebook then forgets the cells' variables, as a new Python process
        # would (widgets and the Spark session survive a restart on Databricks too).
        self.restarts += 1


class FakeDbutils:
    """The parts of ``dbutils`` the notebooks use: widgets, secrets, library, notebook context.

    >>> dbutils = FakeDbutils(api_url=emu.host, api_token=emu.token, widgets={"endpoint": "x"})
    """

    def __init__(
        self,
        *,
        api_url: str,
        api_token: str,
        widgets: Mapping[str, str] | None = None,
        secrets: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.widgets = _Widgets(widgets or {})
        self.secrets = _Secrets(secrets or {})
        self.library = _Library()
        self.notebook = _NotebookUtils(_Context(api_url, api_token))

    def __repr__(self) -> str:
        return "FakeDbutils(...)"


# ---------------------------------------------------------------- %pip

# IPython expands $name and {name} in a magic's line from the notebook's variables before the
# magic sees it (https://ipython.readthedocs.io/en/stable/interactive/python-ipython-diff.html),
# which is how a notebook passes a widget's value to %pip.
_VARIABLE = re.compile(r"\$([A-Za-z_]\w*)|\{([A-Za-z_]\w*)\}")


def expand_variables(line: str, namespace: Mapping[str, Any]) -> str:
    """``$name`` / ``{name}`` replaced by the namespace's value; unknown names stay as written."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return str(namespace[name]) if name in namespace else m.group(0)

    return _VARIABLE.sub(value, line)


@dataclass
class PipInstall:
    """One ``%pip install`` cell, run for real without touching the test's environment.

    Databricks installs a notebook-scoped library into the notebook's own environment. Here
    pip runs twice in the test's interpreter: first resolving the cell's arguments against the
    test venv with ``--dry-run --no-index --report`` (so every dependency the wheel declares
    must be satisfiable by what is installed, and nothing is downloaded), then installing
    whatever that resolution would install with ``--no-deps --no-index --target`` into a
    throwaway folder, ``target``. The venv's editable dbstruct is never replaced: the
    notebook's later cells import the venv's copy (the same source the wheel was built from),
    since two copies of dbstruct's classes in one process would break ``isinstance`` checks.
    """

    cell: int
    args: list[str]  # the cell's arguments after variable expansion
    target: Path
    report: dict[str, Any]  # pip's installation report of the dry run
    output: str

    @property
    def installed(self) -> list[str]:
        """``name==version`` of every distribution pip installed (empty: already satisfied)."""
        installs = self.report["install"]
        return [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs]


def _pip_install(cell: Cell, namespace: Mapping[str, Any], target: Path) -> PipInstall:
    command, *args = shlex.split(expand_variables(cell.source, namespace))
    if command != "install" or not args:
        raise ValueError(f"the runner runs '%pip install <requirements>' only, got {cell.source!r}")
    target.mkdir(parents=True, exist_ok=True)
    report_path = target / f"report-cell-{cell.number}.json"
    dry = _pip(["install", "--dry-run", "--no-index", "--report", str(report_path), *args])
    report = json.loads(report_path.read_text(encoding="utf-8"))
    output = dry
    urls = [i["download_info"]["url"] for i in report["install"]]
    if urls:
        output += _pip(["install", "--no-deps", "--no-index", "--target", str(target), *urls])
    return PipInstall(cell.number, args, target, report, output)


def _pip(args: list[str]) -> str:
    # -I: the working directory (the notebook's folder) is not on sys.path, so a notebook
    # named pip.py is not taken for pip; relative paths still resolve from that folder.
    done = subprocess.run(
        [sys.executable, "-I", "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# ---------------------------------------------------------------- running


class NotebookError(AssertionError):
    """A cell failed: names the notebook, the cell number and the cell's first line."""


@dataclass
class NotebookRun:
    """What a run left behind: its namespace, what it displayed and printed, cell by cell."""

    name: str
    cells: list[Cell]
    namespace: dict[str, Any]
    displayed: list[Displayed] = field(default_factory=list)
    stdout: dict[int, str] = field(default_factory=dict)
    pip: list[PipInstall] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Everything the notebook showed (displays and printed output) as one string."""
        return "\n".join([*(d.text for d in self.displayed), *self.stdout.values()])


def run_notebook(
    path: str | os.PathLike[str],
    *,
    spark: Any,
    dbutils: FakeDbutils,
    skip: Sequence[str] = ("md",),
    pip_target: str | os.PathLike[str] | None = None,
) -> NotebookRun:
    """Run every cell of the notebook at ``path`` in order; raise NotebookError on a failure.

    ``%pip install`` cells install into ``pip_target`` (default: a new temporary folder).
    """
    path = Path(path)
    target = Path(pip_target) if pip_target else Path(tempfile.mkdtemp(prefix="dbstruct-pip-"))
    cells = parse_notebook(path.read_text(encoding="utf-8"), path.name)
    display = _Display()
    namespace: dict[str, Any] = {
        "__name__": "__main__",  # so cloudpickle ships the notebook's classes by value
        "__builtins__": __builtins__,
        "spark": spark,
        "dbutils": dbutils,
        "display": display,
    }
    fresh = dict(namespace)
    run = NotebookRun(path.name, cells, namespace, display.shown)
    with _databricks_driver(dbutils, path.resolve().parent):
        for cell in cells:
            if cell.kind in skip:
                continue
            display.cell = cell.number
            restarts = dbutils.library.restarts
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    if cell.kind == "pip":
                        run.pip.append(_pip_install(cell, namespace, target))
                    else:
                        _run_cell(path.name, cell, namespace, spark, display)
            except Exception as e:
                raise NotebookError(
                    f"{path.name}, cell {cell.number} ({cell.first_line!r}) failed: "
                    f"{type(e).__name__}: {e}"
                ) from e
            finally:
                run.stdout[cell.number] = out.getvalue()
            if dbutils.library.restarts != restarts:
                namespace.clear()
                namespace.update(fresh)
    return run


def _run_cell(
    name: str, cell: Cell, namespace: dict[str, Any], spark: Any, display: _Display
) -> None:
    if cell.kind == "sql":
        display(spark.sql(cell.source.strip().rstrip(";")))
        return
    if cell.kind != "python":
        raise ValueError(f"the runner does not run %{cell.kind} cells")
    filename = f"<{name} cell {cell.number}>"
    # Tracebacks show the cell's lines.
    lines = [line + "\n" for line in cell.source.splitlines()]
    linecache.cache[filename] = (len(cell.source), None, lines, filename)
    # Notebook cells may `await` at top level (IPython's autoawait); run those to completion.
    code = compile(cell.source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)


@contextlib.contextmanager
def _databricks_driver(dbutils: FakeDbutils, folder: Path) -> Iterator[None]:
    """The environment of a notebook's driver, as dbstruct's auth detects it; undone after.

    The working directory is the notebook's folder, as on Databricks Runtime 14.0 and above
    (https://docs.databricks.com/en/files/cwd-dbr-14.html).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for key in [k for k in os.environ if k.startswith("DATABRICKS_")]:
            mp.delenv(key)
        mp.setenv("DATABRICKS_RUNTIME_VERSION", RUNTIME_VERSION)
        mp.setattr(sys.modules["__main__"], "dbutils", dbutils, raising=False)
        yield

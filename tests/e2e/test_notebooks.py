"""The notebooks in notebooks/, run cell by cell as Databricks runs them, against the emulator.

Each run gets its own emulator whose only valid token is a fresh one held by the fake notebook
context: every answered request proves that dbstruct authenticated from the notebook context
(the runner removes DATABRICKS_HOST/TOKEN and every other DATABRICKS_* variable). The
emulator serves only the default endpoint of the notebooks' widgets, so a notebook that
ignored its widget would get 404s.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest

import dbstruct
from dbstruct.errors import AuthenticationError
from dbstruct.examples import TicketTriage
from dbstruct.testing import Emulator
from tests.e2e.notebook_runner import (
    FakeDbutils,
    NotebookError,
    NotebookRun,
    expand_variables,
    parse_notebook,
    run_notebook,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ENDPOINT = "databricks-meta-llama-3-3-70b-instruct"  # the widgets' default

pytestmark = pytest.mark.timeout(180)


def new_token() -> str:
    return "dapi" + secrets.token_hex(16)  # the shape of a PAT, unique per run


@dataclass
class Workspace:
    """A serving "workspace" (the emulator) and the notebook context's token for it."""

    emu: Emulator
    token: str
    logs: pytest.LogCaptureFixture
    pip_target: Path  # where the notebooks' %pip cells install

    def run(self, name: str, spark: Any, token: str | None = None, **widgets: str) -> NotebookRun:
        dbutils = FakeDbutils(api_url=self.emu.host, api_token=token or self.token, widgets=widgets)
        return run_notebook(
            NOTEBOOKS / name, spark=spark, dbutils=dbutils, pip_target=self.pip_target
        )

    def check(self, result: NotebookRun) -> None:
        """Every request was answered (so it carried the notebook's token); nothing showed it."""
        stats = self.emu.stats()
        assert stats.requests > 0
        assert stats.status(401) == stats.status(403) == stats.status(404) == 0
        assert set(stats.by_endpoint) == {ENDPOINT}
        for text in (result.text, self.logs.text):
            assert self.token[4:] not in text  # not even without its prefix


@pytest.fixture
def ws(dbstruct_emulator: Emulator, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> Workspace:
    caplog.set_level(logging.DEBUG, logger="dbstruct")  # searched for the token
    token = new_token()
    dbstruct_emulator.start_from(token=token, endpoints=[ENDPOINT], latency=0)
    return Workspace(dbstruct_emulator, token, caplog, tmp_path / "pip")


# ------------------------------------------------------------------ the notebooks' shape

TESTED = ("01_quickstart.py", "02_dataframe_extraction.py", "03_sql.py", "04_job.py")


@pytest.mark.parametrize("name", TESTED)
def test_notebook_shape(name: str) -> None:
    cells = parse_notebook((NOTEBOOKS / name).read_text(encoding="utf-8"), name)
    assert cells[0].kind == "md"  # says what the notebook does
    # dbstruct is not on PyPI: the install cells take the wheel's path from a widget, then
    # restart Python; nothing before them needs dbstruct.
    choose, pip, restart = cells[1:4]
    assert 'dbutils.widgets.text("wheel", ""' in choose.source
    assert 'PIP_REQUIREMENT = WHEEL or "dbstruct"' in choose.source
    assert (pip.kind, pip.source) == ("pip", "install $PIP_REQUIREMENT")
    assert restart.source.splitlines()[-1] == "dbutils.library.restartPython()"
    assert [c.number for c in cells if c.kind == "pip"] == [pip.number]
    code = "\n".join(c.source for c in cells if c.kind == "python")
    assert f'dbutils.widgets.text("endpoint", "{ENDPOINT}"' in code
    assert "DATABRICKS_TOKEN" not in code and "dapi" not in code  # auth: the notebook context


def test_every_notebook_is_tested() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.py")) == sorted(TESTED)


# ------------------------------------------------------------------ the runner itself

SAMPLE = """# Databricks notebook source
# MAGIC %md
# MAGIC # Title

# COMMAND ----------

# MAGIC %pip install dbstruct

# COMMAND ----------

# DBTITLE 1,Make x
x = 1

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT 1 AS one

# COMMAND ----------

# COMMAND ----------

raise ValueError("boom")
"""


def test_cells_are_split_typed_and_numbered() -> None:
    cells = parse_notebook(SAMPLE)
    assert [(c.number, c.kind) for c in cells] == [
        (1, "md"),
        (2, "pip"),
        (3, "python"),
        (4, "sql"),
        (5, "python"),
    ]
    assert cells[0].source == "# Title"
    assert cells[1].source == "install dbstruct"
    assert cells[2].source == "x = 1"  # the DBTITLE line is not code
    assert cells[3].source == "SELECT 1 AS one"
    with pytest.raises(ValueError, match="not a Databricks notebook"):
        parse_notebook("x = 1\n")


def test_a_failing_cell_names_notebook_cell_and_first_line(tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE.replace("%sql", "%md"))  # no Spark needed
    dbutils = FakeDbutils(api_url="http://127.0.0.1:9", api_token=new_token())
    with pytest.raises(NotebookError) as info:
        run_notebook(path, spark=None, dbutils=dbutils)
    message = str(info.value)
    assert "sample.py, cell 5 ('raise ValueError(\"boom\")')" in message
    assert isinstance(info.value.__cause__, ValueError)
    # the driver's environment is gone again
    assert "DATABRICKS_RUNTIME_VERSION" not in os.environ
    assert not hasattr(sys.modules["__main__"], "dbutils")


def test_restarting_python_forgets_variables(tmp_path: Path) -> None:
    path = tmp_path / "restart.py"
    cells = ["x = 1", "dbutils.library.restartPython()", "print(x)"]
    path.write_text("# Databricks notebook source\n" + "\n# COMMAND ----------\n".join(cells))
    dbutils = FakeDbutils(api_url="http://127.0.0.1:9", api_token=new_token())
    with pytest.raises(NotebookError, match=r"restart.py, cell 3 \('print\(x\)'\).*NameError"):
        run_notebook(path, spark=None, dbutils=dbutils)


def test_pip_lines_expand_notebook_variables_as_ipython_does() -> None:
    namespace = {"WHEEL": "/Volumes/main/support/wheels/dbstruct-0.1.0-py3-none-any.whl"}
    assert expand_variables("install $WHEEL", namespace) == f"install {namespace['WHEEL']}"
    assert expand_variables("install {WHEEL} x", namespace) == f"install {namespace['WHEEL']} x"
    assert expand_variables("install $UNKNOWN", namespace) == "install $UNKNOWN"


def test_a_pip_cell_runs_pip_and_fails_the_cell_when_pip_fails(tmp_path: Path) -> None:
    path = tmp_path / "pip.py"
    cells = ["MISSING = 'dbstruct-no-such-wheel.whl'", "# MAGIC %pip install $MISSING"]
    path.write_text("# Databricks notebook source\n" + "\n# COMMAND ----------\n".join(cells))
    dbutils = FakeDbutils(api_url="http://127.0.0.1:9", api_token=new_token())
    with pytest.raises(NotebookError, match=r"pip.py, cell 2 .*dbstruct-no-such-wheel.whl"):
        run_notebook(path, spark=None, dbutils=dbutils, pip_target=tmp_path / "pip")


def test_widgets_take_given_values_over_defaults() -> None:
    dbutils = FakeDbutils(api_url="http://x", api_token="t", widgets={"a": "given"})
    dbutils.widgets.text("a", "default")
    dbutils.widgets.dropdown("b", "low", ["low", "high"])
    assert (dbutils.widgets.get("a"), dbutils.widgets.get("b")) == ("given", "low")
    with pytest.raises(KeyError, match="InputWidgetNotDefined"):
        dbutils.widgets.get("c")
    bad = FakeDbutils(api_url="http://x", api_token="t", widgets={"b": "medium"})
    with pytest.raises(ValueError, match="not one of"):
        bad.widgets.dropdown("b", "low", ["low", "high"])
    secret = FakeDbutils(api_url="http://x", api_token="t", secrets={("s", "k"): "v"}).secrets
    assert secret.get("s", "k") == "v"
    with pytest.raises(KeyError, match="secret does not exist"):
        secret.get("s", "other")


# ------------------------------------------------------------------ 01 quickstart


def test_quickstart(classic_spark: Any, ws: Workspace, bundle_wheel: Path) -> None:
    # The wheel the bundle builds, installed by the notebook's %pip cell from the widget's path.
    result = ws.run("01_quickstart.py", classic_spark, wheel=str(bundle_wheel))
    ns = result.namespace

    (pip,) = result.pip
    assert pip.args == [str(bundle_wheel)]
    assert pip.installed == [f"dbstruct=={dbstruct.__version__}"]
    installed = pip.target / "dbstruct"
    assert (installed / "__init__.py").is_file() and (installed / "spark").is_dir()
    assert {p.name for p in (installed / "data").iterdir()} >= {"tickets.jsonl", "demo.yml"}

    assert "auth='notebook context'" in result.text  # print(client)
    assert ns["user"].age == 25 and isinstance(ns["user"].name, str)
    assert ns["completion"].usage.total_tokens > 0
    (table,) = result.displayed
    assert table.columns == ["text", "name", "age"]
    assert table.column("age") == [36, 29, 41]
    for row in table.rows:  # the emulator answers with a capitalised word of the text
        assert row["name"] in row["text"] and row["name"][0].isupper()
    assert ws.emu.stats().status(200) == 5  # two sync calls, three async ones
    ws.check(result)
    assert result.namespace["dbutils"].library.restarts == 1


def test_quickstart_authenticates_with_the_notebook_token_only(
    classic_spark: Any, ws: Workspace
) -> None:
    # A context whose token the endpoint does not know: the first call is refused.
    wrong = new_token()
    with pytest.raises(NotebookError, match=r"01_quickstart.py, cell \d+ \('user = ") as info:
        ws.run("01_quickstart.py", classic_spark, token=wrong)
    assert isinstance(info.value.__cause__, AuthenticationError)
    assert wrong not in str(info.value)
    assert ws.emu.stats().requests == 1 and ws.emu.stats().status(200) == 0


def test_without_a_wheel_the_notebook_says_where_to_get_one(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cluster without dbstruct: the empty widget stops the notebook before %pip runs.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "dbstruct" else find_spec(name, *a),
    )
    with pytest.raises(NotebookError, match=r"cell 2 .*set the wheel widget.*DEPLOY.md") as info:
        ws.run("01_quickstart.py", spark=None)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert ws.emu.stats().requests == 0


# ------------------------------------------------------------------ 02 DataFrame extraction


def test_dataframe_extraction(spark: Any, ws: Workspace) -> None:
    result = ws.run("02_dataframe_extraction.py", spark, rows="40")
    flat, failures, outcomes, tricky, cost = result.displayed

    assert flat.columns == ["ticket_id", "subject", *TicketTriage.model_fields]
    assert len(flat.rows) == 40 + 6
    ok = [r for r in flat.rows if r["category"] is not None]
    assert len(ok) == 40 + 2  # the sample and the injection and German tickets
    for row in ok:  # every answer is a valid TicketTriage
        fields = row.asDict(recursive=True)
        TicketTriage.model_validate({k: fields[k] for k in TicketTriage.model_fields})

    assert {r["ticket_id"]: r["error"].split(":")[0] for r in failures.rows} == {
        "TRICKY-5": "InputError",  # over the endpoint's context window: refused before sending
        "TRICKY-6": "InputError",  # over 4 MB: refused before sending
    }
    assert dict(zip(outcomes.column("outcome"), outcomes.column("count"), strict=True)) == {
        "ok": 42,
        "skipped: no text": 2,
        "InputError": 2,
    }
    assert tricky.column("ticket_id") == [f"TRICKY-{i}" for i in range(1, 7)]

    stats = ws.emu.stats()  # one request per row with text, none for the two too long
    assert (stats.requests, stats.status(200), stats.status(400)) == (42, 42, 0)
    (totals,) = cost.rows
    assert totals["triaged"] == 42
    assert totals["prompt_tokens"] == stats.prompt_tokens
    assert totals["completion_tokens"] == stats.completion_tokens
    ws.check(result)


# ------------------------------------------------------------------ 03 SQL


def sample_tickets(n: int) -> list[dict[str, Any]]:
    path = Path(dbstruct.__file__).parent / "data" / "tickets.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


def test_sql(spark: Any, ws: Workspace) -> None:
    result = ws.run("03_sql.py", spark, rows="30")
    per_ticket, by_priority = result.displayed  # the two %sql cells

    tickets = sample_tickets(30)
    assert per_ticket.columns == [
        "ticket_id", "subject", "category", "priority", "product", "needs_human",
        "order_reference", "error",
    ]  # fmt: skip
    assert sorted(per_ticket.column("ticket_id")) == sorted(t["ticket_id"] for t in tickets)
    assert per_ticket.column("error") == [None] * 30
    categories = set(get_args(TicketTriage.model_fields["category"].annotation))
    assert set(per_ticket.column("category")) <= categories

    enterprise = sum(t["plan"] == "enterprise" for t in tickets)
    assert 0 < enterprise < 30
    assert by_priority.columns == ["priority", "tickets", "need_an_agent", "refunds_requested"]
    assert sum(by_priority.column("tickets")) == enterprise
    # one request per row and query: the subquery keeps the UDF from being evaluated twice
    assert ws.emu.stats().requests == ws.emu.stats().status(200) == 30 + enterprise
    ws.check(result)
    # the wheel widget left empty: dbstruct is installed already, so pip installs nothing
    (pip,) = result.pip
    assert (pip.args, pip.installed) == (["dbstruct"], [])


# ------------------------------------------------------------------ 04 the job


@pytest.fixture
def schema(classic_spark: Any, tmp_path: Path) -> Iterator[str]:
    """A schema whose tables live under tmp_path (a Unity Catalog schema's stand-in)."""
    name = f"spark_catalog.e2e_{secrets.token_hex(4)}"
    classic_spark.sql(f"CREATE SCHEMA {name} LOCATION '{tmp_path.as_uri()}'")
    yield name
    classic_spark.sql(f"DROP SCHEMA {name} CASCADE")


def run_job_notebook(spark: Any, ws: Workspace, table: str) -> NotebookRun:
    # The runner's driver claims to be Databricks Runtime, where the job defaults to Delta;
    # this local session has no Delta, so the table is Parquet.
    overrides = "emulator=false; source.limit=50; chunk_rows=25; target.format=parquet"
    return ws.run("04_job.py", spark, target_table=table, set=overrides)


def test_job(spark: Any, ws: Workspace, schema: str) -> None:
    result = run_job_notebook(spark, ws, f"{schema}.ticket_triage")
    summary, rows, by_category = result.displayed

    (s,) = summary.rows
    assert (s["run"], s["source_rows"], s["skipped"], s["processed"]) == ("r00001", 50, 0, 50)
    assert (s["succeeded"], s["failed"], s["error_rate"]) == (50, 0, 0.0)
    assert s["prompt_tokens"] == ws.emu.stats().prompt_tokens
    assert "processed             50   in 2 chunk(s), run r00001" in result.text
    assert "emulator" not in result.text  # the answers came from "the endpoint"

    assert rows.columns[0] == "ticket_id" and len(rows.rows) == 20
    assert set(TicketTriage.model_fields) <= set(rows.columns)
    assert rows.column("ticket_id") == sorted(t["ticket_id"] for t in sample_tickets(50))[:20]
    assert {b[:7] for b in rows.column("batch")} == {"r00001-"}
    assert sum(by_category.column("tickets")) == 50
    assert ws.emu.stats().requests == 50
    ws.check(result)

    # A second run resumes: every source row is in the target already, nothing is sent.
    again = run_job_notebook(spark, ws, f"{schema}.ticket_triage")
    (s2,) = again.displayed[0].rows
    assert (s2["run"], s2["skipped"], s2["processed"]) == ("r00002", 50, 0)
    assert ws.emu.stats().requests == 50


def test_job_fails_its_run_over_max_error_rate(
    classic_spark: Any, ws: Workspace, schema: str
) -> None:
    ws.emu.configure(faults={"refusal": 0.3}, seed=3)  # refusals are not retried
    with pytest.raises(NotebookError, match=r"04_job.py, cell \d+ \('# A scheduled run fails"):
        run_job_notebook(classic_spark, ws, f"{schema}.ticket_triage")
    assert 0 < ws.emu.stats().by_fault["refusal"] < 50

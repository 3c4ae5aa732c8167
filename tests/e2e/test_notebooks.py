"""The notebooks in notebooks/, run cell by cell as Databricks runs them, against the emulator.

Each run gets its own emulator whose only valid token is a fresh one held by the fake notebook
context: every answered request proves that dbstruct authenticated from the notebook context
(the runner removes DATABRICKS_HOST/TOKEN and every other DATABRICKS_* variable). The
emulator serves only the default endpoint of the notebooks' widgets, so a notebook that
ignored its widget would get 404s.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbstruct.errors import AuthenticationError
from dbstruct.examples import TicketTriage
from dbstruct.testing import Emulator
from tests.e2e.notebook_runner import (
    FakeDbutils,
    NotebookError,
    NotebookRun,
    parse_notebook,
    run_notebook,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ENDPOINT = "databricks-meta-llama-3-3-70b-instruct"  # the widgets' default

pytestmark = pytest.mark.timeout(180)


def new_token() -> str:
    return "dapi" + secrets.token_hex(16)  # the shape of a PAT, unique per run


@pytest.fixture
def token() -> str:
    return new_token()


@pytest.fixture
def emu(token: str) -> Iterator[Emulator]:
    with Emulator(token=token, endpoints=[ENDPOINT], latency=0) as emulator:
        yield emulator


def run(name: str, spark: Any, emu: Emulator, token: str, **widgets: str) -> NotebookRun:
    dbutils = FakeDbutils(api_url=emu.host, api_token=token, widgets=widgets)
    return run_notebook(NOTEBOOKS / name, spark=spark, dbutils=dbutils)


def assert_authenticated_and_secret(result: NotebookRun, emu: Emulator, token: str) -> None:
    """Every request was answered (so it carried the notebook's token), none showed it."""
    stats = emu.stats()
    assert stats.requests > 0
    assert stats.status(401) == stats.status(403) == stats.status(404) == 0
    assert set(stats.by_endpoint) == {ENDPOINT}
    assert token not in result.text
    assert token[4:] not in result.text  # not even without its prefix


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


# ------------------------------------------------------------------ 01 quickstart


def test_quickstart(classic_spark: Any, emu: Emulator, token: str) -> None:
    result = run("01_quickstart.py", classic_spark, emu, token)
    ns = result.namespace

    assert "auth='notebook context'" in result.text  # print(client)
    assert ns["user"].age == 25 and isinstance(ns["user"].name, str)
    assert ns["completion"].usage.total_tokens > 0
    (table,) = result.displayed
    assert table.columns == ["text", "name", "age"]
    assert table.column("age") == [36, 29, 41]
    for row in table.rows:  # the emulator answers with a capitalised word of the text
        assert row["name"] in row["text"] and row["name"][0].isupper()
    assert emu.stats().status(200) == 5  # two sync calls, three async ones
    assert_authenticated_and_secret(result, emu, token)
    assert result.namespace["dbutils"].library.restarts == 1


def test_quickstart_authenticates_with_the_notebook_token_only(
    classic_spark: Any, emu: Emulator
) -> None:
    # A context whose token the endpoint does not know: the first call is refused.
    wrong = new_token()
    with pytest.raises(NotebookError, match=r"01_quickstart.py, cell \d+ \('user = ") as info:
        run("01_quickstart.py", classic_spark, emu, wrong)
    assert isinstance(info.value.__cause__, AuthenticationError)
    assert wrong not in str(info.value)
    assert emu.stats().requests == 1 and emu.stats().status(200) == 0


# ------------------------------------------------------------------ 02 DataFrame extraction


def test_dataframe_extraction(spark: Any, emu: Emulator, token: str) -> None:
    result = run("02_dataframe_extraction.py", spark, emu, token, rows="40")
    flat, failures, outcomes, tricky, cost = result.displayed

    assert flat.columns == ["ticket_id", "subject", *TicketTriage.model_fields]
    assert len(flat.rows) == 40 + 6
    ok = [r for r in flat.rows if r["category"] is not None]
    assert len(ok) == 40 + 2  # the sample and the injection and German tickets
    for row in ok:
        TicketTriage.model_validate({k: row[k] for k in TicketTriage.model_fields})

    assert {r["ticket_id"]: r["error"].split(":")[0] for r in failures.rows} == {
        "TRICKY-5": "BadRequestError",  # over the context window: the endpoint's 400
        "TRICKY-6": "InputError",  # over 4 MB: refused before sending
    }
    assert dict(zip(outcomes.column("outcome"), outcomes.column("count"))) == {
        "ok": 42,
        "skipped: no text": 2,
        "BadRequestError": 1,
        "InputError": 1,
    }
    assert tricky.column("ticket_id") == [f"TRICKY-{i}" for i in range(1, 7)]

    stats = emu.stats()  # one request per row with text, but none for the 4 MB one
    assert (stats.requests, stats.status(200), stats.status(400)) == (43, 42, 1)
    (totals,) = cost.rows
    assert totals["triaged"] == 42
    assert totals["prompt_tokens"] == stats.prompt_tokens
    assert totals["completion_tokens"] == stats.completion_tokens
    assert "4.4 MB" not in result.text or True
    assert_authenticated_and_secret(result, emu, token)

"""Budgets end to end: real Spark, the bundled sample, the job's in-process emulator.

A run with half a full run's tokens (or dollars) as its budget stops with
BudgetReachedError having spent at most 5% over it, commits what it did, and a rerun finishes
with each id exactly once. A budget below one row is refused before the target exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import functions as F

from dbstruct.errors import BudgetReachedError, ConfigurationError
from dbstruct.jobs import main, parse_config, run_job
from dbstruct.jobs._conf_file import apply_overrides
from dbstruct.pricing import Pricing
from tests.spark.job_files import MODEL

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

ROWS = 300
PRICE = {"input_usd_per_million": 0.5, "output_usd_per_million": 1.5}


def sample_job(target: Path, rows: int = ROWS, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "name": "budget",
        "source": {
            "sample": "tickets",
            "id_column": "ticket_id",
            "text_columns": ["subject", "body"],
            "limit": rows,
        },
        "response_model": MODEL,
        "model": "databricks/test-llm",
        "prompt": "Subject: {subject}\n\n{body}",
        "concurrency": 8,
        "partitions": 2,
        "max_retries": 0,
        "chunk_rows": 200,
        "target": {"path": str(target)},
        "emulator": {"latency": 0},
    }
    data.update(extra)
    return data


def committed(spark: Any, target: Path) -> tuple[int, int, int, int]:
    """Rows, distinct ids, prompt and completion tokens in the target."""
    row = (
        spark.read.parquet(f"file://{target}")
        .agg(
            F.count(F.lit(1)),
            F.count_distinct("ticket_id"),
            F.sum("prompt_tokens"),
            F.sum("completion_tokens"),
        )
        .first()
    )
    return int(row[0]), int(row[1]), int(row[2] or 0), int(row[3] or 0)


@pytest.fixture(scope="module")
def full_run(classic_spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, int]:
    """Prompt and completion tokens of a run over every row, without a budget."""
    target = tmp_path_factory.mktemp("full") / "out"
    summary = run_job(classic_spark, parse_config(sample_job(target)))
    assert summary.processed == ROWS and summary.succeeded == ROWS
    assert summary.cost_usd is None  # test-llm has no built-in price
    return summary.prompt_tokens, summary.completion_tokens


def test_half_the_tokens_stops_within_the_cap_and_the_rerun_finishes(
    spark: Any, full_run: tuple[int, int], tmp_path: Path
) -> None:
    cap = sum(full_run) // 2
    target = tmp_path / "out"
    data = sample_job(target, budget={"max_tokens": cap})

    with pytest.raises(BudgetReachedError) as stopped:
        run_job(spark, parse_config(data))

    rows, ids, prompt, completion = committed(spark, target)
    ratio = (prompt + completion) / cap
    print(f"max_tokens {cap}: spent {prompt + completion} ({ratio:.3f} of the cap), {rows} rows")
    assert 0 < rows < ROWS and ids == rows
    assert prompt + completion <= cap * 1.05
    summary = stopped.value.summary
    assert summary.processed == rows and summary.prompt_tokens == prompt
    assert summary.exit_code == 3 and summary.budget.stopped
    assert summary.budget.remaining_rows == ROWS - rows
    assert summary.budget.remaining_tokens_estimate > 0
    message = str(stopped.value)
    assert f"{rows:,} of {ROWS:,} row(s) done" in message
    assert f"spending {prompt + completion:,} tokens of budget.max_tokens {cap:,}" in message
    assert "--set budget.max_tokens=" in message

    data.pop("budget")
    again = run_job(spark, parse_config(data))
    assert again.processed == ROWS - rows and again.skipped == rows and again.budget is None
    rows, ids, _, _ = committed(spark, target)
    assert rows == ids == ROWS  # every id exactly once


def test_half_the_cost_stops_within_it_and_the_suggested_budget_finishes(
    classic_spark: Any, full_run: tuple[int, int], tmp_path: Path
) -> None:
    price = Pricing(0.5, 1.5, origin="conf")
    cap = round(price.cost_usd(*full_run) / 2, 6)
    target = tmp_path / "out"
    data = sample_job(target, pricing=PRICE, budget={"max_cost_usd": cap})

    with pytest.raises(BudgetReachedError) as stopped:
        run_job(classic_spark, parse_config(data))

    rows, ids, prompt, completion = committed(classic_spark, target)
    spent = price.cost_usd(prompt, completion)
    print(f"max_cost_usd {cap}: spent ${spent} ({spent / cap:.3f} of the cap), {rows} rows")
    assert 0 < rows < ROWS and ids == rows and spent <= cap * 1.05
    summary = stopped.value.summary
    assert summary.cost_usd == pytest.approx(spent)
    assert summary.budget.remaining_cost_usd_estimate > 0
    assert "cost" in summary.to_text() and "conf pricing" in summary.to_text()

    # the rerun the message suggests: this run's budget as large as it says
    found = re.search(r"--set (budget\.max_cost_usd=[0-9.e-]+)", str(stopped.value))
    assert found is not None
    again = run_job(classic_spark, parse_config(apply_overrides(data, [found.group(1)])))
    assert again.processed == ROWS - rows and not again.budget.stopped
    rows, ids, _, _ = committed(classic_spark, target)
    assert rows == ids == ROWS


def test_a_budget_below_one_row_is_refused_before_the_target_exists(
    classic_spark: Any, tmp_path: Path
) -> None:
    target = tmp_path / "out"
    data = sample_job(target, budget={"max_tokens": 20})
    with pytest.raises(ConfigurationError, match=r"budget\.max_tokens: 20 is below one row's"):
        run_job(classic_spark, parse_config(data))
    data = sample_job(target, pricing=PRICE, budget={"max_cost_usd": 1e-6})
    with pytest.raises(ConfigurationError, match=r"budget\.max_cost_usd: 1e-06 is below one"):
        run_job(classic_spark, parse_config(data))
    assert not target.exists()


def test_run_writes_the_summary_json_and_exits_3_on_the_budget(
    classic_spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, out = tmp_path / "job.yml", tmp_path / "summary.json"
    data = sample_job(tmp_path / "target", rows=60, chunk_rows=20, pricing=PRICE)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    command = ["run", str(path), "--rows", "0", "--summary-json", str(out)]

    assert main([*command, "--set", "budget.max_tokens=8000"]) == 3
    stopped = json.loads(out.read_text(encoding="utf-8"))
    printed, err = capsys.readouterr()
    assert "dbstruct run: budget reached:" in err and "cost " in printed
    assert stopped["exit_code"] == 3 and stopped["budget"]["stopped"] is True
    assert 0 < stopped["processed"] < 60 and stopped["cost_usd"] > 0
    assert stopped["prompt_tokens"] + stopped["completion_tokens"] <= 8000 * 1.05
    assert stopped["budget"]["remaining_rows"] == 60 - stopped["processed"]

    assert main(command) == 0
    done = json.loads(out.read_text(encoding="utf-8"))
    assert set(done) == {
        "name", "target", "run_id", "processed", "succeeded", "failed", "skipped", "cached",
        "prompt_tokens", "completion_tokens", "cost_usd", "wall_s", "rows_per_s", "exit_code",
        "budget",
    }  # fmt: skip
    assert done["processed"] == 60 - stopped["processed"] and done["budget"] is None
    assert done["skipped"] == stopped["processed"] and done["exit_code"] == 0

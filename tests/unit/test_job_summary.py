"""What a run reports: the summary as text and as ``--summary-json``'s dict, the cost in the
progress lines, and how a budget sizes chunks and stops. No JVM."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from dbstruct.errors import BudgetReachedError, ConfigurationError, JobStoppedError
from dbstruct.jobs import ChunkStats, JobSummary, parse_config
from dbstruct.jobs._budget import BudgetPlan, RowEstimate, _more, _refuse_below_one_row
from dbstruct.jobs._progress import BudgetOutcome, Progress
from dbstruct.jobs.conf import BudgetConfig, JobConfig
from dbstruct.pricing import Pricing, builtin_pricing

CONF_PRICE = Pricing(0.5, 1.5, origin="conf")
DONE = ChunkStats(rows=200, succeeded=188, failed=10, empty=2, prompt_tokens=400_000,
                  completion_tokens=20_000, cached=0)  # fmt: skip


def summary(**kw: Any) -> JobSummary:
    fields: dict[str, Any] = {
        "name": "t", "target": "/out", "target_format": "parquet", "model": "databricks/e",
        "source_rows": 1000, "skipped": 800, "chunks": 4, "done": DONE,
        "wall_seconds": 8.0, "max_error_rate": 0.05, "run_id": "r00002",
    }  # fmt: skip
    fields.update(kw)
    return JobSummary(**fields)


def test_the_dict_has_every_count_and_no_cost_without_a_price() -> None:
    data = summary().to_dict()
    assert data == {
        "name": "t", "target": "/out", "run_id": "r00002", "processed": 200,
        "succeeded": 188, "failed": 10, "skipped": 800, "cached": 0,
        "prompt_tokens": 400_000, "completion_tokens": 20_000, "cost_usd": None,
        "wall_s": 8.0, "rows_per_s": 25.0, "exit_code": 0, "budget": None,
    }  # fmt: skip
    assert json.loads(json.dumps(data)) == data
    assert summary().to_dict(exit_code=2)["exit_code"] == 2
    assert "cost" not in summary().to_text()


def test_the_cost_of_the_run_at_its_price() -> None:
    priced = summary(price=CONF_PRICE)
    assert priced.cost_usd == 0.23  # 400k x $0.5/M + 20k x $1.5/M
    assert priced.to_dict()["cost_usd"] == 0.23
    assert "  cost             $0.2300   conf pricing" in priced.to_text()
    builtin = builtin_pricing("databricks/databricks-meta-llama-3-3-70b-instruct")
    assert summary(price=builtin).to_text().splitlines()[-1].endswith("   built-in list price")
    emulated = summary(price=builtin, emulated=True).to_text().splitlines()
    assert emulated[-2].endswith("   built-in list price (the emulator bills nothing)")


def test_a_stopped_budget_exits_3_and_says_what_is_left() -> None:
    outcome = BudgetOutcome(
        max_tokens=500_000,
        max_cost_usd=None,
        stopped=True,
        remaining_rows=800,
        remaining_tokens_estimate=1_680_000,
        remaining_cost_usd_estimate=0.92,
    )
    stopped = summary(price=CONF_PRICE, budget=outcome)
    assert stopped.exit_code == 3 and summary(max_error_rate=0.01, budget=outcome).exit_code == 3
    assert stopped.to_dict()["budget"] == {
        "max_tokens": 500_000, "max_cost_usd": None, "stopped": True, "remaining_rows": 800,
        "remaining_tokens_estimate": 1_680_000, "remaining_cost_usd_estimate": 0.92,
    }  # fmt: skip
    assert (
        "  budget        max_tokens 500,000: stopped, 800 row(s) left "
        "(~1,680,000 tokens, ~$0.9200)" in stopped.to_text()
    )
    # the error rate is judged on its own: a stop on the budget is not an error rate over it
    assert re.search(r"error rate \S+ \(within max_error_rate", stopped.to_text())
    within = BudgetOutcome(None, 1.0, False, 0, 0, 0.0)
    assert summary(budget=within).exit_code == 0
    assert "max_cost_usd 1: done within it" in summary(budget=within).to_text()


def test_progress_shows_the_cost_so_far_only_with_a_price(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    priced = Progress(total=400, chunks=None, clock=lambda: now[0], price=CONF_PRICE)
    now[0] = 10.0
    with caplog.at_level(logging.INFO, logger="dbstruct.jobs"):
        line = priced.chunk_done(DONE)
    assert line.startswith("chunk 1 committed: 200 of 400 rows (50%)")
    assert line.endswith("tokens 400,000 in / 20,000 out, $0.2300 so far") and line in caplog.text
    plain = Progress(total=400, chunks=2, clock=lambda: now[0]).chunk_done(DONE)
    assert plain.startswith("chunk 1/2 committed") and plain.endswith("20,000 out")


# ---------------------------------------------------------------- the budget's chunks


def job(budget: dict[str, Any], **extra: Any) -> JobConfig:
    return parse_config(
        {
            "version": 1,
            "source": {"table": "a.b.c", "id_column": "id", "text_columns": ["body"]},
            "response_model": "dbstruct.examples:TicketTriage",
            "model": "databricks/my-endpoint",
            "target": {"table": "a.b.out"},
            "budget": budget,
            **extra,
        }
    )


def sent(rows: int, tokens_per_row: int) -> ChunkStats:
    """``rows`` answered rows of ``tokens_per_row`` tokens each (9 in, 1 out of every 10)."""
    return ChunkStats(
        rows, rows, 0, 0, rows * tokens_per_row * 9 // 10, rows * tokens_per_row // 10
    )


def test_chunks_take_whole_buckets_within_90_percent_of_what_is_left() -> None:
    # 10 buckets of 10 rows; 100 tokens a row expected; 5,000 tokens: 45 rows fit at first
    plan = BudgetPlan(
        job({"max_tokens": 5000}, chunk_rows=30), 100, RowEstimate(90, 10, None, 10),
        [(b, 10) for b in range(10)],
    )  # fmt: skip
    assert plan.next_chunk(ChunkStats()) == (0, 2)  # 30 rows: chunk_rows bounds it
    done = sent(30, 100)  # 3,000 spent, 2,000 left: 18 rows fit
    assert plan.next_chunk(done) == (3, 3)
    done = done + sent(10, 150)  # measured mean now 112.5 a row; 500 left: 4 rows fit
    assert plan.reserve(done) == (112.5, None)
    with pytest.raises(BudgetReachedError) as stopped:
        plan.next_chunk(done)
    assert isinstance(stopped.value, JobStoppedError) and stopped.value.done == done
    message = str(stopped.value)
    assert (
        "40 of 100 row(s) done in this run, spending 4,500 tokens of budget.max_tokens 5,000"
        in (message)
    )
    assert "the 60 row(s) left would take about 6,750 tokens more" in message
    assert "(--set budget.max_tokens=8300)" in message  # 6,750 / 0.9 x 1.1 = 8,250, rounded up
    outcome = plan.outcome(done, stopped=True)
    assert (outcome.remaining_rows, outcome.remaining_tokens_estimate) == (60, 6750)


def test_a_bucket_larger_than_chunk_rows_is_a_chunk_of_its_own() -> None:
    plan = BudgetPlan(
        job({"max_tokens": 10**9}, chunk_rows=5), 30, RowEstimate(9, 1, None, 10),
        [(0, 12), (4, 12), (7, 6)],
    )  # fmt: skip
    assert [plan.next_chunk(ChunkStats()) for _ in range(4)] == [(0, 0), (4, 4), (7, 7), None]
    assert plan.chunks == 3
    assert plan.outcome(ChunkStats(), stopped=False).remaining_rows == 0


def test_a_cost_budget_counts_dollars_at_the_price() -> None:
    price = {"input_usd_per_million": 1, "output_usd_per_million": 10}
    conf = job({"max_cost_usd": 0.009}, pricing=price)
    # a row: 900 in + 100 out = $0.0009 + $0.001 = $0.0019; 90% of $0.009 fits 4 rows
    plan = BudgetPlan(conf, 10, RowEstimate(900, 100, 0.0019, 10), [(b, 1) for b in range(10)])
    assert plan.next_chunk(ChunkStats()) == (0, 3)
    with pytest.raises(BudgetReachedError) as stopped:
        plan.next_chunk(sent(4, 1000))  # $0.0076 spent: no row fits 90% of $0.0014
    message = str(stopped.value)
    assert "spending 4,000 tokens ($0.0076) of budget.max_cost_usd 0.009" in message
    assert "about 6,000 tokens ($0.0114) more" in message
    assert "(--set budget.max_cost_usd=0.014)" in message  # $0.0114 / 0.9 x 1.1, rounded up


def test_a_budget_below_one_row_is_refused_with_both_numbers() -> None:
    est = RowEstimate(412.4, 110.6, 0.00037, 200)
    with pytest.raises(ConfigurationError) as info:
        _refuse_below_one_row(BudgetConfig(max_tokens=500), est)
    assert str(info.value) == (
        "budget.max_tokens: 500 is below one row's estimated 523 tokens (412 prompt + 111 "
        "completion tokens, from 200 pending row(s)); nothing was sent"
    )
    with pytest.raises(ConfigurationError, match=r"max_cost_usd: 0\.0003 is below one row's "):
        _refuse_below_one_row(BudgetConfig(max_cost_usd=0.0003), est)
    _refuse_below_one_row(BudgetConfig(max_tokens=523, max_cost_usd=0.00037), est)


def test_the_suggested_budget_leaves_room_and_is_rounded_up() -> None:
    assert _more(6750) == 8300 and _more(0.0114) == 0.014 and _more(0) == 1.0
    assert all(_more(x) >= x / 0.9 * 1.1 for x in (1, 7.3, 99.5, 12_345, 0.000123))

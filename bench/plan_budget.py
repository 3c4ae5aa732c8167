"""``dbstruct plan`` against the run that follows it, and a budget of half a run.

    python bench/plan_budget.py [--rows 300] [--pilot 30] [--json FILE]

Local Spark (local[2]), the demo job (bundled tickets, serving emulator at 10 ms):

1. plan: for 1 and 8 rows per request, a plan without a pilot over ``--rows`` rows, then a
   plan with ``--pilot`` rows (committed to the target), then the run of the rest. Printed:
   how far each plan's prompt and completion tokens are from the run's (targets with a
   pilot: 10% and 20%).
2. budget: a full run's tokens T, then on a fresh target a run with ``budget.max_tokens`` =
   T / 2 (it stops with exit status 3), then a rerun without a budget. Printed: what the
   stopped run spent over its cap (target: at most 1.05; aim 1.0 or less), and whether the
   two runs wrote each id exactly once.

The emulator's answers stand in for a model's; on it the prompt count is exact by
construction (the plan counts with the emulator's rule), so the prompt figures check the
plumbing (the requests counted are the ones sent), not a tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
ROOT = Path(__file__).resolve().parents[1]


def session() -> Any:
    from pyspark.sql import SparkSession

    builder: Any = SparkSession.builder.master("local[2]").appName("bench-plan")
    for key, value in {
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def conf(target: Path, rows: int, *extra: str) -> Any:
    from dbstruct.jobs import load_config

    return load_config(
        str(ROOT / "conf" / "demo.yml"),
        [
            f"source.limit={rows}",
            f"target.path={target}",
            "emulator.latency=0.01",
            "chunk_rows=150",
            *extra,
        ],
    )


def off(planned: float, measured: float) -> float:
    return (planned - measured) / measured if measured else float("nan")


def plan_section(spark: Any, work: Path, rows: int, pilot: int) -> list[dict[str, Any]]:
    from dbstruct.jobs import run_job
    from dbstruct.jobs.plan import plan_job

    out = []
    for k in (1, 8):
        c = conf(work / f"plan-k{k}", rows, f"rows_per_request={k}")
        blind = plan_job(spark, c)
        planned = plan_job(spark, c, pilot=pilot)
        started = time.monotonic()
        run = run_job(spark, c)
        share = run.processed / blind.rows
        out.append(
            {
                "rows_per_request": k,
                "rows": blind.rows,
                "pilot": pilot,
                "run_rows": run.processed,
                "run_prompt_tokens": run.prompt_tokens,
                "run_completion_tokens": run.completion_tokens,
                "pilot_prompt_off": off(planned.prompt_tokens, run.prompt_tokens),
                "pilot_completion_off": off(planned.completion_tokens, run.completion_tokens),
                "blind_prompt_off": off(blind.prompt_tokens * share, run.prompt_tokens),
                "blind_completion_off": off(blind.completion_tokens * share, run.completion_tokens),
                "tokenizer": blind.tokenizer,
                "run_s": round(time.monotonic() - started, 1),
            }
        )
    return out


def budget_section(spark: Any, work: Path, rows: int) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from dbstruct.errors import BudgetReachedError
    from dbstruct.jobs import run_job

    full = run_job(spark, conf(work / "full", rows))
    cap = (full.prompt_tokens + full.completion_tokens) // 2
    capped = conf(work / "capped", rows, f"budget.max_tokens={cap}")
    stopped = None
    try:
        run_job(spark, capped)
    except BudgetReachedError as e:
        stopped = e.summary
    assert stopped is not None, "the capped run did not stop"
    spent = stopped.prompt_tokens + stopped.completion_tokens
    rest = run_job(spark, conf(work / "capped", rows))
    written = spark.read.parquet(f"file://{work / 'capped'}")
    ids = written.agg(F.count(F.lit(1)), F.count_distinct("ticket_id")).first()
    return {
        "rows": rows,
        "full_tokens": full.prompt_tokens + full.completion_tokens,
        "cap": cap,
        "spent": spent,
        "spent_over_cap": spent / cap,
        "stopped_rows": stopped.processed,
        "rerun_rows": rest.processed,
        "written": int(ids[0]),
        "distinct_ids": int(ids[1]),
    }


def measure(rows: int = 300, pilot: int = 30) -> dict[str, Any]:
    """Both sections in one local session; the raw figures."""
    spark = session()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            return {
                "plan": plan_section(spark, work, rows, pilot),
                "budget": budget_section(spark, work, rows),
            }
    finally:
        spark.stop()


def rows_of(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, result) rows for bench/run_all.py's table."""
    out = []
    for p in result["plan"]:
        k = p["rows_per_request"]
        ok = abs(p["pilot_prompt_off"]) <= 0.10 and abs(p["pilot_completion_off"]) <= 0.20
        out.append(
            (
                f"plan with a pilot of {p['pilot']} vs run, k = {k}: prompt / completion tokens",
                f"{p['pilot_prompt_off']:+.2%} / {p['pilot_completion_off']:+.2%}",
                "within 10% / 20%",
                "pass" if ok else "FAIL",
            )
        )
        out.append(
            (
                f"plan without a pilot vs run, k = {k}: prompt / completion tokens",
                f"{p['blind_prompt_off']:+.2%} / {p['blind_completion_off']:+.2%}",
                "-",
                "info",
            )
        )
    b = result["budget"]
    once = b["written"] == b["distinct_ids"] == b["rows"]
    out.append(
        (
            "budget of half a run: spent / cap (then the rerun: each id once)",
            f"{b['spent_over_cap']:.3f} ({b['spent']:,} of {b['cap']:,}; "
            f"{b['distinct_ids']} ids in {b['written']} rows)",
            "<= 1.05, each id once",
            "pass" if b["spent_over_cap"] <= 1.05 and once else "FAIL",
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--pilot", type=int, default=30)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    result = measure(args.rows, args.pilot)
    print("| measure | value | target | result |")
    print("|---|---|---|---|")
    for row in rows_of(result):
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of structured_udf against the latency-bound limit, and against a naive UDF.

    python bench/spark_throughput.py [--latency 0.5] [--concurrency 32] [--workers 2]

With every request taking ``latency`` seconds, ``workers`` Python workers (one per task slot)
each keeping ``concurrency`` requests in flight can do at most

    limit = workers x concurrency / latency   rows/s

This script runs, side by side in one Spark session against the serving emulator (in a
subprocess, so it does not share the driver's interpreter):

1. structured_udf, fixed latency                    target: >= 90% of the limit
2. structured_udf, 1% of requests at 10x latency    target: >= 80% of the limit
3. a naive row-at-a-time UDF calling the sync client, one request at a time per worker
   (its own limit is workers / latency)             target: (1) >= 20x (3)

Runs are ~60 s by default: a task ends with its slowest request, so with a slow tail every
task (partition) ends up to 10x latency late; short runs magnify that fixed cost.
Every run first warms up (Python workers started, clients built), then times a
``write.format("noop")`` of all rows, which computes every row and keeps none. Texts are unique
so no request is saved by dedupe. Not a test: it prints a table and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from pydantic import BaseModel
from pyspark import cloudpickle
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dbstruct.spark import spark_schema, structured_udf
from dbstruct.testing import Emulator

ENDPOINT = "databricks/bench-llm"
PROMPT = "Extract the user from this text: {text}"


class User(BaseModel):
    name: str
    age: int


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


@dataclass
class Run:
    name: str
    rows: int
    seconds: float
    limit: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def session(workers: int, batch_rows: int) -> SparkSession:
    return (
        SparkSession.builder.master(f"local[{workers}]")
        .appName("dbstruct-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )


def texts(spark: SparkSession, rows: int, partitions: int, salt: str) -> DataFrame:
    """``rows`` unique texts, generated on the executors, in ``partitions`` even partitions."""
    text = F.concat(
        F.lit(f"Ann{salt} is "),
        (F.col("id") % 90).cast("string"),
        F.lit(" years, #"),
        F.col("id").cast("string"),
    )
    return spark.range(0, rows, 1, partitions).select(F.col("id"), text.alias("text"))


def timed(df: DataFrame, column: Any) -> float:
    started = time.perf_counter()
    df.select(column.alias("out")).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def naive_udf(base_url: str, token: str) -> Callable[..., Any]:
    """A row-at-a-time Python UDF: one blocking request per row, as a first attempt would."""

    def extract(text: str | None) -> Any:
        import dbstruct
        from dbstruct.spark._convert import to_row

        client = getattr(sys, "_dbstruct_bench_client", None)  # one per worker process
        if client is None:
            client = dbstruct.from_provider(ENDPOINT, base_url=base_url, api_key=token)
            sys._dbstruct_bench_client = client  # type: ignore[attr-defined]
        if not text:
            return None
        outcome = client.extract(
            response_model=User, messages=[{"role": "user", "content": PROMPT.format(text=text)}]
        )
        return None if outcome.value is None else to_row(outcome.value)

    # pyspark looks for Arrow type hints on a plain UDF and warns when it finds none
    warnings.filterwarnings("ignore", "Cannot infer the eval type", UserWarning)
    return F.udf(extract, spark_schema(User))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="local[N]: Python workers")
    parser.add_argument("--seconds", type=float, default=60.0, help="target length of a run")
    parser.add_argument("--naive-seconds", type=float, default=15.0)
    parser.add_argument("--batch-rows", type=int, default=1000, help="Arrow batch size")
    args = parser.parse_args()
    report(
        measure(
            args.latency,
            args.concurrency,
            args.workers,
            args.seconds,
            args.naive_seconds,
            args.batch_rows,
        )
    )


def measure(
    latency: float = 0.5,
    concurrency: int = 32,
    workers: int = 2,
    seconds: float = 60.0,
    naive_seconds: float = 15.0,
    batch_rows: int = 1000,
) -> dict[str, Any]:
    """The three runs side by side in one fresh local session; the session is stopped after.

    Returns the settings, ``runs`` (name, rows, seconds, rows/s, share of the limit) and the
    three figures the targets are about: ``fixed_share``, ``tail_share`` and ``speedup``.
    """
    w, c, lat = workers, concurrency, latency
    limit = w * c / lat
    rows = int(limit * seconds) // w * w
    naive_rows = max(w, int(w / lat * naive_seconds) // w * w)

    spark = session(w, batch_rows)
    emu = Emulator.spawn(token="dapi-bench", latency=lat, seed=1)
    try:
        runs = _runs(spark, emu, w, c, rows, naive_rows, limit)
        max_in_flight = emu.stats().max_in_flight
    finally:
        emu.stop()
        spark.stop()
    fixed, tail, naive = runs
    return {
        "latency": lat,
        "concurrency": c,
        "workers": w,
        "batch_rows": batch_rows,
        "limit": limit,
        "naive_limit": w / lat,
        "max_in_flight": max_in_flight,
        "runs": [
            {
                "name": r.name,
                "rows": r.rows,
                "seconds": r.seconds,
                "rate": r.rate,
                "share": r.rate / r.limit,
            }
            for r in runs
        ],
        "fixed_rate": fixed.rate,
        "fixed_share": fixed.rate / fixed.limit,
        "tail_rate": tail.rate,
        "tail_share": tail.rate / tail.limit,
        "naive_rate": naive.rate,
        "speedup": fixed.rate / naive.rate,
    }


def _runs(
    spark: SparkSession, emu: Emulator, w: int, c: int, rows: int, naive_rows: int, limit: float
) -> list[Run]:
    udf = structured_udf(
        User, ENDPOINT, PROMPT, concurrency=c, base_url=emu.base_url, api_key=emu.token
    )
    naive = naive_udf(emu.base_url, emu.token)
    runs: list[Run] = []

    timed(texts(spark, 4 * w * c, w, "warm"), udf("text"))  # start workers and clients
    emu.reset()
    runs.append(
        Run(
            "structured_udf, fixed latency",
            rows,
            timed(texts(spark, rows, w, "a"), udf("text")),
            limit,
        )
    )

    emu.configure(tail=0.01, tail_factor=10.0)
    runs.append(
        Run(
            "structured_udf, 1% at 10x latency",
            rows,
            timed(texts(spark, rows, w, "b"), udf("text")),
            limit,
        )
    )
    emu.configure(tail=0.0)

    timed(texts(spark, w, w, "warm2"), naive("text"))
    runs.append(
        Run(
            "naive row-at-a-time, sync client",
            naive_rows,
            timed(texts(spark, naive_rows, w, "c"), naive("text")),
            limit,
        )
    )
    return runs


def report(result: dict[str, Any]) -> None:
    w, c, lat = result["workers"], result["concurrency"], result["latency"]
    print(
        f"\nworkers={w} concurrency={c} latency={lat}s batch_rows={result['batch_rows']} "
        f"limit = {w}x{c}/{lat} = {result['limit']:.0f} rows/s  (cpus: {os.cpu_count()})"
    )
    print(f"{'run':<38}{'rows':>7}{'seconds':>9}{'rows/s':>9}{'of limit':>10}")
    for run in result["runs"]:
        print(
            f"{run['name']:<38}{run['rows']:>7}{run['seconds']:>9.1f}{run['rate']:>9.1f}"
            f"{run['share']:>10.1%}"
        )
    print(f"\nfixed latency: {result['fixed_share']:.1%} of the limit (target >= 90%)")
    print(f"with slow tail: {result['tail_share']:.1%} of the limit (target >= 80%)")
    print(
        f"vs naive: {result['speedup']:.1f}x (target >= 20x; "
        f"naive limit {result['naive_limit']:.0f} rows/s)"
    )


if __name__ == "__main__":
    main()

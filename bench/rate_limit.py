"""structured_udf against an endpoint's QPS limit, with and without the adaptive controller.

    python bench/rate_limit.py [--qps 20] [--burst 2] [--latency 0.2] [--seconds 60]

The serving emulator (a subprocess) admits ``qps`` requests a second (a token bucket holding
``burst``) and answers each in ``latency`` seconds; over the limit it answers 429 with a
Retry-After in whole seconds, as Databricks does. Two Spark workers (``local[2]``) run a UDF
with ``concurrency`` 32 and no caps, once with ``adaptive=False`` (every row retries on its
own) and once with the controller, side by side in one session. Targets with the
controller: successful requests >= 90% of ``qps``, 429s <= 10% of requests, no row lost
(every row gets a value). Not a test: it prints a table and exits.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

# The Spark set-up (environment, session, generated texts, model) is spark_throughput's.
from spark_throughput import ENDPOINT, PROMPT, User, texts
from spark_throughput import session as throughput_session

from dbstruct.spark import structured_udf
from dbstruct.testing import Emulator


@dataclass
class Run:
    name: str
    rows_in: int
    rows_out: int
    with_value: int
    seconds: float
    ok: int
    limited: int
    requests: int


def session(workers: int) -> SparkSession:
    return throughput_session(workers, batch_rows=200)


def measure(name: str, spark: SparkSession, emu: Emulator, udf: object, rows: int, w: int) -> Run:
    df = texts(spark, rows, w, name[:4]).select(udf("text").alias("u"))  # type: ignore[operator]
    emu.reset()
    started = time.perf_counter()
    got = df.agg(F.count("*").alias("n"), F.count("u.name").alias("v")).collect()[0]
    seconds = time.perf_counter() - started
    stats = emu.stats()
    return Run(name, rows, got["n"], got["v"], seconds, stats.status(200), stats.status(429),
               stats.requests)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qps", type=float, default=20.0)
    parser.add_argument("--burst", type=float, default=2.0)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="target length of a run")
    parser.add_argument("--max-retries", type=int, default=3)
    args = parser.parse_args()
    w = args.workers
    rows = int(args.qps * args.seconds) // w * w
    spark = session(w)
    emu = Emulator.spawn(token="dapi-bench", latency=args.latency, qps=args.qps, burst=args.burst)
    try:
        common = dict(concurrency=args.concurrency, max_retries=args.max_retries,
                      base_url=emu.base_url, api_key=emu.token)  # fmt: skip
        runs = []
        for adaptive in (False, True):
            udf = structured_udf(User, ENDPOINT, PROMPT, adaptive=adaptive, **common)  # type: ignore[arg-type]
            name = "adaptive" if adaptive else "fixed"
            measure(name + "-warm", spark, emu, udf, 4 * w, w)  # start workers and clients
            runs.append(measure(name, spark, emu, udf, rows, w))
        report(runs, args)
    finally:
        emu.stop()
        spark.stop()


def report(runs: list[Run], args: argparse.Namespace) -> None:
    q = args.qps
    print(
        f"\nqps limit Q={q:g} (burst {args.burst:g}), latency {args.latency}s, "
        f"local[{args.workers}], concurrency {args.concurrency}, max_retries {args.max_retries}"
    )
    head = f"{'controller':<10}{'rows in':>8}{'out':>6}{'valued':>8}{'secs':>7}"
    print(head + f"{'ok req/s':>10}{'of Q':>7}{'429s':>7}{'429 share':>11}")
    for r in runs:
        rate = r.ok / r.seconds
        share = r.limited / max(1, r.requests)
        print(
            f"{r.name:<10}{r.rows_in:>8}{r.rows_out:>6}{r.with_value:>8}{r.seconds:>7.1f}"
            f"{rate:>10.1f}{rate / q:>7.0%}{r.limited:>7}{share:>11.1%}"
        )
    print("targets (adaptive): >= 90% of Q, 429 share <= 10%, valued == rows in")


if __name__ == "__main__":
    main()

"""structured_udf's default settings (the adaptive controller) against adaptive=False.

Where 429s track the sending rate (a QPS limit), where they do not, and where there are none.

    python bench/rate_limit.py [--qps 20] [--burst 2] [--latency 0.2] [--seconds 60] [--share 0.05]

Against the serving emulator (a subprocess), two Spark workers (``local[2]``) run a UDF with
``concurrency`` 32 and no caps, once with the default settings and once with
``adaptive=False`` (every row backs off on its own), side by side in one session:

(a) a QPS limit: the emulator admits ``qps`` requests a second (a token bucket holding
    ``burst``) and answers 429 beyond it, with a Retry-After in whole seconds, as Databricks
    does. Targets with the default settings: successful requests >= 90% of ``qps``, 429s
    <= 10% of requests, every row valued.
(b) no limit, but ``share`` of requests answered 429 whatever the rate
    (``faults={"429": share}``, as on a shared endpoint). Target: the default settings'
    rows/s >= 0.9 x adaptive=False's.
(c) no limit and no 429: target rows/s >= 0.95 x adaptive=False's.

Each request takes ``latency`` seconds. (a) sends ``qps x seconds`` rows per run; (b) and (c)
``free_rows`` (default 150 x seconds: 30-40 s a run on 2 cores at 60). In (a) the default
settings' runs are named "adaptive" and adaptive=False's "fixed" (bench/run_all.py reads that
table). The default settings' cost at a start (a test at half the rate, a few seconds; see
dbstruct._rate_control) is part of what (b) measures. Not a test: it prints tables and exits.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

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

    @property
    def rows_per_s(self) -> float:
        return self.with_value / self.seconds


def session(workers: int) -> SparkSession:
    return throughput_session(workers, batch_rows=200)


def measure(name: str, spark: SparkSession, emu: Emulator, udf: object, rows: int, w: int) -> Run:
    df = texts(spark, rows, w, name[:6]).select(udf("text").alias("u"))  # type: ignore[operator]
    emu.reset()
    started = time.perf_counter()
    got = df.agg(F.count("*").alias("n"), F.count("u.name").alias("v")).collect()[0]
    seconds = time.perf_counter() - started
    stats = emu.stats()
    return Run(name, rows, got["n"], got["v"], seconds, stats.status(200), stats.status(429),
               stats.requests)  # fmt: skip


def side_by_side(
    spark: SparkSession, emu: Emulator, args: argparse.Namespace, rows: int, names: tuple[str, str]
) -> list[Run]:
    """The adaptive=False run, then the default settings' run, each after a warm-up."""
    w = args.workers
    common: dict[str, Any] = dict(concurrency=args.concurrency, max_retries=args.max_retries,
                                  base_url=emu.base_url, api_key=emu.token)  # fmt: skip
    runs = []
    for name, options in zip(names, ({"adaptive": False}, {}), strict=True):
        udf = structured_udf(User, ENDPOINT, PROMPT, **options, **common)
        measure(name + "-warm", spark, emu, udf, 4 * w, w)  # start workers and clients
        runs.append(measure(name, spark, emu, udf, rows, w))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qps", type=float, default=20.0)
    parser.add_argument("--burst", type=float, default=2.0)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="target length of a run")
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.05, help="429s whatever the rate, (b)")
    parser.add_argument("--free-rows", type=int, help="rows per run in (b) and (c)")
    args = parser.parse_args()
    w = args.workers
    limited_rows = int(args.qps * args.seconds) // w * w
    free_rows = (args.free_rows or int(150 * args.seconds)) // w * w
    spark = session(w)
    emu = Emulator.spawn(token="dapi-bench", latency=args.latency)
    try:
        emu.start_from(qps=args.qps, burst=args.burst)
        report_limit(side_by_side(spark, emu, args, limited_rows, ("fixed", "adaptive")), args)
        emu.start_from(qps=None, faults={"429": args.share}, seed=7)
        title = f"(b) no limit, {args.share:.0%} of requests answered 429 whatever the rate"
        report_ratio(
            title, side_by_side(spark, emu, args, free_rows, ("b-fixed", "b-default")), 0.9
        )
        emu.start_from(qps=None, faults={})
        title = "(c) no limit, no 429"
        report_ratio(
            title, side_by_side(spark, emu, args, free_rows, ("c-fixed", "c-default")), 0.95
        )
    finally:
        emu.stop()
        spark.stop()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_limit(runs: list[Run], args: argparse.Namespace) -> None:
    q = args.qps
    print(
        f"\n(a) qps limit Q={q:g} (burst {args.burst:g}), latency {args.latency}s, "
        f"local[{args.workers}], concurrency {args.concurrency}, max_retries {args.max_retries}; "
        "adaptive: the default settings, fixed: adaptive=False"
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
    r = runs[-1]
    share_of_q, limited = r.ok / r.seconds / q, r.limited / max(1, r.requests)
    print(
        f"targets (adaptive): >= 90% of Q {verdict(share_of_q >= 0.9)}, "
        f"429 share <= 10% {verdict(limited <= 0.1)}, "
        f"valued == rows in {verdict(r.with_value == r.rows_in)}"
    )


def report_ratio(title: str, runs: list[Run], target: float) -> None:
    print(f"\n{title}")
    head = f"{'controller':<11}{'rows in':>8}{'valued':>8}{'secs':>7}{'rows/s':>8}"
    print(head + f"{'429s':>7}{'429 share':>11}")
    for r in runs:
        share = r.limited / max(1, r.requests)
        print(
            f"{r.name:<11}{r.rows_in:>8}{r.with_value:>8}{r.seconds:>7.1f}{r.rows_per_s:>8.1f}"
            f"{r.limited:>7}{share:>11.1%}"
        )
    fixed, default = runs
    ratio = default.rows_per_s / fixed.rows_per_s
    passed = verdict(ratio >= target)
    print(f"rows/s, default / adaptive=False: {ratio:.2f} (target >= {target:g}) {passed}")


if __name__ == "__main__":
    main()

"""Peak memory of the Python workers running structured_udf, at 10,000 and at 100,000 rows.

    python bench/worker_memory.py [--rows 10000 100000] [--concurrency 32]

The UDF streams: it keeps at most ``buffer_rows`` rows and ``concurrency`` requests per worker,
whatever the partition size, so a worker's peak resident memory should not grow with the rows
it processes. Target: the peak at 100k rows within 10% of the peak at 10k rows.

Each size runs in a fresh ``local[2]`` session (stopped after, so its Python workers exit and
the next size starts new ones: the pids are printed to show it) against the emulator in a
subprocess with latency 0, ``include_status=True``, in two partitions (one task per worker,
so one worker sees half the rows in one task). An aggregate over the status column forces
every row and checks that all succeeded.

How the peak is read (Linux): while the job runs, a thread walks /proc every 0.2 s for the
Spark JVM's Python descendants (``pyspark.daemon`` and the workers it forks) and keeps each
pid's ``VmHWM`` (the kernel's peak resident set size), once more after the job. Reading the
kernel's own high-water mark means no peak between two samples is missed; sampling during the
job catches a worker that exits before the end. As a cross-check, a tiny pandas UDF then runs
on the same session (``spark.python.worker.reuse=true``) and returns its pid and
``getrusage(RUSAGE_SELF).ru_maxrss``; the report says whether it landed on the same pids.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import pandas as pd
from pydantic import BaseModel
from pyspark import cloudpickle
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from spark_throughput import session, texts

from dbstruct.spark import structured_udf
from dbstruct.testing import Emulator

ENDPOINT = "databricks/bench-llm"
PROMPT = "Extract the user from this text: {text}"
TARGET = 1.10  # peak(large) / peak(small)
PROC = Path("/proc")


class User(BaseModel):
    name: str
    age: int


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- /proc


def _ppid_and_cmd(pid: int) -> tuple[int, str] | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        cmd = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # the process exited while we looked
        return None
    return int(stat.rsplit(")", 1)[1].split()[1]), cmd


def python_descendants(root: int) -> dict[int, int]:
    """pid -> parent pid of every pyspark process below ``root`` (the JVM)."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = _ppid_and_cmd(int(entry.name))
            if info is not None:
                parents[int(entry.name)] = info
    found: dict[int, int] = {}
    frontier = {root}
    while frontier:
        children = {p for p, (pp, _) in parents.items() if pp in frontier and p not in found}
        for p in children:
            found[p] = parents[p][0]
        frontier = children
    return {p: pp for p, pp in found.items() if "pyspark" in parents[p][1]}


def peak_rss_kb(pid: int) -> int | None:
    """The kernel's high-water mark of the resident set (VmHWM), in KiB."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Sampler:
    """Keeps the largest VmHWM seen per Python process below the JVM, from a thread."""

    jvm: int
    interval: float = 0.2
    peaks: dict[int, int] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        for pid, parent in python_descendants(self.jvm).items():
            kb = peak_rss_kb(pid)
            if kb is not None:
                self.peaks[pid] = max(kb, self.peaks.get(pid, 0))
                self.parents[pid] = parent

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def workers(self) -> dict[int, int]:
        """Peaks of the forked workers only: the daemon (the JVM's own child) does no work."""
        return {p: kb for p, kb in self.peaks.items() if self.parents[p] != self.jvm}


# ---------------------------------------------------------------- one size


def probe(spark: SparkSession, partitions: int) -> list[tuple[int, int]]:
    """(pid, ru_maxrss KiB) from a tiny pandas UDF run on the session's reused workers."""

    def report(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import resource

        for _ in batches:
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield pd.DataFrame({"pid": [os.getpid()], "maxrss": [peak]})

    df = spark.range(0, partitions, 1, partitions).mapInPandas(report, "pid long, maxrss long")
    return [(int(r["pid"]), int(r["maxrss"])) for r in df.collect()]


def one_size(emu: Emulator, rows: int, workers: int, concurrency: int) -> dict[str, Any]:
    spark = session(workers, 1000)
    try:
        gateway = spark.sparkContext._gateway  # classic local mode: the driver started the JVM
        assert gateway is not None
        jvm: int = gateway.proc.pid
        udf = structured_udf(
            User,
            ENDPOINT,
            PROMPT,
            concurrency=concurrency,
            include_status=True,
            base_url=emu.base_url,
            api_key=emu.token,
        )
        out = texts(spark, rows, workers, f"m{rows}").select(udf("text").alias("r"))
        started = time.perf_counter()
        with Sampler(jvm) as sampler:
            agg = out.agg(
                F.count(F.lit(1)).alias("rows"),
                F.count(F.col("r.value.name")).alias("ok"),
            ).collect()[0]
        seconds = time.perf_counter() - started
        probed = probe(spark, workers)
        peaks = sampler.workers()
    finally:
        spark.stop()
    return {
        "rows": rows,
        "ok": int(agg["ok"]),
        "seconds": seconds,
        "peak_kb": max(peaks.values(), default=0),
        "worker_peaks_kb": peaks,
        "daemon_peak_kb": max((kb for p, kb in sampler.peaks.items() if p not in peaks), default=0),
        "probe": probed,
        "probe_on_same_pids": all(pid in peaks for pid, _ in probed),
    }


# ---------------------------------------------------------------- all sizes


def measure(
    sizes: tuple[int, ...] = (10_000, 100_000), workers: int = 2, concurrency: int = 32
) -> dict[str, Any]:
    """Peak worker RSS per size, each size in a fresh session; ``ratio`` = last / first."""
    if not PROC.is_dir():
        raise RuntimeError("worker_memory reads /proc: Linux only")
    emu = Emulator.spawn(token="dapi-bench", latency=0.0, seed=1)
    try:
        results = [one_size(emu, rows, workers, concurrency) for rows in sizes]
    finally:
        emu.stop()
    first, last = results[0]["peak_kb"], results[-1]["peak_kb"]
    pid_sets = [set(r["worker_peaks_kb"]) for r in results]
    return {
        "sizes": results,
        "ratio": last / first if first else float("nan"),
        "target": TARGET,
        "fresh_workers": all(a.isdisjoint(b) for a, b in itertools.pairwise(pid_sets)),
    }


def report(result: dict[str, Any]) -> None:
    print(f"{'rows':>8} {'ok':>8} {'seconds':>8} {'peak MiB':>9}  worker pids (peak MiB)")
    for r in result["sizes"]:
        pids = ", ".join(f"{p} ({kb / 1024:.0f})" for p, kb in sorted(r["worker_peaks_kb"].items()))
        line = f"{r['rows']:>8} {r['ok']:>8} {r['seconds']:>8.1f} {r['peak_kb'] / 1024:>9.1f}"
        print(f"{line}  {pids}")
        probed = ", ".join(f"{p} ({kb / 1024:.0f})" for p, kb in r["probe"])
        same = "same pids" if r["probe_on_same_pids"] else "OTHER pids"
        print(f"{'':>36}probe ru_maxrss: {probed} ({same})")
    verdict = "pass" if result["ratio"] <= result["target"] else "FAIL"
    print(
        f"\npeak ratio {result['ratio']:.3f} (target <= {result['target']:.2f}): {verdict}; "
        f"new workers per size: {result['fresh_workers']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    report(measure(tuple(args.rows), args.workers, args.concurrency))


if __name__ == "__main__":
    main()

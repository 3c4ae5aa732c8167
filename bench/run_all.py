"""Every dbstruct benchmark in one run, printed as one table: measured value, target, pass/fail.

    python bench/run_all.py [--quick] [--only client worker tokens spark rate packing plan
                            memory]
                            [--json out.json]

Sections, in this order (the CPU-sensitive ones first, before any JVM is started):

- client: client CPU per request, dbstruct vs the raw openai SDK and instructor
  (bench/client_overhead.py; instructor only where it is installed)
- worker: a Spark worker's CPU per row at one row a request, run_partition with pyspark's
  Arrow conversions but no JVM, vs the raw openai SDK at the same concurrency
  (bench/worker_cpu.py)
- tokens: prompt tokens added per row, per mode, dbstruct vs instructor (bench/token_overhead.py)
- spark: structured_udf rows/s against the latency-bound limit, without and with a slow tail,
  and against a naive row-at-a-time UDF (bench/spark_throughput.py)
- rate: utilisation of an endpoint's rate limit (bench/rate_limit.py, when present)
- packing: several rows per request: tokens per row at k = 1, 4, 8, 16, rows/s under a QPS
  limit and at fixed latency, packing faults (bench/packing.py)
- plan: `dbstruct plan` against the run that follows it (with and without a pilot, 1 and 8
  rows per request), and a budget of half a run (bench/plan_budget.py)
- memory: Python worker peak memory at 10k vs 100k rows (bench/worker_memory.py)

Ratios are measured side by side in one run, never against numbers from another day. A section
that cannot run (a missing package, an error) shows "not measured" with the reason, and the
other sections still run. ``--quick`` is a sanity pass of a few minutes; the full run takes
about 20 minutes on 2 cores. The exit status is 0 even when a target is missed: this is a
record, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules

SECTIONS = ("client", "worker", "tokens", "spark", "rate", "packing", "plan", "memory")


@dataclass
class Row:
    section: str
    measure: str
    value: str
    target: str
    result: str  # "pass", "FAIL", "info" or "not measured"


@dataclass
class Settings:
    quick: bool

    @property
    def client(self) -> tuple[int, int]:  # requests, rounds
        return (100, 2) if self.quick else (400, 3)

    @property
    def spark(self) -> dict[str, float]:
        return {"seconds": 10.0, "naive_seconds": 5.0} if self.quick else {}

    @property
    def worker(self) -> dict[str, int]:  # rows per run, rounds
        return {"rows": 600, "rounds": 1} if self.quick else {"rows": 3000, "rounds": 2}

    @property
    def memory(self) -> tuple[int, int]:
        return (2_000, 20_000) if self.quick else (10_000, 100_000)


def verdict(ok: bool | None) -> str:
    return "info" if ok is None else ("pass" if ok else "FAIL")


# ---------------------------------------------------------------- sections


def client_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    import client_overhead

    from dbstruct.testing import Emulator

    n, rounds = s.client
    with Emulator.spawn(token="dapi-bench") as emu:
        r = client_overhead.measure(emu, n, rounds)
    raw["client"] = r
    rows = []
    for base, target in (("openai", 1.25), ("instructor", 0.50)):
        for kind in ("sync", "async"):
            label = f"client CPU/request, dbstruct / {base} ({kind})"
            if f"{base} {kind}" not in r:
                rows.append(Row("client", label, "-", f"<= {target:.2f}", "not measured"))
                continue
            ours, theirs = r[f"dbstruct {kind}"], r[f"{base} {kind}"]
            value = f"{ours / theirs:.2f} ({ours * 1e6:.0f} vs {theirs * 1e6:.0f} us)"
            rows.append(
                Row("client", label, value, f"<= {target:.2f}", verdict(ours / theirs <= target))
            )
    return rows


def worker_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    import worker_cpu

    r = worker_cpu.measure(**s.worker)
    raw["worker"] = r
    best = r["best"]
    ours = best["worker"]["cpu"]
    setup = f"{r['rows']} rows, latency {r['latency']} s, concurrency {r['concurrency']}"
    rows = [
        Row("worker", f"worker CPU/row at k = 1 ({setup})", f"{ours * 1e3:.2f} ms", "-", "info")
    ]
    for base, label in (("openai", "raw openai"), ("openai+validate", "openai + validate")):
        theirs = best[base]["cpu"]
        value = f"{ours / theirs:.2f} ({ours * 1e3:.2f} vs {theirs * 1e3:.2f} ms)"
        rows.append(Row("worker", f"worker CPU/row, dbstruct / {label}", value, "-", "info"))
    return rows


def token_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    import token_overhead

    from dbstruct.testing import Emulator

    logging.getLogger("instructor").setLevel(logging.CRITICAL)  # its 400s are expected
    count = token_overhead.tokenizer()
    with Emulator.spawn(token="dapi-bench") as emu:
        per_model = token_overhead.measure(emu, count)
    totals = token_overhead.mode_totals(per_model)
    raw["tokens"] = totals
    rows = []
    for mode, t in totals.items():
        models = t["models"]
        ours = t["ours"] / models
        target = f"<= {t['target']:.2f} x instructor" if t["target"] is not None else "-"
        if t["theirs"] is None:
            rows.append(Row("tokens", f"tokens added/row, {mode}", f"{ours:.0f}", target, "info"))
            continue
        value = f"{t['ratio']:.2f} ({ours:.0f} vs {t['theirs'] / models:.0f})"
        ok = t["ok"] if t["target"] is not None else None
        rows.append(Row("tokens", f"tokens added/row, {mode}", value, target, verdict(ok)))
    return rows


def spark_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    import spark_throughput

    r = spark_throughput.measure(**s.spark)  # type: ignore[arg-type]
    raw["spark"] = r
    limit = f"limit {r['limit']:.0f}"
    return [
        Row(
            "spark",
            "Spark rows/s, fixed latency, share of limit",
            f"{r['fixed_share']:.1%} ({r['fixed_rate']:.0f} rows/s, {limit})",
            ">= 90%",
            verdict(r["fixed_share"] >= 0.90),
        ),
        Row(
            "spark",
            "Spark rows/s, 1% at 10x latency, share of limit",
            f"{r['tail_share']:.1%} ({r['tail_rate']:.0f} rows/s, {limit})",
            ">= 80%",
            verdict(r["tail_share"] >= 0.80),
        ),
        Row(
            "spark",
            "Spark rows/s, structured_udf / naive UDF",
            f"{r['speedup']:.1f}x ({r['naive_rate']:.1f} rows/s naive)",
            ">= 20x",
            verdict(r["speedup"] >= 20.0),
        ),
    ]


def rate_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    """bench/rate_limit.py, run as a subprocess (its own Spark session) and its table read."""
    label = "rate limit: successful req/s, share of the QPS limit (adaptive)"
    script = Path(__file__).resolve().parent / "rate_limit.py"
    if not script.exists():
        return [Row("rate", label, "-", ">= 90%", "not measured (bench/rate_limit.py absent)")]
    args = [sys.executable, str(script)] + (["--seconds", "10"] if s.quick else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    raw["rate"] = {"returncode": done.returncode, "stdout": done.stdout}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        reason = f"not measured (exit {done.returncode}: {tail[0][:80]})"
        return [Row("rate", label, "-", ">= 90%", reason)]
    return rate_limit_rows(done.stdout, label)


def rate_limit_rows(stdout: str, label: str) -> list[Row]:
    """Rows from rate_limit.py's printed table: ``qps limit Q=<q>`` then one line per run,
    ``name rows_in out valued secs ok_req/s of_Q 429s 429_share``."""
    q_match = re.search(r"Q=([0-9.]+)", stdout)
    runs = {
        f[0]: f
        for f in (line.split() for line in stdout.splitlines())
        if len(f) == 9 and f[0] in ("fixed", "adaptive")
    }
    if q_match is None or "adaptive" not in runs:
        return [Row("rate", label, "-", ">= 90%", "not measured (output not understood)")]
    q = float(q_match.group(1))
    rows = []
    for name in ("adaptive", "fixed"):
        if name not in runs:
            continue
        f = runs[name]
        share, limited = float(f[5]) / q, float(f[8].rstrip("%")) / 100
        adaptive = name == "adaptive"
        rows += [
            Row(
                "rate",
                f"rate limit: successful req/s, share of the QPS limit ({name})",
                f"{share:.1%} ({float(f[5]):.1f} of {q:g} req/s)",
                ">= 90%" if adaptive else "-",
                verdict(share >= 0.90 if adaptive else None),
            ),
            Row(
                "rate",
                f"rate limit: 429 share of requests ({name})",
                f"{limited:.1%} ({f[7]} answers were 429)",
                "<= 10%" if adaptive else "-",
                verdict(limited <= 0.10 if adaptive else None),
            ),
            Row(
                "rate",
                f"rate limit: rows with a value ({name})",
                f"{f[3]} of {f[1]}",
                "all" if adaptive else "-",
                verdict(f[3] == f[1] if adaptive else None),
            ),
        ]
    return rows


def packing_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    import packing

    result = packing.measure(quick=s.quick)
    raw["packing"] = result
    return [Row("packing", *row) for row in packing.rows_of(result)]


def plan_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    import plan_budget

    result = plan_budget.measure(rows=120 if s.quick else 300, pilot=12 if s.quick else 30)
    raw["plan"] = result
    return [Row("plan", *row) for row in plan_budget.rows_of(result)]


def memory_rows(s: Settings, raw: dict[str, Any]) -> list[Row]:
    import worker_memory

    r = worker_memory.measure(s.memory)
    raw["memory"] = r
    small, large = r["sizes"]
    rows = [
        Row(
            "memory",
            f"worker peak RSS, {x['rows']:,} rows",
            f"{x['peak_kb'] / 1024:.0f} MiB ({x['ok']:,} rows ok, {x['seconds']:.0f} s)",
            "-",
            "info",
        )
        for x in (small, large)
    ]
    checks = r["fresh_workers"] and all(x["ok"] == x["rows"] for x in (small, large))
    note = "" if checks else " (check: workers reused across sizes or rows failed)"
    rows.append(
        Row(
            "memory",
            f"worker peak RSS, {large['rows']:,} / {small['rows']:,} rows",
            f"{r['ratio']:.3f}{note}",
            f"<= {r['target']:.2f}",
            verdict(r["ratio"] <= r["target"] and checks),
        )
    )
    return rows


RUNNERS: dict[str, Callable[[Settings, dict[str, Any]], list[Row]]] = {
    "client": client_rows,
    "worker": worker_rows,
    "tokens": token_rows,
    "spark": spark_rows,
    "rate": rate_rows,
    "packing": packing_rows,
    "plan": plan_rows,
    "memory": memory_rows,
}


# ---------------------------------------------------------------- running and printing


def run(section: str, s: Settings, raw: dict[str, Any]) -> list[Row]:
    started = time.perf_counter()
    print(f"[bench] {section} ...", file=sys.stderr, flush=True)
    try:
        rows = RUNNERS[section](s, raw)
    except SystemExit as e:  # a section's own "pip install ..." exit: a missing package
        rows = [Row(section, section, "-", "-", f"not measured ({str(e.code)[:80]})")]
    except Exception as e:  # one broken section must not lose the others' numbers
        traceback.print_exc()
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:80]
        rows = [Row(section, section, "-", "-", f"not measured ({reason})")]
    print(f"[bench] {section} done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return rows


def machine() -> str:
    versions = []
    for name in ("dbstruct", "openai", "pyspark", "instructor"):
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            versions.append(f"{name} absent")
    return (
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, " + ", ".join(versions)
    )


def print_table(rows: list[Row]) -> None:
    print("| measure | value | target | result |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r.measure} | {r.value} | {r.target} | {r.result} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a sanity pass")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    settings = Settings(quick=args.quick)
    raw: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    started = time.perf_counter()
    rows = [row for section in args.only for row in run(section, settings, raw)]
    print(f"\ndbstruct benchmarks{' (quick)' if args.quick else ''}: {raw['machine']}")
    print(f"total {time.perf_counter() - started:.0f} s\n")
    print_table(rows)
    if args.json:
        raw["rows"] = [asdict(r) for r in rows]
        args.json.write_text(json.dumps(raw, indent=2, default=str))


if __name__ == "__main__":
    main()

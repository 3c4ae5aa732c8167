"""A Spark worker's CPU per row at k = 1 (one row a request), without Spark's noise.

    python bench/worker_cpu.py [--rows 3000] [--latency 0.1] [--concurrency 32] [--rounds 2]

At the latency limit a Python worker's own CPU decides throughput: with ``concurrency``
requests in flight at ``latency`` seconds each, a worker must finish a row every
``latency / concurrency`` seconds (3.1 ms at 0.1 s and 32). This script measures, in one
process and side by side, the CPU time (``time.process_time``, every thread) per row of:

1. dbstruct's worker: ``spark._worker.run_partition``, called as Spark's
   SQL_SCALAR_PANDAS_ITER_UDF calls it, with pyspark's own Arrow conversions around it
   (``ArrowBatchTransformer.to_pandas`` on each input batch, ``PandasToArrowConversion.convert``
   on each output frame) when pyspark is installed; its CPU is also split between the thread
   that reads batches (Spark's) and the client's event loop thread;
2. the bare ``openai.AsyncOpenAI`` client sending the same request bodies (the tool and
   ``tool_choice`` dbstruct sends, one unique text a row) at the same concurrency, bounded by
   an ``asyncio.Semaphore``;
3. the same, plus ``model_validate_json`` of the tool call's arguments: the least code that
   gets the same objects.

The serving emulator runs in a subprocess (``Emulator.spawn``), so its CPU is not counted. Each
round runs the three one after another; the table shows the best round of each. Not a test:
it prints a table and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pandas as pd
from pydantic import BaseModel

from dbstruct.auth import Credentials
from dbstruct.modes import Mode, ResponseTarget, chat_request
from dbstruct.spark import _worker
from dbstruct.spark._prompt import build_prompt
from dbstruct.spark._udf_spec import UdfSpec
from dbstruct.testing import Emulator
from dbstruct.worker_settings import WorkerSettings

# an endpoint with a documented context window, so the per-row context check runs as it would
ENDPOINT = "databricks-meta-llama-3-3-70b-instruct"
PROMPT = "Extract the user from this text: {text}"


class User(BaseModel):
    name: str
    age: int


def texts(rows: int, salt: str) -> list[str]:
    """Unique texts (no request is saved by the window's dedupe), as spark_throughput's."""
    return [f"Ann{salt} is {i % 90} years, #{i}" for i in range(rows)]


# ---------------------------------------------------------------- Spark's Arrow conversions


class ArrowSides:
    """What pyspark's worker does around an iterator pandas UDF returning a struct: each Arrow
    batch to a pandas Series, each output DataFrame back to an Arrow batch (pyspark/worker.py,
    SQL_SCALAR_PANDAS_ITER_UDF). None of it when pyspark is not installed."""

    def __init__(self, include_status: bool) -> None:
        try:
            from pyspark.sql.conversion import ArrowBatchTransformer, PandasToArrowConversion
            from pyspark.sql.types import StructField, StructType
        except ImportError:
            self.enabled = False
            return
        from dbstruct.spark import spark_schema
        from dbstruct.spark._result_column import return_type

        self.enabled = True
        self._to_pandas = ArrowBatchTransformer.to_pandas
        self._to_arrow = PandasToArrowConversion.convert
        self._schema = StructType(
            [StructField("_0", return_type(spark_schema(User), include_status))]
        )
        #: CPU of this thread spent in the two conversions (a part of the worker's)
        self.cpu = 0.0

    def batches(self, values: list[str], size: int) -> list[Any]:
        """The input as Spark sends it: Arrow record batches, or Series without pyspark."""
        chunks = [values[i : i + size] for i in range(0, len(values), size)]
        if not self.enabled:
            return [pd.Series(c, dtype=object) for c in chunks]
        import pyarrow as pa

        return [pa.RecordBatch.from_pydict({"text": pa.array(c, pa.string())}) for c in chunks]

    def read(self, batches: list[Any]) -> Iterator[Any]:
        for batch in batches:
            if not self.enabled:
                yield batch
                continue
            started = time.thread_time()
            (series,) = self._to_pandas(
                batch,
                timezone="UTC",
                struct_in_pandas="dict",
                ndarray_as_list=False,
                prefer_int_ext_dtype=False,
                df_for_struct=True,
            )
            self.cpu += time.thread_time() - started
            yield series

    def write(self, frame: pd.DataFrame) -> Any:
        if not self.enabled:
            return frame
        started = time.thread_time()
        batch = self._to_arrow(
            [frame],
            self._schema,
            timezone="UTC",
            safecheck=True,
            arrow_cast=True,
            prefers_large_types=False,
            assign_cols_by_name=True,
            int_to_decimal_coercion_enabled=False,
        )
        self.cpu += time.thread_time() - started
        return batch


# ---------------------------------------------------------------- the three clients


def worker_spec(emu: Emulator, concurrency: int, include_status: bool) -> UdfSpec:
    """What ``structured_udf(User, f"databricks/{ENDPOINT}", PROMPT, concurrency=...)`` ships."""
    return UdfSpec(
        id=f"bench-worker-cpu-{uuid.uuid4().hex}",
        name="extract_user",
        response_model=User,
        model=f"databricks/{ENDPOINT}",
        prompt=build_prompt(PROMPT),
        mode=Mode.TOOLS,
        include_status=include_status,
        strict=False,
        credentials=Credentials.from_token(emu.base_url, emu.token),
        settings=WorkerSettings(concurrency=concurrency),
    )


async def _loop_thread_cpu() -> float:
    return time.thread_time()


def run_worker(spec: UdfSpec, values: list[str], batch_rows: int) -> dict[str, float]:
    """One partition through run_partition: CPU per row, in all and by thread."""
    sides = ArrowSides(spec.include_status)
    batches = sides.batches(values, batch_rows)
    loop = _worker._runtime().loop
    loop_before = loop.run(_loop_thread_cpu())
    wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    rows = valued = 0
    first = "value" if spec.include_status else next(iter(User.model_fields))
    for frame in _worker.run_partition(spec, sides.read(batches)):
        sides.write(frame)
        rows += len(frame)
        valued += int(frame[first].notna().sum())
    main = time.thread_time() - main
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    loop_cpu = loop.run(_loop_thread_cpu()) - loop_before
    assert rows == len(values), (rows, len(values))
    n = len(values)
    return {
        "cpu": cpu / n,
        "spark_thread": main / n,
        "arrow": sides.cpu / n if sides.enabled else float("nan"),
        "loop_thread": loop_cpu / n,
        "rows_per_s": n / wall,
        "valued": valued / n,  # rows with a value: 1.0 unless rows failed
    }


def run_raw(emu: Emulator, values: list[str], concurrency: int, validate: bool) -> dict[str, float]:
    """The bare AsyncOpenAI client, the same bodies and concurrency: CPU per request."""
    target = ResponseTarget.of(User)

    async def main() -> dict[str, float]:
        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
            max_connections=concurrency, max_keepalive_connections=concurrency
        )
        client = openai.AsyncOpenAI(
            base_url=emu.base_url,
            api_key=emu.token,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )
        sem = asyncio.Semaphore(concurrency)

        async def one(text: str) -> None:
            messages = [{"role": "user", "content": PROMPT.format(text=text)}]
            body = chat_request(Mode.TOOLS, target, messages, {}, ENDPOINT)
            async with sem:
                completion = await client.chat.completions.create(**body)
            if validate:
                call = completion.choices[0].message.tool_calls[0]
                User.model_validate_json(call.function.arguments)

        await one("warm up the connection")
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(t) for t in values))
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
        await client.close()
        return {"cpu": cpu / len(values), "rows_per_s": len(values) / wall}

    return asyncio.run(main())


def measure(
    rows: int = 3000,
    latency: float = 0.1,
    concurrency: int = 32,
    batch_rows: int = 1000,
    rounds: int = 2,
    include_status: bool = False,
) -> dict[str, Any]:
    """Each of the three, ``rounds`` times interleaved; the best round (least CPU) of each."""
    runs: dict[str, list[dict[str, float]]] = {"worker": [], "openai": [], "openai+validate": []}
    with Emulator.spawn(token="dapi-bench", latency=latency, seed=1) as emu:
        spec = worker_spec(emu, concurrency, include_status)
        run_worker(spec, texts(4 * concurrency, "warm"), batch_rows)  # loop, client, pool
        for r in range(rounds):
            runs["worker"].append(run_worker(spec, texts(rows, f"w{r}"), batch_rows))
            runs["openai"].append(run_raw(emu, texts(rows, f"o{r}"), concurrency, False))
            runs["openai+validate"].append(run_raw(emu, texts(rows, f"v{r}"), concurrency, True))
        _close_worker()
    best = {name: min(rs, key=lambda x: x["cpu"]) for name, rs in runs.items()}
    return {
        "rows": rows,
        "latency": latency,
        "concurrency": concurrency,
        "batch_rows": batch_rows,
        "rounds": rounds,
        "include_status": include_status,
        "arrow": ArrowSides(include_status).enabled,
        "budget": latency / concurrency,
        "best": best,
        "ratio": best["worker"]["cpu"] / best["openai"]["cpu"],
        "ratio_validate": best["worker"]["cpu"] / best["openai+validate"]["cpu"],
    }


def _close_worker() -> None:
    runtime = _worker._RUNTIME
    if runtime is None:
        return
    for client in runtime.clients.values():
        runtime.loop.run(client.close())
    runtime.loop.stop()
    _worker._RUNTIME = None


def report(r: dict[str, Any]) -> None:
    arrow = "with pyspark's Arrow conversions" if r["arrow"] else "no pyspark: no Arrow sides"
    print(
        f"\nworker CPU per row at k = 1: {r['rows']} rows, latency {r['latency']} s, "
        f"concurrency {r['concurrency']}, batches of {r['batch_rows']}, best of {r['rounds']}; "
        f"{arrow}\n(Python {platform.python_version()}, openai {openai.__version__}, "
        f"{os.cpu_count()} cpus; budget at the limit: {r['budget'] * 1e3:.2f} ms/row)"
    )
    best = r["best"]
    print(f"{'':<34}{'ms CPU/row':>11}{'rows/s':>9}")
    labels = {
        "worker": "dbstruct worker (run_partition)",
        "openai": "raw openai.AsyncOpenAI",
        "openai+validate": "raw openai + model_validate_json",
    }
    for name, label in labels.items():
        print(f"{label:<34}{best[name]['cpu'] * 1e3:>11.3f}{best[name]['rows_per_s']:>9.0f}")
    w = best["worker"]
    if w["valued"] < 1.0:
        print(f"  (only {w['valued']:.1%} of the worker's rows got a value: rows failed)")
    print(
        f"  of the worker's: Spark's thread {w['spark_thread'] * 1e3:.3f} ms"
        + (f" (Arrow conversions {w['arrow'] * 1e3:.3f})" if r["arrow"] else "")
        + f", event loop thread {w['loop_thread'] * 1e3:.3f} ms"
    )
    print(f"\n{'ratio':<34}{'':>11}")
    print(f"{'dbstruct worker / raw openai':<34}{r['ratio']:>11.2f}")
    print(f"{'dbstruct worker / openai+validate':<34}{r['ratio_validate']:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000, help="rows per run")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-rows", type=int, default=1000, help="Arrow batch size")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--include-status", action="store_true")
    args = parser.parse_args()
    report(
        measure(
            args.rows,
            args.latency,
            args.concurrency,
            args.batch_rows,
            args.rounds,
            args.include_status,
        )
    )


if __name__ == "__main__":
    main()

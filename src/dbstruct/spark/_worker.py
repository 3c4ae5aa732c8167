"""The executor side of a structured UDF: one client and event loop per Python worker.

Spark runs an iterator pandas UDF once per partition (task), in a Python worker process that
is reused across tasks (``spark.python.worker.reuse``, on by default). The event loop (in a
daemon thread) and one async client per UDF (with its HTTP connection pool) live in a
module-level cache here, so they are built on the first batch a process sees and reused for
every later batch and task; never per batch or per row. (An iterator UDF is the form meant
for state initialized once and reused over batches: https://docs.databricks.com/udf/pandas.html)
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from dbstruct._many import PackCollector
from dbstruct._packing import PackRow
from dbstruct._rate_control import worker_limiter
from dbstruct.errors import ConfigurationError
from dbstruct.evidence import with_evidence
from dbstruct.spark._prompt import Rendered, as_messages
from dbstruct.spark._request_window import LoopThread, Request, stream
from dbstruct.spark._result_column import RowResult, describe_error, frame
from dbstruct.spark._udf_spec import UdfSpec
from dbstruct.tracing import flush as flush_traces
from dbstruct.worker_settings import CONCURRENCY_RANGE

__all__ = ["run_partition"]

logger = logging.getLogger("dbstruct.spark")

_MAX_CLIENTS = 8  # UDFs whose clients a worker keeps; older ones are closed
_LOGGED_FAILURES = 5  # per task, beyond which failures are only counted


class _Runtime:
    """The process's event loop and its clients, one per UDF spec id (LRU)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = LoopThread("dbstruct-udf-loop")
        self.clients: OrderedDict[str, Any] = OrderedDict()
        self.collectors: dict[str, PackCollector] = {}

    def client(self, spec: UdfSpec) -> Any:
        client = self.clients.get(spec.id)
        if client is None:
            client = self.loop.run(_open_client(spec))
            self.clients[spec.id] = client
            while len(self.clients) > _MAX_CLIENTS:
                old_id, old = self.clients.popitem(last=False)
                self.collectors.pop(old_id, None)
                self.loop.submit(old.close())
        self.clients.move_to_end(spec.id)
        return client

    def collector(self, spec: UdfSpec, client: Any) -> PackCollector:
        """The worker's packer for ``spec`` (built on the loop: it owns a semaphore)."""
        collector = self.collectors.get(spec.id)
        if collector is None:
            collector = self.loop.run(_open_collector(spec, client))
            self.collectors[spec.id] = collector
        return collector


_LOCK = threading.Lock()
_RUNTIME: _Runtime | None = None


def _runtime() -> _Runtime:
    global _RUNTIME
    with _LOCK:
        # a forked child must not reuse its parent's loop thread (threads do not survive fork)
        if _RUNTIME is None or _RUNTIME.pid != os.getpid() or not _RUNTIME.loop.alive:
            _RUNTIME = _Runtime()
        return _RUNTIME


async def _open_client(spec: UdfSpec) -> Any:
    """The worker's client for ``spec``, built from its settings: retries, timeouts, a pool
    of ``pool_size`` connections, and the limiter (one per client, so it sees every attempt
    the worker makes for this UDF across batches and tasks)."""
    # built inside the loop so its connection pool belongs to this loop
    client = spec.open_client(async_client=True)
    client.limiter = worker_limiter(spec.settings)
    client.tracer = spec.tracer  # None: this UDF's rows are not traced
    return client


async def _open_collector(spec: UdfSpec, client: Any) -> PackCollector:
    settings = spec.settings
    return PackCollector(
        client, spec.request_model, settings.rows_per_request, settings.concurrency
    )


def run_partition(spec: UdfSpec, batches: Iterator[Any]) -> Iterator[pd.DataFrame]:
    """The body of the pandas UDF: Series batches in, struct DataFrames out, same rows."""
    runtime = _runtime()
    settings = spec.settings
    packing = settings.rows_per_request > 1
    with _LOCK:
        client = runtime.client(spec)
        collector = runtime.collector(spec, client) if packing else None
    tally = _Tally(spec)

    async def call(payload: tuple[Rendered | PackRow, str]) -> RowResult:
        row, source = payload
        if isinstance(row, PackRow):
            assert collector is not None
            outcome = await collector.extract(row)
        else:
            outcome = await client.extract(
                response_model=spec.request_model, messages=as_messages(row)
            )
        result = RowResult.of(outcome)
        if spec.evidence and result.value is not None:
            return replace(result, value=with_evidence(result.value, spec.response_model, source))
        return result

    requests = (_requests(spec, columns, packing) for columns in batches)
    # rows in flight: enough to fill `concurrency` packs of `rows_per_request`
    in_flight = min(settings.concurrency * settings.rows_per_request, CONCURRENCY_RANGE[1])
    outputs = stream(
        requests,
        call,
        loop=runtime.loop,
        concurrency=in_flight,
        buffer_rows=max(settings.read_ahead_rows, 2 * in_flight),
        share=RowResult.shared,
    )
    try:
        for results in outputs:
            tally.check(results)
            yield frame(spec.output_model, results, spec.include_status)
    finally:
        outputs.close()  # Spark may stop early (LIMIT): cancel what is still in flight
    tally.summary()
    flush_traces(spec.tracer)  # MLflow writes traces in the background: wait for this task's


def _requests(spec: UdfSpec, columns: Any, packing: bool) -> list[Request | None]:
    """One request per row; None for rows whose values are all null or blank. Packed: a
    :class:`PackRow` where the row can share a request (else its rendered messages)."""
    series: Sequence[Any] = columns if isinstance(columns, tuple) else (columns,)
    for position, s in enumerate(series, start=1):
        _check_strings(spec.name, position, s)
    out: list[Request | None] = []
    for values in zip(*(s.tolist() for s in series), strict=True):
        texts = [v if isinstance(v, str) else None for v in values]
        if all(t is None or not t.strip() for t in texts):
            out.append(None)
            continue
        row: Rendered | PackRow | None = spec.prompt.pack_row(texts) if packing else None
        if row is None:
            row = spec.prompt.render(texts)
        # the text a row's quotes are searched in (evidence): its values, newline-joined
        source = "\n".join(t for t in texts if t is not None)
        out.append(Request(key=row, payload=(row, source)))
    return out


def _check_strings(name: str, position: int, column: Any) -> None:
    """Structured UDFs read text: refuse other column types before anything is sent."""
    if isinstance(column, pd.DataFrame):
        found = "struct"
    elif column.dtype != object and not pd.api.types.is_string_dtype(column.dtype):
        found = str(column.dtype)
    else:
        bad = next((v for v in column if not _is_text_or_null(v)), None)
        if bad is None:
            return
        found = type(bad).__name__
    raise ConfigurationError(
        f"{name}: input column {position} holds {found} values, not strings; structured UDFs "
        f"read text: cast the column first, e.g. F.col('...').cast('string')"
    )


def _is_text_or_null(value: Any) -> bool:
    if value is None or value is pd.NA or isinstance(value, str):
        return True
    return isinstance(value, float) and math.isnan(value)


class _Tally:
    """Counts failed rows of one task; logs a few (redacted), or raises with strict=True."""

    def __init__(self, spec: UdfSpec) -> None:
        self.spec = spec
        self.rows = 0
        self.failed = 0

    def check(self, results: Sequence[RowResult | None]) -> None:
        self.rows += len(results)
        for result in results:
            if result is None or result.error is None:
                continue
            self.failed += 1
            if self.spec.strict:
                logger.error(
                    "%s: a row failed and strict=True: %s",
                    self.spec.name,
                    describe_error(result.error),
                )
                raise result.error
            if self.failed <= _LOGGED_FAILURES and not self.spec.include_status:
                logger.warning(
                    "%s: row failed after %d attempt(s), its fields are null: %s",
                    self.spec.name,
                    result.attempts,
                    describe_error(result.error),
                )

    def summary(self) -> None:
        if self.failed:
            logger.warning(
                "%s: %d of %d row(s) in this task failed%s",
                self.spec.name,
                self.failed,
                self.rows,
                "" if self.spec.include_status else " (null fields; include_status=True shows why)",
            )

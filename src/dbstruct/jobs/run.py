"""``run_job``: extract a response model from every source row, resumably, in chunks.

    from dbstruct.jobs import load_config, run_job

    summary = run_job(spark, load_config("conf/tickets.yml"))
    print(summary.to_text())

The steps: check that the target holds no answers from elsewhere (the emulator, another
workspace or endpoint: :mod:`dbstruct.jobs._origin`), settle the target (one row per id,
after a crash), find the ids still to do (not in the target; with ``retry_failed`` also
those whose row failed), split them into chunks of about ``chunk_rows`` by a hash of the
id, and commit each chunk with one write.
A killed run loses at most the chunks in flight; the next run does only what is missing.
With a ``budget:`` the chunks are sized to what is left of it, and the run stops before the
rows that would not fit (:mod:`dbstruct.jobs._budget`).
See :mod:`dbstruct.jobs._targets` for how each format keeps each id exactly once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dbstruct.auth import Credentials
from dbstruct.errors import BudgetReachedError, ConfigurationError, JobStoppedError
from dbstruct.jobs._budget import BudgetPlan, plan_budget
from dbstruct.jobs._cache import JobCache, has_value, open_job_cache, udf_inputs
from dbstruct.jobs._credentials import job_credentials
from dbstruct.jobs._mlflow_run import JobRun, job_run
from dbstruct.jobs._origin import (
    answers_fingerprint,
    claim_target,
    job_origin,
    record_provenance,
)
from dbstruct.jobs._progress import BudgetOutcome, ChunkStats, JobSummary, Progress
from dbstruct.jobs._secrets import resolve_references
from dbstruct.jobs._source import read_source
from dbstruct.jobs._targets import Target, batch_name, open_target
from dbstruct.jobs.conf import STATUS_COLUMNS, JobConfig, build_udf

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from dbstruct.spark import StructuredUDF

__all__ = ["pending_rows", "run_job", "shape_output"]

logger = logging.getLogger("dbstruct.jobs")


def run_job(
    spark: SparkSession,
    conf: JobConfig,
    *,
    credentials: Credentials | None = None,
    dbutils: Any = None,
    environ: Mapping[str, str] | None = None,
    only: DataFrame | None = None,
) -> JobSummary:
    """Run a job file against ``spark``; the summary of this run.

    >>> summary = run_job(spark, load_config("conf/demo.yml"))
    >>> summary.processed, summary.failed, summary.exit_code

    ``credentials`` replaces the job file's (tests, notebooks); ``dbutils`` reads
    ``{{secrets/...}}`` references (found automatically on Databricks); ``environ`` is
    where ``{{env:...}}`` references are looked up (default ``os.environ``); ``only``
    (a DataFrame with the id column) restricts the run to those ids.

    With a ``budget:``, raises :class:`~dbstruct.errors.ConfigurationError` before anything is
    sent when the budget is below one row's estimate, and
    :class:`~dbstruct.errors.BudgetReachedError` (its ``summary`` set) when the rows left
    would not fit what is left of it.

    With ``mlflow:`` in the job file, the run is an MLflow run (:mod:`._mlflow_run`).
    """
    with job_run(conf) as mlflow_run:
        summary = _run_job(spark, conf, credentials, dbutils, environ, only, mlflow_run)
        if mlflow_run is not None:
            mlflow_run.finished(summary)
        return summary


def _run_job(
    spark: SparkSession,
    conf: JobConfig,
    credentials: Credentials | None,
    dbutils: Any,
    environ: Mapping[str, str] | None,
    only: DataFrame | None,
    mlflow_run: JobRun | None,
) -> JobSummary:
    started = time.monotonic()
    emulated = conf.emulator is not None and credentials is None
    target = open_target(spark, conf.target, conf.source.id_column)
    if conf.retry_failed and not target.supports_retry():
        raise ConfigurationError(
            f"retry_failed: {target.where} is a Parquet table, where failed rows cannot be "
            "replaced; write to a Delta table or a path"
        )
    with job_credentials(conf, credentials, dbutils=dbutils, environ=environ) as creds:
        local = conf.local_model is not None and credentials is None
        origin = job_origin(conf, creds, emulated=emulated, local=local)
        claim_target(target, origin, conf)
        udf = build_udf(conf, creds)
        options = {
            key: resolve_references(
                value, f"source.options.{key}", dbutils=dbutils, environ=environ
            )
            for key, value in conf.source.options.items()
        }
        source = read_source(spark, conf.source, options)
        empty = shape_output(source.limit(0), udf, conf, batch_name(0, 0))
        pending, source_rows = _prepare(conf, target, source, empty)
        if only is not None:
            id_column = conf.source.id_column
            pending = pending.join(only.select(id_column), id_column, "left_semi")
        todo = pending.count()
        budget = plan_budget(conf, pending, todo) if conf.budget is not None else None
        if conf.target.mode == "overwrite":  # only now: a budget refused leaves it as it was
            logger.info("target.mode overwrite: clearing %s", target.where)
            target.replace(empty)
        elif not target.exists():
            target.replace(empty)  # made now, so that its origin can be recorded
        run = target.next_run()
        record_provenance(target, origin, run, answers_fingerprint(conf, origin))
        summary = _Summary(conf, target, source_rows, todo, started, run, origin, emulated, budget)
        try:
            done = _process(
                conf, target, pending, udf, run, todo, open_job_cache(spark, conf, source), budget,
                mlflow_run,
            )  # fmt: skip
        except JobStoppedError as e:
            e.summary = summary.of(e.done, stopped=isinstance(e, BudgetReachedError))
            raise
        if conf.retry_failed or target.supports_retry():
            target.settle()  # retried ids (and resent refused rows) keep their newest row
    logger.info("job %r done: %d processed, %d failed", conf.name, done.rows, done.failed)
    return summary.of(done)


class _Summary:
    """The summary of a run, once its counts are known."""

    def __init__(
        self,
        conf: JobConfig,
        target: Target,
        source_rows: int,
        todo: int,
        started: float,
        run: int,
        origin: str,
        emulated: bool,
        budget: BudgetPlan | None,
    ) -> None:
        self.conf, self.target, self.source_rows, self.todo = conf, target, source_rows, todo
        self.started, self.run, self.emulated, self.budget = started, run, emulated, budget
        self.origin = origin

    def of(self, done: ChunkStats, *, stopped: bool = False) -> JobSummary:
        conf, plan = self.conf, self.budget
        outcome: BudgetOutcome | None = None
        if plan is not None:
            outcome = plan.outcome(done, stopped=stopped)
        return JobSummary(
            name=conf.name,
            target=self.target.where,
            target_format=self.target.format,
            model=conf.model,
            source_rows=self.source_rows,
            skipped=self.source_rows - self.todo,
            chunks=math.ceil(self.todo / conf.chunk_rows) if plan is None else plan.chunks,
            done=done,
            wall_seconds=time.monotonic() - self.started,
            max_error_rate=conf.max_error_rate,
            run_id=f"r{self.run:05d}",
            emulated=self.emulated,
            origin=self.origin,
            price=conf.price,
            budget=outcome,
        )


def _prepare(
    conf: JobConfig, target: Target, source: DataFrame, empty: DataFrame
) -> tuple[DataFrame, int]:
    """Settle the target; the source rows still to do, and the source's size."""
    source_rows = source.count()
    if conf.target.mode == "overwrite" or not target.exists():  # cleared by the caller
        return source, source_rows
    _check_schema(target, empty)
    removed = target.settle()
    if removed:
        logger.info(
            "%s: removed %d superseded row(s) left by an earlier run", target.where, removed
        )
    return pending_rows(conf, target, source), source_rows


def pending_rows(conf: JobConfig, target: Target, source: DataFrame) -> DataFrame:
    """The rows of ``source`` a run processes: those whose id is not in the target (with
    ``retry_failed``, also failed ones; refused rows, never answered, are always resent where
    the target can replace them). Reads only: ``dbstruct plan`` calls it on a target a run
    would settle first, which changes which row of an id counts, not which ids are done."""
    if conf.target.mode == "overwrite" or not target.exists():
        return source
    done = target.read()
    if conf.retry_failed:
        done = done.where(done["error"].isNull())
    elif target.supports_retry():  # refused rows were never answered (nor billed): resend
        done = done.where(done["error"].isNull() | ~_refused(done["error"]))
    return source.join(done.select(conf.source.id_column), conf.source.id_column, "left_anti")


def _process(
    conf: JobConfig,
    target: Target,
    pending: DataFrame,
    udf: StructuredUDF,
    run: int,
    todo: int,
    cache: JobCache | None = None,
    budget: BudgetPlan | None = None,
    mlflow_run: JobRun | None = None,
) -> ChunkStats:
    """Commit ``pending`` in chunks; the counts of what was committed. With a ``cache``,
    rows answered before are not sent, and each chunk's successes are stored once committed.
    With a ``budget``, each chunk is sized to what is left of it."""
    from pyspark.sql import functions as F

    if budget is not None:
        logger.info(
            "job %r: %d row(s) to process, in chunks of up to %d sized to the budget, into "
            "%s (%s), run r%05d",
            conf.name, todo, conf.chunk_rows, target.where, target.format, run,
        )  # fmt: skip
        progress = Progress(todo, None, price=conf.price)
        progress.on_chunk = None if mlflow_run is None else mlflow_run.chunk_done
        while (buckets := budget.next_chunk(progress.done)) is not None:
            rows = budget.rows(pending, buckets)
            _commit(conf, target, rows, udf, run, cache, progress, budget.chunks - 1, None)
        return progress.done
    chunks = math.ceil(todo / conf.chunk_rows)
    logger.info(
        "job %r: %d row(s) to process in %d chunk(s) of ~%d into %s (%s), run r%05d",
        conf.name, todo, chunks, conf.chunk_rows, target.where, target.format, run,
    )  # fmt: skip
    progress = Progress(todo, chunks, price=conf.price)
    progress.on_chunk = None if mlflow_run is None else mlflow_run.chunk_done
    id_col = F.col(conf.source.id_column)
    for chunk in range(chunks):
        rows = pending.where(F.pmod(F.xxhash64(id_col), F.lit(chunks)) == chunk)
        _commit(conf, target, rows, udf, run, cache, progress, chunk, chunks)
    return progress.done


def _commit(
    conf: JobConfig,
    target: Target,
    rows: DataFrame,
    udf: StructuredUDF,
    run: int,
    cache: JobCache | None,
    progress: Progress,
    chunk: int,
    chunks: int | None,
) -> None:
    """Send and commit one chunk's rows; stop the run if the endpoint refused them."""
    batch = batch_name(run, chunk)
    out = shape_output(rows.repartition(conf.partitions), udf, conf, batch, cache)
    target.append(out, batch)
    if cache is not None:
        cache.record(target, batch, udf)
    stats = _batch_stats(target, batch, conf)
    if stats.failed:
        _stop_if_refused(target, batch, stats, progress, chunk, chunks)
    progress.chunk_done(stats)


# Errors that say the endpoint refuses these credentials or this endpoint name: every later
# row would be refused too (the client then fails them unsent), and none was billed.
_REFUSALS = ("AuthenticationError", "PermissionDeniedError", "EndpointNotFoundError")


def _refused(error: Column) -> Column:
    from functools import reduce

    return reduce(lambda a, b: a | b, (error.startswith(name) for name in _REFUSALS))


def _stop_if_refused(
    target: Target,
    batch: str,
    stats: ChunkStats,
    progress: Progress,
    chunk: int,
    chunks: int | None,
) -> None:
    """Stop after a chunk in which the endpoint refused rows, rather than go on to fail every
    remaining row (an expired notebook token, a revoked permission, a deleted endpoint).

    Refused rows were not billed: a rerun sends them again, with the ids not done yet. A
    chunk refused entirely is removed where the target allows, so nothing of it is kept.
    """
    from pyspark.sql import functions as F

    rows = target.read().where((F.col("batch") == batch) & _refused(F.col("error")))
    found = rows.agg(F.count(F.lit(1)), F.first("error")).first()
    refused, error = (int(found[0]), str(found[1])) if found is not None else (0, "")
    if refused == 0:
        return
    everything = refused == stats.rows - stats.empty - stats.cached
    if everything and target.discard(batch):
        kept = "nothing of this chunk was kept"
    else:
        progress.chunk_done(stats)
        if target.supports_retry():
            kept = f"{refused:,} refused row(s) will be sent again by the next run"
        else:
            kept = f"{refused:,} refused row(s) stay failed ({target.where} is append-only)"
    of = f" of {chunks}" if chunks else ""
    where = "the first chunk" if chunk == 0 and everything else f"chunk {chunk + 1}{of}"
    raise JobStoppedError(
        f"the endpoint refused {'every row of' if everything else 'rows in'} {where} "
        f"({error[:400]}); stopped early, {kept}. Check the credentials and the model name, "
        "then rerun: rows already answered are not sent again. Tokens from a notebook or a "
        "user expire: for long jobs use a service principal (OAuth M2M).",
        done=progress.done,
    )


def shape_output(
    rows: DataFrame,
    udf: StructuredUDF,
    conf: JobConfig,
    batch: str,
    cache: JobCache | None = None,
) -> DataFrame:
    """The target's columns: id, kept columns, the result (struct or flattened), status,
    ``batch`` and ``processed_at``. The UDF runs once per row, when this is written; with a
    ``cache``, only for rows whose answer is not in it (hits have ``attempts = 0``)."""
    from pyspark.sql import functions as F

    src = conf.source
    if cache is None:
        args, named = udf_inputs(udf, src.text_columns)
        status_column = udf(*args, **named)
    else:
        rows = cache.extract(rows, udf, output="_dbstruct_status")
        status_column = F.col("_dbstruct_status")
    staged = rows.select(src.id_column, *src.keep_columns, status_column.alias("_dbstruct"))
    value = F.col("_dbstruct.value")
    if conf.target.output == "struct":
        result = [value.alias(conf.target.result_column)]
    else:
        names = udf.schema["value"].dataType.fieldNames()  # type: ignore[attr-defined]
        result = [value.getField(n).alias(n) for n in names]
    status = [F.col(f"_dbstruct.{name}").alias(name) for name in STATUS_COLUMNS]
    return staged.select(
        src.id_column,
        *src.keep_columns,
        *result,
        *status,
        F.lit(batch).alias("batch"),
        F.current_timestamp().alias("processed_at"),
    )


def _check_schema(target: Target, empty: DataFrame) -> None:
    """Refuse to append rows of another shape (the response model or output changed)."""
    have = {f.name: f.dataType.simpleString() for f in target.read().schema.fields}
    want = {f.name: f.dataType.simpleString() for f in empty.schema.fields}
    if have == want:
        return
    diff = sorted(
        f"{n}: {have.get(n, 'missing')} in the target, {want.get(n, 'not written')} now"
        for n in set(have) | set(want)
        if have.get(n) != want.get(n)
    )
    raise ConfigurationError(
        f"target: {target.where} has other columns than this job writes ({'; '.join(diff)}); "
        "use target.mode: overwrite to start over, or another target"
    )


def _batch_stats(target: Target, batch: str, conf: JobConfig) -> ChunkStats:
    from pyspark.sql import functions as F

    t = target.read().where(F.col("batch") == batch)
    ok = t["error"].isNull() & (t["attempts"] > 0)
    unsent = (t["attempts"] == 0) & t["error"].isNull()
    # nothing sent and a value: a cache hit; nothing sent and no value: no text
    answered = has_value(t, conf)
    row = t.agg(
        F.count(F.lit(1)),
        F.sum(F.when(ok, 1).otherwise(0)),
        F.sum(F.when(t["error"].isNotNull(), 1).otherwise(0)),
        F.sum(F.when(unsent & ~answered, 1).otherwise(0)),
        F.sum("prompt_tokens"),
        F.sum("completion_tokens"),
        F.sum(F.when(unsent & answered, 1).otherwise(0)),
    ).first()
    return ChunkStats(*(int(v or 0) for v in (row or ())))

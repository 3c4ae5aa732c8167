"""A job's ``cache:`` section: rows answered before (by any job using the same table) are
not sent again, and each committed chunk's successes are stored for the next run.

    cache = open_job_cache(spark, conf, source)  # None without a cache section
    out = shape_output(rows, udf, conf, batch, cache)  # hits never reach the UDF
    target.append(out, batch)
    cache.record(target, batch, udf)                # from the committed rows, read back

The target keeps its columns (no key column): a hit is a row with ``attempts = 0``, no
error and a value. To store a committed row, its key is computed again from the source's
text for its id; ids are assumed to keep their text during a run, as resuming assumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

from dbstruct.jobs.conf import JOB_COLUMNS, STATUS_COLUMNS, JobConfig

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from dbstruct.jobs._targets import Target
    from dbstruct.spark import StructuredUDF, TableCache

__all__ = ["JobCache", "has_value", "open_job_cache", "udf_inputs"]

logger = logging.getLogger("dbstruct.jobs")


def open_job_cache(spark: SparkSession, conf: JobConfig, source: DataFrame) -> JobCache | None:
    """The job's cache table (created if missing), or None without a ``cache:`` section."""
    if conf.cache is None:
        return None
    from dbstruct.spark import TableCache

    table = TableCache(
        spark, table=conf.cache.table, path=conf.cache.path, format=conf.cache.format
    )
    logger.info("job %r: response cache %s (%s)", conf.name, table.where, table.format)
    return JobCache(table, source, conf)


def udf_inputs(udf: StructuredUDF, columns: list[str]) -> tuple[list[Column], dict[str, Any]]:
    """The UDF's arguments: placeholders named after the text columns take them by name;
    else in order (the columns by name are Columns; Any: they go to ``**named``)."""
    from pyspark.sql import functions as F

    names = getattr(udf.spec.prompt, "names", ())
    if set(names) == set(columns):
        return [], {name: F.col(name) for name in columns}
    return [F.col(name) for name in columns], {}


def has_value(rows: DataFrame, conf: JobConfig) -> Column:
    """Whether a target row holds an answer: its result struct, or (flattened) any field.

    A flattened answer whose every field is null cannot be told from no answer."""
    from pyspark.sql import functions as F

    if conf.target.output == "struct":
        return rows[conf.target.result_column].isNotNull()
    src = conf.source
    taken = {src.id_column, *src.keep_columns, *STATUS_COLUMNS, *JOB_COLUMNS}
    fields = [rows[f"`{c}`"].isNotNull() for c in rows.columns if c not in taken]
    return reduce(lambda a, b: a | b, fields, F.lit(False))


@dataclass(frozen=True)
class JobCache:
    """A :class:`~dbstruct.spark.TableCache` with what the job knows: its source and conf."""

    table: TableCache
    source: DataFrame
    conf: JobConfig

    def extract(self, rows: DataFrame, udf: StructuredUDF, output: str) -> DataFrame:
        """``rows`` plus ``output``, the status struct: hits from the table, misses sent."""
        args, named = udf_inputs(udf, self.conf.source.text_columns)
        return self.table.extract(rows, udf, *args, output=output, **named)

    def record(self, target: Target, batch: str, udf: StructuredUDF) -> None:
        """Store the successes ``batch`` committed to ``target`` (read back from it)."""
        from pyspark.sql import functions as F

        id_column = self.conf.source.id_column
        rows = target.read().where(F.col("batch") == batch)
        ok = rows.where(rows["error"].isNull() & (rows["attempts"] > 0))
        args, named = udf_inputs(udf, self.conf.source.text_columns)
        keys = self.source.join(ok.select(id_column), id_column, "left_semi").select(
            id_column, self.table.key(udf, *args, **named).alias("_key")
        )
        status = F.struct(
            _value(rows, self.conf, udf).alias("value"),
            *(F.col(name) for name in ("error", "attempts", "prompt_tokens", "completion_tokens")),
        )
        committed = ok.join(keys, id_column).select("_key", status.alias("_status"))
        self.table.record(committed, udf, key="_key", result="_status")


def _value(rows: DataFrame, conf: JobConfig, udf: StructuredUDF) -> Any:
    """The answer of a target row as the UDF's value struct, whether flattened or not."""
    from pyspark.sql import functions as F

    if conf.target.output == "struct":
        return F.col(f"`{conf.target.result_column}`")
    names = udf.schema["value"].dataType.fieldNames()  # type: ignore[attr-defined]
    return F.struct(*(rows[f"`{n}`"] for n in names))

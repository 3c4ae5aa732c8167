"""The job's source (what to read) and the bundled sample of support tickets.

The sample's DataFrame names its columns as ``conf/tickets.yml`` reads them
(``customer_id``; the file says ``customer``), so ``source.seed_from_sample: tickets``
makes a table that job file reads as it is.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from dbstruct.errors import ConfigurationError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from dbstruct.jobs.conf import SourceConfig

__all__ = ["SAMPLES", "read_sample", "read_source", "sample_rows", "seed_table"]

logger = logging.getLogger("dbstruct.jobs")

#: bundled samples: name -> (file in dbstruct/data, Spark schema)
SAMPLES = {
    "tickets": (
        "tickets.jsonl",
        "ticket_id string, created_at string, channel string, customer_id string, plan string, "
        "language string, subject string, body string",
    ),
}
#: a sample file's field -> its DataFrame column
_RENAMED = {"customer": "customer_id"}


def sample_rows(name: str) -> list[dict[str, Any]]:
    """The rows of a bundled sample (``scripts/make_sample.py`` wrote them)."""
    filename, _ = SAMPLES[name]
    text = resources.files("dbstruct").joinpath(f"data/{filename}").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_sample(spark: SparkSession, name: str) -> DataFrame:
    """A bundled sample as a DataFrame, built on the driver (works on Spark Connect too,
    where the server cannot read files inside this process's installed package)."""
    import pandas as pd
    from pyspark.sql import functions as F

    _, schema = SAMPLES[name]
    columns = [part.split()[0] for part in schema.split(",")]
    rows = [{_RENAMED.get(k, k): v for k, v in row.items()} for row in sample_rows(name)]
    frame = pd.DataFrame(rows, columns=columns)
    df = spark.createDataFrame(frame, schema=schema)
    if "created_at" in columns:
        df = df.withColumn("created_at", F.col("created_at").cast("timestamp"))
    return df


def seed_table(spark: SparkSession, table: str, sample: str) -> bool:
    """Write a bundled sample into ``table`` if there is no such table; whether it did.

    An existing table is left as it is, whatever it holds (``mode("ignore")``: a job
    started twice at once does not write it twice).
    """
    if spark.catalog.tableExists(table):
        return False
    df = read_sample(spark, sample)
    df.write.mode("ignore").saveAsTable(table)
    logger.info("source.seed_from_sample: created %s from the bundled sample %r", table, sample)
    return True


def read_source(
    spark: SparkSession, conf: SourceConfig, options: dict[str, str] | None = None
) -> DataFrame:
    """The source's id, text and kept columns: filtered, one row per non-null id.

    ``options`` replaces ``conf.options`` (the reader options with references resolved).
    """
    from pyspark.sql import functions as F

    if conf.sample is not None:
        df = read_sample(spark, conf.sample)
    elif conf.table is not None:
        if conf.seed_from_sample is not None:
            seed_table(spark, conf.table, conf.seed_from_sample)
        df = spark.read.table(conf.table)
    else:
        options = dict(conf.options if options is None else options)
        if conf.format == "csv":
            options.setdefault("header", "true")
        df = spark.read.format(conf.format or "parquet").options(**options).load(conf.path)
    _check_columns(df, conf)
    if conf.where:
        df = df.where(conf.where)
    wanted = [conf.id_column, *conf.text_columns, *conf.keep_columns]
    df = df.select(*wanted).where(F.col(conf.id_column).isNotNull())
    df = df.dropDuplicates([conf.id_column])
    if conf.limit is not None:
        # ordered, so a rerun (resume) sees the same rows
        df = df.orderBy(conf.id_column).limit(conf.limit)
    return df


def _check_columns(df: DataFrame, conf: SourceConfig) -> None:
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    where = conf.describe()
    for key, names in (
        ("id_column", [conf.id_column]),
        ("text_columns", conf.text_columns),
        ("keep_columns", conf.keep_columns),
    ):
        missing = [n for n in names if n not in types]
        if missing:
            raise ConfigurationError(
                f"source.{key}: no column {', '.join(map(repr, missing))} in {where}; "
                f"it has {', '.join(types)}"
            )
    for name in conf.text_columns:
        if types[name] != "string":
            raise ConfigurationError(
                f"source.text_columns: {name!r} is {types[name]}, not string; the model reads "
                f"text (cast it in a view, or select a string column)"
            )
    if types[conf.id_column].startswith(("struct", "array", "map")):
        raise ConfigurationError(
            f"source.id_column: {conf.id_column!r} is {types[conf.id_column]}; use a column of "
            "an atomic type (string, bigint, ...)"
        )

"""The job's source: a table, a path or the bundled sample, checked and filtered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbstruct.errors import ConfigurationError
from dbstruct.jobs._sample import read_sample, seed_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from dbstruct.jobs.conf import SourceConfig

__all__ = ["read_source"]


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

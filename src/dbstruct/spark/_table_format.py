"""Which format a table has, and whether the session can write Delta.

Shared by :class:`dbstruct.spark.TableCache` and a job's targets, which both pick ``delta``
or ``parquet`` when asked for ``auto``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["delta_available", "table_provider"]


def delta_available(spark: SparkSession) -> bool:
    """Delta on Databricks, or a local session configured with delta-spark's extension."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    try:
        extensions = spark.conf.get("spark.sql.extensions", "") or ""
    except Exception:  # a conf a serverless session refuses to show
        extensions = ""
    return "DeltaSparkSessionExtension" in extensions


def table_provider(spark: SparkSession, table: str) -> str | None:
    """A table's format (``delta``, ``parquet``, ...), or None when there is no such table."""
    if not spark.catalog.tableExists(table):
        return None
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect():
        if str(row[0]).strip() == "Provider":
            return str(row[1]).strip().lower()
    return None

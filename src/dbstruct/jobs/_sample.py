"""The bundled sample of support tickets: its rows, as a DataFrame, or seeded into a table.

The sample's DataFrame names its columns as ``conf/tickets.yml`` reads them
(``customer_id``; the file says ``customer``), so ``source.seed_from_sample: tickets``
makes a table that job file reads as it is.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SAMPLES", "read_sample", "sample_rows", "seed_table"]

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

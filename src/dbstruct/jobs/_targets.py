"""Where results are committed, chunk by chunk, so a rerun resumes and each id ends up once.

Every row carries the ``batch`` that wrote it: ``r<run>-c<chunk>`` (``r00002-c00013``),
ordered by run, then chunk. A chunk is one Spark write: the model is called once per row,
inside that write, and nothing is paid twice unless a crash hits the write itself.

A rerun only sends ids that are not in the target yet (with ``retry_failed``, also ids
whose every row failed), so ids are never duplicated by new work. Retried ids do get a
second, newer row; :meth:`Target.settle` then deletes the older rows of every id that has
more than one, at the end of the run and (after a crash) at the start of the next:

* Delta (table or path): a ``MERGE ... WHEN MATCHED THEN DELETE`` whose source is the
  target itself, so it is deterministic. The model is never called inside a MERGE: MERGE
  reads its source twice, and a nondeterministic source may give different rows each time
  (https://docs.databricks.com/aws/en/delta/merge, "Delta Lake merge operations typically
  require two passes over the source data").
* Parquet path: each chunk is a directory ``<path>/batch=<batch>/`` (a partition column).
  A directory holding older rows is rewritten without them as ``<batch>-v001`` and then
  removed; if a crash leaves both, the complete newer version wins (:meth:`_repair`).
* Parquet table (no Delta; local sessions): append only, ``retry_failed`` is refused.

A target also records where its answers come from (its origin) and, per run, the fingerprint
of the run's configuration (:mod:`dbstruct.jobs._origin`): table properties
(``dbstruct.origin``, ``dbstruct.config.r00002``) or files beside a Parquet directory's
batches (``_dbstruct_origin``, ``_dbstruct_configs.json``).
"""

from __future__ import annotations

import abc
import json
import logging
import os
import re
import shutil
from collections import defaultdict
from typing import TYPE_CHECKING

from dbstruct.errors import ConfigurationError
from dbstruct.spark._table_format import delta_available, table_provider

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from dbstruct.jobs.conf import TargetConfig

__all__ = [
    "CONFIG_FILE",
    "CONFIG_PROPERTY",
    "ORIGIN_FILE",
    "ORIGIN_PROPERTY",
    "Target",
    "batch_name",
    "batch_run",
    "open_target",
]

logger = logging.getLogger("dbstruct.jobs")

_BATCH = re.compile(r"r(\d+)-c(\d+)(?:-v(\d+))?")


def batch_name(run: int, chunk: int) -> str:
    return f"r{run:05d}-c{chunk:05d}"


def batch_run(batch: Column) -> Column:
    """The run number in a ``batch`` column (``r00002-c00013`` -> 2)."""
    from pyspark.sql import functions as F

    return F.regexp_extract(batch, r"^r(\d+)-c", 1).cast("int")


def _next_run(batches: list[str]) -> int:
    runs = [int(m.group(1)) for b in batches if (m := _BATCH.fullmatch(b))]
    return max(runs, default=0) + 1


class Target(abc.ABC):
    """A table or path the job appends chunks to."""

    format: str

    def __init__(self, spark: SparkSession, id_column: str, where: str) -> None:
        self.spark = spark
        self.id_column = id_column
        self.where = where

    @abc.abstractmethod
    def exists(self) -> bool: ...

    @abc.abstractmethod
    def read(self) -> DataFrame:
        """Every committed row, with its ``batch`` column."""

    @abc.abstractmethod
    def append(self, df: DataFrame, batch: str) -> None:
        """Commit one chunk (``df`` has a ``batch`` column equal to ``batch``)."""

    @abc.abstractmethod
    def replace(self, empty: DataFrame) -> None:
        """Start over: no rows, the schema of ``empty`` (``mode: overwrite``)."""

    @abc.abstractmethod
    def settle(self) -> int:
        """Leave one row per id (the newest); the number of rows removed."""

    def discard(self, batch: str) -> bool:
        """Remove a committed batch; whether this target can (append-only tables cannot)."""
        return False

    def next_run(self) -> int:
        if not self.exists():
            return 1
        rows = self.read().select("batch").distinct().collect()
        return _next_run([str(r[0]) for r in rows])

    def supports_retry(self) -> bool:
        return True

    @abc.abstractmethod
    def origin(self) -> str | None:
        """What answered the rows (:mod:`dbstruct.jobs._origin`), as recorded; None if not."""

    @abc.abstractmethod
    def record_origin(self, origin: str) -> None:
        """Record what answers the rows; the target exists (:meth:`replace` made it)."""

    @abc.abstractmethod
    def run_configs(self) -> dict[int, str]:
        """The fingerprint of each run's configuration, by run number, as recorded."""

    @abc.abstractmethod
    def record_run_config(self, run: int, fingerprint: str) -> None:
        """Record run ``run``'s fingerprint; the target exists (:meth:`replace` made it)."""

    def _superseded(self) -> DataFrame:
        """(id, batch) of rows that a newer row of the same id replaces."""
        from pyspark.sql import functions as F

        t = self.read()
        latest = (
            t.groupBy(self.id_column)
            .agg(F.max("batch").alias("_latest"), F.count(F.lit(1)).alias("_n"))
            .where(F.col("_n") > 1)
        )
        stale = t.join(latest, self.id_column).where(F.col("batch") < F.col("_latest"))
        return stale.select(self.id_column, "batch")


#: the table property holding a table target's origin
ORIGIN_PROPERTY = "dbstruct.origin"
#: the file holding a Parquet path target's origin (``_``: Spark's readers skip it)
ORIGIN_FILE = "_dbstruct_origin"
#: the prefix of the table properties holding each run's fingerprint (+ ``r00002``)
CONFIG_PROPERTY = "dbstruct.config."
#: the file holding a Parquet path target's fingerprints, ``{"2": "<fingerprint>", ...}``
CONFIG_FILE = "_dbstruct_configs.json"


class _TableTarget(Target):
    """A catalog table (or a Delta path): its origin and runs' fingerprints are table
    properties of ``sql_name``."""

    sql_name: str

    def _properties(self) -> dict[str, str]:
        rows = self.spark.sql(f"SHOW TBLPROPERTIES {self.sql_name}").collect()
        return {str(row[0]): str(row[1]) for row in rows}

    def _set_property(self, key: str, value: str) -> None:
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        self.spark.sql(f"ALTER TABLE {self.sql_name} SET TBLPROPERTIES ('{key}' = '{quoted}')")

    def origin(self) -> str | None:
        return self._properties().get(ORIGIN_PROPERTY) if self.exists() else None

    def record_origin(self, origin: str) -> None:
        self._set_property(ORIGIN_PROPERTY, origin)

    def run_configs(self) -> dict[int, str]:
        if not self.exists():
            return {}
        found = {}
        for key, value in self._properties().items():
            match = re.fullmatch(re.escape(CONFIG_PROPERTY) + r"r(\d+)", key)
            if match:
                found[int(match.group(1))] = value
        return found

    def record_run_config(self, run: int, fingerprint: str) -> None:
        self._set_property(f"{CONFIG_PROPERTY}r{run:05d}", fingerprint)


# ---------------------------------------------------------------- Delta


class DeltaTarget(_TableTarget):
    format = "delta"

    def __init__(
        self, spark: SparkSession, id_column: str, *, table: str | None, path: str | None
    ) -> None:
        super().__init__(spark, id_column, table or str(path))
        self.table, self.path = table, path
        self.sql_name = table or f"delta.`{path}`"

    def exists(self) -> bool:
        if self.table is not None:
            return bool(self.spark.catalog.tableExists(self.table))
        try:
            self.spark.read.format("delta").load(self.path).schema  # noqa: B018
        except Exception:  # AnalysisException (classic or Connect): not a Delta table (yet)
            return False
        return True

    def read(self) -> DataFrame:
        if self.table is not None:
            return self.spark.read.table(self.table)
        return self.spark.read.format("delta").load(self.path)

    def append(self, df: DataFrame, batch: str) -> None:
        writer = df.write.format("delta").mode("append")
        writer.saveAsTable(self.table) if self.table else writer.save(self.path)

    def replace(self, empty: DataFrame) -> None:
        writer = empty.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        writer.saveAsTable(self.table) if self.table else writer.save(self.path)

    def discard(self, batch: str) -> bool:
        self.spark.sql(f"DELETE FROM {self.sql_name} WHERE batch = '{batch}'")
        return True

    def settle(self) -> int:
        if not self.exists():
            return 0
        stale = self._superseded().count()
        if stale:
            key = f"`{self.id_column}`"
            self.spark.sql(
                f"MERGE INTO {self.sql_name} AS t USING ("
                f"SELECT {key} AS _id, max(batch) AS _latest FROM {self.sql_name} "
                f"GROUP BY {key} HAVING count(*) > 1) AS s "
                f"ON t.{key} = s._id AND t.batch < s._latest WHEN MATCHED THEN DELETE"
            )
        return stale


# ---------------------------------------------------------------- Parquet table


class ParquetTableTarget(_TableTarget):
    """A non-Delta catalog table (local sessions without delta-spark): append only."""

    format = "parquet"

    def __init__(self, spark: SparkSession, id_column: str, table: str) -> None:
        super().__init__(spark, id_column, table)
        self.table = self.sql_name = table

    def exists(self) -> bool:
        return bool(self.spark.catalog.tableExists(self.table))

    def read(self) -> DataFrame:
        return self.spark.read.table(self.table)

    def append(self, df: DataFrame, batch: str) -> None:
        df.write.format("parquet").mode("append").saveAsTable(self.table)

    def replace(self, empty: DataFrame) -> None:
        empty.write.format("parquet").mode("overwrite").saveAsTable(self.table)

    def settle(self) -> int:
        return 0  # only retries make duplicates, and they are refused here

    def supports_retry(self) -> bool:
        return False


# ---------------------------------------------------------------- Parquet path


class ParquetPathTarget(Target):
    """A directory of ``batch=<batch>`` partitions, managed with the driver's file system."""

    format = "parquet"

    def __init__(self, spark: SparkSession, id_column: str, path: str) -> None:
        super().__init__(spark, id_column, path)
        self.local, self.uri = _local_paths(path)
        self._check_foreign_files()

    def _check_foreign_files(self) -> None:
        if not os.path.isdir(self.local):
            return
        foreign = [n for n in os.listdir(self.local) if not _ours(n)]
        if foreign:
            raise ConfigurationError(
                f"target.path: {self.where} holds files dbstruct did not write "
                f"({', '.join(sorted(foreign)[:3])}); choose a new or empty directory"
            )

    def _dirs(self) -> list[str]:
        """The batch names of the partition directories, complete or not."""
        if not os.path.isdir(self.local):
            return []
        names = os.listdir(self.local)
        return sorted(n[len("batch=") :] for n in names if n.startswith("batch="))

    def _dir(self, batch: str, *, uri: bool) -> str:
        return f"{self.uri if uri else self.local}/batch={batch}"

    def exists(self) -> bool:
        for batch in self._dirs():
            folder = self._dir(batch, uri=False)
            if any(n.endswith(".parquet") for n in os.listdir(folder)):
                return True
        return False

    def read(self) -> DataFrame:
        return self.spark.read.parquet(self.uri)

    def append(self, df: DataFrame, batch: str) -> None:
        # overwrite: a directory of this name can only be a crashed attempt's leftover
        df.drop("batch").write.mode("overwrite").parquet(self._dir(batch, uri=True))

    def replace(self, empty: DataFrame) -> None:
        for batch in self._dirs():
            shutil.rmtree(self._dir(batch, uri=False))

    def next_run(self) -> int:
        return _next_run(self._dirs())

    def discard(self, batch: str) -> bool:
        shutil.rmtree(self._dir(batch, uri=False))
        return True

    def origin(self) -> str | None:
        try:
            with open(os.path.join(self.local, ORIGIN_FILE), encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def record_origin(self, origin: str) -> None:
        os.makedirs(self.local, exist_ok=True)
        with open(os.path.join(self.local, ORIGIN_FILE), "w", encoding="utf-8") as f:
            f.write(origin + "\n")

    def run_configs(self) -> dict[int, str]:
        try:
            with open(os.path.join(self.local, CONFIG_FILE), encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError:  # a torn write: no run's rows can be told apart
            logger.warning("%s: %s is not JSON; ignored", self.where, CONFIG_FILE)
            return {}
        return {int(run): str(fp) for run, fp in data.items()}

    def record_run_config(self, run: int, fingerprint: str) -> None:
        configs = {**self.run_configs(), run: fingerprint}
        os.makedirs(self.local, exist_ok=True)
        path = os.path.join(self.local, CONFIG_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump({str(k): v for k, v in sorted(configs.items())}, f)
        os.replace(path + ".tmp", path)

    def settle(self) -> int:
        self._repair()
        removed = 0
        while self.exists():
            stale = self._superseded()
            batches = [str(r[0]) for r in stale.select("batch").distinct().collect()]
            if not batches:
                break
            batch = min(batches)
            losers = stale.where(stale["batch"] == batch).select(self.id_column)
            removed += self._rewrite_without(batch, losers)
        return removed

    def _rewrite_without(self, batch: str, losers: DataFrame) -> int:
        """Write ``batch`` minus ``losers`` as its next version, then delete ``batch``."""
        rows = self.spark.read.parquet(self._dir(batch, uri=True))
        kept = rows.join(losers, self.id_column, "left_anti")
        base, version = _split(batch)
        newer = f"{base}-v{version + 1:03d}"  # zero-padded: versions sort as strings
        kept.write.mode("overwrite").parquet(self._dir(newer, uri=True))
        removed = rows.count() - self.spark.read.parquet(self._dir(newer, uri=True)).count()
        shutil.rmtree(self._dir(batch, uri=False))
        logger.info(
            "%s: batch %s rewritten as %s, %d older row(s) left out",
            self.where,
            batch,
            newer,
            removed,
        )
        return removed

    def _repair(self) -> None:
        """After a crash mid-rewrite: keep one version of each batch, the newest complete one."""
        versions: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for batch in self._dirs():
            base, version = _split(batch)
            versions[base].append((version, batch))
        for found in versions.values():
            if len(found) < 2:
                continue
            complete = [v for v, b in found if v == 0 or self._committed(b)]
            keep = max(complete) if complete else max(v for v, _ in found)
            for version, batch in found:
                if version != keep:
                    logger.info(
                        "%s: removing batch %s (superseded or incomplete)", self.where, batch
                    )
                    shutil.rmtree(self._dir(batch, uri=False))

    def _committed(self, batch: str) -> bool:
        return os.path.exists(os.path.join(self._dir(batch, uri=False), "_SUCCESS"))


def _ours(name: str) -> bool:
    return name.startswith(("batch=", "_", "."))


def _split(batch: str) -> tuple[str, int]:
    match = _BATCH.fullmatch(batch)
    if match is None:
        return batch, 0
    return f"r{match.group(1)}-c{match.group(2)}", int(match.group(3) or 0)


def _local_paths(path: str) -> tuple[str, str]:
    """(the driver's path, Spark's path) of a Parquet target directory.

    The job manages partition directories with the driver's file system, so the directory
    must be one the driver sees: a local path, or on Databricks a Unity Catalog volume
    (``/Volumes/...``, mounted on the driver). Object storage needs Delta.
    """
    if path.startswith("dbfs:/Volumes/"):
        path = path[len("dbfs:") :]
    if path.startswith("/Volumes/"):
        return path.rstrip("/"), path.rstrip("/")
    if re.match(r"^[A-Za-z][\w+.-]*:", path) and not path.startswith("file:"):
        raise ConfigurationError(
            f"target.path: {path!r} is not a local path; Parquet targets must be local (or a "
            "/Volumes/... path on Databricks): use target.format: delta for object storage"
        )
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        raise ConfigurationError(
            f"target.path: {path!r}: on Databricks a Parquet target must be under /Volumes/; "
            "or use target.format: delta"
        )
    local = os.path.abspath(path.removeprefix("file://").removeprefix("file:"))
    return local, f"file://{local}"


# ---------------------------------------------------------------- choosing


def open_target(spark: SparkSession, conf: TargetConfig, id_column: str) -> Target:
    """The target the job file names, in the format it asks for or ``auto`` picks."""
    if conf.table is not None:
        provider = table_provider(spark, conf.table)
        fmt: str = conf.format
        if fmt == "auto":
            fmt = provider or ("delta" if delta_available(spark) else "parquet")
        if provider is not None and provider != fmt:
            raise ConfigurationError(
                f"target.format: {conf.table} is a {provider} table, not {fmt}"
            )
        if fmt == "delta":
            return DeltaTarget(spark, id_column, table=conf.table, path=None)
        return ParquetTableTarget(spark, id_column, conf.table)
    path = str(conf.path)
    fmt = str(conf.format)
    if fmt == "auto":
        local = path.removeprefix("file:")
        is_delta = os.path.isdir(os.path.join(local, "_delta_log"))
        fmt = "delta" if is_delta or delta_available(spark) else "parquet"
    if fmt == "delta":
        return DeltaTarget(spark, id_column, table=None, path=path)
    return ParquetPathTarget(spark, id_column, path)

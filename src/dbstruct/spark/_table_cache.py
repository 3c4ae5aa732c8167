"""A response cache in a table, for jobs and clusters: rows answered before are not sent again.

    cache = TableCache(spark, table="main.llm.answers")  # or path="/Volumes/main/llm/answers"
    out = cache.extract(df, extract_user, "text")         # df + `result`, the status struct
    out.write.saveAsTable("main.crm.users")
    cache.record(spark.read.table("main.crm.users").join(keys, "id"), extract_user)

The key of a row is the key :class:`dbstruct.cache.DiskCache` stores the same request under
(:func:`dbstruct.cache.request_key`: endpoint, mode, compiled schema, messages, parameters),
computed in Spark by a pandas UDF that sends nothing. :meth:`TableCache.extract` joins the rows
with the table on that key, sends only the misses through the structured UDF, and gives hits
their stored value (``attempts = 0``, no tokens, no error). :meth:`TableCache.record` adds the
successes of rows already *committed* (read back, never re-evaluated: an LLM answer is not
deterministic) whose keys are not in the table yet.

The table holds ``key, answer, prompt_tokens, completion_tokens, endpoint, created_at``; the
answer is the value as JSON (``to_json``), read back with ``from_json`` and the UDF's value
type, so one table serves every response model. A changed model, prompt or parameter changes
the key: old entries become misses, never wrong values. Delta where the session has it,
Parquet otherwise; concurrent writers may add the same key twice, and reads keep one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Tuple  # noqa: UP035  (pyspark reads typing.Tuple hints)

from pydantic import BaseModel

from dbstruct.cache import request_key
from dbstruct.errors import ConfigurationError
from dbstruct.modes import Mode
from dbstruct.providers import parse_model, provider_parameters
from dbstruct.spark import _result_column
from dbstruct.spark._prompt import Prompt, as_messages
from dbstruct.spark._table_format import delta_available, table_provider

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

    from dbstruct.spark._udf import StructuredUDF

__all__ = ["CACHE_SCHEMA", "KeySpec", "TableCache", "key_spec", "row_key"]

logger = logging.getLogger("dbstruct.spark")

#: the cache table's columns, whatever the response model
CACHE_SCHEMA = (
    "key string, answer string, prompt_tokens bigint, completion_tokens bigint, "
    "endpoint string, created_at timestamp"
)
# to_json keeps milliseconds by default; a stored timestamp must come back to the microsecond
_JSON_OPTIONS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}
_KEY = "_dbstruct_cache_key"
_ANSWER = "_dbstruct_cache_answer"
_ENTRY = "_dbstruct_cache_entry"


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeySpec:
    """What the key UDF needs on an executor: the request's parts, no credentials."""

    name: str
    response_model: type[BaseModel]
    prompt: Prompt
    mode: Mode
    endpoint: str
    defaults: tuple[tuple[str, Any], ...]


def key_spec(udf: StructuredUDF) -> KeySpec:
    """The key recipe of ``udf``'s requests: its endpoint, and the request fields its
    executors' clients send with every request (``from_provider``'s own options aside)."""
    spec = udf.spec
    options = set(provider_parameters())
    defaults = tuple((k, v) for k, v in spec.client_options if k not in options)
    endpoint = parse_model(spec.model)
    return KeySpec(spec.name, spec.request_model, spec.prompt, spec.mode, endpoint, defaults)


def row_key(spec: KeySpec, values: Sequence[Any]) -> str | None:
    """The cache key of one row's input values; None when all are null or blank, as the
    UDF sends nothing for such a row (:func:`dbstruct.spark._worker._requests`).

    >>> row_key(key_spec(extract_user), ["jason is 25"])
    '3f1c...'
    """
    texts = [v if isinstance(v, str) else None for v in values]
    if all(t is None or not t.strip() for t in texts):
        return None
    messages = as_messages(spec.prompt.render(texts))
    return request_key(spec.mode, spec.response_model, messages, dict(spec.defaults), spec.endpoint)


def _key_function(spec: KeySpec, arity: int) -> Any:
    """The pandas UDF body: batches of input Series to a Series of keys (hex or null)."""

    def keys(batches: Iterator[Any]) -> Iterator[pd.Series]:
        import pandas as pd

        for batch in batches:
            series = batch if isinstance(batch, tuple) else (batch,)
            seen: dict[tuple[Any, ...], str | None] = {}  # repeated texts: hash once
            out = []
            for values in zip(*(s.tolist() for s in series), strict=True):
                if values not in seen:
                    seen[values] = row_key(spec, values)
                out.append(seen[values])
            yield pd.Series(out, dtype=object)

    import pandas as pd

    args: Any = pd.Series if arity == 1 else Tuple[(pd.Series,) * arity]  # noqa: UP006
    keys.__annotations__ = {"batches": Iterator[args], "return": Iterator[pd.Series]}
    keys.__name__ = keys.__qualname__ = f"{spec.name}_cache_key"
    return keys


# ---------------------------------------------------------------- the table


class TableCache:
    """Validated answers in a Delta or Parquet table, shared by every job and cluster.

    >>> cache = TableCache(spark, table="main.llm.answers")
    >>> out = cache.extract(df, extract_user, "text", key_column="key")
    >>> out.write.saveAsTable("main.crm.users")
    >>> cache.record(spark.read.table("main.crm.users"), extract_user, key="key")

    ``format`` is ``auto`` (an existing table's own format; else Delta when the session has
    it, Parquet otherwise), ``delta`` or ``parquet``. A missing table is created, empty.
    """

    def __init__(
        self,
        spark: SparkSession,
        *,
        table: str | None = None,
        path: str | os.PathLike[str] | None = None,
        format: str = "auto",
    ) -> None:
        if (table is None) == (path is None):
            raise ConfigurationError("TableCache: give exactly one of table= or path=")
        if format not in ("auto", "delta", "parquet"):
            raise ConfigurationError(f"TableCache: format must be auto, delta or parquet: {format}")
        self.spark = spark
        self.table = table
        self.path = None if path is None else os.fspath(path)
        self.where = table or str(self.path)
        self.format = _choose_format(spark, table, self.path, format)
        self._keys: dict[str, tuple[KeySpec, dict[int, Any]]] = {}
        if not self._exists():
            self._create()
        self._check_columns()

    def __repr__(self) -> str:
        return f"TableCache({self.where!r}, format={self.format!r})"

    # ---- reading

    def read(self) -> DataFrame:
        """Every stored entry (a key written twice by concurrent jobs shows twice)."""
        if self.table is not None:
            return self.spark.read.table(self.table)
        return self.spark.read.format(self.format).load(self.path)

    def entries(self) -> DataFrame:
        """One ``(key, answer)`` per key, the newest."""
        from pyspark.sql import functions as F

        t = self.read().where(F.col("key").isNotNull())
        return t.groupBy("key").agg(F.max_by("answer", "created_at").alias("answer"))

    def key(self, udf: StructuredUDF, *columns: Column | str, **named: Column | str) -> Column:
        """The cache key of each row, as ``udf`` would send it (null for blank input).

        >>> df.select("id", cache.key(extract_user, "text").alias("key"))
        """
        spec, udfs = self._key_udfs(udf)
        cols = udf._arrange(columns, named)
        fn = udfs.get(len(cols))
        if fn is None:
            from pyspark.sql.pandas.functions import pandas_udf

            fn = pandas_udf(_key_function(spec, len(cols)), "string")  # type: ignore[call-overload]
            udfs[len(cols)] = fn
        return fn(*cols)  # type: ignore[no-any-return]

    def _key_udfs(self, udf: StructuredUDF) -> tuple[KeySpec, dict[int, Any]]:
        found = self._keys.get(udf.spec.id)
        if found is None:
            found = self._keys[udf.spec.id] = (key_spec(udf), {})
        return found

    # ---- extracting

    def extract(
        self,
        df: DataFrame,
        udf: StructuredUDF,
        *columns: Column | str,
        output: str = "result",
        key_column: str | None = None,
        **named: Column | str,
    ) -> DataFrame:
        """``df`` plus ``output``, the UDF's status struct: hits from the table (no request,
        ``attempts = 0``, no tokens), misses from ``udf``; with ``key_column``, the key too.

        >>> out = cache.extract(df, extract_user, "text")           # columns as for udf(...)
        >>> out = cache.extract(df, extract_title, title="headline", body="text")

        Row order is not kept. The UDF never sees a hit row: the rows are split on the join
        before it, and each part is a separate branch of a union.
        """
        clash = {output, key_column or output} & set(df.columns)
        if clash:
            raise ConfigurationError(f"TableCache.extract: df already has {sorted(clash)}")
        from pyspark.sql import functions as F

        status_udf = _with_status(udf)
        keyed = df.withColumn(_KEY, self.key(udf, *columns, **named))
        stored = self.entries().select(F.col("key").alias(_ENTRY), F.col("answer").alias(_ANSWER))
        joined = keyed.join(stored, F.col(_KEY) == F.col(_ENTRY), "left")
        kept = [F.col(f"`{c}`") for c in df.columns]
        if key_column is not None:
            kept.append(F.col(_KEY).alias(key_column))
        hits = joined.where(F.col(_ANSWER).isNotNull()).select(
            *kept, _hit_status(status_udf.returnType).alias(output)
        )
        misses = joined.where(F.col(_ANSWER).isNull()).select(
            *kept, status_udf(*columns, **named).alias(output)
        )
        return hits.unionByName(misses)

    # ---- recording

    def record(
        self, committed: DataFrame, udf: StructuredUDF, *, key: str = "key", result: str = "result"
    ) -> None:
        """Add the successes in ``committed`` whose keys are not stored yet, one per key.

        ``committed`` must be read back from where the results were written (a table, a
        path), with the key column ``key`` and ``result``, a struct with the status fields
        (``value``, ``error``, ``attempts``, ``prompt_tokens``, ``completion_tokens``).
        Failures, skipped rows and hits (``attempts = 0``) are never added.
        """
        from pyspark.sql import functions as F

        status = F.col(f"`{result}`")
        ok = committed.where(
            F.col(f"`{key}`").isNotNull()
            & status["error"].isNull()
            & (status["attempts"] > 0)
            & status["value"].isNotNull()
        )
        rows = ok.select(
            F.col(f"`{key}`").alias("key"),
            F.to_json(status["value"], _JSON_OPTIONS).alias("answer"),
            status["prompt_tokens"].cast("bigint").alias("prompt_tokens"),
            status["completion_tokens"].cast("bigint").alias("completion_tokens"),
        )
        # rows that shared one request carry 0 tokens: keep the one that paid for the answer
        best = F.max_by(F.struct("answer", "prompt_tokens", "completion_tokens"), "prompt_tokens")
        one = rows.groupBy("key").agg(best.alias("e")).select("key", "e.*")
        fresh = one.join(self.read().select("key"), "key", "left_anti").select(
            "key",
            "answer",
            "prompt_tokens",
            "completion_tokens",
            F.lit(self._key_udfs(udf)[0].endpoint).alias("endpoint"),
            F.current_timestamp().alias("created_at"),
        )
        self._append(fresh)

    # ---- storage

    def _exists(self) -> bool:
        return cache_exists(self.spark, table=self.table, path=self.path, format=self.format)

    def _check_columns(self) -> None:
        """Refuse a table that is not a cache (a mistyped name must not get our rows)."""
        want = [part.split()[0] for part in CACHE_SCHEMA.split(", ")]
        missing = [name for name in want if name not in self.read().columns]
        if missing:
            raise ConfigurationError(
                f"TableCache: {self.where} is not a response cache (no {', '.join(missing)} "
                "column); name a new table or path, or one a TableCache made"
            )

    def _create(self) -> None:
        logger.info("creating the response cache %s (%s)", self.where, self.format)
        self._append(self.spark.createDataFrame([], CACHE_SCHEMA))

    def _append(self, rows: DataFrame) -> None:
        writer = rows.write.format(self.format).mode("append")
        writer.saveAsTable(self.table) if self.table else writer.save(self.path)


def _with_status(udf: StructuredUDF) -> StructuredUDF:
    """``udf`` returning the status struct, whatever ``include_status`` it was built with."""
    if udf.spec.include_status:
        return udf
    from dbstruct.spark._udf import StructuredUDF

    status = _result_column.return_type(udf.returnType, include_status=True)
    return StructuredUDF(replace(udf.spec, include_status=True), status)


def _hit_status(status_type: Any) -> Column:
    """The status struct of a hit: the stored value, no error, no attempt, no tokens."""
    from pyspark.sql import functions as F

    value_type = status_type["value"].dataType
    fields = {
        "value": F.from_json(F.col(_ANSWER), value_type, _JSON_OPTIONS),
        "error": F.lit(None),
        "attempts": F.lit(0),
        "prompt_tokens": F.lit(0),
        "completion_tokens": F.lit(0),
        "latency_ms": F.lit(0.0),
    }
    struct = F.struct(*(fields[name].alias(name) for name in _result_column.STATUS_FIELDS))
    return struct.cast(status_type)


def cache_exists(
    spark: SparkSession,
    *,
    table: str | None = None,
    path: str | os.PathLike[str] | None = None,
    format: str = "auto",
) -> bool:
    """Whether the cache table (or path) holds a table, found without creating it (as
    :class:`TableCache` does; ``dbstruct plan`` reads a job's cache, never creates it)."""
    if table is not None:
        return bool(spark.catalog.tableExists(table))
    local = _local_dir(str(path))
    if local is not None:  # no Spark probe: a missing path makes it log a stack trace
        return os.path.isdir(local) and any(not n.startswith(".") for n in os.listdir(local))
    fmt = format if format != "auto" else _choose_format(spark, None, str(path), format)
    try:
        spark.read.format(fmt).load(str(path)).schema  # noqa: B018  (fails for a missing path)
    except Exception:  # AnalysisException, classic or Connect
        return False
    return True


def _choose_format(spark: SparkSession, table: str | None, path: str | None, fmt: str) -> str:
    found = table_provider(spark, table) if table is not None else _path_format(path)
    if found is not None and fmt not in ("auto", found):
        raise ConfigurationError(f"TableCache: {table or path} is a {found} table, not {fmt}")
    if found is not None:
        return found
    if fmt != "auto":
        return fmt
    return "delta" if delta_available(spark) else "parquet"


def _path_format(path: str | None) -> str | None:
    """``delta`` for a local directory with a ``_delta_log``, ``parquet`` for another local
    directory; unknown for a new or remote path."""
    local = _local_dir(str(path))
    if local is None or not os.path.isdir(local) or not os.listdir(local):
        return None
    return "delta" if os.path.isdir(os.path.join(local, "_delta_log")) else "parquet"


def _local_dir(path: str) -> str | None:
    """The driver's path of a local (or ``file:``) directory; None for remote storage."""
    if path.startswith("file:"):
        return path.removeprefix("file://").removeprefix("file:")
    if "://" in path or path.startswith("dbfs:"):
        return None
    return path

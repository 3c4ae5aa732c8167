"""The column a structured UDF returns: its Spark type, and one pandas batch of it.

Without status the column is ``spark_schema(model)``; a failed or skipped row is a struct of
null fields (a pandas UDF cannot return a null struct, see :mod:`dbstruct.spark._convert`).

With ``include_status=True`` it is::

    struct<value: <model struct>, error: string, attempts: int,
           prompt_tokens: bigint, completion_tokens: bigint, latency_ms: double>

where ``value`` is null (a real null) when the row failed or was skipped, ``error`` is
``"<ErrorClass>: <message>"`` (credentials redacted) or null, and a skipped row (null or
blank input) has ``attempts = 0``. Tokens are counted once per request: rows that shared
an identical row's request have 0 tokens, so ``sum(prompt_tokens)`` is what was billed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dbstruct.errors import DbstructError
from dbstruct.redaction import redact
from dbstruct.spark._convert import to_frame, to_row

if TYPE_CHECKING:
    import pandas as pd
    from pydantic import BaseModel
    from pyspark.sql.types import StructType

__all__ = ["STATUS_FIELDS", "RowResult", "describe_error", "frame", "return_type"]

STATUS_FIELDS = ("value", "error", "attempts", "prompt_tokens", "completion_tokens", "latency_ms")


@dataclass(frozen=True)
class RowResult:
    """What the UDF keeps of an Outcome (not the raw completion, which can be large)."""

    value: Any
    error: DbstructError | None
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float

    @classmethod
    def of(cls, outcome: Any) -> RowResult:
        usage = outcome.usage
        return cls(
            outcome.value,
            outcome.error,
            int(outcome.attempts),
            int(usage.prompt_tokens),
            int(usage.completion_tokens),
            float(outcome.latency_s),
        )

    def shared(self) -> RowResult:
        """The result of a row that rode on an identical row's request: its tokens count once."""
        return replace(self, prompt_tokens=0, completion_tokens=0)


def return_type(value_type: StructType, include_status: bool) -> StructType:
    """The UDF's Spark return type for a model whose struct is ``value_type``.

    Field comments (metadata) are left out: pyspark 3.5's Arrow path drops them from what the
    worker returns and then fails its schema check ("Invalid schema from pandas_udf").
    """
    value_type = _without_metadata(value_type)
    if not include_status:
        return value_type
    from pyspark.sql.types import (
        DoubleType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    return StructType(
        [
            StructField("value", value_type, True),
            StructField("error", StringType(), True),
            StructField("attempts", IntegerType(), True),
            StructField("prompt_tokens", LongType(), True),
            StructField("completion_tokens", LongType(), True),
            StructField("latency_ms", DoubleType(), True),
        ]
    )


def _without_metadata(struct: StructType) -> StructType:
    from pyspark.sql.types import StructType

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "metadata"} | (
                {"metadata": {}} if "metadata" in node else {}
            )
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return StructType.fromJson(strip(struct.jsonValue()))


def frame(
    model: type[BaseModel], results: Sequence[RowResult | None], include_status: bool
) -> pd.DataFrame:
    """One output batch, a row per result in order (``None`` = the row was not sent)."""
    values = [None if r is None or r.error is not None else r.value for r in results]
    if not include_status:
        return to_frame(model, values)
    import pandas as pd

    index = pd.RangeIndex(len(results))
    rows = [to_row(v) if v is not None else None for v in values]
    errors = [None if r is None else describe_error(r.error) for r in results]
    counts = {
        "attempts": [0 if r is None else r.attempts for r in results],
        "prompt_tokens": [0 if r is None else r.prompt_tokens for r in results],
        "completion_tokens": [0 if r is None else r.completion_tokens for r in results],
    }
    columns: dict[str, Any] = {
        "value": pd.Series(rows, index=index, dtype=object),
        "error": pd.Series(errors, index=index, dtype=object),
        **{k: pd.Series(v, index=index, dtype="int64") for k, v in counts.items()},
        "latency_ms": pd.Series(
            [0.0 if r is None else r.latency_s * 1000.0 for r in results],
            index=index,
            dtype="float64",
        ),
    }
    out: pd.DataFrame = pd.DataFrame(columns, index=index)
    return out


def describe_error(error: BaseException | None) -> str | None:
    """``"<ErrorClass>: <message>"`` with credentials redacted; None for no error."""
    return None if error is None else f"{type(error).__name__}: {redact(str(error))}"

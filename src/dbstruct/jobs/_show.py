"""A few rows of a job's target, printed one field a line: every field of the response
model (nested ones as compact JSON), then the row's error.

    ticket_id         TCK-100001
    category          bug
    ...
    order             {"reference": "INV-20431", "amount": null}
    summary           The customer needs the email template fixed.
    error             null
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dbstruct.jobs._progress import JobSummary
    from dbstruct.jobs.conf import JobConfig

__all__ = ["format_records", "show_rows"]

#: longest value printed, in characters (a summary sentence fits)
MAX_WIDTH = 120


def show_rows(spark: SparkSession, conf: JobConfig, summary: JobSummary, n: int) -> None:
    """Print ``n`` rows of the target, this run's when it wrote any, ordered by id."""
    from pyspark.sql import functions as F

    from dbstruct.jobs._targets import open_target

    target = open_target(spark, conf.target, conf.source.id_column)
    if not target.exists():
        return
    rows = target.read()
    if summary.processed:
        rows = rows.where(F.col("batch").startswith(summary.run_id + "-"))
    id_column = conf.source.id_column
    if conf.target.output == "struct":
        rows = rows.select(id_column, f"{conf.target.result_column}.*", "error")
    else:
        fields = conf.response_model_class.model_fields
        rows = rows.select(id_column, *[c for c in rows.columns if c in fields], "error")
    found = [r.asDict(recursive=True) for r in rows.orderBy(id_column).limit(n).collect()]
    if not found:
        return
    which = "written by this run" if summary.processed else "already there"
    print(f"\nA few rows of {target.where} ({len(found)} {which}):\n")
    print(format_records(found, rows.columns))


def format_records(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Records one field a line, aligned, a blank line between records."""
    width = max(map(len, columns), default=0) + 2
    blocks = [
        "\n".join(f"  {name:<{width}}{_text(record.get(name))}" for name in columns)
        for record in records
    ]
    return "\n\n".join(blocks)


def _text(value: Any) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    text = " ".join(text.split())  # one line
    return text if len(text) <= MAX_WIDTH else text[: MAX_WIDTH - 3] + "..."

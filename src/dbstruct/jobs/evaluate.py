"""``evaluate_job``: extract a job's labelled rows with its own settings and score them.

    from dbstruct.jobs import load_config
    from dbstruct.jobs.evaluate import evaluate_job, read_labels

    conf = load_config("conf/demo.yml")
    labels = read_labels("sample:tickets", conf.source.id_column, conf.response_model_class)
    run = evaluate_job(spark, conf, labels)
    print(run.evaluation.fields["category"].metrics["accuracy"])

The rows are the job's source rows (its ``where`` and ``limit`` applied) whose id is
labelled. They are sent through the job's own UDF (:func:`dbstruct.jobs.conf.build_udf`:
its endpoint, prompt, mode, ``rows_per_request``, options) with the job's credentials (the
demo's emulator included), and nothing is written: not to the target, not to the cache
table. The job's target is never read: it does not record which prompt, mode or pack size
its rows were answered with, so its rows could not be said to come from this configuration.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from dbstruct.evaluation import (
    EvaluatedRun,
    LabelError,
    Labels,
    Prediction,
    evidence_rates,
    score,
)
from dbstruct.evaluation import parse_labels as _parse
from dbstruct.evaluation import read_labels_file as _read_file
from dbstruct.jobs._cache import udf_inputs
from dbstruct.jobs._credentials import job_credentials
from dbstruct.jobs._secrets import resolve_references
from dbstruct.jobs._source import read_source
from dbstruct.jobs.conf import build_udf

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dbstruct.auth import Credentials
    from dbstruct.jobs.conf import JobConfig

__all__ = ["SAMPLE_LABELS", "evaluate_job", "is_table_name", "read_labels"]

#: bundled samples' labels: ``--labels sample:<name>`` (scripts/make_sample.py writes them)
SAMPLE_LABELS = {"tickets": "tickets_labels.jsonl"}
_TABLE = re.compile(r"(?:[A-Za-z0-9_]+|`[^`]+`)(?:\.(?:[A-Za-z0-9_]+|`[^`]+`)){2}")


def is_table_name(text: str) -> bool:
    """Whether ``--labels`` names a table (``catalog.schema.table``, and no such file)."""
    return bool(_TABLE.fullmatch(text)) and not Path(text).exists()


def read_labels(
    path_or_table: str,
    id_column: str,
    model: type[BaseModel],
    spark: SparkSession | None = None,
    *,
    free_text: Collection[str] | None = None,
) -> Labels:
    """Labels from ``sample:<name>`` (a bundled sample's), a ``.jsonl``/``.json``, ``.csv`` or
    ``.parquet`` file (or a directory of Parquet files), or a ``catalog.schema.table``
    (read with ``spark``).

    >>> read_labels("sample:tickets", "ticket_id", TicketTriage).fields
    ('category', 'product', 'language', 'order.reference')
    """
    if path_or_table.startswith("sample:"):
        name = path_or_table.removeprefix("sample:")
        if name not in SAMPLE_LABELS:
            raise LabelError(
                f"--labels {path_or_table}: no such sample (samples: {', '.join(SAMPLE_LABELS)})"
            )
        data = resources.files("dbstruct").joinpath(f"data/{SAMPLE_LABELS[name]}")
        with resources.as_file(data) as file:
            labels = _read_file(file, id_column, model, free_text=free_text)
        return Labels(labels.id_column, path_or_table, labels.specs, labels.rows)
    path = Path(path_or_table)
    if path.suffix.lower() == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        return _parse(
            _parquet_rows(path),
            id_column,
            model,
            source=str(path),
            null="unlabelled",
            free_text=free_text,
        )
    if path.suffix.lower() in (".jsonl", ".json", ".csv") or path.exists():
        return _read_file(path, id_column, model, free_text=free_text)
    if is_table_name(path_or_table):
        if spark is None:
            raise LabelError(f"labels {path_or_table}: reading a table needs a Spark session")
        rows = [r.asDict(recursive=True) for r in spark.read.table(path_or_table).collect()]
        return _parse(
            rows, id_column, model, source=path_or_table, null="unlabelled", free_text=free_text
        )
    raise LabelError(
        f"labels {path_or_table}: no such file; expected a .jsonl, .csv or .parquet file, a "
        f"catalog.schema.table, or {' or '.join('sample:' + s for s in SAMPLE_LABELS)}"
    )


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        pq: Any = importlib.import_module("pyarrow.parquet")  # no type stubs
    except ImportError:
        raise LabelError(
            f"labels {path}: reading Parquet needs pyarrow: pip install 'dbstruct[spark]'"
        ) from None
    try:
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:
        raise LabelError(f"labels {path}: cannot read it as Parquet ({e})") from None
    return rows


def evaluate_job(
    spark: SparkSession,
    conf: JobConfig,
    labels: Labels,
    *,
    name: str | None = None,
    credentials: Credentials | None = None,
    dbutils: Any = None,
    environ: Mapping[str, str] | None = None,
) -> EvaluatedRun:
    """Send the source rows whose id is labelled through the job's UDF and score them.

    ``name`` names the run (default: the job's name); ``credentials``, ``dbutils`` and
    ``environ`` as in :func:`dbstruct.jobs.run_job`. Writes nothing.
    """
    from pyspark.sql import functions as F

    src = conf.source
    options = {
        key: resolve_references(value, f"source.options.{key}", dbutils=dbutils, environ=environ)
        for key, value in conf.source.options.items()
    }
    source = read_source(spark, src, options)
    wanted = spark.createDataFrame([(i,) for i in labels.rows], "_dbstruct_label_id string")
    key = source[src.id_column].cast("string") == wanted["_dbstruct_label_id"]
    rows = source.join(F.broadcast(wanted), key, "left_semi")
    emulated = conf.emulator is not None and credentials is None
    with job_credentials(conf, credentials, dbutils=dbutils, environ=environ) as creds:
        udf = build_udf(conf, creds)
        args, named = udf_inputs(udf, src.text_columns)
        out = rows.repartition(conf.partitions).select(
            F.col(src.id_column).cast("string").alias("id"), udf(*args, **named).alias("s")
        )
        collected = out.select(
            "id", "s.value", "s.error", "s.prompt_tokens", "s.completion_tokens"
        ).collect()
    predictions: dict[str, Prediction] = {}
    prompt = completion = 0
    for row in collected:
        value = row["value"].asDict(recursive=True) if row["value"] is not None else None
        error = row["error"] or (None if value is not None else "no answer (the row has no text)")
        predictions[row["id"]] = Prediction(value, error)
        prompt += int(row["prompt_tokens"] or 0)
        completion += int(row["completion_tokens"] or 0)
    scored = labels.restrict(predictions)
    if not scored.rows:
        raise LabelError(
            f"labels {labels.source}: none of its {len(labels.rows):,} ids is in the source "
            f"({src.describe()}, {src.id_column}); check the id column, source.where and "
            "source.limit"
        )
    where = (
        "the job file's local emulator, whose answers are made up" if emulated else "the endpoint"
    )
    price = conf.price
    return EvaluatedRun(
        name=name or conf.name,
        evaluation=score(scored, predictions),
        how=f"sent to {conf.model} ({where})",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=None if price is None else price.cost_usd(prompt, completion),
        labels_not_in_source=len(labels.rows) - len(scored.rows),
        evidence=evidence_rates({i: p.value for i, p in predictions.items() if i in scored.rows}),
    )

"""``evaluate_job``: extract a job's labelled rows with its own settings and score them.

    from dbstruct.jobs import load_config
    from dbstruct.jobs.evaluate import evaluate_job, read_labels

    conf = load_config("conf/demo.yml")
    labels = read_labels("sample:tickets", conf.source.id_column, conf.response_model_class)
    run = evaluate_job(spark, conf, labels)
    print(run.evaluation.fields["category"].metrics["accuracy"])

The rows are the job's source rows (its ``where`` and ``limit`` applied) whose id is
labelled. Where the job's target already holds a row's answer from a run with this very
configuration (the same origin, endpoint, response model, prompt, mode, ``rows_per_request``,
``evidence``, ``max_retries`` and options: :func:`dbstruct.jobs._origin.answers_fingerprint`,
recorded by each run), that answer is read, with the tokens it cost; the other rows are sent
through the job's own UDF (:func:`dbstruct.jobs.conf.build_udf`) with the job's credentials
(the demo's emulator included). ``fresh=True`` (``--fresh``) sends every row. The result
says which it did (:attr:`EvaluatedRun.how`, ``rows_read_from_target``). Nothing is written:
not to the target, not to the cache table.

``evaluate_target`` scores only what the target holds, sending nothing: ``dbstruct run``
prints it after a run of a job file with ``evaluate: {labels: ...}``.
"""

from __future__ import annotations

import functools
import importlib
import operator
import re
from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

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
from dbstruct.jobs._origin import answers_fingerprint, describe_origin, job_origin
from dbstruct.jobs._secrets import resolve_references
from dbstruct.jobs._source import read_source
from dbstruct.jobs._targets import batch_run, open_target
from dbstruct.jobs.conf import JOB_COLUMNS, STATUS_COLUMNS, build_udf

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from dbstruct.auth import Credentials
    from dbstruct.jobs.conf import JobConfig

__all__ = ["SAMPLE_LABELS", "evaluate_job", "evaluate_target", "is_table_name", "read_labels"]

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
    fresh: bool = False,
) -> EvaluatedRun:
    """Score the source rows whose id is labelled: answers the job's target holds for this
    configuration are read, the others sent through the job's UDF (all of them with
    ``fresh``).

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
    wanted = _ids(spark, labels.rows)
    rows = source.join(
        F.broadcast(wanted), source[src.id_column].cast("string") == wanted[0], "left_semi"
    )
    emulated = conf.emulator is not None and credentials is None
    local = conf.local_model is not None and credentials is None
    with job_credentials(conf, credentials, dbutils=dbutils, environ=environ) as creds:
        udf = build_udf(conf, creds)
        origin = job_origin(conf, creds, emulated=emulated, local=local)
        labelled = rows.select(F.col(src.id_column).cast("string"))
        stored = None if fresh else _stored(spark, conf, origin, labelled)
        if stored is not None:
            read = _ids(spark, [r[0] for r in stored.rows])
            done = rows[src.id_column].cast("string") == read[0]
            rows = rows.join(F.broadcast(read), done, "left_anti")
        args, named = udf_inputs(udf, src.text_columns)
        out = rows.repartition(conf.partitions).select(
            F.col(src.id_column).cast("string").alias("id"), udf(*args, **named).alias("s")
        )
        sent = out.select(
            "id", "s.value", "s.error", "s.prompt_tokens", "s.completion_tokens"
        ).collect()
    run = _scored(
        conf,
        labels,
        [*sent, *(stored.rows if stored else [])],
        name=name,
        how=_how(conf, emulated, len(sent), stored),
        read=0 if stored is None else len(stored.rows),
    )
    if run is None:
        raise LabelError(
            f"labels {labels.source}: none of its {len(labels.rows):,} ids is in the source "
            f"({src.describe()}, {src.id_column}); check the id column, source.where and "
            "source.limit"
        )
    return run


def evaluate_target(
    spark: SparkSession, conf: JobConfig, labels: Labels, origin: str, *, name: str | None = None
) -> EvaluatedRun | None:
    """Score the labelled rows the job's target holds from runs with this configuration whose
    answers came from ``origin`` (:attr:`dbstruct.jobs.JobSummary.origin`); sends nothing.
    None when it holds none (``dbstruct run`` with ``evaluate:`` in the job file)."""
    stored = _stored(spark, conf, origin, _ids(spark, labels.rows))
    if stored is None:
        return None
    how = _how(conf, False, 0, stored)
    return _scored(
        conf, labels, stored.rows, name=name, how=how, read=len(stored.rows), scope="target"
    )


def _ids(spark: SparkSession, ids: Collection[str]) -> DataFrame:
    return spark.createDataFrame([(i,) for i in ids], "_dbstruct_id string")


def _scored(
    conf: JobConfig,
    labels: Labels,
    answers: list[Any],
    *,
    name: str | None,
    how: str,
    read: int,
    scope: str = "source",
) -> EvaluatedRun | None:
    """The scores of ``answers``: (id, value, error, prompt_tokens, completion_tokens) rows;
    None when none of them is labelled."""
    predictions: dict[str, Prediction] = {}
    prompt = completion = 0
    for row in answers:
        value = row[1].asDict(recursive=True) if row[1] is not None else None
        error = row[2] or (None if value is not None else "no answer (the row has no text)")
        predictions[row[0]] = Prediction(value, error)
        prompt += int(row[3] or 0)
        completion += int(row[4] or 0)
    scored = labels.restrict(predictions)
    if not scored.rows:
        return None
    price = conf.price
    return EvaluatedRun(
        name=name or conf.name,
        evaluation=score(scored, predictions),
        how=how,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=None if price is None else price.cost_usd(prompt, completion),
        labels_not_in_source=len(labels.rows) - len(scored.rows),
        evidence=evidence_rates({i: p.value for i, p in predictions.items() if i in scored.rows}),
        read_from_target=read,
        label_scope=scope,
    )


class _Stored(NamedTuple):
    """Rows read from the job's target: (id, value, error, prompt_tokens, completion_tokens,
    run), from ``where``, written by ``runs`` with answers from ``origin``."""

    rows: list[Any]
    where: str
    runs: list[int]
    origin: str


def _stored(spark: SparkSession, conf: JobConfig, origin: str, ids: DataFrame) -> _Stored | None:
    """The newest target row of each id in ``ids`` (a DataFrame of one string column), where
    a run with this configuration wrote it; None when there is none."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    id_column = conf.source.id_column
    target = open_target(spark, conf.target, id_column)
    if not target.exists():
        return None
    fingerprint = answers_fingerprint(conf, origin)
    runs = sorted(run for run, fp in target.run_configs().items() if fp == fingerprint)
    if not runs:
        return None
    t = target.read()
    columns = t.columns
    newest = F.row_number().over(Window.partitionBy(id_column).orderBy(F.col("batch").desc()))
    t = t.withColumn("_dbstruct_n", newest).where(F.col("_dbstruct_n") == 1)
    t = t.where(batch_run(F.col("batch")).isin(runs))
    wanted = ids.select(ids[0].alias("_dbstruct_wanted"))
    t = t.join(wanted, t[id_column].cast("string") == wanted[0], "left_semi")
    if conf.target.output == "struct":
        value = F.col(conf.target.result_column)
    else:  # a column per field: the target's columns but the id, kept and status ones
        taken = {id_column, *conf.source.keep_columns, *STATUS_COLUMNS, *JOB_COLUMNS}
        names = [c for c in columns if c not in taken]
        answered = functools.reduce(operator.or_, [F.col(n).isNotNull() for n in names])
        value = F.when(answered, F.struct(*names))  # a failed row's fields are all null
    found = t.select(
        F.col(id_column).cast("string"),
        value,
        "error",
        "prompt_tokens",
        "completion_tokens",
        batch_run(F.col("batch")),
    ).collect()
    if not found:
        return None
    return _Stored(found, target.where, sorted({row[5] for row in found}), origin)


def _how(conf: JobConfig, emulated: bool, sent: int, stored: _Stored | None) -> str:
    """Where the answers came from, as ``dbstruct evaluate`` prints it."""
    where = (
        "the job file's local emulator, whose answers are made up" if emulated else "the endpoint"
    )
    sending = f"sent to {conf.model} ({where})"
    if stored is None:
        return sending
    runs = ("run " if len(stored.runs) == 1 else "runs ") + ", ".join(map(str, stored.runs))
    reading = (
        f"read from the job's target {stored.where} (written by {runs} with this "
        f"configuration, by {describe_origin(stored.origin)})"
    )
    if not sent:
        return reading
    return f"{len(stored.rows):,} {reading}, {sent:,} {sending}"

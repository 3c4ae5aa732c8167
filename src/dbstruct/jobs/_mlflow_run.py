"""A job run as an MLflow run, when its job file has ``mlflow:`` (:mod:`._mlflow_conf`).

    with job_run(conf) as run:  # None without mlflow:
        ...  # each committed chunk: run.chunk_done(progress)
        run.finished(summary)

What a run logs:

- params: ``endpoint``, ``mode``, ``response_model``, ``prompt_sha256`` (the first 16 hex
  digits of the prompt's hash), ``rows_per_request``, ``concurrency``, ``max_retries``,
  ``chunk_rows``, ``trace_sample_rate``, ``target``;
- metrics after each committed chunk, its number as the step: ``rows_processed``,
  ``rows_succeeded``, ``rows_failed``, ``prompt_tokens``, ``completion_tokens``,
  ``cost_usd`` (with a price) and ``rows_per_s``, all so far; at the end the same, plus
  ``wall_s`` and ``exit_code``;
- artifacts: ``summary.json`` (``dbstruct run --summary-json``'s) and ``job_conf.yml``, the
  job file as validated: secrets stay references (``{{secrets/...}}``, ``{{env:...}}``), an
  inline token is refused before this, and the text passes :func:`dbstruct.redaction.redact`.

The run ends FINISHED when the job returns a summary (whatever its exit code), else FAILED
(a budget stop logs the summary of what was committed first). MLflow is imported here only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import yaml

from dbstruct.errors import BudgetReachedError, JobStoppedError
from dbstruct.jobs._progress import JobSummary, Progress
from dbstruct.jobs._secrets import is_reference
from dbstruct.jobs.conf import JobConfig
from dbstruct.redaction import redact
from dbstruct.tracing import import_mlflow

if TYPE_CHECKING:
    from dbstruct.evaluation import EvaluatedRun

__all__ = ["JobRun", "job_run", "log_evaluation", "open_experiment"]


def open_experiment(conf: JobConfig) -> Any:
    """The ``mlflow`` module, pointed at the job file's tracking URI and experiment."""
    assert conf.mlflow is not None
    mlflow = import_mlflow("mlflow: in a job file")
    if conf.mlflow.tracking_uri:
        mlflow.set_tracking_uri(conf.mlflow.tracking_uri)
    mlflow.set_experiment(conf.mlflow.experiment)
    return mlflow


class JobRun:
    """One active MLflow run of a job (see the module docstring)."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow = mlflow
        self.run_id: str = run.info.run_id

    def chunk_done(self, progress: Progress) -> None:
        """Log the counts so far, the committed chunk's number as the step."""
        done = progress.done
        elapsed = max(progress.clock() - progress.started, 1e-9)
        metrics = {
            "rows_processed": done.rows,
            "rows_succeeded": done.succeeded,
            "rows_failed": done.failed,
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "rows_per_s": done.rows / elapsed,
        }
        cost = done.cost_usd(progress.price)
        if cost is not None:
            metrics["cost_usd"] = cost
        self.mlflow.log_metrics(metrics, step=progress.committed)

    def finished(self, summary: JobSummary, exit_code: int | None = None) -> None:
        """Log the run's final counts and its summary as ``summary.json``."""
        data = summary.to_dict(exit_code=exit_code)
        metrics = {
            "rows_processed": data["processed"],
            "rows_succeeded": data["succeeded"],
            "rows_failed": data["failed"],
            "prompt_tokens": data["prompt_tokens"],
            "completion_tokens": data["completion_tokens"],
            "rows_per_s": data["rows_per_s"],
            "wall_s": data["wall_s"],
            "exit_code": data["exit_code"],
        }
        if data["cost_usd"] is not None:
            metrics["cost_usd"] = data["cost_usd"]
        self.mlflow.log_metrics(metrics)
        self.mlflow.log_text(redact(json.dumps(data, indent=2)), "summary.json")


@contextmanager
def job_run(conf: JobConfig) -> Iterator[JobRun | None]:
    """An MLflow run around a job run when ``conf.mlflow`` is set, else None."""
    if conf.mlflow is None:
        yield None
        return
    mlflow = open_experiment(conf)
    with mlflow.start_run(run_name=conf.mlflow.run_name) as active:
        run = JobRun(mlflow, active)
        mlflow.log_params(job_params(conf))
        mlflow.log_text(conf_text(conf), "job_conf.yml")
        try:
            yield run
        except JobStoppedError as e:
            if e.summary is not None:
                run.finished(e.summary, 3 if isinstance(e, BudgetReachedError) else 2)
            raise


def job_params(conf: JobConfig) -> dict[str, Any]:
    """The run's params (see the module docstring)."""
    prompt = json.dumps(conf.prompt_spec, sort_keys=True, ensure_ascii=False)
    target = conf.target.table or conf.target.path
    return {
        "endpoint": conf.model,
        "mode": conf.mode,
        "response_model": conf.response_model,
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
        "rows_per_request": conf.rows_per_request,
        "concurrency": conf.concurrency,
        "max_retries": conf.max_retries,
        "chunk_rows": conf.chunk_rows,
        "trace_sample_rate": conf.mlflow.trace_sample_rate if conf.mlflow else 0.0,
        "target": redact(str(target)),
    }


def conf_text(conf: JobConfig) -> str:
    """The job file as validated, as YAML: its secrets are references (see the module
    docstring)."""
    data = _redacted(conf.model_dump(mode="json", exclude_none=True))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _redacted(value: Any) -> Any:
    """``value`` with every text redacted, references (``{{secrets/...}}``) kept as written."""
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, str) and not is_reference(value):
        return redact(value)
    return value


def log_evaluation(conf: JobConfig, run: EvaluatedRun, report: str | None = None) -> str:
    """Log ``dbstruct evaluate``'s scores of one job file as an MLflow run of its own, in
    the job file's experiment: the job's params, a metric ``<field>.<score>`` per score,
    ``rows``, ``tokens_per_row`` and ``cost_usd``, ``evaluation.json`` (as ``--json``
    prints it, with every disagreeing row) and the ``--report`` directory under
    ``report/``; the run's id."""
    from dbstruct.evaluation import runs_to_dict

    mlflow = open_experiment(conf)
    with mlflow.start_run(run_name=f"evaluate {run.name}") as active:
        mlflow.set_tag("dbstruct.kind", "evaluate")
        mlflow.log_params(job_params(conf))
        metrics = {
            f"{name}.{metric}": float(value)
            for name, scores in run.evaluation.fields.items()
            for metric, value in scores.metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        metrics["rows"] = float(run.evaluation.rows)
        tokens = run.per_row(run.prompt_tokens + run.completion_tokens)
        if tokens is not None:
            metrics["tokens_per_row"] = tokens
        if run.cost_usd is not None:
            metrics["cost_usd"] = run.cost_usd
        mlflow.log_metrics(metrics)
        mlflow.log_text(redact(json.dumps(runs_to_dict([run]), indent=2)), "evaluation.json")
        if report:
            mlflow.log_artifacts(report, "report")
        return str(active.info.run_id)

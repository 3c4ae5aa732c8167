"""A job file's ``mlflow:`` section: the MLflow run a job run becomes, and its traces.

    mlflow:
      experiment: /Users/me@example.com/tickets   # or a name, with a local tracking_uri
      tracking_uri: file:///tmp/mlruns             # optional: MLflow's own default otherwise
      run_name: nightly                            # optional: MLflow names the run otherwise
      trace_sample_rate: 0.01                      # optional: rows traced from the executors

See :mod:`dbstruct.jobs._mlflow_run` for what a run logs, and :mod:`dbstruct.tracing` for
the traces (``trace_sample_rate`` is structured_udf's).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MlflowConfig"]


class MlflowConfig(BaseModel):
    """Where a job's runs, scores and traces go in MLflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str = Field(min_length=1)
    tracking_uri: str | None = None
    run_name: str | None = None
    #: the share of rows traced from the executors (failed rows always): 0 to 1
    trace_sample_rate: float = Field(default=0.0, ge=0, le=1)

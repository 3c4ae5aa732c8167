"""A local MLflow tracking store per test (a directory, no server), and reading it back.

MLflow 3.17 keeps its file store only with ``MLFLOW_ALLOW_FILE_STORE=true`` (set here, so
Spark's Python workers, started by this process, inherit it too).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed: pip install '.[mlflow]'")

os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"

import dbstruct  # noqa: E402
from dbstruct.testing import Emulator  # noqa: E402


class Store:
    """A file tracking store and its experiment, active in this process."""

    def __init__(self, root: Path, experiment_id: str) -> None:
        self.root = root
        self.uri = root.as_uri()
        self.experiment_id = experiment_id

    def traces(self) -> list[Any]:
        """Every trace of the experiment, oldest first, once MLflow's queue is written."""
        mlflow.flush_trace_async_logging()
        found = mlflow.search_traces(
            locations=[self.experiment_id], return_type="list", order_by=["timestamp_ms ASC"]
        )
        return list(found)

    def file_bytes(self) -> bytes:
        """Every file of the store, concatenated: what a secrets sweep reads."""
        return b"".join(p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file())


@pytest.fixture
def emu(dbstruct_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The session's emulator with a token of this test's own (the secrets sweeps look for it
    in the store) and its DATABRICKS_* variables set."""
    dbstruct_emulator.start_from(token=f"dapi-mlflow-{uuid.uuid4().hex}", retry_after=0.05)
    for key, value in dbstruct_emulator.env().items():
        monkeypatch.setenv(key, value)
    return dbstruct_emulator


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    root = tmp_path / "mlruns"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(root.as_uri())
    experiment = mlflow.set_experiment("dbstruct-tests")
    yield Store(root, experiment.experiment_id)
    dbstruct.autolog(disable=True)
    mlflow.flush_trace_async_logging()
    mlflow.set_tracking_uri(previous)


def spans_by_name(trace: Any) -> dict[str, Any]:
    return {span.name: span for span in trace.data.spans}

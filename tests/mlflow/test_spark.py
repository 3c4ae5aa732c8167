"""Traces from Spark executors (``trace_sample_rate``) and a job run as an MLflow run.

Executors write to the tracking URI the driver had when the UDF was built: here a local
directory. One sampled run per session kind (classic and Connect) and one job run: a
session start is about a minute here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

pytest.importorskip("pyspark")

from pyspark import cloudpickle

import dbstruct
from dbstruct.jobs import parse_config, run_job
from dbstruct.spark import structured_udf
from dbstruct.spark._prompt import as_messages
from dbstruct.testing import Emulator
from dbstruct.tracing import sampled
from tests.mlflow.conftest import Store, mlflow
from tests.spark import conftest as sessions
from tests.spark.job_files import job, write_source

# the Spark sessions of tests/spark, classic and Connect
classic_spark = sessions.classic_spark
connect_spark = sessions.connect_spark
spark = sessions.spark

pytestmark = [pytest.mark.mlflow, pytest.mark.spark, pytest.mark.timeout(300)]


class User(BaseModel):
    name: str
    age: int


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


def test_a_sampled_udf_traces_the_sample_and_every_failed_row(
    spark: Any, emu: Emulator, store: Store
) -> None:
    texts = [f"user {i} is {20 + i}" for i in range(60)]
    texts += [f"[[fault:500]] broken {i}" for i in range(3)]
    udf = structured_udf(User, "databricks/test-llm", trace_sample_rate=0.2, max_retries=0)
    assert udf.spec.tracer is not None
    assert udf.spec.tracer.target is not None
    assert udf.spec.tracer.target.tracking_uri == store.uri
    df = spark.createDataFrame([(t,) for t in texts], "text string").repartition(2)
    rows = df.select(udf("text").alias("u")).collect()
    assert len(rows) == len(texts)

    def messages(text: str) -> list[dict[str, Any]]:
        return as_messages(udf.spec.prompt.render([text]))

    expected = {t for t in texts if "[[fault:500]]" in t or sampled(messages(t), 0.2)}
    assert 3 < len(expected) < len(texts)
    traces = store.traces()
    traced = [t.data.spans[0].inputs["messages"][0]["content"] for t in traces]
    assert sorted(traced) == sorted(expected)  # exactly: each row once, no other
    failed = [t for t in traces if "broken" in t.data.spans[0].inputs["messages"][0]["content"]]
    assert all(t.data.spans[0].attributes["dbstruct.error"] for t in failed)
    assert emu.token.encode() not in store.file_bytes()


def test_a_udf_without_a_rate_or_autolog_has_no_tracer() -> None:
    udf = structured_udf(
        User,
        "databricks/test-llm",
        base_url="https://example.invalid/serving-endpoints",
        api_key="dapi0123456789abcdef01",
    )
    assert udf.spec.tracer is None


def test_trace_sample_rate_is_checked_on_the_driver() -> None:
    with pytest.raises(dbstruct.ConfigurationError, match="trace_sample_rate"):
        structured_udf(User, "databricks/test-llm", trace_sample_rate=2)


def test_a_job_with_mlflow_is_a_run_with_params_metrics_artifacts_and_no_secret(
    classic_spark: Any,
    emu: Emulator,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    texts = [f"Ticket {i}: charged twice, refund please" for i in range(40)]
    texts[7] = "[[fault:500]] Ticket 7: charged twice"
    source = write_source(tmp_path / "in.jsonl", texts)
    data = job(
        source,
        tmp_path / "out",
        name="mlflow-job",
        chunk_rows=15,
        credentials={"host": "{{env:EMU_HOST}}", "token": "{{env:EMU_TOKEN}}"},
        pricing={"input_usd_per_million": 1.0, "output_usd_per_million": 2.0},
        mlflow={
            "experiment": "jobs",
            "tracking_uri": store.uri,
            "run_name": "nightly",
            "trace_sample_rate": 0.1,
        },
    )
    conf = parse_config(data, origin="mlflow.yml")
    summary = run_job(classic_spark, conf, environ={"EMU_HOST": emu.host, "EMU_TOKEN": emu.token})
    assert (summary.processed, summary.failed) == (40, 1)

    experiment = mlflow.get_experiment_by_name("jobs")
    [run] = mlflow.search_runs([experiment.experiment_id], output_format="list")
    assert run.info.run_name == "nightly" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["endpoint"] == "databricks/test-llm"
    assert params["mode"] == "TOOLS"
    assert params["response_model"] == "dbstruct.examples:TicketTriage"
    assert len(params["prompt_sha256"]) == 16
    assert (params["rows_per_request"], params["concurrency"]) == ("1", "8")  # job_files.job's
    metrics = run.data.metrics
    assert (metrics["rows_processed"], metrics["rows_succeeded"], metrics["rows_failed"]) == (
        40,
        39,
        1,
    )
    assert metrics["prompt_tokens"] == summary.prompt_tokens > 0
    assert metrics["cost_usd"] == pytest.approx(summary.cost_usd) and metrics["cost_usd"] > 0
    assert metrics["rows_per_s"] > 0 and metrics["exit_code"] == 0
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "rows_processed")
    per_chunk = [m for m in history if m.step > 0]
    assert [m.step for m in per_chunk] == list(range(1, summary.chunks + 1))
    assert summary.chunks >= 2 and per_chunk[-1].value == 40
    assert [m.value for m in per_chunk] == sorted(m.value for m in per_chunk)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert json.loads((artifacts / "summary.json").read_text())["processed"] == 40
    conf_text = (artifacts / "job_conf.yml").read_text()
    assert "{{env:EMU_TOKEN}}" in conf_text  # the reference, not the token
    # traces: every failed row and the rows sampled at 0.1, in the job's experiment
    found = mlflow.search_traces(
        locations=[experiment.experiment_id], return_type="list", flush=True
    )
    contents = [t.data.spans[0].inputs["messages"][-1]["content"] for t in found]

    def traced(text: str) -> bool:  # the prompt is "{text}": one user message
        return "fault" in text or sampled([{"role": "user", "content": text}], 0.1)

    expected = [t for t in texts if traced(t)]
    assert sorted(contents) == sorted(expected) and texts[7] in contents
    # the sweep of step 5, extended: no byte of the store holds the token
    assert emu.token.encode() not in store.file_bytes()
    assert emu.token[-12:].encode() not in store.file_bytes()


def test_autolog_on_the_driver_gives_a_udf_a_failures_only_tracer(store: Store) -> None:
    dbstruct.autolog()
    udf = structured_udf(
        User,
        "databricks/test-llm",
        base_url="https://example.invalid/serving-endpoints",
        api_key="dapi0123456789abcdef01",
    )
    assert udf.spec.tracer is not None and udf.spec.tracer.sample_rate == 0
    assert udf.spec.tracer.target is not None
    assert udf.spec.tracer.target.experiment_id == store.experiment_id


def test_evaluate_logs_its_scores_and_report_as_a_run(
    classic_spark: Any,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dbstruct.cli import main as cli_main

    monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    (tmp_path / "conf").mkdir()
    demo = Path(__file__).resolve().parents[2] / "conf" / "demo.yml"
    (tmp_path / "conf" / "demo.yml").write_text(demo.read_text())
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--labels", "sample:tickets", "--set", "source.limit=20", "--json"]
    argv += ["--set", "mlflow.experiment=evals", "--set", f"mlflow.tracking_uri={store.uri}"]
    report = importlib.util.find_spec("matplotlib") is not None  # CI installs it before
    if report:
        argv += ["--report", str(tmp_path / "report")]
    assert cli_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)

    experiment = mlflow.get_experiment_by_name("evals")
    [run] = mlflow.search_runs([experiment.experiment_id], output_format="list")
    assert run.info.run_name == "evaluate demo" and run.data.tags["dbstruct.kind"] == "evaluate"
    metrics = run.data.metrics
    assert metrics["category.accuracy"] == pytest.approx(printed["fields"]["category"]["accuracy"])
    assert metrics["rows"] == printed["rows"] == 20
    assert run.data.params["endpoint"] == printed_endpoint(tmp_path)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    logged = json.loads((artifacts / "evaluation.json").read_text())
    assert logged["fields"] == printed["fields"]
    assert len(logged["disagreeing_rows"]) >= len(printed["disagreeing_rows"])  # all of them
    if report:
        assert (artifacts / "report" / "report.md").is_file()


def printed_endpoint(clone: Path) -> str:
    from dbstruct.jobs import load_config

    return load_config(clone / "conf" / "demo.yml").model

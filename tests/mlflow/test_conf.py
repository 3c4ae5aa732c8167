"""The ``mlflow:`` key of job files: its keys, bounds, did-you-mean, and what a run logs."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import yaml

from dbstruct.errors import ConfigurationError
from dbstruct.jobs import parse_config
from dbstruct.jobs._mlflow_run import conf_text, job_params, open_experiment
from tests.unit.test_job_conf import good

pytestmark = pytest.mark.mlflow


def job(**mlflow: Any) -> dict[str, Any]:
    return {**good(), "credentials": {"token": "{{secrets/jobs/token}}"}, "mlflow": mlflow}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_config(data, origin="x.yml")
    return str(info.value)


def test_the_mlflow_key_reads_its_settings() -> None:
    conf = parse_config(job(experiment="/Shared/tickets", run_name="n", trace_sample_rate=0.5))
    assert conf.mlflow is not None
    assert (conf.mlflow.experiment, conf.mlflow.run_name) == ("/Shared/tickets", "n")
    assert conf.mlflow.trace_sample_rate == 0.5 and conf.mlflow.tracking_uri is None


@pytest.mark.parametrize(
    ("mlflow", "error"),
    [
        (
            {"experimnt": "x"},
            "x.yml: mlflow.experiment: required, missing\n"
            "x.yml: mlflow.experimnt: unknown key; did you mean 'mlflow.experiment'?",
        ),
        ({}, "x.yml: mlflow.experiment: required, missing"),
        (
            {"experiment": "x", "trace_sample_rate": 2},
            "x.yml: mlflow.trace_sample_rate: input should be less than or equal to 1, got 2",
        ),
    ],
)
def test_a_bad_mlflow_key_is_named(mlflow: dict[str, Any], error: str) -> None:
    assert error_of(job(**mlflow)) == error


def test_params_and_the_logged_conf_keep_secrets_as_references() -> None:
    conf = parse_config(job(experiment="x", trace_sample_rate=0.25))
    params = job_params(conf)
    assert params["endpoint"] == "databricks/my-endpoint" and params["mode"] == "TOOLS"
    assert params["trace_sample_rate"] == 0.25 and len(params["prompt_sha256"]) == 16
    other = parse_config({**job(experiment="x"), "prompt": "Other: {body}"})
    assert job_params(other)["prompt_sha256"] != params["prompt_sha256"]
    logged = yaml.safe_load(conf_text(conf))
    assert logged["credentials"]["token"] == "{{secrets/jobs/token}}"
    assert logged["mlflow"]["experiment"] == "x"


def test_without_mlflow_installed_the_run_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    conf = parse_config(job(experiment="x"))
    with pytest.raises(ConfigurationError, match=r"pip install 'dbstruct\[mlflow\]'"):
        open_experiment(conf)

"""databricks.yml and resources/*.yml: what the bundle names exists and validates.

Every ``python_wheel_task`` must name this package and a console script of pyproject.toml
that resolves to a callable; every job file it passes must exist in the repository and
validate, with the task's ``--set`` overrides and each target's variables filled in.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbstruct.jobs import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$\{var\.([A-Za-z_][\w-]*)\}")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return load(ROOT / "databricks.yml")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def resource_files(bundle: dict[str, Any]) -> list[Path]:
    files = sorted({p for pattern in bundle["include"] for p in ROOT.glob(pattern)})
    assert files, "the bundle includes no resource files"
    return files


def jobs(resource_files: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in resource_files:
        yield from (load(path).get("resources", {}).get("jobs") or {}).items()


def wheel_tasks(resource_files: list[Path]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for key, job in jobs(resource_files):
        for task in job["tasks"]:
            if "python_wheel_task" in task:
                yield key, job, task


def scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(pyproject["project"]["scripts"])


def variables_per_target(bundle: dict[str, Any]) -> dict[str, dict[str, str]]:
    defaults = {name: str(v["default"]) for name, v in bundle["variables"].items()}
    return {
        name: {**defaults, **{k: str(v) for k, v in (t.get("variables") or {}).items()}}
        for name, t in bundle["targets"].items()
    }


def substitute(text: str, variables: dict[str, str]) -> str:
    return _VAR.sub(lambda m: variables[m.group(1)], text)


def test_the_bundle_builds_the_wheel_and_has_dev_and_prod(bundle: dict[str, Any]) -> None:
    assert bundle["artifacts"]["default"]["type"] == "whl"
    assert "build" in bundle["artifacts"]["default"]["build"]
    assert bundle["targets"]["dev"]["mode"] == "development"
    assert bundle["targets"]["prod"]["mode"] == "production"
    assert {"catalog", "schema", "endpoint"} <= set(bundle["variables"])


def test_every_variable_used_is_declared(
    bundle: dict[str, Any], resource_files: list[Path]
) -> None:
    texts = [(ROOT / "databricks.yml").read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in resource_files]
    used = {m.group(1) for text in texts for m in _VAR.finditer(text)}
    assert used and used <= set(bundle["variables"])


def test_wheel_tasks_name_console_scripts_that_resolve(resource_files: list[Path]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = list(wheel_tasks(resource_files))
    assert found, "no python_wheel_task in the bundle"
    for key, _, task in found:
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == project["name"], key
        entry = wheel["entry_point"]
        assert entry in scripts(), f"{key}: entry point {entry!r} is not in [project.scripts]"
        module, _, attribute = scripts()[entry].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), key


def test_each_job_runs_on_serverless_or_a_job_cluster(resource_files: list[Path]) -> None:
    kinds = set()
    for key, job, task in wheel_tasks(resource_files):
        assert job["max_concurrent_runs"] == 1, f"{key}: two runs would write one target"
        cron = job["schedule"]["quartz_cron_expression"].split()
        assert len(cron) in (6, 7), f"{key}: not a Quartz cron expression"
        if "environment_key" in task:
            env = {e["environment_key"]: e for e in job["environments"]}[task["environment_key"]]
            assert "../dist/*.whl" in env["spec"]["dependencies"], key
            kinds.add("serverless")
        else:
            clusters = {c["job_cluster_key"] for c in job["job_clusters"]}
            assert task["job_cluster_key"] in clusters, key
            assert {"whl": "../dist/*.whl"} in task["libraries"], key
            kinds.add("job cluster")
    assert kinds == {"serverless", "job cluster"}


def test_job_files_exist_and_validate_with_each_targets_variables(
    bundle: dict[str, Any], resource_files: list[Path]
) -> None:
    checked = 0
    for key, _, task in wheel_tasks(resource_files):
        params = task["python_wheel_task"]["parameters"]
        confs = [p for p in params if p.endswith((".yml", ".yaml"))]
        assert len(confs) == 1, f"{key}: expected one job file in {params}"
        relative = confs[0].replace("${workspace.file_path}/", "")
        assert (ROOT / relative).is_file(), f"{key}: {relative} is not in the repository"
        sets = [params[i + 1] for i, p in enumerate(params) if p == "--set"]
        for target, variables in variables_per_target(bundle).items():
            overrides = [substitute(s, variables) for s in sets]
            conf = load_config(ROOT / relative, overrides)
            assert conf.target.table and conf.target.table.startswith(variables["catalog"])
            assert conf.model == f"databricks/{variables['endpoint']}", (key, target)
            checked += 1
    assert checked >= 2

"""databricks.yml and resources/*.yml: what the bundle names exists and validates.

Every ``python_wheel_task`` must name this package and a console script of pyproject.toml
that resolves to a callable; every job file it passes must exist in the repository and
validate, with the task's parameters parsed by the job's own command line, each target's
variables filled in and each target's task overrides applied. The bundle's artifact command
must build a wheel that installs dbstruct with its data files. The Databricks CLI cannot run
here (no workspace), so ``databricks bundle validate`` is approximated by reading the YAML.
"""

from __future__ import annotations

import copy
import email
import importlib
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

import dbstruct
from dbstruct.jobs import build_parser, load_config
from tests.e2e.wheel import build_bundle_wheel, bundle_build_command

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$\{var\.([A-Za-z_][\w-]*)\}")
_SUBSTITUTION = re.compile(r"\$\{([^}]*)\}")
# What the bundle itself fills in at deploy time (not variables).
_BUNDLE_SUBSTITUTIONS = {"workspace.file_path", "bundle.name", "bundle.target"}


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


def merged(base: Any, override: Any) -> Any:
    """``override`` joined into ``base`` as a bundle target does: mappings merge key by key,
    ``tasks`` join on ``task_key``, anything else (lists included) is replaced.
    https://docs.databricks.com/dev-tools/bundles/job-task-override.html"""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if key == "tasks":
                tasks = {t["task_key"]: t for t in base.get("tasks", [])}
                for task in value:
                    tasks[task["task_key"]] = merged(tasks.get(task["task_key"], {}), task)
                out[key] = list(tasks.values())
            else:
                out[key] = merged(base.get(key), value)
        return out
    return copy.deepcopy(override)


def target_jobs(
    bundle: dict[str, Any], resource_files: list[Path], target: str
) -> dict[str, dict[str, Any]]:
    """Each job as ``target`` deploys it: the resource files with the target's overrides."""
    base = dict(jobs(resource_files))
    overrides = (bundle["targets"][target].get("resources") or {}).get("jobs") or {}
    assert set(overrides) <= set(base), f"{target} overrides jobs that do not exist"
    return {key: merged(job, overrides.get(key, {})) for key, job in base.items()}


def resolved_parameters(
    bundle: dict[str, Any], resource_files: list[Path], target: str
) -> dict[str, list[str]]:
    """Each wheel task's parameters with the target's variables filled in."""
    variables = variables_per_target(bundle)[target]
    return {
        f"{key}.{task['task_key']}": [
            substitute(str(p), variables) for p in task["python_wheel_task"]["parameters"]
        ]
        for key, job in target_jobs(bundle, resource_files, target).items()
        for task in job["tasks"]
        if "python_wheel_task" in task
    }


def job_file(parameter: str) -> Path:
    assert parameter.startswith("${workspace.file_path}/"), parameter
    return ROOT / parameter.removeprefix("${workspace.file_path}/")


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


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_parameters_resolve_and_parse_with_the_jobs_own_command_line(
    bundle: dict[str, Any], resource_files: list[Path], target: str
) -> None:
    tasks = resolved_parameters(bundle, resource_files, target)
    assert len(tasks) == 2
    for key, params in tasks.items():
        left = {m.group(1) for p in params for m in _SUBSTITUTION.finditer(p)}
        assert left <= _BUNDLE_SUBSTITUTIONS, f"{target} {key}: unresolved {left}"
        # the wheel task calls dbstruct-job, i.e. main(): "run" first, as on the command line
        assert params[0] == "run"
        args = build_parser().parse_args(params[1:])
        conf = load_config(job_file(args.conf), args.overrides)
        variables = variables_per_target(bundle)[target]
        schema = f"{variables['catalog']}.{variables['schema']}"
        assert conf.source.table == f"{schema}.tickets_raw", (target, key)
        assert conf.target.table == f"{schema}.ticket_triage", (target, key)
        assert conf.model == f"databricks/{variables['endpoint']}"
        assert conf.source.id_column == "ticket_id"
        assert conf.source.keep_columns == ["created_at", "customer_id"]


def test_dev_seeds_its_source_from_the_sample_and_prod_reads_the_real_table(
    bundle: dict[str, Any], resource_files: list[Path]
) -> None:
    for target, seeded in (("dev", "tickets"), ("prod", None)):
        for key, params in resolved_parameters(bundle, resource_files, target).items():
            args = build_parser().parse_args(params[1:])
            source = load_config(job_file(args.conf), args.overrides).source
            assert source.seed_from_sample == seeded, (target, key)
            # the sample's tickets are from early 2025: dev drops the file's 30-day filter
            assert (source.where is None) == (target == "dev"), (target, key)
    # dev repeats the resources' parameters whole and only adds to them
    for key, dev in resolved_parameters(bundle, resource_files, "dev").items():
        prod = resolved_parameters(bundle, resource_files, "prod")[key]
        variables = variables_per_target(bundle)
        assert dev[: len(prod)] == [
            p.replace(variables["prod"]["schema"], variables["dev"]["schema"]) for p in prod
        ], key
        assert dev[len(prod) :] == [
            "--set", "source.seed_from_sample=tickets", "--set", "source.where=null",
        ]  # fmt: skip


def test_default_endpoint_is_the_one_notebooks_and_job_file_use(bundle: dict[str, Any]) -> None:
    endpoint = bundle["variables"]["endpoint"]["default"]
    assert endpoint == "databricks-meta-llama-3-3-70b-instruct"
    assert load_config(ROOT / "conf" / "tickets.yml").model == f"databricks/{endpoint}"
    for notebook in sorted((ROOT / "notebooks").glob("*.py")):
        text = notebook.read_text(encoding="utf-8")
        assert f'dbutils.widgets.text("endpoint", "{endpoint}"' in text, notebook.name
        assert "dbrx" not in text.lower(), f"{notebook.name} names a retired model"


# ------------------------------------------------------------------ the wheel artifact


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_artifact_command_builds_a_wheel_with_the_package_and_its_data(wheel: Path) -> None:
    assert wheel.name == f"dbstruct-{dbstruct.__version__}-py3-none-any.whl"
    package = ROOT / "src" / "dbstruct"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"dbstruct-{dbstruct.__version__}.dist-info"
        metadata = email.message_from_bytes(zf.read(f"{info}/METADATA"))
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    data = {f"dbstruct/data/{p.name}" for p in (package / "data").iterdir()}
    assert data and data <= names  # tickets.jsonl, demo.yml
    modules = {f"dbstruct/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    assert modules <= names
    assert "dbstruct/py.typed" in names
    assert "dbstruct-job = dbstruct.jobs:entry" in entry_points  # the python_wheel_task's
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    assert {str(r) for r in required if r.marker is None} == {
        str(Requirement(r)) for r in pyproject["dependencies"]
    }


def test_the_wheel_installs_and_reads_its_data_files(wheel: Path, tmp_path: Path) -> None:
    # Installed on its own (no editable source on the path), as on a cluster.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
         str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import dbstruct;"
        "from dbstruct.jobs import demo_conf_path; from dbstruct.jobs._sample import sample_rows;"
        "print(dbstruct.__file__); print(len(sample_rows('tickets')));"
        "print(open(demo_conf_path(), encoding='utf-8').read().count('model:'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(target)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert Path(out[0]).is_relative_to(target)  # the wheel's copy, not the source tree
    assert int(out[1]) == 1200
    assert int(out[2]) >= 1


# ------------------------------------------------------------------ docs/DEPLOY.md

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def test_deploy_guide_runs_here_only_what_the_tests_run() -> None:
    """Every ``bash`` block of docs/DEPLOY.md can run here and is run by this file; what
    needs a workspace (the Databricks CLI, SQL on Unity Catalog) is in ``text``/``sql``
    blocks, which say so."""
    text = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    blocks = _FENCE.findall(text)
    runnable = [
        line.strip()
        for kind, body in blocks
        if kind == "bash"
        for line in body.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    # the wheel build, run by test_the_artifact_command_builds_a_wheel_... above
    assert runnable == [" ".join(bundle_build_command())]
    assert {kind for kind, _ in blocks} <= {"bash", "sh", "sql", "yaml", "text"}
    for kind, body in blocks:
        if kind == "sh":  # Databricks CLI commands: they need a workspace
            assert all(
                line.startswith(("databricks ", "#")) for line in body.splitlines() if line
            ), body
    assert "not run by the tests" in text

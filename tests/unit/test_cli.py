"""The ``dbstruct`` command line: help, version, ``run``'s arguments, ``emulator --config``
from a file or JSON text, and the "did you mean" errors of ``dbstruct run``. No JVM: every
``dbstruct run`` here stops at its job file."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import httpx
import pytest
import yaml

from dbstruct.cli import build_parser, main, read_emulator_config
from dbstruct.errors import ConfigurationError
from dbstruct.jobs._main import EXAMPLES as RUN_EXAMPLES
from dbstruct.jobs._main import real_workspace_hint
from tests.e2e.test_newcomer import COMMANDS as RUN_BY_THE_NEWCOMER_TEST
from tests.spark.test_evaluate import COMMANDS as EVALUATE_COMMANDS
from tests.spark.test_plan import COMMANDS as PLAN_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EMULATOR = "dbstruct emulator --port 0 --latency 0.05"


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return capsys.readouterr().out


def script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"the {name} console script is not installed (pip install -e .)")
    return str(path)


# ---------------------------------------------------------------- help and version


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    assert help_of(["--version"], capsys) == f"dbstruct {metadata.version('dbstruct')}\n"


def test_help_lists_the_commands_with_examples_in_plain_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(["--help"], capsys)
    assert text.startswith("usage: dbstruct [-h] [--version] COMMAND ...")
    assert re.search(r"^commands:\n  COMMAND\n    run +run an extraction job", text, re.M)
    assert re.search(r"^    emulator +serve a local stand-in", text, re.M)
    assert "examples:\n  dbstruct run --set source.limit=40\n" in text
    assert "``" not in text and ":func:" not in text  # no reStructuredText


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_run_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(["run", flag], capsys)
    assert text.startswith("usage: dbstruct run [-h] [--set KEY=VALUE]")
    assert re.search(r"^  CONF +the job file \(YAML\); default: the demo$", text, re.M)
    assert re.search(
        r"^  --summary-json FILE +also write the run's summary to FILE as JSON", text, re.M
    )
    assert RUN_EXAMPLES in text and "Exit status: 0 done" in text


def test_every_command_the_help_shows_is_run_by_a_test(capsys: pytest.CaptureFixture[str]) -> None:
    helps = ([], ["run"], ["plan"], ["evaluate"])
    shown = "".join(help_of([*c, "--help"], capsys) for c in helps)
    commands = {m.strip() for m in re.findall(r"^  (dbstruct .+)$", shown, re.M)}
    tested = {*RUN_BY_THE_NEWCOMER_TEST, *PLAN_COMMANDS, *EVALUATE_COMMANDS}
    assert commands <= {EMULATOR, *tested}
    assert commands >= {EMULATOR, *RUN_BY_THE_NEWCOMER_TEST[1:4], *PLAN_COMMANDS}


def test_run_takes_options_before_and_after_the_job_file() -> None:
    parser = build_parser()
    demo = parser.parse_args(["run", "--set", "source.limit=40"])
    assert demo.conf is None and demo.overrides == ["source.limit=40"] and demo.rows == 3
    ws = parser.parse_args(shlex.split(RUN_BY_THE_NEWCOMER_TEST[3])[1:])
    assert ws.conf == "conf/demo.yml"
    assert ws.overrides == ["emulator=false", "model=databricks/<your-endpoint>"]


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "dbstruct.jobs", "run", "--help"], ["dbstruct-job", "--help"]],
    ids=["python -m dbstruct.jobs", "dbstruct-job"],
)
def test_the_job_entry_points_take_help(command: list[str]) -> None:
    if command[0] == "dbstruct-job":
        command = [script("dbstruct-job"), *command[1:]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--set KEY=VALUE" in done.stdout and "examples:" in done.stdout


def test_the_workspace_hint_names_the_job_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    packaged = real_workspace_hint(None).splitlines()[-1].strip()  # no conf/demo.yml here
    assert packaged == RUN_BY_THE_NEWCOMER_TEST[4]
    assert "  dbstruct run x.yml --set emulator=false" in real_workspace_hint("x.yml")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "demo.yml").write_text("version: 1\n", encoding="utf-8")
    lines = real_workspace_hint(None).splitlines()
    assert lines[-1].strip() == RUN_BY_THE_NEWCOMER_TEST[3]


# ---------------------------------------------------------------- did you mean


def write_demo_with(tmp_path: Path, **changes: object) -> str:
    data = yaml.safe_load((ROOT / "conf" / "demo.yml").read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"concurency": 8}, "concurency: unknown key; did you mean 'concurrency'?"),
        ({"source__tabel": "a.b.c"}, "source.tabel: unknown key; did you mean 'source.table'?"),
        ({"target__pth": "out"}, "target.pth: unknown key; did you mean 'target.path'?"),
        (
            {"response_model": "dbstruct.examples:TicketTriag"},
            "response_model: module 'dbstruct.examples' has no class 'TicketTriag'; "
            "did you mean 'dbstruct.examples:TicketTriage'?",
        ),
        (
            {"response_model": "dbstruct.exampels:TicketTriage"},
            "response_model: cannot import 'dbstruct.exampels': there is no module of that "
            "name; did you mean 'dbstruct.examples'?",
        ),
    ],
    ids=["key", "source key", "target key", "class", "module"],
)
def test_a_misspelt_job_file_exits_2_with_the_closest_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, object], expected: str
) -> None:
    path = write_demo_with(tmp_path, **changes)
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert err == f"dbstruct run: {path}: {expected}\n"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("concurency=8", "--set concurency: unknown key; did you mean 'concurrency'?"),
        ("source.tabel=a.b.c", "--set source.tabel: unknown key; did you mean 'source.table'?"),
        ("emulator.latncy=0", "--set emulator.latncy: unknown key; did you mean 'emulator.lat"),
        ("target.colour=red", "--set target.colour: unknown key (the keys of target: table, pa"),
    ],
)
def test_a_misspelt_set_key_exits_2_with_the_closest_key(
    capsys: pytest.CaptureFixture[str], item: str, expected: str
) -> None:
    assert main(["run", "--set", item]) == 2
    assert capsys.readouterr().err.startswith(f"dbstruct run: {expected}")


# ---------------------------------------------------------------- emulator --config

SETTINGS = {"latency": 0.25, "qps": 7.0, "tokens": ["dapi-from-file"]}


@pytest.mark.parametrize("suffix", [".json", ".yml", ".yaml"])
def test_emulator_config_from_a_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"emulator{suffix}"
    dump = json.dumps if suffix == ".json" else yaml.safe_dump
    path.write_text(dump(SETTINGS), encoding="utf-8")
    assert read_emulator_config(str(path)) == SETTINGS


def test_emulator_config_as_json_text() -> None:
    assert read_emulator_config(json.dumps(SETTINGS)) == SETTINGS
    assert read_emulator_config('  {"seed": 3}') == {"seed": 3}


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (None, "missing.json", "--config {path}: cannot read the file (No such file"),
        ('{"latency": }', "bad.json", "--config {path}: not valid JSON: Expecting value: line 1"),
        ("latency: [1,\n", "bad.yml", "--config {path}: not valid YAML: "),
        ("- 1\n- 2\n", "list.yaml", "--config {path}: expected an object of settings, got list"),
        ("latency = 1\n", "emulator.toml", "--config '{path}': expected JSON text (an object"),
        (None, '{"latency": ', "--config: not valid JSON: Expecting value"),
    ],
    ids=["missing", "bad json", "bad yaml", "not a mapping", "other suffix", "bad json text"],
)
def test_a_bad_emulator_config_names_the_file_and_the_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    name: str,
    expected: str,
) -> None:
    value = name if name.startswith("{") else str(tmp_path / name)
    if content is not None:
        Path(value).write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        read_emulator_config(value)
    assert str(info.value).startswith(expected.format(path=value))
    assert main(["emulator", "--port", "0", "--config", value]) == 2
    assert capsys.readouterr().err.startswith(f"dbstruct emulator: {expected.format(path=value)}")


def test_the_emulator_serves_a_config_file_with_flags_over_it(tmp_path: Path) -> None:
    path = tmp_path / "emulator.yml"
    path.write_text(yaml.safe_dump(SETTINGS), encoding="utf-8")
    command = [*shlex.split(EMULATOR), "--config", str(path)]
    process = subprocess.Popen(
        [script("dbstruct"), *command[1:]], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:  # the startup lines, up to the one with the URL
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None, "the emulator printed no URL"
        config = httpx.get(f"{url}/_emulator/config", trust_env=False).json()
        assert config["latency"] == 0.05  # the flag
        assert config["qps"] == 7.0 and "dapi-from-file" in config["tokens"]  # the file
    finally:
        process.terminate()
        process.wait(timeout=30)

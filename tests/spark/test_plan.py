"""``dbstruct plan`` through real Spark and the demo's emulator: the plan against the run that
follows it (tokens), with and without a pilot, for packed, cached and resumed jobs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dbstruct.cli import main as cli_main
from dbstruct.errors import ConfigurationError
from dbstruct.jobs import load_config, run_job
from dbstruct.jobs.conf import JobConfig
from dbstruct.jobs.plan import plan_job

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]


def demo(tmp_path: Path, rows: int, *overrides: str) -> JobConfig:
    return load_config(
        "conf/demo.yml",
        [
            f"source.limit={rows}",
            f"target.path={tmp_path / 'out'}",
            "emulator.latency=0.01",
            "chunk_rows=150",
            *overrides,
        ],
    )


def _off(planned: int, measured: int) -> float:
    return abs(planned - measured) / measured


def test_a_pilot_of_30_plans_the_other_270_rows_within_10_and_20_percent(
    spark: Any, tmp_path: Path
) -> None:
    conf = demo(tmp_path, 300)
    blind = plan_job(spark, conf)
    assert (blind.rows, blind.skipped, blind.pilot) == (300, 0, None)
    plan = plan_job(spark, conf, pilot=30)
    assert plan.pilot is not None and plan.pilot.rows == 30 and plan.pilot.sent == 30
    assert plan.rows == 270 and plan.requests == 270
    run = run_job(spark, conf)
    assert run.processed == 270 and run.skipped == 30  # the pilot's rows are not paid twice
    prompt_off = _off(plan.prompt_tokens, run.prompt_tokens)
    completion_off = _off(plan.completion_tokens, run.completion_tokens)
    # without a pilot: the same counting rule as the emulator for prompts; the schema's
    # estimate for answers, which describes a model that writes whole sentences
    blind_completion = blind.completion_tokens * 270 / 300
    print(
        f"plan vs run: prompt {prompt_off:.2%} off, completion {completion_off:.2%} off; "
        f"without a pilot: prompt {_off(blind.prompt_tokens * 270 // 300, run.prompt_tokens):.2%}"
        f", completion {blind_completion / run.completion_tokens - 1:+.2%}"
    )
    assert prompt_off <= 0.10 and completion_off <= 0.20
    assert plan.cost_usd == pytest.approx(
        conf.price.cost_usd(plan.prompt_tokens, plan.completion_tokens)  # type: ignore[union-attr]
    )


def test_a_packed_job_is_planned_from_its_packs(classic_spark: Any, tmp_path: Path) -> None:
    conf = demo(tmp_path, 160, "rows_per_request=8")
    plan = plan_job(classic_spark, conf)
    assert plan.requests == 20
    run = run_job(classic_spark, conf)
    assert run.processed == 160 and run.failed == 0
    # the worker packs the rows it holds as they come: its packs may be smaller at the ends
    assert _off(plan.prompt_tokens, run.prompt_tokens) <= 0.10, (plan, run)
    alone = plan_job(classic_spark, demo(tmp_path / "alone", 160))
    assert plan.prompt_tokens < 0.4 * alone.prompt_tokens


def test_cached_rows_cost_nothing_and_resumed_ids_are_left_out(
    classic_spark: Any, tmp_path: Path
) -> None:
    cache = f"cache.path={tmp_path / 'cache'}"
    first = demo(tmp_path / "a", 100, cache)
    assert plan_job(classic_spark, first).cached == 0
    assert not (tmp_path / "cache").exists()  # plan reads the cache, never creates it
    run_job(classic_spark, first)
    # another target with the same cache: every row's answer is in it
    other = plan_job(classic_spark, demo(tmp_path / "b", 100, cache))
    assert (other.rows, other.cached, other.prompt_tokens, other.completion_tokens) == (
        100,
        100,
        0,
        0,
    )
    # the first target again, over more rows: the 100 done are skipped
    more = plan_job(classic_spark, demo(tmp_path / "a", 250, cache))
    assert (more.skipped, more.rows, more.cached) == (100, 150, 0)
    # what a run would refuse, a plan refuses: a target of other columns
    with pytest.raises(ConfigurationError, match="other columns than this job writes"):
        plan_job(classic_spark, demo(tmp_path / "a", 250, "target.output=flatten"))


def test_the_command_prints_json_and_refuses_bad_arguments(
    classic_spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "job.yml"
    conf.write_text(Path("conf/demo.yml").read_text())
    args = ["plan", str(conf), "--set", "source.limit=50", "--set", f"target.path={tmp_path}/o"]
    assert cli_main([*args, "--json", "--set", "endpoint_limits.qps=20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"rows", "prompt_tokens", "completion_tokens", "cost_usd", "minutes"} <= set(out)
    assert out["rows"] == 50 and out["minutes"] == pytest.approx(50 / 20 / 60)
    assert out["time_bound"] == "qps 20"
    assert cli_main([*args, "--pilot", "-1"]) == 2
    assert "--pilot -1" in capsys.readouterr().err
    assert cli_main([*args, "--deadline", "soon"]) == 2
    assert "--deadline 'soon'" in capsys.readouterr().err
    assert cli_main([*args, "--set", "endpoint_limit.qps=1"]) == 2
    assert "endpoint_limits" in capsys.readouterr().err


# The commands `dbstruct --help` and `dbstruct plan --help` show, run as typed in a fresh
# directory holding conf/demo.yml, as a clone does (tests/unit/test_cli.py checks that the
# help shows no others).
PILOT = "dbstruct plan --set source.limit=300 --pilot 30"
AFTER_PILOT = (
    "dbstruct plan --set source.limit=300 --set endpoint_limits.qps=20 --deadline 10m --json"
)
COMMANDS = (PILOT, AFTER_PILOT)
# the README's third command, after those two
BUDGET = "dbstruct run --set source.limit=300 --set budget.max_tokens=90000"


@pytest.mark.timeout(900)  # four commands, each starting its own Spark
def test_the_commands_the_help_shows(tmp_path: Path) -> None:
    from tests.e2e.test_newcomer import clean_environment, console_script

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "demo.yml").write_text(Path("conf/demo.yml").read_text())
    env = clean_environment()

    def run(command: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        argv = [console_script(), *shlex.split(command)[1:]]
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == status, done.stderr[-3000:]
        return done

    readme = Path("README.md").read_text()
    assert all(f"\n{c}\n" in readme for c in (*COMMANDS, BUDGET))
    first = run(PILOT).stdout
    assert re.search(r"rows to process +270 ", first)
    assert re.search(r"pilot +30 +rows committed as run r00001", first)
    plan = json.loads(run(AFTER_PILOT).stdout)
    assert (plan["rows"], plan["skipped"], plan["pilot"]) == (270, 30, None)
    assert plan["minutes"] == pytest.approx(270 / 20 / 60) and plan["time_bound"] == "qps 20"
    # the pilot's rows, in the target now, give the latency the deadline needs
    assert plan["staffing"]["in_flight"] >= 1 and plan["staffing"]["impossible"] is None
    assert any("earlier sent rows" in n for n in plan["notes"])
    # the budget: the 270 rows left take more than 90,000 tokens; the run stops (status 3)
    # and prints the --set that finishes the job, which does
    stopped = run(BUDGET, status=3)
    assert "budget reached" in stopped.stderr
    more = re.search(r"--set budget\.max_tokens=\d+", stopped.stderr)
    assert more is not None, stopped.stderr
    rest = run(f"dbstruct run --set source.limit=300 {more.group()}").stdout
    assert re.search(r"skipped +\d+ ", rest) and not re.search(r"processed +0 ", rest)
    assert re.search(r"source rows +300\n", rest)
    import pyarrow.dataset as ds  # type: ignore[import-untyped]

    target = ds.dataset(
        tmp_path / ".dbstruct/demo/emulator/ticket_triage", format="parquet", partitioning="hive"
    )
    ids = target.to_table(columns=["ticket_id"])["ticket_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 300  # the pilot's, the stopped run's, the rerun's

"""``dbstruct evaluate`` through real Spark and the demo's emulator: its figures against scores
counted here from the same answers (written by a run of the same job), two job files side by
side, the JSON shape, the report, and the commands ``dbstruct evaluate --help`` shows."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dbstruct.cli import main as cli_main
from dbstruct.evaluation import REPORT_HINT
from dbstruct.jobs import demo_conf_path, load_config, run_job

pytestmark = [pytest.mark.spark, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# The commands `dbstruct evaluate --help` and docs/EVALUATION.md show (tests/unit/
# test_evaluation.py checks they show no others), run below as typed, in a directory holding
# conf/demo.yml and conf/demo_packed.yml.
DEMO = "dbstruct evaluate --labels sample:tickets --set source.limit=40"
SIDE_BY_SIDE = (
    "dbstruct evaluate conf/demo.yml conf/demo_packed.yml --labels sample:tickets "
    "--set source.limit=40"
)
REPORT = "dbstruct evaluate --labels sample:tickets --set source.limit=40 --report report"
COMMANDS = (DEMO, SIDE_BY_SIDE, REPORT)
FIELDS = ("category", "product", "language", "order.reference")


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the repository's conf/demo.yml and conf/demo_packed.yml."""
    (tmp_path / "conf").mkdir()
    for name in ("demo.yml", "demo_packed.yml"):
        (tmp_path / "conf" / name).write_text((ROOT / "conf" / name).read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(command: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert cli_main([*shlex.split(command)[1:], *extra]) == 0
    return capsys.readouterr().out


def labelled(ids: set[str]) -> dict[str, dict[str, Any]]:
    """The sample's labels for ``ids``, read here as plain JSON (not by dbstruct)."""
    text = (ROOT / "src/dbstruct/data/tickets_labels.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    out = {}
    for row in rows:
        if row["ticket_id"] in ids:
            flat = {k: v for k, v in row.items() if k in FIELDS}
            if "order" in row:
                flat["order.reference"] = row["order"]["reference"]
            out[row["ticket_id"]] = flat
    return out


def test_the_demos_figures_are_the_scores_of_its_answers(
    classic_spark: Any, clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = json.loads(run(DEMO, capsys, "--json", "--rows", "1000"))
    assert not (clone / ".dbstruct").exists()  # nothing written to the job's target
    assert got["rows"] == 40 and got["labels_not_in_source"] == 1160
    assert got["conf"] == "demo" and "emulator" in got["extracted"]
    # the same job, run into a target: the emulator gives the same request the same answer
    where = [f"target.path={clone / 't'}", "target.format=parquet"]
    conf = load_config(demo_conf_path(), ["source.limit=40", *where])
    summary = run_job(classic_spark, conf)
    answers = {r["ticket_id"]: r for r in classic_spark.read.parquet(str(clone / "t")).collect()}
    truth = labelled(set(answers))
    assert len(truth) == 40 and summary.failed == 0

    def predicted(ticket: str, field: str) -> Any:
        result = answers[ticket]["result"]
        if field == "order.reference":
            return None if result["order"] is None else result["order"]["reference"]
        return result[field]

    for field in FIELDS:
        rows = [t for t in truth if field in truth[t]]
        right = sum(predicted(t, field) == truth[t][field] for t in rows)
        scores = got["fields"][field]
        assert scores["support"] == len(rows) and scores["unlabelled"] == 40 - len(rows)
        assert scores["accuracy"] == right / len(rows), field
        assert scores["missing_prediction"] == sum(predicted(t, field) is None for t in rows)
        if field != "order.reference":
            pairs = Counter((truth[t][field], predicted(t, field)) for t in rows)
            flat = {(a, b): n for a, row in scores["confusion"].items() for b, n in row.items()}
            assert flat == dict(pairs)
    wrong = sum(predicted(t, f) != truth[t][f] for t in truth for f in FIELDS if f in truth[t])
    assert got["disagreements"] == wrong == len(got["disagreeing_rows"])
    tokens = summary.prompt_tokens + summary.completion_tokens
    assert got["tokens_per_row"] == tokens / 40
    price = conf.price
    assert price is not None
    assert (
        got["cost_per_row_usd"]
        == price.cost_usd(summary.prompt_tokens, summary.completion_tokens) / 40
    )
    # the table, as the help shows the command
    text = run(DEMO, capsys)
    accuracy = got["fields"]["category"]["accuracy"]
    assert re.search(rf"^category +accuracy +{accuracy:.3f} +40 +0 +0$", text, re.M), text
    assert "the demo's local emulator" in text and "near chance" in text


def test_after_dbstruct_run_the_targets_answers_are_read(
    classic_spark: Any, clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["run", "--set", "source.limit=30", "--rows", "0"]) == 0
    capsys.readouterr()
    got = json.loads(run(DEMO, capsys, "--json"))
    # the first 30 of the 40 come from the run's target; the other 10 are sent
    assert (got["rows"], got["rows_read_from_target"]) == (40, 30)
    target = ".dbstruct/demo/emulator/ticket_triage"
    assert got["extracted"].startswith(f"30 read from the job's target {target} (written by run 1")
    assert got["extracted"].endswith(
        "10 sent to databricks/databricks-meta-llama-3-3-70b-instruct (the job file's local "
        "emulator, whose answers are made up)"
    )
    fresh = json.loads(run(DEMO, capsys, "--json", "--fresh"))
    assert fresh["rows_read_from_target"] == 0 and fresh["extracted"].startswith("sent to ")
    # the emulator answers a request the same way each time: the same scores either way
    assert fresh["fields"] == got["fields"]
    other = json.loads(run(DEMO, capsys, "--json", "--set", "rows_per_request=8"))
    assert other["rows_read_from_target"] == 0


def test_a_job_file_with_labels_prints_its_scores_after_each_run(
    classic_spark: Any, clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = ["--set", "evaluate.labels=sample:tickets"]
    assert cli_main(["run", "--set", "source.limit=20", *labelled, "--rows", "0"]) == 0
    out = capsys.readouterr().out
    assert (
        "\nevaluate: against sample:tickets\ndemo: 20 labelled rows, read from the job's target "
        in out
    )
    assert (
        ".dbstruct/demo/emulator/ticket_triage (written by run 1 with this configuration, by the "
        "local serving emulator (made-up values)), 0 failed (1,180 labelled ids are not in the "
        "target)"
    ) in out
    # the same scores as dbstruct evaluate of the same rows, which reads them too
    got = json.loads(run(DEMO.replace("=40", "=20"), capsys, "--json"))
    assert got["rows_read_from_target"] == 20
    accuracy = got["fields"]["category"]["accuracy"]
    assert re.search(rf"^category +accuracy +{accuracy:.3f} +20 +0 +0$", out, re.M), out
    # bad labels stop the run before anything is sent or written
    assert cli_main(["run", "--set", "evaluate.labels=none.jsonl", "--set", "target.path=t"]) == 2
    assert "labels none.jsonl: cannot read it (No such file" in capsys.readouterr().err
    assert not (clone / "t").exists()


def test_two_job_files_side_by_side_on_the_same_rows(
    classic_spark: Any, clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = run(SIDE_BY_SIDE, capsys)
    assert "[1] conf/demo.yml: 40 labelled rows" in text
    assert "[2] conf/demo_packed.yml: 40 labelled rows" in text
    assert re.search(r"^category +accuracy +0\.\d{3} +0\.\d{3}$", text, re.M), text
    got = json.loads(run(SIDE_BY_SIDE, capsys, "--json"))
    one, packed = got["runs"]
    assert (one["conf"], packed["conf"]) == ("conf/demo.yml", "conf/demo_packed.yml")
    assert one["rows"] == packed["rows"] == 40
    assert set(one["fields"]) == set(packed["fields"]) == set(FIELDS)
    assert {"accuracy", "support", "missing_prediction"} <= set(one["fields"]["category"])
    # 8 tickets share one request's instructions: fewer tokens per row
    assert packed["tokens_per_row"] < one["tokens_per_row"]
    print(
        f"tokens per row: {one['tokens_per_row']:.1f} alone, {packed['tokens_per_row']:.1f} packed"
    )
    assert not (clone / ".dbstruct").exists()


def test_labels_from_a_table_and_labels_the_source_does_not_hold(
    classic_spark: Any, clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = "spark_catalog.default.evaluate_labels"
    rows = [("TCK-100001", "bug", None), ("TCK-100002", None, "en"), ("TCK-999999", "bug", "de")]
    schema = "ticket_id string, category string, language string"
    classic_spark.createDataFrame(rows, schema).write.mode("overwrite").saveAsTable(table)
    got = json.loads(
        run(f"dbstruct evaluate --labels {table} --set source.limit=5", capsys, "--json")
    )
    # a null cell in a table is unlabelled; TCK-999999 is not among the source's 5 rows
    assert (got["rows"], got["labels_not_in_source"]) == (2, 1)
    assert (got["fields"]["category"]["support"], got["fields"]["language"]["support"]) == (1, 1)
    (clone / "far.jsonl").write_text('{"ticket_id": "TCK-100500", "category": "bug"}\n')
    assert cli_main(["evaluate", "--labels", "far.jsonl", "--set", "source.limit=5"]) == 2
    assert "none of its 1 ids is in the source" in capsys.readouterr().err


def test_the_report(classic_spark: Any, clone: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = shlex.split(REPORT)[1:]
    if importlib.util.find_spec("matplotlib") is None:
        assert cli_main(argv) == 2
        assert REPORT_HINT in capsys.readouterr().err
        pytest.skip(f"matplotlib is not installed ({REPORT_HINT}): no charts to check")
    assert cli_main(argv) == 0
    report = (clone / "report" / "report.md").read_text()
    assert "| category | accuracy |" in report and "![scores](scores.png)" in report
    for name in ("scores.png", "confusion-1-category.png", "confusion-1-language.png"):
        assert (clone / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_the_readme_shows_the_commands_run_here() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"\n{DEMO}\n" in readme and f"\n{SIDE_BY_SIDE}\n" in readme

"""Real answers through Spark (classic local session): the UDF on ten sample tickets and one
ticket past the server's context window, each row valued or failing alone with its error; and
conf/local_model.yml run and evaluated as documented (on 5 and 30 tickets)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from dbstruct import Mode
from dbstruct.examples import TRIAGE_PROMPT, TicketTriage
from dbstruct.testing import LocalModel

pytestmark = [pytest.mark.local_model, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
OVERSIZED = "lorem ipsum dolor sit amet " * 1500  # > 4,096 tokens


def _tickets(n: int) -> list[tuple[str, str, str]]:
    text = resources.files("dbstruct").joinpath("data/tickets.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()[:n]]
    return [(r["ticket_id"], r["subject"], r["body"]) for r in rows]


def test_udf_rows_are_valued_or_fail_alone(local_model: LocalModel, local_spark: Any) -> None:
    from dbstruct.spark import structured_udf

    data = [*_tickets(10), ("TCK-OVERSIZED", "A very long ticket", OVERSIZED)]
    df = local_spark.createDataFrame(data, "ticket_id string, subject string, body string")
    triage = structured_udf(
        TicketTriage,
        local_model.model,
        prompt=TRIAGE_PROMPT,
        mode=Mode.JSON,
        base_url=local_model.base_url,
        api_key=local_model.token,
        concurrency=2,  # the server has one slot: more would only queue there
        max_retries=0,
        include_status=True,
        max_context_tokens=None,  # the server's own 400 is what is tested
        max_tokens=256,
        temperature=0.0,
    )
    rows = {
        r["ticket_id"]: r["t"]
        for r in df.select("ticket_id", triage("subject", "body").alias("t")).collect()
    }
    assert len(rows) == 11
    for ticket_id, status in rows.items():
        assert (status["value"] is None) != (status["error"] is None), (ticket_id, status)
    assert "BadRequestError" in rows.pop("TCK-OVERSIZED")["error"]
    valued = [s["value"] for s in rows.values() if s["value"] is not None]
    assert len(valued) >= 7, {k: s["error"] for k, s in rows.items()}
    for value in valued:  # validated answers: the closed choices hold
        assert TicketTriage.model_validate(value.asDict(recursive=True))
    assert all(s["completion_tokens"] > 0 for s in rows.values())


def test_the_job_file_runs_on_the_local_model(
    local_model: LocalModel,
    local_spark: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `dbstruct run conf/local_model.yml`: its local_model: section starts a model of its own
    # for the run (the session's fixture serves the other tests)
    from dbstruct.jobs import main

    summary_file = tmp_path / "summary.json"
    target = tmp_path / "target"
    code = main(
        ["run", str(ROOT / "conf/local_model.yml"), "--set", f"target.path={target}",
         "--set", "source.limit=5", "--summary-json", str(summary_file)]
    )  # fmt: skip
    out = capsys.readouterr().out
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    assert code == 0, (out, summary)
    assert summary["processed"] == 5, summary  # 5 of the file's 10 tickets: CI's time
    assert summary["failed"] <= 1, summary
    # its evaluate: section: the run's answers scored against the sample's labels, read back
    assert (
        "\nevaluate: against sample:tickets\nlocal-model-demo: 5 labelled rows, read from " in out
    )
    assert f"{target} (written by run 1 with this configuration, by the local model" in out
    assert re.search(r"^category +accuracy +[01]\.\d{3} +5 +\d +0$", out, re.M), out


def test_the_evaluation_of_30_labelled_tickets(
    local_model: LocalModel, local_spark: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/LOCAL_MODEL.md's second command: real answers scored against the sample's labels
    from dbstruct.cli import main

    command = "dbstruct evaluate conf/local_model.yml --labels sample:tickets --set source.limit=30"
    assert command in (ROOT / "docs/LOCAL_MODEL.md").read_text(encoding="utf-8")
    argv = command.split()[1:]
    argv[1] = str(ROOT / argv[1])
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 30
    fields = result["fields"]
    assert fields["category"]["support"] == 30 and fields["language"]["support"] == 30
    # real answers: most are valid (a weak model: its scores are not asserted), and every
    # labelled row is scored, failed ones counted as missing rather than dropped
    assert fields["category"]["missing_prediction"] <= 6, fields["category"]
    assert 0.0 <= fields["category"]["accuracy"] <= 1.0
    print("local model on 30 tickets:", {k: v.get("accuracy") for k, v in fields.items()})

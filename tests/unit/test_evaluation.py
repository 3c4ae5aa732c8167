"""``dbstruct.evaluation``: labels read and checked against a response model, and scores
computed from constructed predictions whose every figure is known by hand; the bundled
sample's labels; ``dbstruct evaluate``'s argument and label errors (no JVM: each stops
before Spark starts)."""

from __future__ import annotations

import datetime as dt
import enum
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from dbstruct.cli import main
from dbstruct.evaluation import (
    REPORT_HINT,
    Disagreement,
    EvaluatedRun,
    LabelError,
    Prediction,
    field_specs,
    format_runs,
    normalise_text,
    parse_labels,
    read_labels_file,
    runs_to_dict,
    score,
    token_f1,
)
from dbstruct.examples import TicketTriage
from dbstruct.jobs._sample import sample_rows
from dbstruct.jobs.evaluate import read_labels

ROOT = Path(__file__).resolve().parents[2]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    code: str
    weight: float | None = None


class Case(BaseModel):
    colour: Colour
    size: Literal["s", "m", "l"]
    ok: bool
    count: int
    day: dt.date
    sku: str
    summary: str
    tags: list[str]
    price: float | None
    inner: Inner | None


LABELS = [
    {"id": 1, "colour": "red", "size": "s", "ok": True, "count": 3, "day": "2025-01-02",
     "sku": "A-1", "summary": "Refund the invoice.", "tags": ["x", "y"], "price": 10.0,
     "inner": {"code": "C1"}},
    {"id": 2, "colour": "blue", "size": "m", "ok": False, "count": 4, "day": "2025-01-03",
     "sku": "B-2", "summary": "Reset password", "tags": ["x"], "price": None,
     "inner.code": "C2"},
    {"id": 3, "colour": "red", "size": "l", "tags": [], "summary": None, "inner": None},
    {"id": 4, "colour": "blue"},
]  # fmt: skip
PREDICTIONS = {
    "1": Prediction(
        {"colour": "red", "size": "s", "ok": True, "count": 3, "day": "2025-01-02", "sku": "a-1",
         "summary": "refund invoice", "tags": ["x", "z"], "price": 12.5,
         "inner": {"code": "C1", "weight": 1.0}}
    ),
    "2": Prediction(None, "ServerError: boom"),
    "3": Prediction(
        {"colour": "blue", "size": "l", "ok": False, "count": 1, "day": "2025-01-01", "sku": "x",
         "summary": "", "tags": ["q"], "price": None, "inner": {"code": "C3", "weight": None}}
    ),
    # "4": no prediction at all
}  # fmt: skip


@pytest.fixture
def evaluation() -> Any:
    return score(parse_labels(LABELS, "id", Case), PREDICTIONS)


def metrics(evaluation: Any, name: str) -> dict[str, Any]:
    s = evaluation.fields[name]
    return {**s.metrics, "support": s.support, "missing": s.missing_prediction,
            "unlabelled": s.unlabelled}  # fmt: skip


# ---------------------------------------------------------------- fields


def test_each_field_is_scored_by_its_type() -> None:
    kinds = {path: spec.kind for path, spec in field_specs(Case).items()}
    assert kinds == {
        "colour": "category", "size": "category", "ok": "boolean", "count": "integer",
        "day": "date", "sku": "exact", "summary": "text", "tags": "set", "price": "number",
        "inner.code": "exact", "inner.weight": "number",
    }  # fmt: skip
    triage = {path: spec.kind for path, spec in field_specs(TicketTriage).items()}
    assert triage["order.reference"] == "exact" and triage["summary"] == "text"
    assert field_specs(TicketTriage)["priority"].choices == ("low", "medium", "high", "urgent")


def test_the_free_text_rule_reads_names_and_descriptions_or_an_explicit_list() -> None:
    class Note(BaseModel):
        issue_description: str
        gist: str = Field(description="Two sentences on what happened")
        code: str = Field(description="The error code as written")

    kinds = {p: s.kind for p, s in field_specs(Note).items()}
    assert kinds == {"issue_description": "text", "gist": "text", "code": "exact"}
    explicit = {p: s.kind for p, s in field_specs(Note, free_text=["code"]).items()}
    assert explicit == {"issue_description": "exact", "gist": "exact", "code": "text"}


# ---------------------------------------------------------------- scores


def test_accuracy_missing_predictions_unlabelled_rows_and_the_confusion_matrix(
    evaluation: Any,
) -> None:
    assert evaluation.rows == 4
    assert evaluation.failed == {"2": "ServerError: boom", "4": "no prediction for this id"}
    # 1 right of 4; row 2 failed and row 4 has no prediction: both missing, both wrong
    assert metrics(evaluation, "colour") == {
        "accuracy": 0.25, "support": 4, "missing": 2, "unlabelled": 0}  # fmt: skip
    assert evaluation.fields["colour"].confusion == {
        "red": {"red": 1, "blue": 1},
        "blue": {"failed": 2},
    }
    assert metrics(evaluation, "size") == {
        "accuracy": 2 / 3, "support": 3, "missing": 1, "unlabelled": 1}  # fmt: skip
    assert evaluation.fields["ok"].confusion == {"False": {"failed": 1}, "True": {"True": 1}}
    assert metrics(evaluation, "ok")["accuracy"] == 0.5
    assert metrics(evaluation, "count")["accuracy"] == 0.5
    # a date written as text is read as a date, on both sides
    assert metrics(evaluation, "day")["accuracy"] == 0.5
    # a string that is not free text must match exactly
    assert metrics(evaluation, "sku") == {
        "accuracy": 0.0, "support": 2, "missing": 1, "unlabelled": 2}  # fmt: skip


def test_free_text_normalised_match_and_token_f1(evaluation: Any) -> None:
    # row 1: "refund the invoice" vs "refund invoice": no match, F1 2*(2/3*1)/(2/3+1) = 0.8;
    # row 2 failed: 0; row 3: null label, empty prediction: both empty, a match, F1 1
    assert metrics(evaluation, "summary") == pytest.approx(
        {
            "accuracy": 1 / 3,
            "token_f1": (0.8 + 0 + 1) / 3,
            "support": 3,
            "missing": 1,
            "unlabelled": 1,
        }
    )
    assert normalise_text(" Refund,  the\tINVOICE! ") == "refund the invoice"
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)
    assert token_f1(None, "") == 1.0 and token_f1("x", None) == 0.0


def test_sets_micro_precision_recall_f1_and_exact_sets(evaluation: Any) -> None:
    # row 1 {x,z} vs {x,y}: tp 1, fp 1, fn 1; row 2 failed: fn 1; row 3 {q} vs {}: fp 1
    assert metrics(evaluation, "tags") == pytest.approx(
        {
            "accuracy": 0.0,
            "precision": 1 / 3,
            "recall": 1 / 3,
            "f1": 1 / 3,
            "support": 3,
            "missing": 1,
            "unlabelled": 1,
        }
    )


def test_numbers_mean_absolute_error_over_rows_with_both_values(evaluation: Any) -> None:
    assert metrics(evaluation, "price") == {
        "accuracy": 0.0, "mae": 2.5, "mae_rows": 1, "support": 2, "missing": 1, "unlabelled": 2,
    }  # fmt: skip


def test_nested_labels_by_dotted_path_object_or_null(evaluation: Any) -> None:
    # inner.code: "C1" (object), "C2" (dotted path), null (inner: null) predicted "C3"
    assert metrics(evaluation, "inner.code") == pytest.approx(
        {"accuracy": 1 / 3, "support": 3, "missing": 1, "unlabelled": 1}
    )
    # only row 3 labels inner.weight (inner: null); its prediction is null too
    assert metrics(evaluation, "inner.weight") == {
        "accuracy": 1.0, "mae": None, "mae_rows": 0, "support": 1, "missing": 0, "unlabelled": 3,
    }  # fmt: skip


def test_the_disagreeing_rows_are_listed_by_id_then_field(evaluation: Any) -> None:
    found = evaluation.disagreements
    assert len(found) == 18  # 3 + 1 + 1 + 1 + 1 + 2 + 2 + 3 + 2 + 2 + 0, field by field
    assert found[0] == Disagreement("1", "sku", "A-1", "a-1")
    assert [d.field for d in found if d.id == "3"] == ["colour", "tags", "inner.code"]
    assert all(d.error == "ServerError: boom" for d in found if d.id == "2")


def test_a_model_instance_is_a_prediction_too() -> None:
    labels = parse_labels([{"id": "a", "colour": "blue", "inner.code": "Z"}], "id", Case)
    answer = Case(colour=Colour.BLUE, size="s", ok=True, count=0, day=dt.date(2025, 1, 1),
                  sku="", summary="", tags=[], price=None, inner=Inner(code="Z"))  # fmt: skip
    assert score(labels, {"a": Prediction(answer)}).fields["inner.code"].correct == 1
    assert score(labels, {"a": Prediction(answer)}).fields["colour"].correct == 1


def test_json_and_text_output(evaluation: Any) -> None:
    run = EvaluatedRun("a.yml", evaluation, "sent to x", 300, 100, 0.02, 2)
    data = runs_to_dict([run], 2)
    assert data["rows"] == 4 and data["conf"] == "a.yml" and data["labels_not_in_source"] == 2
    assert data["fields"]["colour"]["accuracy"] == 0.25
    assert data["fields"]["colour"]["support"] == 4
    assert (data["tokens_per_row"], data["cost_per_row_usd"]) == (100.0, 0.005)
    assert len(data["disagreeing_rows"]) == 2 and data["disagreements"] == 18
    assert data["disagreeing_rows"][0] == {
        "id": "1", "field": "sku", "label": "A-1", "prediction": "a-1", "error": None}  # fmt: skip
    json.dumps(runs_to_dict([run]))  # dates and enums are JSON-ready
    both = runs_to_dict([run, run])
    assert [r["conf"] for r in both["runs"]] == ["a.yml", "a.yml"]
    text = format_runs([run], 3)
    assert re.search(r"^colour +accuracy +0\.250 +4 +2 +0$", text, re.M)
    assert re.search(r"^tokens per row +100\.0$", text, re.M)
    assert "disagreeing rows (3 of 18):" in text
    side = format_runs([run, run], 0)
    assert re.search(r"^colour +accuracy +0\.250 +0\.250$", side, re.M)


# ---------------------------------------------------------------- bad labels


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": 1, "colur": "red"}, "row '1': unknown field 'colur'; did you mean 'colour'?"),
        ({"id": 1, "inner.cod": "x"}, "unknown field 'inner.cod'; did you mean 'inner.code'?"),
        ({"id": 1, "inner": {"kode": "x"}}, "unknown field 'inner.kode'; did you mean"),
        ({"id": 7, "colour": "green"}, "row '7': colour: 'green' does not fit"),
        ({"id": 7, "count": "many"}, "row '7': count: 'many' does not fit"),
        ({"id": 7, "inner": 3}, "row '7': inner: expected an object"),
        ({"colour": "red"}, "record 1 has no 'id'"),
    ],
)
def test_bad_labels_name_the_row_and_field(record: dict[str, Any], message: str) -> None:
    with pytest.raises(LabelError, match=re.escape(message)):
        parse_labels([record], "id", Case)


def test_duplicate_ids_and_nothing_labelled_are_errors() -> None:
    with pytest.raises(LabelError, match="id '1' is labelled twice"):
        parse_labels([{"id": 1, "ok": True}, {"id": "1", "ok": False}], "id", Case)
    with pytest.raises(LabelError, match="no field of Case is labelled"):
        parse_labels([{"id": 1}], "id", Case)


def test_label_files_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "l.jsonl"
    jsonl.write_text('{"id": 1, "ok": true}\n\n{"id": 2, "price": null}\n')
    assert read_labels_file(jsonl, "id", Case).rows == {"1": {"ok": True}, "2": {"price": None}}
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(LabelError, match="line 2 is not JSON"):
        read_labels_file(tmp_path / "bad.jsonl", "id", Case)
    csv = tmp_path / "l.csv"
    # empty: unlabelled; null: the truth is null; a list as JSON text
    csv.write_text('id,ok,price,tags,inner.code\n1,true,,"[""a"",""b""]",null\n2,,2.5,,C\n')
    assert read_labels_file(csv, "id", Case).rows == {
        "1": {"ok": True, "tags": ["a", "b"], "inner.code": None},
        "2": {"price": 2.5, "inner.code": "C"},
    }
    with pytest.raises(LabelError, match=r"expected a \.jsonl, \.json or \.csv file"):
        read_labels_file(tmp_path / "l.txt", "id", Case)


def test_parquet_labels_read_null_as_unlabelled(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"id": ["a", "b"], "size": ["m", None], "inner": [{"code": "Q"}, None]})
    pq.write_table(table, tmp_path / "l.parquet")
    labels = read_labels(str(tmp_path / "l.parquet"), "id", Case)
    assert labels.rows == {"a": {"size": "m", "inner.code": "Q"}, "b": {}}
    with pytest.raises(LabelError, match="reading a table needs a Spark session"):
        read_labels("main.eval.labels", "id", Case)
    with pytest.raises(LabelError, match="no such file"):
        read_labels("nowhere", "id", Case)


# ---------------------------------------------------------------- the sample's labels


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "scripts/make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sample_ships_the_generators_truth() -> None:
    labels = read_labels("sample:tickets", "ticket_id", TicketTriage)
    assert labels.fields == ("category", "product", "language", "order.reference")
    tickets = sample_rows("tickets")
    assert list(labels.rows) == [t["ticket_id"] for t in tickets]
    assert all(labels.rows[t["ticket_id"]]["language"] == t["language"] for t in tickets)
    for t in tickets:  # a labelled reference is quoted in the ticket
        reference = labels.rows[t["ticket_id"]].get("order.reference")
        assert reference is None or reference in t["subject"] + t["body"]
    assert sum("product" in r for r in labels.rows.values()) >= 600
    module = load_generator()
    text = (ROOT / "src/dbstruct/data/tickets_labels.jsonl").read_text(encoding="utf-8")
    assert module.render(module.make_labels()) == text


def test_the_generators_check_covers_the_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_generator()
    assert module.main(["--check"]) == 0
    stale = tmp_path / "tickets_labels.jsonl"
    stale.write_text("{}\n")
    monkeypatch.setattr(module, "LABELS_OUT", stale)
    assert module.main(["--check"]) == 1
    assert f"{stale}: differs" in capsys.readouterr().out


# ---------------------------------------------------------------- the command's errors


def test_bad_arguments_and_labels_exit_2_before_spark_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(ROOT / "conf/demo.yml")
    assert main(["evaluate", conf, "--labels", "sample:tickets", "--rows", "-1"]) == 2
    assert "--rows -1: must be 0 or more" in capsys.readouterr().err
    assert main(["evaluate", conf, "--labels", "sample:nothing"]) == 2
    assert "no such sample" in capsys.readouterr().err
    bad = tmp_path / "l.jsonl"
    bad.write_text('{"ticket_id": "TCK-100001", "categroy": "bug"}\n')
    assert main(["evaluate", conf, "--labels", str(bad)]) == 2
    assert "did you mean 'category'?" in capsys.readouterr().err
    assert main(["evaluate", conf, "--labels", "sample:tickets", "--set", "sorce.limit=1"]) == 2
    assert "source" in capsys.readouterr().err


def test_report_without_matplotlib_names_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed: the report is drawn (tests/spark/test_evaluate.py)")
    conf = str(ROOT / "conf/demo.yml")
    assert main(["evaluate", conf, "--labels", "sample:tickets", "--report", "r"]) == 2
    assert REPORT_HINT in capsys.readouterr().err and not Path("r").exists()


def test_every_command_the_help_and_the_docs_show_is_run_by_a_test(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.spark.test_evaluate import COMMANDS

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    shown = {m.strip() for m in re.findall(r"^  (dbstruct .+)$", capsys.readouterr().out, re.M)}
    assert len(shown) == 2 and shown <= set(COMMANDS)
    docs = (ROOT / "docs/EVALUATION.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^(dbstruct .+)$", docs, re.M)) == set(COMMANDS)

"""How often each field of an extraction is right: labels, scores and reports.

    from dbstruct.evaluation import Prediction, read_labels_file, score

    labels = read_labels_file("labels.jsonl", "ticket_id", TicketTriage)
    evaluation = score(labels, {"TCK-1": Prediction(answer), "TCK-2": Prediction(None, "err")})
    evaluation.fields["category"].metrics["accuracy"]

Pure Python, no Spark: labels come from JSON lines, CSV or records here; Parquet files and
tables, and extracting the labelled rows with a job file, are
:mod:`dbstruct.jobs.evaluate`'s (``dbstruct evaluate``). docs/EVALUATION.md defines each
metric.
"""

from __future__ import annotations

from dbstruct.evaluation._evidence import EvidenceRate, evidence_rates
from dbstruct.evaluation._fields import FieldSpec, field_specs
from dbstruct.evaluation._labels import LabelError, Labels, parse_labels, read_labels_file
from dbstruct.evaluation._report import (
    REPORT_HINT,
    EvaluatedRun,
    format_runs,
    headline,
    require_matplotlib,
    runs_to_dict,
    write_report,
)
from dbstruct.evaluation._scores import (
    Disagreement,
    Evaluation,
    FieldScore,
    Prediction,
    normalise_text,
    score,
    token_f1,
)

__all__ = [
    "REPORT_HINT",
    "Disagreement",
    "EvaluatedRun",
    "Evaluation",
    "EvidenceRate",
    "FieldScore",
    "FieldSpec",
    "LabelError",
    "Labels",
    "Prediction",
    "evidence_rates",
    "field_specs",
    "format_runs",
    "headline",
    "normalise_text",
    "parse_labels",
    "read_labels_file",
    "require_matplotlib",
    "runs_to_dict",
    "score",
    "token_f1",
    "write_report",
]

"""Scores: each labelled field's predictions against its labels, exactly (no Spark, no I/O).

    evaluation = score(labels, {"TCK-1": Prediction(answer), "TCK-2": Prediction(None, "...")})
    evaluation.fields["category"].metrics["accuracy"]

Every labelled row of :class:`Labels` is scored: a row without a prediction, or whose
prediction failed, scores 0 on every field labelled in it. Per field, over the rows that
label it (its ``support``; ``unlabelled`` counts the others):

- ``accuracy``: the share of rows whose prediction equals the label (a null label is matched
  by a null prediction). For ``text`` fields, equal after :func:`normalise_text` (null is
  the empty text); for ``set`` fields, the same elements (null is the empty set); for
  ``number`` fields, equal within 1e-9 (``math.isclose``).
- ``text``: ``token_f1``, the mean over rows of the F1 of the normalised tokens (SQuAD's
  rule: tokens counted with repeats; both empty: 1).
- ``set``: ``precision``, ``recall`` and ``f1``, micro-averaged over rows (true positives,
  false positives and false negatives summed first; None when undefined); null is empty.
- ``number``: ``mae``, the mean absolute error over the ``mae_rows`` rows with a non-null
  label and prediction.
- ``missing_prediction``: rows where the row failed, or the label is not null and the
  prediction is.

``category`` and ``boolean`` fields get a confusion matrix: ``confusion[label][prediction]``
counts rows, with ``null`` for a null value and ``failed`` for a failed row.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from dbstruct.evaluation._fields import FieldSpec, Kind, type_adapter
from dbstruct.evaluation._labels import Labels

__all__ = [
    "Disagreement",
    "Evaluation",
    "FieldScore",
    "Prediction",
    "normalise_text",
    "score",
    "token_f1",
]

NULL, FAILED = "null", "failed"
_MISSING = object()


@dataclass(frozen=True)
class Prediction:
    """One row's answer (a model instance or its dict; None when the row failed) and error."""

    value: BaseModel | Mapping[str, Any] | None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class Disagreement:
    """A labelled field whose prediction differs from its label."""

    id: str
    field: str
    label: Any
    prediction: Any
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in vars(self).items()}


@dataclass(frozen=True)
class FieldScore:
    """One field's scores (see the module docstring for each metric)."""

    field: str
    kind: Kind
    support: int
    unlabelled: int
    missing_prediction: int
    correct: int
    metrics: dict[str, float | int | None]
    confusion: dict[str, dict[str, int]] | None = None
    #: a category's or boolean's values, in the model's order (the confusion matrix's order)
    choices: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, **self.metrics}
        out.update(
            support=self.support,
            unlabelled=self.unlabelled,
            missing_prediction=self.missing_prediction,
        )
        if self.confusion is not None:
            out["confusion"] = self.confusion
        return out


@dataclass(frozen=True)
class Evaluation:
    """Every labelled field's scores over ``rows`` rows; ``failed`` maps failed ids to errors."""

    rows: int
    fields: dict[str, FieldScore]
    failed: dict[str, str] = field(default_factory=dict)
    disagreements: tuple[Disagreement, ...] = ()

    def to_dict(self, disagreements: int | None = None) -> dict[str, Any]:
        """As JSON-ready data; ``disagreements`` caps how many are listed (None: all)."""
        listed = self.disagreements[:disagreements] if disagreements is not None else None
        return {
            "rows": self.rows,
            "failed_rows": len(self.failed),
            "fields": {name: s.to_dict() for name, s in self.fields.items()},
            "failed": dict(self.failed),
            "disagreements": len(self.disagreements),
            "disagreeing_rows": [
                d.to_dict() for d in (self.disagreements if listed is None else listed)
            ],
        }


def score(labels: Labels, predictions: Mapping[str, Prediction]) -> Evaluation:
    """Score ``predictions`` (by id, as text) against every labelled row of ``labels``.

    >>> score(labels, {"1": Prediction({"category": "bug"})}).fields["category"].correct
    1
    """
    missing = Prediction(None, "no prediction for this id")
    rows = {row_id: predictions.get(row_id, missing) for row_id in labels.rows}
    failed = {i: p.error or "failed" for i, p in rows.items() if p.failed}
    fields: dict[str, FieldScore] = {}
    disagreements: list[Disagreement] = []
    for path in labels.fields:
        spec = labels.specs[path]
        pairs = [
            (row_id, labels.rows[row_id][path], rows[row_id])
            for row_id in labels.rows
            if path in labels.rows[row_id]
        ]
        fields[path], wrong = _score_field(spec, pairs, len(labels.rows) - len(pairs))
        disagreements.extend(wrong)
    order = {name: i for i, name in enumerate(fields)}
    disagreements.sort(key=lambda d: (d.id, order[d.field]))
    return Evaluation(len(rows), fields, failed, tuple(disagreements))


def _score_field(
    spec: FieldSpec, pairs: list[tuple[str, Any, Prediction]], unlabelled: int
) -> tuple[FieldScore, list[Disagreement]]:
    correct = missing = 0
    wrong: list[Disagreement] = []
    f1s: list[float] = []
    tp = fp = fn = 0
    errors: list[float] = []
    confusion: dict[str, dict[str, int]] | None = (
        {str(c): {} for c in spec.choices} if spec.kind in ("category", "boolean") else None
    )
    for row_id, label, prediction in pairs:
        value: Any = None if prediction.failed else _predicted(spec, prediction.value)
        if prediction.failed or (label is not None and value is None):
            missing += 1
        ok = not prediction.failed and _equal(spec, label, value)
        correct += ok
        if not ok:
            wrong.append(Disagreement(row_id, spec.path, label, value, prediction.error))
        if confusion is not None:
            cell = FAILED if prediction.failed else _key(value)
            row = confusion.setdefault(_key(label), {})
            row[cell] = row.get(cell, 0) + 1
        if spec.kind == "text":
            f1s.append(0.0 if prediction.failed else token_f1(value, label))
        elif spec.kind == "set":
            got, want = _elements(value), _elements(label)
            tp, fp, fn = tp + len(got & want), fp + len(got - want), fn + len(want - got)
        elif spec.kind == "number" and _is_number(label) and _is_number(value):
            errors.append(abs(float(value) - float(label)))
    support = len(pairs)
    metrics: dict[str, float | int | None] = {"accuracy": correct / support if support else None}
    if spec.kind == "text":
        metrics["token_f1"] = sum(f1s) / len(f1s) if f1s else None
    elif spec.kind == "set":
        metrics.update(_micro(tp, fp, fn))
    elif spec.kind == "number":
        metrics.update(mae=sum(errors) / len(errors) if errors else None, mae_rows=len(errors))
    if confusion is not None:
        confusion = {k: v for k, v in confusion.items() if v}
    scores = FieldScore(
        spec.path, spec.kind, support, unlabelled, missing, correct, metrics, confusion,
        tuple(str(c) for c in spec.choices),
    )  # fmt: skip
    return scores, wrong


def _micro(tp: int, fp: int, fn: int) -> dict[str, float | int | None]:
    """Micro precision, recall and F1 from summed counts (None where a denominator is 0)."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1: float | None = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _predicted(spec: FieldSpec, value: BaseModel | Mapping[str, Any] | None) -> Any:
    """The field's predicted value, read as the label was (so that an enum, a date written as
    text, ... compare as values); a value that does not fit is kept as it is."""
    current: Any = value.model_dump() if isinstance(value, BaseModel) else value
    for part in spec.path.split("."):
        if isinstance(current, BaseModel):
            current = current.model_dump()
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    if current is None:
        return None
    adapter: TypeAdapter[Any] = type_adapter(spec)
    try:
        return adapter.validate_python(current)
    except ValidationError:
        return current


def _equal(spec: FieldSpec, label: Any, value: Any) -> bool:
    if spec.kind == "set":
        return _elements(label) == _elements(value)
    if spec.kind == "text":  # a null text is the empty text, as in token_f1
        return normalise_text(str(label or "")) == normalise_text(str(value or ""))
    if label is None or value is None:
        return label is None and value is None
    if spec.kind == "number":
        if not (_is_number(label) and _is_number(value)):
            return False
        return math.isclose(float(label), float(value), rel_tol=1e-9, abs_tol=1e-9)
    return bool(_canonical(label) == _canonical(value))


def _canonical(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return json.dumps(_jsonable(value), sort_keys=True)
    return value


def _elements(value: Any) -> set[Any]:
    return set() if value is None else {_canonical(v) for v in value}


def _key(value: Any) -> str:
    return NULL if value is None else str(_canonical(value))


def normalise_text(text: str) -> str:
    """Casefolded, punctuation and symbols as spaces, whitespace collapsed.

    >>> normalise_text("  Refund,  please!")
    'refund please'
    """
    chars = (" " if unicodedata.category(c)[0] in "PS" else c for c in text.casefold())
    return " ".join("".join(chars).split())


def token_f1(prediction: Any, label: Any) -> float:
    """SQuAD's token F1 of two texts after :func:`normalise_text` (None: no tokens).

    >>> token_f1("refund the invoice", "Refund invoice")
    0.8
    """
    got = normalise_text(str(prediction)).split() if prediction is not None else []
    want = normalise_text(str(label)).split() if label is not None else []
    if not got or not want:
        return float(got == want)
    same = sum((Counter(got) & Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(got), same / len(want)
    return 2 * precision * recall / (precision + recall)


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

"""Labels: the true values of some fields of some rows, keyed by the source's id column.

    labels = read_labels_file("labels.jsonl", "ticket_id", TicketTriage)
    labels.rows["TCK-100003"]   # {"category": "billing", "order.reference": "INV-29842"}

A record holds the id and any subset of the response model's fields: dotted paths for nested
ones (``"order.reference": "INV-1"``) or nested objects (``"order": {"reference": "INV-1"}``).
A missing key is unlabelled; in JSON a ``null`` says the truth is null (it is scored); in CSV
an empty cell is unlabelled and ``null`` says the truth is null; in Parquet and tables (read
by :func:`dbstruct.jobs.evaluate.read_labels`) a null is unlabelled. Ids are compared as
text (``str(id)``), so a label's ``7`` matches a source's ``"7"``.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from dbstruct.errors import ConfigurationError
from dbstruct.evaluation._fields import FieldSpec, field_specs, nested_prefixes, type_adapter

__all__ = ["LabelError", "Labels", "parse_labels", "read_labels_file"]


class LabelError(ConfigurationError):
    """Labels that cannot be read, or do not fit the response model (``dbstruct evaluate``
    exits 2)."""


@dataclass(frozen=True)
class Labels:
    """Validated labels: ``rows[id][path]`` is a field's true value (None: the truth is null);
    a path absent from ``rows[id]`` is unlabelled in that row."""

    id_column: str
    source: str
    specs: dict[str, FieldSpec]
    rows: dict[str, dict[str, Any]]

    @property
    def fields(self) -> tuple[str, ...]:
        """The paths labelled in at least one row, in the model's order."""
        used = {path for row in self.rows.values() for path in row}
        return tuple(p for p in self.specs if p in used)

    def restrict(self, ids: Collection[str]) -> Labels:
        """These labels for ``ids`` only (the rows a source holds)."""
        return replace(self, rows={i: r for i, r in self.rows.items() if i in ids})


def parse_labels(
    records: Iterable[Mapping[str, Any]],
    id_column: str,
    model: type[BaseModel],
    *,
    source: str = "labels",
    null: Literal["truth", "unlabelled"] = "truth",
    free_text: Collection[str] | None = None,
    text_cells: bool = False,
) -> Labels:
    """Labels from ``records`` (one mapping per row), checked against ``model``.

    ``null``: what a null value means; ``text_cells``: values are CSV text (``null``, JSON
    lists and objects, ``true``, numbers are read from it).

    >>> parse_labels([{"id": 1, "category": "bug"}], "id", TicketTriage).rows
    {'1': {'category': 'bug'}}
    """
    specs = field_specs(model, free_text=free_text)
    prefixes = nested_prefixes(specs)
    rows: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(records, start=1):
        key = record.get(id_column)
        if key is None or key == "":
            raise LabelError(f"labels {source}: record {number} has no {id_column!r}")
        row_id = str(key)
        if row_id in rows:
            raise LabelError(f"labels {source}: id {row_id!r} is labelled twice")
        flat: dict[str, Any] = {}
        for name, value in record.items():
            if name != id_column:
                _flatten(name, value, specs, prefixes, flat, f"labels {source}: row {row_id!r}")
        rows[row_id] = {
            path: _validate(specs[path], value, text_cells, f"labels {source}: row {row_id!r}")
            for path, value in flat.items()
            if not (value is None and null == "unlabelled") and not (text_cells and value == "")
        }
    labels = Labels(id_column, source, specs, rows)
    if not labels.fields:
        raise LabelError(
            f"labels {source}: no field of {model.__name__} is labelled in any row "
            f"(fields: {', '.join(specs)})"
        )
    return labels


def read_labels_file(
    path: str | Path,
    id_column: str,
    model: type[BaseModel],
    *,
    free_text: Collection[str] | None = None,
) -> Labels:
    """Labels from a JSON-lines (``.jsonl``, ``.json``) or CSV (``.csv``) file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise LabelError(f"labels {path}: expected a .jsonl, .json or .csv file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LabelError(f"labels {path}: cannot read it ({e.strerror or e})") from None
    if suffix == ".csv":
        records: list[dict[str, Any]] = list(csv.DictReader(text.splitlines()))
        return parse_labels(
            records, id_column, model, source=str(path), free_text=free_text, text_cells=True
        )
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelError(f"labels {path}: line {number} is not JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise LabelError(f"labels {path}: line {number} is not a JSON object")
        records.append(record)
    return parse_labels(records, id_column, model, source=str(path), free_text=free_text)


def _flatten(
    name: str,
    value: Any,
    specs: Mapping[str, FieldSpec],
    prefixes: set[str],
    out: dict[str, Any],
    where: str,
) -> None:
    if name in specs:
        out[name] = value
    elif name in prefixes:
        leaves = [p for p in specs if p.startswith(name + ".")]
        if value is None:  # the nested object is null: so is each of its fields
            out.update(dict.fromkeys(leaves))
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                _flatten(f"{name}.{key}", inner, specs, prefixes, out, where)
        elif isinstance(value, str) and value.strip().startswith("{"):  # CSV: JSON text
            _flatten(name, _json(value, name, where), specs, prefixes, out, where)
        else:
            raise LabelError(f"{where}: {name}: expected an object, got {value!r}")
    else:
        choices = [*specs, *sorted(prefixes)]
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LabelError(f"{where}: unknown field {name!r}{hint} (fields: {', '.join(specs)})")


def _validate(spec: FieldSpec, value: Any, text_cells: bool, where: str) -> Any:
    if text_cells and isinstance(value, str):
        if value == "null":
            return None
        if spec.kind in ("set", "exact") and value.strip()[:1] in ("[", "{"):
            value = _json(value, spec.path, where)
    if value is None:
        return None
    try:
        return type_adapter(spec).validate_python(value)
    except ValidationError as e:
        problem = e.errors()[0]["msg"] if e.errors() else str(e)
        raise LabelError(f"{where}: {spec.path}: {value!r} does not fit: {problem}") from None


def _json(text: str, path: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelError(f"{where}: {path}: {text!r} is not JSON ({e.msg})") from None

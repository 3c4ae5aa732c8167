"""Undoing strict mode's reshaping of an answer, so the response model can validate it.

Strict schemas (``compile_schema(model, strict=True)``) make fields with defaults nullable
(``null`` there means "use the default") and send ``dict[str, T]`` as a list of
``{"key", "value"}`` pairs. The compiler records where it did so in a :data:`Plan`;
:func:`decode` walks an answer along it, dropping those nulls and turning pairs back into a
dict. Anything unexpected is left as it is, for Pydantic to reject.

    >>> decode(ObjectPlan((FieldPlan("note", drop_null=True, plan=None),)), {"note": None})
    {}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ArrayPlan", "FieldPlan", "ObjectPlan", "PairsPlan", "Plan", "decode"]


@dataclass(frozen=True)
class FieldPlan:
    key: str
    drop_null: bool  # strict mode made it nullable: null means "use the default"
    plan: Plan | None


@dataclass(frozen=True)
class ObjectPlan:
    fields: tuple[FieldPlan, ...]


@dataclass(frozen=True)
class ArrayPlan:
    items: Plan


@dataclass(frozen=True)
class PairsPlan:
    values: Plan | None


Plan = ObjectPlan | ArrayPlan | PairsPlan


def decode(plan: Plan | None, data: Any) -> Any:
    """Undo strict mode's reshaping; anything unexpected is left for Pydantic to reject."""
    if plan is None or data is None:
        return data
    if isinstance(plan, ArrayPlan):
        return [decode(plan.items, x) for x in data] if isinstance(data, list) else data
    if isinstance(plan, PairsPlan):
        if not (isinstance(data, list) and all(isinstance(e, dict) and "key" in e for e in data)):
            return data
        return {str(e["key"]): decode(plan.values, e.get("value")) for e in data}
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for f in plan.fields:
        if f.key not in out:
            continue
        if out[f.key] is None and f.drop_null:
            del out[f.key]
        else:
            out[f.key] = decode(f.plan, out[f.key])
    return out

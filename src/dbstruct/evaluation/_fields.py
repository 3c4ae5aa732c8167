"""What each field of a response model is scored as: its dotted path and its kind.

    specs = field_specs(TicketTriage)
    specs["order.reference"].kind   # "exact"
    specs["summary"].kind           # "text": the free-text rule below

Nested models become dotted paths (``order.reference``); ``X | None`` is read as ``X``.
The kinds: ``category`` (Literal, Enum), ``boolean``, ``integer``, ``date`` (date, datetime,
time), ``exact`` (strings that are not free text, and anything else compared as a whole),
``text`` (free text), ``set`` (list, set, tuple) and ``number`` (float, Decimal).

The free-text rule: a ``str`` field is free text when its name has one of :data:`PROSE_NAMES`
as a word (``summary``, ``issue_description``) or its description one of
:data:`PROSE_WORDS` (``"One sentence in English: ..."``); ``free_text=`` replaces the rule
by a list of dotted paths.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import re
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, TypeAdapter

__all__ = [
    "PROSE_NAMES",
    "PROSE_WORDS",
    "FieldSpec",
    "Kind",
    "field_specs",
    "nested_prefixes",
    "type_adapter",
]

Kind = Literal["category", "boolean", "integer", "date", "exact", "text", "set", "number"]

#: words of a field's name that make a str field free text
PROSE_NAMES = frozenset(
    "summary description explanation reason reasoning rationale comment comments note notes "
    "answer message body abstract".split()
)
#: words of a field's description that make a str field free text
PROSE_WORDS = frozenset("sentence sentences paragraph paragraphs prose summary summarise".split())


@dataclass(frozen=True)
class FieldSpec:
    """One scored field: its dotted path, kind, type (labels are validated against it) and,
    for a category, its values in the model's order."""

    path: str
    kind: Kind
    annotation: Any
    choices: tuple[str, ...] = ()


def field_specs(
    model: type[BaseModel], *, free_text: Collection[str] | None = None
) -> dict[str, FieldSpec]:
    """Every leaf field of ``model`` by dotted path, in the model's order.

    >>> field_specs(TicketTriage)["category"].choices[:2]
    ('billing', 'bug')
    """
    specs: dict[str, FieldSpec] = {}
    _walk(model, "", specs, free_text)
    return specs


def nested_prefixes(specs: Collection[str]) -> set[str]:
    """The paths of the nested models (``order`` for ``order.reference``)."""
    return {".".join(p.split(".")[:i]) for p in specs for i in range(1, p.count(".") + 1)}


def _walk(
    model: type[BaseModel], prefix: str, out: dict[str, FieldSpec], free: Collection[str] | None
) -> None:
    for name, info in model.model_fields.items():
        path = prefix + name
        annotation = _unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _walk(annotation, path + ".", out, free)
            continue
        kind, choices = _kind(annotation)
        if kind == "exact" and annotation is str and _is_prose(name, info.description, path, free):
            kind = "text"
        out[path] = FieldSpec(path, kind, annotation, choices)


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _kind(annotation: Any) -> tuple[Kind, tuple[str, ...]]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "category", tuple(str(a) for a in typing.get_args(annotation))
    if origin in (list, set, frozenset, tuple) or annotation in (list, set, frozenset, tuple):
        return "set", ()
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "category", tuple(str(m.value) for m in annotation)
        if issubclass(annotation, bool):
            return "boolean", ("False", "True")
        if issubclass(annotation, int):
            return "integer", ()
        if issubclass(annotation, (float, decimal.Decimal)):
            return "number", ()
        if issubclass(annotation, (dt.date, dt.time)):  # datetime is a date
            return "date", ()
    return "exact", ()


def _is_prose(name: str, description: str | None, path: str, free: Collection[str] | None) -> bool:
    if free is not None:
        return path in free
    if set(name.lower().split("_")) & PROSE_NAMES:
        return True
    return bool(set(re.findall(r"[a-z]+", (description or "").lower())) & PROSE_WORDS)


_ADAPTERS: dict[tuple[str, str], TypeAdapter[Any]] = {}


def type_adapter(spec: FieldSpec) -> TypeAdapter[Any]:
    """The validator of ``spec``'s type (labels and predictions are read through it)."""
    key = (spec.path, repr(spec.annotation))
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(spec.annotation)
    return _ADAPTERS[key]

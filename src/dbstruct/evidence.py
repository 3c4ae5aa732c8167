"""Evidence: a verbatim quote for each top-level field, found in the source text by dbstruct.

With evidence on, the request's schema is the response model's plus one property, in the same
request (no second call)::

    "evidence": [{"field": "<one of the model's top-level field names>",
                  "quote": "<words copied exactly from the text>"}, ...]

One array of two-key objects whatever the model's size: it adds 3 keys (``evidence``,
``field``, ``quote``) to what Databricks counts against its limits (16 in a tool's schema, 64
in a response format). The answer is validated as the model plus that list
(:func:`wire_model`); then the list is taken off, so the value is the response model itself,
and each quote is searched in the source text **here** (:func:`locate`): offsets are computed
locally, never taken from the model, and a quote that is not in the text is kept with
``found=False`` (flagged, never silently kept as support).

Where a quote is searched: the row's input text in Spark (several input columns: their values
joined by a newline, in the UDF's argument order); the user messages' text (joined by a
newline) for :meth:`dbstruct.client.StructuredClient.create_with_evidence`; each text for
``extract_many(..., evidence=True)``. A quote is found when it occurs exactly, else when it
occurs after both sides are lower-cased, runs of whitespace made one space and typographic
quotes made plain (a model that re-spaces or re-cases a quote still cites the text); the
offsets then point at the original characters. A field with several quotes keeps the first
found one (else the first); a field with none has ``quote=None, found=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from dbstruct.errors import ConfigurationError, SchemaError
from dbstruct.modes import Mode, ResponseTarget, build_request

__all__ = [
    "EVIDENCE_FIELD",
    "Evidence",
    "FieldEvidence",
    "evidence_model",
    "evidence_of",
    "evidence_type",
    "locate",
    "output_model",
    "source_text",
    "split",
    "wire_model",
    "with_evidence",
]

M = TypeVar("M", bound=BaseModel)

#: pydantic's create_model, untyped: its overloads cannot express fields built at run time
_create: Any = create_model

#: the property the model answers its quotes in, and the Spark struct's field
EVIDENCE_FIELD = "evidence"

_ASK = (
    "For each field you filled, a quote copied exactly, word for word, from the text that "
    "supports its value: the field's name in 'field' and the quote in 'quote'. Do not "
    "paraphrase; leave out fields that the text does not support."
)
_QUOTE = "words copied exactly from the text"


class FieldEvidence(BaseModel):
    """The evidence for one field: the model's quote and where dbstruct found it."""

    model_config = ConfigDict(frozen=True)

    #: the quote as the model gave it; None when it gave none for this field
    quote: str | None = None
    #: whether the quote occurs in the source text (see the module docstring)
    found: bool = False
    #: ``source[start:end]`` is the quoted passage; None when not found
    start: int | None = None
    end: int | None = None


class Evidence(BaseModel):
    """The evidence of one answer: a :class:`FieldEvidence` per top-level field of the
    response model (a class per model, built by :func:`evidence_type`).

    >>> evidence["category"].found, evidence.found_fields()
    """

    model_config = ConfigDict(frozen=True)

    def __getitem__(self, name: str) -> FieldEvidence:
        value = getattr(self, name, None)
        if not isinstance(value, FieldEvidence):
            known = ", ".join(type(self).model_fields)
            raise KeyError(f"{name!r} is not a field of this evidence; fields: {known}")
        return value

    def found_fields(self) -> list[str]:
        """The fields whose quote was found in the text."""
        return [name for name in type(self).model_fields if self[name].found]


def _field_names(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(attribute, name the model sees in the schema) of each top-level field."""
    out = []
    for attr, info in model.model_fields.items():
        if info.exclude is True:
            continue
        out.append((attr, info.serialization_alias or info.alias or attr))
    return out


def _check_model(model: type[BaseModel]) -> None:
    names = {name for pair in _field_names(model) for name in pair}
    if EVIDENCE_FIELD in names:
        raise ConfigurationError(
            f"{model.__name__} has a field named {EVIDENCE_FIELD!r}, where evidence=True puts "
            f"its quotes; rename that field (or give it an alias) to use evidence"
        )
    if not names:
        raise ConfigurationError(f"{model.__name__} has no fields to give evidence for")


@lru_cache(maxsize=256)
def wire_model(model: type[M]) -> type[M]:
    """What the endpoint is asked for and its answer validated as: ``model`` plus the
    ``evidence`` list (a subclass, with the same name, so tools and schemas keep it)."""
    _check_model(model)
    names = tuple(name for _attr, name in _field_names(model))
    quote = _create(
        f"{model.__name__}Quote",
        field=(Literal[names], Field(description="the field's name")),
        quote=(str, Field(description=_QUOTE)),
    )
    wire: type[M] = _create(
        model.__name__,
        __base__=model,
        __module__=model.__module__,
        **{EVIDENCE_FIELD: (list[quote], Field(description=_ASK))},  # type: ignore[valid-type]
    )
    wire.__doc__ = model.__doc__  # the tool's description stays the model's
    return wire


def evidence_model(model: type[M], mode: Mode) -> type[M]:
    """:func:`wire_model`, refused when ``mode`` cannot carry it: PARALLEL_TOOLS (several
    models in one answer), or a schema the 3 added keys take over Databricks' limits."""
    if mode is Mode.PARALLEL_TOOLS:
        raise ConfigurationError(
            f"evidence=True needs one response model per answer; {mode} answers with several "
            "tool calls: use Mode.TOOLS"
        )
    wire: type[M] = wire_model(model)
    try:  # the key limits of the mode's tool or response format, before anything is sent
        build_request(mode, ResponseTarget.of(wire), [{"role": "user", "content": "-"}])
    except SchemaError as e:
        raise SchemaError(
            f"{e} (evidence=True added 3 keys: {EVIDENCE_FIELD}, field, quote)",
            model=model.__name__,
        ) from e
    return wire


@lru_cache(maxsize=256)
def evidence_type(model: type[BaseModel]) -> type[Evidence]:
    """The :class:`Evidence` class of ``model``: a :class:`FieldEvidence` per top-level field
    (its Spark struct is ``struct<field: struct<quote, found, start, end>, ...>``)."""
    _check_model(model)
    fields: dict[str, Any] = {
        attr: (
            FieldEvidence,
            Field(default_factory=FieldEvidence, alias=None if attr == name else name),
        )
        for attr, name in _field_names(model)
    }
    made: type[Evidence] = _create(
        f"{model.__name__}Evidence", __base__=Evidence, __module__=model.__module__, **fields
    )
    return made


@lru_cache(maxsize=256)
def output_model(model: type[M]) -> type[M]:
    """``model`` plus its located ``evidence`` (what a Spark UDF with evidence returns)."""
    out: type[M] = _create(
        model.__name__,
        __base__=model,
        __module__=model.__module__,
        **{EVIDENCE_FIELD: (evidence_type(model) | None, None)},
    )
    return out


# ------------------------------------------------------------------ splitting an answer


def split(value: BaseModel, model: type[M], source: str) -> tuple[M, Evidence]:
    """``value`` (a :func:`wire_model` instance) as a ``model`` instance, and its quotes
    located in ``source``."""
    plain = model.model_construct(
        _fields_set=value.model_fields_set - {EVIDENCE_FIELD},
        **{attr: getattr(value, attr) for attr in model.model_fields},
    )
    return plain, _evidence(model, getattr(value, EVIDENCE_FIELD, None) or [], source)


def with_evidence(value: BaseModel, model: type[M], source: str) -> M:
    """``value`` (a :func:`wire_model` instance) as an :func:`output_model` instance."""
    out = output_model(model)
    fields = {attr: getattr(value, attr) for attr in model.model_fields}
    located = _evidence(model, getattr(value, EVIDENCE_FIELD, None) or [], source)
    made: M = out.model_construct(
        _fields_set=value.model_fields_set, **fields, **{EVIDENCE_FIELD: located}
    )
    return made


def _evidence(model: type[BaseModel], quotes: Sequence[Any], source: str) -> Evidence:
    by_name = {name: attr for attr, name in _field_names(model)}
    chosen: dict[str, FieldEvidence] = {}
    for entry in quotes:
        attr = by_name.get(getattr(entry, "field", None) or "")
        quote = getattr(entry, "quote", None)
        if attr is None or not isinstance(quote, str):
            continue
        if attr in chosen and chosen[attr].found:
            continue
        span = locate(quote, source)
        found = FieldEvidence(
            quote=quote,
            found=span is not None,
            start=None if span is None else span[0],
            end=None if span is None else span[1],
        )
        if attr not in chosen or found.found:
            chosen[attr] = found
    made: Evidence = evidence_type(model).model_construct(None, **chosen)
    return made


def evidence_of(value: BaseModel) -> Evidence:
    """The located evidence of a value extracted with ``evidence=True`` (typed access to
    ``value.evidence``)."""
    found = getattr(value, EVIDENCE_FIELD, None)
    if not isinstance(found, Evidence):
        raise ConfigurationError(
            f"this {type(value).__name__} has no evidence: extract it with evidence=True"
        )
    return found


def source_text(messages: Sequence[Any]) -> str:
    """The text quotes are searched in for a chat call: its user messages, newline-joined."""
    texts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):  # content parts
            texts.extend(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return "\n".join(texts)


# ------------------------------------------------------------------ finding a quote

_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_EDGES = " \t\r\n\"'\u2018\u2019\u201c\u201d"


def locate(quote: str, text: str) -> tuple[int, int] | None:
    """Where ``quote`` occurs in ``text`` as ``(start, end)`` offsets of ``text``, or None.

    Exact first; else lower-cased, whitespace runs as one space, typographic quotes plain.
    Surrounding whitespace and quotation marks of ``quote`` are not part of it.

    >>> locate("Order  #123", "my order #123 is late")
    (3, 13)
    """
    needle = quote.strip(_EDGES)
    if not needle:
        return None
    at = text.find(needle)
    if at >= 0:
        return at, at + len(needle)
    folded, origin = _fold(text)
    wanted, _ = _fold(needle)
    at = folded.find(wanted)
    if at < 0 or not wanted:
        return None
    return origin[at], origin[at + len(wanted) - 1] + 1


def _fold(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased, whitespace runs as one space, quotes plain; and for each
    character of the result, the index in ``text`` it came from."""
    out: list[str] = []
    origin: list[int] = []
    space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            if not space and out:
                out.append(" ")
                origin.append(i)
            space = True
            continue
        space = False
        for piece in ch.translate(_PLAIN).lower():
            out.append(piece)
            origin.append(i)
    if out and out[-1] == " ":
        out.pop()
        origin.pop()
    return "".join(out), origin

"""Pydantic models -> the JSON-schema subset Databricks serving endpoints accept.

Databricks rejects ``pattern``, ``anyOf``/``oneOf``/``allOf``, ``prefixItems``,
``$ref`` and type lists other than ``[type, "null"]``
(https://docs.databricks.com/aws/en/machine-learning/model-serving/function-calling#json-schema,
https://docs.databricks.com/aws/en/machine-learning/model-serving/structured-outputs),
and ``model_json_schema()`` uses all of them. :func:`compile_schema` rewrites a
model's schema into the subset; whatever it drops, Pydantic still enforces when
the client validates the answer with the real model (and re-asks on errors).

    >>> compiled = compile_schema(Review)
    >>> compiled.parameters["properties"]["stars"]
    {'type': 'integer', 'description': 'Star rating, 1 to 5 (1 <= value <= 5)'}

What the compiler does, and the choices where the docs are silent:

- Output keywords are only ``type``, ``description``, ``enum``, ``properties``,
  ``required``, ``additionalProperties`` and ``items``: the core every endpoint
  takes. ``title``, ``default``, ``examples`` and unknown keys are dropped.
- ``$ref`` (nested models, enums) is inlined everywhere. Recursive models
  cannot be inlined: :class:`~dbstruct.errors.SchemaError` names the field.
- ``Optional[T]`` becomes T's schema with ``"type": [T, "null"]`` (and ``null``
  in its ``enum``). ``Literal``/``Enum`` become ``enum`` (``const`` too).
- Constraints (``pattern``, lengths, bounds, ``multipleOf``, item counts,
  ``uniqueItems``, ``format``, Decimal digits) leave the schema: Databricks
  rejects ``pattern`` and does not enforce size keywords, and OpenAI strict mode
  takes only some formats. Their meaning stays in the description as a hint:
  ``"pattern ^[A-Z]{3}-\\d{4}$"``, ``"date, YYYY-MM-DD"``, or after the field's
  own text, ``"Star rating, 1 to 5 (1 <= value <= 5)"``. Short defaults and
  examples are hinted the same way.
- Decimal is ``number`` (Pydantic parses numbers exactly enough for money);
  tuples and sets are arrays; a tuple of mixed scalar types gets untyped items.
- A union of scalar types (``int | str``) or ``Any`` has no type the subset can
  say; without strict it is left untyped, with a hint ("integer or string"):
  the docs list no rule against a schema without ``type``, and Pydantic checks.
  Unions involving objects or arrays raise :class:`SchemaError`.
- ``strict=True`` (OpenAI strict structured outputs, GPT endpoints): every
  object gets ``"additionalProperties": false`` and all its properties in
  ``required``; fields with defaults become nullable, and ``null`` there means
  "use the default". ``dict[str, T]`` cannot be said in strict mode, so it is
  sent as a list of ``{"key", "value"}`` pairs. :meth:`CompiledSchema.decode`
  turns such answers back into what the model validates (drop those nulls,
  pairs -> dict); without strict it returns its input unchanged. Untyped
  schemas (``Any``, mixed unions) raise :class:`SchemaError` in strict mode.

The key limits (16 per tool, 64 per ``response_format``) are not enforced here,
since the caller picks the mode: ``CompiledSchema.key_count`` tells it the count.

Results are cached per ``(model, strict)``; the returned object and its dicts are
shared, so callers must not mutate them (``fresh_parameters()`` gives a copy).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel
from pydantic.errors import PydanticUserError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from dbstruct._json_schema_decode import (
    ArrayPlan,
    FieldPlan,
    ObjectPlan,
    PairsPlan,
    Plan,
    decode,
)
from dbstruct._json_schema_hints import array_hints, scalar_hints, with_description
from dbstruct._json_schema_rules import count_keys
from dbstruct.errors import SchemaError

__all__ = ["CompiledSchema", "compile_schema"]

_NAME_OK = re.compile(r"[^a-zA-Z0-9_-]")
_SCALARS = frozenset({"string", "number", "integer", "boolean", "null"})
_CACHE_SIZE = 512


@dataclass(frozen=True)
class CompiledSchema:
    """A response model compiled for Databricks ``tools`` or ``response_format``.

    Shared and cached: treat ``parameters`` as read-only.

        >>> c = compile_schema(Ticket)
        >>> tool = {"type": "function", "function": {
        ...     "name": c.name, "description": c.description, "parameters": c.parameters}}
        >>> Ticket.model_validate(c.decode(json.loads(arguments)))
    """

    #: function / json_schema name, matching ``^[a-zA-Z0-9_-]{1,64}$``
    name: str
    #: the model's docstring, else "Extract a <Name>."
    description: str
    #: the compiled JSON schema (``"type": "object"``); do not mutate
    parameters: dict[str, Any]
    #: ``parameters`` serialized compactly, for prompts
    json: str
    #: whether this is the strict-mode compilation
    strict: bool = False
    #: property names in the schema: the unit of Databricks' key limits (16 tools, 64 schemas)
    key_count: int = 0
    _plan: Plan | None = field(default=None, repr=False, compare=False)

    def decode(self, data: Any) -> Any:
        """Turn a parsed answer into the input the model validates (identity without strict)."""
        return decode(self._plan, data)

    def fresh_parameters(self) -> dict[str, Any]:
        """A private deep copy of ``parameters``, safe to modify."""
        copy: dict[str, Any] = json.loads(self.json)
        return copy


def compile_schema(model: type[BaseModel], *, strict: bool = False) -> CompiledSchema:
    """Compile ``model`` into the schema subset Databricks accepts; cached per ``(model, strict)``.

        >>> compile_schema(Order).parameters["properties"]["placed_on"]
        {'type': 'string', 'description': 'date, YYYY-MM-DD'}

    Raises :class:`~dbstruct.errors.SchemaError` (naming the model and field) for
    recursive models, unions involving objects or arrays, and, in strict mode,
    fields without a JSON type (``Any``, ``int | str``).
    """
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise SchemaError(f"expected a pydantic BaseModel class, got {model!r}")
    return _compile_cached(model, bool(strict))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_cached(model: type[BaseModel], strict: bool) -> CompiledSchema:
    try:
        raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    except PydanticUserError as e:
        raise SchemaError(f"{model.__name__}: {e}", model=model.__name__) from e
    ctx = _Ctx(model=model.__name__, defs=raw.get("$defs", {}), strict=strict)
    params, plan = _compile(raw, ctx)
    if params.get("type") != "object":
        raise SchemaError(
            f"{model.__name__} does not compile to a JSON object", model=model.__name__
        )
    params.pop("description", None)  # sent once, as CompiledSchema.description
    return CompiledSchema(
        name=_tool_name(model),
        description=_model_description(model),
        parameters=params,
        json=json.dumps(params, separators=(",", ":"), ensure_ascii=False),
        strict=strict,
        key_count=count_keys(params),
        _plan=plan,
    )


def _tool_name(model: type[BaseModel]) -> str:
    return _NAME_OK.sub("_", model.__name__)[:64] or "Response"


def _model_description(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")  # not BaseModel's own docstring
    text = inspect.cleandoc(doc) if isinstance(doc, str) else ""
    return text or f"Extract a {model.__name__}."


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, with Decimal as a number (Pydantic accepts numbers for it)."""

    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        def num(key: str) -> float | None:
            value: Any = schema.get(key)
            return None if value is None else float(value)

        js = self.float_schema(
            core_schema.float_schema(
                multiple_of=num("multiple_of"),
                le=num("le"),
                ge=num("ge"),
                lt=num("lt"),
                gt=num("gt"),
            )
        )
        # Private keys, read back by _number_hints and never emitted.
        if schema.get("max_digits") is not None:
            js["x-max-digits"] = schema["max_digits"]
        if schema.get("decimal_places") is not None:
            js["x-decimal-places"] = schema["decimal_places"]
        return js


# --------------------------------------------------------------------------- compiling


@dataclass(frozen=True)
class _Ctx:
    model: str
    defs: dict[str, Any]
    strict: bool
    stack: tuple[str, ...] = ()  # $defs being inlined: a repeat is recursion
    field: str | None = None  # nearest enclosing property, for error messages

    def error(self, why: str) -> SchemaError:
        where = f"field {self.field!r}" if self.field else "the model"
        inner = f" (in {self.stack[-1]})" if self.stack and self.stack[-1] != self.model else ""
        return SchemaError(
            f"cannot compile {self.model}: {where}{inner} {why}",
            model=self.model,
            field=self.field,
        )


def _compile(node: Any, ctx: _Ctx) -> tuple[dict[str, Any], Plan | None]:
    node, ctx = _resolve(node, ctx)
    if "anyOf" in node or "oneOf" in node:
        return _compile_union(node, ctx)
    kind = node.get("type")
    if isinstance(kind, list):
        alts = [{"type": t} for t in kind]
        rest = {k: v for k, v in node.items() if k != "type"}
        return _compile_union({**rest, "anyOf": alts}, ctx)
    return _compile_single(node, ctx)


def _resolve(node: Any, ctx: _Ctx) -> tuple[dict[str, Any], _Ctx]:
    """Inline ``$ref`` and one-element ``allOf``; keywords beside them (a description) win."""
    if not isinstance(node, dict):
        raise ctx.error(f"has a schema that is not an object: {node!r}")
    while True:
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name in ctx.stack:
                raise ctx.error(
                    f"refers back to {name}: recursive models cannot be inlined, and "
                    "Databricks does not support $ref"
                )
            if name not in ctx.defs:
                raise ctx.error(f"refers to an unknown schema {node['$ref']!r}")
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node, ctx = {**ctx.defs[name], **siblings}, replace(ctx, stack=(*ctx.stack, name))
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            rest = {k: v for k, v in node.items() if k != "allOf"}
            node = {**node["allOf"][0], **rest}
        elif "allOf" in node:
            raise ctx.error("combines schemas with allOf, which Databricks does not support")
        else:
            return node, ctx


def _compile_union(node: dict[str, Any], ctx: _Ctx) -> tuple[dict[str, Any], Plan | None]:
    branches = node.get("anyOf") or node.get("oneOf") or []
    outer = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf", "discriminator")}
    non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
    nullable = len(non_null) < len(branches)
    if len(non_null) == 1:
        branch, bctx = _resolve(non_null[0], ctx)
        schema, plan = _compile({**branch, **outer}, bctx)
        return (_add_null(schema) if nullable else schema), plan
    if ctx.strict:
        raise ctx.error("is a union of several types; strict mode needs one type per schema")
    compiled = [_compile(b, ctx)[0] for b in non_null]
    kinds = [c.get("type") for c in compiled]
    if not all(isinstance(k, str) and k in _SCALARS for k in kinds):
        raise ctx.error(
            "is a union involving objects or arrays; Databricks does not support anyOf/oneOf"
        )
    names = list(dict.fromkeys(str(k) for k in kinds)) + (["null"] if nullable else [])
    return with_description(outer, {}, [" or ".join(names)]), None


def _compile_single(node: dict[str, Any], ctx: _Ctx) -> tuple[dict[str, Any], Plan | None]:
    kind = node.get("type")
    enum = node.get("enum", [node["const"]] if "const" in node else None)
    if kind is None and enum is not None:
        kind = _enum_type(enum)
        if kind is None and ctx.strict:
            raise ctx.error("is a Literal/Enum of mixed types; strict mode needs one type")
    if kind is None and enum is None:
        if ctx.strict:
            raise ctx.error("has no JSON type (Any); strict mode needs a type on every schema")
        return with_description(node, {}, []), None
    if kind == "object":
        return _compile_object(node, ctx)
    if kind == "array":
        return _compile_array(node, ctx)
    out: dict[str, Any] = {} if kind is None else {"type": kind}
    schema = with_description(node, out, scalar_hints(node, kind))
    if enum is not None:
        schema["enum"] = list(enum)
        if None in enum and kind is not None:
            schema = _add_null(schema)
    return schema, None


def _enum_type(values: list[Any]) -> str | None:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean"
    if present and all(isinstance(v, str) for v in present):
        return "string"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "integer"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "number"
    return None


def _add_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also accepts null; key order kept."""
    kind = schema.get("type")
    out = dict(schema)
    if isinstance(kind, str) and kind != "null":
        out["type"] = [kind, "null"]
    if isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out


def _is_nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind is None or kind == "null" or (isinstance(kind, list) and "null" in kind)


def _compile_object(node: dict[str, Any], ctx: _Ctx) -> tuple[dict[str, Any], Plan | None]:
    props = node.get("properties")
    extra = node.get("additionalProperties")
    if props is None and extra is not False:
        return _compile_dict(node, ctx)
    out: dict[str, Any] = {"type": "object"}
    schema = with_description(node, out, [])
    required_by_model = set(node.get("required", []))
    properties: dict[str, Any] = {}
    fields: list[FieldPlan] = []
    for name, sub in (props or {}).items():
        prop, plan = _compile(sub, replace(ctx, field=name))
        drop_null = ctx.strict and name not in required_by_model and not _is_nullable(prop)
        properties[name] = _add_null(prop) if drop_null else prop
        if drop_null or plan is not None:
            fields.append(FieldPlan(name, drop_null, plan))
    schema["properties"] = properties
    if ctx.strict:
        schema["required"] = list(properties)
        schema["additionalProperties"] = False
    else:
        required = [n for n in properties if n in required_by_model]
        if required:
            schema["required"] = required
        if extra is False:  # extra="forbid": meaningful, and accepted
            schema["additionalProperties"] = False
    return schema, (ObjectPlan(tuple(fields)) if fields else None)


def _compile_dict(node: dict[str, Any], ctx: _Ctx) -> tuple[dict[str, Any], Plan | None]:
    """``dict[str, T]``: additionalProperties, or key/value pairs in strict mode."""
    extra = node.get("additionalProperties")
    value, plan = _compile(extra, ctx) if isinstance(extra, dict) and extra else (None, None)
    if not ctx.strict:
        schema = with_description(node, {"type": "object"}, [])
        if value is not None:
            schema["additionalProperties"] = value
        return schema, None
    if value is None:
        raise ctx.error("is a mapping of Any values; strict mode needs a type for the values")
    pair = {
        "type": "object",
        "properties": {"key": {"type": "string"}, "value": value},
        "required": ["key", "value"],
        "additionalProperties": False,
    }
    schema = with_description(node, {"type": "array"}, ["key/value pairs"])
    schema["items"] = pair
    return schema, PairsPlan(plan)


def _compile_array(node: dict[str, Any], ctx: _Ctx) -> tuple[dict[str, Any], Plan | None]:
    schema = with_description(node, {"type": "array"}, array_hints(node))
    prefix = node.get("prefixItems")
    items = node.get("items")
    if isinstance(prefix, list) and prefix:
        item, plan = _tuple_items(prefix, items, ctx)
    elif isinstance(items, dict) and items:
        item, plan = _compile(items, ctx)
    elif ctx.strict:
        raise ctx.error("is a list of Any; strict mode needs a type for the items")
    else:
        return schema, None
    schema["items"] = item
    return schema, (ArrayPlan(plan) if plan is not None else None)


def _tuple_items(prefix: list[Any], rest: Any, ctx: _Ctx) -> tuple[dict[str, Any], Plan | None]:
    """Fixed-position items (prefixItems is unsupported): one schema if they agree."""
    parts = [_compile(p, ctx) for p in prefix]
    if isinstance(rest, dict) and rest:
        parts.append(_compile(rest, ctx))
    distinct = {json.dumps(s, sort_keys=True): (s, p) for s, p in parts}
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    if ctx.strict:
        raise ctx.error("is a tuple of mixed types; strict mode needs one item type")
    kinds = [s.get("type") for s, _ in parts]
    if not all(isinstance(k, str) and k in _SCALARS for k in kinds):
        raise ctx.error("is a tuple mixing objects or arrays, which needs prefixItems")
    return {"description": "; ".join(f"item {i + 1}: {k}" for i, k in enumerate(kinds))}, None

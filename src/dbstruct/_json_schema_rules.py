"""The JSON-schema subset Databricks model serving accepts, as a checker.

:func:`schema_violations` lists what a real endpoint would reject in a
``tools[].function.parameters`` or ``response_format.json_schema.schema``
object. The serving emulator (:mod:`dbstruct.testing`) answers 400 when it
returns anything, and the schema compiler's tests prove its output is clean.

Sources (each rule below cites the one it comes from):

- [FC] Function calling on Databricks, section "JSON schema":
  https://docs.databricks.com/aws/en/machine-learning/model-serving/function-calling#json-schema
  "The following function call definition keys are not supported: regular
  expressions using ``pattern``; complex nested or schema composition and
  validation using ``anyOf``, ``oneOf``, ``allOf``, ``prefixItems``, or
  ``$ref``; lists of types except for the special case of ``[type, "null"]``".
  "The maximum number of keys specified in the JSON schema is 16." and, under
  Limitations, "The maximum number of functions that can be defined in tools
  is 32 functions." Length and size keywords (``maxLength``, ``minProperties``
  ...) are accepted but "not enforced".
- [SO] Structured outputs on Databricks:
  https://docs.databricks.com/aws/en/machine-learning/model-serving/structured-outputs
  The same unsupported keywords for ``response_format``, with "The maximum
  number of keys specified in the JSON schema is 64".
- [OA] ``strict: true`` is OpenAI's strict structured outputs, passed through
  on GPT endpoints: https://platform.openai.com/docs/guides/structured-outputs#supported-schemas
  Every object sets ``"additionalProperties": false`` and lists every property
  in ``required``; every schema has a ``type``; ``format`` takes only the
  listed values (an endpoint answers e.g. "In context=('properties', 'url'),
  'uri' is not a valid format").

Where the docs are silent this module decides, and says so next to the rule:
"keys" are counted as property names (the count a key limit on a schema can
sensibly mean, and what other Databricks schema transformers count), ``$defs``
is rejected with ``$ref`` (a definitions block is only reachable through
``$ref``), and the root must be an object (function parameters are objects).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "JSON_TYPES",
    "MAX_SCHEMA_KEYS",
    "MAX_TOOLS",
    "MAX_TOOL_SCHEMA_KEYS",
    "STRICT_FORMATS",
    "count_keys",
    "schema_violations",
]

#: [SO] keys in a ``response_format`` schema
MAX_SCHEMA_KEYS = 64
#: [FC] keys in one function's ``parameters``
MAX_TOOL_SCHEMA_KEYS = 16
#: [FC] "Limitations": functions in one request's ``tools``
MAX_TOOLS = 32

#: the seven JSON Schema type names
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})

#: [FC]/[SO] keys the endpoints reject outright, with the doc's own wording
_UNSUPPORTED: dict[str, str] = {
    "pattern": "regular expressions using 'pattern' are not supported",
    "anyOf": "schema composition with 'anyOf' is not supported",
    "oneOf": "schema composition with 'oneOf' is not supported",
    "allOf": "schema composition with 'allOf' is not supported",
    "prefixItems": "'prefixItems' is not supported",
    "$ref": "'$ref' is not supported: inline the referenced schema",
    # Docs silent: a definitions block is only reachable through $ref (chosen).
    "$defs": "'$defs' is not supported (it is only reachable through '$ref')",
    "definitions": "'definitions' is not supported (it is only reachable through '$ref')",
    # Docs name 'pattern'; patternProperties is the same regular-expression
    # feature applied to keys, and [OA] rejects it too (chosen).
    "patternProperties": "regular expressions using 'patternProperties' are not supported",
}

#: [OA] composition keywords strict mode rejects (beyond the Databricks list)
_STRICT_UNSUPPORTED = ("not", "if", "then", "else", "dependentRequired", "dependentSchemas")

#: [OA] the ``format`` values strict mode accepts
STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def schema_violations(
    schema: Any, *, strict: bool = False, max_keys: int | None = MAX_SCHEMA_KEYS
) -> list[str]:
    """What a Databricks endpoint would reject in ``schema``; ``[]`` when it is accepted.

    Each message starts with the JSON path of the offending schema node and
    names the rule, e.g. ``"$.properties.sku: regular expressions using
    'pattern' are not supported"``. ``strict`` adds OpenAI's strict-mode rules.
    ``max_keys`` is 64 for ``response_format`` (the default) and should be
    :data:`MAX_TOOL_SCHEMA_KEYS` for a tool's ``parameters``; ``None`` skips it.

        >>> schema_violations({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}})
        ["$.properties.a: '$ref' is not supported: inline the referenced schema"]
    """
    found: list[str] = []
    if not isinstance(schema, dict):
        return ["$: the schema must be a JSON object"]
    # Docs silent on non-object roots; function parameters are objects (chosen).
    if schema.get("type") != "object":
        found.append('$: the root schema must have "type": "object"')
    for path, node in _nodes(schema, "$"):
        found.extend(_node_violations(node, path, strict))
    keys = count_keys(schema)
    if max_keys is not None and keys > max_keys:
        found.append(f"$: {keys} keys exceed the maximum of {max_keys} keys in a schema")
    return found


def count_keys(schema: Any) -> int:
    """Property names declared anywhere in ``schema`` (the unit of the documented key limits)."""
    total = 0
    for _path, node in _nodes(schema, "$"):
        props = node.get("properties")
        if isinstance(props, dict):
            total += len(props)
    return total


def _nodes(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in ``node`` with its JSON path, depth first, parents first."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key, child in _children(node, path):
        yield from _nodes(child, key)


def _children(node: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    props = node.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            yield _prop_path(path, name), sub
    for key in ("items", "additionalProperties", "not", "if", "then", "else"):
        sub = node.get(key)
        if isinstance(sub, dict):
            yield f"{path}.{key}", sub
        elif key == "items" and isinstance(sub, list):
            yield from ((f"{path}.items[{i}]", s) for i, s in enumerate(sub))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        subs = node.get(key)
        if isinstance(subs, list):
            yield from ((f"{path}.{key}[{i}]", s) for i, s in enumerate(subs))
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                yield f"{path}.{key}{_member(name)}", sub


def _prop_path(path: str, name: str) -> str:
    return f"{path}.properties{_member(name)}"


def _member(name: str) -> str:
    """``.name`` for identifiers, ``["a b"]`` otherwise, so paths stay unambiguous."""
    return f".{name}" if _IDENT.match(name) else f"[{json.dumps(name)}]"


def _node_violations(node: dict[str, Any], path: str, strict: bool) -> list[str]:
    found = [f"{path}: {why}" for key, why in _UNSUPPORTED.items() if key in node]
    found.extend(_type_violations(node, path))
    found.extend(_shape_violations(node, path))
    if strict:
        found.extend(_strict_violations(node, path))
    return found


def _type_violations(node: dict[str, Any], path: str) -> list[str]:
    """[FC]: one JSON type, or exactly ``[type, "null"]``."""
    if "type" not in node:
        return []
    kind = node["type"]
    if isinstance(kind, str):
        ok = kind in JSON_TYPES
        return [] if ok else [f"{path}: {kind!r} is not a JSON Schema type"]
    if isinstance(kind, list):
        others = [t for t in kind if t != "null"]
        if (
            len(kind) == 2
            and len(others) == 1
            and isinstance(others[0], str)
            and others[0] in JSON_TYPES
        ):
            return []
        return [
            f'{path}: type list {json.dumps(kind)} is not supported: only [type, "null"] '
            'with one JSON type and "null" is accepted'
        ]
    return [f"{path}: 'type' must be a type name or [type, \"null\"]"]


def _shape_violations(node: dict[str, Any], path: str) -> list[str]:
    """Malformed structure no endpoint can use (JSON Schema itself, not a Databricks rule)."""
    found: list[str] = []
    props = node.get("properties")
    if "properties" in node and not isinstance(props, dict):
        found.append(f"{path}: 'properties' must be an object of schemas")
    req = node.get("required")
    if "required" in node and not (isinstance(req, list) and all(isinstance(r, str) for r in req)):
        found.append(f"{path}: 'required' must be a list of property names")
    if isinstance(node.get("items"), list):
        # Draft-4 tuple form: the same positional typing as prefixItems [FC].
        found.append(f"{path}: a list of 'items' (tuple form, like 'prefixItems') is not supported")
    if "enum" in node and not isinstance(node["enum"], list):
        found.append(f"{path}: 'enum' must be a list of values")
    return found


def _strict_violations(node: dict[str, Any], path: str) -> list[str]:
    """[OA]: what ``strict: true`` adds."""
    found = [
        f"{path}: strict mode does not support {k!r}" for k in _STRICT_UNSUPPORTED if k in node
    ]
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "type" not in node:
        found.append(f"{path}: strict mode needs a 'type' on every schema")
    if "object" in kinds:
        if node.get("additionalProperties") is not False:
            found.append(f'{path}: strict mode needs "additionalProperties": false on every object')
        props = node.get("properties")
        names = list(props) if isinstance(props, dict) else []
        listed = node.get("required")
        required: list[Any] = listed if isinstance(listed, list) else []
        missing = [n for n in names if n not in required]
        if missing:
            found.append(
                f"{path}: strict mode needs every property in 'required'; missing {missing}"
            )
    elif isinstance(node.get("additionalProperties"), dict):
        found.append(f'{path}: strict mode needs "additionalProperties": false')
    fmt = node.get("format")
    if fmt is not None and fmt not in STRICT_FORMATS:
        found.append(f"{path}: strict mode does not accept format {fmt!r}")
    return found

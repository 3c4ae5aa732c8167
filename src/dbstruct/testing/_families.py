"""Endpoint families and the schema rules each one applies, stated by the emulator itself.

A Databricks chat endpoint answers with the rules of whoever really serves it:

| family       | endpoints (name contains)          | tool / response_format schemas             |
|--------------|------------------------------------|--------------------------------------------|
| ``openai``   | "gpt", but not "gpt-oss"           | forwarded to OpenAI: any schema; with      |
|              | (databricks-gpt-5, -gpt-5-2, ...)  | ``strict: true`` OpenAI's strict rules, in |
|              |                                    | OpenAI's words                             |
| ``claude``   | "claude"                           | the Foundation Model APIs subset [FC]/[SO] |
| ``databricks``| everything else: Llama, Gemma,    | the Foundation Model APIs subset [FC]/[SO] |
|              | Qwen, GPT OSS, DBRX, Gemini...     |                                            |

Sources:

- [FC] https://docs.databricks.com/aws/en/machine-learning/model-serving/function-calling#json-schema
  "The following function call definition keys are not supported: Regular expressions using
  ``pattern``. Complex nested or schema composition and validation using: ``anyOf``, ``oneOf``,
  ``allOf``, ``prefixItems``, or ``$ref``. Lists of types except for the special case of
  ``[type, "null"]``"; "The maximum number of keys specified in the JSON schema is 16";
  "Foundation Model APIs does not enforce length or size constraints for objects and arrays.
  This includes keywords like ``maxProperties``, ``minProperties``, and ``maxLength``" (so they
  are accepted); "The maximum number of functions that can be defined in tools is 32".
- [SO] https://docs.databricks.com/aws/en/machine-learning/model-serving/structured-outputs
  the same keys for ``response_format``, "The maximum number of keys ... is 64".
- [GPT] GPT endpoints forward to OpenAI and hand back OpenAI's own error, pretty-printed inside
  the Databricks body: ``{"error_code":"BAD_REQUEST","message":"{\\n  \\"error\\": {\\n
  \\"message\\": \\"Invalid schema for response_format 'ChainOfThoughtResponse': In context=(),
  'additionalProperties' is required to be supplied and to be false.\\", \\"type\\":
  \\"invalid_request_error\\", \\"param\\": \\"response_format\\", \\"code\\": null ...}``
  (databricks-gpt-5-2: https://github.com/truera/trulens/issues/2307); "external_model_provider":
  "openai" and "Missing required parameter: 'response_format.json_schema.name'."
  (https://github.com/databricks/databricks-ai-bridge/issues/211, /issues/350).
- [OA] OpenAI strict mode: https://platform.openai.com/docs/guides/structured-outputs#supported-schemas
  (``$defs``/``$ref``, nested ``anyOf``, ``pattern`` and ``format`` are supported; every object
  needs ``"additionalProperties": false`` and every property in ``required``; the root is an
  object). Wordings seen in real answers: "In context=('properties', 'issues', 'items'),
  'required' is required to be supplied and to be an array including every key in properties.
  Missing 'path'." and "Invalid schema for function 'bash': schema must be a JSON Schema of
  'type: \\"object\\"', got 'type: \\"None\\"'" (both collected by code search), "Invalid schema for
  function 'my_tool': In context=('properties', 'fields'), 'additionalProperties' is required to
  be supplied and to be false." with param 'tools[0].parameters' and code
  'invalid_function_parameters' (https://github.com/letta-ai/letta/issues/3137).

Chosen where the sources are silent (each marked "chosen" below): the family split by name
(Databricks' own client splits the same way, by "gpt" / "claude" in the model name:
https://github.com/databricks/databricks-ai-bridge/pull/269, /pull/333); the wording of the
subset rejections (no real body has been published); "keys" counted as property names;
``$defs`` refused with ``$ref``; Claude held to the documented subset although Anthropic itself
takes more; GPT endpoints not held to the 16/64 key limits (OpenAI's own limits apply there).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = [
    "CLAUDE",
    "DATABRICKS",
    "MAX_SCHEMA_KEYS",
    "MAX_TOOLS",
    "MAX_TOOL_SCHEMA_KEYS",
    "OPENAI",
    "accepts_tool_strict",
    "count_keys",
    "family_of",
    "openai_error",
    "openai_strict_problem",
    "subset_violations",
]

OPENAI = "openai"
CLAUDE = "claude"
DATABRICKS = "databricks"

#: [SO] keys in a ``response_format`` schema
MAX_SCHEMA_KEYS = 64
#: [FC] keys in one function's ``parameters``
MAX_TOOL_SCHEMA_KEYS = 16
#: [FC] "Limitations": functions in one request's ``tools``
MAX_TOOLS = 32

_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


def family_of(endpoint: str) -> str:
    """``"openai"``, ``"claude"`` or ``"databricks"`` for an endpoint name (chosen: by name)."""
    name = endpoint.lower()
    if "claude" in name:
        return CLAUDE
    if "gpt" in name and "gpt-oss" not in name:
        # GPT OSS is open weights served by Databricks itself, not forwarded to OpenAI.
        return OPENAI
    return DATABRICKS


def accepts_tool_strict(endpoint: str) -> bool:
    """Whether a tool's ``strict`` field is accepted at all.

    Non-GPT endpoints refuse the field by its presence (whatever its value) with
    '{"message":"tools.0.custom.strict: Extra inputs are not permitted"}', and Databricks'
    own client strips it for every model whose name lacks "gpt" (GPT OSS included in "gpt"):
    https://github.com/databricks/databricks-ai-bridge/pull/269, also
    https://github.com/tidyverse/ellmer/issues/548 and, through the AI Gateway,
    https://github.com/omnigent-ai/omnigent/pull/730. A later report says the field is now taken
    and compiled into a grammar (https://github.com/tidyverse/ellmer/pull/1108); the emulator
    keeps the refusal (chosen: the stricter documented answer, still what Databricks' client
    guards against).
    """
    return "gpt" in endpoint.lower()


# ---------------------------------------------------------------- the Databricks subset

#: [FC]/[SO] keys the subset refuses; wording chosen (no real body is published)
_UNSUPPORTED: dict[str, str] = {
    "pattern": "regular expressions using 'pattern' are not supported",
    "anyOf": "schema composition with 'anyOf' is not supported",
    "oneOf": "schema composition with 'oneOf' is not supported",
    "allOf": "schema composition with 'allOf' is not supported",
    "prefixItems": "'prefixItems' is not supported",
    "$ref": "'$ref' is not supported: inline the referenced schema",
    # chosen: a definitions block is only reachable through $ref
    "$defs": "'$defs' is not supported (it is only reachable through '$ref')",
    "definitions": "'definitions' is not supported (it is only reachable through '$ref')",
}


def subset_violations(schema: Any, max_keys: int) -> list[str]:
    """What the Foundation Model APIs subset refuses in ``schema``; ``[]`` when accepted.

    Each entry starts with the JSON path of the node, e.g. ``"$.properties.sku: regular
    expressions using 'pattern' are not supported"``. Length and size keywords (``maxLength``,
    ``minItems``...) and ``format`` pass: [FC] says they are not enforced, not refused.
    """
    if not isinstance(schema, dict):
        return ["$: the schema must be a JSON object"]
    found: list[str] = []
    for path, node in _nodes(schema, "$"):
        found.extend(f"{path}: {why}" for key, why in _UNSUPPORTED.items() if key in node)
        found.extend(_type_violations(node, path))
    keys = count_keys(schema)
    if keys > max_keys:
        found.append(f"$: {keys} keys exceed the maximum of {max_keys} keys in a schema")
    return found


def _type_violations(node: dict[str, Any], path: str) -> list[str]:
    """[FC]: one JSON type, or exactly ``[type, "null"]``."""
    kind = node.get("type")
    if "type" not in node or (isinstance(kind, str) and kind in _JSON_TYPES):
        return []
    if isinstance(kind, list) and len(kind) == 2 and "null" in kind:
        other = kind[1] if kind[0] == "null" else kind[0]
        if isinstance(other, str) and other in _JSON_TYPES and other != "null":
            return []
    return [
        f"{path}: type {json.dumps(kind)} is not supported: one JSON type, or a list of "
        'exactly one JSON type and "null"'
    ]


def count_keys(schema: Any) -> int:
    """Property names declared anywhere in ``schema`` (chosen unit of the [FC]/[SO] limits)."""
    total = 0
    for _path, node in _nodes(schema, "$"):
        props = node.get("properties")
        if isinstance(props, dict):
            total += len(props)
    return total


def _nodes(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in ``node`` with its JSON path, parents first."""
    if not isinstance(node, dict):
        return
    yield path, node
    props = node.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            yield from _nodes(sub, f"{path}.properties.{name}")
    for key in ("items", "additionalProperties", "not", "if", "then", "else"):
        sub = node.get(key)
        if isinstance(sub, dict):
            yield from _nodes(sub, f"{path}.{key}")
        elif isinstance(sub, list):
            for i, item in enumerate(sub):
                yield from _nodes(item, f"{path}.{key}[{i}]")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        subs = node.get(key)
        if isinstance(subs, list):
            for i, sub in enumerate(subs):
                yield from _nodes(sub, f"{path}.{key}[{i}]")
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                yield from _nodes(sub, f"{path}.{key}.{name}")


# ---------------------------------------------------------------- OpenAI, behind GPT endpoints

#: [OA] keywords strict mode does not support; the "is not permitted" wording is chosen
_STRICT_REFUSED = ("allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas")


def openai_error(message: str, param: str | None, code: str | None) -> str:
    """The Databricks ``message`` carrying OpenAI's error, as GPT endpoints send it [GPT]."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json.dumps({"error": error}, indent=2)


def openai_strict_problem(schema: Any, what: str) -> str | None:
    """OpenAI's first complaint about a strict ``schema``, or None when it is accepted.

    ``what`` names the schema the way OpenAI does: ``"response_format 'User'"`` or
    ``"function 'User'"``. OpenAI answers one problem at a time, so this does too.
    """
    prefix = f"Invalid schema for {what}: "
    if not isinstance(schema, dict) or schema.get("type") != "object":
        got = schema.get("type") if isinstance(schema, dict) else None
        shown = "None" if got is None else got
        want = "schema must be a JSON Schema of 'type: \"object\"'"
        return f"{prefix}{want}, got 'type: \"{shown}\"'."
    for context, node in _openai_nodes(schema, ()):
        problem = _strict_node_problem(node)
        if problem is not None:
            return f"{prefix}In context={context!r}, {problem}"
    return None


def _strict_node_problem(node: dict[str, Any]) -> str | None:
    for key in _STRICT_REFUSED:
        if key in node:
            return f"'{key}' is not permitted."
    kind = node.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if not is_object:
        return None
    if node.get("additionalProperties") is not False:
        return "'additionalProperties' is required to be supplied and to be false."
    props = node.get("properties")
    names = list(props) if isinstance(props, dict) else []
    listed = node.get("required")
    required = listed if isinstance(listed, list) else []
    missing = [n for n in names if n not in required]
    if missing:
        return (
            "'required' is required to be supplied and to be an array including every key in "
            f"properties. Missing '{missing[0]}'."
        )
    return None


def _openai_nodes(
    node: Any, context: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Schema objects with OpenAI's context tuples, e.g. ``('properties', 'issues', 'items')``."""
    if not isinstance(node, dict):
        return
    yield context, node
    props = node.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            yield from _openai_nodes(sub, (*context, "properties", name))
    sub = node.get("items")
    if isinstance(sub, dict):
        yield from _openai_nodes(sub, (*context, "items"))
    for key in ("anyOf", "oneOf"):
        subs = node.get(key)
        if isinstance(subs, list):
            for i, item in enumerate(subs):
                yield from _openai_nodes(item, (*context, key, str(i)))
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, item in defs.items():
                yield from _openai_nodes(item, (*context, key, name))

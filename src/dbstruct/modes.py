"""Modes: what each one sends to the endpoint (how its answer is read: :mod:`dbstruct.answers`).

TOOLS           one tool with the compiled schema; ``tool_choice`` forces it. Answer: the
                tool call's arguments.
TOOLS_STRICT    as TOOLS with the strict schema and ``"strict": true`` where the endpoint
                takes it (GPT endpoints; elsewhere the same schema without the flag,
                see :mod:`dbstruct._strict`).
PARALLEL_TOOLS  one tool per model of ``Iterable[A | B]``, ``tool_choice="required"``.
                Answer: every tool call, validated by its tool's model.
FUNCTIONS       legacy ``functions`` + ``function_call``. Answer: ``message.function_call``.
JSON            ``response_format`` json_schema (constrained decoding). Answer: the content.
JSON_O1         as JSON, with system messages folded into the first user turn.
MD_JSON         the compact schema in the system message, asking for a json code block.
                Answer: the fenced block (or bare JSON).

Every handler is stateless; the per-model parts (tool specs, response formats, prompts) are
built once and cached, so preparing a request costs a dict copy. :func:`chat_request` is the
whole request a client sends, and the one its cache keys are computed from.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from pydantic import BaseModel

from dbstruct._json_schema_rules import MAX_SCHEMA_KEYS, MAX_TOOL_SCHEMA_KEYS, MAX_TOOLS
from dbstruct.errors import ConfigurationError, SchemaError
from dbstruct.json_schema import compile_schema

__all__ = [
    "Message",
    "Mode",
    "ResponseTarget",
    "SchemaLike",
    "build_request",
    "build_schema_request",
    "chat_request",
]

Message = dict[str, Any]


class Mode(str, enum.Enum):
    """How the response model is asked for; the values match instructor's."""

    TOOLS = "tool_call"
    TOOLS_STRICT = "tools_strict"
    PARALLEL_TOOLS = "parallel_tool_call"
    FUNCTIONS = "function_call"
    JSON = "json_mode"
    JSON_O1 = "json_o1"
    MD_JSON = "markdown_json_mode"

    def __str__(self) -> str:  # shows as Mode.TOOLS in messages and reprs
        return f"Mode.{self.name}"


@dataclass(frozen=True)
class ResponseTarget:
    """The model (or, for PARALLEL_TOOLS, the models) an answer is validated against."""

    models: tuple[type[BaseModel], ...]
    parallel: bool

    @property
    def model(self) -> type[BaseModel]:
        return self.models[0]

    @staticmethod
    @lru_cache(maxsize=256)
    def of(response_model: Any) -> ResponseTarget:
        """``Model`` or ``Iterable[A | B]`` (PARALLEL_TOOLS) to a target."""
        if isinstance(response_model, type) and issubclass(response_model, BaseModel):
            return ResponseTarget((response_model,), parallel=False)
        origin = typing.get_origin(response_model)
        if origin in (Iterable, typing.Iterable, list, typing.List):  # noqa: UP006
            (inner,) = typing.get_args(response_model) or (None,)
            members = _union_members(inner)
            if members and all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
                return ResponseTarget(tuple(members), parallel=True)
        raise SchemaError(
            "response_model must be a pydantic BaseModel subclass, or Iterable[A | B] of them "
            f"for Mode.PARALLEL_TOOLS; got {response_model!r}"
        )


def _union_members(tp: Any) -> list[Any]:
    if tp is None:
        return []
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return list(typing.get_args(tp))
    return [tp]


# ---------------------------------------------------------------- requests


def _check_keys(model: type[BaseModel], count: int, limit: int, where: str, hint: str) -> None:
    # https://docs.databricks.com/aws/en/machine-learning/model-serving/function-calling#json-schema
    if count > limit:
        raise SchemaError(
            f"{model.__name__} has {count} keys; Databricks accepts at most {limit} in {where}. "
            + hint,
            model=model.__name__,
        )


class SchemaLike(Protocol):
    """What a request needs of a schema: :class:`~dbstruct.json_schema.CompiledSchema`, or
    a schema built around one (a packed request's list, :mod:`dbstruct._packing`)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    @property
    def json(self) -> str: ...


def _tool_of(schema: SchemaLike, strict: bool) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": schema.name,
        "description": schema.description,
        "parameters": schema.parameters,
    }
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


@lru_cache(maxsize=512)
def _tool(model: type[BaseModel], strict: bool) -> dict[str, Any]:
    compiled = compile_schema(model, strict=strict)
    _check_keys(
        model,
        compiled.key_count,
        MAX_TOOL_SCHEMA_KEYS,
        "a tool schema",
        "Use Mode.JSON (structured outputs take up to 64) or split the model.",
    )
    return _tool_of(compiled, strict)


def _response_format_of(schema: SchemaLike) -> dict[str, Any]:
    # https://docs.databricks.com/aws/en/machine-learning/model-serving/structured-outputs
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.name, "schema": schema.parameters},
    }


@lru_cache(maxsize=512)
def _response_format(model: type[BaseModel]) -> dict[str, Any]:
    compiled = compile_schema(model)
    _check_keys(model, compiled.key_count, MAX_SCHEMA_KEYS, "a response format", "Split the model.")
    return _response_format_of(compiled)


def _md_json_instruction_of(schema: SchemaLike) -> str:
    about = f" ({schema.description})" if schema.description else ""
    return (
        f"Answer with one JSON object for {schema.name}{about}, matching this JSON schema:\n"
        f"{schema.json}\n"
        "Return the object itself, not the schema, in a ```json code block."
    )


@lru_cache(maxsize=512)
def _md_json_instruction(model: type[BaseModel]) -> str:
    return _md_json_instruction_of(compile_schema(model))


def build_request(
    mode: Mode, target: ResponseTarget, messages: Sequence[Message]
) -> dict[str, Any]:
    """The request fields for ``mode``: ``messages`` plus tools or a response format.

    The caller's ``messages`` list and dicts are never modified.
    """
    if target.parallel and mode is not Mode.PARALLEL_TOOLS:
        raise SchemaError(f"Iterable[...] response models need Mode.PARALLEL_TOOLS, not {mode}")
    if mode is Mode.PARALLEL_TOOLS and not target.parallel:
        target = ResponseTarget(target.models, parallel=True)
    msgs = list(messages)
    if mode in (Mode.TOOLS, Mode.TOOLS_STRICT):
        return _tool_request(_tool(target.model, mode is Mode.TOOLS_STRICT), msgs)
    if mode is Mode.PARALLEL_TOOLS:
        if len(target.models) > MAX_TOOLS:
            raise SchemaError(f"{len(target.models)} tools; Databricks accepts at most {MAX_TOOLS}")
        return {
            "messages": msgs,
            "tools": [_tool(m, False) for m in target.models],
            "tool_choice": "required",
        }
    if mode is Mode.FUNCTIONS:
        return _function_request(_tool(target.model, False)["function"], msgs)
    if mode in (Mode.JSON, Mode.JSON_O1):
        return _json_request(mode, _response_format(target.model), msgs)
    if mode is Mode.MD_JSON:
        return {"messages": _with_system(msgs, _md_json_instruction(target.model))}
    raise ConfigurationError(f"unknown mode {mode!r}")  # pragma: no cover - Mode is closed


def build_schema_request(
    mode: Mode, schema: SchemaLike, messages: Sequence[Message]
) -> dict[str, Any]:
    """:func:`build_request` for a schema that is not a response model's own (a packed
    request's list); the caller checks its key limits. Every mode but PARALLEL_TOOLS."""
    msgs = list(messages)
    if mode in (Mode.TOOLS, Mode.TOOLS_STRICT):
        return _tool_request(_tool_of(schema, mode is Mode.TOOLS_STRICT), msgs)
    if mode is Mode.FUNCTIONS:
        return _function_request(_tool_of(schema, False)["function"], msgs)
    if mode in (Mode.JSON, Mode.JSON_O1):
        return _json_request(mode, _response_format_of(schema), msgs)
    if mode is Mode.MD_JSON:
        return {"messages": _with_system(msgs, _md_json_instruction_of(schema))}
    raise ConfigurationError(f"{mode} asks for several tool calls; it takes one schema, not {mode}")


def _tool_request(tool: dict[str, Any], msgs: list[Message]) -> dict[str, Any]:
    name = tool["function"]["name"]
    return {
        "messages": msgs,
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": name}},
    }


def _function_request(function: dict[str, Any], msgs: list[Message]) -> dict[str, Any]:
    return {"messages": msgs, "functions": [function], "function_call": {"name": function["name"]}}


def _json_request(
    mode: Mode, response_format: dict[str, Any], msgs: list[Message]
) -> dict[str, Any]:
    messages = _fold_system(msgs) if mode is Mode.JSON_O1 else msgs
    return {"messages": messages, "response_format": response_format}


def _with_system(messages: list[Message], instruction: str) -> list[Message]:
    """Put ``instruction`` in the system message (merged, so roles still alternate)."""
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        merged = {**first, "content": f"{_text(first.get('content'))}\n\n{instruction}"}
        return [merged, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _fold_system(messages: list[Message]) -> list[Message]:
    """Reasoning (o1-style) endpoints take no system role: fold it into the first user turn."""
    system = [_text(m.get("content")) for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    prefix = "\n\n".join(system)
    for i, message in enumerate(rest):
        if message.get("role") == "user":
            folded = {**message, "content": f"{prefix}\n\n{_text(message.get('content'))}"}
            return [*rest[:i], folded, *rest[i + 1 :]]
    return [{"role": "user", "content": prefix}, *rest]


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def chat_request(
    mode: Mode,
    target: ResponseTarget,
    messages: Sequence[Message],
    defaults: Mapping[str, Any],
    endpoint: str,
) -> dict[str, Any]:
    """The request a client sends (and whose key it looks up): its defaults, then the mode's
    fields for ``messages``, and ``model`` set to the endpoint.

    >>> chat_request(Mode.TOOLS, ResponseTarget.of(User), messages, {"temperature": 0}, "llm")
    """
    return {**defaults, **build_request(mode, target, messages), "model": endpoint}

"""What a real chat endpoint rejects with 400, checked before anything is answered.

The rules that differ by who serves the endpoint (OpenAI behind databricks-gpt-*, Anthropic
behind databricks-claude-*, Databricks itself for the rest) live in
:mod:`dbstruct.testing._families`; this module applies them to a request.

API reference (fields, types, ranges), cited below as [API]:
https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/api-reference
Function calling limits, cited as [FC]:
https://docs.databricks.com/aws/en/machine-learning/model-serving/function-calling
Structured outputs, cited as [SO]:
https://docs.databricks.com/aws/en/machine-learning/model-serving/structured-outputs
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from dbstruct.testing._error_bodies import ApiError, bad_request
from dbstruct.testing._families import (
    CLAUDE,
    MAX_SCHEMA_KEYS,
    MAX_TOOL_SCHEMA_KEYS,
    MAX_TOOLS,
    OPENAI,
    accepts_tool_strict,
    family_of,
    openai_error,
    openai_strict_problem,
    subset_violations,
)

__all__ = [
    "KNOWN_FIELDS",
    "ROLES_MESSAGE",
    "SPEC_FIELDS",
    "canonical_specs",
    "validate_chat",
]

# [API] documented chat request fields, plus the OpenAI chat-completions fields the
# OpenAI-compatible endpoints pass on. Anything else is refused the way real endpoints refuse
# fields they do not know: 'Bad request: json: unknown field "prompt"'
# (https://github.com/langchain-ai/langchain/issues/10318,
#  https://github.com/databricks/databricks-sdk-py/issues/1263).
KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
        "temperature", "top_p", "top_k", "stop", "n", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "logprobs", "top_logprobs",
        "reasoning_effort", "thinking", "seed", "presence_penalty", "frequency_penalty",
        "logit_bias", "user", "metadata", "functions", "function_call", "extra_params",
    }
)  # fmt: skip

ROLES = ("system", "user", "assistant", "tool")

# The words a real endpoint answers a role-order violation with (quoted from a Databricks
# answer in https://github.com/567-labs/instructor/pull/691); [API]: "the messages field must
# alternate between user and assistant roles, ending in a user message".
ROLES_MESSAGE = (
    "Bad request: rpc error: code = InvalidArgument desc = Chat message input roles must "
    "alternate (user -> assistant -> u -> a -> ...) with an optional system at the start. "
    "Tool messages are optional and must follow a preceding assistant message containing "
    "tool calls.\n"
)

# OpenAI's rule for function names (Databricks function calling is "OpenAI-compatible" [FC]).
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def validate_chat(body: dict[str, Any], endpoint: str, specs: dict[str, str]) -> None:
    """Raise the 400 a real endpoint answers ``body`` with, if any.

    ``specs``: the canonical JSON (:func:`canonical_specs`) of the request's tools, functions
    and response format; their checks are cached on it, since every row of a batch sends the
    same ones and walking a schema costs more than the rest of the request.
    """
    for key in body:
        if key not in KNOWN_FIELDS:
            raise bad_request(f'Bad request: json: unknown field "{key}"')
    _check_messages(body.get("messages"), endpoint)
    _check_sampling(body)
    problem = _spec_problem(
        specs.get("tools", "null"),
        specs.get("tool_choice", "null"),
        specs.get("functions", "null"),
        specs.get("function_call", "null"),
        specs.get("response_format", "null"),
        family_of(endpoint),
        accepts_tool_strict(endpoint),
    )
    if problem is not None:
        raise bad_request(problem)


#: the request fields :func:`validate_chat` checks through their canonical JSON
SPEC_FIELDS = ("tools", "tool_choice", "functions", "function_call", "response_format")


def canonical_specs(body: dict[str, Any]) -> dict[str, str]:
    """The canonical JSON of each of ``body``'s :data:`SPEC_FIELDS`."""
    return {k: json.dumps(body[k], sort_keys=True) for k in SPEC_FIELDS if k in body}


@lru_cache(maxsize=1024)
def _spec_problem(
    tools: str, choice: str, functions: str, call: str, fmt: str, family: str, strict_ok: bool
) -> str | None:
    """The 400 message for these (canonical JSON) specs, or None when they are accepted."""
    body = {
        "tools": json.loads(tools),
        "tool_choice": json.loads(choice),
        "functions": json.loads(functions),
        "function_call": json.loads(call),
    }
    try:
        _check_tools(body, family, strict_ok)
        _check_functions(body, family)
        _check_response_format(json.loads(fmt), family)
    except ApiError as error:
        assert isinstance(error.body, dict)
        return str(error.body["message"])
    return None


# ---------------------------------------------------------------- messages


def _check_messages(messages: Any, endpoint: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise bad_request("Bad request: 'messages' is required and must be a non-empty list")
    for i, message in enumerate(messages):
        _check_message(i, message, endpoint)
    _check_roles(messages)


def _check_message(i: int, message: Any, endpoint: str) -> None:
    if not isinstance(message, dict):
        raise bad_request(f"Bad request: messages[{i}] must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise bad_request(
            f"Bad request: messages[{i}].role must be one of {list(ROLES)}, got {role!r}"
        )
    content = message.get("content")
    calls = message.get("tool_calls") if role == "assistant" else None
    if content is None and not calls:
        raise bad_request(f"Bad request: messages[{i}].content is required")
    if content is not None and not isinstance(content, (str, list)):
        # Wording of a real answer: "Unable to parse json body for request, field
        # 'messages.content' expects input with json type 'string' but got 'array'"
        # (https://github.com/run-llama/llama_index/issues/17239); [API] content is a string
        # or, for multimodal models, a list of content parts.
        raise bad_request(
            "Unable to parse json body for request, field 'messages.content' expects input "
            f"with json type 'string' but got '{_json_type(content)}'"
        )
    if isinstance(content, list) and not all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in content
    ):
        raise bad_request(f"Bad request: messages[{i}].content parts need a 'type'")
    if calls is not None:
        _check_tool_calls(i, calls)
    if role in ("user", "assistant") and family_of(endpoint) == CLAUDE:
        _check_claude_text(content, bool(calls), endpoint)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise bad_request(f"Bad request: messages[{i}]: a tool message needs 'tool_call_id'")


def _check_tool_calls(i: int, calls: Any) -> None:
    if not isinstance(calls, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("id"), str)
        and isinstance(c.get("function"), dict)
        and isinstance(c["function"].get("name"), str)
        and isinstance(c["function"].get("arguments"), str)
        for c in calls
    ):
        raise bad_request(
            f"Bad request: messages[{i}].tool_calls must be a list of "
            "{id, type: function, function: {name, arguments (string)}}"
        )


#: The body a Claude endpoint sends for an empty text block, quoted from Databricks answers:
#: {'error_code': 'BAD_REQUEST', 'message': '{"message":"messages: text content blocks must be
#: non-empty"}'} (https://github.com/databricks/databricks-ai-bridge/pull/333,
#: https://github.com/tidyverse/ellmer/issues/932)
CLAUDE_EMPTY_TEXT = '{"message":"messages: text content blocks must be non-empty"}'


def _check_claude_text(content: Any, has_calls: bool, endpoint: str) -> None:
    """Claude endpoints refuse an empty text block; which contents make one:

    - ``""`` (or a text part with ``""``) without tool calls: refused, on every Claude model
      (databricks-claude-sonnet-4-5: https://github.com/tidyverse/ellmer/issues/932).
    - ``""`` beside tool calls: refused by "some claude models like opus ... but not for
      sonnet" (https://github.com/databricks/databricks-ai-bridge/pull/333). Chosen: every
      Claude endpoint but a Sonnet one refuses it (haiku and the rest are not named).
    - ``null`` beside tool calls: no text block at all, accepted (dropping the empty text and
      keeping the tool calls is the fix that closed ellmer#932:
      https://github.com/tidyverse/ellmer/pull/935).
    - whitespace such as ``" "``: accepted; it is the content Databricks' own client sends for
      an empty tool-call turn, "after: things work" (databricks-ai-bridge PR 333). Anthropic's
      own API now refuses whitespace-only text ("text content blocks must contain
      non-whitespace text", https://github.com/anthropics/claude-code/issues/23440); no
      Databricks answer saying so has been published, so the emulator does not (chosen).
    """
    if not _has_empty_text(content):
        return
    if has_calls and "sonnet" in endpoint.lower():
        return
    raise bad_request(CLAUDE_EMPTY_TEXT)


def _has_empty_text(content: Any) -> bool:
    if isinstance(content, str):
        return content == ""
    if isinstance(content, list):
        return any(p.get("type") == "text" and p.get("text") == "" for p in content)
    return False


def _check_roles(messages: list[dict[str, Any]]) -> None:
    """Optional system first; then user/assistant alternate, starting with user; tool
    messages only right after an assistant message with tool calls (or after other tool
    messages), standing in for the user turn; the last turn is the user's (or tool results)."""
    expect_user = True
    after_calls = False
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            ok = i == 0
        elif role == "tool":
            ok = after_calls
        elif role == "user":
            ok = expect_user
        else:  # assistant
            ok = not expect_user
        if not ok:
            raise bad_request(ROLES_MESSAGE)
        if role == "user" or role == "tool":
            expect_user = False
        if role == "assistant":
            expect_user = True
            after_calls = bool(message.get("tool_calls"))
        elif role != "tool":
            after_calls = False
    if messages[-1]["role"] not in ("user", "tool"):
        raise bad_request(ROLES_MESSAGE)


# ---------------------------------------------------------------- sampling parameters


def _check_sampling(body: dict[str, Any]) -> None:
    # [API] chat request table: max_tokens null or > 0, temperature in [0, 2], top_p in
    # (0, 1], top_k null or > 0, n > 0, top_logprobs in [0, 20] (needs logprobs).
    for key in ("max_tokens", "max_completion_tokens", "top_k"):
        value = body.get(key)
        if value is not None and (not _is_int(value) or value <= 0):
            raise bad_request(f"Bad request: '{key}' must be null or an integer greater than 0")
    n = body.get("n", 1)
    if n is not None and (not _is_int(n) or n <= 0):
        raise bad_request("Bad request: 'n' must be an integer greater than 0")
    _range(body, "temperature", 0.0, 2.0, low_open=False)
    _range(body, "top_p", 0.0, 1.0, low_open=True)
    top = body.get("top_logprobs")
    if top is not None:
        if not _is_int(top) or not 0 <= top <= 20:
            raise bad_request("Bad request: 'top_logprobs' must be an integer in [0, 20]")
        if not body.get("logprobs"):
            raise bad_request("Bad request: 'top_logprobs' requires 'logprobs' to be true")
    for key in ("stream", "logprobs", "parallel_tool_calls"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise bad_request(f"Bad request: '{key}' must be a boolean")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise bad_request("Bad request: 'stop' must be a string or a list of strings")


def _range(body: dict[str, Any], key: str, low: float, high: float, *, low_open: bool) -> None:
    value = body.get(key)
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise bad_request(f"Bad request: '{key}' must be in {bracket}{low:g}, {high:g}]")


# ---------------------------------------------------------------- tools


def _check_tools(body: dict[str, Any], family: str, strict_ok: bool) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        if choice is not None and choice != "none":
            raise bad_request("Bad request: 'tool_choice' is only allowed when 'tools' are given")
        return
    if not isinstance(tools, list) or not tools:
        raise bad_request("Bad request: 'tools' must be a non-empty list")
    if len(tools) > MAX_TOOLS:
        # [FC] "The maximum number of functions that can be defined in tools is 32 functions."
        # Stated without exception, so held for every family (chosen: OpenAI itself takes 128).
        raise bad_request(
            f"Bad request: at most {MAX_TOOLS} functions can be defined in tools, got {len(tools)}"
        )
    names = [_check_tool(i, tool, family, strict_ok) for i, tool in enumerate(tools)]
    _check_choice(choice, names)


def _check_tool(i: int, tool: Any, family: str, strict_ok: bool) -> str:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise bad_request(f"Bad request: tools[{i}] must be {{type: function, function: ...}}")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise bad_request(f"Bad request: tools[{i}].function is required")
    name = _check_function(f"tools[{i}].function", function)
    if "strict" in function and not strict_ok:
        # Non-GPT endpoints refuse the field itself (whatever its value), e.g.
        # Error code: 400 - {'error_code': 'BAD_REQUEST', 'message':
        #   '{"message":"tools.0.custom.strict: Extra inputs are not permitted"}'}
        # https://github.com/databricks/databricks-ai-bridge/pull/269 (see accepts_tool_strict)
        detail = f"tools.{i}.custom.strict: Extra inputs are not permitted"
        raise bad_request(json.dumps({"message": detail}, separators=(",", ":")))
    if family == OPENAI:
        # Forwarded to OpenAI, which checks a schema only under strict: true [GPT]/[OA];
        # param and code as in https://github.com/letta-ai/letta/issues/3137
        if function.get("strict") is True:
            problem = openai_strict_problem(function["parameters"], f"function '{name}'")
            if problem is not None:
                raise bad_request(
                    openai_error(problem, f"tools[{i}].parameters", "invalid_function_parameters")
                )
        return name
    # [FC] the subset; "The maximum number of keys ... is 16."
    violations = subset_violations(function["parameters"], MAX_TOOL_SCHEMA_KEYS)
    if violations:
        raise bad_request(
            f"Bad request: invalid JSON schema in tools[{i}].function.parameters: "
            + "; ".join(violations)
        )
    return name


def _check_function(where: str, function: dict[str, Any]) -> str:
    name = function.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise bad_request(
            f"Bad request: {where}.name must match ^[a-zA-Z0-9_-]{{1,64}}$, got {name!r}"
        )
    if "parameters" not in function:
        # A real answer: 'Bad request: "parameters" is a required property for "function"
        # object in parameter "tools"' (https://github.com/posit-dev/querychat/issues/273)
        raise bad_request(
            'Bad request: "parameters" is a required property for "function" object in '
            'parameter "tools"'
        )
    if not isinstance(function["parameters"], dict):
        raise bad_request(f"Bad request: {where}.parameters must be a JSON schema object")
    return name


def _check_choice(choice: Any, names: list[str]) -> None:
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name in names:
            return
        raise bad_request(
            f"Bad request: tool_choice names function {name!r}, which is not in tools {names}"
        )
    raise bad_request(
        "Bad request: 'tool_choice' must be 'none', 'auto', 'required' or "
        "{type: function, function: {name}}"
    )


def _check_functions(body: dict[str, Any], family: str) -> None:
    """The legacy ``functions`` / ``function_call`` pair (OpenAI's deprecated form)."""
    functions = body.get("functions")
    call = body.get("function_call")
    if functions is None:
        if call is not None and call != "none":
            raise bad_request("Bad request: 'function_call' needs 'functions'")
        return
    if not isinstance(functions, list) or not functions:
        raise bad_request("Bad request: 'functions' must be a non-empty list")
    names = []
    for i, function in enumerate(functions):
        if not isinstance(function, dict):
            raise bad_request(f"Bad request: functions[{i}] must be an object")
        names.append(_check_function(f"functions[{i}]", function))
        if family == OPENAI:
            continue  # OpenAI's legacy functions have no strict mode: any schema passes
        violations = subset_violations(function["parameters"], MAX_TOOL_SCHEMA_KEYS)
        if violations:
            raise bad_request(
                f"Bad request: invalid JSON schema in functions[{i}].parameters: "
                + "; ".join(violations)
            )
    if call is None or call in ("none", "auto"):
        return
    if isinstance(call, dict) and call.get("name") in names:
        return
    raise bad_request(f"Bad request: function_call must be 'none', 'auto' or {{name}} of {names}")


# ---------------------------------------------------------------- response_format


def _check_response_format(fmt: Any, family: str) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return
    if kind != "json_schema":
        raise bad_request(
            "Bad request: response_format.type must be 'text', 'json_object' or 'json_schema'"
        )
    spec = fmt.get("json_schema")
    if family == OPENAI:
        _check_openai_response_format(spec)
        return
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise bad_request("Bad request: response_format.json_schema needs a 'name'")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise bad_request("Bad request: response_format.json_schema.schema must be an object")
    # [SO] the accepted subset, at most 64 keys; strict is accepted on every endpoint (the
    # documented examples pass "strict": True to non-GPT models) and adds no rule there.
    violations = subset_violations(schema, MAX_SCHEMA_KEYS)
    if violations:
        raise bad_request(
            "Bad request: invalid JSON schema in response_format: " + "; ".join(violations)
        )


def _check_openai_response_format(spec: Any) -> None:
    """OpenAI's checks, answered in OpenAI's words inside the Databricks body [GPT]."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        # https://github.com/databricks/databricks-ai-bridge/issues/211 (databricks-gpt-5)
        raise bad_request(
            openai_error(
                "Missing required parameter: 'response_format.json_schema.name'.",
                "response_format.json_schema.name",
                "missing_required_parameter",
            )
        )
    if spec.get("strict") is True:
        # https://github.com/truera/trulens/issues/2307 (databricks-gpt-5-2): param
        # "response_format", code null
        problem = openai_strict_problem(spec.get("schema"), f"response_format '{spec['name']}'")
        if problem is not None:
            raise bad_request(openai_error(problem, "response_format", None))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

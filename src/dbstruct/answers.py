"""Reading a mode's answer: :func:`parse_completion` validates it against the response model,
:func:`reask_messages` asks again, showing the model its answer and what was wrong with it.

What each mode sends is :mod:`dbstruct.modes`; the answer arrives in the place the mode asked
for it (a tool call's arguments, ``message.function_call``, the content, a json code block).
An answer's text is parsed as JSON, never evaluated.

    >>> parse_completion(Mode.TOOLS, ResponseTarget.of(UserExtract), completion)
    UserExtract(name='Jason', age=25)
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from dbstruct.errors import (
    IncompleteOutputError,
    InvalidOutputError,
    OutputError,
    OversizedOutputError,
    RefusalError,
)
from dbstruct.json_schema import compile_schema
from dbstruct.modes import Message, Mode, ResponseTarget

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "answer_text",
    "parse_completion",
    "reask_messages",
    "validate_answer",
]

#: the default of a client's ``max_answer_bytes``. Even an answer as long as a whole 128K-token
#: context window is about 0.5 MB (some 4 characters a token), and 1 MiB is already a very
#: large value for one cell of a table: past it an answer is a runaway (a repeating loop, a
#: padded string), not data.
DEFAULT_MAX_ANSWER_BYTES = 1 << 20
#: how much of an oversized answer its error keeps (``raw``)
_RAW_HEAD = 1024

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def parse_completion(
    mode: Mode,
    target: ResponseTarget,
    completion: Any,
    context: Any = None,
    *,
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
) -> Any:
    """The validated answer: a model instance, or a list of them for PARALLEL_TOOLS.

    >>> parse_completion(Mode.TOOLS, ResponseTarget.of(UserExtract), completion)

    Raises an :class:`OutputError` subclass for an unusable answer; its ``raw`` holds the text.
    The answer's text is parsed as JSON, never evaluated; one over ``max_answer_bytes``
    (None: no limit) is an :class:`OversizedOutputError` before any parsing.
    """
    if mode is Mode.PARALLEL_TOOLS:
        message = _usable_message(completion, max_answer_bytes)
        return _parse_parallel_calls(target, message, context)
    text = answer_text(mode, _name(target.model), completion, max_answer_bytes=max_answer_bytes)
    return _validate(target.model, text, context, strict=mode is Mode.TOOLS_STRICT)


def answer_text(
    mode: Mode,
    name: str,
    completion: Any,
    *,
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
) -> str:
    """The JSON text of an answer to a one-schema request (every mode but PARALLEL_TOOLS):
    the call of tool or function ``name``'s arguments, the content, or its json code block.

    Raises an :class:`OutputError` subclass when there is none to read (no choices, a
    refusal, an answer cut off or over ``max_answer_bytes``, no call of ``name``).
    """
    message = _usable_message(completion, max_answer_bytes)
    if mode in (Mode.TOOLS, Mode.TOOLS_STRICT):
        calls = getattr(message, "tool_calls", None) or []
        if not calls:
            raise InvalidOutputError(
                f"expected a call of tool {name}, got none", raw=message.content
            )
        call = calls[0].function
        _check_name(call.name, name, call.arguments)
        return str(call.arguments or "")
    if mode is Mode.FUNCTIONS:
        function_call = getattr(message, "function_call", None)
        if function_call is None:
            raise InvalidOutputError(
                f"expected a call of function {name}, got none", raw=message.content
            )
        _check_name(function_call.name, name, function_call.arguments)
        return str(function_call.arguments or "")
    text = _answer_text(message.content)
    if mode is Mode.MD_JSON:
        match = _FENCE.search(text)
        text = match.group(1) if match else text
    return text


def _usable_message(completion: Any, max_answer_bytes: int | None) -> Any:
    """The first choice's message, unless the answer is unusable whatever the mode."""
    choices = getattr(completion, "choices", None)
    if not choices:
        raise InvalidOutputError("the endpoint answered with no choices")
    choice = choices[0]
    message = choice.message
    refusal = getattr(message, "refusal", None)
    if refusal:
        raise RefusalError(f"the model refused: {refusal}", raw=str(refusal))
    if max_answer_bytes is not None:
        _check_answer_size(message, max_answer_bytes)
    if choice.finish_reason == "content_filter":
        raise RefusalError("the answer was withheld by a content filter", raw=message.content)
    if choice.finish_reason == "length":
        raise IncompleteOutputError(
            "the answer was cut off at max_tokens (finish_reason=length); raise max_tokens",
            raw=_raw_of(message),
        )
    return message


def _check_answer_size(message: Any, limit: int) -> None:
    """Refuse an answer whose text (every tool call's arguments, the function call's, the
    content) is over ``limit`` bytes, before it is parsed: a runaway answer costs one error,
    not the memory and CPU of parsing it, nor a huge value in a table."""
    pieces = [c.function.arguments or "" for c in getattr(message, "tool_calls", None) or []]
    call = getattr(message, "function_call", None)
    if call is not None:
        pieces.append(call.arguments or "")
    pieces.append(_answer_text(getattr(message, "content", None)))
    # A str of n characters takes at most 4n bytes in UTF-8: most answers need no encoding.
    if sum(len(p) for p in pieces) * 4 <= limit:
        return
    size = sum(len(p.encode("utf-8", "surrogatepass")) for p in pieces)
    if size > limit:
        head = next((p for p in pieces if p), "")[:_RAW_HEAD]
        raise OversizedOutputError(
            f"the answer is {size} bytes, over max_answer_bytes={limit}; not parsed "
            "(a runaway answer: lower max_tokens, or raise max_answer_bytes if it is expected)",
            raw=head,
            size=size,
        )


def _answer_text(content: Any) -> str:
    """The answer's text. Reasoning endpoints (GPT OSS) send content as a list of blocks, a
    reasoning block then a text block: keep the text blocks
    (https://learn.microsoft.com/en-us/azure/databricks/machine-learning/model-serving/structured-outputs).
    """
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return content or ""


def _parse_parallel_calls(target: ResponseTarget, message: Any, context: Any) -> list[Any]:
    calls = getattr(message, "tool_calls", None) or []
    if not calls:
        expected = " or ".join(_name(m) for m in target.models)
        raise InvalidOutputError(
            f"expected a call of tool {expected}, got none", raw=message.content
        )
    by_name = {_name(m): m for m in target.models}
    results = []
    for tool_call in calls:
        model = by_name.get(tool_call.function.name)
        if model is None:
            raise InvalidOutputError(
                f"called unknown tool {tool_call.function.name!r}; "
                f"expected one of {sorted(by_name)}",
                raw=tool_call.function.arguments,
            )
        results.append(_validate(model, tool_call.function.arguments, context))
    return results


def _name(model: type[BaseModel]) -> str:
    return compile_schema(model).name


def _check_name(got: str, expected: str, raw: str | None) -> None:
    if got != expected:
        raise InvalidOutputError(f"called tool {got!r}, expected {expected!r}", raw=raw)


def _validate(
    model: type[BaseModel], text: str | None, context: Any, *, strict: bool = False
) -> BaseModel:
    if not text or not text.strip():
        raise InvalidOutputError("the answer was empty", raw=text)
    try:
        if not strict:
            return model.model_validate_json(text, context=context)
        # strict schemas say defaults as null and dicts as pairs: undo that first
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InvalidOutputError(f"- invalid JSON: {e}", raw=text) from e
        decoded = compile_schema(model, strict=True).decode(data)
        return model.model_validate(decoded, context=context)
    except ValidationError as e:
        raise InvalidOutputError(_describe(e), raw=text) from e


def validate_answer(
    model: type[BaseModel], data: Any, context: Any = None, *, strict: bool = False
) -> BaseModel:
    """``model`` validated from an answer already parsed from JSON (one entry of a packed
    request's list); ``strict``: ``data`` follows the strict compilation, decoded first."""
    try:
        if strict:
            data = compile_schema(model, strict=True).decode(data)
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise InvalidOutputError(_describe(e), raw=json.dumps(data, default=str)) from e


def _describe(error: ValidationError) -> str:
    """A compact account of a ValidationError: one line a problem, no documentation URLs."""
    lines = []
    for item in error.errors(include_url=False)[:20]:
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "json_invalid":
            lines.append(f"- invalid JSON: {item['msg']}")
            continue
        got = item.get("input")
        shown = json.dumps(got, default=str)[:80] if item["type"] != "missing" else ""
        lines.append(f"- {where}: {item['msg']}" + (f" (got {shown})" if shown else ""))
    return "\n".join(lines)


def _raw_of(message: Any) -> str | None:
    calls = getattr(message, "tool_calls", None)
    if calls:
        return "".join(c.function.arguments or "" for c in calls)
    call = getattr(message, "function_call", None)
    if call is not None:
        return str(call.arguments)
    content = getattr(message, "content", None)
    return _answer_text(content) if content is not None else None


# ---------------------------------------------------------------- re-asking


def reask_messages(
    mode: Mode, request_messages: list[Message], completion: Any, error: OutputError
) -> list[Message]:
    """The messages of the next attempt: the request's, then the bad answer and the error.

    ``request_messages`` is the *first* attempt's list, so re-asks do not pile up: each retry
    shows the model only its latest answer. Roles keep alternating (assistant, then tool or
    user), which Databricks requires.
    """
    if not getattr(completion, "choices", None):
        return request_messages  # no answer to correct: ask again as before
    message = completion.choices[0].message
    problem = f"Your answer was not valid:\n{error}\n"
    calls = getattr(message, "tool_calls", None)
    if mode in (Mode.TOOLS, Mode.TOOLS_STRICT, Mode.PARALLEL_TOOLS) and calls:
        assistant: Message = {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ],
        }
        # Claude endpoints (Opus at least) reject an assistant turn whose text is empty, missing
        # or blank beside its tool calls ("messages: text content blocks must be non-empty");
        # a single space is what Databricks' own client sends instead
        # (https://github.com/databricks/databricks-ai-bridge/pull/333), and every other
        # endpoint takes it too.
        content = message.content
        assistant["content"] = content if _answer_text(content).strip() else " "
        fix = problem + "Call the function again with every error fixed."
        replies = [{"role": "tool", "tool_call_id": c.id, "content": fix} for c in calls]
        return [*request_messages, assistant, *replies]
    raw = error.raw if error.raw is not None else _raw_of(message)
    if mode in (Mode.JSON, Mode.JSON_O1, Mode.MD_JSON):
        fix = problem + "Answer again with only the corrected JSON object."
        if mode is Mode.MD_JSON:
            fix += " Put it in a ```json code block."
    else:
        fix = problem + "Call the function again with every error fixed."
    # never an empty or blank assistant text with no tool call: Claude endpoints refuse it
    return [
        *request_messages,
        {"role": "assistant", "content": raw if _answer_text(raw).strip() else "(no answer)"},
        {"role": "user", "content": fix},
    ]

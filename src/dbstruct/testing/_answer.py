"""The 200 answer: a chat completion in the shape the request asked for.

| request                                         | answer                                       |
|-------------------------------------------------|----------------------------------------------|
| ``tools`` (+ ``tool_choice`` not "none")        | ``message.tool_calls``, ``"tool_calls"``     |
|   forced function                               | one call of it                               |
|   "auto" / "required"                           | one call per tool (first only if             |
|                                                 | ``parallel_tool_calls`` is false)            |
| legacy ``functions`` (+ ``function_call``)      | ``message.function_call``, ``"function_call"``|
| ``response_format`` json_schema / json_object   | JSON content                                 |
| a schema written in a system/user message       | JSON content, fenced if a ```json block is   |
|                                                 | asked for                                    |
| anything else                                   | a plain sentence                             |

Claude endpoints answer ``content: ""`` beside tool calls, where OpenAI-compatible ones answer
null (https://github.com/tidyverse/ellmer/issues/932: a Databricks Claude answer replayed as
history carried the empty string).

Endpoints whose name contains "gpt-oss" answer content as a list of blocks (a reasoning block,
then a text block), as Databricks documents for that model ("this model returns content as a
list of blocks; extract the block with type "text"":
https://learn.microsoft.com/en-us/azure/databricks/machine-learning/model-serving/structured-outputs).

The "oversized" fault answers valid JSON over 1 MiB (a string field padded; ``max_tokens`` is
not applied): what a runaway model sends, for the client's ``max_answer_bytes``. The
"misquote" fault answers valid JSON whose quotes (see ``_synth``) are words the text lacks.

A refusal is OpenAI's: ``message.refusal`` set and ``content`` null, ``finish_reason`` "stop"
(https://platform.openai.com/docs/guides/structured-outputs#refusals); Databricks documents no
refusal field of its own (chosen: the OpenAI-compatible form).
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dbstruct.testing._catalog import served_model
from dbstruct.testing._families import family_of
from dbstruct.testing._packs import Pack, PackPlan, read_pack
from dbstruct.testing._request_text import Hints, estimate_tokens, find_schema, wants_fence
from dbstruct.testing._synth import Synth, break_value

__all__ = ["Shape", "build_completion", "packed_request", "plan_shape", "stream_events"]

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
_GENERIC = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


@dataclass
class Call:
    name: str
    schema: dict[str, Any]


@dataclass
class Shape:
    kind: str  # "tools" | "function" | "json" | "fenced" | "text"
    calls: list[Call] = field(default_factory=list)
    schema: dict[str, Any] | None = None


def plan_shape(body: dict[str, Any]) -> Shape:
    messages = body["messages"]
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if tools and choice != "none":
        specs = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
        if isinstance(choice, dict):
            names = [choice["function"]["name"]]
        else:
            names = list(specs)
            if body.get("parallel_tool_calls") is False:
                names = names[:1]
        return Shape("tools", [Call(n, specs[n]) for n in names])
    functions = body.get("functions")
    call = body.get("function_call", "auto")
    if functions and call != "none":
        specs = {f["name"]: f.get("parameters") or {} for f in functions}
        name = call["name"] if isinstance(call, dict) else next(iter(specs))
        return Shape("function", [Call(name, specs[name])])
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return Shape("json", schema=fmt["json_schema"]["schema"])
    schema = find_schema(messages)
    if fmt.get("type") == "json_object":
        return Shape("json", schema=schema)
    if schema is not None:
        return Shape("fenced" if wants_fence(messages) else "json", schema=schema)
    return Shape("fenced" if wants_fence(messages) else "text")


def packed_request(body: dict[str, Any]) -> Pack | None:
    """The pack a request asks for (several rows, see :mod:`dbstruct.testing._packs`), read
    from the schema its answer goes in (the first call's); None for an ordinary request."""
    shape = plan_shape(body)
    return read_pack(body["messages"], shape.calls[0].schema if shape.calls else shape.schema)


@dataclass
class Built:
    """The assistant message before serialisation, and why it finished."""

    message: dict[str, Any] | None  # None: "choices": []
    finish_reason: str
    text: str  # what completion tokens are counted from


class _Builder:
    def __init__(
        self,
        body: dict[str, Any],
        endpoint: str,
        rng: random.Random,
        hints: Hints,
        pack: tuple[PackPlan, int] | None = None,
    ):
        self.body = body
        self.endpoint = endpoint
        self.rng = rng
        self.hints = hints
        self.shape = plan_shape(body)
        self.pack = pack  # a packed request's plan and this choice's index

    # ------------------------------------------------------------ values

    def _values(self, source: dict[str, Any] | None, fault: str | None) -> list[tuple[str, Any]]:
        """(call name or "", value) pairs; a value is JSON, or a str kept verbatim."""
        shape = self.shape
        if shape.kind in ("tools", "function"):
            targets = [(c.name, c.schema) for c in shape.calls]
        else:
            targets = [("", shape.schema or _GENERIC)]
        if source is not None and "text" in source:
            return [(targets[0][0], _Verbatim(source["text"]))]
        if source is not None and "value" in source:
            pairs = [(targets[0][0], source["value"])]
            schemas = [targets[0][1]]
        else:
            pairs = []
            schemas = []
            wrong = fault == "misquote"
            for name, schema in targets:
                if self.pack is not None and not pairs:  # the list of entries, by id
                    value = self.pack[0].answer(self.pack[1], misquote=wrong).value
                else:
                    value = Synth(schema, self.rng, self.hints, misquote=wrong).value(schema)
                pairs.append((name, value))
                schemas.append(schema)
        calls = shape.kind in ("tools", "function")
        if fault == "invalid" or (fault == "wrong_tool" and not calls):
            name, value = pairs[0]
            pairs[0] = (name, break_value(value, schemas[0], schemas[0]))
        if fault == "oversized":
            pairs = [(name, _padded(value)) for name, value in pairs]
        return pairs

    # ------------------------------------------------------------ message

    def build(self, source: dict[str, Any] | None, fault: str | None) -> Built:
        if fault == "empty":
            return Built(None, "stop", "")
        if fault == "refusal":
            message = {"role": "assistant", "content": None, "refusal": REFUSAL_TEXT}
            return Built(message, "stop", REFUSAL_TEXT)
        if source is not None and "reply" in source:
            return self._reply(source["reply"])
        pairs = self._values(source, fault)
        if self.shape.kind in ("tools", "function"):
            return self._calls(pairs, fault)
        return self._content(pairs[0][1], fault)

    def _calls(self, pairs: list[tuple[str, Any]], fault: str | None) -> Built:
        calls = []
        for name, value in pairs:
            args = _serialise(value)
            if fault == "malformed":
                args = _malform(args)
            elif fault == "length":
                args = _cut(args)
            if fault == "wrong_tool":
                name = f"{name}_unknown"
            calls.append((name, args))
        reason = "length" if fault == "length" else None
        text = "".join(a for _, a in calls)
        if self.shape.kind == "function":
            name, args = calls[0]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "function_call": {"name": name, "arguments": args},
            }
            return Built(message, reason or "function_call", text)
        message = {"role": "assistant", "content": None, "tool_calls": self._tool_calls(calls)}
        return Built(message, reason or "tool_calls", text)

    def _tool_calls(self, calls: list[tuple[str, str]]) -> list[dict[str, Any]]:
        # New per answer (not drawn from the request's seed): "call_" and 24 hex digits, OpenAI's
        # form (chosen: no Databricks tool-call id is documented).
        return [
            {
                "id": f"call_{secrets.token_hex(12)}",
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            for name, args in calls
        ]

    def _content(self, value: Any, fault: str | None) -> Built:
        kind = self.shape.kind
        if kind == "text" and not isinstance(value, _Verbatim):
            words = " ".join(self.hints.words[:12]) or "your message"
            text = f"This is an emulated answer about: {words}."
            text += _PADDING if fault == "oversized" else ""
        elif kind == "fenced" and not isinstance(value, _Verbatim):
            inner = _serialise(value, indent=2)
            inner = _malform(inner) if fault == "malformed" else inner
            text = f"```json\n{inner}\n```"
        else:
            text = _serialise(value)
            text = _malform(text) if fault == "malformed" else text
        reason = "stop"
        if fault == "length":
            text, reason = _cut(text), "length"
        return Built({"role": "assistant", "content": text}, reason, text)

    def _reply(self, reply: dict[str, Any]) -> Built:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        text = ""
        content = reply.get("content")
        if content is not None:
            message["content"] = text = _serialise(_scripted(content))
        reason = "stop"
        if reply.get("tool_calls"):
            calls = [(str(n), _serialise(_scripted(a))) for n, a in reply["tool_calls"]]
            message["tool_calls"] = self._tool_calls(calls)
            text += "".join(a for _, a in calls)
            reason = "tool_calls"
        if reply.get("function_call"):
            name, args = reply["function_call"]
            message["function_call"] = {"name": str(name), "arguments": _serialise(_scripted(args))}
            text += message["function_call"]["arguments"]
            reason = "function_call"
        if reply.get("refusal"):
            message["refusal"] = reply["refusal"]
            text += reply["refusal"]
        return Built(message, reply.get("finish_reason") or reason, text)


class _Verbatim(str):
    """Scripted raw text: used as it is, never re-serialised."""


def _serialise(value: Any, indent: int | None = None) -> str:
    if isinstance(value, _Verbatim):
        return str(value)
    return json.dumps(value, indent=indent)


def _scripted(value: Any) -> Any:
    """A scripted str is raw text; anything else a JSON value."""
    return _Verbatim(value) if isinstance(value, str) else value


#: what an "oversized" answer is padded with: past the client's default max_answer_bytes (1 MiB)
OVERSIZED_BYTES = (1 << 20) + (1 << 16)
_PADDING = " padding" * (OVERSIZED_BYTES // 8)


def _padded(value: Any) -> Any:
    """``value`` still valid JSON (and of its schema, where it has a string field), but over
    :data:`OVERSIZED_BYTES` once serialised: its first string field padded, else a field
    added. A runaway answer of a model that kept writing one value."""
    if not isinstance(value, dict):
        return {"value": value, "padding": _PADDING}
    for key, item in value.items():
        if isinstance(item, str):
            return {**value, key: item + _PADDING}
    return {**value, "padding": _PADDING}


def _malform(text: str) -> str:
    """JSON that does not parse: the closing bracket replaced by a dangling comma."""
    stripped = text.rstrip()
    if stripped.endswith(("}", "]")):
        return stripped[:-1].rstrip() + ","
    return stripped + ' {"'


def _cut(text: str) -> str:
    """The text cut off halfway, as an answer stopped at max_tokens is."""
    return text[: max(1, len(text) // 2)]


# ---------------------------------------------------------------- the completion


def build_completion(
    body: dict[str, Any],
    endpoint: str,
    seed: int,
    hints: Hints,
    *,
    source: dict[str, Any] | None,
    fault: str | None,
    prompt_tokens: int,
    pack: PackPlan | None = None,
) -> tuple[dict[str, Any], int]:
    """The completion body and its completion-token count (of all its choices).

    Values are drawn from ``seed`` (the request's content), so the same request gets the same
    values; each of ``n`` choices draws from its own seed, so choices differ where the schema
    allows. Ids are new for every answer, as a real endpoint's are. A packed request
    (``pack``) is answered with its plan's entries, each choice's own.
    """
    choices = []
    completion_tokens = 0
    for index in range(max(1, int(body.get("n") or 1))):
        rng = random.Random(seed if index == 0 else f"{seed}:{index}")
        plan = (pack, index) if pack is not None else None
        built = _Builder(body, endpoint, rng, hints, plan).build(source, fault)
        if fault != "oversized":  # a runaway answer: max_tokens unset or set far too high
            built = _apply_max_tokens(built, body)
        if built.message is None:  # the "empty" fault: "choices": []
            break
        completion_tokens += max(1, estimate_tokens(built.text))
        choices.append(
            {
                "index": index,
                "message": _family_content(built.message, endpoint),
                "finish_reason": built.finish_reason,
                "logprobs": None,
            }
        )
    completion = {
        # The form FMAPI answers carry: "chatcmpl_" and a UUID (recorded answers in
        # databricks/databricks-ai-bridge integrations/langchain/tests/utils/chat_models.py).
        "id": f"chatcmpl_{uuid.uuid4()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_model(endpoint),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return completion, completion_tokens


def _apply_max_tokens(built: Built, body: dict[str, Any]) -> Built:
    """A real model stops at ``max_tokens``: the text is cut there, finish_reason "length"."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    message = built.message
    if not limit or message is None or estimate_tokens(built.text) <= limit:
        return built
    keep = int(limit) * 4
    message = dict(message)
    if isinstance(message.get("content"), str):
        message["content"] = message["content"][:keep]
    if message.get("tool_calls"):
        message["tool_calls"] = [
            {**c, "function": {**c["function"], "arguments": c["function"]["arguments"][:keep]}}
            for c in message["tool_calls"]
        ]
    if message.get("function_call"):
        call = message["function_call"]
        message["function_call"] = {**call, "arguments": call["arguments"][:keep]}
    return Built(message, "length", built.text[:keep])


def _family_content(message: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """``content`` as the endpoint's family writes it (see the module docstring)."""
    if family_of(endpoint) == "claude" and message.get("tool_calls") and not message.get("content"):
        return {**message, "content": ""}
    return _blocks(message, endpoint)


def _blocks(message: dict[str, Any], endpoint: str) -> dict[str, Any]:
    if "gpt-oss" not in endpoint.lower() or not isinstance(message.get("content"), str):
        return message
    summary = "The user wants an answer in the requested format; I will give it directly."
    blocks = [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": summary}]},
        {"type": "text", "text": message["content"]},
    ]
    return {**message, "content": blocks}


#: a streamed text is cut into pieces of about one token (four characters), and at most this
#: many, so a 1 MiB answer is a few dozen events, not a quarter million
_MAX_PIECES = 64
_MIN_PIECE = 4


def _pieces(text: str) -> list[str]:
    size = max(_MIN_PIECE, math.ceil(len(text) / _MAX_PIECES))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _choice_deltas(choice: dict[str, Any]) -> list[tuple[int, dict[str, Any], str | None]]:
    """One choice as OpenAI-compatible stream deltas: (choice index, delta, finish_reason)."""
    i = choice["index"]
    message = choice["message"]
    content = message.get("content")
    out: list[tuple[int, dict[str, Any], str | None]] = [
        (i, {"role": "assistant", "content": "" if isinstance(content, str) else None}, None)
    ]
    if isinstance(content, str):
        out += [(i, {"content": p}, None) for p in _pieces(content)]
    elif content is not None:
        # gpt-oss content blocks in one delta (chosen: docs are silent on how blocks stream)
        out.append((i, {"content": content}, None))
    if message.get("refusal"):
        out += [(i, {"refusal": p}, None) for p in _pieces(message["refusal"])]
    for n, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        head = {"index": n, "id": call["id"], "type": "function"}
        head["function"] = {"name": function["name"], "arguments": ""}
        out.append((i, {"tool_calls": [head]}, None))
        out += [
            (i, {"tool_calls": [{"index": n, "function": {"arguments": p}}]}, None)
            for p in _pieces(function["arguments"])
        ]
    call = message.get("function_call")
    if call:
        out.append((i, {"function_call": {"name": call["name"], "arguments": ""}}, None))
        out += [(i, {"function_call": {"arguments": p}}, None) for p in _pieces(call["arguments"])]
    out.append((i, {}, choice["finish_reason"]))
    return out


def stream_events(completion: dict[str, Any], include_usage: bool) -> list[str]:
    """The completion as server-sent events, as OpenAI-compatible endpoints stream it.

    Per choice: a first chunk with ``delta.role`` "assistant", then the content in pieces of
    about a token; a tool call as a chunk with its ``index``, ``id``, ``type`` and
    ``function.name`` (arguments ""), then argument fragments under the same ``index``; a last
    chunk with an empty delta and the ``finish_reason``. Then, with
    ``stream_options.include_usage``, a chunk with ``"choices": []`` and the usage
    (https://platform.openai.com/docs/api-reference/chat-streaming), then ``data: [DONE]``.
    Only a client that accumulates the deltas sees the whole answer.

    Every chunk also carries ``usage`` so far (completion tokens growing to the total), as
    FMAPI streams do (recorded chunks in databricks/databricks-ai-bridge
    integrations/langchain/tests/utils/chat_models.py): summing usage over chunks over-counts.
    """
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    usage = completion["usage"]
    deltas = [d for choice in completion["choices"] for d in _choice_deltas(choice)]
    events: list[dict[str, Any]] = []
    for k, (index, delta, finish) in enumerate(deltas, 1):
        done = usage["completion_tokens"] * k // len(deltas)
        events.append(
            {
                **base,
                "choices": [
                    {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
                "usage": {
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": done,
                    "total_tokens": usage["prompt_tokens"] + done,
                },
            }
        )
    if include_usage or not completion["choices"]:
        events.append({**base, "choices": [], "usage": usage})
    return [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]

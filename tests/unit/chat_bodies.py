"""Chat request bodies in each mode's shape, as the emulator tests post them raw."""

from __future__ import annotations

import json
from typing import Any

LLAMA = "databricks-meta-llama-3-3-70b-instruct"
GPT = "databricks-gpt-5"


def body_for(
    mode: str, messages: list[dict[str, Any]], schema: dict[str, Any], name: str, **extra: Any
) -> dict[str, Any]:
    """A request in ``mode``'s shape asking for ``schema`` under ``name``: a forced tool or
    function, a ``json_schema`` response format, or (md_json) the schema written into the
    system message (added when there is none) with a ```json block asked for."""
    messages = [dict(m) for m in messages]
    body: dict[str, Any] = {"model": LLAMA, "messages": messages, **extra}
    if mode in ("tools", "tools_strict"):
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if mode == "tools_strict":
            function["strict"] = True
            body["model"] = GPT  # forwarded to OpenAI: its strict-schema rules apply
        body["tools"] = [{"type": "function", "function": function}]
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif mode == "functions":
        body["functions"] = [{"name": name, "parameters": schema}]
        body["function_call"] = {"name": name}
    elif mode == "json":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema},
        }
    else:
        instruction = (
            f"Answer with one JSON object for {name}, matching this JSON schema:\n"
            f"{json.dumps(schema, separators=(',', ':'))}\n"
            "Return the object itself, not the schema, in a ```json code block."
        )
        if messages and messages[0].get("role") == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n{instruction}"
        else:
            messages.insert(0, {"role": "system", "content": instruction})
    return body

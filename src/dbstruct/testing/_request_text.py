"""Reading request text: message contents, fault markers, value hints, quotes, schemas in
prompts.

Token counts are an approximation, the same for prompt and completion: one token per four
characters (rounded up), plus four per message for the chat template, plus the JSON text of the
tool and response-format definitions. The emulator states this rule itself rather than import
the client's (it must not share code with what it tests); the client's estimate in
``dbstruct._request_checks`` is the same rule, and a test checks the two agree, so the
client's context check and the emulator's 400 agree. Real tokenizers differ per model; tests
assert on the emulator's own counts, never on a real tokenizer's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "Hints",
    "Marker",
    "asks_quote",
    "content_text",
    "estimate_tokens",
    "find_schema",
    "hints_from",
    "parse_markers",
    "prompt_tokens",
    "quote_fields",
    "quote_of",
    "wants_fence",
]

#: ``[[fault:KIND]]``, ``[[fault:KINDxN]]``, ``[[latency:SECONDS]]`` in any message text
MARKER = re.compile(r"\[\[(fault|latency):([A-Za-z0-9_.]+)\]\]")
#: ``[[pack:KIND]]`` in a packed item's text (see ``_packs``)
PACK_MARKER = re.compile(r"\[\[pack:([A-Za-z_]+)\]\]")
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


def strip_markers(text: str, by: str = "") -> str:
    return PACK_MARKER.sub(by, MARKER.sub(by, text))


# ---------------------------------------------------------------- hints


@dataclass(frozen=True)
class Hints:
    """Cheap facts from the user's text that make synthesised values plausible."""

    integers: tuple[int, ...] = ()
    numbers: tuple[float, ...] = ()
    names: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    #: what quotes copy from: the first user turn, markers and schemas cut out as line breaks
    text: str = ""


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
    hints = _hints_of("\n".join(_without_json(t) for t in texts))
    # The first turn only: a later one is a re-ask, the client's words rather than the row's.
    source = strip_markers(_without_json(texts[0], "\n"), "\n") if texts else ""
    return dataclasses.replace(hints, text=source)


def _without_json(text: str, by: str = "") -> str:
    """The text with any embedded schema object removed (JSON_O1 puts it in the user turn)."""
    if '"properties"' not in text:
        return text
    span = _schema_span(text)
    return text if span is None else text[: span[0]] + by + text[span[1] :]


# ---------------------------------------------------------------- quotes

#: string properties with these names are answered with a quote of the source text
QUOTE_NAMES = frozenset({"quote", "citation", "evidence_quote"})
_QUOTE_ASK = re.compile(
    r"\bverbatim\b|\bexact(?:ly)?\b.*\b(?:quote|cop(?:y|ied)|span)\b"
    r"|\b(?:quote|cop(?:y|ied))\b.*\bexact(?:ly)?\b",
    re.IGNORECASE | re.DOTALL,
)
_TOKEN = re.compile(r"\S+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
MAX_QUOTE_WORDS = 8
#: made-up words a misquote starts with (the first one the source lacks)
_INVENTED = ("zorbly", "quendric", "vaxtrum", "plimsock")


def asks_quote(name: str, schema: Any) -> bool:
    """Is this (resolved) property a string that is a quote: named like one, or described as a
    verbatim (exact) quote or copy?"""
    if not isinstance(schema, Mapping):
        return False
    kind = schema.get("type", "string")
    if not (kind == "string" or (isinstance(kind, list) and "string" in kind)):
        return False
    description = schema.get("description")
    asked = isinstance(description, str) and _QUOTE_ASK.search(description) is not None
    return name in QUOTE_NAMES or asked


def quote_fields(props: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(key, values) when an object's (resolved) properties hold a quote and a "field" (or
    "name") whose values are an enum (or const) of strings: a quote per field is asked for."""
    if not any(asks_quote(k, v) for k, v in props.items()):
        return None
    for key in ("field", "name"):
        sub = props.get(key)
        values = sub.get("enum", [sub.get("const")]) if isinstance(sub, Mapping) else None
        if values and all(isinstance(v, str) for v in values):
            return key, list(values)
    return None


def quote_of(text: str, rng: random.Random, *, misquote: bool = False) -> str:
    """1 to 8 whitespace-separated words of ``text`` copied exactly, from one line of its last
    paragraph ("" when it has none); with ``misquote``, words that are not in ``text`` (see
    :func:`_misquote`).

    The last paragraph (after the last blank line): a model quotes the material it was given,
    not its instructions, and prompts lead with the instructions and end with the material.
    A one-paragraph prompt ("Extract the user: {text}") may still be quoted in its lead's
    words, as a careless model would."""
    lines: list[tuple[str, list[tuple[int, int]]]] = []
    for paragraph in reversed(_PARAGRAPH_BREAK.split(text)):
        found = [
            (line, [m.span() for m in _TOKEN.finditer(line)]) for line in paragraph.splitlines()
        ]
        lines = [(line, words) for line, words in found if words]
        if lines:
            break
    span = ""
    if lines:
        line, words = rng.choice(lines)
        n = rng.randint(1, min(MAX_QUOTE_WORDS, len(words)))
        first = rng.randrange(len(words) - n + 1)
        span = line[words[first][0] : words[first + n - 1][1]]
    return _misquote(span, text) if misquote else span


def _misquote(span: str, text: str) -> str:
    """An invented word the text lacks even as letters alone (case, spaces and punctuation
    ignored), then the span's words reversed: in ``text`` under no such normalisation."""
    letters = re.sub(r"[^a-z]", "", text.lower())
    invented = next((w for w in _INVENTED if w not in letters), "zq" * (len(letters) // 2 + 1))
    return " ".join([invented, *reversed(span.split())])


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

"""Values that satisfy a JSON schema, made up deterministically from a seeded RNG.

The same schema, RNG seed and hints give the same value. Values come from the user's text
where that is cheap (integers found in the text for integer fields, a capitalised word for a
name-like field, words for other strings) and are always valid against the schema: enums,
nullable types, nested objects, arrays, ``additionalProperties`` maps, bounds, lengths,
``pattern`` (generated from the regex) and ``format`` (also guessed from a field's name or
description: "date", "date-time", "uuid", "email", "url").

Quotes, the emulator's own rule for what a model asked for evidence does: a string property
named "quote", "citation" or "evidence_quote", or described as a verbatim (exact) quote or copy,
gets 1 to 8 words copied exactly (case and inner whitespace kept, never across a line or a
marker) from the last paragraph of the source text: the request's first user turn
(``Hints.text``), or a packed item's own text (see ``quote_of``). An array of objects holding
a quote and a "field" (or "name") enum gets one entry per enum value, in order (up to
``maxItems``). With ``misquote`` every quote is words the text does not hold (``quote_of``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
import random
import re
import uuid
from typing import Any

from dbstruct.testing._request_text import Hints, asks_quote, quote_fields, quote_of

__all__ = ["Synth", "break_value", "resolve"]

_MAX_DEPTH = 6
_NULL_P = 0.25  # a nullable field comes out null this often
_OPTIONAL_P = 0.75  # a non-required property is present this often
_NAME_KEYS = (
    "name", "city", "country", "author", "title", "company", "person", "brand", "vendor",
    "customer", "town", "state", "organization", "organisation", "place", "location",
)  # fmt: skip
_FALLBACK_NAMES = ("Alice", "Berlin", "Bob", "Carol", "Delft", "Eve", "Oslo", "Quinn")
_FALLBACK_WORDS = ("example", "value", "sample", "text", "note", "item")


def resolve(schema: Any, root: Any) -> Any:
    """``schema`` with a local ``$ref`` (``#/$defs/X``, ``#/definitions/X``) followed."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
        ref = schema["$ref"]
        if not ref.startswith("#"):
            return {}
        target: Any = root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **extra} if isinstance(target, dict) else extra
        seen += 1
    return schema


class Synth:
    """Makes values for one request; ``root`` is the schema ``$ref``s resolve against."""

    def __init__(
        self, root: Any, rng: random.Random, hints: Hints, *, misquote: bool = False
    ) -> None:
        self.root = root
        self.rng = rng
        self.hints = hints
        self.misquote = misquote

    def value(self, schema: Any, name: str = "", depth: int = 0) -> Any:
        schema = resolve(schema, self.root)
        if not isinstance(schema, dict) or not schema:
            return self._text(name)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self._branch(schema, key, name, depth)
        if isinstance(schema.get("allOf"), list):
            return self.value(_merge_all_of(schema, self.root), name, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            others = [k for k in kind if k != "null"]
            if "null" in kind and (not others or depth >= _MAX_DEPTH or self._chance(_NULL_P)):
                return None
            kind = self.rng.choice(others)
        if kind is None:
            kind = _implied_type(schema)
        return self._typed(kind, schema, name, depth)

    # ------------------------------------------------------------ dispatch

    def _typed(self, kind: str, schema: dict[str, Any], name: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self._chance(0.5)
        if kind == "null":
            return None
        return self._string(schema, name)

    def _chance(self, p: float) -> bool:
        return self.rng.random() < p

    def _branch(self, schema: dict[str, Any], key: str, name: str, depth: int) -> Any:
        branches = [resolve(b, self.root) for b in schema[key]]
        nulls = [b for b in branches if isinstance(b, dict) and b.get("type") == "null"]
        others = [b for b in branches if b not in nulls]
        if nulls and (not others or depth >= _MAX_DEPTH or self._chance(_NULL_P)):
            return None
        chosen = self.rng.choice(others)
        siblings = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        merged = {**siblings, **chosen} if isinstance(chosen, dict) else chosen
        return self.value(merged, name, depth)

    # ------------------------------------------------------------ containers

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        found = schema.get("properties")
        props: dict[str, Any] = found if isinstance(found, dict) else {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        optional: list[str] = []
        for key, sub in props.items():
            if key in required or (depth < _MAX_DEPTH and self._chance(_OPTIONAL_P)):
                out[key] = self.value(sub, key, depth + 1)
            else:
                optional.append(key)
        low = int(schema.get("minProperties") or 0)
        for key in optional:
            if len(out) >= low:
                break
            out[key] = self.value(props[key], key, depth + 1)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not props:
            self._fill_map(out, schema, extra, depth)
        return out

    def _fill_map(
        self, out: dict[str, Any], schema: dict[str, Any], values: dict[str, Any], depth: int
    ) -> None:
        low = int(schema.get("minProperties") or 0)
        high = int(schema.get("maxProperties") or max(low, 3))
        count = low if depth >= _MAX_DEPTH else self.rng.randint(max(low, min(1, high)), high)
        keys = [w for w in self.hints.words if w not in out] or []
        for i in range(count):
            key = keys[i] if i < len(keys) else f"key_{i + 1}"
            out[key] = self.value(values, key, depth + 1)

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        items = schema.get("items", {})
        low = int(schema.get("minItems") or 0)
        high = int(schema["maxItems"]) if "maxItems" in schema else max(low, 3)
        count = low if depth >= _MAX_DEPTH else self.rng.randint(min(max(low, 1), high), high)
        found = resolve(items, self.root).get("properties") if isinstance(items, dict) else None
        found = found if isinstance(found, dict) else {}
        per_field = quote_fields({k: resolve(v, self.root) for k, v in found.items()})
        if per_field is not None:  # one quote per field, in the enum's order
            key, fields = per_field
            cap = int(schema["maxItems"]) if "maxItems" in schema else len(fields)
            fields = [fields[i % len(fields)] for i in range(max(low, len(fields)))][:cap]
            return [{**(self.value(items, name, depth + 1) or {}), key: f} for f in fields]
        values = [self.value(items, name, depth + 1) for _ in range(count)]
        if schema.get("uniqueItems"):
            values = self._unique(values, items, name, depth, low)
        return values

    def _unique(self, values: list[Any], items: Any, name: str, depth: int, low: int) -> list[Any]:
        seen: dict[str, Any] = {}
        for v in values:
            seen.setdefault(json.dumps(v, sort_keys=True), v)
        tries = 0
        while len(seen) < low and tries < 50:
            v = self.value(items, name, depth + 1)
            seen.setdefault(json.dumps(v, sort_keys=True), v)
            tries += 1
        return list(seen.values())

    # ------------------------------------------------------------ scalars

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first = -(-int(low) // step)
            last = int(high) // step
            if first <= last:
                return step * self.rng.randint(first, min(last, first + 100))
        candidates = [i for i in self.hints.integers if low <= i <= high]
        if candidates:
            return int(self.rng.choice(candidates))
        return self.rng.randint(int(low), int(high))

    def _number(self, schema: dict[str, Any]) -> float | int:
        if isinstance(schema.get("multipleOf"), int):
            return self._integer(schema)
        low, high = _bounds(schema, integer=False)
        step = schema.get("multipleOf")
        if isinstance(step, float) and step > 0:
            k = self.rng.randint(int(low // step) + 1, max(int(low // step) + 1, int(high // step)))
            return round(k * step, 10)
        candidates = [n for n in self.hints.numbers if low <= n <= high]
        if candidates:
            return self.rng.choice(candidates)
        value = round(self.rng.uniform(low, high), 2)
        return min(max(value, low), high)

    def _string(self, schema: dict[str, Any], name: str) -> str:
        if asks_quote(name, schema):
            return _fit(quote_of(self.hints.text, self.rng, misquote=self.misquote), schema)
        fmt = schema.get("format") or _format_hint(name, schema.get("description"))
        if isinstance(fmt, str):
            formatted = self._formatted(fmt)
            if formatted is not None:
                return formatted
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            generated = _from_pattern(pattern, self.rng)
            if generated is not None:
                return generated
        return _fit(self._text(name), schema)

    def _text(self, name: str) -> str:
        lowered = name.lower()
        if any(k in lowered for k in _NAME_KEYS):
            return self.rng.choice(self.hints.names or _FALLBACK_NAMES)
        words = self.hints.words or _FALLBACK_WORDS
        start = self.rng.randrange(len(words))
        return " ".join(words[start : start + self.rng.randint(1, 4)])

    def _formatted(self, fmt: str) -> str | None:
        rng = self.rng
        day = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 2000))
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        word = (self.hints.words or _FALLBACK_WORDS)[0]
        values = {
            "date": day.isoformat(),
            "date-time": f"{day.isoformat()}T{clock}Z",
            "time": clock,
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "email": f"{word}@example.com",
            "uri": f"https://example.com/{word}",
            "url": f"https://example.com/{word}",
            "iri": f"https://example.com/{word}",
            "uri-reference": f"/{word}",
            "hostname": "example.com",
            "ipv4": f"192.0.2.{rng.randint(1, 254)}",
            "ipv6": f"2001:db8::{rng.randint(1, 0xFFFF):x}",
            "duration": f"P{rng.randint(1, 30)}D",
        }
        return values.get(fmt)


# ---------------------------------------------------------------- helpers


def _implied_type(schema: dict[str, Any]) -> str:
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        part = resolve(part, root)
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    low: float = -1e18
    high: float = 1e18
    if isinstance(schema.get("minimum"), (int, float)):
        low = schema["minimum"]
    if isinstance(schema.get("maximum"), (int, float)):
        high = schema["maximum"]
    exclusive_low = schema.get("exclusiveMinimum")
    exclusive_high = schema.get("exclusiveMaximum")
    nudge = 1 if integer else 0.01
    if exclusive_low is True:  # draft 4: a flag on minimum
        low += nudge
    elif isinstance(exclusive_low, (int, float)) and not isinstance(exclusive_low, bool):
        low = max(low, exclusive_low + nudge)
    if exclusive_high is True:
        high -= nudge
    elif isinstance(exclusive_high, (int, float)) and not isinstance(exclusive_high, bool):
        high = min(high, exclusive_high - nudge)
    if low == -1e18 and high == 1e18:
        low, high = 0, 100
    elif low == -1e18:
        low = high - 100
    elif high == 1e18:
        high = low + 100
    if integer:
        low, high = math.ceil(low), math.floor(high)
    return low, max(low, high)


def _format_hint(name: str, description: Any) -> str | None:
    """A format for a plain string, guessed from the field's name or description."""
    text = f"{name} {description if isinstance(description, str) else ''}".lower()
    if any(k in text for k in ("date-time", "datetime", "timestamp")) or name.endswith("_at"):
        return "date-time"
    if "date" in text or name.endswith("_on"):
        return "date"
    if "uuid" in text:
        return "uuid"
    if "email" in text:
        return "email"
    if re.search(r"\b(url|uri)\b", text) or name.endswith("_url"):
        return "url"
    return None


def _fit(text: str, schema: dict[str, Any]) -> str:
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if isinstance(high, int) and len(text) > high:
        text = text[:high].rstrip() if high > 0 else ""
    if isinstance(low, int) and len(text) < low:
        text = text + "x" * (low - len(text))
    return text


# ---------------------------------------------------------------- regex → string

_parser: Any = importlib.import_module("re._parser" if hasattr(re, "_parser") else "sre_parse")


def _from_pattern(pattern: str, rng: random.Random) -> str | None:
    """A string that ``re.search(pattern, s)`` accepts, built from the parsed regex."""
    try:
        parsed = _parser.parse(pattern)
        for _ in range(3):
            out: list[str] = []
            _emit(list(parsed), rng, out)
            text = "".join(out)
            if re.search(pattern, text):
                return text
    except Exception:  # an exotic construct: the caller falls back to plain text
        return None
    return None


def _emit(items: list[Any], rng: random.Random, out: list[str]) -> None:
    for op, arg in items:
        kind = getattr(op, "name", str(op))
        if kind == "LITERAL":
            out.append(chr(arg))
        elif kind == "NOT_LITERAL":
            out.append("a" if arg != ord("a") else "b")
        elif kind == "ANY":
            out.append("x")
        elif kind == "IN":
            out.append(_pick_in(arg, rng))
        elif kind in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            count = rng.randint(low, min(high, low + 3))
            for _ in range(count):
                _emit(list(sub), rng, out)
        elif kind in ("SUBPATTERN", "ATOMIC_GROUP"):
            _emit(list(arg[-1] if kind == "SUBPATTERN" else arg), rng, out)
        elif kind == "BRANCH":
            _emit(list(rng.choice(arg[1])), rng, out)
        elif kind == "CATEGORY":
            out.append(_category(getattr(arg, "name", str(arg)), rng))
        # AT (anchors) and lookarounds emit nothing; the final re.search checks the result.


def _category(name: str, rng: random.Random) -> str:
    if name.endswith("NOT_DIGIT"):
        return "a"
    if name.endswith("DIGIT"):
        return str(rng.randint(0, 9))
    if name.endswith("NOT_WORD"):
        return "-"
    if name.endswith("WORD"):
        return rng.choice("abcdefghijklmnopqrstuvwxyz")
    if name.endswith("NOT_SPACE"):
        return "a"
    return " "


def _pick_in(items: list[Any], rng: random.Random) -> str:
    names = [getattr(op, "name", str(op)) for op, _ in items]
    if names and names[0] == "NEGATE":
        banned = items[1:]
        for ch in "aZ0_-x9Q ":
            if not _in_set(ch, banned):
                return ch
        return "~"
    op, arg = rng.choice(items)
    kind = getattr(op, "name", str(op))
    if kind == "LITERAL":
        return chr(arg)
    if kind == "RANGE":
        return chr(rng.randint(arg[0], arg[1]))
    if kind == "CATEGORY":
        return _category(getattr(arg, "name", str(arg)), rng)
    return "a"


def _in_set(ch: str, items: list[Any]) -> bool:
    for op, arg in items:
        kind = getattr(op, "name", str(op))
        if kind == "LITERAL" and ord(ch) == arg:
            return True
        if kind == "RANGE" and arg[0] <= ord(ch) <= arg[1]:
            return True
        if kind == "CATEGORY":
            cat = getattr(arg, "name", str(arg))
            probe = {"DIGIT": r"\d", "WORD": r"\w", "SPACE": r"\s"}
            for suffix, rx in probe.items():
                if cat.endswith(suffix):
                    hit = re.fullmatch(rx, ch) is not None
                    if hit != ("NOT_" in cat):
                        return True
    return False


# ---------------------------------------------------------------- faults


def break_value(value: Any, schema: Any, root: Any) -> Any:
    """``value`` made invalid for ``schema``: a required property removed, or one given the
    wrong type; failing both, the whole value wrapped in a list (roots are objects)."""
    schema = resolve(schema, root)
    if isinstance(value, dict) and isinstance(schema, dict):
        required = [k for k in schema.get("required") or [] if k in value]
        if required:
            broken = dict(value)
            del broken[required[0]]
            return broken
        props = schema.get("properties") or {}
        for key, sub in props.items():
            wrong = _wrong_type(resolve(sub, root))
            if key in value and wrong is not _NOTHING:
                return {**value, key: wrong}
    return [value]


_NOTHING = object()


def _wrong_type(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return _NOTHING
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "enum" in schema:
        return "__not_an_enum_value__"
    if kinds == [None]:
        return _NOTHING
    if any(k in ("integer", "number") for k in kinds):
        return "not a number"
    if "string" in kinds:
        return 12345
    if "boolean" in kinds:
        return "maybe"
    if "array" in kinds:
        return "not a list"
    if "object" in kinds:
        return "not an object"
    return _NOTHING

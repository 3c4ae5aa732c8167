"""Descriptions for what the schema compiler drops: a constraint the subset cannot say
(bounds, lengths, ``pattern``, ``format``, Decimal digits) leaves the schema, and its meaning
stays in the description as a hint, after the field's own text.

    >>> with_description({"description": "Star rating"}, {"type": "integer"}, ["1 <= value <= 5"])
    {'type': 'integer', 'description': 'Star rating (1 <= value <= 5)'}

Short defaults and examples are hinted the same way (``e.g. "EUR"``, ``default 1``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["array_hints", "scalar_hints", "with_description"]

_MAX_HINT_VALUE = 40  # longer defaults/examples cost more tokens than they help

_FORMAT_HINTS = {
    "date": "date, YYYY-MM-DD",
    "date-time": "date-time, ISO 8601 e.g. 2024-05-31T14:30:00Z",
    "time": "time, HH:MM:SS",
    "duration": "duration, ISO 8601 e.g. P3DT4H",
    "uuid": "UUID",
    "uri": "URL",
    "email": "email address",
    "ipv4": "IPv4 address",
    "ipv6": "IPv6 address",
    "hostname": "hostname",
}


def with_description(node: dict[str, Any], out: dict[str, Any], hints: list[str]) -> dict[str, Any]:
    """``out`` with the description: the node's own text, then hints for what was dropped."""
    hints = [*hints, *_value_hints(node)]
    text = str(node.get("description") or "").strip()
    if hints:
        joined = "; ".join(hints)
        text = f"{text} ({joined})" if text else joined
    result = dict(out)
    if text:
        result["description"] = text
    return result


def _value_hints(node: dict[str, Any]) -> list[str]:
    hints: list[str] = []
    examples = node.get("examples")
    if isinstance(examples, list) and examples:
        shown = json.dumps(examples[0], ensure_ascii=False)
        if len(shown) <= _MAX_HINT_VALUE:
            hints.append(f"e.g. {shown}")
    if node.get("default") is not None:
        shown = json.dumps(node["default"], ensure_ascii=False)
        if len(shown) <= _MAX_HINT_VALUE:
            hints.append(f"default {shown}")
    return hints


def scalar_hints(node: dict[str, Any], kind: str | None) -> list[str]:
    if kind in ("number", "integer"):
        return _number_hints(node)
    if kind == "string":
        return _string_hints(node)
    return []


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number_hints(node: dict[str, Any]) -> list[str]:
    low = _bound(node, "minimum", "exclusiveMinimum")
    high = _bound(node, "maximum", "exclusiveMaximum")
    hints = []
    if low and high:
        hints.append(f"{low[0]} {low[1]} value {high[1]} {high[0]}")
    elif low:
        hints.append(f"value {'>=' if low[1] == '<=' else '>'} {low[0]}")
    elif high:
        hints.append(f"value {high[1]} {high[0]}")
    if "multipleOf" in node:
        hints.append(f"multiple of {_num(node['multipleOf'])}")
    digits, places = node.get("x-max-digits"), node.get("x-decimal-places")
    if digits is not None or places is not None:
        parts = [f"at most {digits} digits"] if digits is not None else []
        parts += [f"at most {places} decimal places"] if places is not None else []
        hints.append(", ".join(parts))
    return hints


def _bound(node: dict[str, Any], inclusive: str, exclusive: str) -> tuple[str, str] | None:
    """The bound's value and its operator as written between bound and value."""
    if inclusive in node:
        return _num(node[inclusive]), "<="
    if exclusive in node:
        return _num(node[exclusive]), "<"
    return None


def _string_hints(node: dict[str, Any]) -> list[str]:
    hints = []
    fmt = node.get("format")
    if isinstance(fmt, str):
        hints.append(_FORMAT_HINTS.get(fmt, f"format {fmt}"))
    hints += _count_hints(node.get("minLength"), node.get("maxLength"), "character")
    if "pattern" in node:
        hints.append(f"pattern {node['pattern']}")
    return hints


def array_hints(node: dict[str, Any]) -> list[str]:
    hints = _count_hints(node.get("minItems"), node.get("maxItems"), "item")
    if node.get("uniqueItems"):
        hints.append("unique items")
    return hints


def _count_hints(low: Any, high: Any, unit: str) -> list[str]:
    if low is not None and low == high:
        return [f"exactly {low} {unit}{'s' if low != 1 else ''}"]
    if low and high is not None:
        return [f"{low} to {high} {unit}s"]
    if high is not None:
        return [f"at most {high} {unit}{'s' if high != 1 else ''}"]
    if low:
        return [f"at least {low} {unit}{'s' if low != 1 else ''}"]
    return []

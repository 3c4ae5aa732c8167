"""How long each value of a schema's typical answer is, in characters: the rules
:mod:`dbstruct.answer_size` documents, field by field.

    >>> Sizer(AnswerAssumptions(), upper=False).chars({"type": "boolean"}, "paid")
    4.5
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["WORD_CHARS", "AnswerAssumptions", "Sizer"]

# The words strings are written with in examples: plain English, 5.7 characters a word with
# its space. Its own content does not matter, only how it tokenises.
_FILLER = (
    "the customer says that the invoice for last month was charged twice and asks support "
    "to refund the second payment before the account renews on the first of the next month "
    "because the finance team cannot close the quarter while the duplicate charge is still "
    "open on their statement"
).split()
WORD_CHARS = sum(len(w) + 1 for w in _FILLER) / len(_FILLER)

_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "twenty": 20,
}  # fmt: skip
_N = r"(\d+|a|an|one|single|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty)"
_RANGE_WORDS = re.compile(rf"{_N}\s*(?:-|\u2013|to)\s*{_N}\s+(?:short\s+)?(words?|sentences?)")
_MAX_WORDS = re.compile(
    rf"(?:at most|up to|no more than|fewer than|less than|under|max(?:imum)?)\s+{_N}\s+"
    r"(?:short\s+)?(words?|sentences?)"
)
_WORDS = re.compile(rf"\b{_N}[\s-]+(short\s+)?(words?|sentences?)\b")
_PHRASE = re.compile(r"\b(?:short phrase|few words|a phrase|keyword)\b")
_PARAGRAPH = re.compile(r"\bparagraphs?\b")
_CHARS = re.compile(r"(exactly|at most|at least)\s+(\d+)\s+characters?|(\d+) to (\d+) characters")
_ITEMS = re.compile(r"(exactly|at most|at least)\s+(\d+)\s+items?|(\d+) to (\d+) items")
_EXAMPLE = re.compile(r"\be\.g\.\s*(\"[^\"]*\"|[^\s;,)]+)")
_BOUNDS = re.compile(r"(-?\d+(?:\.\d+)?)\s*<=?\s*value\s*<=?\s*(-?\d+(?:\.\d+)?)")
#: the format hints dbstruct.json_schema writes into descriptions (lowercased), or the
#: ``format`` keyword, and an example value of each
_FORMATS = {
    "date-time, iso 8601": "2024-05-31T14:30:00Z",
    "date, yyyy-mm-dd": "2024-05-31",
    "time, hh:mm:ss": "14:30:00",
    "duration, iso 8601": "P3DT4H",
    "uuid": "3f2b8c1e-9a4d-4e7b-8c2a-1d5e6f7a8b9c",
    "email address": "jane.doe@example.com",
    "url": "https://www.example.com/docs/page",
    "ipv4 address": "192.168.10.25",
    "ipv6 address": "2001:db8::8a2e:370:7334",
}
_FORMAT_KEYWORDS = {
    "date-time": "date-time, iso 8601",
    "date": "date, yyyy-mm-dd",
    "time": "time, hh:mm:ss",
    "duration": "duration, iso 8601",
    "uuid": "uuid",
    "email": "email address",
    "uri": "url",
    "ipv4": "ipv4 address",
    "ipv6": "ipv6 address",
}
#: a field named ``..._<one of these>`` (or just that) holds a name, or an id
_NAME_KEYS = frozenset({"name", "city", "country", "company", "author", "vendor", "brand"})
_ID_KEYS = frozenset({"id", "reference", "ref", "code", "sku", "number"})
_ID_SAMPLE = "ID-4821937"


@dataclass(frozen=True)
class AnswerAssumptions:
    """The numbers the estimate rests on (see :mod:`dbstruct.answer_size`)."""

    #: share of nullable values that are null
    null_share: float = 0.0
    #: share of optional (not required) properties that are present
    optional_share: float = 1.0
    #: words of a string with no hint
    string_words: float = 8.0
    #: words of a sentence
    sentence_words: float = 20.0
    #: items of an array with no stated count
    array_items: float = 3.0
    #: how much longer than typical an unbounded string or array is in the upper bound
    upper_factor: float = 3.0


class Sizer:
    """Expected lengths (``chars``) and an example value (``example``) of a schema."""

    def __init__(self, assumptions: AnswerAssumptions, *, upper: bool) -> None:
        self.a = assumptions
        self.upper = upper

    # ------------------------------------------------------------ expected characters

    def chars(self, schema: Any, name: str) -> float:
        if not isinstance(schema, Mapping):
            return self._string({}, name)
        kinds = schema.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        nullable = "null" in kinds or None in (schema.get("enum") or ())
        value = self._value_chars(schema, [k for k in kinds if k != "null"], name)
        if not nullable or self.upper:
            return value
        share = self.a.null_share
        return (1 - share) * value + share * 4

    def _value_chars(self, schema: Mapping[str, Any], kinds: list[Any], name: str) -> float:
        enum = [v for v in schema.get("enum") or () if v is not None]
        if enum:
            lengths = [len(json.dumps(v, ensure_ascii=False)) for v in enum]
            return max(lengths) if self.upper else sum(lengths) / len(lengths)
        kind = kinds[0] if kinds else _implied(schema)
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            count = self._items(schema)
            return 2 + count * self.chars(schema.get("items", {}), name) + max(0, count - 1) * 2
        if kind == "boolean":
            return 5 if self.upper else 4.5
        if kind in ("integer", "number"):
            return self._number(schema, integer=kind == "integer")
        return self._string(schema, name)

    def _object(self, schema: Mapping[str, Any]) -> float:
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        extra = schema.get("additionalProperties")
        if not props and isinstance(extra, Mapping):  # a map: typical-array many entries
            props = {f"key_{i}": extra for i in range(max(1, round(self._items({}))))}
            required = set(props)
        total, present = 2.0, 0.0
        for key, sub in props.items():
            share = 1.0 if key in required or self.upper else self.a.optional_share
            total += share * (len(json.dumps(key, ensure_ascii=False)) + 2 + self.chars(sub, key))
            present += share
        return total + max(0.0, present - 1) * 2

    def _items(self, schema: Mapping[str, Any]) -> float:
        low, high = _stated(_ITEMS, schema, schema.get("minItems"), schema.get("maxItems"))
        typical = self.a.array_items
        if self.upper:
            typical = float(high) if high is not None else typical * self.a.upper_factor
        elif low is not None and high is not None:
            typical = (low + high) / 2
        elif high is not None:
            typical = min(typical, high)
        if low is not None:
            typical = max(typical, low)
        return typical

    def _number(self, schema: Mapping[str, Any], *, integer: bool) -> float:
        text = str(schema.get("description") or "")
        match = _BOUNDS.search(text)
        if match:
            return float(max(len(match.group(1)), len(match.group(2))))
        if integer:
            return 6 if self.upper else 3
        return 10 if self.upper else 6

    def _string(self, schema: Mapping[str, Any], name: str) -> float:
        typical, bound = self._text_length(schema, name)
        return 2 + (bound if self.upper else typical)

    def _text_length(self, schema: Mapping[str, Any], name: str) -> tuple[float, float]:
        """Characters inside the quotes: (typical, upper)."""
        formatted = _formatted(schema)
        if formatted is not None:
            return len(formatted), len(formatted)
        typical = self._described(_description(schema), name)[0]
        bound = typical * self.a.upper_factor
        low, high = _stated(_CHARS, schema, schema.get("minLength"), schema.get("maxLength"))
        if high is not None:
            typical, bound = min(typical, high), float(high)
        if low is not None:
            typical, bound = max(typical, low), max(bound, low)
        return typical, bound

    def _described(self, text: str, name: str) -> tuple[float, str | None]:
        """The typical characters of a string from its description, example or name, and
        a sample text when it is not words."""
        words = _count_words(text, self.a.sentence_words)
        if words is not None:
            return _words_chars(words), None
        example = _EXAMPLE.search(text)
        if example:
            sample = example.group(1).strip('"')
            return float(len(sample)), sample
        last = name.lower().rsplit("_", 1)[-1]
        if last in _NAME_KEYS:
            return _words_chars(2), None
        if last in _ID_KEYS:
            return float(len(_ID_SAMPLE)), _ID_SAMPLE
        return _words_chars(self.a.string_words), None

    # ------------------------------------------------------------ an example value

    def example(self, schema: Any, name: str) -> Any:
        """A value of ``schema`` with every field present and typical in length."""
        if not isinstance(schema, Mapping):
            return _words_text(self._text_length({}, name)[0])
        kinds = schema.get("type")
        kinds = [k for k in (kinds if isinstance(kinds, list) else [kinds]) if k != "null"]
        enum = [v for v in schema.get("enum") or () if v is not None]
        if enum:
            mean = sum(len(json.dumps(v)) for v in enum) / len(enum)
            return min(enum, key=lambda v: abs(len(json.dumps(v)) - mean))
        kind = kinds[0] if kinds else _implied(schema)
        if kind == "object":
            props: Mapping[str, Any] = schema.get("properties") or {}
            return {key: self.example(sub, key) for key, sub in props.items()}
        if kind == "array":
            count = max(1, round(self._items(schema)))
            return [self.example(schema.get("items", {}), name) for _ in range(count)]
        if kind == "boolean":
            return True
        if kind == "integer":
            return int("4" * max(1, round(self._number(schema, integer=True))))
        if kind == "number":
            return 129.95
        length = self._text_length(schema, name)[0]
        sample = _formatted(schema) or self._described(_description(schema), name)[1]
        return sample[: max(1, round(length))] if sample else _words_text(length)


def _implied(schema: Mapping[str, Any]) -> str:
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _description(schema: Mapping[str, Any]) -> str:
    return str(schema.get("description") or "").lower()


def _formatted(schema: Mapping[str, Any]) -> str | None:
    """An example of the format the schema's ``format`` or its description's hint names."""
    hint = _FORMAT_KEYWORDS.get(str(schema.get("format") or ""))
    if hint is not None:
        return _FORMATS[hint]
    text = _description(schema)
    for hint, example in _FORMATS.items():
        if re.search(rf"(?<![\w-]){re.escape(hint)}(?![\w-])", text):
            return example
    return None


def _stated(
    pattern: re.Pattern[str], schema: Mapping[str, Any], low: Any, high: Any
) -> tuple[int | None, int | None]:
    """The bounds a description states ("exactly 3 items", "at most 80 characters", "2 to
    5 items"), over ``low`` and ``high``."""
    for match in pattern.finditer(_description(schema)):
        how, count = match.group(1), match.group(2)
        if how == "exactly":
            low = high = int(count)
        elif how == "at most":
            high = int(count)
        elif how == "at least":
            low = int(count)
        else:
            low, high = int(match.group(3)), int(match.group(4))
    return low, high


def _number_of(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS[word]


def _count_words(text: str, sentence: float) -> float | None:
    """Words a description asks for, or None when it says nothing of length."""

    def words(n: float, unit: str, short: bool = False) -> float:
        if unit.startswith("sentence"):
            return n * sentence / (2 if short else 1)
        return n

    match = _RANGE_WORDS.search(text)
    if match:
        low, high = _number_of(match.group(1)), _number_of(match.group(2))
        return words((low + high) / 2, match.group(3))
    match = _MAX_WORDS.search(text)
    if match:
        return words(_number_of(match.group(1)) * 0.75, match.group(2))
    match = _WORDS.search(text)
    if match:
        return words(_number_of(match.group(1)), match.group(3), bool(match.group(2)))
    if _PHRASE.search(text):
        return 4.0
    if _PARAGRAPH.search(text):
        return 3 * sentence
    return None


def _words_chars(words: float) -> float:
    return max(1.0, words * WORD_CHARS - 1)


def _words_text(chars: float) -> str:
    """Filler words, as many as fit in ``chars`` characters (at least one)."""
    out: list[str] = []
    for word in itertools.cycle(_FILLER):
        if out and len(" ".join([*out, word])) > chars:
            return " ".join(out)
        out.append(word)
    raise AssertionError("unreachable")  # pragma: no cover - cycle() never ends

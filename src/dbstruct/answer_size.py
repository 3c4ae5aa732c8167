"""How many completion tokens an answer takes, estimated from the response model's schema
before anything is sent, and the ``max_tokens`` to ask for.

    >>> counter = token_counter("databricks-meta-llama-3-3-70b-instruct")  # llama3
    >>> estimate_answer(TicketTriage, Mode.TOOLS, counter).tokens
    103.9
    >>> suggested_max_tokens(TicketTriage, Mode.TOOLS, counter)
    256
    >>> max_tokens_from_answers([70, 91, 88])      # a pilot's measured completion tokens
    192

The rule. A typical answer is the JSON of the compiled schema
(:func:`dbstruct.json_schema.compile_schema`) written with ``json.dumps``' spacing, its
expected length in characters taken field by field (:class:`AnswerAssumptions` holds the
numbers):

- an enum: the mean length of its options; a boolean: 4.5 characters (``true``/``false``);
  an integer: the digits of its bound when the description states one (``1 <= value <= 5``),
  else 3; a number: 6 (``129.95``); null: 4.
- a string: a format its ``format`` keyword or description names, as
  :mod:`dbstruct.json_schema` writes it (``date, YYYY-MM-DD``: 10 characters, ``UUID``: 36,
  ...); else the words or sentences it asks for ("one sentence": ``sentence_words``, "at most
  15 words", "2-3 sentences", "a short phrase": 4 words); else the length of its example
  (``e.g. INV-20431``); else, by the last ``_``-separated part of the field's name, 2 words
  for ``name``, ``city``, ... and 10 characters for ``id``, ``reference``, ``code``, ...; else
  ``string_words`` words. A word is 5.7 characters with its space (the mean of a plain English
  sample text). A stated length (``at most 80 characters``) caps all of these.
- an array: ``array_items`` items, or the count its description states (``exactly 3
  items``); an object: each property with its key, present ``optional_share`` of the time
  when not required; a nullable value: null ``null_share`` of the time.

The expected length becomes tokens at the rate the counter finds in an example of that answer
(one value of each field, written out), and the mode's shape is added: Llama 3 endpoints
answer a tool call as ``{"name": ..., "parameters": ...}`` (Meta's Llama 3.1 chat template)
and end with one special token; MD_JSON answers are a ``json`` code block indented by 2. Other
counters count the answer's text as the API returns it (arguments, or content), the way the
serving emulator counts ``usage.completion_tokens``.

The upper bound fills every optional and nullable field, takes the longest enum option, 5
characters for a boolean, 6 digits for an integer and 10 characters for a number (unless a
bound is stated), strings at their stated maximum (else ``upper_factor`` times their typical
length) and arrays at their stated maximum (else ``upper_factor`` times their typical count).
:func:`suggested_max_tokens` is that bound times 1.25, rounded up to a multiple of 64; a
pilot's answers refine it with :func:`max_tokens_from_answers` (their largest count times
1.5, rounded up to a multiple of 64). Databricks reserves ``max_tokens`` against an
endpoint's output-tokens-per-minute limit before a request runs and credits back what is not
used (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/limits), so a
bound close to the real answers lets more requests run at once.

Packed requests (:mod:`dbstruct._packing`): ``{"items": [...]}`` with one entry per row,
each the row's answer plus its id and ``first_words`` (``echo_words`` words of its text).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from dbstruct._answer_length import AnswerAssumptions, Sizer
from dbstruct._packing import pack_schema
from dbstruct.json_schema import compile_schema
from dbstruct.modes import Mode
from dbstruct.token_count import TokenCounter

__all__ = [
    "DEFAULT_ASSUMPTIONS",
    "AnswerAssumptions",
    "AnswerEstimate",
    "estimate_answer",
    "estimate_packed_answer",
    "max_tokens_from_answers",
    "suggested_max_tokens",
]

_TOKEN_STEP = 64
_SCHEMA_MARGIN = 1.25
_PILOT_MARGIN = 1.5
_CALL_MODES = (Mode.TOOLS, Mode.TOOLS_STRICT, Mode.PARALLEL_TOOLS, Mode.FUNCTIONS)
DEFAULT_ASSUMPTIONS = AnswerAssumptions()


@dataclass(frozen=True)
class AnswerEstimate:
    """Completion tokens of one answer (of one row, or of one packed request)."""

    #: the expected completion tokens of a typical answer
    tokens: float
    #: an upper bound of the completion tokens (before any margin)
    upper: int
    #: the example answer the token rate was measured on, as the model writes it
    example: str
    #: rows the answer is for (a packed request's count)
    rows: int = 1

    @property
    def per_row(self) -> float:
        return self.tokens / self.rows


def estimate_answer(
    model: type[BaseModel],
    mode: Mode,
    counter: TokenCounter,
    assumptions: AnswerAssumptions = DEFAULT_ASSUMPTIONS,
) -> AnswerEstimate:
    """The completion tokens of one answer of ``model`` in ``mode``."""
    compiled = compile_schema(model, strict=mode is Mode.TOOLS_STRICT)
    return _estimate(compiled.parameters, compiled.name, mode, counter, assumptions, rows=1)


def estimate_packed_answer(
    model: type[BaseModel],
    mode: Mode,
    rows: int,
    counter: TokenCounter,
    *,
    echo_words: int = 4,
    assumptions: AnswerAssumptions = DEFAULT_ASSUMPTIONS,
) -> AnswerEstimate:
    """The completion tokens of a packed answer for ``rows`` rows (``per_row`` for one);
    ``echo_words``: the words each entry quotes (:func:`dbstruct._packing.echo_words`)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    packed = pack_schema(model, mode)
    schema = packed.for_count(rows)
    item = schema.parameters["properties"]["items"]["items"]
    # the id and quote as the model writes them: ids 1..rows, echo_words words
    fixed = {
        packed.id_key: {"type": "integer", "description": f"1 <= value <= {rows}"},
        packed.echo_key: {"type": "string", "description": f"{echo_words} words"},
    }
    item = {**item, "properties": {**item["properties"], **fixed}}
    listed = {"type": "array", "minItems": rows, "maxItems": rows, "items": item}
    parameters = {**schema.parameters, "properties": {"items": listed}}
    return _estimate(parameters, schema.name, mode, counter, assumptions, rows=rows)


def suggested_max_tokens(
    model: type[BaseModel],
    mode: Mode,
    counter: TokenCounter,
    *,
    rows_per_request: int = 1,
    assumptions: AnswerAssumptions = DEFAULT_ASSUMPTIONS,
) -> int:
    """``max_tokens`` for one row: the schema's upper bound times 1.25, rounded up to a
    multiple of 64. With ``rows_per_request > 1`` it is per row of a pack, as the client
    multiplies ``max_tokens`` by a pack's rows; the list's own tokens are counted once per
    row, so a pack with fewer rows still fits."""
    upper = estimate_answer(model, mode, counter, assumptions).upper
    if rows_per_request > 1:  # a pack of one row carries the whole list's own tokens
        one = estimate_packed_answer(model, mode, 1, counter, assumptions=assumptions)
        full = estimate_packed_answer(
            model, mode, rows_per_request, counter, assumptions=assumptions
        )
        upper = max(one.upper, math.ceil(full.upper / rows_per_request))
    return _round_up(upper * _SCHEMA_MARGIN)


def max_tokens_from_answers(observed: Iterable[int]) -> int:
    """``max_tokens`` from measured completion tokens (a pilot's answers, of one row each):
    the largest times 1.5, rounded up to a multiple of 64.

    >>> max_tokens_from_answers([70, 91, 88])
    192
    """
    counts = list(observed)
    if not counts:
        raise ValueError("no completion token counts to size max_tokens from")
    return _round_up(max(counts) * _PILOT_MARGIN)


def _round_up(tokens: float) -> int:
    return max(_TOKEN_STEP, math.ceil(tokens / _TOKEN_STEP) * _TOKEN_STEP)


# ---------------------------------------------------------------- the estimate


def _estimate(
    parameters: Mapping[str, Any],
    name: str,
    mode: Mode,
    counter: TokenCounter,
    assumptions: AnswerAssumptions,
    *,
    rows: int,
) -> AnswerEstimate:
    typical = Sizer(assumptions, upper=False)
    bound = Sizer(assumptions, upper=True)
    example = typical.example(parameters, "")
    spaced = json.dumps(example, ensure_ascii=False)
    written = _written(example, mode)
    prefix, suffix, ends = _shape(mode, name, counter)
    rate = counter.text(written) / max(1, len(spaced))  # tokens per character of spaced JSON
    overhead = counter.text(prefix) + counter.text(suffix) + ends
    tokens = typical.chars(parameters, "") * rate + overhead
    upper = math.ceil(bound.chars(parameters, "") * rate + overhead)
    return AnswerEstimate(round(tokens, 1), upper, prefix + written + suffix, rows)


def _written(value: Any, mode: Mode) -> str:
    if mode is Mode.MD_JSON:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def _shape(mode: Mode, name: str, counter: TokenCounter) -> tuple[str, str, int]:
    """Text before and after the answer's JSON, and the special tokens that end it."""
    fence = mode is Mode.MD_JSON
    if counter.llama_template:
        if mode in _CALL_MODES:
            return f'{{"name": "{name}", "parameters": ', "}", 1
        return ("```json\n", "\n```", 1) if fence else ("", "", 1)
    return ("```json\n", "\n```", 0) if fence else ("", "", 0)

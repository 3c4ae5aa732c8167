"""Several rows in one request ("packing"): the request, the answer, and how rows are cut
into packs. No I/O; :mod:`dbstruct._many` sends packs and resends what fails.

Every request of a row repeats the instructions and the whole schema; packing sends them once
for up to ``k`` rows. The request (Databricks documents no batch format for chat: this one is
dbstruct's own, chosen) is the rows' shared messages, then one user message::

    <shared lead>There are 3 items below, each in <item id="N">...</item>. Treat each on
    its own. Answer with exactly 3 entries in "items", one per item: the item's id in "id",
    the first 2 words of its text, copied exactly, in "first_words".

    <item id="1">
    ...
    </item>

and the answer is ``{"items": [{"id": 2, "first_words": "...", <the model's fields>}, ...]}``,
in the mode's place (tool call, response format, json block), under a schema that wraps the
model's compiled one (``minItems``/``maxItems`` state the count; Databricks accepts size
keywords without enforcing them, so the count is checked here).

An answer is matched to its rows **by id, never by position**, and each entry must quote the
start of its row's text (``first_words``): an entry filed under another row's id (ids
swapped) quotes the wrong text and fails. ``first_words`` asks for as many words as it takes
to tell the pack's rows apart (2 to :data:`MAX_ECHO_WORDS`); rows that the first
:data:`MAX_ECHO_WORDS` words cannot tell apart never share a pack. A missing, duplicated,
unknown-id, misquoted or invalid entry fails only its own row(s).

Why verify at all: models given several items return fewer items than they were given, and
accuracy falls as rows per prompt grow (Cheng et al. 2023, arXiv 2301.08721; Lin et al., ICLR
2024, arXiv 2309.00384; Chen et al., ACL 2026, arXiv 2603.22608).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from pydantic import BaseModel

from dbstruct._json_schema_rules import MAX_SCHEMA_KEYS, MAX_TOOL_SCHEMA_KEYS
from dbstruct.answers import answer_text, validate_answer
from dbstruct.errors import ConfigurationError, InvalidOutputError, OutputError, SchemaError
from dbstruct.json_schema import CompiledSchema, compile_schema
from dbstruct.modes import Message, Mode

__all__ = [
    "MAX_ECHO_WORDS",
    "PackAnswer",
    "PackHealth",
    "PackRow",
    "PackSchema",
    "echo_words",
    "pack_messages",
    "pack_schema",
    "plan_packs",
    "read_pack",
    "share",
]

#: the most words ``first_words`` asks for; rows alike for longer never share a pack
MAX_ECHO_WORDS = 12
_MIN_ECHO_WORDS = 2
#: what a packed answer's list adds to the model's keys: "items", the id and first_words
_ADDED_KEYS = 3
_ID_KEYS = ("id", "item_id", "pack_item_id")
_ECHO_KEYS = ("first_words", "item_first_words", "pack_first_words")
logger = logging.getLogger("dbstruct.packing")

_WORD = re.compile(r"\w+")
_ITEM_TAG = re.compile(r"</?item\b", re.IGNORECASE)


def words(text: str) -> tuple[str, ...]:
    """The words a quote is compared by: casefolded, punctuation and spacing ignored."""
    return tuple(_WORD.findall(text.casefold()))


@dataclass(frozen=True)
class PackRow:
    """One row as packing sees it: the messages it shares with other rows, then its own text.

    Alone, the row is ``prefix`` then a user message ``lead + text``; the cache keys a row by
    that request whether it was sent alone or in a pack. Rows share a pack only when their
    ``prefix`` and ``lead`` are equal.
    """

    prefix: tuple[tuple[str, str], ...]
    lead: str
    text: str

    def messages(self) -> list[Message]:
        """The row's messages when sent alone."""
        alone = [{"role": role, "content": content} for role, content in self.prefix]
        return [*alone, {"role": "user", "content": self.lead + self.text}]

    @cached_property
    def words(self) -> tuple[str, ...]:
        return words(self.text)

    @property
    def packable(self) -> bool:
        """Whether the row can share a request: it has words to quote and no item tags."""
        return bool(self.words) and _ITEM_TAG.search(self.text) is None


# ---------------------------------------------------------------- the schema


@dataclass(frozen=True)
class _ListSchema:
    """The schema of one packed request's answer (:class:`dbstruct.modes.SchemaLike`)."""

    name: str
    description: str
    parameters: dict[str, Any]
    json: str


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per (model, mode)
class PackSchema:
    """How packed answers for one response model and mode look."""

    model: type[BaseModel]
    compiled: CompiledSchema
    id_key: str
    echo_key: str
    key_count: int

    @property
    def strict(self) -> bool:
        return self.compiled.strict

    def for_count(self, n: int) -> _ListSchema:
        """The schema of an answer to ``n`` rows."""
        return _list_schema(self, n)


@lru_cache(maxsize=256)
def pack_schema(model: type[BaseModel], mode: Mode) -> PackSchema:
    """The packed-answer schema of ``model`` in ``mode``; raises when ``mode`` cannot pack
    (PARALLEL_TOOLS) or the list would take more keys than Databricks accepts."""
    if mode is Mode.PARALLEL_TOOLS:
        raise ConfigurationError(
            f"rows_per_request > 1 needs one response model per row; {mode} answers with "
            "several tool calls: use rows_per_request=1, or Mode.TOOLS"
        )
    compiled = compile_schema(model, strict=mode is Mode.TOOLS_STRICT)
    names = set(compiled.parameters.get("properties", {}))
    id_key = next(k for k in _ID_KEYS if k not in names)
    echo_key = next(k for k in _ECHO_KEYS if k not in names)
    count = compiled.key_count + _ADDED_KEYS
    # https://docs.databricks.com/aws/en/machine-learning/model-serving/function-calling#json-schema
    # (16 keys in a tool schema) and .../structured-outputs (64 in a response format);
    # MD_JSON's schema is in the prompt, where no key limit applies
    limits = {Mode.JSON: MAX_SCHEMA_KEYS, Mode.JSON_O1: MAX_SCHEMA_KEYS, Mode.MD_JSON: None}
    limit = limits.get(mode, MAX_TOOL_SCHEMA_KEYS)
    if limit is not None and count > limit:
        where = "a tool schema" if limit == MAX_TOOL_SCHEMA_KEYS else "a response format"
        hint = (
            "use Mode.JSON (a response format takes up to 64 keys) or rows_per_request=1"
            if limit == MAX_TOOL_SCHEMA_KEYS
            else "use rows_per_request=1, or split the model"
        )
        raise SchemaError(
            f"{model.__name__} has {compiled.key_count} keys, and a packed answer's list adds "
            f"{_ADDED_KEYS} (items, {id_key}, {echo_key}): {count}, over the {limit} Databricks "
            f"accepts in {where}; {hint}",
            model=model.__name__,
        )
    return PackSchema(model, compiled, id_key, echo_key, count)


@lru_cache(maxsize=1024)
def _list_schema(schema: PackSchema, n: int) -> _ListSchema:
    compiled = schema.compiled
    own = compiled.parameters
    item: dict[str, Any] = {
        "type": "object",
        "properties": {
            # what they mean is in the request's instruction, said once
            schema.id_key: {"type": "integer"},
            schema.echo_key: {"type": "string"},
            **own.get("properties", {}),
        },
        "required": [schema.id_key, schema.echo_key, *own.get("required", [])],
    }
    item.update({k: v for k, v in own.items() if k not in ("type", "properties", "required")})
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": n,
                "maxItems": n,
                "items": item,
            }
        },
        "required": ["items"],
    }
    if schema.strict:
        parameters["additionalProperties"] = False
    return _ListSchema(
        name=f"{compiled.name}Items"[:64],
        description=compiled.description,  # the model's, as a request for one row has it
        parameters=parameters,
        json=json.dumps(parameters, separators=(",", ":"), ensure_ascii=False),
    )


# ---------------------------------------------------------------- the request


def echo_words(rows: Sequence[PackRow]) -> int | None:
    """How many words tell ``rows`` apart (at least 2), or None when the first
    :data:`MAX_ECHO_WORDS` cannot."""
    for n in range(1, MAX_ECHO_WORDS + 1):
        if len({row.words[:n] for row in rows}) == len(rows):
            return max(n, _MIN_ECHO_WORDS)
    return None


def pack_messages(schema: PackSchema, rows: Sequence[PackRow], echo: int) -> list[Message]:
    """The messages of a packed request: the rows' shared prefix, then one user message with
    the lead, the instruction and every row's text as an item (ids 1..n)."""
    first = rows[0]
    n = len(rows)
    instruction = (
        f'There are {n} items below, each in <item id="N">...</item>. Treat each on its own. '
        f'Answer with exactly {n} entries in "items", one per item: the item\'s id in '
        f'"{schema.id_key}", the first {echo} words of its text, copied exactly, in '
        f'"{schema.echo_key}".'
    )
    items = "\n\n".join(f'<item id="{i}">\n{row.text}\n</item>' for i, row in enumerate(rows, 1))
    prefix = [{"role": role, "content": content} for role, content in first.prefix]
    return [*prefix, {"role": "user", "content": f"{first.lead}{instruction}\n\n{items}"}]


def plan_packs(rows: Sequence[PackRow], k: int) -> list[list[int]]:
    """Cut ``rows`` into packs of at most ``k`` (indexes, in order): rows share a pack when
    their shared parts are equal and their first words tell them apart; a row that cannot
    be quoted (no words, or an ``<item>`` tag in its text) goes alone."""
    packs: list[list[int]] = []
    open_packs: dict[tuple[Any, ...], list[tuple[list[int], set[tuple[str, ...]]]]] = {}
    for index, row in enumerate(rows):
        if k <= 1 or not row.packable:
            packs.append([index])
            continue
        key = row.words[:MAX_ECHO_WORDS]
        candidates = open_packs.setdefault((row.prefix, row.lead), [])
        for members, seen in candidates:
            if key not in seen:
                members.append(index)
                seen.add(key)
                if len(members) >= k:
                    candidates.remove((members, seen))
                break
        else:
            members = [index]
            packs.append(members)
            if k > 1:
                candidates.append((members, {key}))
    return packs


# ---------------------------------------------------------------- the answer


@dataclass
class PackAnswer:
    """What a packed answer says about each of its rows, in the rows' order."""

    #: a validated model instance, or the OutputError of that row alone
    results: list[BaseModel | OutputError]
    #: characters of each row's entry in the answer (0 if none), to share completion tokens
    sizes: list[int] = field(default_factory=list)


def read_pack(
    mode: Mode,
    schema: PackSchema,
    rows: Sequence[PackRow],
    echo: int,
    completion: Any,
    *,
    context: Any = None,
    max_answer_bytes: int | None = None,
) -> PackAnswer:
    """Each row's answer in a packed completion, matched by id and checked by quote.

    Raises an :class:`OutputError` when the answer as a whole is unusable (no list, not
    JSON, cut off, refused); a problem with one entry fails only its row.
    """
    name = schema.for_count(len(rows)).name
    text = answer_text(mode, name, completion, max_answer_bytes=max_answer_bytes)
    entries = _entries(text)
    n = len(rows)
    found: dict[int, list[dict[str, Any]]] = {}
    for entry in entries:
        ident = entry.get(schema.id_key) if isinstance(entry, dict) else None
        if isinstance(ident, str) and ident.strip().isdigit():
            ident = int(ident)
        if isinstance(ident, int) and not isinstance(ident, bool) and 1 <= ident <= n:
            found.setdefault(ident, []).append(entry)
    results: list[BaseModel | OutputError] = []
    sizes: list[int] = []
    for ident, row in enumerate(rows, 1):
        mine = found.get(ident, [])
        sizes.append(sum(len(json.dumps(e, default=str)) for e in mine))
        results.append(_row_result(schema, row, ident, n, mine, echo, context))
    return PackAnswer(results, sizes)


def _entries(text: str) -> list[Any]:
    if not text or not text.strip():
        raise InvalidOutputError("the packed answer was empty", raw=text)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InvalidOutputError(f"the packed answer is not JSON: {e}", raw=text[:1024]) from e
    entries = data.get("items") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InvalidOutputError('the packed answer has no "items" list', raw=text[:1024])
    return entries


def _row_result(
    schema: PackSchema,
    row: PackRow,
    ident: int,
    n: int,
    mine: list[dict[str, Any]],
    echo: int,
    context: Any,
) -> BaseModel | OutputError:
    where = f"packed answer, item {ident} of {n}"
    if not mine:
        return InvalidOutputError(f"{where}: no entry for this item")
    if len(mine) > 1:
        return InvalidOutputError(
            f"{where}: {len(mine)} entries for this item", raw=str(mine)[:1024]
        )
    entry = mine[0]
    quote = entry.get(schema.echo_key)
    said = words(quote) if isinstance(quote, str) else ()
    needed = min(echo, len(row.words))
    if len(said) < needed or row.words[: len(said)] != said:
        return InvalidOutputError(
            f"{where}: its {schema.echo_key} {str(quote)[:80]!r} is not how this item starts "
            f"(an entry filed under another item's id?)",
            raw=json.dumps(entry, default=str)[:1024],
        )
    data = {k: v for k, v in entry.items() if k not in (schema.id_key, schema.echo_key)}
    try:
        return validate_answer(schema.model, data, context, strict=schema.strict)
    except OutputError as e:
        return InvalidOutputError(f"{where}:\n{e}", raw=e.raw)


class PackHealth:
    """Rows per request for each endpoint, halved when most rows of recent packs fail."""

    WINDOW = 8  # packs looked at
    MIN_PACKS = 4  # before any judgement
    FAILING = 0.5  # share of rows sent again above which k is halved

    def __init__(self) -> None:
        self._limits: dict[str, int] = {}
        self._recent: dict[str, deque[tuple[int, int]]] = {}

    def limit(self, endpoint: str, k: int) -> int:
        return min(k, self._limits.get(endpoint, k))

    def record(self, endpoint: str, k: int, rows: int, failed: int) -> None:
        recent = self._recent.setdefault(endpoint, deque(maxlen=self.WINDOW))
        recent.append((rows, failed))
        total = sum(r for r, _ in recent)
        if len(recent) < self.MIN_PACKS or sum(f for _, f in recent) <= self.FAILING * total:
            return
        current = self.limit(endpoint, k)
        smaller = max(1, current // 2)
        failing = sum(f for _, f in recent)
        recent.clear()
        if smaller < current:
            self._limits[endpoint] = smaller
            logger.warning(
                "%s: packed requests keep failing (%d of the last %d rows had to be sent "
                "again); sending at most %d row(s) per request from now on",
                endpoint,
                failing,
                total,
                smaller,
            )


# ---------------------------------------------------------------- accounting


def share(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole units that sum to ``total``
    (largest remainders); equal parts when every weight is 0."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1.0] * len(weights)
    scale = total / sum(weights)
    exact = [w * scale for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: parts[i] - exact[i])
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts

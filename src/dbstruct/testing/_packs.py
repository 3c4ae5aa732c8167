"""Packed requests: several rows in one chat request, answered as a list of entries by id.

This is dbstruct's own protocol (step 8), not Databricks': no Databricks page describes it, so
everything here is chosen. The emulator reads what a model reads, never dbstruct's client code:

- the schema (wherever the mode puts it) has a root property holding an array of objects;
- a user message holds ``<item id="N">`` ... ``</item>`` blocks (the last such message, so a
  re-ask after it still answers the same items);
- the instruction sentence names the keys: ``the item's id in "id"``, ``the first 4 words of
  the item's text, copied exactly, in "first_words"``; without it, the item schema's property
  descriptions do ("The item's id", "The first words of ...").

The answer has one entry per item, in a shuffled order (seeded from the request; never the
order sent when there are two items or more, so position-matching always fails), each with the
id, the first N whitespace-separated words of the item's text as sent (markers included), and
the model's fields synthesised with an RNG seeded from that item's text alone: an item gets
the same values whatever pack it rides in and wherever it sits.

Packing faults (:data:`PACK_FAULT_KINDS`), by ``[[pack:KIND]]`` in an item's text (that item
is the one affected; for "swap", it and its neighbour) or by rate (``pack_faults``):

| kind           | the answer                                                                |
|----------------|---------------------------------------------------------------------------|
| "drop"         | the item's entry missing                                                  |
| "duplicate"    | the item's entry twice, the copy (last) with other values                 |
| "unknown_id"   | the item's entry carries an id the request does not hold                  |
| "swap"         | the item and its neighbour exchange ids (each echo stays with its values) |
| "truncate"     | the list ends after half its entries (the item's among those cut)         |
| "single"       | only one entry, the first id's                                            |
| "invalid_item" | the item's entry has a field of the wrong type or outside its enum        |
| "misquote"     | the item's quotes (see ``_synth``) are words its text does not hold        |

An item's quotes copy its own text (markers cut out), never another item's or the lead's; the
ordinary fault "misquote" (``[[fault:misquote]]``, ``faults``) misquotes every item's.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dbstruct.testing._config import PACK_FAULT_KINDS
from dbstruct.testing._request_text import PACK_MARKER, Hints, content_text, hints_from
from dbstruct.testing._synth import Synth, break_value, resolve

__all__ = ["Pack", "PackAnswer", "PackItem", "PackPlan", "plan_pack", "read_pack"]

_ITEM = re.compile(r'<item id="(\d+)">\n?(.*?)\n?</item>', re.DOTALL)
_ID_KEY = re.compile(r"""the item's id in "([^"]+)\"""")
_ECHO = re.compile(r"""the first (\d+) words?\b[^"]*?\bin "([^"]+)\"""")
_LIST_KEY = re.compile(r"""entries in "([^"]+)\"""")
_ID_DESCRIPTION = re.compile(r"\bid\b", re.IGNORECASE)
_ECHO_DESCRIPTION = re.compile(r"\bfirst words\b", re.IGNORECASE)
#: the echo's length when no sentence gives it (chosen: the format's example)
DEFAULT_WORDS = 4
#: per-item kinds are applied first, then the ones that cut the whole list
_ORDER = (
    "swap", "unknown_id", "misquote", "invalid_item", "duplicate", "drop", "truncate", "single",
)  # fmt: skip


@dataclass(frozen=True)
class PackItem:
    id: int
    text: str


@dataclass(frozen=True)
class Pack:
    """What a packed request asks for."""

    items: tuple[PackItem, ...]
    list_key: str
    id_key: str
    echo_key: str | None
    words: int
    #: the entry's schema without the id and echo properties: the model's own fields
    fields: dict[str, Any]
    #: the schema ``$ref``s resolve against (the request's root schema)
    root: dict[str, Any]
    #: emit ids as strings (an id property of type "string")
    string_ids: bool = False


def read_pack(messages: list[Any], schema: dict[str, Any] | None) -> Pack | None:
    """The pack ``messages`` and their answer ``schema`` ask for, or None (an ordinary
    request)."""
    if not isinstance(schema, dict):
        return None
    text = _items_message(messages)
    if text is None:
        return None
    items = tuple(PackItem(int(n), body) for n, body in _ITEM.findall(text))
    named = _LIST_KEY.search(text)
    list_key = _list_key(schema, named.group(1) if named else None)
    if list_key is None:
        return None
    entry = resolve(resolve(schema["properties"][list_key], schema).get("items"), schema)
    props: dict[str, Any] = entry.get("properties") or {}
    id_key = _key(_ID_KEY.search(text), props, _ID_DESCRIPTION, "id")
    echo = _ECHO.search(text)
    echo_key = _key(echo, props, _ECHO_DESCRIPTION, "first_words", group=2)
    if id_key is None:
        return None
    own = {k: v for k, v in props.items() if k not in (id_key, echo_key)}
    required = [k for k in entry.get("required") or [] if k in own]
    fields = {**entry, "properties": own, "required": required}
    id_type = resolve(props.get(id_key), schema)
    return Pack(
        items=items,
        list_key=list_key,
        id_key=id_key,
        echo_key=echo_key,
        words=int(echo.group(1)) if echo else DEFAULT_WORDS,
        fields=fields,
        root=schema,
        string_ids=isinstance(id_type, dict) and id_type.get("type") == "string",
    )


def _items_message(messages: list[Any]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = content_text(message.get("content"))
            if '<item id="' in text and _ITEM.search(text):
                return text
    return None


def _list_key(schema: dict[str, Any], named: str | None) -> str | None:
    """The root property holding an array of objects: the one the sentence names, else the
    first."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        return None
    candidates = [k for k, v in props.items() if _is_object_array(resolve(v, schema), schema)]
    if named in candidates:
        return named
    return candidates[0] if candidates else None


def _is_object_array(node: Any, root: dict[str, Any]) -> bool:
    if not isinstance(node, dict) or node.get("type") != "array":
        return False
    items = resolve(node.get("items"), root)
    return isinstance(items, dict) and isinstance(items.get("properties"), dict)


def _key(
    found: re.Match[str] | None,
    props: dict[str, Any],
    description: re.Pattern[str],
    default: str,
    group: int = 1,
) -> str | None:
    """The key the sentence names, else the property whose description says what it is,
    else ``default`` when the schema has it."""
    if found is not None and found.group(group) in props:
        return found.group(group)
    for key, sub in props.items():
        if isinstance(sub, dict) and description.search(str(sub.get("description") or "")):
            return key
    return default if default in props else None


# ---------------------------------------------------------------- faults


def plan_pack(
    pack: Pack, rates: Mapping[str, float], draw: Callable[[str], float], seed: int
) -> PackPlan:
    """The pack's faults: each ``[[pack:KIND]]`` marker on its item, then one drawn by
    ``rates`` (``draw(salt)``: a uniform number fixed by the config's seed and the request)."""
    faults = [
        (kind, item.id)
        for item in pack.items
        for kind in PACK_MARKER.findall(item.text)
        if kind in PACK_FAULT_KINDS
    ]
    if rates and pack.items:
        u, edge = draw("pack"), 0.0
        for kind, rate in rates.items():
            edge += rate
            if u < edge:
                target = pack.items[int(draw("pack_item") * len(pack.items))]
                faults.append((kind, target.id))
                break
    return PackPlan(pack, faults, seed)


@dataclass(frozen=True)
class PackAnswer:
    value: dict[str, Any]
    #: how many of the request's items got an entry
    answered: int
    #: the packing faults that changed the answer
    applied: tuple[str, ...]


@dataclass
class PackPlan:
    """A packed request and its faults; :meth:`answer` per choice, computed once each."""

    pack: Pack
    faults: list[tuple[str, int]]
    seed: int
    _answers: dict[int, PackAnswer] = field(default_factory=dict)

    _misquoted: dict[int, PackAnswer] = field(default_factory=dict)

    def answer(self, index: int = 0, *, misquote: bool = False) -> PackAnswer:
        """Choice ``index``'s answer; ``misquote``: every item's quotes misquoted (the
        ordinary fault "misquote")."""
        answers = self._misquoted if misquote else self._answers
        if index not in answers:
            answers[index] = _answer(self, index, misquote)
        return answers[index]


# An entry of the answer: (the item whose content it holds, the entry).
_Entry = tuple[int, dict[str, Any]]


def _answer(plan: PackPlan, index: int, misquote: bool) -> PackAnswer:
    pack = plan.pack
    entries = [(item.id, _entry(pack, item, index, misquote=misquote)) for item in pack.items]
    salt = f"{plan.seed}" if index == 0 else f"{plan.seed}:{index}"
    entries = _shuffled(entries, random.Random(salt))
    applied = []
    for kind, target in sorted(plan.faults, key=lambda f: _ORDER.index(f[0])):
        changed = _FAULTS[kind](pack, entries, target, index)
        if changed is not None:
            entries = changed
            applied.append(kind)
    known = {_id(pack, item.id) for item in pack.items}
    answered = len({e[pack.id_key] for _, e in entries if e.get(pack.id_key) in known})
    value = {pack.list_key: [e for _, e in entries]}
    return PackAnswer(value, answered, tuple(applied))


def _shuffled(entries: list[_Entry], rng: random.Random) -> list[_Entry]:
    """A shuffle that is never the order sent (two entries or more): a client matching by
    position fails every time, not one time in n!."""
    out = list(entries)
    rng.shuffle(out)
    if len(out) > 1 and out == entries:
        out = out[1:] + out[:1]
    return out


def _id(pack: Pack, number: int) -> int | str:
    return str(number) if pack.string_ids else number


def _entry(
    pack: Pack, item: PackItem, index: int, salt: str = "", *, misquote: bool = False
) -> dict[str, Any]:
    entry: dict[str, Any] = {pack.id_key: _id(pack, item.id)}
    if pack.echo_key is not None:
        entry[pack.echo_key] = " ".join(item.text.split()[: pack.words])
    return {**entry, **_fields(pack, item.text, index, salt, misquote=misquote)}


def _fields(
    pack: Pack, text: str, index: int, salt: str = "", *, misquote: bool = False
) -> dict[str, Any]:
    """The model's fields for an item: from its text alone (and the choice, and ``salt``);
    ``misquote`` changes its quotes only (the same draws)."""
    material = f"{text}\x00{index}\x00{salt}" if index or salt else text
    seed = int.from_bytes(hashlib.blake2b(material.encode(), digest_size=8).digest(), "big")
    synth = Synth(pack.root, random.Random(seed), _hints(text), misquote=misquote)
    value = synth.value(pack.fields)
    return value if isinstance(value, dict) else {}


def _hints(text: str) -> Hints:
    # Markers are cut from the hints, and are line breaks in the text quotes copy from.
    return hints_from([{"role": "user", "content": text}])


# Each fault: the entries changed, or None when it cannot apply (e.g. "swap" in a pack of one).
_Fault = Callable[[Pack, list[_Entry], int, int], list[_Entry] | None]


def _drop(pack: Pack, entries: list[_Entry], target: int, index: int) -> list[_Entry] | None:
    kept = [(item, e) for item, e in entries if item != target]
    return kept if len(kept) < len(entries) else None


def _duplicate(pack: Pack, entries: list[_Entry], target: int, index: int) -> list[_Entry] | None:
    found = [e for item, e in entries if item == target]
    if not found:
        return None
    text = next(i.text for i in pack.items if i.id == target)
    copy = dict(found[0])
    for attempt in range(1, 9):  # other values, where the schema leaves room for any
        copy = {**found[0], **_fields(pack, text, index, f"copy{attempt}")}
        if copy != found[0]:
            break
    return [*entries, (target, copy)]


def _unknown_id(pack: Pack, entries: list[_Entry], target: int, index: int) -> list[_Entry] | None:
    taken = {item.id for item in pack.items} | {_number(e[pack.id_key]) for _, e in entries}
    unknown = max(taken) + 1
    out = [(i, {**e, pack.id_key: _id(pack, unknown)} if i == target else e) for i, e in entries]
    return out if any(i == target for i, _ in entries) else None


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _swap(pack: Pack, entries: list[_Entry], target: int, index: int) -> list[_Entry] | None:
    ids = [item.id for item in pack.items]
    if len(ids) < 2 or target not in ids:
        return None
    at = ids.index(target)
    other = ids[at + 1] if at + 1 < len(ids) else ids[at - 1]
    first = next((e for i, e in entries if i == target), None)
    second = next((e for i, e in entries if i == other), None)
    if first is None or second is None:
        return None
    a, b = first[pack.id_key], second[pack.id_key]
    swapped = {target: {**first, pack.id_key: b}, other: {**second, pack.id_key: a}}
    return [(i, swapped[i] if e is first or e is second else e) for i, e in entries]


def _truncate(pack: Pack, entries: list[_Entry], target: int, index: int) -> list[_Entry] | None:
    # The target's entries go last, so they are among those cut.
    ordered = [x for x in entries if x[0] != target] + [x for x in entries if x[0] == target]
    return ordered[: len(entries) // 2] if entries else None


def _single(pack: Pack, entries: list[_Entry], target: int, index: int) -> list[_Entry] | None:
    first = pack.items[0].id if pack.items else None
    kept = [x for x in entries if x[0] == first][:1]
    return kept if kept != entries else None


def _invalid_item(
    pack: Pack, entries: list[_Entry], target: int, index: int
) -> list[_Entry] | None:
    found = next((e for i, e in entries if i == target), None)
    if found is None:
        return None
    fields = {k: v for k, v in found.items() if k not in (pack.id_key, pack.echo_key)}
    # A wrong type first (required cleared, so break_value does not just remove one) ...
    broken = break_value(fields, {**pack.fields, "required": []}, pack.root)
    if isinstance(broken, list):  # ... else a required field gone, else the echo not a string
        broken = break_value(fields, pack.fields, pack.root)
    keys = {pack.id_key: found[pack.id_key]}
    if pack.echo_key is not None:
        keys[pack.echo_key] = found.get(pack.echo_key)
    if isinstance(broken, list):
        if pack.echo_key is None:
            return None
        keys[pack.echo_key] = 0
        broken = fields
    bad = {**keys, **broken}
    return [(i, bad if e is found else e) for i, e in entries]


def _misquote(pack: Pack, entries: list[_Entry], target: int, index: int) -> list[_Entry] | None:
    item = next((i for i in pack.items if i.id == target), None)
    found = next((e for i, e in entries if i == target), None)
    if item is None or found is None:
        return None
    wrong = {**found, **_fields(pack, item.text, index, misquote=True)}
    return [(i, wrong if e is found else e) for i, e in entries] if wrong != found else None


_FAULTS: dict[str, _Fault] = {
    "drop": _drop,
    "duplicate": _duplicate,
    "unknown_id": _unknown_id,
    "swap": _swap,
    "truncate": _truncate,
    "single": _single,
    "invalid_item": _invalid_item,
    "misquote": _misquote,
}

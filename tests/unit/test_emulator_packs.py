"""Packed requests (several rows in one request, step 8): the emulator's list answers and its
packing faults, driven with the raw openai client and hand-written requests in the format."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import openai
import pytest

from dbstruct.cli import build_parser, main
from dbstruct.testing import PACK_FAULT_KINDS, Emulator, EmulatorConfig
from dbstruct.testing._command import settings_from as emulator_settings
from dbstruct.testing._request_text import prompt_tokens
from tests.unit import chat_bodies

SYSTEM = "You triage support tickets."
NAME = "TicketItems"
MODES = ("tools", "json", "md_json", "functions", "tools_strict")

FIELDS: dict[str, Any] = {
    "category": {"type": "string", "enum": ["bug", "billing", "account", "other"]},
    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    "summary": {"type": "string"},
    "needs_reply": {"type": "boolean"},
}
REQUIRED = ["category", "priority", "summary"]
# Distinct first words, so an entry's echo says which item its values belong to.
TEXTS = [
    "Invoice 1042 charged twice this month, please refund 30 euros",
    "App crashes on login since the 3.2 update",
    "How do I change the email on my account?",
    "Delivery of order 77 is five days late",
    "Great service, thanks to Maria for the quick help",
]


def pack_schema(
    n: int,
    *,
    strict: bool = False,
    id_key: str = "id",
    echo_key: str = "first_words",
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    fields = FIELDS if fields is None else fields
    props = {
        id_key: {"type": "integer", "description": "The item's id"},
        echo_key: {
            "type": "string",
            "description": "The first words of the item's text, copied exactly",
        },
        **fields,
    }
    entry: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": [id_key, echo_key, *[k for k in REQUIRED if k in fields]],
    }
    items = {
        "type": "array",
        "description": "One entry per item, each with the item's id",
        "minItems": n,
        "maxItems": n,
        "items": entry,
    }
    root: dict[str, Any] = {"type": "object", "properties": {"items": items}, "required": ["items"]}
    if strict:
        entry["required"] = list(props)
        entry["additionalProperties"] = root["additionalProperties"] = False
    return root


def pack_text(
    texts: list[str], words: int = 4, id_key: str = "id", echo_key: str = "first_words"
) -> str:
    n = len(texts)
    sentence = (
        f'There are {n} items below, each between <item id="N"> and </item>. Treat each item '
        f"on its own, as if it were the only one. Answer with exactly {n} entries in "
        f'"items", one per item, each with the item\'s id in "{id_key}" and the first '
        f'{words} words of the item\'s text, copied exactly, in "{echo_key}".'
    )
    blocks = "\n\n".join(f'<item id="{i}">\n{t}\n</item>' for i, t in enumerate(texts, 1))
    return f"{sentence}\n\n{blocks}"


def body_for(mode: str, user: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A chat request in ``mode``'s shape, asking for ``schema``."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return chat_bodies.body_for(mode, messages, schema, NAME, **extra)


def raw_answer(completion: Any, mode: str) -> str:
    message = completion.choices[0].message
    if mode in ("tools", "tools_strict"):
        assert message.tool_calls[0].function.name == NAME
        return str(message.tool_calls[0].function.arguments)
    if mode == "functions":
        return str(message.function_call.arguments)
    if mode == "md_json":
        content = str(message.content)
        assert content.startswith("```json\n") and content.endswith("\n```")
        return content[len("```json\n") : -len("\n```")]
    return str(message.content)


def ask(
    client: openai.OpenAI, texts: list[str], mode: str = "tools", words: int = 4, **extra: Any
) -> list[dict[str, Any]]:
    schema = pack_schema(len(texts), strict=mode == "tools_strict")
    completion = client.chat.completions.create(
        **body_for(mode, pack_text(texts, words), schema, **extra)
    )
    entries: list[dict[str, Any]] = json.loads(raw_answer(completion, mode))["items"]
    return entries


def echo(text: str, words: int = 4) -> str:
    return " ".join(text.split()[:words])


def entry_schema(strict: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = pack_schema(1, strict=strict)["properties"]["items"]["items"]
    return schema


def valid(entry: dict[str, Any], strict: bool = False) -> bool:
    return jsonschema.Draft202012Validator(entry_schema(strict)).is_valid(entry)


def owner(entry: dict[str, Any], texts: list[str], words: int = 4) -> int:
    """The id of the item whose text the entry's echo copies."""
    found = [i for i, t in enumerate(texts, 1) if echo(t, words) == entry["first_words"]]
    assert len(found) == 1, entry
    return found[0]


def fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("id", "first_words")}


def assert_correct(entries: list[dict[str, Any]], texts: list[str], words: int = 4) -> None:
    """Every entry answers the item its echo copies, with valid values."""
    for entry in entries:
        assert entry["id"] == owner(entry, texts, words) and valid(entry), entry


def affected(kind: str, entries: list[dict[str, Any]], texts: list[str]) -> set[int]:
    """Check the answer shows exactly the packing fault ``kind``; the ids it affected."""
    n = len(texts)
    ids = [e["id"] for e in entries]
    if kind == "drop":
        assert len(entries) == n - 1 and len(set(ids)) == n - 1
        assert_correct(entries, texts)
        return set(range(1, n + 1)) - set(ids)
    if kind == "duplicate":
        twice = {i for i in ids if ids.count(i) == 2}
        assert len(entries) == n + 1 and set(ids) == set(range(1, n + 1)) and len(twice) == 1
        assert_correct(entries, texts)
        first, copy = [fields(e) for e in entries if e["id"] in twice]
        assert first != copy  # the copy carries other values
        return twice
    if kind == "unknown_id":
        strangers = [e for e in entries if e["id"] not in range(1, n + 1)]
        assert len(entries) == n and len(strangers) == 1 and len(set(ids)) == n
        assert_correct([e for e in entries if e not in strangers], texts)
        return {owner(strangers[0], texts)}
    if kind == "swap":
        assert sorted(ids) == list(range(1, n + 1)) and all(valid(e) for e in entries)
        wrong = {e["id"]: owner(e, texts) for e in entries if e["id"] != owner(e, texts)}
        assert len(wrong) == 2 and {v: k for k, v in wrong.items()} == wrong
        assert abs(min(wrong) - max(wrong)) == 1  # neighbours
        return set(wrong)
    if kind == "truncate":
        assert len(entries) == n // 2 and len(set(ids)) == len(ids)
        assert_correct(entries, texts)
        return set(range(1, n + 1)) - set(ids)
    if kind == "single":
        assert len(entries) == 1 and entries[0]["id"] == 1
        assert_correct(entries, texts)
        return {1}
    assert kind == "invalid_item"
    assert sorted(ids) == list(range(1, n + 1))
    assert all(e["id"] == owner(e, texts) for e in entries)
    broken = {e["id"] for e in entries if not valid(e)}
    assert len(broken) == 1
    return broken


def ask_alone(client: openai.OpenAI, text: str) -> dict[str, Any]:
    """The row sent as an ordinary request, asking for one object of the model's fields."""
    schema = {"type": "object", "properties": FIELDS, "required": REQUIRED}
    completion = client.chat.completions.create(**body_for("tools", text, schema))
    value: dict[str, Any] = json.loads(raw_answer(completion, "tools"))
    jsonschema.validate(value, schema)
    return value


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_answers_each_id_once_shuffled_with_its_echo(
    emu: Emulator, client: openai.OpenAI, mode: str
) -> None:
    schema = pack_schema(len(TEXTS), strict=mode == "tools_strict")
    body = body_for(mode, pack_text(TEXTS, 6), schema)
    completion = client.chat.completions.create(**body)
    raw = raw_answer(completion, mode)
    answer = json.loads(raw)
    jsonschema.validate(answer, schema)  # strict: additionalProperties false, all required
    entries = answer["items"]
    assert sorted(e["id"] for e in entries) == [1, 2, 3, 4, 5]
    assert [e["id"] for e in entries] != [1, 2, 3, 4, 5]  # shuffled
    assert_correct(entries, TEXTS, 6)
    assert entries[0]["first_words"] == echo(TEXTS[entries[0]["id"] - 1], 6)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens(body)
    fence = len("```json\n\n```") if mode == "md_json" else 0
    assert completion.usage.completion_tokens == math.ceil((len(raw) + fence) / 4)
    stats = emu.stats()
    assert (stats.packed_requests, stats.packed_items, stats.by_pack_fault) == (1, 5, {})


def test_same_request_same_answer_and_an_item_keeps_its_values_in_any_pack(
    client: openai.OpenAI,
) -> None:
    first = ask(client, TEXTS[:3])
    assert ask(client, TEXTS[:3]) == first  # deterministic, order included
    other = ask(client, [TEXTS[4], TEXTS[2], TEXTS[0], TEXTS[3]], words=3)
    by_text = {owner(e, TEXTS[:3]): fields(e) for e in first}
    moved = {e["id"]: fields(e) for e in other}
    assert moved[3] == by_text[1] and moved[2] == by_text[3]  # other pack, other position
    assert {e["id"]: e["first_words"] for e in other}[2] == echo(TEXTS[2], 3)
    # values come from the item's own text: two items rarely share all of them
    assert len({json.dumps(f, sort_keys=True) for f in moved.values()}) > 1


def test_keys_named_by_the_sentence_beside_model_fields_of_the_same_name(
    emu: Emulator, client: openai.OpenAI
) -> None:
    own = {"id": {"type": "string"}, "first_words": {"type": "string"}, **FIELDS}
    schema = pack_schema(3, id_key="item_id", echo_key="item_first_words", fields=own)
    user = pack_text(TEXTS[:3], 5, "item_id", "item_first_words")
    completion = client.chat.completions.create(**body_for("json", user, schema))
    entries = json.loads(raw_answer(completion, "json"))["items"]
    jsonschema.validate({"items": entries}, schema)
    assert sorted(e["item_id"] for e in entries) == [1, 2, 3]
    for e in entries:
        assert e["item_first_words"] == echo(TEXTS[e["item_id"] - 1], 5)
        assert isinstance(e["id"], str)  # the model's own "id" field, synthesised


def test_the_short_wording_with_undescribed_keys(client: openai.OpenAI) -> None:
    # the sentence as src/dbstruct/_packing.py words it, and its schema: no descriptions
    schema = pack_schema(3, id_key="item_id", echo_key="item_first_words")
    entry = schema["properties"]["items"]["items"]
    for key in ("item_id", "item_first_words"):
        del entry["properties"][key]["description"]
    blocks = "\n\n".join(f'<item id="{i}">\n{t}\n</item>' for i, t in enumerate(TEXTS[:3], 1))
    user = (
        'There are 3 items below, each in <item id="N">...</item>. Treat each on its own. '
        'Answer with exactly 3 entries in "items", one per item: the item\'s id in "item_id", '
        f'the first 2 words of its text, copied exactly, in "item_first_words".\n\n{blocks}'
    )
    completion = client.chat.completions.create(**body_for("tools", user, schema))
    entries = json.loads(raw_answer(completion, "tools"))["items"]
    assert {e["item_id"]: e["item_first_words"] for e in entries} == {
        i: echo(t, 2) for i, t in enumerate(TEXTS[:3], 1)
    }


def test_without_the_sentence_keys_come_from_descriptions_and_four_words(
    client: openai.OpenAI,
) -> None:
    schema = pack_schema(2, id_key="ref", echo_key="opening")
    blocks = "\n\n".join(f'<item id="{i}">\n{t}\n</item>' for i, t in enumerate(TEXTS[:2], 1))
    completion = client.chat.completions.create(
        **body_for("tools", f"Triage these.\n\n{blocks}", schema)
    )
    entries = json.loads(raw_answer(completion, "tools"))["items"]
    assert {e["ref"]: e["opening"] for e in entries} == {1: echo(TEXTS[0]), 2: echo(TEXTS[1])}


def test_ordinary_requests_are_not_packs(emu: Emulator, client: openai.OpenAI) -> None:
    schema = pack_schema(3)
    # a list schema, but no item blocks: synthesised as before, ids and all
    client.chat.completions.create(**body_for("tools", "Some tickets, please.", schema))
    # item blocks, but an answer schema without a list of objects
    ask_alone(client, pack_text(TEXTS[:2]))
    assert (emu.stats().packed_requests, emu.stats().requests) == (0, 2)


def test_max_tokens_cuts_the_list(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        **body_for("tools", pack_text(TEXTS), pack_schema(5), max_tokens=12)
    )
    raw = raw_answer(completion, "tools")
    assert completion.choices[0].finish_reason == "length" and len(raw) == 48
    with pytest.raises(ValueError):
        json.loads(raw)


# ---------------------------------------------------------------- packing faults


#: "misquote" changes quotes only; these packs have none (test_emulator_evidence covers it)
LIST_FAULTS = [k for k in PACK_FAULT_KINDS if k != "misquote"]


@pytest.mark.parametrize("kind", LIST_FAULTS)
def test_marker_makes_its_item_the_affected_one_only_in_a_pack(
    emu: Emulator, client: openai.OpenAI, kind: str
) -> None:
    marked = 3
    texts = [f"{t} [[pack:{kind}]]" if i == marked else t for i, t in enumerate(TEXTS, 1)]
    hit = affected(kind, ask(client, texts), texts)
    if kind == "swap":
        assert hit == {3, 4}
    elif kind == "truncate":  # the marked item is among those cut
        assert marked in hit and len(hit) == 3
    elif kind != "single":  # "single" keeps the first id's entry, whichever item is marked
        assert hit == {marked}
    ask_alone(client, texts[marked - 1])  # the same row alone: an ordinary, valid answer
    stats = emu.stats()
    assert (stats.by_pack_fault, stats.packed_requests) == ({kind: 1}, 1)


def test_truncate_always_cuts_the_marked_item(client: openai.OpenAI) -> None:
    for marked in range(1, 6):
        for batch in range(3):  # other packs, other shuffles
            texts = [f"{t} {batch}" for t in TEXTS]
            texts[marked - 1] += " [[pack:truncate]]"
            assert marked in affected("truncate", ask(client, texts), texts)


def test_swap_of_the_last_item_takes_the_one_before(client: openai.OpenAI) -> None:
    texts = [*TEXTS[:2], f"{TEXTS[2]} [[pack:swap]]"]
    assert affected("swap", ask(client, texts), texts) == {2, 3}


@pytest.mark.parametrize("kind", LIST_FAULTS)
def test_rate_applies_to_every_packed_request_and_to_no_ordinary_one(
    emu: Emulator, client: openai.OpenAI, kind: str
) -> None:
    emu.configure(pack_faults={kind: 1.0}, seed=11)
    for texts in (TEXTS, TEXTS[:4]):
        affected(kind, ask(client, texts, mode="json"), texts)
    ask_alone(client, TEXTS[0])
    stats = emu.stats()
    assert stats.by_pack_fault == {kind: 2}
    assert (stats.packed_requests, stats.requests) == (2, 3)


def test_rates_are_seeded_and_spread_over_items(emu: Emulator, client: openai.OpenAI) -> None:
    packs = [[f"{t} (batch {b})" for t in TEXTS] for b in range(12)]

    def dropped() -> list[set[int]]:
        emu.reset()
        emu.configure(pack_faults={"drop": 0.5}, seed=5)
        return [{1, 2, 3, 4, 5} - {e["id"] for e in ask(client, texts)} for texts in packs]

    first = dropped()
    assert dropped() == first  # same seed, same plan
    assert 0 < sum(map(len, first)) < 12 and max(map(len, first)) == 1
    assert len(set().union(*first)) > 1  # not always the same item
    assert emu.stats().by_pack_fault == {"drop": sum(map(len, first))}


def test_ordinary_faults_apply_to_packs(emu: Emulator, client: openai.OpenAI) -> None:
    texts = [*TEXTS[:2], f"{TEXTS[2]} [[fault:500x1]]"]
    with pytest.raises(openai.InternalServerError):
        ask(client, texts)
    assert_correct(ask(client, texts), texts)
    emu.configure(faults={"malformed": 1.0})
    completion = client.chat.completions.create(
        **body_for("tools", pack_text(TEXTS[:2]), pack_schema(2))
    )
    with pytest.raises(ValueError):
        json.loads(raw_answer(completion, "tools"))
    stats = emu.stats()
    assert stats.by_fault == {"500": 1, "malformed": 1}
    assert (stats.packed_requests, stats.packed_items) == (2, 5)


def test_stats_count_items_answered(emu: Emulator, client: openai.OpenAI) -> None:
    ask(client, TEXTS)
    ask(client, [TEXTS[0], f"{TEXTS[1]} [[pack:drop]]"])
    ask(client, [f"{t} [[pack:single]]" for t in TEXTS[2:]])
    ask_alone(client, TEXTS[3])
    stats = emu.stats()
    assert (stats.packed_requests, stats.packed_items) == (3, 5 + 1 + 1)
    assert stats.by_pack_fault == {"drop": 1, "single": 1}
    assert stats.to_dict()["by_pack_fault"] == {"drop": 1, "single": 1}


# ---------------------------------------------------------------- settings


def test_pack_fault_settings_are_checked(emu: Emulator) -> None:
    with pytest.raises(ValueError, match=r"unknown pack fault kinds \['teapot'\]") as bad:
        EmulatorConfig.from_dict({"pack_faults": {"teapot": 0.1}})
    assert str(list(PACK_FAULT_KINDS)) in str(bad.value)  # the known kinds named
    with pytest.raises(ValueError, match="sum to at most 1"):
        EmulatorConfig.from_dict({"pack_faults": {"drop": 0.6, "swap": 0.5}})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        emu.configure(pack_faults={"drop": 1.5})
    assert emu.config().pack_faults == {}


def test_cli_config_takes_pack_faults(tmp_path: Any) -> None:
    path = tmp_path / "emu.yaml"
    path.write_text("pack_faults:\n  drop: 0.25\n  swap: 0.1\n", encoding="utf-8")
    args = build_parser().parse_args(["emulator", "--config", str(path)])
    config = EmulatorConfig.from_dict(emulator_settings(args))
    assert config.pack_faults == {"drop": 0.25, "swap": 0.1}
    assert main(["emulator", "--config", '{"pack_faults": {"teapot": 0.1}}']) == 2

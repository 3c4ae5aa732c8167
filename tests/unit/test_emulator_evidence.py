"""Evidence quotes: the emulator copies a span of the request's text into every quote property,
one entry per field of an evidence list, and misquotes on demand ("misquote" faults)."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import openai
import pytest

from dbstruct.testing import FAULT_KINDS, PACK_FAULT_KINDS, Emulator
from dbstruct.testing._request_text import hints_from, quote_of
from dbstruct.testing._synth import Synth
from tests.unit import chat_bodies

NAME = "Person"
MODES = ("tools", "tools_strict", "functions", "json", "md_json")
FIELDS = ["name", "age", "city"]

# Mixed case, punctuation, runs of spaces, tabs and line breaks: a quote must keep them all.
TEXTS = [
    "Ada  Lovelace, aged 36, lives in London.\nShe wrote the FIRST program\tfor an engine.",
    "Grace Hopper (85) from New York City:  compilers, COBOL and a moth in a relay.",
    "Linus is 28 and lives in Helsinki;\n\nhe started a kernel as a hobby, not a big one.",
]


def evidence(fields: list[str], *, strict: bool = False, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "object",
        "properties": {
            "field": {"type": "string", "enum": fields},
            "quote": {"type": "string", "description": "A verbatim quote of the text."},
        },
        "required": ["field", "quote"],
    }
    if strict:
        entry["additionalProperties"] = False
    return {
        "type": "array",
        "description": "For each field, a verbatim quote of the text it comes from.",
        "items": entry,
        **extra,
    }


def person(
    *, with_evidence: bool = True, strict: bool = False, ref: bool = False, **extra: Any
) -> dict[str, Any]:
    """A schema with the evidence list last, inline or through ``$ref`` to ``$defs``."""
    props: dict[str, Any] = {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"type": "string"},
        "summary": {"type": "string", "description": "One sentence about the person."},
    }
    root: dict[str, Any] = {"type": "object", "properties": props, "required": list(props)}
    if with_evidence:
        props["evidence"] = evidence(FIELDS, strict=strict, **extra)
        root["required"] = list(props)
        if ref:
            root["$defs"] = {"Evidence": props["evidence"]}
            props["evidence"] = {"$ref": "#/$defs/Evidence"}
    if strict:
        root["additionalProperties"] = False
    return root


def body_for(mode: str, messages: list[dict[str, Any]], schema: dict[str, Any]) -> dict[str, Any]:
    return chat_bodies.body_for(mode, messages, schema, NAME)


def answer(
    client: openai.OpenAI,
    text: str | list[dict[str, Any]],
    mode: str = "json",
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
    schema = person(strict=mode == "tools_strict") if schema is None else schema
    completion = client.chat.completions.create(**body_for(mode, messages, schema))
    message = completion.choices[0].message
    if mode in ("tools", "tools_strict"):
        raw = str(message.tool_calls[0].function.arguments)
    elif mode == "functions":
        raw = str(message.function_call.arguments)
    else:
        raw = str(message.content).removeprefix("```json\n").removesuffix("\n```")
    value: dict[str, Any] = json.loads(raw)
    jsonschema.Draft202012Validator(schema).validate(value)
    return value


def quotes(value: dict[str, Any]) -> list[str]:
    return [e["quote"] for e in value["evidence"]]


def loose(text: str) -> str:
    """Lower case, whitespace collapsed: what a forgiving search compares."""
    return " ".join(text.lower().split())


def assert_copied(quote: str, text: str) -> None:
    """``quote`` is 1 to 8 words of ``text``, copied exactly, within one line."""
    assert quote in text and quote == quote.strip() and "\n" not in quote, (quote, text)
    assert 1 <= len(quote.split()) <= 8, quote


def assert_misquoted(quote: str, text: str) -> None:
    assert quote.strip() and loose(quote) not in loose(text), (quote, text)
    letters = re.sub(r"[^a-z]", "", quote.lower())
    assert letters not in re.sub(r"[^a-z]", "", text.lower()), (quote, text)


# ---------------------------------------------------------------- single requests


@pytest.mark.parametrize("mode", MODES)
def test_quotes_copy_the_text_one_entry_per_field_in_order(
    client: openai.OpenAI, mode: str
) -> None:
    for text in TEXTS:
        value = answer(client, text, mode)
        assert [e["field"] for e in value["evidence"]] == FIELDS
        for quote in quotes(value):
            assert_copied(quote, text)
        assert answer(client, text, mode) == value  # the same request, the same quotes


def test_quotes_through_a_ref(client: openai.OpenAI) -> None:
    # OpenAI's strict schemas (databricks-gpt-*) take $defs; the others want them inlined
    value = answer(client, TEXTS[0], "tools_strict", person(strict=True, ref=True))
    assert [e["field"] for e in value["evidence"]] == FIELDS
    for quote in quotes(value):
        assert_copied(quote, TEXTS[0])


def test_quotes_spread_over_the_text(client: openai.OpenAI) -> None:
    seen = {q for i in range(30) for q in quotes(answer(client, f"{TEXTS[0]} Row {i}."))}
    assert len(seen) > 20
    assert {len(q.split()) for q in seen} >= {1, 2, 3, 4, 5}
    assert any("  " in q or "\t" in q for q in seen)  # inner whitespace kept as it is


def test_max_items_keeps_the_first_fields(client: openai.OpenAI) -> None:
    value = answer(client, TEXTS[1], schema=person(maxItems=2))
    assert [e["field"] for e in value["evidence"]] == FIELDS[:2]


def test_the_rule_leaves_other_fields_as_they_were() -> None:
    # Over HTTP the schema is part of the request's seed; here the seed is the same.
    for seed, text in enumerate(TEXTS * 5):
        hints = hints_from([{"role": "user", "content": text}])
        plain = person(with_evidence=False)
        before = Synth(plain, random.Random(seed), hints).value(plain)
        after = Synth(person(), random.Random(seed), hints).value(person())
        assert {k: v for k, v in after.items() if k != "evidence"} == before
        assert [e["field"] for e in after["evidence"]] == FIELDS


@pytest.mark.parametrize(
    ("key", "sub"),
    [
        ("quote", {"type": "string"}),
        ("citation", {"type": "string"}),
        ("evidence_quote", {"type": ["string", "null"]}),
        ("source", {"type": "string", "description": "The sentence copied exactly."}),
        ("span", {"type": "string", "description": "Verbatim text supporting the answer."}),
    ],
)
def test_quote_properties_by_name_or_description(
    client: openai.OpenAI, key: str, sub: dict[str, Any]
) -> None:
    schema = {"type": "object", "properties": {key: sub}, "required": [key]}
    texts = [f"{TEXTS[2]} Row {i}." for i in range(8)]
    got = [(answer(client, text, schema=schema)[key], text) for text in texts]
    for quote, text in got:
        if quote is not None:
            assert_copied(quote, text)
    assert sum(q is not None for q, _ in got) >= 4


def test_a_quote_fits_max_length(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"quote": {"type": "string", "maxLength": 6}},
        "required": ["quote"],
    }
    for text in [f"{TEXTS[0]} {i}" for i in range(10)]:
        quote = answer(client, text, schema=schema)["quote"]
        assert 0 < len(quote) <= 6 and quote in text, quote


def test_a_name_enum_and_a_const_field_ask_for_one_quote_each(client: openai.OpenAI) -> None:
    by_name = evidence(["a", "b", "c"], minItems=1)
    entry = by_name["items"]
    entry["properties"] = {"name": entry["properties"]["field"], **entry["properties"]}
    del entry["properties"]["field"]
    entry["required"] = ["name", "quote"]
    by_const = evidence(["x"])
    by_const["items"]["properties"]["field"] = {"type": "string", "const": "age"}
    props = {"by_name": by_name, "by_const": by_const}
    schema = {"type": "object", "properties": props, "required": list(props)}
    value = answer(client, TEXTS[0], schema=schema)
    assert [e["name"] for e in value["by_name"]] == ["a", "b", "c"]
    assert [e["field"] for e in value["by_const"]] == ["age"]
    for quote in [e["quote"] for e in value["by_name"] + value["by_const"]]:
        assert_copied(quote, TEXTS[0])


def test_markers_and_schemas_are_never_quoted(emu: Emulator, client: openai.OpenAI) -> None:
    lead, schema_text = "Extract from this row.", json.dumps(person())
    seen = set()
    for i in range(10):
        row = f"Ada is 36[[latency:0]]and lives in [[pack:drop]] London [[fault:500x1]] {i} ok"
        folded = f"{lead}\n{schema_text}\n{row}"  # JSON_O1: schema and row in one user turn
        for text in (row, folded):
            with pytest.raises(openai.InternalServerError):  # the marker's one 500
                answer(client, text)
            for quote in quotes(answer(client, text)):
                assert quote in row or quote in lead, quote
                assert "[" not in quote and "]" not in quote and "{" not in quote, quote
                seen.add(quote)
    assert any("36" in q for q in seen) and any("London" in q for q in seen)
    assert not any("36and" in q or "inLondon" in q for q in seen)
    assert emu.stats().by_fault == {"500": 20}


def test_a_reask_turn_is_not_quoted(client: openai.OpenAI) -> None:
    fix = "Your answer failed validation: age must be an integer. Answer again, corrected."
    for i in range(10):
        text = f"{TEXTS[0]} Row {i}."
        messages = [
            {"role": "user", "content": text},
            {"role": "assistant", "content": '{"name": "Ada"}'},
            {"role": "user", "content": fix},
        ]
        for quote in quotes(answer(client, messages)):
            assert_copied(quote, text)


# ---------------------------------------------------------------- misquote


def test_misquote_by_marker(emu: Emulator, client: openai.OpenAI) -> None:
    for text in TEXTS:
        marked = f"{text} [[fault:misquote]]"
        value = answer(client, marked)
        assert [e["field"] for e in value["evidence"]] == FIELDS
        for quote in quotes(value):
            assert_misquoted(quote, marked)
    assert emu.stats().by_fault == {"misquote": 3}


@pytest.mark.parametrize("mode", MODES)
def test_misquote_by_rate_changes_the_quotes_only(
    emu: Emulator, client: openai.OpenAI, mode: str
) -> None:
    right = [answer(client, text, mode) for text in TEXTS]
    emu.configure(faults={"misquote": 1.0}, seed=3)
    wrong = [answer(client, text, mode) for text in TEXTS]
    for text, good, bad in zip(TEXTS, right, wrong, strict=True):
        for quote in quotes(bad):
            assert_misquoted(quote, text)
        assert {k: v for k, v in bad.items() if k != "evidence"} == {
            k: v for k, v in good.items() if k != "evidence"
        }
        assert [e["field"] for e in bad["evidence"]] == FIELDS
    assert emu.stats().by_fault == {"misquote": 3}


def test_misquote_rates_hit_a_seeded_share(emu: Emulator, client: openai.OpenAI) -> None:
    texts = [f"{TEXTS[1]} Row {i}." for i in range(40)]

    def misquoted() -> list[bool]:
        emu.reset()
        emu.configure(faults={"misquote": 0.25}, seed=9)
        return [not all(q in t for q in quotes(answer(client, t))) for t in texts]

    first = misquoted()
    assert 4 <= sum(first) <= 20 and emu.stats().by_fault == {"misquote": sum(first)}
    assert misquoted() == first


def test_misquote_of_a_schema_without_quotes_is_a_plain_answer(
    emu: Emulator, client: openai.OpenAI
) -> None:
    plain = person(with_evidence=False)
    right = answer(client, TEXTS[0], schema=plain)
    emu.configure(faults={"misquote": 1.0})
    assert answer(client, TEXTS[0], schema=plain) == right


def test_misquote_is_absent_even_from_a_text_holding_the_invented_words() -> None:
    text = "Zorbly QUENDRIC vax-trum plim sock zqzq and more words here"
    for seed in range(20):
        rng = random.Random(seed)
        assert_copied(quote_of(text, rng), text)
        assert_misquoted(quote_of(text, random.Random(seed), misquote=True), text)
    assert quote_of("", random.Random(0)) == ""
    assert_misquoted(quote_of("", random.Random(0), misquote=True), "")


def test_misquote_is_a_fault_kind_of_both_lists() -> None:
    assert "misquote" in FAULT_KINDS and "misquote" in PACK_FAULT_KINDS


# ---------------------------------------------------------------- packed requests

PACK_TEXTS = [
    "Alpha bravo charlie delta echo foxtrot golf hotel",
    "India juliett kilo lima mike november oscar papa",
    "Quebec romeo sierra tango uniform victor whiskey xray",
    "Yankee zulu amber basil cedar dahlia elm fern",
]


def pack_schema(n: int, with_evidence: bool = True) -> dict[str, Any]:
    props: dict[str, Any] = {
        "id": {"type": "integer", "description": "The item's id"},
        "first_words": {"type": "string", "description": "The first words of the item"},
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "note": {"type": "string"},
    }
    if with_evidence:
        props["evidence"] = evidence(FIELDS)
    entry = {"type": "object", "properties": props, "required": list(props)}
    items = {"type": "array", "minItems": n, "maxItems": n, "items": entry}
    return {"type": "object", "properties": {"items": items}, "required": ["items"]}


def ask_pack(
    client: openai.OpenAI, texts: list[str], mode: str = "tools", with_evidence: bool = True
) -> dict[int, Any]:
    """The entries by id (each checked to echo its own item)."""
    n = len(texts)
    lead = (
        f'There are {n} items below, each between <item id="N"> and </item>. Answer with '
        f'exactly {n} entries in "items", each with the item\'s id in "id" and the first 4 '
        f'words of the item\'s text, copied exactly, in "first_words". Lead words: omega sigma.'
    )
    blocks = "\n\n".join(f'<item id="{i}">\n{t}\n</item>' for i, t in enumerate(texts, 1))
    value = answer(client, f"{lead}\n\n{blocks}", mode, pack_schema(n, with_evidence))
    entries = {e["id"]: e for e in value["items"]}
    for i, text in enumerate(texts, 1):
        assert entries[i]["first_words"] == " ".join(text.split()[:4])
    return entries


@pytest.mark.parametrize("mode", ["tools", "json"])
def test_pack_items_quote_their_own_text_only(client: openai.OpenAI, mode: str) -> None:
    for shift in range(4):
        texts = [f"{t} {shift}" for t in PACK_TEXTS]
        entries = ask_pack(client, texts, mode)
        for i, text in enumerate(texts, 1):
            assert [e["field"] for e in entries[i]["evidence"]] == FIELDS
            for quote in quotes(entries[i]):
                assert_copied(quote, text)
                others = [t for t in texts if t != text] + ["omega sigma"]
                assert not any(quote in t for t in others if quote != str(shift)), quote


def test_pack_items_keep_their_other_fields(client: openai.OpenAI) -> None:
    plain = ask_pack(client, PACK_TEXTS, with_evidence=False)
    quoted = ask_pack(client, PACK_TEXTS)
    for i, entry in quoted.items():
        assert {k: v for k, v in entry.items() if k != "evidence"} == plain[i]


def test_pack_marker_misquotes_its_item_only(emu: Emulator, client: openai.OpenAI) -> None:
    texts = [*PACK_TEXTS]
    texts[2] = f"{texts[2]} [[pack:misquote]] yes"
    entries = ask_pack(client, texts)
    for i, text in enumerate(texts, 1):
        for quote in quotes(entries[i]):
            if i == 3:
                assert_misquoted(quote, text)
            else:
                assert_copied(quote, text)
    alone = answer(client, texts[2], schema=person())  # the same row alone: quoted rightly
    for quote in quotes(alone):
        assert_copied(quote, texts[2])
        assert "pack" not in quote
    assert emu.stats().by_pack_fault == {"misquote": 1}


def test_pack_rate_misquotes_one_item_per_pack(emu: Emulator, client: openai.OpenAI) -> None:
    emu.configure(pack_faults={"misquote": 1.0}, seed=4)
    for batch in range(3):
        texts = [f"{t} {batch}" for t in PACK_TEXTS]
        entries = ask_pack(client, texts)
        wrong = {
            i for i, text in enumerate(texts, 1) if not all(q in text for q in quotes(entries[i]))
        }
        assert len(wrong) == 1
        for quote in quotes(entries[wrong.pop()]):
            assert not any(loose(quote) in loose(t) for t in texts)
    assert emu.stats().by_pack_fault == {"misquote": 3}


def test_an_ordinary_misquote_fault_misquotes_every_item(
    emu: Emulator, client: openai.OpenAI
) -> None:
    texts = [*PACK_TEXTS[:3], f"{PACK_TEXTS[3]} [[fault:misquote]]"]
    entries = ask_pack(client, texts)
    for i, text in enumerate(texts, 1):
        for quote in quotes(entries[i]):
            assert_misquoted(quote, text)
    stats = emu.stats()
    assert stats.by_fault == {"misquote": 1} and stats.by_pack_fault == {}


def test_quotes_come_from_the_last_paragraph_where_prompts_put_the_material() -> None:
    prompt = "You triage tickets.\nBe brief.\n\nSubject: app closes\n\nIt crashes on save.\nHelp!"
    rng = random.Random(3)
    got = {quote_of(prompt, rng) for _ in range(200)}
    assert got and all(q in "It crashes on save.\nHelp!" for q in got), got
    assert {"It", "Help!"} <= {w for q in got for w in q.split()}
    # no blank line: the whole text (a one-paragraph template's lead words included)
    assert any("Extract" in quote_of("Extract the user: Ada is 36", rng) for _ in range(200))


def test_every_field_gets_its_quote_however_many_there_are() -> None:
    fields = [f"f{i}" for i in range(9)]  # more than an ordinary array's 3 items
    schema = {"type": "array", "items": evidence(fields)["items"]}
    hints = hints_from([{"role": "user", "content": TEXTS[0]}])
    value = Synth(schema, random.Random(1), hints).value(schema)
    assert [e["field"] for e in value] == fields
    assert all(e["quote"] and e["quote"] in TEXTS[0] for e in value)

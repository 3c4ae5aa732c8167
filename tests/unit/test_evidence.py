"""Evidence (dbstruct.evidence): the schema asked for, quotes located locally, the client's
``evidence=True`` against the emulator, and the evaluation's found rates."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, create_model

import dbstruct
from dbstruct.errors import ConfigurationError, SchemaError
from dbstruct.evaluation import EvaluatedRun, Evaluation, evidence_rates, format_runs
from dbstruct.evidence import (
    Evidence,
    FieldEvidence,
    evidence_model,
    evidence_of,
    locate,
    output_model,
    source_text,
    split,
    wire_model,
    with_evidence,
)
from dbstruct.json_schema import compile_schema
from dbstruct.modes import Mode
from dbstruct.testing import Emulator


class Ticket(BaseModel):
    """A support ticket."""

    category: Literal["billing", "bug", "other"]
    order_id: str | None = Field(None, alias="orderId")
    urgent: bool = False


TEXT = "Hello,  the App crashes when I pay for order A-17. “Please” fix it!"


# ---------------------------------------------------------------- locating quotes


@pytest.mark.parametrize(
    ("quote", "expected"),
    [
        ("the App crashes", "the App crashes"),  # exact
        ("  the App crashes. ", None),  # the period is not there after "crashes"
        ("hello, the app", "Hello,  the App"),  # case and whitespace folded
        ('"order A-17."', "order A-17."),  # surrounding quotation marks are not the quote
        ('17. "please" fix', "17. “Please” fix"),  # typographic quotes made plain
        ("order A-18", None),
        ("", None),
        ("  \n", None),
    ],
)
def test_locate_gives_offsets_into_the_original_text(quote: str, expected: str | None) -> None:
    span = locate(quote, TEXT)
    if expected is None:
        assert span is None
    else:
        assert span is not None
        assert TEXT[span[0] : span[1]] == expected


def test_locate_maps_offsets_back_past_characters_that_lower_to_two() -> None:
    text = "İstanbul office: refund  NOW"  # "İ".lower() is two characters
    span = locate("refund now", text)
    assert span is not None and text[span[0] : span[1]] == "refund  NOW"


# ---------------------------------------------------------------- the schema asked for


def test_wire_schema_adds_one_list_of_field_and_quote_with_the_field_names() -> None:
    wire = wire_model(Ticket)
    compiled = compile_schema(wire)
    plain = compile_schema(Ticket)
    assert compiled.name == plain.name == "Ticket"
    assert compiled.description == "A support ticket."
    assert compiled.key_count == plain.key_count + 3
    props = compiled.parameters["properties"]
    assert list(props) == ["category", "orderId", "urgent", "evidence"]
    item = props["evidence"]["items"]
    assert set(item["properties"]) == {"field", "quote"}
    assert item["properties"]["field"]["enum"] == ["category", "orderId", "urgent"]
    assert "evidence" in compiled.parameters["required"]


def test_a_model_with_an_evidence_field_is_refused_naming_it() -> None:
    Own = create_model("Own", evidence=(str, ...))
    with pytest.raises(ConfigurationError, match="field named 'evidence'"):
        wire_model(Own)


def test_evidence_is_refused_where_its_keys_pass_the_tool_limit() -> None:
    wide = create_model("Wide", **{f"f{i}": (int, ...) for i in range(14)})  # type: ignore[call-overload]
    with pytest.raises(SchemaError, match=r"17 keys.*evidence=True added 3 keys"):
        evidence_model(wide, Mode.TOOLS)
    assert evidence_model(wide, Mode.JSON) is wire_model(wide)  # 64 in a response format
    with pytest.raises(ConfigurationError, match="PARALLEL_TOOLS"):
        evidence_model(Ticket, Mode.PARALLEL_TOOLS)


# ---------------------------------------------------------------- an answer split


def _answer(*quotes: tuple[str, str]) -> Any:
    return wire_model(Ticket).model_validate(
        {
            "category": "bug",
            "orderId": "A-17",
            "evidence": [{"field": f, "quote": q} for f, q in quotes],
        }
    )


def test_split_gives_the_plain_model_and_located_evidence() -> None:
    value, evidence = split(
        _answer(("category", "made up"), ("category", "App crashes"), ("orderId", "order A-17")),
        Ticket,
        TEXT,
    )
    assert type(value) is Ticket and value == Ticket(category="bug", orderId="A-17")
    assert "evidence" not in value.model_dump()
    assert isinstance(evidence, Evidence)
    # the found quote wins over an earlier one that is not in the text
    assert evidence["category"] == FieldEvidence(
        quote="App crashes", found=True, start=TEXT.index("App"), end=TEXT.index(" when")
    )
    assert (
        evidence["order_id"].found
        and TEXT[evidence["order_id"].start : evidence["order_id"].end] == "order A-17"
    )
    assert evidence["urgent"] == FieldEvidence()  # no quote: not found, never invented
    assert evidence.found_fields() == ["category", "order_id"]
    with pytest.raises(KeyError, match="fields: category, order_id, urgent"):
        evidence["orderid"]


def test_a_quote_not_in_the_text_is_kept_and_flagged() -> None:
    out = with_evidence(_answer(("category", "the app is on fire")), Ticket, TEXT)
    assert isinstance(out, Ticket) and type(out) is output_model(Ticket)
    assert out.evidence.category == FieldEvidence(quote="the app is on fire", found=False)  # type: ignore[attr-defined]
    assert out.model_dump()["evidence"]["category"]["found"] is False
    assert evidence_of(out) is out.evidence  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="no evidence: extract it with evidence=True"):
        evidence_of(Ticket(category="bug"))


def test_source_text_is_the_user_messages() -> None:
    messages = [
        {"role": "system", "content": "Triage."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
    ]
    assert source_text(messages) == "one\ntwo"


# ---------------------------------------------------------------- the evaluation's rates


def test_evidence_rates_count_found_over_answered_and_quoted_rows() -> None:
    def row(found: bool | None) -> dict[str, Any]:
        quote = None if found is None else "q"
        return {"category": "bug", "evidence": {"category": {"quote": quote, "found": bool(found)}}}

    rates = evidence_rates(
        {"1": row(True), "2": row(False), "3": row(None), "4": row(True), "5": None}
    )
    assert rates is not None
    r = rates["category"]
    assert (r.rows, r.quoted, r.found) == (4, 3, 2)
    assert r.found_rate == 0.5 and r.quote_found_rate == pytest.approx(2 / 3)
    assert evidence_rates({"1": {"category": "bug"}, "2": None}) is None
    run = EvaluatedRun("demo", Evaluation(rows=5, fields={}), evidence=rates)
    assert run.to_dict()["evidence"]["category"]["found"] == 2
    assert "evidence found" in format_runs([run]) and "0.500" in format_runs([run])


# ---------------------------------------------------------------- the client, end to end


class User(BaseModel):
    name: str
    age: int


TEXTS = [f"Ticket {i}: Q{chr(97 + i)}son wrote that he is {20 + i} years old." for i in range(6)]


def _client(emu: Emulator, **kw: Any) -> Any:
    return dbstruct.from_provider("databricks/llm", base_url=emu.base_url, api_key=emu.token, **kw)


def _assert_quotes_from(value: Any, text: str) -> None:
    for name in type(value).model_fields:
        if name == "evidence":
            continue
        got = value.evidence[name]
        assert got.quote is not None and got.found, (name, got, text)
        assert text[got.start : got.end] == got.quote  # the emulator copies exactly


def test_create_with_evidence_locates_every_quote_in_the_text(emu: Emulator) -> None:
    client = _client(emu)
    messages = [{"role": "system", "content": "Extract."}, {"role": "user", "content": TEXTS[0]}]
    user = client.create(User, messages, evidence=True)
    assert isinstance(user, User) and user.age == 20
    _assert_quotes_from(user, TEXTS[0])
    plain = client.create(User, messages)  # no evidence asked: none sent, none returned
    assert type(plain) is User and "evidence" not in plain.model_dump()
    bodies = emu.requests[-2:]
    assert "evidence" in str(bodies[0]["tools"]) and "evidence" not in str(bodies[1]["tools"])


def test_a_misquoting_answer_is_flagged_not_found(emu: Emulator) -> None:
    text = f"{TEXTS[1]} [[fault:misquote]]"
    user = _client(emu).create(User, [{"role": "user", "content": text}], evidence=True)
    for name in ("name", "age"):
        got = user.evidence[name]  # type: ignore[attr-defined]
        assert got.quote and not got.found and got.start is None, got
        assert locate(got.quote, text) is None


@pytest.mark.parametrize("mode", [Mode.TOOLS, Mode.JSON, Mode.MD_JSON])
def test_packed_rows_each_quote_their_own_text(emu: Emulator, mode: Mode) -> None:
    texts = [*TEXTS, f"{TEXTS[0]} again [[pack:misquote]]"]
    outcomes = _client(emu, mode=mode).extract_many(
        User, texts, instructions="Extract.", rows_per_request=4, evidence=True
    )
    assert [o.error for o in outcomes] == [None] * len(texts)
    for text, outcome in zip(texts[:-1], outcomes, strict=False):
        _assert_quotes_from(outcome.value, text)
    last = outcomes[-1].value.evidence
    assert not last["name"].found and not last["age"].found
    packed = [body for body in emu.requests if "<item id=" in str(body["messages"])]
    assert packed, "the rows were not packed"


def test_async_create_with_evidence(emu: Emulator) -> None:
    async def main() -> Any:
        client = _client(emu, async_client=True)
        async with client:
            messages = [{"role": "user", "content": TEXTS[2]}]
            return await client.create(User, messages, evidence=True)

    _assert_quotes_from(asyncio.run(main()), TEXTS[2])


def test_evidence_keyword_errors_are_clear(emu: Emulator) -> None:
    client = _client(emu)
    messages = [{"role": "user", "content": TEXTS[0]}]
    with pytest.raises(ConfigurationError, match="evidence must be True or False"):
        client.create(User, messages, evidence="yes")
    with pytest.raises(ConfigurationError, match="did you mean 'evidence'"):
        client.create(User, messages, evidenc=True)
    parallel = _client(emu, mode=Mode.PARALLEL_TOOLS)
    with pytest.raises(ConfigurationError, match="one response model"):
        parallel.create(User, messages, evidence=True)

"""Completion-token estimates from the schema, against the serving emulator's synthesised
TicketTriage answers for the bundled tickets (one row a request, and packed)."""

from __future__ import annotations

import statistics
from typing import Annotated, Any, Literal

import openai
import pytest
from pydantic import BaseModel, Field

from dbstruct import token_count
from dbstruct._answer_length import WORD_CHARS, Sizer
from dbstruct._packing import PackRow, echo_words, pack_messages, pack_schema
from dbstruct.answer_size import (
    AnswerAssumptions,
    estimate_answer,
    estimate_packed_answer,
    max_tokens_from_answers,
    suggested_max_tokens,
)
from dbstruct.examples import TRIAGE_PROMPT, TicketTriage
from dbstruct.jobs._sample import sample_rows
from dbstruct.json_schema import compile_schema
from dbstruct.modes import Mode, ResponseTarget, build_schema_request, chat_request
from dbstruct.token_count import ESTIMATE, token_counter

LLAMA = "databricks-meta-llama-3-3-70b-instruct"
TICKETS = sample_rows("tickets")[:300]
ESTIMATED = token_counter(LLAMA, ESTIMATE)
#: the emulator's own rules (dbstruct/testing/_synth.py): a nullable value is null a quarter
#: of the time, an optional property present three quarters, a string 1 to 4 words of the text
EMULATOR_LIKE = AnswerAssumptions(
    null_share=0.25, optional_share=0.75, string_words=2.5, sentence_words=2.5
)


def completion_tokens(client: openai.OpenAI, body: dict[str, Any]) -> int:
    sent = {k: v for k, v in body.items() if k != "model"}
    answer = client.chat.completions.create(model=LLAMA, **sent)
    assert answer.usage is not None and answer.choices[0].finish_reason != "length"
    return answer.usage.completion_tokens


@pytest.mark.parametrize("mode", [Mode.TOOLS, Mode.JSON, Mode.MD_JSON])
def test_the_estimate_against_the_emulators_answers(client: openai.OpenAI, mode: Mode) -> None:
    measured = [
        completion_tokens(
            client,
            chat_request(
                mode,
                ResponseTarget.of(TicketTriage),
                [{"role": "user", "content": TRIAGE_PROMPT.format(**t)}],
                {},
                LLAMA,
            ),
        )
        for t in TICKETS
    ]
    mean = statistics.mean(measured)
    # With the emulator's own rules the estimate is within 10% of its mean answer.
    assert estimate_answer(TicketTriage, mode, ESTIMATED, EMULATOR_LIKE).tokens == pytest.approx(
        mean, rel=0.10
    )
    # The defaults describe a model that writes the summary as a sentence (20 words), where
    # the emulator writes 1 to 4 words: measured 1.5 times the emulator's mean.
    default = estimate_answer(TicketTriage, mode, ESTIMATED).tokens
    assert 1.3 * mean < default < 1.8 * mean
    assert max(measured) <= suggested_max_tokens(TicketTriage, mode, ESTIMATED)


@pytest.mark.parametrize("mode", [Mode.TOOLS, Mode.JSON])
def test_the_packed_estimate_against_the_emulators_packed_answers(
    client: openai.OpenAI, mode: Mode
) -> None:
    schema = pack_schema(TicketTriage, mode)
    lead = "Triage each support ticket.\n\n"
    measured, estimated = 0, 0.0
    for start in range(0, 96, 8):
        rows = [
            PackRow((), lead, f"Subject: {t['subject']}\n\n{t['body']}")
            for t in TICKETS[start : start + 8]
        ]
        echo = echo_words(rows)
        assert echo is not None
        messages = pack_messages(schema, rows, echo)
        body = {**build_schema_request(mode, schema.for_count(8), messages), "model": LLAMA}
        measured += completion_tokens(client, body)
        packed = estimate_packed_answer(
            TicketTriage, mode, 8, ESTIMATED, echo_words=echo, assumptions=EMULATOR_LIKE
        )
        estimated += packed.tokens
        assert packed.per_row == pytest.approx(packed.tokens / 8)
    assert estimated == pytest.approx(measured, rel=0.10)


def test_a_packed_entry_costs_its_row_plus_the_id_and_quote() -> None:
    one = estimate_answer(TicketTriage, Mode.TOOLS, ESTIMATED)
    eight = estimate_packed_answer(TicketTriage, Mode.TOOLS, 8, ESTIMATED, echo_words=4)
    sixteen = estimate_packed_answer(TicketTriage, Mode.TOOLS, 16, ESTIMATED, echo_words=4)
    per_entry = (sixteen.tokens - eight.tokens) / 8
    # '"id": 12, "first_words": "four words of text", ' is about 45 characters
    assert per_entry - one.tokens == pytest.approx(45 / 4, abs=2)


def test_max_tokens_from_a_pilot() -> None:
    assert max_tokens_from_answers([70, 91, 88]) == 192  # 91 x 1.5 = 136.5 -> 192
    assert max_tokens_from_answers([10]) == 64
    assert max_tokens_from_answers(iter([128])) == 192
    with pytest.raises(ValueError, match="no completion token counts"):
        max_tokens_from_answers([])


class Note(BaseModel):
    """A note."""

    title: str = Field(description="A short phrase")
    body: str = Field(description="Two sentences")
    due: str = Field(description="date, YYYY-MM-DD")
    tags: list[Annotated[str, Field(description="one word")]] = Field(min_length=3, max_length=3)
    mood: Literal["ok", "great"]
    stars: int = Field(ge=1, le=5)
    code: str = Field(max_length=12)
    owner_name: str
    remark: str | None = None


def test_the_rules_field_by_field() -> None:
    props = compile_schema(Note).parameters["properties"]
    typical = Sizer(AnswerAssumptions(), upper=False)
    upper = Sizer(AnswerAssumptions(), upper=True)
    word = WORD_CHARS  # characters of a word with its space
    assert word == pytest.approx(5.7, abs=0.05)

    assert typical.chars(props["title"], "title") == pytest.approx(2 + 4 * word - 1)
    assert typical.chars(props["body"], "body") == pytest.approx(2 + 40 * word - 1)
    assert typical.chars(props["due"], "due") == upper.chars(props["due"], "due") == 12
    tags = typical.chars(props["tags"], "tags")  # 3 one-word strings, ", " between
    assert tags == pytest.approx(2 + 3 * (2 + word - 1) + 2 * 2)
    assert typical.chars(props["mood"], "mood") == 5.5  # "ok" and "great": 4 and 7
    assert upper.chars(props["mood"], "mood") == 7
    assert typical.chars(props["stars"], "stars") == 1  # 1 <= value <= 5
    assert upper.chars(props["code"], "code") == 14  # at most 12 characters, quoted
    assert typical.chars(props["owner_name"], "owner_name") == pytest.approx(2 + 2 * word - 1)

    nulls = Sizer(AnswerAssumptions(null_share=1.0), upper=False)
    assert nulls.chars(props["remark"], "remark") == 4  # null
    absent = Sizer(AnswerAssumptions(optional_share=0.0), upper=False)
    whole = compile_schema(Note).parameters
    remark = len('"remark": ') + typical.chars(props["remark"], "remark") + 2
    assert typical.chars(whole, "") - absent.chars(whole, "") == pytest.approx(remark)


def test_the_upper_bound_and_suggested_max_tokens() -> None:
    estimate = estimate_answer(Note, Mode.JSON, ESTIMATED)
    assert estimate.upper > estimate.tokens
    suggested = suggested_max_tokens(Note, Mode.JSON, ESTIMATED)
    assert suggested % 64 == 0 and suggested >= estimate.upper * 1.25
    packed = suggested_max_tokens(Note, Mode.JSON, ESTIMATED, rows_per_request=8)
    entry = estimate_packed_answer(Note, Mode.JSON, 1, ESTIMATED).upper
    assert packed % 64 == 0 and packed >= entry * 1.25
    assert packed >= suggested  # a packed entry carries its id and quote too


@pytest.mark.skipif(
    "llama3" not in token_count.installed_tokenizers(), reason="quicktok-v1 is not installed"
)
def test_llama_answers_carry_the_tool_call_wrapper_and_an_end_token() -> None:
    llama = token_counter(LLAMA)
    tools = estimate_answer(TicketTriage, Mode.TOOLS, llama)
    content = estimate_answer(TicketTriage, Mode.JSON, llama)
    wrapper = llama.text('{"name": "TicketTriage", "parameters": ') + llama.text("}")
    assert tools.tokens - content.tokens == pytest.approx(wrapper)
    assert tools.example.startswith('{"name": "TicketTriage", "parameters": {"category": ')
    plain = estimate_answer(TicketTriage, Mode.JSON, ESTIMATED)
    assert content.example == plain.example  # the same typical answer, counted differently

"""Several rows per request: the pack's format, its answer read by id, and the client's
``extract_many`` against the emulator, faults included (:mod:`dbstruct._packing`,
:mod:`dbstruct._many`)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, Field, create_model

import dbstruct
from dbstruct import Mode
from dbstruct._many import PackCollector
from dbstruct._packing import PackRow, echo_words, pack_schema, plan_packs, read_pack, share
from dbstruct.cache import DiskCache
from dbstruct.errors import ConfigurationError, RowsFailedError, SchemaError
from dbstruct.testing import Emulator


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str
    age: int = Field(description="Age in years")


def texts(n: int, start: int = 0) -> list[str]:
    # one number per text, unique: the emulator puts a number of the text into an integer
    # field, so a row's `age` says which row's text the answer was made from
    return [
        f"{_WORDS[i % len(_WORDS)]} person here is {20 + i} years old"
        for i in range(start, start + n)
    ]


_WORDS = ["Ada", "Bob", "Carol", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu"]


def ages(outcomes: list[Any]) -> list[int | None]:
    return [None if o.value is None else o.value.age for o in outcomes]


def expected(rows: list[str]) -> list[int]:
    return [int(re.search(r"\d+", t).group()) for t in rows]  # type: ignore[union-attr]


@pytest.fixture
def llm(emu: Emulator) -> dbstruct.StructuredClient:
    return dbstruct.from_provider(
        "databricks/databricks-meta-llama-3-3-70b-instruct",
        base_url=emu.base_url,
        api_key=emu.token,
        max_retries=3,
    )


# ---------------------------------------------------------------- the format


def test_schema_wraps_the_model_and_states_the_count() -> None:
    schema = pack_schema(Person, Mode.TOOLS)
    listed = schema.for_count(5).parameters["properties"]["items"]
    assert (listed["minItems"], listed["maxItems"]) == (5, 5)
    assert list(listed["items"]["properties"]) == ["id", "first_words", "name", "age"]
    assert listed["items"]["required"] == ["id", "first_words", "name", "age"]
    assert schema.key_count == 5  # name, age + items, id, first_words


def test_schema_picks_free_names_when_the_model_has_an_id() -> None:
    Row = create_model("Row", id=(str, ...), first_words=(str, ...))
    schema = pack_schema(Row, Mode.JSON)
    assert (schema.id_key, schema.echo_key) == ("item_id", "item_first_words")


def test_schema_over_the_tool_key_limit_is_refused_naming_the_counts() -> None:
    Wide = create_model("Wide", **{f"f{i}": (str, ...) for i in range(14)})  # type: ignore[call-overload]
    with pytest.raises(SchemaError, match=r"Wide has 14 keys.*17, over the 16.*Mode.JSON"):
        pack_schema(Wide, Mode.TOOLS)
    assert pack_schema(Wide, Mode.JSON).key_count == 17  # a response format takes 64
    with pytest.raises(ConfigurationError, match="PARALLEL_TOOLS"):
        pack_schema(Person, Mode.PARALLEL_TOOLS)


def test_plan_keeps_apart_rows_the_first_words_cannot_tell_apart() -> None:
    same = "Refund request for my order please, I was charged twice this month for the plan"
    rows = [
        PackRow((), "", same + " A"),
        PackRow((), "", same + " B"),  # alike for 12 words: never in the same pack
        PackRow((), "", "Other text"),
        PackRow((), "", "!!!"),  # no words to quote: alone
        PackRow((), "", "has <item id=2> inside"),  # would break the item tags: alone
        PackRow((("system", "x"),), "", "Other text 2"),  # other shared messages
    ]
    packs = plan_packs(rows, 8)
    assert [0, 2] in packs and [1] in packs and [3] in packs and [4] in packs and [5] in packs
    assert echo_words([rows[0], rows[2]]) == 2
    assert echo_words([rows[0], rows[1]]) is None
    assert plan_packs(rows[:3], 1) == [[0], [1], [2]]


def test_plan_cuts_by_count() -> None:
    rows = [PackRow((), "", t) for t in texts(20)]
    assert [len(p) for p in plan_packs(rows, 8)] == [8, 8, 4]


@pytest.mark.parametrize(
    ("total", "weights"), [(10, [1, 1, 1]), (7, [0, 0]), (1001, [3.2, 0.1, 9, 4]), (0, [1, 2])]
)
def test_share_sums_exactly(total: int, weights: list[float]) -> None:
    parts = share(total, weights)
    assert sum(parts) == total and len(parts) == len(weights) and min(parts) >= 0


def _completion(arguments: Any, name: str = "PersonItems") -> Any:
    call = SimpleNamespace(function=SimpleNamespace(name=name, arguments=json.dumps(arguments)))
    message = SimpleNamespace(content=None, tool_calls=[call], refusal=None, function_call=None)
    return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason="tool_calls")])


def test_answers_are_matched_by_id_and_each_entry_fails_alone() -> None:
    rows = [PackRow((), "", t) for t in texts(6)]
    schema = pack_schema(Person, Mode.TOOLS)

    def entry(i: int, **over: Any) -> dict[str, Any]:
        return {"id": i, "first_words": rows[i - 1].text, "name": "x", "age": 20 + i - 1, **over}

    answer = {
        "items": [
            entry(2),
            entry(1),
            entry(3),
            entry(3, age=1),  # id 3 twice
            {**entry(4), "first_words": rows[4].text},  # 4 quotes row 5's text: filed wrongly
            entry(6, age="old"),  # invalid
            {**entry(1), "id": 9},  # unknown id
        ]
    }  # 5 missing
    result = read_pack(Mode.TOOLS, schema, rows, 2, _completion(answer)).results
    assert [r.age for r in result[:2]] == [20, 21]  # type: ignore[union-attr]
    assert "2 entries" in str(result[2])
    assert "not how this item starts" in str(result[3])
    assert "no entry" in str(result[4])
    assert "item 6 of 6" in str(result[5]) and "age" in str(result[5])


# ---------------------------------------------------------------- extract_many


@pytest.mark.parametrize(
    ("mode", "endpoint"),
    [
        (Mode.TOOLS, "databricks-meta-llama-3-3-70b-instruct"),
        (Mode.JSON, "databricks-meta-llama-3-3-70b-instruct"),
        (Mode.MD_JSON, "databricks-meta-llama-3-3-70b-instruct"),
        (Mode.FUNCTIONS, "databricks-meta-llama-3-3-70b-instruct"),
        (Mode.JSON_O1, "databricks-meta-llama-3-3-70b-instruct"),
        (Mode.TOOLS_STRICT, "databricks-gpt-5"),
    ],
)
def test_every_row_gets_its_own_answer_in_every_mode(
    emu: Emulator, mode: Mode, endpoint: str
) -> None:
    client = dbstruct.from_provider(
        f"databricks/{endpoint}", base_url=emu.base_url, api_key=emu.token, mode=mode
    )
    rows = texts(20)
    outcomes = client.extract_many(Person, rows, instructions="Extract.", rows_per_request=8)
    assert ages(outcomes) == expected(rows)
    stats = emu.stats()
    assert stats.requests == 3 and stats.packed_requests == 3 and stats.packed_items == 20
    assert [o.attempts for o in outcomes] == [1] * 20
    # the rows' tokens add up to what the endpoint counted
    assert sum(o.usage.prompt_tokens for o in outcomes) == stats.prompt_tokens
    assert sum(o.usage.completion_tokens for o in outcomes) == stats.completion_tokens


@pytest.mark.parametrize(
    ("kind", "affected"),
    [
        ("drop", [3]),
        ("duplicate", [3]),
        ("unknown_id", [3]),
        ("swap", [3, 4]),  # the marked row and its neighbour in the list
        ("invalid_item", [3]),
    ],
)
def test_a_packing_fault_resends_exactly_the_affected_rows(
    llm: dbstruct.StructuredClient, emu: Emulator, kind: str, affected: list[int]
) -> None:
    rows = texts(8)
    rows[3] += f" [[pack:{kind}]]"
    outcomes = llm.extract_many(Person, rows, rows_per_request=8)
    assert ages(outcomes) == expected(rows)  # every row valued, each with its own answer
    resent = [i for i, o in enumerate(outcomes) if o.attempts == 2]
    if kind == "swap":  # its neighbour is whichever entry the emulator swapped with
        assert 3 in resent and len(resent) == 2
    else:
        assert resent == affected
    assert emu.stats().requests == 1 + len(resent)
    assert sum(o.usage.prompt_tokens for o in outcomes) == emu.stats().prompt_tokens


def test_a_truncated_list_resends_the_rows_it_cut(
    llm: dbstruct.StructuredClient, emu: Emulator
) -> None:
    rows = texts(8)
    rows[7] += " [[pack:truncate]]"
    outcomes = llm.extract_many(Person, rows, rows_per_request=8)
    assert ages(outcomes) == expected(rows)
    resent = sum(o.attempts == 2 for o in outcomes)
    assert resent == 4 and emu.stats().requests == 5


def test_an_endpoint_that_answers_one_item_per_pack_loses_no_row_and_k_shrinks(
    llm: dbstruct.StructuredClient, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.configure(pack_faults={"single": 1.0})
    rows = texts(48)
    with caplog.at_level(logging.WARNING, logger="dbstruct.packing"):
        first = llm.extract_many(Person, rows[:32], rows_per_request=8)
        second = llm.extract_many(Person, rows[32:], rows_per_request=8)
    assert ages(first + second) == expected(rows)
    assert "sending at most 4 row(s) per request" in caplog.text
    assert llm.packing.limit("databricks-meta-llama-3-3-70b-instruct", 8) < 8


def test_with_no_retries_left_a_dropped_row_fails_alone(
    llm: dbstruct.StructuredClient, emu: Emulator
) -> None:
    rows = texts(5)
    rows[1] += " [[pack:drop]]"
    outcomes = llm.extract_many(Person, rows, rows_per_request=8, max_retries=0)
    assert [o.error is None for o in outcomes] == [True, False, True, True, True]
    assert "no entry for this item" in str(outcomes[1].error)
    with pytest.raises(RowsFailedError, match=r"1 of 5 rows failed: row 1") as raised:
        llm.create_many(Person, rows, rows_per_request=8, max_retries=0)
    assert len(raised.value.outcomes) == 5


def test_a_rate_limited_pack_is_retried_whole(
    llm: dbstruct.StructuredClient, emu: Emulator
) -> None:
    emu.start_from(token=emu.token, retry_after=0.01)
    rows = texts(6)
    rows[2] += " [[fault:429x1]]"
    outcomes = llm.extract_many(Person, rows, rows_per_request=8)
    assert ages(outcomes) == expected(rows)
    assert [o.attempts for o in outcomes] == [2] * 6
    assert emu.stats().by_status == {429: 1, 200: 1}


def test_identical_texts_are_sent_once(llm: dbstruct.StructuredClient, emu: Emulator) -> None:
    rows = texts(3) * 3
    outcomes = llm.extract_many(Person, rows, rows_per_request=8)
    assert ages(outcomes) == expected(rows)
    assert emu.stats().packed_items == 3
    assert sum(o.usage.prompt_tokens for o in outcomes) == emu.stats().prompt_tokens


def test_a_pack_over_the_context_window_is_halved(emu: Emulator) -> None:
    client = dbstruct.from_provider(
        "databricks/any", base_url=emu.base_url, api_key=emu.token, max_context_tokens=250
    )
    rows = texts(8)
    outcomes = client.extract_many(Person, rows, rows_per_request=8)
    assert ages(outcomes) == expected(rows)
    assert 1 < emu.stats().requests < 8


def test_max_tokens_counts_per_row(llm: dbstruct.StructuredClient, emu: Emulator) -> None:
    llm.extract_many(Person, texts(4), rows_per_request=8, max_tokens=100)
    assert emu.requests[-1]["max_tokens"] == 400


def test_packed_and_unpacked_runs_share_cache_entries(emu: Emulator, tmp_path: Any) -> None:
    cache = DiskCache(tmp_path)
    client = dbstruct.from_provider(
        "databricks/any", base_url=emu.base_url, api_key=emu.token, cache=cache
    )
    rows = texts(10)
    packed = client.extract_many(Person, rows, instructions="Extract.", rows_per_request=4)
    requests = emu.stats().requests
    alone = [
        client.extract(
            Person, [{"role": "system", "content": "Extract."}, {"role": "user", "content": t}]
        )
        for t in rows
    ]
    assert emu.stats().requests == requests  # every row a hit
    assert [o.attempts for o in alone] == [0] * 10
    assert ages(alone) == ages(packed) == expected(rows)
    again = client.extract_many(Person, rows, instructions="Extract.", rows_per_request=8)
    assert emu.stats().requests == requests and ages(again) == expected(rows)


def test_async_extract_many_runs_packs_at_once(emu: Emulator) -> None:
    emu.configure(latency=0.2)
    rows = texts(32)

    async def run() -> list[Any]:
        client = dbstruct.from_provider(
            "databricks/any", base_url=emu.base_url, api_key=emu.token, async_client=True
        )
        async with client:
            return await client.create_many(Person, rows, rows_per_request=8, concurrency=4)

    people = asyncio.run(run())
    assert [p.age for p in people] == expected(rows)
    assert emu.stats().max_in_flight == 4


def _items(body: dict[str, Any]) -> int:
    return len(re.findall(r"<item id=\"\d+\">", body["messages"][-1]["content"])) or 1


def test_the_collector_gathers_rows_while_every_slot_is_busy(emu: Emulator) -> None:
    # a Spark worker hands rows over as earlier rows end; rows that arrive one at a time
    # while the only slot is busy must share the next pack, not each take a request
    emu.configure(latency=0.3)
    rows = [PackRow((), "Extract.", t) for t in texts(8)]

    async def run() -> list[Any]:
        client = dbstruct.from_provider(
            "databricks/any", base_url=emu.base_url, api_key=emu.token, async_client=True
        )
        async with client:
            collector = PackCollector(client, Person, k=4, concurrency=1)
            first = [asyncio.ensure_future(collector.extract(r)) for r in rows[:4]]
            later = []
            for row in rows[4:7]:  # one at a time, while the first pack is in flight
                await asyncio.sleep(0.02)
                later.append(asyncio.ensure_future(collector.extract(row)))
            done = await asyncio.gather(*first, *later)
            # a lone row with the slot free waits for nothing
            done.append(await asyncio.wait_for(collector.extract(rows[7]), 2.0))
            return done

    outcomes = asyncio.run(run())
    assert ages(outcomes) == expected([r.text for r in rows])
    assert [_items(b) for b in emu.requests] == [4, 3, 1]


def test_bad_arguments_are_refused_before_sending(
    llm: dbstruct.StructuredClient, emu: Emulator
) -> None:
    with pytest.raises(ConfigurationError, match="rows_per_request must be an int from 1 to 64"):
        llm.extract_many(Person, ["a"], rows_per_request=0)
    with pytest.raises(ConfigurationError, match=r"texts\[1\] is int"):
        llm.extract_many(Person, ["a", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="not one string"):
        llm.extract_many(Person, "a text")
    with pytest.raises(ConfigurationError, match="temperature"):
        llm.extract_many(Person, ["a"], temprature=0)
    assert emu.stats().requests == 0

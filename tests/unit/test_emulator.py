"""The serving emulator's answers: shapes, values, determinism, scripts, stats.

Driven through the real openai SDK (and raw httpx where the SDK hides the wire).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from dbstruct.testing import Emulator, Fault, Reply

# One client for the whole module: a new httpx client per call costs an SSL context (~20 ms).
HTTP = httpx.Client(timeout=10, trust_env=False)
jsonschema = pytest.importorskip("jsonschema")

USER: Any = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ROW: Any = [{"role": "user", "content": "John Smith is 42 years old."}]


def tool(name: str, schema: dict[str, Any] = USER, **extra: Any) -> Any:
    return {"type": "function", "function": {"name": name, "parameters": schema, **extra}}


def check(value: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())


def post(emu: Emulator, body: dict[str, Any], endpoint: str = "m") -> httpx.Response:
    headers = {"Authorization": f"Bearer {emu.token}"}
    return HTTP.post(f"{emu.base_url}/{endpoint}/invocations", json=body, headers=headers)


# ---------------------------------------------------------------- shapes


def test_forced_tool_answers_one_call_with_values_from_the_text(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="databricks-meta-llama-3-3-70b-instruct",
        messages=ROW,
        tools=[tool("User"), tool("Other")],
        tool_choice={"type": "function", "function": {"name": "User"}},
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "User"
    args = json.loads(call.function.arguments)
    check(args, USER)
    assert args["age"] == 42 and args["name"] in ("John", "Smith")
    # the served model's dated id, not the endpoint name (dbstruct.testing._catalog)
    assert out.model == "meta-llama-3.3-70b-instruct-121024"
    assert out.usage is not None and out.usage.total_tokens == (
        out.usage.prompt_tokens + out.usage.completion_tokens
    )


def test_required_tool_choice_calls_every_tool_unless_parallel_calls_are_off(
    client: openai.OpenAI,
) -> None:
    pet: Any = {"type": "object", "properties": {"species": {"enum": ["cat", "dog"]}}}
    tools = [tool("User"), tool("Pet", pet)]
    out = client.chat.completions.create(
        model="m", messages=ROW, tools=tools, tool_choice="required"
    )
    calls: Any = out.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["User", "Pet"]
    assert len({c.id for c in calls}) == 2
    check(json.loads(calls[1].function.arguments), pet)
    one = client.chat.completions.create(
        model="m", messages=ROW, tools=tools, tool_choice="auto", parallel_tool_calls=False
    )
    single: Any = one.choices[0].message.tool_calls or []
    assert [c.function.name for c in single] == ["User"]


def test_legacy_functions_answer_a_function_call(emu: Emulator) -> None:
    body = {
        "messages": ROW,
        "functions": [{"name": "User", "parameters": USER}],
        "function_call": {"name": "User"},
    }
    answer = post(emu, body).json()["choices"][0]
    assert answer["finish_reason"] == "function_call"
    assert answer["message"]["function_call"]["name"] == "User"
    check(json.loads(answer["message"]["function_call"]["arguments"]), USER)


def test_response_format_json_schema_answers_json_content(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "User", "schema": USER}}
    out = client.chat.completions.create(model="m", messages=ROW, response_format=fmt)
    assert out.choices[0].finish_reason == "stop"
    check(json.loads(out.choices[0].message.content or ""), USER)


def test_json_object_format_uses_the_schema_written_in_the_prompt(client: openai.OpenAI) -> None:
    system: Any = {"role": "system", "content": f"Reply with JSON matching {json.dumps(USER)}."}
    out = client.chat.completions.create(
        model="m", messages=[system, *ROW], response_format={"type": "json_object"}
    )
    check(json.loads(out.choices[0].message.content or ""), USER)


def test_md_json_prompt_gets_a_fenced_block(client: openai.OpenAI) -> None:
    system: Any = {
        "role": "system",
        "content": f"Match this JSON schema:\n{json.dumps(USER)}\nAnswer in a ```json code block.",
    }
    out = client.chat.completions.create(model="m", messages=[system, *ROW])
    content = out.choices[0].message.content or ""
    assert content.startswith("```json\n") and content.endswith("\n```")
    check(json.loads(content[len("```json\n") : -len("\n```")]), USER)


def test_schema_in_the_user_turn_without_fence_gets_plain_json(client: openai.OpenAI) -> None:
    # JSON_O1 style: system folded into the user turn, no response_format
    text = f"Extract a user as JSON matching {json.dumps(USER)}\n\nAda Lovelace, aged 36."
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
    value = json.loads(out.choices[0].message.content or "")
    check(value, USER)
    assert value["age"] == 36 and value["name"] in ("Ada", "Lovelace")


def test_no_format_answers_a_sentence(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="m", messages=ROW)
    content = out.choices[0].message.content or ""
    assert "john" in content and not content.startswith("{")


def test_invocations_need_no_model_and_gpt_oss_answers_content_blocks(emu: Emulator) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "User", "schema": USER}}
    answer = post(emu, {"messages": ROW, "response_format": fmt}, "databricks-gpt-oss-120b")
    content = answer.json()["choices"][0]["message"]["content"]
    assert [b["type"] for b in content] == ["reasoning", "text"]
    check(json.loads(content[1]["text"]), USER)


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "User", "schema": USER}}
    out = client.chat.completions.create(model="m", messages=ROW, response_format=fmt, max_tokens=2)
    assert out.choices[0].finish_reason == "length"
    assert len(out.choices[0].message.content or "") == 8
    assert out.usage is not None and out.usage.completion_tokens == 2


def test_n_gives_that_many_choices(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="m", messages=ROW, n=2)
    assert [c.index for c in out.choices] == [0, 1]


def test_streaming_carries_the_same_answer(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "User", "schema": USER}}
    whole = client.chat.completions.create(model="m", messages=ROW, response_format=fmt)
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=ROW,
            response_format=fmt,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None


# ---------------------------------------------------------------- values


def test_same_request_same_answer_and_other_text_other_answer(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"}, "n": {"type": "integer"}},
        "required": ["id", "n"],
    }
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "T", "schema": schema}}

    def ask(text: str, temperature: float) -> str:
        messages: Any = [{"role": "user", "content": text}]
        out = client.chat.completions.create(
            model="m", messages=messages, response_format=fmt, temperature=temperature
        )
        return out.choices[0].message.content or ""

    first = ask("row one", 0.0)
    assert ask("row one", 0.7) == first  # sampling parameters do not change the content key
    assert ask("row two", 0.0) != first


SCHEMAS: list[dict[str, Any]] = [
    {  # enums, nullable, bounds, formats, pattern, nested objects and arrays
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "email": {"type": ["string", "null"], "format": "email"},
            "placed_on": {"type": "string", "format": "date"},
            "shipped_at": {"type": "string", "format": "date-time"},
            "order_id": {"type": "string", "description": "The order's UUID"},
            "sku": {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"},
            "summary": {"type": "string", "maxLength": 12, "minLength": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "even": {"type": "integer", "multipleOf": 2, "minimum": 3, "maximum": 9},
        },
        "required": ["sentiment", "stars", "score", "email", "placed_on", "sku", "tags"],
    },
    {  # what pydantic writes for Optional, $defs and unions (schema-in-text only)
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"q": {"type": "integer", "exclusiveMinimum": 0}},
                "required": ["q"],
            }
        },
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "uniqueItems": True},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "kind": {"const": "order"},
            "both": {"allOf": [{"$ref": "#/$defs/Item"}]},
        },
        "required": ["items", "note", "kind", "both"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["subset", "pydantic-style"])
def test_synthesised_values_are_always_valid(client: openai.OpenAI, schema: Any) -> None:
    system: Any = {"role": "system", "content": f"Answer as JSON matching {json.dumps(schema)}"}
    for i in range(25):
        row: Any = {"role": "user", "content": f"Review {i}: Berlin order, 3 items, 17.5 EUR."}
        out = client.chat.completions.create(model="m", messages=[system, row])
        check(json.loads(out.choices[0].message.content or ""), schema)


# ---------------------------------------------------------------- scripts


def test_scripted_values_text_replies_and_faults_in_order(
    emu: Emulator, client: openai.OpenAI
) -> None:
    emu.script(
        [
            {"name": "Ada", "age": 36},
            "not json at all",
            Reply(tool_calls=[("User", {"name": "Bo", "age": 1}), ("User", "{}")]),
            Fault("503"),
        ]
    )
    tools: Any = [tool("User")]
    forced: Any = {"type": "function", "function": {"name": "User"}}

    def call() -> Any:
        return client.chat.completions.create(
            model="m", messages=ROW, tools=tools, tool_choice=forced
        )

    assert json.loads(call().choices[0].message.tool_calls[0].function.arguments) == {
        "name": "Ada",
        "age": 36,
    }
    assert call().choices[0].message.tool_calls[0].function.arguments == "not json at all"
    calls = call().choices[0].message.tool_calls
    assert [c.function.arguments for c in calls] == ['{"name": "Bo", "age": 1}', "{}"]
    with pytest.raises(openai.InternalServerError) as info:
        call()
    assert info.value.status_code == 503
    check(json.loads(call().choices[0].message.tool_calls[0].function.arguments), USER)


def test_endpoint_scripts_come_before_shared_ones(emu: Emulator, client: openai.OpenAI) -> None:
    emu.script(["shared"])
    emu.script(["mine"], endpoint="a")
    contents = [
        client.chat.completions.create(model=name, messages=ROW).choices[0].message.content
        for name in ("b", "a", "a")
    ]
    assert contents[:2] == ["shared", "mine"]
    assert contents[2] != "mine"


def test_bad_script_items_and_settings_are_refused(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("418")
    with pytest.raises(ValueError, match="unknown emulator settings"):
        emu.configure(nonsense=1)
    with pytest.raises(ValueError, match="sum to at most 1"):
        emu.configure(faults={"500": 0.8, "429": 0.5})


# ---------------------------------------------------------------- stats


def test_stats_requests_and_reset(emu: Emulator, client: openai.OpenAI) -> None:
    emu.configure(keep_requests=2, endpoints=["a"])
    for text in ("one", "two", "three"):
        client.chat.completions.create(model="a", messages=[{"role": "user", "content": text}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="zzz", messages=ROW)
    stats = emu.stats()
    assert stats.requests == 4 and stats.status(200) == 3 and stats.status(404) == 1
    assert stats.by_endpoint == {"a": 3}
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0
    assert [r["messages"][0]["content"] for r in emu.requests] == ["three", ROW[0]["content"]]
    assert emu.records[-1]["endpoint"] == "zzz" and emu.records[-1]["status"] == 404
    emu.reset()
    assert emu.stats().requests == 0 and emu.requests == []
    assert emu.config().endpoints is None  # the starting settings are back
    client.chat.completions.create(model="zzz", messages=ROW)


def test_max_in_flight_counts_concurrent_requests(emu: Emulator) -> None:
    emu.configure(latency=0.2)

    async def burst() -> None:
        async with emu.async_openai_client() as client:
            await asyncio.gather(
                *(client.chat.completions.create(model="m", messages=ROW) for _ in range(20))
            )

    start = time.perf_counter()
    asyncio.run(burst())
    assert time.perf_counter() - start < 1.5  # served concurrently, not one by one
    stats = emu.stats()
    assert stats.max_in_flight >= 10 and stats.in_flight == 0 and stats.status(200) == 20

"""The emulator held against the clients people point at Databricks: the openai SDK (streaming
included) and databricks-sdk (``serving_endpoints.query/list/get``, ``get_open_ai_client``,
basic auth, typed errors). mlflow deployments and databricks-langchain are not installed here.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from dbstruct.testing import Emulator

sdk = pytest.importorskip("databricks.sdk")
from databricks.sdk import WorkspaceClient  # noqa: E402
from databricks.sdk.errors import NotFound, PermissionDenied, ResourceDoesNotExist  # noqa: E402
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole  # noqa: E402

LLAMA = "databricks-meta-llama-3-3-70b-instruct"
LLAMA_MODEL = "meta-llama-3.3-70b-instruct-121024"
USER: Any = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ROW: Any = [{"role": "user", "content": "John Smith is 42 years old."}]
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "User", "schema": USER}}
TOOLS: Any = [{"type": "function", "function": {"name": "User", "parameters": USER}}]


class User(BaseModel):
    name: str
    age: int


def workspace(emu: Emulator) -> WorkspaceClient:
    return WorkspaceClient(host=emu.host, token=emu.token, auth_type="pat")


# ---------------------------------------------------------------- openai SDK streaming


def test_openai_stream_content_accumulates_to_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=LLAMA, messages=ROW, response_format=FORMAT)
    stream = client.chat.completions.create(
        model=LLAMA, messages=ROW, response_format=FORMAT, stream=True
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1
    assert "".join(texts) == whole.choices[0].message.content
    assert {c.model for c in chunks} == {LLAMA_MODEL}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage == whole.usage


def test_openai_stream_tool_calls_accumulate_by_index(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="m", messages=ROW, tools=TOOLS, tool_choice="required"
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model="m", messages=ROW, tools=TOOLS, tool_choice="required", stream=True
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
    (expected,) = whole.choices[0].message.tool_calls or []
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "User" and calls[0]["id"].startswith("call_")
    assert calls[0]["id"] != expected.id  # a new answer, a new id
    assert json.loads(calls[0]["arguments"]) == json.loads(expected.function.arguments)


def test_openai_stream_helper_for_content_tools_and_json_mode(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model=LLAMA, messages=ROW, response_format=User) as s:
        parsed = s.get_final_completion().choices[0].message.parsed
    assert parsed is not None and parsed.age == 42
    with client.chat.completions.stream(
        model="m", messages=ROW, tools=TOOLS, tool_choice="required"
    ) as s:
        final = s.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments)["age"] == 42
    system: Any = {"role": "system", "content": f"Reply with JSON matching {json.dumps(USER)}"}
    with client.chat.completions.stream(
        model="m", messages=[system, *ROW], response_format={"type": "json_object"}
    ) as s:
        content = s.get_final_completion().choices[0].message.content
    assert json.loads(content or "")["age"] == 42


def test_async_openai_stream_accumulates(emu: Emulator) -> None:
    async def run() -> str:
        client = emu.async_openai_client()
        parts = []
        async for chunk in await client.chat.completions.create(
            model="m", messages=ROW, response_format=FORMAT, stream=True
        ):
            parts += [c.delta.content or "" for c in chunk.choices]
        await client.close()
        return "".join(parts)

    assert json.loads(asyncio.run(run()))["age"] == 42


def test_openai_sdk_gets_not_found_for_an_unlisted_endpoint(
    emu: Emulator, client: openai.OpenAI
) -> None:
    emu.configure(endpoints=[LLAMA])
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="databricks-nope", messages=ROW)
    body: Any = info.value.body
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert client.chat.completions.create(model=LLAMA, messages=ROW).model == LLAMA_MODEL


# ---------------------------------------------------------------- databricks-sdk


def test_sdk_query_list_and_get(emu: Emulator) -> None:
    w = workspace(emu)
    answer = w.serving_endpoints.query(
        name=LLAMA, messages=[ChatMessage(role=ChatMessageRole.USER, content="Ada is 36.")]
    )
    assert answer.model == LLAMA_MODEL and answer.choices
    assert answer.choices[0].message is not None and answer.choices[0].message.content
    assert answer.id and answer.id.startswith("chatcmpl_")
    names = [e.name for e in w.serving_endpoints.list()]
    assert LLAMA in names and "databricks-gpt-oss-120b" in names
    got = w.serving_endpoints.get(LLAMA)
    assert got.state is not None and got.state.ready is not None
    assert got.state.ready.value == "READY" and got.task == "llm/v1/chat"
    assert got.config is not None and got.config.served_entities
    entity = got.config.served_entities[0]
    assert entity.foundation_model is not None and entity.foundation_model.name == LLAMA_MODEL


def test_sdk_open_ai_client_works_against_the_emulator(emu: Emulator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it points to databricks-openai
        client = workspace(emu).serving_endpoints.get_open_ai_client(max_retries=0)
    out = client.chat.completions.create(model=LLAMA, messages=ROW, response_format=FORMAT)
    assert out.model == LLAMA_MODEL
    assert json.loads(out.choices[0].message.content or "")["age"] == 42


def test_sdk_raises_resource_does_not_exist_with_the_request_id(emu: Emulator) -> None:
    emu.configure(endpoints=[LLAMA])
    w = workspace(emu)
    with pytest.raises(ResourceDoesNotExist) as info:
        w.serving_endpoints.get("databricks-nope")
    request = info.value.get_error_details().request_info
    assert request is not None and len(request.request_id) == 36
    with pytest.raises(ResourceDoesNotExist, match="Endpoint with name 'databricks-nope'"):
        w.serving_endpoints.query(
            name="databricks-nope", messages=[ChatMessage(role=ChatMessageRole.USER, content="x")]
        )
    assert [e.name for e in w.serving_endpoints.list()] == [LLAMA]
    with pytest.raises(NotFound, match="No API found for 'GET /no/such/api'"):
        w.api_client.do("GET", "/api/2.0/no/such/api")


def test_sdk_basic_auth_with_token_user_and_pat_password(emu: Emulator) -> None:
    w = WorkspaceClient(host=emu.host, username="token", password=emu.token, auth_type="basic")
    answer = w.serving_endpoints.query(
        name=LLAMA, messages=[ChatMessage(role=ChatMessageRole.USER, content="hi")]
    )
    assert answer.model == LLAMA_MODEL
    wrong = WorkspaceClient(host=emu.host, username="token", password="dapi-no", auth_type="basic")
    with pytest.raises(PermissionDenied, match="Invalid access token"):
        wrong.serving_endpoints.list()

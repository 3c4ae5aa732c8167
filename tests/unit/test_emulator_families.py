"""The emulator's request rules per endpoint family (OpenAI behind GPT, Claude, Databricks).

Each rule's source is cited in dbstruct/testing/_families.py and _validate.py; these tests go
through HTTP with the openai SDK, the way the dbstruct client talks to a real endpoint.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from dbstruct.testing import Emulator
from dbstruct.testing._families import family_of
from dbstruct.testing._validate import CLAUDE_EMPTY_TEXT

OPUS = "databricks-claude-opus-4-1"
SONNET = "databricks-claude-sonnet-4-5"
HAIKU = "databricks-claude-haiku-4-5"
LLAMA = "databricks-meta-llama-3-3-70b-instruct"
GPT = "databricks-gpt-5"
GPT_OSS = "databricks-gpt-oss-120b"
#: the endpoints held to the documented Foundation Model APIs subset
SUBSET = [LLAMA, SONNET, GPT_OSS, "databricks-gemma-3-12b", "databricks-qwen3-next-80b"]

USER: Any = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
STRICT_USER: Any = {**USER, "additionalProperties": False}
ROW: Any = [{"role": "user", "content": "John is 42."}]
CALL: Any = {"id": "call_1", "type": "function", "function": {"name": "User", "arguments": "{}"}}


def tool(schema: Any = USER, name: str = "User", **extra: Any) -> Any:
    return {"type": "function", "function": {"name": name, "parameters": schema, **extra}}


def fmt(schema: Any, **extra: Any) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "User", "schema": schema, **extra}}


def refusal(client: openai.OpenAI, model: str, **request: Any) -> str:
    """The ``message`` of the 400 BAD_REQUEST the request gets (fails if it is accepted)."""
    request.setdefault("messages", ROW)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, **request)
    body = caught.value.body
    assert isinstance(body, dict) and body["error_code"] == "BAD_REQUEST", body
    return str(body["message"])


def accepted(client: openai.OpenAI, model: str, **request: Any) -> None:
    request.setdefault("messages", ROW)
    assert client.chat.completions.create(model=model, **request).choices


def openai_error(message: str) -> dict[str, Any]:
    """OpenAI's error object, which GPT endpoints return pretty-printed inside ``message``."""
    error = json.loads(message)["error"]
    assert error["type"] == "invalid_request_error"
    return dict(error)


def test_endpoint_names_map_to_families() -> None:
    assert [family_of(n) for n in (GPT, "databricks-gpt-5-2", "my-gpt-4o-proxy")] == ["openai"] * 3
    assert [family_of(n) for n in (OPUS, SONNET, HAIKU)] == ["claude"] * 3
    assert {family_of(n) for n in [LLAMA, GPT_OSS, "databricks-dbrx-instruct"]} == {"databricks"}


# ---------------------------------------------------------------- Claude: empty text blocks


def test_claude_refuses_an_assistant_turn_with_empty_text(client: openai.OpenAI) -> None:
    messages = [*ROW, {"role": "assistant", "content": ""}, {"role": "user", "content": "again"}]
    for model in (SONNET, OPUS, HAIKU):
        assert refusal(client, model, messages=messages) == CLAUDE_EMPTY_TEXT
    accepted(client, LLAMA, messages=messages)  # only Claude endpoints make text blocks of it


def test_claude_refuses_an_empty_text_part_and_an_empty_user_turn(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "ok"}, {"type": "text", "text": ""}]
    listed = [*ROW, {"role": "assistant", "content": parts}, {"role": "user", "content": "u"}]
    assert refusal(client, SONNET, messages=listed) == CLAUDE_EMPTY_TEXT
    assert refusal(client, SONNET, messages=[{"role": "user", "content": ""}]) == CLAUDE_EMPTY_TEXT
    accepted(client, LLAMA, messages=[{"role": "user", "content": ""}])


def _after_tool_call(content: Any) -> list[Any]:
    return [
        *ROW,
        {"role": "assistant", "content": content, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "fix it"},
    ]


def test_empty_text_beside_tool_calls_is_refused_by_opus_not_sonnet(
    client: openai.OpenAI,
) -> None:
    messages = _after_tool_call("")
    assert refusal(client, OPUS, messages=messages, tools=[tool()]) == CLAUDE_EMPTY_TEXT
    assert refusal(client, HAIKU, messages=messages, tools=[tool()]) == CLAUDE_EMPTY_TEXT
    accepted(client, SONNET, messages=messages, tools=[tool()])


@pytest.mark.parametrize("content", [None, " ", "\n", "calling User"])
def test_null_or_whitespace_beside_tool_calls_is_accepted_by_every_claude(
    client: openai.OpenAI, content: Any
) -> None:
    # " " is what Databricks' own client sends there (databricks-ai-bridge PR 333)
    for model in (OPUS, SONNET, HAIKU):
        accepted(client, model, messages=_after_tool_call(content), tools=[tool()])


# ---------------------------------------------------------------- the documented subset

REFUSED: dict[str, tuple[Any, str]] = {
    "$ref and $defs": (
        {
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/A"}},
            "$defs": {"A": {"type": "object", "properties": {"b": {"type": "string"}}}},
        },
        "$.properties.a: '$ref' is not supported",
    ),
    "anyOf": (
        {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
        "$.properties.a: schema composition with 'anyOf' is not supported",
    ),
    "oneOf": (
        {"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}},
        "schema composition with 'oneOf' is not supported",
    ),
    "allOf": (
        {"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}},
        "schema composition with 'allOf' is not supported",
    ),
    "pattern": (
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x$"}}},
        "$.properties.a: regular expressions using 'pattern' are not supported",
    ),
    "prefixItems": (
        {"type": "object", "properties": {"a": {"type": "array", "prefixItems": [{}]}}},
        "'prefixItems' is not supported",
    ),
    "type list": (
        {"type": "object", "properties": {"a": {"type": ["string", "integer"]}}},
        'type ["string", "integer"] is not supported',
    ),
}


@pytest.mark.parametrize("schema,fragment", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("model", SUBSET)
def test_subset_endpoints_refuse_the_documented_keys(
    client: openai.OpenAI, model: str, schema: Any, fragment: str
) -> None:
    message = refusal(client, model, tools=[tool(schema)])
    assert message.startswith("Bad request: invalid JSON schema in tools[0].function.parameters")
    assert fragment in message
    message = refusal(client, model, response_format=fmt(schema))
    assert message.startswith("Bad request: invalid JSON schema in response_format")
    assert fragment in message


@pytest.mark.parametrize("model", SUBSET)
def test_subset_endpoints_accept_unenforced_keywords(client: openai.OpenAI, model: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 5, "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "note": {"type": ["string", "null"]},
            "meta": {"type": "object", "properties": {}, "minProperties": 0, "maxProperties": 2},
        },
        "required": ["name"],
    }
    accepted(client, model, tools=[tool(schema)])
    accepted(client, model, response_format=fmt(schema))


def _props(n: int) -> Any:
    return {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(n)}}


@pytest.mark.parametrize("model", [LLAMA, SONNET, GPT_OSS])
def test_subset_key_limits_are_16_per_tool_and_64_per_response_format(
    client: openai.OpenAI, model: str
) -> None:
    accepted(client, model, tools=[tool(_props(16))])
    assert "17 keys exceed the maximum of 16" in refusal(client, model, tools=[tool(_props(17))])
    accepted(client, model, response_format=fmt(_props(64)))
    message = refusal(client, model, response_format=fmt(_props(65)))
    assert "65 keys exceed the maximum of 64" in message


# ---------------------------------------------------------------- strict on a tool


@pytest.mark.parametrize("model", [LLAMA, SONNET, OPUS, "databricks-gemma-3-12b"])
@pytest.mark.parametrize("value", [True, False])
def test_non_gpt_endpoints_refuse_a_tools_strict_field_by_its_presence(
    client: openai.OpenAI, model: str, value: bool
) -> None:
    tools = [tool(name="A"), tool(STRICT_USER, name="B", strict=value)]
    message = refusal(client, model, tools=tools)
    assert message == '{"message":"tools.1.custom.strict: Extra inputs are not permitted"}'


def test_gpt_oss_takes_strict_but_keeps_the_subset(client: openai.OpenAI) -> None:
    accepted(client, GPT_OSS, tools=[tool(STRICT_USER, strict=True)])
    pattern = {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}
    assert "'pattern' are not supported" in refusal(
        client, GPT_OSS, tools=[tool(pattern, strict=True)]
    )


def test_response_format_strict_is_accepted_on_every_family(client: openai.OpenAI) -> None:
    for model in (LLAMA, SONNET, GPT_OSS, GPT):
        accepted(client, model, response_format=fmt(STRICT_USER, strict=True))


# ---------------------------------------------------------------- GPT: OpenAI behind the endpoint

RICH: Any = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}$", "format": "uuid"},
        "owner": {"anyOf": [{"$ref": "#/$defs/Person"}, {"type": "null"}]},
    },
    "required": ["sku", "owner"],
    "additionalProperties": False,
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        }
    },
}


def test_gpt_takes_defs_refs_anyof_and_pattern_with_or_without_strict(
    client: openai.OpenAI,
) -> None:
    accepted(client, GPT, tools=[tool(RICH)])
    accepted(client, GPT, tools=[tool(RICH, strict=True)])
    accepted(client, GPT, response_format=fmt(RICH))
    accepted(client, GPT, response_format=fmt(RICH, strict=True))
    # no Foundation Model APIs key limit on a schema OpenAI checks itself
    accepted(client, GPT, tools=[tool(_props(40))])
    accepted(client, GPT, response_format=fmt(_props(100)))


def test_gpt_strict_tool_needs_additional_properties_false(client: openai.OpenAI) -> None:
    error = openai_error(refusal(client, GPT, tools=[tool(USER, strict=True)]))
    assert error == {
        "message": "Invalid schema for function 'User': In context=(), 'additionalProperties' "
        "is required to be supplied and to be false.",
        "type": "invalid_request_error",
        "param": "tools[0].parameters",
        "code": "invalid_function_parameters",
    }


def test_gpt_strict_needs_every_property_required_with_openai_context(
    client: openai.OpenAI,
) -> None:
    nested = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "line": {"type": "integer"}},
                    "required": ["line"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    }
    error = openai_error(refusal(client, GPT, response_format=fmt(nested, strict=True)))
    assert error["message"] == (
        "Invalid schema for response_format 'User': In context=('properties', 'items', "
        "'items'), 'required' is required to be supplied and to be an array including every "
        "key in properties. Missing 'path'."
    )
    assert (error["param"], error["code"]) == ("response_format", None)
    accepted(client, GPT, response_format=fmt(nested))  # without strict OpenAI takes it


def test_gpt_strict_root_must_be_an_object(client: openai.OpenAI) -> None:
    listing = {"type": "array", "items": {"type": "string"}}
    error = openai_error(refusal(client, GPT, response_format=fmt(listing, strict=True)))
    assert error["message"] == (
        "Invalid schema for response_format 'User': schema must be a JSON Schema of "
        "'type: \"object\"', got 'type: \"array\"'."
    )


def test_gpt_response_format_without_a_name_is_openais_missing_parameter(
    client: openai.OpenAI,
) -> None:
    nameless = {"type": "json_schema", "json_schema": {"schema": STRICT_USER}}
    error = openai_error(refusal(client, GPT, response_format=nameless))
    assert error == {
        "message": "Missing required parameter: 'response_format.json_schema.name'.",
        "type": "invalid_request_error",
        "param": "response_format.json_schema.name",
        "code": "missing_required_parameter",
    }
    # the other families answer in Databricks' own words
    assert refusal(client, LLAMA, response_format=nameless).startswith("Bad request: ")


def test_32_tools_is_the_limit_on_every_family(client: openai.OpenAI) -> None:
    for model in (GPT, LLAMA, SONNET):
        accepted(client, model, tools=[tool(name=f"f{i}") for i in range(32)])
        message = refusal(client, model, tools=[tool(name=f"f{i}") for i in range(33)])
        assert "at most 32 functions" in message


def test_claude_answers_empty_string_content_beside_tool_calls(dbstruct_emulator: Emulator) -> None:
    """Real Claude endpoints answer ``content: ""`` on tool-call turns (ellmer issue 932); the
    OpenAI-compatible families answer null."""
    client = openai.OpenAI(base_url=dbstruct_emulator.base_url, api_key=dbstruct_emulator.token)
    tool = {
        "type": "function",
        "function": {
            "name": "User",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
    contents = {}
    for endpoint in ("databricks-claude-sonnet-4-5", "databricks-meta-llama-3-3-70b-instruct"):
        answer = client.chat.completions.create(
            model=endpoint,
            messages=[{"role": "user", "content": "Ada"}],
            tools=[tool],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "User"}},
        )
        message = answer.choices[0].message
        assert message.tool_calls
        contents[endpoint] = message.content
    assert contents == {
        "databricks-claude-sonnet-4-5": "",
        "databricks-meta-llama-3-3-70b-instruct": None,
    }

"""What the serving emulator refuses, with the status codes and bodies real endpoints send."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from dbstruct.testing import Emulator
from dbstruct.testing._validate import CLAUDE_EMPTY_TEXT, ROLES_MESSAGE

# One client for the whole module: a new httpx client per call costs an SSL context (~20 ms).
HTTP = httpx.Client(timeout=10, trust_env=False)

USER: Any = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
STRICT_USER: Any = {**USER, "additionalProperties": False}
ROW: Any = [{"role": "user", "content": "John is 42."}]


def tool(name: str = "User", schema: Any = USER, **extra: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": schema, **extra}}


def post(
    emu: Emulator, body: Any, endpoint: str = "databricks-llama", token: str | None = "default"
) -> httpx.Response:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {emu.token if token == 'default' else token}"
    url = f"{emu.base_url}/{endpoint}/invocations"
    if isinstance(body, bytes):
        return HTTP.post(url, content=body, headers=headers)
    return HTTP.post(url, json=body, headers=headers)


def core(answer: httpx.Response) -> dict[str, Any]:
    """error_code and message of a Databricks error body (which may also carry 'details')."""
    body = answer.json()
    return {k: body[k] for k in ("error_code", "message")}


# ---------------------------------------------------------------- auth and routing


def test_missing_token_is_401_with_the_workspace_edge_body(emu: Emulator) -> None:
    answer = post(emu, {"messages": ROW}, token=None)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="DatabricksRealm"'
    assert answer.json() == {
        "error_code": 401,
        "message": "Credential was not sent or was of an unsupported type for this API.",
    }


def test_unknown_token_is_403_invalid_access_token(emu: Emulator) -> None:
    answer = post(emu, {"messages": ROW}, token="dapi-wrong")
    assert answer.status_code == 403
    assert answer.json() == {"error_code": 403, "message": "Invalid access token."}
    assert answer.headers["X-Databricks-Reason-Phrase"] == "Invalid access token."
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(
            base_url=emu.base_url, api_key="dapi-wrong", max_retries=0
        ).chat.completions.create(model="m", messages=ROW)


def test_forbidden_identity_is_403_permission_denied(emu: Emulator) -> None:
    emu.configure(forbidden_tokens=["dapi-reader"])
    answer = post(emu, {"messages": ROW}, token="dapi-reader")
    assert answer.status_code == 403
    assert answer.json()["error_code"] == "PERMISSION_DENIED"
    assert "CAN_QUERY" in answer.json()["message"]


def test_unknown_endpoint_is_404_only_when_endpoints_are_listed(emu: Emulator) -> None:
    assert post(emu, {"messages": ROW}, endpoint="anything").status_code == 200
    emu.configure(endpoints=["known"])
    answer = post(emu, {"messages": ROW}, endpoint="anything")
    assert answer.status_code == 404
    assert core(answer) == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Endpoint with name 'anything' does not exist.",
    }
    assert post(emu, {"messages": ROW}, endpoint="known").status_code == 200


def test_chat_completions_route_needs_the_model(emu: Emulator) -> None:
    headers = {"Authorization": f"Bearer {emu.token}"}
    url = f"{emu.base_url}/chat/completions"
    answer = HTTP.post(url, json={"messages": ROW}, headers=headers)
    assert answer.status_code == 400 and answer.json()["error_code"] == "BAD_REQUEST"
    assert HTTP.post(url, json={"model": "x", "messages": ROW}, headers=headers).status_code == 200


# ---------------------------------------------------------------- the request


def test_non_alternating_roles_get_the_real_message(emu: Emulator) -> None:
    two_users = [*ROW, {"role": "user", "content": "again"}]
    answer = post(emu, {"messages": two_users})
    assert answer.status_code == 400
    assert core(answer) == {"error_code": "BAD_REQUEST", "message": ROLES_MESSAGE}
    client = emu.openai_client()
    with pytest.raises(openai.BadRequestError, match="roles must alternate"):
        client.chat.completions.create(model="m", messages=two_users)


CALL = {"id": "call_1", "type": "function", "function": {"name": "User", "arguments": "{}"}}
ORDERS = {
    "system not first": [*ROW, {"role": "system", "content": "s"}],
    "assistant first": [{"role": "assistant", "content": "a"}, *ROW],
    "ends with assistant": [*ROW, {"role": "assistant", "content": "a"}],
    "tool without calls": [
        *ROW,
        {"role": "assistant", "content": "a"},
        {"role": "tool", "tool_call_id": "x", "content": "t"},
    ],
    "user right after tool": [
        *ROW,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "t"},
        {"role": "user", "content": "u"},
    ],
}


@pytest.mark.parametrize("messages", ORDERS.values(), ids=ORDERS.keys())
def test_role_orders_real_endpoints_refuse(emu: Emulator, messages: Any) -> None:
    answer = post(emu, {"messages": messages})
    assert (answer.status_code, answer.json()["message"]) == (400, ROLES_MESSAGE)


def test_tool_results_may_end_the_conversation(emu: Emulator) -> None:
    messages = [
        {"role": "system", "content": "s"},
        *ROW,
        {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "fix it"},
        {"role": "tool", "tool_call_id": "call_2", "content": "fix it"},
    ]
    assert post(emu, {"messages": messages, "tools": [tool()]}).status_code == 200
    # ... except that Claude Opus refuses the empty text beside the tool calls
    # (databricks-ai-bridge PR 333; Sonnet's leniency is in test_emulator_families.py)
    claude = post(emu, {"messages": messages, "tools": [tool()]}, "databricks-claude-opus-4-1")
    assert claude.status_code == 400
    assert claude.json()["message"] == CLAUDE_EMPTY_TEXT


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "unknown field": ({"prompt": "hi"}, 'Bad request: json: unknown field "prompt"'),
    "content not text": (
        {"messages": [{"role": "user", "content": 5}]},
        "expects input with json type 'string' but got 'number'",
    ),
    "unknown role": ({"messages": [{"role": "developer", "content": "x"}]}, "role must be"),
    "empty messages": ({"messages": []}, "non-empty list"),
    "temperature": ({"temperature": 2.5}, "'temperature' must be in [0, 2]"),
    "top_p zero": ({"top_p": 0}, "'top_p' must be in (0, 1]"),
    "max_tokens zero": ({"max_tokens": 0}, "'max_tokens' must be null or an integer"),
    "top_logprobs alone": ({"top_logprobs": 2}, "requires 'logprobs'"),
    "tool without parameters": (
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        '"parameters" is a required property for "function" object in parameter "tools"',
    ),
    "bad function name": ({"tools": [tool("has space")]}, "must match"),
    "tool_choice unknown": (
        {"tools": [tool()], "tool_choice": {"type": "function", "function": {"name": "X"}}},
        "not in tools",
    ),
    "tool_choice without tools": ({"tool_choice": "required"}, "only allowed when 'tools'"),
    "33 tools": (
        {"tools": [tool(f"f{i}") for i in range(33)]},
        "at most 32 functions",
    ),
    "pattern in a tool": (
        {
            "tools": [
                tool(
                    schema={
                        "type": "object",
                        "properties": {"a": {"type": "string", "pattern": "x"}},
                    }
                )
            ]
        },
        "$.properties.a: regular expressions using 'pattern' are not supported",
    ),
    "17 keys in a tool": (
        {
            "tools": [
                tool(
                    schema={
                        "type": "object",
                        "properties": {f"k{i}": {"type": "string"} for i in range(17)},
                    }
                )
            ]
        },
        "17 keys exceed the maximum of 16",
    ),
    "anyOf in response_format": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "U",
                    "schema": {
                        "type": "object",
                        "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                    },
                },
            }
        },
        "schema composition with 'anyOf' is not supported",
    ),
    "response_format without name": (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": USER}}},
        "needs a 'name'",
    ),
    "response_format type": ({"response_format": {"type": "yaml"}}, "response_format.type"),
    "strict tool on a non-GPT endpoint": (
        {"tools": [tool(schema=STRICT_USER, strict=True)]},
        '{"message":"tools.0.custom.strict: Extra inputs are not permitted"}',
    ),
    "function_call without functions": ({"function_call": {"name": "f"}}, "needs 'functions'"),
}


@pytest.mark.parametrize("changes,message", BAD.values(), ids=BAD.keys())
def test_invalid_requests_are_400_bad_request(
    emu: Emulator, changes: dict[str, Any], message: str
) -> None:
    answer = post(emu, {"messages": ROW, **changes})
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error_code"] == "BAD_REQUEST"
    assert message in body["message"]


def test_strict_is_for_gpt_endpoints_and_follows_openai_rules(emu: Emulator) -> None:
    assert (
        post(
            emu,
            {"messages": ROW, "tools": [tool(schema=STRICT_USER, strict=True)]},
            "databricks-gpt-5",
        ).status_code
        == 200
    )
    loose = post(
        emu, {"messages": ROW, "tools": [tool(schema=USER, strict=True)]}, "databricks-gpt-5"
    )
    assert loose.status_code == 400
    assert "additionalProperties" in loose.json()["message"]
    # response_format strict is accepted everywhere (the docs' examples use it with Llama)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "U", "schema": STRICT_USER, "strict": True},
    }
    assert post(emu, {"messages": ROW, "response_format": fmt}).status_code == 200


def test_unparsable_body_and_non_object_body(emu: Emulator) -> None:
    assert post(emu, b"{nope").json()["error_code"] == "BAD_REQUEST"
    assert post(emu, [1, 2]).status_code == 400


def test_payload_over_4_mb_is_refused_before_anything_else(emu: Emulator) -> None:
    big = [{"role": "user", "content": "x" * (4 * 1024 * 1024)}]
    answer = post(emu, {"messages": big, "bogus": 1})
    assert answer.status_code == 400
    assert "over the limit of 4194304 bytes" in answer.json()["message"]
    # just under the limit the payload passes, and the context length is what refuses it
    under = post(emu, {"messages": [{"role": "user", "content": "x" * 4_000_000}]})
    assert under.json()["message"].startswith("Bad request: prompt token count")


def test_prompt_over_the_context_length_is_refused(emu: Emulator) -> None:
    emu.configure(context_tokens=50)
    answer = post(emu, {"messages": [{"role": "user", "content": "word " * 100}]})
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("Bad request: prompt token count (")


def test_rejections_are_counted_and_recorded(emu: Emulator) -> None:
    post(emu, {"messages": ROW, "prompt": "x"})
    post(emu, {"messages": ROW}, token="bad")
    stats = emu.stats()
    assert stats.status(400) == 1 and stats.status(403) == 1 and stats.requests == 2
    assert [r["status"] for r in emu.records] == [400]  # the 403 never got to read its body
    assert json.dumps(emu.requests[0]).count("prompt") == 1

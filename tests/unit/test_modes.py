"""What each mode sends, how it parses, how it re-asks: no endpoint needed."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import pytest
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from dbstruct.answers import parse_completion, reask_messages
from dbstruct.errors import (
    IncompleteOutputError,
    InvalidOutputError,
    OversizedOutputError,
    RefusalError,
)
from dbstruct.modes import Mode, ResponseTarget, build_request
from tests.corpus import Order, UserExtract

MESSAGES = [
    {"role": "system", "content": "You extract data."},
    {"role": "user", "content": "Extract jason is 25 years old"},
]


class Weather(BaseModel):
    city: str


class Search(BaseModel):
    query: str


def completion(message: dict[str, Any], finish_reason: str = "stop") -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", **message},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


def tool_answer(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    return {
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }


@pytest.mark.parametrize("mode", list(Mode))
def test_build_request_never_mutates_the_callers_messages(mode: Mode) -> None:
    messages = copy.deepcopy(MESSAGES)
    target = ResponseTarget.of(
        Iterable[Weather | Search] if mode is Mode.PARALLEL_TOOLS else UserExtract
    )
    request = build_request(mode, target, messages)
    assert messages == MESSAGES
    assert request["messages"] is not messages


def test_tools_forces_the_one_tool_with_the_compiled_schema() -> None:
    request = build_request(Mode.TOOLS, ResponseTarget.of(Order), MESSAGES)
    (tool,) = request["tools"]
    assert tool["type"] == "function"
    assert request["tool_choice"] == {
        "type": "function",
        "function": {"name": tool["function"]["name"]},
    }
    assert "$defs" not in json.dumps(tool) and "$ref" not in json.dumps(tool)
    assert "strict" not in tool["function"]


def test_tools_strict_marks_the_function_strict() -> None:
    request = build_request(Mode.TOOLS_STRICT, ResponseTarget.of(UserExtract), MESSAGES)
    function = request["tools"][0]["function"]
    assert function["strict"] is True
    assert function["parameters"]["additionalProperties"] is False


def test_parallel_tools_offers_one_tool_per_model() -> None:
    request = build_request(
        Mode.PARALLEL_TOOLS, ResponseTarget.of(Iterable[Weather | Search]), MESSAGES
    )
    assert [t["function"]["name"] for t in request["tools"]] == ["Weather", "Search"]
    assert request["tool_choice"] == "required"


def test_functions_uses_the_legacy_fields() -> None:
    request = build_request(Mode.FUNCTIONS, ResponseTarget.of(UserExtract), MESSAGES)
    assert request["function_call"] == {"name": "UserExtract"}
    assert request["functions"][0]["parameters"]["properties"].keys() == {"name", "age"}


def test_json_modes_use_response_format_and_json_o1_folds_the_system_message() -> None:
    json_request = build_request(Mode.JSON, ResponseTarget.of(UserExtract), MESSAGES)
    assert json_request["response_format"]["type"] == "json_schema"
    assert json_request["messages"] == MESSAGES
    o1 = build_request(Mode.JSON_O1, ResponseTarget.of(UserExtract), MESSAGES)
    assert [m["role"] for m in o1["messages"]] == ["user"]
    assert o1["messages"][0]["content"].startswith("You extract data.")


def test_md_json_merges_the_schema_into_the_system_message() -> None:
    request = build_request(Mode.MD_JSON, ResponseTarget.of(UserExtract), MESSAGES)
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["system", "user"]
    system = request["messages"][0]["content"]
    assert system.startswith("You extract data.") and "```json" in system and '"age"' in system
    without_system = build_request(Mode.MD_JSON, ResponseTarget.of(UserExtract), MESSAGES[1:])
    assert [m["role"] for m in without_system["messages"]] == ["system", "user"]


def test_parse_each_answer_shape() -> None:
    target = ResponseTarget.of(UserExtract)
    args = '{"name": "Jason", "age": 25}'
    expected = UserExtract(name="Jason", age=25)
    assert (
        parse_completion(Mode.TOOLS, target, completion(tool_answer("UserExtract", args)))
        == expected
    )
    func = completion(
        {"content": None, "function_call": {"name": "UserExtract", "arguments": args}}
    )
    assert parse_completion(Mode.FUNCTIONS, target, func) == expected
    assert parse_completion(Mode.JSON, target, completion({"content": args})) == expected
    fenced = completion({"content": f"Here you go:\n```json\n{args}\n```\nDone."})
    assert parse_completion(Mode.MD_JSON, target, fenced) == expected


def test_parse_parallel_tool_calls() -> None:
    target = ResponseTarget.of(Iterable[Weather | Search])
    message = {
        "content": None,
        "tool_calls": [
            {
                "id": "a",
                "type": "function",
                "function": {"name": "Weather", "arguments": '{"city": "Oslo"}'},
            },
            {
                "id": "b",
                "type": "function",
                "function": {"name": "Search", "arguments": '{"query": "x"}'},
            },
        ],
    }
    assert parse_completion(Mode.PARALLEL_TOOLS, target, completion(message)) == [
        Weather(city="Oslo"),
        Search(query="x"),
    ]


@pytest.mark.parametrize(
    ("message", "finish", "error", "text"),
    [
        (tool_answer("UserExtract", '{"name": "J"'), "stop", InvalidOutputError, "invalid JSON"),
        (
            tool_answer("UserExtract", '{"name": "J", "age": "old"}'),
            "stop",
            InvalidOutputError,
            "age",
        ),
        (tool_answer("Other", '{"name": "J", "age": 1}'), "stop", InvalidOutputError, "'Other'"),
        ({"content": "no tool"}, "stop", InvalidOutputError, "got none"),
        (tool_answer("UserExtract", '{"name": "J'), "length", IncompleteOutputError, "max_tokens"),
        ({"content": None, "refusal": "I can't help"}, "stop", RefusalError, "can't help"),
    ],
)
def test_bad_answers_raise_output_errors(
    message: dict[str, Any], finish: str, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        parse_completion(Mode.TOOLS, ResponseTarget.of(UserExtract), completion(message, finish))


def test_tools_reask_answers_the_tool_call_with_the_error() -> None:
    bad = completion(tool_answer("UserExtract", '{"name": "J", "age": "old"}', call_id="call_9"))
    with pytest.raises(InvalidOutputError) as caught:
        parse_completion(Mode.TOOLS, ResponseTarget.of(UserExtract), bad)
    first = list(MESSAGES)
    messages = reask_messages(Mode.TOOLS, first, bad, caught.value)
    assert first == MESSAGES  # the request's list is not touched
    assert messages[: len(MESSAGES)] == MESSAGES
    assistant, tool = messages[len(MESSAGES) :]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_9"
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_9"
    assert "age" in tool["content"] and "integer" in tool["content"]
    assert "errors.pydantic.dev" not in tool["content"]


@pytest.mark.parametrize("mode", [Mode.JSON, Mode.MD_JSON, Mode.JSON_O1])
def test_json_reask_shows_the_answer_and_asks_for_json(mode: Mode) -> None:
    bad = completion({"content": '{"name": "J"}'})
    with pytest.raises(InvalidOutputError) as caught:
        parse_completion(mode, ResponseTarget.of(UserExtract), bad)
    messages = reask_messages(mode, MESSAGES, bad, caught.value)
    assert [m["role"] for m in messages[-2:]] == ["assistant", "user"]
    assert messages[-2]["content"] == '{"name": "J"}'
    assert "age" in messages[-1]["content"] and "JSON" in messages[-1]["content"]


def test_response_target_rejects_non_models() -> None:
    with pytest.raises(TypeError, match="BaseModel"):
        ResponseTarget.of(dict)


# ---------------------------------------------------------------- oversized answers


def padded_args(total: int) -> str:
    """Valid UserExtract arguments of exactly ``total`` bytes (UTF-8)."""
    shell = '{"name": "", "age": 1}'
    return '{"name": "' + "x" * (total - len(shell)) + '", "age": 1}'


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (Mode.TOOLS, lambda args: tool_answer("UserExtract", args)),
        (
            Mode.FUNCTIONS,
            lambda args: {
                "content": None,
                "function_call": {"name": "UserExtract", "arguments": args},
            },
        ),
        (Mode.JSON, lambda args: {"content": args}),
        (Mode.MD_JSON, lambda args: {"content": f"```json\n{args}\n```"}),
    ],
    ids=["tool_call", "function_call", "content", "fenced"],
)
def test_answers_over_max_answer_bytes_are_rejected_unparsed(mode: Mode, message: Any) -> None:
    target = ResponseTarget.of(UserExtract)
    limit = 4096
    fits = completion(message(padded_args(limit - 20)))
    assert parse_completion(mode, target, fits, max_answer_bytes=limit).age == 1
    over = completion(message(padded_args(limit + 1)))
    with pytest.raises(OversizedOutputError, match=f"over max_answer_bytes={limit}") as caught:
        parse_completion(mode, target, over, max_answer_bytes=limit)
    assert caught.value.size > limit and len(caught.value.raw or "") <= 1024
    assert parse_completion(mode, target, over, max_answer_bytes=None).age == 1  # no limit


def test_answer_size_counts_utf8_bytes_not_characters() -> None:
    target = ResponseTarget.of(UserExtract)
    args = '{"name": "' + "é" * 1000 + '", "age": 1}'  # 1000 characters, 2000 bytes of name
    answer = completion(tool_answer("UserExtract", args))
    assert parse_completion(Mode.TOOLS, target, answer, max_answer_bytes=2100).age == 1
    with pytest.raises(OversizedOutputError):
        parse_completion(Mode.TOOLS, target, answer, max_answer_bytes=1500)


def test_the_default_limit_is_1_mib() -> None:
    target = ResponseTarget.of(UserExtract)
    with pytest.raises(OversizedOutputError):
        parse_completion(Mode.JSON, target, completion({"content": padded_args((1 << 20) + 1)}))
    assert parse_completion(Mode.JSON, target, completion({"content": padded_args(1 << 20)}))


# ---------------------------------------------------------------- re-asks Claude accepts

# Bad answers whose text is empty, missing or blank, in every shape a mode can get back.
EMPTY_TEXT_ANSWERS = {
    "no content, tool call": tool_answer("UserExtract", '{"name": "J", "age": "old"}'),
    "empty content, tool call": {
        **tool_answer("UserExtract", '{"name": "J", "age": "old"}'),
        "content": "",
    },
    "blank content, tool call": {
        **tool_answer("UserExtract", '{"name": "J", "age": "old"}'),
        "content": " \n",
    },
    "empty content": {"content": ""},
    "blank content": {"content": "  \n "},
    "no content": {"content": None},
    "empty function call": {
        "content": None,
        "function_call": {"name": "UserExtract", "arguments": ""},
    },
    "blank function call": {
        "content": "",
        "function_call": {"name": "UserExtract", "arguments": "   "},
    },
}


def _is_blank(content: Any) -> bool:
    if content is None:
        return True
    if isinstance(content, list):
        return all(not str(p.get("text", "")).strip() for p in content if p.get("type") == "text")
    return not str(content).strip()


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.name)
@pytest.mark.parametrize("answer", EMPTY_TEXT_ANSWERS.values(), ids=EMPTY_TEXT_ANSWERS.keys())
def test_reasks_never_send_an_empty_assistant_text(mode: Mode, answer: dict[str, Any]) -> None:
    """Claude endpoints refuse an assistant turn with empty text and no tool call, and (Opus)
    an empty text beside tool calls; a single space is what Databricks' own client sends
    there (databricks-ai-bridge PR 333)."""
    target = ResponseTarget.of(
        Iterable[UserExtract] if mode is Mode.PARALLEL_TOOLS else UserExtract
    )
    bad = completion(answer)
    with pytest.raises(InvalidOutputError) as caught:
        parse_completion(mode, target, bad)
    messages = reask_messages(mode, MESSAGES, bad, caught.value)
    added = messages[len(MESSAGES) :]
    assert added, "a bad answer is answered with a re-ask"
    for message in (m for m in added if m["role"] == "assistant"):
        if message.get("tool_calls"):
            assert isinstance(message.get("content"), str) and message["content"] != ""
        else:
            assert not _is_blank(message.get("content")), message
    assert added[-1]["role"] in ("user", "tool") and not _is_blank(added[-1]["content"])


def test_a_tool_call_turn_keeps_the_models_own_text() -> None:
    answer = {**tool_answer("UserExtract", '{"name": "J"}'), "content": "Calling the tool."}
    bad = completion(answer)
    with pytest.raises(InvalidOutputError) as caught:
        parse_completion(Mode.TOOLS, ResponseTarget.of(UserExtract), bad)
    assistant = reask_messages(Mode.TOOLS, MESSAGES, bad, caught.value)[len(MESSAGES)]
    assert assistant["content"] == "Calling the tool."
    empty = completion(tool_answer("UserExtract", '{"name": "J"}'))
    with pytest.raises(InvalidOutputError) as caught:
        parse_completion(Mode.TOOLS, ResponseTarget.of(UserExtract), empty)
    assert (
        reask_messages(Mode.TOOLS, MESSAGES, empty, caught.value)[len(MESSAGES)]["content"] == " "
    )

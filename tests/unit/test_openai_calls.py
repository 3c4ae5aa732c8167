"""The clients POST through the openai SDK's ``client.post`` and read the answer themselves
(dbstruct._openai_calls): what goes out and what comes back must be what
``chat.completions.create`` sends and returns."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from typing import Any, Literal

import openai
import pytest
from openai._utils import maybe_transform
from openai.types.chat import ChatCompletion, completion_create_params
from pydantic import BaseModel, Field

from dbstruct._client_base import with_headers
from dbstruct._openai_calls import CHAT_PATH, post_arguments, read_completion
from dbstruct._params import CLIENT_OPTIONS
from dbstruct.modes import Mode, ResponseTarget, chat_request

http = importlib.import_module(type(openai.DEFAULT_CONNECTION_LIMITS).__module__.partition(".")[0])

AUTH = {"Authorization": "Bearer dapi-test"}


class User(BaseModel):
    """A user."""

    name: str = Field(description="first name")
    age: int
    tags: list[str] = []


class Pet(BaseModel):
    kind: Literal["cat", "dog"]
    owner: str | None = None


#: a re-ask's messages: content parts, an assistant tool call, a tool reply
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Extract."},
    {"role": "user", "content": [{"type": "text", "text": "Ann is 31 🎉"}]},
    {
        "role": "assistant",
        "content": " ",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "User", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "age is missing"},
]
DEFAULTS = {"temperature": 0.0, "max_tokens": 200, "stop": ["\n\n"], "top_p": None, "seed": 3}


def requests() -> Iterable[dict[str, Any]]:
    for mode in Mode:
        parallel = mode is Mode.PARALLEL_TOOLS
        target = ResponseTarget((User, Pet) if parallel else (User,), parallel=parallel)
        yield chat_request(mode, target, MESSAGES, DEFAULTS, "databricks-llm")


def test_the_sdk_transform_leaves_every_modes_request_unchanged() -> None:
    """What create() would do to a request before sending it, and post() skips, is nothing."""
    for request in requests():
        params = completion_create_params.CompletionCreateParamsNonStreaming
        assert maybe_transform(request, params) == request


class Recorder:
    """A mock transport: records each request, answers with ``body``."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        self.seen: list[Any] = []
        self.body = body
        self.content_type = content_type

    def client(self) -> openai.OpenAI:
        transport = http.MockTransport(self.handle)
        return openai.OpenAI(
            base_url="http://h.example/serving-endpoints",
            api_key="placeholder",
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=transport),
        )

    def handle(self, request: Any) -> Any:
        self.seen.append(request)
        headers = {"content-type": self.content_type, "x-request-id": f"req-{len(self.seen)}"}
        return http.Response(200, content=self.body, headers=headers)


def both_ways(recorder: Recorder, request: dict[str, Any]) -> tuple[Any, Any]:
    """``request`` sent by create() and by post(): what each returned."""
    client = recorder.client()
    by_create = client.chat.completions.create(**with_headers(request, AUTH))
    arguments = post_arguments(with_headers(request, AUTH))
    by_post = read_completion(client.post(CHAT_PATH, **arguments))
    return by_create, by_post


def answer(message: dict[str, Any], finish_reason: str = "tool_calls") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "databricks-llm",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 70, "completion_tokens": 9, "total_tokens": 79},
        }
    ).encode()


TOOL_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "User", "arguments": '{"name": "Ann", "age": 31}'},
        }
    ],
}

# per-request headers of the SDK: a fresh idempotency key, and the retry count and timeout
# it reports; the rest must match
_VARYING = {"idempotency-key", "x-stainless-retry-count", "x-stainless-read-timeout"}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"timeout": 7.5},
        {"timeout": None},
        {"extra_headers": {"X-Trace": "t1", "Authorization": "Bearer loses"}},
        {"extra_query": {"q": "1"}, "extra_body": {"usage_context": {"job": "x"}}},
    ],
)
def test_post_sends_what_create_sends(options: dict[str, Any]) -> None:
    for request in requests():
        request = {**request, **options}
        recorder = Recorder(answer(TOOL_CALL))
        both_ways(recorder, request)
        by_create, by_post = recorder.seen
        assert (by_post.method, str(by_post.url)) == (by_create.method, str(by_create.url))
        assert json.loads(by_post.content) == json.loads(by_create.content)
        assert not set(json.loads(by_post.content)) & CLIENT_OPTIONS
        kept = {k: v for k, v in by_create.headers.items() if k not in _VARYING}
        assert {k: v for k, v in by_post.headers.items() if k not in _VARYING} == kept
        assert by_post.headers["authorization"] == AUTH["Authorization"]
        assert by_post.extensions.get("timeout") == by_create.extensions.get("timeout")


@pytest.mark.parametrize(
    "message",
    [
        TOOL_CALL,
        {"role": "assistant", "content": '{"name": "Ann", "age": 31}'},
        # GPT OSS: content as blocks (not a str: the SDK's model does not validate it)
        {
            "role": "assistant",
            "content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}]},
                {"type": "text", "text": '{"name": "Ann", "age": 31}'},
            ],
        },
        {"role": "assistant", "content": None, "refusal": "no", "extra_field": [1, 2]},
    ],
)
def test_the_answer_is_what_create_returns(message: dict[str, Any]) -> None:
    request = next(iter(requests()))
    by_create, by_post = both_ways(Recorder(answer(message)), request)
    assert type(by_post) is type(by_create) is ChatCompletion
    assert by_post.model_dump(warnings=False) == by_create.model_dump(warnings=False)
    assert by_post.choices[0].message.content == by_create.choices[0].message.content
    assert by_post._request_id == "req-2"
    # openai sets it since 1.4x (older releases have no such attribute)
    assert getattr(by_create, "_request_id", "req-1") == "req-1"


def test_an_answer_that_is_not_json_is_its_text_as_with_create() -> None:
    request = next(iter(requests()))
    recorder = Recorder(b"<html>upstream timeout</html>", content_type="text/html")
    by_create, by_post = both_ways(recorder, request)
    assert by_post == by_create == "<html>upstream timeout</html>"


def test_an_answer_that_is_json_but_not_an_object_is_returned_as_with_create() -> None:
    request = next(iter(requests()))
    by_create, by_post = both_ways(Recorder(b"[1, 2]"), request)
    assert by_post == by_create == [1, 2]


def test_broken_json_is_its_text_where_create_raised() -> None:
    """create() lets the JSON error escape (out of the attempt loop, failing the batch); an
    answer whose body does not parse is an answer without choices instead: a row's error."""
    request = next(iter(requests()))
    recorder = Recorder(b'{"id": "chatcmpl-1", "choices": [')
    client = recorder.client()
    with pytest.raises(ValueError):
        client.chat.completions.create(**with_headers(request, AUTH))
    response = client.post(CHAT_PATH, **post_arguments(with_headers(request, AUTH)))
    assert read_completion(response) == '{"id": "chatcmpl-1", "choices": ['

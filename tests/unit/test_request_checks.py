"""The prompt-token estimate remembers the JSON length of the schema dicts requests share
(dbstruct._request_checks._json_chars): it must give what writing the JSON out gives."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from dbstruct import _request_checks
from dbstruct._request_checks import SPEC_FIELDS, prompt_tokens
from dbstruct.modes import Mode, ResponseTarget, chat_request
from dbstruct.testing._request_text import prompt_tokens as emulator_tokens


class User(BaseModel):
    """A user."""

    name: str = Field(description="first name, as written")
    age: int


class Pet(BaseModel):
    kind: Literal["cat", "dög"]
    tags: list[str] = []


def written_out(body: dict[str, Any]) -> int:
    """The estimate computed by writing every schema field's JSON, as it was before."""
    total = prompt_tokens({"messages": body["messages"]})
    for key in SPEC_FIELDS:
        if body.get(key):
            total += math.ceil(len(json.dumps(body[key], sort_keys=True)) / 4)
    return total


def bodies() -> Iterable[dict[str, Any]]:
    messages = [{"role": "system", "content": "Extract."}, {"role": "user", "content": "Ann, 31"}]
    for mode in Mode:
        parallel = mode is Mode.PARALLEL_TOOLS
        target = ResponseTarget((User, Pet) if parallel else (User,), parallel=parallel)
        yield chat_request(mode, target, messages, {}, "llm")


def test_the_estimate_is_the_written_out_one_every_time() -> None:
    for body in bodies():
        expected = written_out(body)
        assert expected == emulator_tokens(body)  # the emulator's own, independent count
        for _ in range(3):  # the second and third come from what was remembered
            assert prompt_tokens(body) == expected


def test_lists_of_several_items_and_other_values_count_like_their_json() -> None:
    tool = next(iter(bodies()))["tools"][0]
    for value in ([tool, tool, {"type": "function"}], [], ["x", 1, None], {"a": [1, 2]}):
        body = {"messages": [], "tools": value}
        assert prompt_tokens(body) == written_out(body)


def test_a_new_dict_is_measured_anew_and_the_memory_stays_bounded() -> None:
    for i in range(3 * _request_checks._JSON_CHARS_MAX):
        spec = {"type": "json_schema", "json_schema": {"name": "x" * (i % 50), "n": i}}
        body = {"messages": [], "response_format": spec}
        assert prompt_tokens(body) == written_out(body)
        assert len(_request_checks._JSON_CHARS) <= _request_checks._JSON_CHARS_MAX

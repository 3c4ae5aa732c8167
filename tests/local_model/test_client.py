"""Real answers through dbstruct's client: sync and async, Mode.JSON and Mode.TOOLS.

Each row is valued or fails alone with its error: an oversized row (past the server's
context window) gets its own BadRequestError while the rows beside it are answered. The
server does not do tool calls for this model (its chat template has no tools), so under
Mode.TOOLS every row fails with dbstruct's error for an answer without the tool call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import dbstruct
from dbstruct import Mode
from dbstruct.errors import (
    BadRequestError,
    IncompleteOutputError,
    InvalidOutputError,
    RetriesExhaustedError,
)
from dbstruct.testing import LocalModel

pytestmark = pytest.mark.local_model


class UserExtract(BaseModel):
    name: str
    age: int


PEOPLE = [
    "Ada Lovelace is 36 years old.",
    "Alan Turing, aged 41, worked at Bletchley Park.",
    "Our new colleague Grace Hopper just turned 30.",
]
OVERSIZED = "Extract the user. " + "lorem ipsum dolor sit amet " * 1500  # > 4,096 tokens
TEXTS = [PEOPLE[0], OVERSIZED, *PEOPLE[1:]]


def _client(lm: LocalModel, mode: Mode, *, async_client: bool = False, **options: Any) -> Any:
    return dbstruct.from_provider(
        lm.model,
        mode=mode,
        async_client=async_client,
        base_url=lm.base_url,
        api_key=lm.token,
        max_retries=0,
        max_context_tokens=None,  # the server's own 400 is what is tested
        temperature=0.0,
        **options,
    )


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _check_rows(outcomes: list[Any]) -> None:
    assert len(outcomes) == len(TEXTS)
    for outcome in outcomes:  # valued, or failed with its own error: never both, never neither
        assert (outcome.value is None) != (outcome.error is None), outcome
    oversized = outcomes[1]
    assert isinstance(oversized.error, BadRequestError), oversized.error
    others = [o for i, o in enumerate(outcomes) if i != 1]
    assert all(isinstance(o.value, UserExtract) for o in others), [o.error for o in others]
    assert all(o.usage.completion_tokens > 0 for o in others)


@pytest.fixture(scope="module")
def sync_outcomes(local_model: LocalModel) -> list[Any]:
    client = _client(local_model, Mode.JSON, max_tokens=64)
    return [client.extract(UserExtract, _messages(text)) for text in TEXTS]


def test_sync_json_rows_are_answered_or_fail_alone(sync_outcomes: list[Any]) -> None:
    _check_rows(sync_outcomes)
    names = [o.value.name for o in sync_outcomes if o.value is not None]
    assert "Ada Lovelace" in names  # a real answer, read from the text


def test_async_json_agrees_with_sync(local_model: LocalModel, sync_outcomes: list[Any]) -> None:
    async def run() -> list[Any]:
        client = _client(local_model, Mode.JSON, async_client=True, max_tokens=64)
        try:
            return list(
                await asyncio.gather(*(client.extract(UserExtract, _messages(t)) for t in TEXTS))
            )
        finally:
            await client.close()

    outcomes = asyncio.run(run())
    _check_rows(outcomes)
    # temperature 0 on one server slot: the same answers, whichever client asked
    assert [o.value for o in outcomes] == [o.value for o in sync_outcomes]


def test_tools_mode_fails_each_row_with_its_error(local_model: LocalModel) -> None:
    client = _client(local_model, Mode.TOOLS, max_tokens=48)
    outcomes = [client.extract(UserExtract, _messages(text)) for text in PEOPLE[:2]]
    for outcome in outcomes:
        assert outcome.value is None
        error = outcome.error
        if isinstance(error, RetriesExhaustedError):  # a wrong answer, after its one attempt
            error = error.last_error
            assert isinstance(error, InvalidOutputError)
            assert "expected a call of tool UserExtract, got none" in str(error)
        else:  # or text that ran on to max_tokens
            assert isinstance(error, IncompleteOutputError), error

"""A token the endpoint refuses is not sent again: later requests fail at once, unsent.

An expired notebook token in the middle of a job would otherwise send every remaining row
to get a 401 (403 "Invalid access token." on Databricks) each.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import dbstruct
from dbstruct import _refusal_memory
from dbstruct.auth import Credentials
from dbstruct.errors import AuthenticationError, EndpointNotFoundError
from dbstruct.testing import Emulator

TOKEN = "dapi-refusal-test-5b1f0c2e"


class User(BaseModel):
    name: str
    age: int


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN, latency=0.05)
    return dbstruct_emulator


def messages(i: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Ada{i} is {i} years old"}]


def refused(emu: Emulator) -> int:
    stats = emu.stats()
    return stats.status(401) + stats.status(403)


def test_an_expired_token_fails_the_remaining_rows_unsent(emu: Emulator) -> None:
    client = dbstruct.from_provider(
        "databricks/test-llm", async_client=True, base_url=emu.base_url, api_key=TOKEN
    )

    async def run() -> list[Any]:
        first = await client.extract(User, messages(0))
        assert first.ok, first.error
        emu.configure(tokens=["dapi-the-new-one"])  # the notebook token has expired
        window = asyncio.Semaphore(8)  # 8 in flight, as a Spark worker with concurrency=8

        async def one(i: int) -> Any:
            async with window:
                return await client.extract(User, messages(i))

        return await asyncio.gather(*(one(i) for i in range(1, 201)))

    outcomes = asyncio.run(run())
    assert len(outcomes) == 200
    assert all(isinstance(o.error, AuthenticationError) for o in outcomes)
    # only the requests already in flight when the first refusal came back were sent
    assert 1 <= refused(emu) <= 8
    unsent = [o for o in outcomes if o.attempts == 0]
    assert len(unsent) == 200 - refused(emu)
    assert all(o.error is not None and not o.error.sent for o in unsent)  # type: ignore[attr-defined]
    message = str(unsent[0].error)
    assert message.startswith("not sent: test-llm: 401 Unauthorized")
    assert "service principal" in message
    assert emu.stats().requests == 1 + refused(emu)


def test_a_refreshed_token_is_sent_again(emu: Emulator) -> None:
    current = {"token": "dapi-old"}
    creds = Credentials.from_token_provider(emu.base_url, lambda: current["token"])
    client = dbstruct.from_provider("databricks/test-llm", credentials=creds)
    assert isinstance(client.extract(User, messages(1)).error, AuthenticationError)
    assert client.extract(User, messages(2)).attempts == 0  # same token: unsent
    current["token"] = TOKEN  # an OAuth refresh gives a new token
    outcome = client.extract(User, messages(3))
    assert outcome.ok and outcome.attempts == 1
    assert refused(emu) == 1


def test_a_refusal_is_forgotten_after_a_while(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = dbstruct.from_provider(
        "databricks/test-llm", base_url=emu.base_url, api_key="dapi-not-yet-granted"
    )
    assert client.extract(User, messages(1)).attempts == 1
    assert client.extract(User, messages(2)).attempts == 0
    monkeypatch.setattr(_refusal_memory, "REFUSAL_MEMORY_S", 0.0)
    emu.configure(tokens=[TOKEN, "dapi-not-yet-granted"])  # granted meanwhile
    assert client.extract(User, messages(3)).ok
    assert refused(emu) == 1


def test_a_missing_endpoint_is_remembered_per_endpoint(emu: Emulator) -> None:
    emu.configure(endpoints=["test-llm"])
    try:
        client = dbstruct.from_provider("databricks/test-llm", base_url=emu.base_url, api_key=TOKEN)
        gone = [client.extract(User, messages(i), model="no-such-llm") for i in range(3)]
        assert all(isinstance(o.error, EndpointNotFoundError) for o in gone)
        assert [o.attempts for o in gone] == [1, 0, 0]
        assert client.extract(User, messages(4)).ok  # the other endpoint is unaffected
        assert emu.stats().status(404) == 1
    finally:
        emu.configure(endpoints=None)

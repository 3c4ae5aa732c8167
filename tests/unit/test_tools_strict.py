"""Mode.TOOLS_STRICT on every endpoint: ``strict`` where it is taken, learned where unknown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pydantic import BaseModel

import dbstruct
from dbstruct import Mode
from dbstruct._retry import RetryPolicy, Send, attempts
from dbstruct._strict import takes_strict
from dbstruct.errors import BadRequestError
from dbstruct.json_schema import compile_schema
from dbstruct.modes import ResponseTarget, build_request
from dbstruct.testing import Emulator

GPT = "databricks-gpt-5-mini"
LLAMA = "databricks-meta-llama-3-3-70b-instruct"
CLAUDE = "databricks-claude-sonnet-4"
CUSTOM = "my-custom-endpoint"
ROW = [{"role": "user", "content": "Extract jason is 25 years old"}]


class UserExtract(BaseModel):
    name: str
    age: int
    nickname: str | None = None


def client(emu: Emulator, endpoint: str, *, async_client: bool = False, **kw: Any) -> Any:
    return dbstruct.from_provider(
        f"databricks/{endpoint}",
        mode=Mode.TOOLS_STRICT,
        async_client=async_client,
        base_url=emu.base_url,
        api_key=emu.token,
        **kw,
    )


def sent(emu: Emulator) -> list[tuple[int, Any]]:
    """(status, the tool's strict field or None) of every chat request the emulator got."""
    return [(r["status"], r["body"]["tools"][0]["function"].get("strict")) for r in emu.records]


def run_sync(emu: Emulator, endpoint: str, rows: int, **kw: Any) -> list[Any]:
    with client(emu, endpoint, **kw) as c:
        return [c.extract(UserExtract, ROW) for _ in range(rows)]


def run_async(emu: Emulator, endpoint: str, rows: int, **kw: Any) -> list[Any]:
    async def main() -> list[Any]:
        async with client(emu, endpoint, async_client=True, **kw) as c:
            return [await c.extract(UserExtract, ROW) for _ in range(rows)]

    return asyncio.run(main())


def downgrades(caplog: pytest.LogCaptureFixture, endpoint: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "dbstruct" and "TOOLS_STRICT" in r.getMessage() and endpoint in r.getMessage()
    ]


RUNS = {"sync": run_sync, "async": run_async}

# what each endpoint is sent, row after row: GPT gets the flag; a hosted non-GPT endpoint never
# does; a custom name is tried once (400), then its rows go without the flag
EXPECTED = {
    GPT: [(200, True)] * 3,
    LLAMA: [(200, None)] * 3,
    CLAUDE: [(200, None)] * 3,
    CUSTOM: [(400, True), (200, None), (200, None), (200, None)],
}


@pytest.mark.parametrize("path", RUNS, ids=RUNS.keys())
@pytest.mark.parametrize("endpoint", EXPECTED, ids=EXPECTED.keys())
def test_every_row_succeeds_on_every_endpoint(
    dbstruct_emulator: Emulator, endpoint: str, path: str
) -> None:
    outcomes = RUNS[path](dbstruct_emulator, endpoint, 3, max_retries=0)
    assert [o.error for o in outcomes] == [None, None, None]
    assert all(isinstance(o.value, UserExtract) and o.value.age == 25 for o in outcomes)
    # the resend after the 400 is not counted: max_retries=0 and still one attempt
    assert [o.attempts for o in outcomes] == [1, 1, 1]
    assert sent(dbstruct_emulator) == EXPECTED[endpoint]


def test_sync_and_async_send_the_same_requests(dbstruct_emulator: Emulator) -> None:
    run_sync(dbstruct_emulator, CUSTOM, 2)
    sync_bodies = dbstruct_emulator.requests
    dbstruct_emulator.reset()
    run_async(dbstruct_emulator, CUSTOM, 2)
    assert dbstruct_emulator.requests == sync_bodies
    assert len(sync_bodies) == 3


def test_without_the_flag_the_schema_is_still_the_strict_one(dbstruct_emulator: Emulator) -> None:
    run_sync(dbstruct_emulator, LLAMA, 1)
    (body,) = dbstruct_emulator.requests
    function = body["tools"][0]["function"]
    assert "strict" not in function
    assert function["parameters"] == compile_schema(UserExtract, strict=True).parameters
    # strict-shaped: every field required, even the one with a default
    assert sorted(function["parameters"]["required"]) == ["age", "name", "nickname"]
    strict_request = build_request(Mode.TOOLS_STRICT, ResponseTarget.of(UserExtract), ROW)
    assert body["tools"][0]["function"] != strict_request["tools"][0]["function"]


@pytest.mark.parametrize("path", RUNS, ids=RUNS.keys())
def test_the_learned_downgrade_is_logged_once_as_a_warning(
    dbstruct_emulator: Emulator, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO, logger="dbstruct")
    RUNS[path](dbstruct_emulator, CUSTOM, 3)
    (record,) = downgrades(caplog, CUSTOM)
    assert record.levelno == logging.WARNING and "400" in record.getMessage()


def test_a_downgrade_by_name_is_logged_once_and_sends_nothing_refused(
    dbstruct_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dbstruct")
    run_sync(dbstruct_emulator, CLAUDE, 3)
    (record,) = downgrades(caplog, CLAUDE)
    assert record.levelno == logging.INFO
    assert not downgrades(caplog, GPT)
    run_sync(dbstruct_emulator, GPT, 1)
    assert not downgrades(caplog, GPT)  # GPT endpoints keep the flag: nothing to report


def test_each_client_learns_for_itself(dbstruct_emulator: Emulator) -> None:
    run_sync(dbstruct_emulator, CUSTOM, 2)
    run_sync(dbstruct_emulator, CUSTOM, 2)  # a new client: tries strict once more
    assert [status for status, _ in sent(dbstruct_emulator)] == [400, 200, 200, 400, 200, 200]


def test_concurrent_rows_of_an_unknown_endpoint_all_succeed(
    dbstruct_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dbstruct")

    async def main() -> list[Any]:
        async with client(dbstruct_emulator, CUSTOM, async_client=True, max_retries=0) as c:
            first = await asyncio.gather(*(c.extract(UserExtract, ROW) for _ in range(8)))
            later = await c.extract(UserExtract, ROW)
            return [*first, later]

    outcomes = asyncio.run(main())
    assert all(o.ok and o.attempts == 1 for o in outcomes)
    statuses = sent(dbstruct_emulator)
    refused = [s for s in statuses if s == (400, True)]
    # rows already in flight when the first 400 came back are each resent once, no more
    assert 1 <= len(refused) <= 8 and len(statuses) == 9 + len(refused)
    assert statuses[-1] == (200, None)  # once learned, rows go out without the flag
    assert len(downgrades(caplog, CUSTOM)) == 1


def test_a_400_about_something_else_still_fails_the_row(
    dbstruct_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dbstruct")
    with client(dbstruct_emulator, CUSTOM, temperature=2.5) as c:
        outcome = c.extract(UserExtract, ROW)
    assert isinstance(outcome.error, BadRequestError) and "temperature" in str(outcome.error)
    assert outcome.attempts == 1
    assert sent(dbstruct_emulator) == [(400, True)]
    assert not downgrades(caplog, CUSTOM)


# ---------------------------------------------------------------- the rule and the loop


@pytest.mark.parametrize(
    ("endpoint", "takes"),
    [
        (GPT, True),
        ("databricks-gpt-oss-120b", True),  # as databricks-openai: "gpt" in the name
        ("my-GPT-4o-proxy", True),
        (LLAMA, False),
        (CLAUDE, False),
        ("databricks-dbrx-instruct", False),
        ("dbrx-instruct", False),
        ("databricks-gemma-3-12b", False),
        ("team-llama-finetune", False),
        (CUSTOM, None),
        ("ticket-triage-prod", None),
    ],
)
def test_which_endpoints_take_strict_by_name(endpoint: str, takes: bool | None) -> None:
    assert takes_strict(endpoint) is takes


def drive(steps: Any, answers: list[Any]) -> tuple[list[dict[str, Any]], Any]:
    """Run an attempt plan with canned answers; the requests it sent and its outcome."""
    sent_requests = []
    step = next(steps)
    try:
        while True:
            assert isinstance(step, Send)
            sent_requests.append(step.request)
            step = steps.send(answers.pop(0))
    except StopIteration as done:
        return sent_requests, done.value


def strict_400() -> BadRequestError:
    message = '400 {"message":"tools.0.custom.strict: Extra inputs are not permitted"}'
    return BadRequestError(message, endpoint=CUSTOM, status=400)


def plan(refused: Any) -> Any:
    target = ResponseTarget.of(UserExtract)
    request = {**build_request(Mode.TOOLS_STRICT, target, ROW), "model": CUSTOM}
    policy = RetryPolicy(max_retries=0)
    return attempts(Mode.TOOLS_STRICT, target, request, policy, endpoint=CUSTOM, **refused)


def test_the_loop_resends_once_without_the_flag_and_reports_it() -> None:
    learned: list[str] = []
    requests, outcome = drive(
        plan({"strict_refused": learned.append}), [strict_400(), strict_400()]
    )
    assert [r["tools"][0]["function"].get("strict") for r in requests] == [True, None]
    assert learned == [CUSTOM]
    # the flag-less request was refused too: that is the row's error, after one attempt
    assert isinstance(outcome.error, BadRequestError) and outcome.attempts == 1


def test_without_a_callback_a_strict_400_is_an_ordinary_400() -> None:
    requests, outcome = drive(plan({}), [strict_400()])
    assert len(requests) == 1
    assert isinstance(outcome.error, BadRequestError) and outcome.attempts == 1

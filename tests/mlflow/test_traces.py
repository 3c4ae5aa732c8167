"""dbstruct.autolog(): a trace per create(), a span per attempt, in a local MLflow store.

The first test reads like a notebook: turn tracing on, make one call whose first answer
the emulator makes invalid, and find the call with its two attempts in the store.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

import dbstruct
from dbstruct.testing import Emulator
from dbstruct.tracing import Tracer, sampled
from tests.mlflow.conftest import Store, mlflow, spans_by_name

pytestmark = pytest.mark.mlflow

ENDPOINT = "databricks/dbrx-instruct"


class User(BaseModel):
    name: str
    age: int


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_a_traced_create_shows_its_reask_as_two_attempts(emu: Emulator, store: Store) -> None:
    # In a notebook: mlflow.set_experiment(...) (the store fixture did), then
    dbstruct.autolog()
    client = dbstruct.from_provider(ENDPOINT, max_retries=3)
    value = client.create(User, user("[[fault:invalidx1]] jason is 25"))
    assert isinstance(value, User)

    [trace] = store.traces()
    spans = spans_by_name(trace)
    assert sorted(spans) == ["attempt 1", "attempt 2", "dbstruct.create"]
    call, first, second = spans["dbstruct.create"], spans["attempt 1"], spans["attempt 2"]
    assert call.parent_id is None and first.parent_id == call.span_id == second.parent_id
    assert call.attributes["dbstruct.endpoint"] == "dbrx-instruct"
    assert call.attributes["dbstruct.mode"] == "tool_call"
    assert call.attributes["dbstruct.response_model"] == "User"
    assert call.attributes["dbstruct.attempts"] == 2
    assert call.attributes["dbstruct.retries"] == 1
    assert call.attributes["dbstruct.latency_s"] > 0
    usage = call.attributes["mlflow.chat.tokenUsage"]
    attempt_usage = [s.attributes["mlflow.chat.tokenUsage"] for s in (first, second)]
    assert usage["input_tokens"] == sum(u["input_tokens"] for u in attempt_usage) > 0
    assert usage["output_tokens"] == sum(u["output_tokens"] for u in attempt_usage) > 0
    assert call.inputs == {"messages": user("[[fault:invalidx1]] jason is 25")}
    assert call.outputs == value.model_dump(mode="json")
    # the first answer was refused: its validation error, and the re-ask that answered it
    assert str(first.status.status_code).endswith("ERROR")
    assert first.attributes["dbstruct.reask_error"].startswith("InvalidOutputError: ")
    assert "name" in first.attributes["dbstruct.reask_error"]
    assert first.outputs["choices"]  # the completion that was refused
    assert len(second.inputs["messages"]) > len(first.inputs["messages"])
    assert str(second.status.status_code).endswith("OK")
    assert "dbstruct.error" not in call.attributes
    # the request, never its headers: the token is nowhere in the store
    assert "extra_headers" not in first.inputs
    assert emu.token.encode() not in store.file_bytes()
    assert emu.token[-12:].encode() not in store.file_bytes()


def test_waits_on_429_and_the_final_error_are_recorded(emu: Emulator, store: Store) -> None:
    dbstruct.autolog()
    client = dbstruct.from_provider(ENDPOINT, max_retries=2)
    outcome = client.extract(User, user("[[fault:429x1]] bob is 3"))
    assert outcome.ok and outcome.attempts == 2
    failed = client.extract(User, user("[[fault:500]] ann is 4"))
    assert isinstance(failed.error, dbstruct.RetriesExhaustedError)

    waited, gave_up = store.traces()
    call = spans_by_name(waited)["dbstruct.create"]
    [wait] = [e for e in call.events if e.name == "wait"]
    assert wait.attributes["http_status"] == 429
    assert wait.attributes["seconds"] == wait.attributes["retry_after"] > 0  # as told
    assert wait.attributes["reason"].startswith("RateLimitError: ")
    assert spans_by_name(waited)["attempt 1"].attributes["dbstruct.http_status"] == 429

    spans = spans_by_name(gave_up)
    assert sorted(spans) == ["attempt 1", "attempt 2", "attempt 3", "dbstruct.create"]
    call = spans["dbstruct.create"]
    assert str(call.status.status_code).endswith("ERROR")
    assert call.attributes["dbstruct.error"].startswith("RetriesExhaustedError: ")
    assert call.attributes["dbstruct.attempts"] == 3
    assert len([e for e in call.events if e.name == "wait"]) == 2
    assert all(spans[f"attempt {n}"].attributes["dbstruct.http_status"] == 500 for n in (1, 2, 3))


def test_async_calls_are_traced_alike(emu: Emulator, store: Store) -> None:
    dbstruct.autolog()

    async def both() -> None:
        async with dbstruct.from_provider(ENDPOINT, async_client=True, max_retries=3) as client:
            await asyncio.gather(
                client.create(User, user("[[fault:invalidx1]] jason is 25")),
                client.create(User, user("bob is 3")),
            )

    asyncio.run(both())
    attempts = sorted(len(t.data.spans) - 1 for t in store.traces())
    assert attempts == [1, 2]  # each call its own trace, though they ran interleaved


def test_a_call_inside_a_users_span_nests_under_it(emu: Emulator, store: Store) -> None:
    dbstruct.autolog()
    client = dbstruct.from_provider(ENDPOINT)

    @mlflow.trace(name="triage")
    def triage(text: str) -> User:
        return client.create(User, user(text))

    triage("jason is 25")
    [trace] = store.traces()
    spans = spans_by_name(trace)
    assert spans["dbstruct.create"].parent_id == spans["triage"].span_id


def test_sampling_keeps_failures_and_a_share_chosen_by_the_messages(
    emu: Emulator, store: Store
) -> None:
    dbstruct.autolog(sample_rate=0.5)
    client = dbstruct.from_provider(ENDPOINT, max_retries=0)
    texts = [f"user {i} is {i}" for i in range(40)]
    for text in texts:
        assert client.extract(User, user(text)).ok
    assert client.extract(User, user("[[fault:500]] ann is 4")).error is not None
    expected = [t for t in texts if sampled(user(t), 0.5)]
    assert 5 < len(expected) < 35  # the hash spreads: neither none nor all
    traces = store.traces()
    traced = [t.data.spans[0].inputs["messages"][0]["content"] for t in traces]
    assert sorted(traced) == sorted([*expected, "[[fault:500]] ann is 4"])


def test_autolog_off_or_disabled_records_nothing(emu: Emulator, store: Store) -> None:
    client = dbstruct.from_provider(ENDPOINT)
    client.create(User, user("jason is 25"))
    dbstruct.autolog()
    dbstruct.autolog(disable=True)
    client.create(User, user("bob is 3"))
    assert store.traces() == []


def test_a_clients_own_tracer_wins_over_autolog(emu: Emulator, store: Store) -> None:
    client = dbstruct.from_provider(ENDPOINT, max_retries=0)
    client.tracer = Tracer(sample_rate=0.0)  # failures only
    client.create(User, user("jason is 25"))
    assert client.extract(User, user("[[fault:500]] bob is 3")).error is not None
    [trace] = store.traces()
    assert spans_by_name(trace)["dbstruct.create"].attributes["dbstruct.attempts"] == 1


def test_a_secret_in_extra_headers_or_text_stays_out_of_traces(emu: Emulator, store: Store) -> None:
    dbstruct.autolog()
    secret = f"dapi{uuid.uuid4().hex}"
    client = dbstruct.from_provider(ENDPOINT)
    client.create(
        User,
        user(f"jason is 25, my token is {secret}"),
        extra_headers={"X-Forwarded-Token": secret},
    )
    [trace] = store.traces()
    assert "dapi***" in str(trace.data.spans[0].inputs)
    assert secret.encode() not in store.file_bytes()


def test_a_failing_mlflow_never_fails_the_call(
    emu: Emulator,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dbstruct.autolog()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracking store is down")

    monkeypatch.setattr(mlflow, "start_span_no_context", broken)
    client = dbstruct.from_provider(ENDPOINT)
    with caplog.at_level(logging.WARNING, logger="dbstruct.tracing"):
        assert client.create(User, user("jason is 25")).age == 25
        assert client.create(User, user("bob is 3")).age == 3
    warnings = [r for r in caplog.records if "trace was not written" in r.getMessage()]
    assert len(warnings) <= 1  # once per kind of failure and process, at most


def test_autolog_refuses_a_bad_rate() -> None:
    with pytest.raises(dbstruct.ConfigurationError, match="sample_rate"):
        dbstruct.autolog(sample_rate=1.5)


def test_importing_dbstruct_imports_no_mlflow() -> None:
    code = (
        "import sys, dbstruct, dbstruct.spark, dbstruct.jobs, dbstruct.tracing; "
        "assert 'mlflow' not in sys.modules, 'mlflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unreachable_tracking_server_drops_traces_with_one_warning(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    from dbstruct.tracing import TraceTarget, flush

    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = dbstruct.from_provider(ENDPOINT, max_retries=0)
    client.tracer = Tracer(1.0, TraceTarget(f"http://127.0.0.1:{port}", "1"))
    previous = mlflow.get_tracking_uri()
    try:
        with caplog.at_level(logging.WARNING, logger="dbstruct.tracing"):
            for age in range(5):
                assert client.create(User, user(f"jason is {age}")).age == age
            started = time.monotonic()
            assert flush(client.tracer)  # nothing queued: it returns at once
            assert time.monotonic() - started < 5
    finally:
        mlflow.set_tracking_uri(previous)
    warnings = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0]


def test_a_packed_request_is_one_trace_and_a_row_sent_again_alone_another(
    emu: Emulator, store: Store
) -> None:
    dbstruct.autolog()
    client = dbstruct.from_provider(ENDPOINT, max_retries=2)
    texts = [f"Q{chr(97 + i)}son is {20 + i} years old" for i in range(8)]
    texts[5] += " [[pack:drop]]"  # the emulator leaves this row out of its pack's answer
    outcomes = client.extract_many(User, texts, rows_per_request=4)
    assert [o.error for o in outcomes] == [None] * 8

    traces = store.traces()
    calls = [spans_by_name(t)["dbstruct.create"] for t in traces]
    packs = [c for c in calls if "<item id=" in str(c.inputs)]
    alone = [c for c in calls if "<item id=" not in str(c.inputs)]
    assert len(packs) == 2 and len(alone) == 1  # two packs of four; row 5 again, alone
    for call in packs:  # each row's value, or the error of its entry
        assert len(call.outputs) == 4
    errors = [v for c in packs for v in c.outputs if isinstance(v, str)]
    assert len(errors) == 1 and errors[0].startswith("InvalidOutputError: ")
    assert alone[0].inputs["messages"][-1]["content"] == texts[5]
    assert alone[0].outputs == outcomes[5].value.model_dump(mode="json")

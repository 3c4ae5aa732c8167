"""The sliding window of dbstruct.spark._request_window and the UDF body around it (no JVM).

Fake async calls and a fake client stand in for the endpoint."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

from dbstruct import Outcome
from dbstruct.errors import ConfigurationError, ServerError
from dbstruct.spark._request_window import LoopThread, Request, stream
from dbstruct.usage import Usage

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("test-loop")
    yield thread
    thread.stop()


def req(text: str | None) -> Request | None:
    return None if text is None else Request(key=text, payload=text)


def batches_of(*batches: Sequence[str | None]) -> list[list[Request | None]]:
    return [[req(t) for t in batch] for batch in batches]


def test_slow_row_does_not_block_the_next_batch(loop: LoopThread) -> None:
    # "slow" (batch 1) only finishes once "d" (the last row of batch 2) has *started*: with a
    # barrier per batch, batch 2 would never be read while "slow" runs, and this would fail.
    d_started = asyncio.Event()

    async def call(text: str) -> str:
        if text == "d":
            d_started.set()
        if text == "slow":
            await asyncio.wait_for(d_started.wait(), timeout=5)
        return text.upper()

    out = list(stream(batches_of(["slow", "a", "b"], ["c", "d"]), call, loop=loop, concurrency=2))
    assert out == [["SLOW", "A", "B"], ["C", "D"]]


def test_rows_of_later_batches_fill_freed_slots(loop: LoopThread) -> None:
    # Concurrency 4, one-row batches: the first row blocks until three *later batches* are
    # in flight together with it, i.e. the window spans four batches.
    started: list[str] = []
    gate = asyncio.Event()

    async def call(text: str) -> str:
        started.append(text)
        if len(started) == 4:
            gate.set()
        await asyncio.wait_for(gate.wait(), timeout=5)
        return text

    rows = [[str(i)] for i in range(8)]
    out = list(stream(batches_of(*rows), call, loop=loop, concurrency=4))
    assert out == rows
    assert started[:4] == ["0", "1", "2", "3"]


def test_order_and_count_preserved_under_random_completion(loop: LoopThread) -> None:
    rng = random.Random(7)
    sizes = [0, 1, 17, 5, 0, 64, 3, 40]
    data = [
        [f"r{b}-{i}" if rng.random() > 0.2 else None for i in range(n)] for b, n in enumerate(sizes)
    ]

    async def call(text: str) -> str:
        for _ in range(rng.randint(0, 5)):
            await asyncio.sleep(0)
        await asyncio.sleep(rng.random() / 1000)
        return text + "!"

    out = list(stream(batches_of(*data), call, loop=loop, concurrency=8))
    assert out == [[None if t is None else t + "!" for t in batch] for batch in data]


def test_none_rows_are_not_sent(loop: LoopThread) -> None:
    sent: list[str] = []

    async def call(text: str) -> str:
        sent.append(text)
        return text

    out = list(stream(batches_of([None, "x", None], [None], []), call, loop=loop, concurrency=3))
    assert out == [[None, "x", None], [None], []]
    assert sent == ["x"]


def test_identical_requests_in_flight_are_sent_once(loop: LoopThread) -> None:
    # Worker 1 takes "x" and holds it until "y" runs; "y" is queued after the second and third
    # "x", so those are taken while the first is still in flight.
    sent: list[str] = []
    y_ran = asyncio.Event()

    async def call(text: str) -> dict[str, Any]:
        sent.append(text)
        if text == "y":
            y_ran.set()
        else:
            await asyncio.wait_for(y_ran.wait(), timeout=5)
        return {"text": text, "tokens": 10}

    def share(result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "tokens": 0}

    data = batches_of(["x", "x"], ["x", "y"])
    out = list(stream(data, call, loop=loop, concurrency=3, share=share))
    assert sorted(sent) == ["x", "y"]
    assert [[r["text"] for r in b if r] for b in out] == [["x", "x"], ["x", "y"]]
    # the first row pays for the request, the rows that shared it do not
    assert [r["tokens"] for b in out for r in b if r] == [10, 0, 0, 10]


def test_finished_requests_are_sent_again(loop: LoopThread) -> None:
    sent: list[str] = []

    async def call(text: str) -> str:
        sent.append(text)
        return text

    list(stream(batches_of(["x"], ["x"]), call, loop=loop, concurrency=1))
    assert sent == ["x", "x"]


def test_read_ahead_is_bounded(loop: LoopThread) -> None:
    # The head row is slow; every other row is instant. The engine must stop reading new
    # batches once buffer_rows rows are held, however fast the others finish.
    state = {"read": 0, "yielded": 0, "max_held": 0}

    def source() -> Iterator[list[Request | None]]:
        for i in range(200):
            state["max_held"] = max(state["max_held"], state["read"] - state["yielded"])
            state["read"] += 1
            yield [req(str(i))]

    async def call(text: str) -> str:
        if text == "0":
            await asyncio.sleep(0.2)
        return text

    for results in stream(source(), call, loop=loop, concurrency=4, buffer_rows=10):
        state["yielded"] += len(results)
    assert state["read"] == 200
    assert state["max_held"] <= 10


def test_call_exception_fails_the_stream(loop: LoopThread) -> None:
    async def call(text: str) -> str:
        if text == "bad":
            raise RuntimeError("boom")
        return text

    with pytest.raises(RuntimeError, match="boom"):
        list(stream(batches_of(["a", "bad", "c"], ["d"]), call, loop=loop, concurrency=2))


def test_closing_early_cancels_in_flight_calls(loop: LoopThread) -> None:
    cancelled = threading.Event()
    hang_started = asyncio.Event()

    async def call(text: str) -> str:
        if text == "a":  # finish only once the next batch's row is in flight
            await asyncio.wait_for(hang_started.wait(), timeout=5)
            return text
        hang_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return text

    out = stream(batches_of(["a"], ["hang"]), call, loop=loop, concurrency=2)
    assert next(out) == ["a"]
    out.close()  # what Spark does when it stops consuming (e.g. a LIMIT)
    assert cancelled.is_set()


def test_concurrency_is_validated(loop: LoopThread) -> None:
    async def call(text: str) -> str:
        return text

    with pytest.raises(ValueError, match="concurrency"):
        stream([], call, loop=loop, concurrency=0)


# ------------------------------------------------------------ the UDF body, without Spark


def _spec(**kw: Any) -> Any:
    from dbstruct.auth import Credentials
    from dbstruct.modes import Mode
    from dbstruct.spark._prompt import build_prompt
    from dbstruct.spark._udf_spec import UdfSpec
    from dbstruct.worker_settings import WorkerSettings

    fields: dict[str, Any] = {
        "id": "spec-" + str(random.random()),
        "name": "extract_user",
        "response_model": _User,
        "model": "databricks/test",
        "prompt": build_prompt("Extract: {text}"),
        "mode": Mode.TOOLS,
        "settings": WorkerSettings(concurrency=4, max_retries=0),
        "include_status": False,
        "strict": False,
        "credentials": Credentials.from_token(
            "http://127.0.0.1:1/serving-endpoints", "dapi" + "0" * 32
        ),
    }
    fields.update(kw)
    return UdfSpec(**fields)


class _User(BaseModel):
    name: str
    age: int


class _FakeClient:
    """Answers "<name> <age>" texts; texts containing "fail" fail with a token in the message."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def extract(self, response_model: Any, messages: list[dict[str, str]]) -> Outcome:
        text = messages[-1]["content"].removeprefix("Extract: ")
        self.sent.append(text)
        await asyncio.sleep(0)
        if "fail" in text:
            error = ServerError("503 upstream said: Authorization: Bearer dapi0123456789abcdef0123")
            return Outcome(error=error, attempts=2, usage=Usage(5, 0), latency_s=0.5)
        name, age = text.split()
        return Outcome(response_model(name=name, age=int(age)), attempts=1, usage=Usage(7, 3))


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> _FakeClient:
    from dbstruct.spark import _worker

    client = _FakeClient()

    async def open_client(spec: Any) -> _FakeClient:
        return client

    monkeypatch.setattr(_worker, "_open_client", open_client)
    return client


def _run(spec: Any, *batches: list[Any]) -> list[Any]:
    from dbstruct.spark._worker import run_partition

    return list(run_partition(spec, iter([pd.Series(b, dtype=object) for b in batches])))


def test_udf_body_skips_null_and_blank_rows_and_keeps_order(fake_client: _FakeClient) -> None:
    frames = _run(_spec(), ["Ann 1", None, "", " \n\t"], [float("nan"), "Bob 2"])
    assert [f.to_dict("records") for f in frames] == [
        [{"name": "Ann", "age": 1}] + [{"name": None, "age": None}] * 3,
        [{"name": None, "age": None}, {"name": "Bob", "age": 2}],
    ]
    assert fake_client.sent == ["Ann 1", "Bob 2"]


def test_udf_body_status_columns(fake_client: _FakeClient) -> None:
    (out,) = _run(_spec(include_status=True), ["Ann 1", None, "fail 3"])
    rows = out.to_dict("records")
    assert rows[0] == {
        "value": {"name": "Ann", "age": 1}, "error": None, "attempts": 1,
        "prompt_tokens": 7, "completion_tokens": 3, "latency_ms": 0.0,
    }  # fmt: skip
    assert rows[1]["attempts"] == 0 and rows[1]["value"] is None and rows[1]["error"] is None
    assert rows[2]["value"] is None and rows[2]["attempts"] == 2 and rows[2]["latency_ms"] == 500
    assert rows[2]["error"].startswith("ServerError: 503 upstream said")
    assert "dapi0123" not in rows[2]["error"]


def test_udf_body_logs_failures_redacted_or_raises_with_strict(
    fake_client: _FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dbstruct.spark"):
        _run(_spec(), ["fail 1", "Ann 2"])
    assert "row failed after 2 attempt(s)" in caplog.text
    assert "1 of 2 row(s) in this task failed" in caplog.text
    assert "dapi0123" not in caplog.text
    with pytest.raises(ServerError):
        _run(_spec(strict=True), ["Ann 2"], ["fail 1"])


def test_udf_body_refuses_non_string_columns(fake_client: _FakeClient) -> None:
    from dbstruct.spark._worker import run_partition

    with pytest.raises(ConfigurationError, match="input column 2 holds int64 values"):
        list(run_partition(_spec(), iter([(pd.Series(["a"]), pd.Series([1]))])))
    with pytest.raises(ConfigurationError, match="holds bytes values"):
        _run(_spec(), ["a", b"raw"])
    assert fake_client.sent == []


def test_udf_body_sends_identical_rows_once_and_counts_tokens_once(
    fake_client: _FakeClient,
) -> None:
    (out,) = _run(_spec(include_status=True), ["Ann 1", "Ann 1", "Bob 2", "Ann 1"])
    assert sorted(fake_client.sent) == ["Ann 1", "Bob 2"]
    assert [v["name"] for v in out["value"]] == ["Ann", "Ann", "Bob", "Ann"]
    assert out["prompt_tokens"].tolist() == [7, 0, 7, 0]

"""The sliding window of dbstruct.spark._engine, driven by fake async calls (no JVM)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from dbstruct.spark._engine import LoopThread, Request, stream

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
        [f"r{b}-{i}" if rng.random() > 0.2 else None for i in range(n)]
        for b, n in enumerate(sizes)
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
